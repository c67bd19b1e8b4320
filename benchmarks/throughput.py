"""Throughput of the normbench runner against a plain hand-written Keras `model.fit`.

For backends x models x strategies, on the same data: samples per second of

- normbench: the real runner (`normbench.runner.run`) with its defaults and statistics
  on; an epoch's wall time is its training plus the per-epoch evaluations (a fixed
  train subset and the validation split, in inference mode) and the activation probe;
- plain: the same model compiled with Keras' default settings and trained with
  `model.fit(x, y, batch_size, epochs, validation_data=(x_val, y_val))` in a process
  state a user would have (TensorFlow op determinism switched off for it); an
  epoch's wall time includes its validation pass, which is timed separately too.

Each (backend, model, strategy) runs in its own worker process (Keras fixes the backend
at import, and a row must not inherit what earlier rows left behind). Within it, the row
is measured ``--repeats`` times; a repeat runs normbench (on JAX with both engines, fit
and scan) and plain back to back, in an order rotated by one every repeat, so that all
see the same state of this (noisy, shared) machine; a speedup (and scan/fit) is the
median over repeats of the ratio within a repeat, and each repeat's epoch time is the
median of the epochs after the first (tracing/compilation).
FLOPs per training sample are counted from the model (3x the forward multiply-adds);
the float32 matmul peak is measured in the same process before and after (the larger
counts). Optionally (``--bf16``, TensorFlow by default) the runner is also timed with
the opt-in ``mixed_bfloat16`` precision, which changes results and is never a default.

Writes results/perf.md and results/perf.csv, and keeps the raw measurements in
throughput.json beside them as each backend finishes.

    python benchmarks/throughput.py [--backends tensorflow,jax] [--models mlp8,mlp32,convnet,vgg8]
                                    [--strategies none,batchnorm,maxnorm,selu] [--repeats 3] [--epochs 4]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATASET = {"mlp": "mnist", "convnet": "cifar10", "vgg": "cifar10"}
EVAL_SIZE = 2000  # validation split and inference-mode train subset: 9-10% of MNIST's training samples per
# epoch as in the standard suite (5,000 of 55,000); 40% of the 5,000 CIFAR-10 images (standard: 50% of 10,000)
TARGET_TF_MLP, TARGET_ANY, TARGET_PEAK = 1.2, 0.97, 0.50  # issue #5's targets


# ----------------------------------------------------------------------------- measurements (worker process)


def _sync(x) -> None:
    """Wait until the device has computed ``x``, without copying it to the host."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        x.block_until_ready()
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    elif backend == "tensorflow":
        keras.ops.convert_to_numpy(x[0, 0])  # one element crosses to the host: waits for the whole matmul


def matmul_peak(n: int | None = None, repeats: int = 10) -> dict[str, float]:
    """Best float32 GFLOP/s of an n x n matmul, through the Keras backend and through NumPy.

    The backend's matmul is timed as device computation only: the input is on the device before
    the timer starts and the timer stops when the device has finished (synchronized, no copy of the
    result to the host; an earlier version copied it back inside the timer and so under-measured a
    GPU's peak, giving "% of peak" figures over 100%). On a GPU n is 8192, so the matmul is large
    enough to reach the device's peak.
    """
    import keras
    import numpy as np

    from normbench.env import environment

    gpu = environment()["device_kind"] == "gpu"
    n = n or (8192 if gpu else 2048)
    a = np.random.default_rng(0).normal(size=(n, n)).astype("float32")
    out = {}
    x = keras.ops.convert_to_tensor(a)
    _sync(keras.ops.matmul(x, x))  # warm-up (and compilation)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        _sync(keras.ops.matmul(x, x))
        best = min(best, time.perf_counter() - t)
    out["backend"] = 2 * n**3 / best / 1e9
    if not gpu:  # NumPy is a CPU matmul: only a peak for the CPU
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            np.matmul(a, a)
            best = min(best, time.perf_counter() - t)
        out["numpy"] = 2 * n**3 / best / 1e9
    return out


