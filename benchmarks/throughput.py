"""Throughput of the normbench runner against a plain hand-written Keras `model.fit`.

For models x strategies, in one process on the same data: samples per second of

- normbench: the real runner (`normbench.runner.run`), statistics on; its epoch wall
  time counts training, the per-epoch evaluations (train subset, validation) and
  the activation probe;
- plain: the same model compiled with Keras' defaults and trained with
  `model.fit(x, y, batch_size, epochs, validation_data=(x_val, y_val))`, what a user
  would write; its epoch wall time includes the validation pass.

Medians over the epochs after the first (warm-up: tracing/compilation). Also the
training FLOPs per sample counted from the model (3x the forward multiply-adds) and
the fraction of this machine's float32 matmul peak, measured in the same run.
Writes results/perf.md and results/perf.csv.

    python benchmarks/throughput.py [--models mlp8,mlp32,convnet,vgg8] [--epochs 4]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATASET = {"mlp": "mnist", "convnet": "cifar10", "vgg": "cifar10"}


def matmul_peak(n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """Best float32 GFLOP/s of an n x n matmul, through the Keras backend and through NumPy."""
    import keras
    import numpy as np

    a = np.random.default_rng(0).normal(size=(n, n)).astype("float32")
    out = {}
    for name, mm, to_host in (
        ("backend", keras.ops.matmul, keras.ops.convert_to_numpy),
        ("numpy", np.matmul, lambda x: x),
    ):
        x = keras.ops.convert_to_tensor(a) if name == "backend" else a
        to_host(mm(x, x))  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            to_host(mm(x, x))
            best = min(best, time.perf_counter() - t)
        out[name] = 2 * n**3 / best / 1e9
    return out


class EpochTimer:
    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.times = []

            def on_epoch_begin(self, epoch, logs=None):
                self.t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self.t)

        return _Timer()


def plain_keras(spec, splits, epochs: int) -> float:
    """Median epoch seconds of model.fit with Keras' default compile settings."""
    import keras

    from normbench.runner import build, compile_model

    keras.backend.clear_session()
    keras.utils.set_random_seed(spec.seed)
    model, _ = build(spec, splits.input_shape, splits.num_classes)
    compile_model(model, spec, execution=None)  # Keras defaults: jit_compile="auto", steps_per_execution=1
    timer = EpochTimer()
    model.fit(splits.x_train, splits.y_train, batch_size=spec.batch_size, epochs=epochs,
              validation_data=(splits.x_val, splits.y_val), verbose=0, callbacks=[timer])
    return statistics.median(timer.times[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mlp8,mlp32,convnet,vgg8")
    p.add_argument("--strategies", default="none,batchnorm,maxnorm,selu")
    p.add_argument("--mnist-samples", type=int, default=20000)
    p.add_argument("--cifar-samples", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=4, help="epochs per measurement; the first is warm-up (>= 4)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="results")
    args = p.parse_args()

    import keras

    from normbench.datasets import load_splits
    from normbench.env import environment, peak_rss_mib
    from normbench.norms import get_strategy
    from normbench.runner import run
    from normbench.spec import RunSpec

    peak = matmul_peak()
    peak_gflops = max(peak.values())
    rows = []
    for model_name in args.models.split(","):
        family = model_name.rstrip("0123456789")
        dataset = DATASET[family]
        n = args.mnist_samples if dataset == "mnist" else args.cifar_samples
        for strategy in args.strategies.split(","):
            spec = RunSpec(model_name, strategy, dataset, epochs=args.epochs, limit=n, eval_limit=2000, val_size=2000,
                           train_eval_size=2000)
            rec = run(spec, data_dir=args.data_dir, log=lambda _m: None)
            if rec["status"] != "ok":
                print(f"{model_name}/{strategy}: {rec['status']} {rec.get('error')}")
                continue
            hist = rec["history"][2:]  # epochs after the first
            nb_train = statistics.median(h["epoch_s"] for h in hist)
            nb_wall = statistics.median(h["epoch_s"] + h["eval_s"] + h["probe_s"] for h in hist)
            scaling = get_strategy(strategy).input_scaling
            splits = load_splits(dataset, input_scaling=scaling, val_size=2000, limit=n, eval_limit=2000,
                                 data_dir=args.data_dir)
            plain = plain_keras(spec, splits, args.epochs)
            flops = rec["performance"]["train_flops_per_sample"]
            row = {
                "model": model_name, "strategy": strategy, "dataset": dataset, "samples": n,
                "normbench_samples_per_s": n / nb_wall, "normbench_train_samples_per_s": n / nb_train,
                "plain_samples_per_s": n / plain, "speedup": plain / nb_wall,
                "stats_and_eval_share": 1 - nb_train / nb_wall,
                "train_mflops_per_sample": flops / 1e6,
                "fraction_of_peak": flops * n / nb_train / (peak_gflops * 1e9),
                "jit_compile": rec["performance"]["jit_compile"],
                "steps_per_execution": rec["performance"]["steps_per_execution"],
            }
            rows.append(row)
            print(f"{model_name:<8} {strategy:<10} normbench {row['normbench_samples_per_s']:>9,.0f}/s  "
                  f"plain {row['plain_samples_per_s']:>9,.0f}/s  speedup {row['speedup']:.2f}x  "
                  f"peak {row['fraction_of_peak']:.1%}", flush=True)

    env = environment()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "perf.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [
        "# normbench throughput against plain Keras", "",
        f"Made by `python benchmarks/throughput.py` on {time.strftime('%Y-%m-%d')}: backend {env['backend']} "
        f"{env['backend_version']}, Keras {env['keras']}, device {env['device']}, deterministic ops "
        f"{'on' if env['deterministic_ops'] else 'off'}, commit {str(env.get('git_commit'))[:10]}"
        f"{' (uncommitted changes)' if env.get('git_dirty') else ''}.", "",
        f"Training samples: MNIST {args.mnist_samples}, CIFAR-10 {args.cifar_samples}; {args.epochs} epochs per "
        f"measurement, medians of epochs 2-{args.epochs}. float32 matmul peak measured here: "
        f"{peak['backend']:.0f} GFLOP/s (backend), {peak['numpy']:.0f} GFLOP/s (NumPy); the larger is the reference.",
        "",
        "normbench = the runner with statistics on (training + per-epoch evaluation of a train subset and the "
        "validation split + activation probe); plain = `model.fit` with Keras' default compile settings and "
        "`validation_data`. speedup = plain epoch time / normbench epoch time. % of peak uses the runner's "
        "training time only.", "",
        "| model | strategy | normbench samples/s | plain samples/s | speedup | eval+stats share | train MFLOP/sample | % of matmul peak | XLA | steps/exec |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['strategy']} | {r['normbench_samples_per_s']:,.0f} | {r['plain_samples_per_s']:,.0f} | "
                     f"{r['speedup']:.2f}x | {r['stats_and_eval_share']:.1%} | {r['train_mflops_per_sample']:.1f} | "
                     f"{r['fraction_of_peak']:.1%} | {'on' if r['jit_compile'] else 'off'} | {r['steps_per_execution']} |")
    lines += ["", f"Peak resident memory of the benchmark process: {peak_rss_mib():.0f} MiB.", ""]
    (out / "perf.md").write_text("\n".join(lines))
    print(f"wrote {out / 'perf.md'} and {out / 'perf.csv'}")


if __name__ == "__main__":
    main()
