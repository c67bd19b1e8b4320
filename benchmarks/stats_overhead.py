"""Cost of the activation statistics relative to a training epoch.

For an 8-layer MLP on MNIST and the convnet on CIFAR-10, in one process on the same
data: the median epoch time of `model.fit` and the median time of one activation
probe (what the runner adds per epoch for statistics), each over 3 repeats after a
warm-up. Prints the ratio and the process's peak memory.

    python benchmarks/stats_overhead.py [--data-dir DIR] [--cifar-limit N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(model_name: str, dataset: str, limit: int | None, data_dir: str | None, repeats: int = 3) -> dict:
    import keras

    from normbench.datasets import load_splits
    from normbench.probe import ActivationProbe
    from normbench.runner import build_compiled
    from normbench.spec import RunSpec

    spec = RunSpec(model_name, "batchnorm", dataset, limit=limit)
    splits = load_splits(dataset, limit=limit, data_dir=data_dir)
    keras.utils.set_random_seed(0)
    model, _ = build_compiled(spec, splits.input_shape, splits.num_classes)
    probe = ActivationProbe(model, splits.x_val[: spec.probe_size])
    fit_times, probe_times = [], []
    for i in range(repeats + 1):  # the first of each is a warm-up (tracing)
        t = time.perf_counter()
        model.fit(splits.x_train, splits.y_train, batch_size=spec.batch_size, epochs=1, verbose=0)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        probe.measure(i)
        probe_s = time.perf_counter() - t
        if i:
            fit_times.append(fit_s)
            probe_times.append(probe_s)
    epoch, stats = statistics.median(fit_times), statistics.median(probe_times)
    return {"model": model_name, "dataset": dataset, "train": len(splits.y_train), "epoch_s": epoch,
            "stats_s": stats, "overhead": stats / epoch}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cifar-limit", type=int, default=10000, help="training samples for the convnet (default 10000)")
    args = p.parse_args()
    from normbench.env import environment, peak_rss_mib

    env = environment()
    print(f"backend {env['backend']} {env['backend_version']}, keras {env['keras']}, device {env['device']}")
    print(f"{'model':<10}{'dataset':<9}{'train':>7}{'epoch s':>10}{'stats s':>10}{'overhead':>10}")
    for model, dataset, limit in (("mlp8", "mnist", None), ("convnet", "cifar10", args.cifar_limit)):
        r = measure(model, dataset, limit, args.data_dir)
        print(f"{r['model']:<10}{r['dataset']:<9}{r['train']:>7}{r['epoch_s']:>10.2f}{r['stats_s']:>10.3f}{r['overhead']:>9.1%}")
    print(f"peak RSS {peak_rss_mib():.0f} MiB (median of 3 epochs/probes after one warm-up each)")


if __name__ == "__main__":
    main()
