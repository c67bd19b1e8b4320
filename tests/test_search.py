"""The tuning protocol: trials on a grid, the choice on validation accuracy only, finals with new seeds."""

import copy
import os
import subprocess
import sys

import pandas as pd
import pytest

from normbench import store
from normbench.errors import ConfigError
from normbench.search import Search, choose, trial_score
from normbench.suites import load_suite

TINY_SUITE = """description = "tiny tuning study"
[defaults]
epochs = 1
limit = 300
eval_limit = 100
val_size = 200
probe_size = 32
train_eval_size = 100
batch_size = 32
model_params = { depth = 3, width = 32 }
[search]
learning_rate = [0.001, 0.03, 1.0]
trial_seeds = [100]
[[grid]]
datasets = ["mnist"]
models = ["mlp"]
strategies = ["none", "batchnorm"]
seeds = [0, 1, 2]
"""


def _suite(tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("table,message", [
    ("trial_seeds = [100]", "needs learning_rate"),
    ("learning_rate = [0.1]\ntrial_seeds = [100]", "at least two distinct numbers"),
    ("learning_rate = [0.1, \"1\"]\ntrial_seeds = [100]", "at least two distinct numbers"),
    ("learning_rate = [0.1, 0.3]", "trial_seeds"),
    ("learning_rate = [0.1, 0.3]\ntrial_seeds = [0]", "also final seeds"),
    ("learning_rate = [0.1, 0.3]\nbatch_size = [32, 64]\ntrial_seeds = [100]", "cannot search ['batch_size']"),
])
def test_a_bad_search_is_refused_naming_the_problem(tmp_path, table, message):
    text = TINY_SUITE.split("[search]")[0] + "[search]\n" + table + "\n[[grid]]" + TINY_SUITE.split("[[grid]]")[1]
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_suite(_suite(tmp_path, text))


def test_every_strategy_gets_the_same_trials(tmp_path):
    suite = load_suite(_suite(tmp_path, TINY_SUITE))
    trials = suite.search.trials(suite.specs)
    assert len(trials) == 2 * 3 * 1 and {t.seed for t in trials} == {100}
    for strategy in ("none", "batchnorm"):
        assert sorted(t.learning_rate for t in trials if t.strategy == strategy) == [0.001, 0.03, 1.0]


def test_the_choice_is_the_best_mean_validation_accuracy_and_never_reads_test():
    search = Search((("learning_rate", (0.01, 0.1)),), (7, 8))
    from normbench.spec import RunSpec

    grid = [RunSpec("mlp8", "none", "mnist", seed=0)]
    trials = search.trials(grid)
    val = {(0.01, 7): 0.90, (0.01, 8): 0.80, (0.1, 7): 0.86, (0.1, 8): 0.86}

    def rec(t, test):
        return {"status": "ok", "history": [{"epoch": 0, "val_accuracy": 0.1}, {"epoch": 1, "val_accuracy":
                val[(t.learning_rate, t.seed)]}], "test": {"accuracy": test}}

    records = [rec(t, 0.5) for t in trials]
    choices, missing = choose(search, grid, {t.run_id: trial_score(r) for t, r in zip(trials, records)})
    assert not missing and choices[0].values == {"learning_rate": 0.1} and choices[0].score == pytest.approx(0.86)
    assert choices[0].at_edge(search) == ["learning_rate"]
    # test accuracies that would reverse the choice change nothing
    tampered = [copy.deepcopy(r) for r in records]
    for t, r in zip(trials, tampered):
        r["test"] = {"accuracy": 1.0 if t.learning_rate == 0.01 else 0.0, "loss": 0.0}
    again, _ = choose(search, grid, {t.run_id: trial_score(r) for t, r in zip(trials, tampered)})
    assert again[0].values == choices[0].values
    # a diverged trial scores 0; an unfinished one leaves the setting without a choice
    assert trial_score({"status": "diverged", "history": []}) == 0.0
    assert choose(search, grid, {trials[0].run_id: 0.5})[1] == ["mnist/mlp8/none"]


@pytest.mark.slow
def test_a_tiny_tuning_study_runs_end_to_end_through_the_cli(tmp_path, data_dir):
    path = _suite(tmp_path, TINY_SUITE)
    results = tmp_path / "runs"
    env = {**os.environ, **({"NORMBENCH_DATA_DIR": data_dir} if data_dir else {})}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "normbench.cli", *args], capture_output=True, text=True,
                              env=env, timeout=900)

    dry = cli("run", "--suite", str(path), "--dry-run", "--results", str(results))
    assert dry.returncode == 0 and "6 runs: 6 to run" in dry.stdout and "then 6 finals" in dry.stdout, dry.stderr
    done = cli("run", "--suite", str(path), "--results", str(results))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = store.load_records(results)
    trials = [r for r in records if r["suite"]["phase"] == "trial"]
    finals = [r for r in records if r["suite"]["phase"] == "final"]
    assert len(trials) == 6 and len(finals) == 6  # as many trials as finals: the report must still tell them apart
    assert all(r["suite"]["search"] == {"learning_rate": [0.001, 0.03, 1.0], "trial_seeds": [100]} for r in records)
    for strategy in ("none", "batchnorm"):
        own = [r for r in trials if r["spec"]["strategy"] == strategy]
        best = max(own, key=lambda r: (trial_score(r), -r["spec"]["learning_rate"]))["spec"]["learning_rate"]
        chosen = {r["spec"]["learning_rate"] for r in finals if r["spec"]["strategy"] == strategy}
        assert chosen == {best}, (strategy, [(r["spec"]["learning_rate"], trial_score(r)) for r in own])
        assert sorted(r["spec"]["seed"] for r in finals if r["spec"]["strategy"] == strategy) == [0, 1, 2]
    assert "chose learning_rate" in done.stdout
    again = cli("run", "--suite", str(path), "--results", str(results))  # resume across both phases: nothing trains
    assert again.returncode == 0 and again.stdout.count("6 of 6 runs already complete") == 2, again.stdout[-2000:]

    # the report: finals in the tables with intervals and Holm-corrected verdicts; the trials in the search section
    report = cli("report", "--results", str(results), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-3000:]
    md = (tmp_path / "report" / "README.md").read_text()
    assert "95% t confidence interval" in md and "Holm" in md and "## Verdicts" in md
    assert "mnist / mlp[depth=3,width=32]: " in md.split("## Verdicts")[1]
    (tmp_path.parent / "study_report.md").write_text(md)  # for a reader of a failed run
    search = md.split("## Learning-rate search")[1]
    assert "chosen in bold" in search and "good range" in search and "lr_mnist_" in md
    trials_csv = (tmp_path / "report" / "tables" / "search_trials.csv").read_text().splitlines()
    assert len(trials_csv) == 1 + 6
    choices = pd.read_csv(tmp_path / "report" / "tables" / "search_choices.csv").set_index("strategy")
    for strategy in ("none", "batchnorm"):
        lr = {r["spec"]["learning_rate"] for r in finals if r["spec"]["strategy"] == strategy}.pop()
        assert choices.loc[strategy, "chosen_learning_rate"] == lr
    accuracy = (tmp_path / "report" / "tables" / "accuracy.csv").read_text()
    assert "ci95" in accuracy.splitlines()[0] and ",3," in accuracy  # finals only: n = 3 seeds per cell
