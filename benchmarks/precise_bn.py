"""How far batch norm's inference-mode accuracy moves with how its statistics are estimated (prints numbers).

Trains resnet20 with batch norm for one epoch on 2,000 CIFAR-10 training images (the run's own build, compile,
batch order and data as `normbench run` makes them) and evaluates the test set three ways: with Keras' moving
averages (momentum 0.99), with the statistics re-estimated by precise BN (normbench's default), and in training
mode (each test batch normalized by its own statistics, random batches of the training batch size). Issue 22's target:
precise BN within 2 points of training mode.

    python benchmarks/precise_bn.py [--model resnet20] [--limit 2000] [--epochs 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    import keras

    from normbench.builtins import load_builtins
    from normbench.datasets import load_splits
    from normbench.engines import FitEngine, epoch_order
    from normbench.precise_bn import PreciseBN, MovingStatistics, sample_indices
    from normbench.runner import build, compile_model, loss_and_accuracy
    from normbench.spec import RunSpec

    load_builtins()
    spec = RunSpec(args.model, "batchnorm", args.dataset, epochs=args.epochs, limit=args.limit)
    keras.utils.set_random_seed(spec.seed)
    splits = load_splits(spec.dataset, input_scaling=spec.input_scaling, val_size=spec.val_size, limit=spec.limit,
                         data_dir=args.data_dir)
    model, _ = build(spec, splits.input_shape, splits.num_classes, splits.x_train)
    compile_model(model, spec, steps_per_epoch=-(-len(splits.y_train) // spec.batch_size))
    engine = FitEngine(model, splits.x_train, splits.y_train, spec.batch_size)
    t = time.perf_counter()
    for epoch in range(1, spec.epochs + 1):
        engine.train_epoch(epoch_order(spec.seed, epoch, len(splits.y_train)), epoch)
    train_s = time.perf_counter() - t
    x, y = splits.x_test, splits.y_test
    moving = loss_and_accuracy(engine.logits(x), y)
    saved = MovingStatistics(model)
    pbn = PreciseBN(model)
    t = time.perf_counter()
    batches = pbn.reestimate(splits.x_train[sample_indices(spec.seed, len(splits.y_train), spec.batch_size,
                                                           spec.precise_bn_batches)], spec.batch_size)
    reestimate_s = time.perf_counter() - t
    precise = loss_and_accuracy(engine.logits(x), y)
    saved.restore()
    # training mode normalizes each batch by its own statistics: batches drawn at random (the split may be ordered
    # by class, and a one-class batch normalizes the class away)
    order = np.random.default_rng(0).permutation(len(y))
    logits = np.concatenate([np.asarray(model(x[order[i : i + spec.batch_size]], training=True), dtype=np.float64)
                             for i in range(0, len(x), spec.batch_size)])
    saved.restore()  # the training-mode pass moved the averages; they are not part of what is compared
    training = loss_and_accuracy(logits, y[order])
    steps = spec.epochs * -(-len(splits.y_train) // spec.batch_size)
    print(f"{args.dataset}/{args.model}/batchnorm, {len(splits.y_train)} training images, {spec.epochs} epoch(s) "
          f"= {steps} steps ({train_s:.0f} s), backend {keras.backend.backend()}; test set of {len(y)} images:")
    print(f"  moving averages (Keras, momentum 0.99): accuracy {moving[1]:.4f}  loss {moving[0]:.4f}")
    print(f"  precise BN ({batches} batches of {spec.batch_size}, {reestimate_s:.1f} s): accuracy {precise[1]:.4f}  "
          f"loss {precise[0]:.4f}")
    print(f"  training mode (batches of {spec.batch_size}):  accuracy {training[1]:.4f}  loss {training[0]:.4f}")
    print(f"  precise - training mode: {100 * (precise[1] - training[1]):+.2f} points; moving - training mode: "
          f"{100 * (moving[1] - training[1]):+.2f} points")


if __name__ == "__main__":
    main()
