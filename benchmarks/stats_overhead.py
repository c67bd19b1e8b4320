"""Cost of the activation statistics relative to a training epoch.

For an 8-layer MLP on MNIST and the convnet on CIFAR-10, in one process on the same
data: the median epoch time of `model.fit` and the median time of one activation
probe (what the runner adds per epoch for statistics), each over 3 repeats after a
warm-up, with the statistics computed in NumPy on the host ("host") and by the
backend's ops inside the probe's compiled function ("device"; the runner's choice on a
GPU, see normbench.probe.statistics_on_device), the two probes timed alternately.
Prints the ratios and the process's peak memory.

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
    probes = {where: ActivationProbe(model, splits.x_val[: spec.probe_size], on_device=where == "device")
              for where in ("host", "device")}
    fit_times, probe_times = [], {where: [] for where in probes}
    for i in range(repeats + 1):  # the first of each is a warm-up (tracing)
        t = time.perf_counter()
        model.fit(splits.x_train, splits.y_train, batch_size=spec.batch_size, epochs=1, verbose=0)
        fit_s = time.perf_counter() - t
        for where in sorted(probes, reverse=i % 2 == 1):  # alternate which goes first
            t = time.perf_counter()
            probes[where].measure(i)
            if i:
                probe_times[where].append(time.perf_counter() - t)
        if i:
            fit_times.append(fit_s)
    epoch = statistics.median(fit_times)
    out = {"model": model_name, "dataset": dataset, "train": len(splits.y_train), "epoch_s": epoch}
    for where, times in probe_times.items():
        out[f"{where}_s"] = statistics.median(times)
        out[f"{where}_overhead"] = out[f"{where}_s"] / epoch
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cifar-limit", type=int, default=10000, help="training samples for the convnet (default 10000)")
    args = p.parse_args()
    from normbench.env import environment, peak_rss_mib

    env = environment()
    print(f"backend {env['backend']} {env['backend_version']}, keras {env['keras']}, device {env['device']}")
    print(f"{'model':<10}{'dataset':<9}{'train':>7}{'epoch s':>10}{'host s':>10}{'overhead':>10}{'device s':>10}"
          f"{'overhead':>10}")
    for model, dataset, limit in (("mlp8", "mnist", None), ("convnet", "cifar10", args.cifar_limit)):
        r = measure(model, dataset, limit, args.data_dir)
        print(f"{r['model']:<10}{r['dataset']:<9}{r['train']:>7}{r['epoch_s']:>10.2f}{r['host_s']:>10.3f}"
              f"{r['host_overhead']:>9.1%} {r['device_s']:>9.3f}{r['device_overhead']:>9.1%}")
    print(f"peak RSS {peak_rss_mib():.0f} MiB (median of 3 epochs/probes after one warm-up each)")


if __name__ == "__main__":
    main()
