"""TensorFlow: epoch times of the fit engine's own input (``normbench.engines.tf_batches``, autotuning off) against
what ``model.fit`` builds from arrays (an autotuned prefetch), epochs interleaved on two identical models.

On this project's 2-core CPU the autotuned pipeline's threads took a core from training in about half the
epochs (docs/performance.md, "The TensorFlow input pipeline"). Each epoch is one ``fit`` call over the same batches in the
same order, as the runner makes it; the two inputs alternate which goes first. Prints each epoch's seconds,
the medians (first epoch left out: compilation) and how many epochs took over 1.3x the faster input's median.

    python benchmarks/tf_input.py [--model convnet] [--strategy batchnorm] [--epochs 13]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

DATASET = {"mlp": "mnist", "convnet": "cifar10", "vgg": "cifar10", "resnet": "cifar10"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="convnet")
    p.add_argument("--strategy", default="batchnorm")
    p.add_argument("--epochs", type=int, default=13)
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--data-dir", default=os.environ.get("NORMBENCH_DATA_DIR"))
    args = p.parse_args()

    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit(f"this benchmark is about TensorFlow's input pipeline; KERAS_BACKEND is {keras.backend.backend()}")
    from normbench.builtins import load_builtins
    from normbench.datasets import load_splits
    from normbench.engines import FitEngine, epoch_order
    from normbench.runner import build, compile_model
    from normbench.spec import RunSpec

    load_builtins()
    dataset = DATASET[args.model.rstrip("0123456789")]
    spec = RunSpec(args.model, args.strategy, dataset, limit=args.samples)
    splits = load_splits(dataset, input_scaling=spec.input_scaling, limit=args.samples, data_dir=args.data_dir)
    keras.utils.set_random_seed(0)
    engines = {}
    for name, own in (("tf_batches", True), ("fit on arrays", False)):
        model, _ = build(spec, splits.input_shape, splits.num_classes)
        compile_model(model, spec)
        # own=False: fit gets the arrays and builds its own (autotuned) pipeline
        engines[name] = FitEngine(model, splits.x_train, splits.y_train, spec.batch_size, own_batches=own)
    seconds = {name: [] for name in engines}
    print(f"{args.model}/{args.strategy}, {len(splits.y_train):,} {dataset} images, batch {spec.batch_size}, "
          f"{args.epochs} epochs of each, interleaved", flush=True)
    for epoch in range(1, args.epochs + 1):
        order = epoch_order(spec.seed, epoch, len(splits.y_train))
        names = list(engines) if epoch % 2 else list(engines)[::-1]
        for name in names:
            t = time.perf_counter()
            engines[name].train_epoch(order, epoch)
            seconds[name].append(time.perf_counter() - t)
        print(f"  epoch {epoch:>2}: " + "  ".join(f"{n} {seconds[n][-1]:.2f} s" for n in engines), flush=True)
    medians = {n: statistics.median(s[1:]) for n, s in seconds.items()}
    fast = min(medians.values())
    for name, s in seconds.items():
        slow = sum(x > 1.3 * fast for x in s[1:])
        print(f"{name:>14}: median {medians[name]:.2f} s an epoch, range {min(s[1:]):.2f}-{max(s[1:]):.2f} s, "
              f"{slow} of {len(s) - 1} epochs over 1.3x the faster median ({1.3 * fast:.2f} s)")


if __name__ == "__main__":
    main()