def _timer():
    """A callback with each epoch's wall time (validation pass included) and its validation pass's time."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.epoch_s, self.val_s = [], []

        def on_test_begin(self, logs=None):  # fit's validation pass calls evaluate with fit's callbacks
            self.t_val = time.perf_counter()

        def on_test_end(self, logs=None):
            self.val_s.append(time.perf_counter() - self.t_val)

        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_s.append(time.perf_counter() - self.t)

    return EpochTimer()


class user_defaults:
    """What a user's process has: on TensorFlow, no op determinism (normbench's runner turns it on)."""

    def __enter__(self):
        import keras

        self.restore = False
        if keras.backend.backend() == "tensorflow":
            from tensorflow.python.framework import config  # Keras' own check reads this flag

            self.restore = config.is_op_determinism_enabled()
            config.disable_op_determinism()
        return self

    def __exit__(self, *exc):
        if self.restore:
            from tensorflow.python.framework import config

            config.enable_op_determinism()


def measure_plain(spec, splits, epochs: int) -> dict:
    """Median epoch seconds (wall and training only) of model.fit with Keras' default compile settings."""
    import keras

    from normbench.runner import build, compile_model

    with user_defaults():
        keras.backend.clear_session()
        keras.utils.set_random_seed(spec.seed)
        model, _ = build(spec, splits.input_shape, splits.num_classes)
        compile_model(model, spec, execution=None)  # jit_compile="auto", steps_per_execution=1
        timer = _timer()
        model.fit(splits.x_train, splits.y_train, batch_size=spec.batch_size, epochs=epochs,
                  validation_data=(splits.x_val, splits.y_val), verbose=0, callbacks=[timer])
        jit = bool(model.jit_compile)
        wall = statistics.median(timer.epoch_s[1:])
        if keras.backend.backend() != "jax":  # synchronous execution: the pass is timed inside fit
            val_s = statistics.median(timer.val_s[1:])
        else:
            # JAX dispatches asynchronously, so inside fit the validation pass would absorb the queued
            # training steps; it is timed on its own instead, as fit runs it (same batch size), after one
            # warm-up call. A standalone evaluate has some set-up of its own, so this errs towards a
            # shorter training time for plain Keras, i.e. against normbench.
            val = []
            for _ in range(4):
                t = time.perf_counter()
                model.evaluate(splits.x_val, splits.y_val, batch_size=spec.batch_size, verbose=0)
                val.append(time.perf_counter() - t)
            val_s = statistics.median(val[1:])
    return {"wall_s": wall, "train_s": wall - val_s, "jit_compile": jit}


def evaluated_samples(rec: dict, spec) -> int:
    """Forward passes per epoch that a run's measurement must make, in samples: the train subset and the
    validation split (twice for a network whose batch-norm statistics are re-estimated: once with the moving
    averages, kept beside, and once with the re-estimate), the re-estimate's training batches, the probe batch."""
    bn = rec["data"].get("bn_statistics") or {}  # None for a network without batch-norm layers
    precise = bn.get("method") == "precise"
    scored = spec.train_eval_size + rec["data"]["sizes"]["val"]
    return scored * (2 if precise else 1) + (bn.get("samples", 0) if precise else 0) + spec.probe_size


def measure_normbench(spec, data_dir: str | None, engine: str | None = None) -> dict:
    """Median epoch seconds (wall and training only) of the runner, from its own record."""
    from normbench import record
    from normbench.runner import run

    rec = run(spec, data_dir=data_dir, log=lambda _m: None, engine=engine)
    if rec["status"] != "ok":
        raise RuntimeError(f"{spec.label}: {rec['status']}: {rec.get('error')}")
    hist = record.steady(rec)  # without epoch 0 (initialization) and epoch 1 (warm-up)
    return {
        "wall_s": statistics.median(h["epoch_s"] + h["eval_s"] + h["probe_s"] for h in hist),
        "train_s": statistics.median(h["epoch_s"] for h in hist),
        "performance": rec["performance"],
        "n_train": rec["data"]["sizes"]["train"],
        "n_eval": evaluated_samples(rec, spec),
        "peak_rss_mib": rec["timings"]["peak_rss_mib"],
    }


