"""The throughput benchmark's measurements and verdicts (benchmarks/throughput.py), on real tiny runs."""

import importlib.util
from pathlib import Path

import pytest

from normbench.spec import RunSpec

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
_spec = importlib.util.spec_from_file_location("throughput", _PATH)
throughput = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(throughput)


def test_plain_keras_runs_without_op_determinism_and_normbench_gets_it_back():
    from tensorflow.python.framework import config

    from normbench.env import enable_determinism

    enable_determinism()
    assert config.is_op_determinism_enabled()
    with throughput.user_defaults():
        assert not config.is_op_determinism_enabled()
    assert config.is_op_determinism_enabled()


def test_both_measurements_time_training_inside_the_epoch(data_dir):
    from normbench.datasets import load_splits

    spec = RunSpec("mlp", "none", "mnist", epochs=4, limit=600, eval_limit=300, val_size=300,
                   train_eval_size=300, probe_size=64)
    nb = throughput.measure_normbench(spec, data_dir)
    assert nb["n_train"] == 600
    assert 0 < nb["train_s"] < nb["wall_s"]  # the evaluations and the probe take time on top of training
    assert nb["performance"]["steps_per_execution"] >= 1
    splits = load_splits("mnist", val_size=300, limit=600, eval_limit=300, data_dir=data_dir)
    plain = throughput.measure_plain(spec, splits, epochs=4)
    assert 0 < plain["train_s"] < plain["wall_s"]  # the validation pass is inside fit's epoch
    assert plain["jit_compile"] is False  # Keras' "auto" resolves to no XLA for TensorFlow on a CPU
    assert nb["n_eval"] == 300 + 300 + 64  # no batch norm: train subset, validation split, probe


def test_the_floor_counts_the_batch_norm_re_estimate_and_the_second_scoring(data_dir):
    from normbench.runner import run

    spec = RunSpec("mlp", "batchnorm", "mnist", epochs=1, limit=600, eval_limit=300, val_size=300,
                   train_eval_size=300, probe_size=64, batch_size=32, model_params={"depth": 2, "width": 8})
    rec = run(spec, data_dir=data_dir, log=lambda _m: None)
    assert rec["data"]["bn_statistics"]["samples"] == 16 * 32
    assert throughput.evaluated_samples(rec, spec) == 2 * (300 + 300) + 16 * 32 + 64


def _row(model, strategy, speedup, train_speedup, fraction, engine="fit", share=0.10, floor=0.08, train=1000.0, whole=800.0):
    row = {"model": model, "strategy": strategy, "speedup": speedup, "train_speedup": train_speedup,
           "fraction_of_peak": fraction, "engine": engine, "backend": "x", "measurement_share": share,
           "measurement_floor": floor, "normbench_train_samples_per_s": train, "normbench_samples_per_s": whole}
    if engine == "scan":  # against a fit row of 1000 training and 800 whole-epoch samples/s in the same repeats
        row.update(scan_over_fit_train=train / 1000.0, scan_over_fit_train_min=train / 1000.0 - 0.05,
                   scan_over_fit_train_max=train / 1000.0 + 0.05, scan_over_fit=whole / 800.0)
    return row


def _epoch(train_s, wall_s):
    """One measurement as measure_normbench / measure_plain return it."""
    return {"train_s": train_s, "wall_s": wall_s, "n_train": 1000, "n_eval": 100, "jit_compile": True,
            "performance": {"train_flops_per_sample": 1e6, "jit_compile": True, "steps_per_execution": 16}}


def test_scan_is_compared_with_fit_inside_each_repeat():
    """The machine drifts between repeats: scan/fit is the median of the ratios inside a repeat, not a ratio of
    medians that may come from different repeats."""
    from types import SimpleNamespace

    # repeat 1 fast machine, repeats 2-3 slow: scan is 1.1x fit inside every repeat
    reps = [{"fit": _epoch(1.1 * k, 1.3 * k), "scan": _epoch(1.0 * k, 1.2 * k), "plain": _epoch(1.2 * k, 1.3 * k)}
            for k in (1.0, 2.0, 2.1)]
    spec = RunSpec("mlp8", "none", "mnist")
    fit, scan = (throughput.engine_row(reps, e, spec, SimpleNamespace(repeats=3, bf16=False)) for e in ("fit", "scan"))
    assert "scan_over_fit_train" not in fit
    assert scan["scan_over_fit_train"] == pytest.approx(1.1)
    assert scan["scan_over_fit_train_min"] == pytest.approx(1.1) == scan["scan_over_fit_train_max"]
    assert scan["scan_over_fit"] == pytest.approx(1.3 / 1.2)
    assert scan["speedup"] == pytest.approx(1.3 / 1.2) and fit["speedup"] == pytest.approx(1.0)


def _result(kind, rows):
    return {"meta": {"environment": {"device_kind": kind}}, "rows": rows}


