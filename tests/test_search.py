"""The tuning protocol: trials on a grid, the choice on validation accuracy only, finals with new seeds."""

import copy
import os
import subprocess
import sys

import pandas as pd
import pytest

from normbench import store
from normbench.errors import ConfigError
from normbench.search import Halving, Search, advance, choose, finals, trial_score
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
    ("learning_rate = [0.1, 0.3]\ntrial_seeds = [100]\nbudget = 6", "budget needs knobs = true"),
    ("learning_rate = [0.1, 0.3]\ntrial_seeds = [100]\nknobs = 1", "knobs = 1; expected true"),
    ("learning_rate = [0.1, 0.3]\ntrial_seeds = [100]\nhalving = { eta = 1 }", "eta must be >= 2"),
    ("learning_rate = [0.1, 0.3]\ntrial_seeds = [100]\nhalving = { rungs = 2 }", "a table of integers"),
    ("learning_rate = [0.1, 0.3]\ntrial_seeds = [100]\nextend = 9", "extend = 9; expected an integer in"),
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


KNOB_SUITE = TINY_SUITE.replace('trial_seeds = [100]', 'trial_seeds = [100, 101, 102]\nknobs = true').replace(
    'strategies = ["none", "batchnorm"]', 'strategies = ["none", "batchnorm", "maxnorm", "dyt", "nf", "selu"]')


def test_with_knobs_every_strategy_gets_the_same_budget_spent_on_its_own_knobs(tmp_path):
    from normbench.norms import strategy_knobs

    suite = load_suite(_suite(tmp_path, KNOB_SUITE))
    search = suite.search
    assert search.budget == 9  # the largest need: 3 knob values x the 3 listed rates
    trials = search.trials(suite.specs)
    per = pd.Series([t.strategy for t in trials]).value_counts()
    assert set(per) == {9 * 3} and len(per) == 6  # 9 configurations x 3 trial seeds, every strategy alike
    for name, knob in (("maxnorm", "c"), ("dyt", "alpha_init"), ("nf", "clip"), ("selu", "dropout_rate")):
        own = [t for t in trials if t.strategy == name]
        assert {t.strategy_params[knob] for t in own} == set(strategy_knobs(name)[0].values)
        assert sorted({t.learning_rate for t in own}) == [0.001, 0.03, 1.0]  # the listed rates
        assert strategy_knobs(name)[0].reason  # every knob says why its values
    rates = sorted({t.learning_rate for t in trials if t.strategy == "none"})
    assert len(rates) == 9 and rates[0] == 0.001 and rates[-1] == 1.0  # no knobs: a finer grid over the same range
    assert all(not t.strategy_params for t in trials if t.strategy in ("none", "batchnorm"))
    # a grid that fixes a knob the search would tune is refused, naming both
    with pytest.raises(ConfigError, match=r"searches 'maxnorm''s \['c'\], which a grid fixes"):
        load_suite(_suite(tmp_path, KNOB_SUITE.replace('"nf", "selu"]', '"nf", "selu"]\nstrategy_params = { c = 2.0 }')
                          .replace('strategies = ["none", "batchnorm", "maxnorm", "dyt", "nf", "selu"]',
                                   'strategies = ["maxnorm"]')))
    with pytest.raises(ConfigError, match="budget 5: strategy 'dyt' has 3 configurations per learning rate"):
        load_suite(_suite(tmp_path, KNOB_SUITE.replace("knobs = true", "knobs = true\nbudget = 5")))


def _scored(trials, score):
    return {t.run_id: score(t) for t in trials}


