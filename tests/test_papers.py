"""Paper suites: every configuration builds and trains a step; step probes land on the right steps;
the comparison tables come from the records."""

import numpy as np
import pandas as pd
import pytest

from normbench.registry import DATASETS
from normbench.report.papers import DROPOUT_PAPER, make_papers_report
from normbench.grid import run_grid
from normbench.runner import build_compiled, run
from normbench.spec import RunSpec
from normbench.builtins import register_suites
from normbench.suites import get_suite

from _tiers import covering

SHAPES = {"mnist": (28, 28, 1), "mnist_binary": (28, 28, 1), "cifar10": (32, 32, 3)}
PAPER_SUITES = ["paper-snn", "paper-snn-full", "paper-bn", "paper-maxnorm", "paper-maxnorm-full"]


def _configs():
    register_suites()
    seen = {}
    for name in PAPER_SUITES:
        for s in get_suite(name).specs:
            key = (s.dataset, s.model, str(s.model_params), s.strategy, str(s.strategy_params), s.optimizer, s.learning_rate)
            seen.setdefault(key, (name, s))
    return list(seen.values())


def _size(case) -> int:
    params = case[1].model_params
    return params.get("depth", 1) * params.get("width", 1)


# `make test` trains the smallest configuration of each suite, dataset, model and strategy; `make test-all` all.
@pytest.mark.parametrize("suite, spec", covering(sorted(_configs(), key=_size),
                                                 lambda c: (c[0], c[1].dataset, c[1].model, c[1].strategy),
                                                 ids=lambda c: c[1].label + str(c[1].model_params) + str(c[1].strategy_params)))
def test_every_paper_configuration_builds_and_trains_a_step(suite, spec, rng):
    assert spec.dataset in DATASETS
    model, strategy = build_compiled(spec, SHAPES[spec.dataset], 10)
    x = rng.normal(size=(2, *SHAPES[spec.dataset])).astype("float32")
    logs = model.train_on_batch(x, np.array([0, 1]), return_dict=True)
    assert np.isfinite(logs["loss"])