def engine_row(reps: list[dict], engine: str, spec, args) -> dict:
    """One table row: ``engine``'s runs against the plain Keras runs of the same repeats."""
    import keras

    nb, n_train = reps[0][engine], reps[0][engine]["n_train"]
    med = lambda f: statistics.median(f(m) for m in reps)  # noqa: E731
    speedups = sorted(m["plain"]["wall_s"] / m[engine]["wall_s"] for m in reps)
    row = {
        "backend": keras.backend.backend(), "engine": engine, "model": spec.model, "strategy": spec.strategy,
        "dataset": spec.dataset,
        "train_samples": n_train, "repeats": args.repeats,
        "normbench_samples_per_s": med(lambda m: n_train / m[engine]["wall_s"]),
        "normbench_train_samples_per_s": med(lambda m: n_train / m[engine]["train_s"]),
        "plain_samples_per_s": med(lambda m: n_train / m["plain"]["wall_s"]),
        "plain_train_samples_per_s": med(lambda m: n_train / m["plain"]["train_s"]),
        "speedup": statistics.median(speedups), "speedup_min": speedups[0], "speedup_max": speedups[-1],
        "train_speedup": med(lambda m: m["plain"]["train_s"] / m[engine]["train_s"]),
        "measurement_share": med(lambda m: 1 - m[engine]["train_s"] / m[engine]["wall_s"]),
        # its FLOP floor: forward passes over the evaluated samples against 3 forward passes per training sample
        "measurement_floor": nb["n_eval"] / (3 * n_train + nb["n_eval"]),
        "train_mflops_per_sample": nb["performance"]["train_flops_per_sample"] / 1e6,
        "train_gflops_per_s": med(lambda m: nb["performance"]["train_flops_per_sample"] * n_train
                                  / m[engine]["train_s"] / 1e9),
        "jit_compile": nb["performance"]["jit_compile"],
        "steps_per_execution": nb["performance"]["steps_per_execution"],
        "plain_jit_compile": reps[0]["plain"]["jit_compile"],
        "bf16_train_samples_per_s": med(lambda m: n_train / m[f"bf16/{engine}"]["train_s"]) if args.bf16 else None,
    }
    if engine == "scan" and "fit" in reps[0]:  # the two engines of the same repeats
        ratios = sorted(m["fit"]["train_s"] / m["scan"]["train_s"] for m in reps)
        row.update(scan_over_fit_train=statistics.median(ratios), scan_over_fit_train_min=ratios[0],
                   scan_over_fit_train_max=ratios[-1],
                   scan_over_fit=med(lambda m: m["fit"]["wall_s"] / m["scan"]["wall_s"]))
    return row


def worker(args) -> None:
    """Measure every (model, strategy) on this process's backend; write a JSON list of rows."""
    from dataclasses import replace

    import keras

    from normbench.datasets import load_splits
    from normbench.env import environment, peak_rss_mib
    from normbench.spec import RunSpec

    peaks = [matmul_peak()]
    rows = []
    engines = ["fit", "scan"] if keras.backend.backend() == "jax" else ["fit"]
    for model_name in args.models.split(","):
        dataset = DATASET[model_name.rstrip("0123456789")]
        n = args.mnist_samples if dataset == "mnist" else args.cifar_samples
        for strategy in args.strategies.split(","):
            spec = RunSpec(model_name, strategy, dataset, epochs=args.epochs, limit=n, eval_limit=EVAL_SIZE,
                           val_size=EVAL_SIZE, train_eval_size=EVAL_SIZE)
            splits = load_splits(dataset, input_scaling=spec.input_scaling, val_size=EVAL_SIZE,
                                 limit=n, eval_limit=EVAL_SIZE, data_dir=args.data_dir)
            # every repeat measures each engine and plain Keras once, in an order rotated by one each repeat, so
            # the engines are compared with each other and with plain Keras inside the same repeat
            variants = [*engines, "plain"]
            reps = []
            for r in range(args.repeats):
                m = {}
                for what in variants[r % len(variants):] + variants[: r % len(variants)]:
                    m[what] = (measure_plain(spec, splits, args.epochs) if what == "plain"
                               else measure_normbench(spec, args.data_dir, what))
                if args.bf16:
                    for engine in engines:
                        m[f"bf16/{engine}"] = measure_normbench(replace(spec, precision="mixed_bfloat16"),
                                                                args.data_dir, engine)
                reps.append(m)
            for engine in engines:
                rows.append(engine_row(reps, engine, spec, args))
                row = rows[-1]
                print(f"  {engine:<4} {model_name:<8} {strategy:<10} normbench {row['normbench_samples_per_s']:>8,.0f}/s  "
                      f"plain {row['plain_samples_per_s']:>8,.0f}/s  speedup {row['speedup']:.2f}x "
                      f"[{row['speedup_min']:.2f}-{row['speedup_max']:.2f}]  training {row['train_speedup']:.2f}x"
                      + (f"  scan/fit training {row['scan_over_fit_train']:.2f}x" if "scan_over_fit_train" in row
                         else ""), flush=True)
    peaks.append(matmul_peak())
    peak = max(max(p.values()) for p in peaks)
    for row in rows:
        row["fraction_of_peak"] = row["train_gflops_per_s"] / peak
    env = environment()
    meta = {"environment": {k: env[k] for k in ("backend", "backend_version", "keras", "device", "device_kind",
                                                 "deterministic_ops", "git_commit", "git_dirty")},
            "peak_gflops": peak, "peaks": peaks, "peak_rss_mib": peak_rss_mib()}
    Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


