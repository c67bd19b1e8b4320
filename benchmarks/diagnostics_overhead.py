"""Cost of each diagnostic relative to training, at the `standard` suite's sizes.

For each model of the standard suite's grid (mlp8 and mlp32 on all of MNIST, convnet and vgg8 on
10,000 CIFAR-10 images; BN, the strategy with the most variables per layer), in one process on the
same data: the median epoch time of training (``model.fit``, 3 repeats after a warm-up) and the time
of each diagnostic (its first call, which traces what it compiles, and the median of 3 more), on the
runner's probe batch (256 validation images). A run of E epochs measures a per-epoch diagnostic E + 1
times (initialization and every epoch), ``landscape`` once and ``meanfield`` once, so its share of a
run is

    (first + (calls - 1) * steady) / (E * epoch)

with E = 5 as in `standard`. Prints one row per (model, diagnostic) and the issue's budgets:
spectra + gradients at most 10%, sharpness at most 25%.

    python benchmarks/diagnostics_overhead.py [--data-dir DIR] [--models mlp8,convnet] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EPOCHS = 5  # the standard suite's epochs
SIZES = {"mlp8": ("mnist", None), "mlp32": ("mnist", None), "convnet": ("cifar10", 10000), "vgg8": ("cifar10", 10000)}


def measure(model_name: str, data_dir: str | None, repeats: int) -> list[dict]:
    import keras
    import numpy as np

    from normbench.builtins import load_builtins
    from normbench.datasets import load_splits
    from normbench.registry import DIAGNOSTICS
    from normbench.runner import build_compiled
    from normbench.spec import RunSpec

    load_builtins()
    dataset, limit = SIZES[model_name]
    spec = RunSpec(model_name, "batchnorm", dataset, limit=limit)
    splits = load_splits(dataset, limit=limit, data_dir=data_dir)
    keras.utils.set_random_seed(0)
    model, _ = build_compiled(spec, splits.input_shape, splits.num_classes)
    context = {"x": splits.x_val[: spec.probe_size], "y": splits.y_val[: spec.probe_size],
               "x_train": splits.x_train, "y_train": splits.y_train, "seed": 0,
               "logits": lambda x: np.concatenate([np.asarray(model.predict_on_batch(x[i: i + 1024]), dtype=np.float64)
                                                   for i in range(0, len(x), 1024)])}
    epochs = []
    for i in range(repeats + 1):  # the first is a warm-up (tracing)
        t = time.perf_counter()
        model.fit(splits.x_train, splits.y_train, batch_size=spec.batch_size, epochs=1, verbose=0)
        if i:
            epochs.append(time.perf_counter() - t)
    epoch_s = statistics.median(epochs)
    rows = []
    for name in DIAGNOSTICS.list():
        fn = DIAGNOSTICS.get(name)
        once = getattr(fn, "at_end", False) or getattr(fn, "at_init", False)
        times = []
        for _ in range(1 if once else repeats + 1):
            t = time.perf_counter()
            fn(model, context)
            times.append(time.perf_counter() - t)
        first, steady = times[0], statistics.median(times[1:]) if len(times) > 1 else times[0]
        calls = 1 if once else EPOCHS + 1
        rows.append({"model": model_name, "dataset": dataset, "train": len(splits.y_train), "epoch_s": epoch_s,
                     "diagnostic": name, "first_s": first, "steady_s": steady,
                     "run_share": (first + (calls - 1) * steady) / (EPOCHS * epoch_s)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--models", default=",".join(SIZES), help=f"comma list out of {', '.join(SIZES)}")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(SIZES))
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {', '.join(SIZES)}")
    from normbench.env import environment, peak_rss_mib

    env = environment()
    print(f"backend {env['backend']} {env['backend_version']}, keras {env['keras']}, device {env['device']}, "
          f"commit {env.get('git_commit', '')[:10]}")
    print(f"{'model':<9}{'train':>7}{'epoch s':>9}  {'diagnostic':<11}{'first s':>9}{'steady s':>10}{'share of a 5-epoch run':>24}")
    budgets = []
    for model in models:
        rows = measure(model, args.data_dir, args.repeats)
        for r in rows:
            print(f"{r['model']:<9}{r['train']:>7}{r['epoch_s']:>9.2f}  {r['diagnostic']:<11}{r['first_s']:>9.3f}"
                  f"{r['steady_s']:>10.3f}{r['run_share']:>23.1%}")
        share = {r["diagnostic"]: r["run_share"] for r in rows}
        budgets.append((model, share["spectra"] + share["gradients"], share["sharpness"]))
    print(f"peak RSS {peak_rss_mib():.0f} MiB; epoch: median of {args.repeats} after a warm-up; steady: median of "
          f"{args.repeats} calls after the first")
    for model, sg, sh in budgets:
        print(f"budget {model}: spectra + gradients {sg:.1%} ({'met' if sg <= 0.10 else 'NOT met'}: <= 10%), "
              f"sharpness {sh:.1%} ({'met' if sh <= 0.25 else 'NOT met'}: <= 25%)")


if __name__ == "__main__":
    main()