def test_target_verdicts_name_what_misses():
    results = {
        "tensorflow": _result("cpu", [_row("mlp8", "none", 1.25, 1.3, 0.40), _row("mlp32", "selu", 1.10, 1.2, 0.4),
                                      _row("convnet", "batchnorm", 0.90, 1.0, 0.5)]),
        "jax": _result("cpu", [_row("mlp8", "none", 0.9, 1.0, 0.52),
                               _row("mlp8", "none", 0.9, 1.0, 0.52, engine="scan", train=1100.0, whole=1000.0, share=0.15)]),
    }
    text = "\n".join(throughput.target_lines(results))
    assert "**not met** on 1 of 2: mlp32/selu 1.10x" in text
    assert "**not met** on 1 of 3: convnet/batchnorm 0.90x" in text
    assert "every (model, strategy) at >= 0.97x" in text  # training alone
    assert "mlp8 at >= 50% of the matmul peak: met; none 52.0% (jax)" in text
    assert "no GPU in this run" in text
    assert "scan engine never slower than fit for training alone (scan/fit within a repeat, median [min-max] over " \
           "repeats): met (mlp8/none 1.10x [1.05-1.15])" in text
    assert "scan >= 1.2x fit for a whole epoch with its measurement: **not met** on 1 of 1 (mlp8/none 1.25x)" not in text
    assert "1.2x fit for a whole epoch with its measurement: met (mlp8/none 1.25x)" in text
    assert "**not met** on 1 of 5 rows: x/scan mlp8/none 15.0% (floor 8.0%)" in text
    assert ("JAX (CPU), every (engine, model, strategy) at >= 0.97x plain Keras: **not met** on 2 of 2: "
            "fit mlp8/none 0.90x (training 1.00x), scan mlp8/none 0.90x (training 1.00x).") in text


@pytest.mark.parametrize("argv", [["--epochs", "3"], ["--backends", "tensorflow,theano"]])
def test_bad_arguments_are_refused(argv, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["throughput.py", *argv])
    with pytest.raises(SystemExit):
        throughput.main()
    assert "error" in capsys.readouterr().err


def test_the_grid_benchmark_replaces_its_own_section_and_keeps_every_other():
    """make perf-grid rewrote results/perf.md up to the next '## ' heading, dropping a '# ' section in between."""
    spec = importlib.util.spec_from_file_location("grid_bench", _PATH.with_name("grid.py"))
    grid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grid)
    text = "# T\n\n## Grid wall time\nold\n\n# Diagnostics\nd\n\n## Numbers moved\nn\n"
    out = grid.replace_section(text, grid.SECTION, "## Grid wall time\nnew\n")
    assert out == "# T\n\n## Grid wall time\nnew\n\n# Diagnostics\nd\n\n## Numbers moved\nn\n"
    assert grid.replace_section("# T\n", grid.SECTION, "## Grid wall time\nnew\n") == "# T\n\n## Grid wall time\nnew\n"


def test_the_report_holds_rows_with_and_without_the_scan_columns(tmp_path):
    """A TensorFlow row (fit only) and JAX rows (fit and scan) in one report: perf.csv has every row's columns."""
    import csv
    from types import SimpleNamespace

    args = SimpleNamespace(repeats=1, bf16=False, mnist_samples=1000, cifar_samples=500, epochs=4)
    spec = RunSpec("mlp8", "none", "mnist")
    env = {"backend_version": "v", "keras": "k", "device": "CPU", "device_kind": "cpu", "deterministic_ops": True,
           "git_commit": "abc", "git_dirty": False}
    results = {}
    for backend, engines in (("tensorflow", ["fit"]), ("jax", ["fit", "scan"])):
        reps = [{**{e: _epoch(1.0, 1.2) for e in engines}, "plain": _epoch(1.1, 1.2)}]
        rows = [throughput.engine_row(reps, e, spec, args) | {"fraction_of_peak": 0.5, "backend": backend}
                for e in engines]
        results[backend] = {"meta": {"environment": env, "peak_gflops": 100.0, "peak_rss_mib": 10.0}, "rows": rows}
    throughput.write_report(results, args, tmp_path)
    with open(tmp_path / "perf.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["backend"], r["engine"]) for r in table] == [("tensorflow", "fit"), ("jax", "fit"), ("jax", "scan")]
    assert table[0]["scan_over_fit_train"] == "" and float(table[2]["scan_over_fit_train"]) == 1.0
    assert "scan engine never slower than fit for training alone" in (tmp_path / "perf.md").read_text()


def test_the_tf_input_benchmark_prints_both_inputs(data_dir, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("tf_input", _PATH.with_name("tf_input.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr("sys.argv", ["tf_input.py", "--model", "mlp", "--strategy", "batchnorm", "--epochs", "2",
                                     "--samples", "300", "--data-dir", data_dir])
    bench.main()
    out = capsys.readouterr().out
    assert "300 mnist images" in out and out.count("  epoch ") == 2
    assert "tf_batches: median" in out and "fit on arrays: median" in out and "of 1 epochs over 1.3x" in out