def test_halving_trains_the_best_third_at_full_length_and_extends_an_edge_choice():
    from normbench.spec import RunSpec

    search = Search((("learning_rate", (0.01, 0.03, 0.1)),), (7, 8, 9), halving=Halving(eta=3, epochs=1), extend=1)
    grid = [RunSpec("mlp8", "none", "mnist", seed=0, epochs=3)]
    step = advance(search, grid, {})
    assert len(step.todo) == 3 and all(t.epochs == 1 and t.seed == 7 for t in step.todo)
    assert all(step.rung(t) == 0 for t in step.todo) and not step.choices
    rung0 = {0.01: 0.5, 0.03: 0.7, 0.1: 0.9}  # the largest rate is best after one epoch
    scores = _scored(step.todo, lambda t: rung0[t.learning_rate])
    step = advance(search, grid, scores)  # the best ceil(3/3) = 1 configuration, at full length, every trial seed
    assert sorted((t.learning_rate, t.seed, t.epochs) for t in step.todo) == [(0.1, 7, 3), (0.1, 8, 3), (0.1, 9, 3)]
    assert all(step.rung(t) == 1 for t in step.todo)
    scores |= _scored(step.todo, lambda t: 0.9)
    step = advance(search, grid, scores)  # 0.1 is the grid's edge: the next rate beyond it (the grid's spacing)
    assert sorted({t.learning_rate for t in step.todo}) == [pytest.approx(0.333, rel=1e-3)] and len(step.todo) == 3
    scores |= _scored(step.todo, lambda t: 0.8 + 0.01 * (t.seed - 8))
    step = advance(search, grid, scores)
    assert not step.todo and len(step.choices) == 1
    c = step.choices[0]
    assert c.values == {"learning_rate": 0.1} and c.score == pytest.approx(0.9) and c.runner_up == pytest.approx(0.8)
    assert c.trials == 3 + 3 + 3 and c.epochs == 3 * 1 + 6 * 3 and c.extended == 1 and c.edge == ()
    assert c.as_dict()["trial_epochs"] == 21
    assert [f.learning_rate for f in finals(search, grid, step.choices)] == [0.1]
    # a failed trial in this invocation leaves its setting without a choice instead of retrying it forever
    failed = advance(search, grid, {}, failed={search.trials(grid)[0].run_id})
    assert not failed.todo and failed.missing == ["mnist/mlp8/none"]


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
    assert all(r["suite"]["chosen"]["trials"] == 3 for r in finals)  # what the setting's search cost, in the record
    for strategy in ("none", "batchnorm"):
        own = [r for r in trials if r["spec"]["strategy"] == strategy]
        best = max(own, key=lambda r: (trial_score(r), -r["spec"]["learning_rate"]))["spec"]["learning_rate"]
        chosen = {r["spec"]["learning_rate"] for r in finals if r["spec"]["strategy"] == strategy}
        assert chosen == {best}, (strategy, [(r["spec"]["learning_rate"], trial_score(r)) for r in own])
        assert sorted(r["spec"]["seed"] for r in finals if r["spec"]["strategy"] == strategy) == [0, 1, 2]
    assert "chose learning_rate" in done.stdout
    again = cli("run", "--suite", str(path), "--results", str(results))  # resume across both phases: nothing trains
    assert again.returncode == 0 and again.stdout.count("6 of 6 runs already complete") == 1, again.stdout[-2000:]
    assert "trial phase" not in again.stdout  # every trial scored: nothing to train before the finals

    # the report: finals in the tables with intervals and Holm-corrected verdicts; the trials in the search section
    report = cli("report", "--results", str(results), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-3000:]
    md = (tmp_path / "report" / "README.md").read_text()
    assert "95% t confidence interval" in md and "Holm" in md and "## Verdicts" in md
    assert "mnist / mlp[depth=3,width=32]: " in md.split("## Verdicts")[1]
    (tmp_path.parent / "study_report.md").write_text(md)  # for a reader of a failed run
    search = md.split("## Search")[1]
    assert "the choices (full-length trials)" in search and "good range" in search and "lr_mnist_" in md
    assert "What each strategy's search cost" in search and "| none | 3 trials, 3 epochs |" in search
    trials_csv = (tmp_path / "report" / "tables" / "search_trials.csv").read_text().splitlines()
    assert len(trials_csv) == 1 + 6
    choices = pd.read_csv(tmp_path / "report" / "tables" / "search_choices.csv").set_index("strategy")
    for strategy in ("none", "batchnorm"):
        lr = {r["spec"]["learning_rate"] for r in finals if r["spec"]["strategy"] == strategy}.pop()
        assert choices.loc[strategy, "chosen_learning_rate"] == lr
    accuracy = (tmp_path / "report" / "tables" / "accuracy.csv").read_text()
    assert "ci95" in accuracy.splitlines()[0] and ",3," in accuracy  # finals only: n = 3 seeds per cell