# ----------------------------------------------------------------------------- driver and report


def run_backend(backend: str, args, json_path: Path) -> dict | None:
    """Measure one backend, each (model, strategy) in a fresh worker process; None (with a message) if none could.

    One process per row: a TensorFlow worker that measured several rows ran a later row's batch norm at 0.84x plain
    Keras where the same row alone read 1.11x (results/perf.md), so a row must not inherit the state earlier rows
    leave behind. Within a row, normbench and plain (and on JAX both engines) still alternate in one process.
    """
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    if importlib.util.find_spec(module) is None:
        print(f"{backend}: not installed, skipped (pip install -e '.[{backend}]' to include it)")
        return None
    models = args.models_by_backend.get(backend, args.models)
    if not models:
        print(f"{backend}: no models chosen for it, skipped")
        return None
    print(f"{backend}: measuring {models} x {args.strategies}, {args.repeats} repeats of {args.epochs} epochs, "
          f"each (model, strategy) in its own process", flush=True)
    t = time.perf_counter()
    parts = []
    for model in models.split(","):
        for strategy in args.strategies.split(","):
            cmd = [sys.executable, __file__, "--worker", "--json", str(json_path), "--models", model,
                   "--strategies", strategy, "--repeats", str(args.repeats), "--epochs", str(args.epochs),
                   "--mnist-samples", str(args.mnist_samples), "--cifar-samples", str(args.cifar_samples)]
            if args.data_dir:
                cmd += ["--data-dir", args.data_dir]
            if backend in args.bf16.split(","):
                cmd.append("--bf16-on")
            done = subprocess.run(cmd, env={**os.environ, "KERAS_BACKEND": backend})
            if done.returncode != 0:
                print(f"{backend}: the worker for {model}/{strategy} failed (exit {done.returncode}); its rows are "
                      f"missing")
                continue
            parts.append(json.loads(json_path.read_text()))
    if not parts:
        return None
    print(f"{backend}: done in {time.perf_counter() - t:.0f} s", flush=True)
    meta = dict(parts[0]["meta"])  # the environment is the same for every worker; peaks and memory: the largest
    meta["peaks"] = [p for part in parts for p in part["meta"]["peaks"]]
    meta["peak_gflops"] = max(part["meta"]["peak_gflops"] for part in parts)
    meta["peak_rss_mib"] = max(part["meta"]["peak_rss_mib"] for part in parts)
    return {"meta": meta, "rows": [row for part in parts for row in part["rows"]]}


def _pct(x: float) -> str:
    return f"{x:.1%}"