def test_paper_suites_match_the_papers_settings():
    snn = get_suite("paper-snn").specs
    assert {s.model_params["depth"] for s in snn} == {8, 16, 32}
    assert {(s.dataset, s.model_params["width"]) for s in snn} == {("mnist", 784), ("cifar10", 3072)}
    assert {s.strategy for s in snn} == {"selu", "batchnorm_post"}
    assert all(s.optimizer == "sgd" and s.momentum == 0 and s.learning_rate == 1e-5 and s.batch_size == 128 for s in snn)
    assert all(s.epochs == 2000 for s in get_suite("paper-snn-full").specs)
    assert all(s.input_scaling == "standardize_feature" for s in snn)  # per pixel, as the paper's code
    bn = get_suite("paper-bn").specs
    assert {s.strategy for s in bn} == {"none", "batchnorm"} and all(s.batch_size == 60 for s in bn)
    assert {s.dataset for s in bn} == {"mnist_binary"}  # the paper's binary images
    assert all(s.epochs * -(-55000 // 60) >= 50000 for s in bn)
    mx = get_suite("paper-maxnorm").specs
    assert {s.strategy_params.get("c") for s in mx if s.strategy == "maxnorm"} == {2.0, 3.0, 4.0}
    assert any(s.strategy_params.get("input_dropout_rate") == 0.2 and s.strategy_params.get("dropout_rate") == 0.5 for s in mx)
    full = get_suite("paper-maxnorm-full").specs
    assert {s.strategy_params.get("c") for s in full} == {s.strategy_params.get("c") for s in mx}
    # the paper's schedule: momentum 0.5 -> 0.95 over 500 epochs, the rate x0.998 per epoch, ~a million updates
    assert all((s.momentum_start, s.momentum, s.momentum_ramp_epochs, s.lr_schedule, s.lr_decay)
               == (0.5, 0.95, 500, "exponential", 0.998) and s.epochs * 550 >= 990_000 for s in full)


@pytest.mark.parametrize("every", [4, 3])
def test_step_probes_land_on_the_right_steps(data_dir, every):
    spec = RunSpec("bn_paper_mlp", "batchnorm", "mnist", epochs=2, batch_size=10, limit=100, eval_limit=100,
                   val_size=100, probe_size=20, train_eval_size=100, probe_every_steps=every)
    rec = run(spec, data_dir=data_dir, log=lambda _m: None)
    assert rec["status"] == "ok", rec["error"]
    steps = [r[0] for r in rec["steps"]["rows"]]
    assert steps == list(range(0, 21, every))  # 10 steps per epoch, 2 epochs, and step 0 at initialization
    assert rec["performance"]["steps_per_execution"] == (2 if every == 4 else 1)  # gcd(16, every, 10 steps/epoch)
    assert {r[0] for r in rec["step_stats"]["rows"]} == set(steps)
    assert any(r[3] == "u0_p50" and r[2] == "pre" for r in rec["step_stats"]["rows"])


@pytest.mark.slow
def test_papers_report_tables_come_from_records(tmp_path, data_dir):
    tiny = dict(limit=100, eval_limit=100, val_size=100, probe_size=20, train_eval_size=100)
    specs = [RunSpec("mlp", s, "mnist", epochs=1, model_params={"depth": 2, "width": 16}, **tiny)
             for s in ("none", "maxnorm")]
    specs.append(RunSpec("mlp", "maxnorm", "mnist", epochs=1, model_params={"depth": 2, "width": 16},
                         strategy_params={"c": 2.0, "dropout_rate": 0.5, "input_dropout_rate": 0.2}, **tiny))
    run_grid(specs, tmp_path / "paper-maxnorm", data_dir=data_dir, log=lambda _m: None)
    bn = [RunSpec("bn_paper_mlp", s, "mnist", epochs=1, batch_size=20, probe_every_steps=5, **tiny) for s in ("none", "batchnorm")]
    run_grid(bn, tmp_path / "paper-bn", data_dir=data_dir, log=lambda _m: None)
    path = make_papers_report(tmp_path, tmp_path / "out", log=lambda _m: None)
    md = path.read_text()
    assert "Not run: `normbench run --suite paper-snn" in md  # a missing suite is said, not hidden
    assert "**Verdict:" in md.split("## Batch normalization")[1]
    assert (tmp_path / "out" / "figures" / "paper_bn_figure1.png").stat().st_size > 0
    # the max-norm table: our error is 100 * (1 - test accuracy) of each record
    import json

    section = md.split("## Dropout and max-norm")[1]
    for p in (tmp_path / "paper-maxnorm").glob("*.json"):
        rec = json.loads(p.read_text())
        assert f"{round(100 * (1 - rec['test']['accuracy']), 3):g}" in section
    assert str(DROPOUT_PAPER["dropout + max-norm"]) in section


def test_the_snn_verdict_reads_the_papers_training_loss(tmp_path, data_dir):
    tiny = dict(limit=200, eval_limit=100, val_size=100, probe_size=20, train_eval_size=100, epochs=2)
    specs = [RunSpec("mlp", s, "mnist", model_params={"depth": 2, "width": 16},
                     input_scaling="standardize_feature", **tiny) for s in ("selu", "batchnorm_post")]
    run_grid(specs, tmp_path / "paper-snn", data_dir=data_dir, log=lambda _m: None)
    md = make_papers_report(tmp_path, tmp_path / "out", log=lambda _m: None).read_text()
    section = md.split("## Self-normalizing")[1].split("## ")[0]
    import json

    for p in (tmp_path / "paper-snn").glob("*.json"):
        rec = json.loads(p.read_text())
        fit = [h["fit_loss"] for h in rec["history"] if "fit_loss" in h]
        row = next(line for line in section.splitlines() if line.startswith(f"| mnist / {rec['spec']['strategy']} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[2]) == pytest.approx(fit[0], abs=6e-4) and float(cells[3]) == pytest.approx(fit[-1], abs=6e-4)
        assert float(cells[6]) == pytest.approx(rec["history"][-1]["train_loss"], abs=6e-4)
    assert "| input standardization | per feature (pixel) |" in section
    assert (tmp_path / "out" / "figures" / "paper_snn_inference_loss.png").stat().st_size > 0


@pytest.mark.slow
def test_a_papers_section_counts_every_records_commit(tmp_path, data_dir):
    import json

    tiny = dict(limit=100, eval_limit=100, val_size=100, probe_size=20, train_eval_size=100, epochs=1)
    specs = [RunSpec("mlp", "none", "mnist", model_params={"depth": 2, "width": 16}, **tiny),
             RunSpec("mlp", "maxnorm", "mnist", model_params={"depth": 2, "width": 16}, **tiny),
             RunSpec("mlp", "maxnorm", "mnist", model_params={"depth": 2, "width": 16}, strategy_params={"c": 2.0}, **tiny)]
    run_grid(specs, tmp_path / "paper-maxnorm", data_dir=data_dir, log=lambda _m: None)
    for i, p in enumerate(sorted((tmp_path / "paper-maxnorm").glob("*.json"))):  # two runs at one commit, one at another
        rec = json.loads(p.read_text())
        rec["environment"].update(git_commit=("b" if i else "a") * 40, git_dirty=bool(i))
        p.write_text(json.dumps(rec))
    md = make_papers_report(tmp_path, tmp_path / "out", log=lambda _m: None).read_text()
    records = next(line for line in md.split("## Dropout and max-norm")[1].splitlines() if line.startswith("Records:"))
    assert "commit bbbbbbbbbb (2 runs, 2 with uncommitted changes), aaaaaaaaaa (1 run);" in records
    assert "seeds 0;" in records and "epochs 1;" in records and "training samples 100;" in records
    assert "other work on the machine is not recorded" in records


def test_a_papers_verdict_is_decided_by_its_decided_claims():
    from normbench.report.papers import overall

    assert overall(["reproduced", "reproduced"]) == "reproduced"
    assert overall(["reproduced", "not reproduced"]) == "partly reproduced"
    assert overall(["reproduced", "inconclusive"]) == "partly reproduced"  # an undecided claim is not a pass
    assert overall(["not reproduced", "inconclusive"]) == "not reproduced"
    assert overall(["inconclusive", "inconclusive"]) == "inconclusive"


def test_the_published_replications_are_graded_by_their_stated_criteria(tmp_path):
    """The committed paper records, graded: too little of the paper's length or a net that never started training
    makes a claim inconclusive; BN's drift claim is judged on all three percentiles, not the median alone."""
    from pathlib import Path

    from normbench import store

    published = Path(__file__).resolve().parents[1] / "results" / "papers"
    md = make_papers_report(published, tmp_path, log=lambda _m: None).read_text()
    snn, bn, maxnorm = (md.split(f"## {t}")[1].split("\n## ")[0]
                        for t in ("Self-normalizing", "Batch normalization", "Dropout and max-norm"))
    assert "**Verdict: inconclusive**" in snn
    assert "each over 2 epoch-to-epoch comparison(s) (at least 10 needed)" in snn
    assert "BN never started training there (cifar10 depth 32, mnist depth 32" in snn
    assert "**Verdict: partly reproduced**" in bn
    assert "- (a) BN reaches higher test accuracy sooner: **reproduced**" in bn
    assert "drifts without: **not reproduced**. BN's range over training against the baseline's: p15 1.51 vs 0.611" in bn
    final = {r["spec"]["strategy"]: r["test"]["accuracy"] for r in store.load_records(published / "paper-bn")}
    assert f"final test accuracy (the record's) {final['batchnorm']:.4f} against {final['none']:.4f}" in bn
    assert "**Verdict: inconclusive**" in maxnorm and "5,500 of the paper's 1,000,000 updates (0.55%)" in maxnorm
    for section in (snn, bn, maxnorm):  # the suites gained settings after these runs: said, not "0 of N present"
        assert "**Made under an earlier definition of the suite:**" in section and "Incomplete" not in section