@pytest.mark.slow
def test_a_knob_study_gives_every_strategy_the_same_trials_and_searches_radius_and_alpha(tmp_path, data_dir):
    text = (TINY_SUITE.replace("epochs = 1", "epochs = 2")
            .replace("learning_rate = [0.001, 0.03, 1.0]\ntrial_seeds = [100]",
                     "learning_rate = [0.01, 0.1]\ntrial_seeds = [100, 101]\nknobs = true\n"
                     "halving = { eta = 3, epochs = 1 }")
            .replace('strategies = ["none", "batchnorm"]', 'strategies = ["none", "batchnorm", "maxnorm", "dyt"]')
            .replace("seeds = [0, 1, 2]", "seeds = [0, 1]"))
    path = _suite(tmp_path, text)
    results = tmp_path / "runs"
    env = {**os.environ, **({"NORMBENCH_DATA_DIR": data_dir} if data_dir else {})}
    done = subprocess.run([sys.executable, "-m", "normbench.cli", "run", "--suite", str(path), "--results",
                           str(results)], capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = store.load_records(results)
    trials = [r for r in records if r["suite"]["phase"] == "trial"]
    finals = [r for r in records if r["suite"]["phase"] == "final"]
    # 6 configurations each (3 knob values x 2 rates, or 6 rates): 6 one-epoch trials, then the best 2 on 2 seeds
    counts = pd.Series([r["spec"]["strategy"] for r in trials]).value_counts().to_dict()
    assert counts == {"none": 10, "batchnorm": 10, "maxnorm": 10, "dyt": 10}
    assert sorted(r["suite"]["rung"] for r in trials).count(0) == 24
    own = {s: [r["spec"] for r in trials if r["spec"]["strategy"] == s] for s in counts}
    assert {p["strategy_params"]["c"] for p in own["maxnorm"]} == {1.0, 1.5, 2.0}
    assert {p["strategy_params"]["alpha_init"] for p in own["dyt"]} == {0.5, 1.0, 2.0}
    assert len({p["learning_rate"] for p in own["none"]}) == 6 and len({p["learning_rate"] for p in own["dyt"]}) == 2
    for r in finals:  # each final runs its setting's choice and says what it cost
        chosen = r["suite"]["chosen"]
        assert chosen["trials"] == 10 and chosen["trial_epochs"] == 6 * 1 + 4 * 2
        assert r["spec"]["learning_rate"] == chosen["values"]["learning_rate"]
        if r["spec"]["strategy"] == "maxnorm":
            assert r["spec"]["strategy_params"]["c"] == chosen["values"]["strategy_params.c"]
    report = subprocess.run([sys.executable, "-m", "normbench.cli", "report", "--results", str(results), "--out",
                             str(tmp_path / "report")], capture_output=True, text=True, env=env, timeout=900)
    assert report.returncode == 0, report.stderr[-3000:]
    md = (tmp_path / "report" / "README.md").read_text()
    assert md.count("10 trials, 14 epochs") == 4 and "## Mechanisms" in md  # the same cost for every strategy
    # make bench's last step, through the CLI: the same runs against themselves lie inside every interval
    again = subprocess.run([sys.executable, "-m", "normbench.cli", "report", "--results", str(results), "--out",
                            str(tmp_path / "again"), "--published", str(results)], capture_output=True, text=True,
                           env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "against the published numbers: 4 of 4 cells inside the published 95% intervals" in again.stdout
    assert "## Against the published numbers" in (tmp_path / "again" / "README.md").read_text()