def target_lines(results: dict[str, dict]) -> list[str]:
    """Verdicts on issue #5's CPU targets, computed from the rows."""
    lines = ["## Targets", ""]
    tf = results.get("tensorflow")
    if tf and tf["meta"]["environment"]["device_kind"] == "cpu":
        mlps = [r for r in tf["rows"] if r["model"].startswith("mlp")]
        low = [f"{r['model']}/{r['strategy']} {r['speedup']:.2f}x" for r in mlps if r["speedup"] < TARGET_TF_MLP]
        lines.append(f"- TensorFlow, CPU, MLPs at >= {TARGET_TF_MLP}x plain Keras: "
                     + ("met on every (model, strategy)." if not low else
                        f"**not met** on {len(low)} of {len(mlps)}: {', '.join(low)}."))
        under = [f"{r['model']}/{r['strategy']} {r['speedup']:.2f}x" for r in tf["rows"] if r["speedup"] < TARGET_ANY]
        lines.append(f"- TensorFlow, CPU, every (model, strategy) at >= {TARGET_ANY}x: "
                     + ("met." if not under else f"**not met** on {len(under)} of {len(tf['rows'])}: {', '.join(under)}."))
        under_train = [f"{r['model']}/{r['strategy']} {r['train_speedup']:.2f}x" for r in tf["rows"]
                       if r["train_speedup"] < TARGET_ANY]
        lines.append("  Training alone (without the evaluations and the probe that plain `fit` does not do): "
                     + ("every (model, strategy) at >= 0.97x." if not under_train else
                        f"below {TARGET_ANY}x on {', '.join(under_train)}."))
    else:
        lines.append("- TensorFlow on the CPU was not measured in this run.")
    best: dict[str, tuple[float, str]] = {}
    for backend, res in results.items():
        for r in res["rows"]:
            if r["model"] == "mlp8" and (r["fraction_of_peak"], backend) > best.get(r["strategy"], (0.0, "")):
                best[r["strategy"]] = (r["fraction_of_peak"], backend)
    if best:
        parts = [f"{s} {_pct(f)} ({b})" for s, (f, b) in best.items()]
        hit = [s for s, (f, _) in best.items() if f >= TARGET_PEAK]
        lines.append(f"- CPU, best backend, mlp8 at >= {TARGET_PEAK:.0%} of the matmul peak: "
                     f"{'met' if len(hit) == len(best) else 'met for ' + (', '.join(hit) or 'no strategy')}; "
                     f"{', '.join(parts)}.")
    jax = results.get("jax")
    if jax:
        kind = jax["meta"]["environment"]["device_kind"].upper()
        under = [f"{r['engine']} {r['model']}/{r['strategy']} {r['speedup']:.2f}x (training {r['train_speedup']:.2f}x)"
                 for r in jax["rows"] if r["speedup"] < TARGET_ANY]
        lines.append(f"- JAX ({kind}), every (engine, model, strategy) at >= {TARGET_ANY}x plain Keras: "
                     + ("met." if not under else f"**not met** on {len(under)} of {len(jax['rows'])}: {', '.join(under)}."))
        pairs = {}
        for r in jax["rows"]:
            pairs.setdefault((r["model"], r["strategy"]), {})[r["engine"]] = r
        # scan / fit inside each repeat (the two engines are measured in the same repeats), median over repeats
        scans = {k: v["scan"] for k, v in pairs.items() if {"fit", "scan"} <= set(v)}
        train = [(k, r["scan_over_fit_train"]) for k, r in scans.items()]
        whole = [(k, r["scan_over_fit"]) for k, r in scans.items()]
        fmt = lambda items: ", ".join(f"{m}/{s} {x:.2f}x" for (m, s), x in items)  # noqa: E731
        if scans:
            slow = [(k, x) for k, x in train if x < 1.0]
            lines.append(f"- JAX ({kind}), scan engine never slower than fit for training alone (scan/fit within a "
                         "repeat, median [min-max] over repeats): "
                         + ("met" if not slow else f"**not met** on {len(slow)} of {len(train)}") + " ("
                         + ", ".join(f"{m}/{s} {r['scan_over_fit_train']:.2f}x [{r['scan_over_fit_train_min']:.2f}-"
                                     f"{r['scan_over_fit_train_max']:.2f}]" for (m, s), r in scans.items()) + ").")
            low = [(k, x) for k, x in whole if x < 1.2]
            lines.append(f"- JAX ({kind}), scan >= 1.2x fit for a whole epoch with its measurement: "
                         + ("met" if not low else f"**not met** on {len(low)} of {len(whole)}") + f" ({fmt(whole)}).")
    over = [r for res in results.values() for r in res["rows"] if r["measurement_share"] - r["measurement_floor"] > 0.03]
    n_rows = sum(len(res["rows"]) for res in results.values())
    lines.append("- Measurement share within 3 points of its FLOP floor: "
                 + ("met on every row." if not over else f"**not met** on {len(over)} of {n_rows} rows: "
                    + ", ".join(f"{r['backend']}/{r['engine']} {r['model']}/{r['strategy']} {_pct(r['measurement_share'])} "
                                f"(floor {_pct(r['measurement_floor'])})" for r in over) + "."))
    gpu = [b for b, res in results.items() if res["meta"]["environment"]["device_kind"] == "gpu"]
    lines.append("- GPU: " + (f"measured on {', '.join(gpu)}." if gpu else
                              "no GPU in this run, so the GPU targets are not measured here."))
    return lines + [""]


def write_report(results: dict[str, dict], args, out: Path) -> None:
    rows = [r for res in results.values() for r in res["rows"]]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "perf.csv", "w", newline="") as f:  # the columns of every row (only scan rows have scan/fit)
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        w.writeheader()
        w.writerows(rows)
    lines = [
        "# normbench throughput against plain Keras", "",
        f"Made by `python benchmarks/throughput.py` (`make perf`) on {time.strftime('%Y-%m-%d')}. Training samples: "
        f"MNIST {args.mnist_samples:,}, CIFAR-10 {args.cifar_samples:,}; validation split and inference-mode train "
        f"subset {EVAL_SIZE:,} each. {args.repeats} repeats of {args.epochs} epochs for each (model, strategy), "
        "each in its own process; a repeat runs normbench (with each engine) and plain Keras back to back, in an "
        "order rotated by one every repeat; an epoch time is the median of epochs "
        f"2-{args.epochs}, a samples/s figure the median over repeats, a speedup the median over repeats of the "
        "ratio within a repeat, [min-max] over repeats beside it.", "",
        "- **normbench**: the runner with its defaults, statistics on. Its samples/s counts training plus the "
        "per-epoch evaluations (train subset and validation split, inference mode) and the activation probe; "
        "*training* counts only the optimizer steps.",
        "- **plain**: `model.fit(..., validation_data=...)` with Keras' default compile settings (no "
        "`steps_per_execution`, `jit_compile=\"auto\"`: XLA on a GPU only for TensorFlow, always on JAX), "
        "TensorFlow op determinism off as in a user's process. Its samples/s counts training plus the "
        "validation pass; *training* excludes the validation pass.",
        "- **speedup** = plain epoch time / normbench epoch time; **training speedup** the same for training "
        "alone. **measurement share**: the fraction of normbench's epoch spent on evaluations and the probe; "
        "its **FLOP floor** in brackets: the forward passes over the evaluated samples (train subset, validation "
        "split, probe; with batch norm also the re-estimate's 2,048 training samples and the train subset and "
        "validation split scored a second time, with the moving averages kept beside the re-estimate) against "
        "three forward passes per training sample.",
        "- **engine**: `fit` (Keras `model.fit`, one call per epoch) or `scan` (JAX: each epoch one compiled "
        "`lax.scan`); JAX rows are measured with both.",
        "- **% of peak**: normbench's training FLOP/s (3x the forward multiply-adds per sample) over the "
        "float32 matmul peak measured in the same process (2048x2048 on a CPU, 8192x8192 on a GPU; best of 10, "
        "device computation only, synchronized without a copy to the host; on a CPU also through NumPy; before "
        "and after; the largest counts).",
        "- **bf16 training**: the runner's training samples/s with the opt-in `--precision mixed_bfloat16` "
        "(changes results; never a default), where measured.", "",
    ]
    lines += target_lines(results)
    for backend, res in results.items():
        env, meta = res["meta"]["environment"], res["meta"]
        lines += [
            f"## {backend} {env['backend_version']}", "",
            f"Keras {env['keras']}, device {env['device']}, normbench's deterministic ops "
            f"{'on' if env['deterministic_ops'] else 'off'}, commit {str(env.get('git_commit'))[:10]}"
            f"{' (uncommitted changes)' if env.get('git_dirty') else ''}. Matmul peak "
            f"{meta['peak_gflops']:.0f} GFLOP/s; peak resident memory of the largest worker process {meta['peak_rss_mib']:.0f} MiB.",
            "",
            "| engine | model | strategy | normbench samples/s | plain samples/s | speedup [min-max] | training speedup | "
            "measurement share (FLOP floor) | train MFLOP/sample | % of peak | XLA / steps per exec (plain XLA) | bf16 training samples/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            bf16 = (f"{r['bf16_train_samples_per_s']:,.0f} ({r['bf16_train_samples_per_s'] / r['normbench_train_samples_per_s']:.1f}x)"
                    if r["bf16_train_samples_per_s"] else "-")
            lines.append(
                f"| {r['engine']} | {r['model']} | {r['strategy']} | {r['normbench_samples_per_s']:,.0f} | {r['plain_samples_per_s']:,.0f} | "
                f"{r['speedup']:.2f}x [{r['speedup_min']:.2f}-{r['speedup_max']:.2f}] | {r['train_speedup']:.2f}x | "
                f"{_pct(r['measurement_share'])} ({_pct(r['measurement_floor'])}) | {r['train_mflops_per_sample']:.1f} | {_pct(r['fraction_of_peak'])} | "
                f"{'on' if r['jit_compile'] else 'off'} / {r['steps_per_execution']} "
                f"({'on' if r['plain_jit_compile'] else 'off'}) | {bf16} |")
        lines.append("")
    perf = out / "perf.md"
    grid = ""  # benchmarks/grid.py's section survives a rewrite of the throughput tables
    if perf.exists() and "\n## Grid wall time" in perf.read_text():
        grid = "\n## Grid wall time" + perf.read_text().split("\n## Grid wall time", 1)[1]
    perf.write_text("\n".join(lines) + grid)
    print(f"wrote {out / 'perf.md'} and {out / 'perf.csv'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="tensorflow,jax", help="comma-separated; each runs in its own process")
    p.add_argument("--models", default="mlp8,mlp32,convnet,vgg8")
    p.add_argument("--models-for", action="append", default=None, metavar="BACKEND=LIST",
                   help="models for one backend (default: jax=the MLPs of --models: conv nets are 3-5x slower on JAX's "
                        "CPU backend, measured, and the peak target is about mlp8)")
    p.add_argument("--strategies", default="none,batchnorm,maxnorm,selu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4, help="epochs per measurement; the first is warm-up (>= 4)")
    p.add_argument("--mnist-samples", type=int, default=20000)
    p.add_argument("--cifar-samples", type=int, default=5000)
    p.add_argument("--bf16", default="tensorflow", help="backends on which to also time mixed_bfloat16 ('' for none)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bf16-on", dest="bf16_on", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.epochs < 4 or args.repeats < 1:
        p.error("--epochs must be >= 4 (one warm-up epoch, a median of at least 3) and --repeats >= 1")
    if args.worker:
        args.bf16 = args.bf16_on
        worker(args)
        return
    unknown = set(args.backends.split(",")) - {"tensorflow", "jax", "torch"}
    if unknown:
        p.error(f"unknown backend(s) {', '.join(sorted(unknown))}; use tensorflow, jax or torch")
    args.models_by_backend = {}
    mlps = ",".join(m for m in args.models.split(",") if m.startswith("mlp"))
    for item in args.models_for if args.models_for is not None else [f"jax={mlps}"]:
        backend, sep, models = item.partition("=")
        if not sep or backend not in ("tensorflow", "jax", "torch"):
            p.error(f"--models-for {item!r}: use BACKEND=model,model (BACKEND one of tensorflow, jax, torch)")
        args.models_by_backend[backend] = models
    results = {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            res = run_backend(backend, args, Path(tmp) / f"{backend}.json")
            if res:
                results[backend] = res
                # kept as soon as measured, so a failure later (another backend, the report) loses nothing
                (out / "throughput.json").write_text(json.dumps(results, indent=1))
    if not results:
        sys.exit("no backend produced measurements")
    write_report(results, args, out)


if __name__ == "__main__":
    main()
