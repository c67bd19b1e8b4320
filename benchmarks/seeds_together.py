"""Seeds together vs the same runs one after another (JAX; prints numbers).

For K seeds of one run (default: mlp8 with batch norm on MNIST, a few thousand training samples, 2 epochs) it times
the K runs as `normbench run` makes them, alone one after another (:func:`normbench.runner.run`) and as one program
(:func:`normbench.together.run_together`, `--seeds-together`): the wall time of all K runs (build, compilation,
evaluation and probes included), their training time (the epochs' ``epoch_s``; the shared program's once) and that
of the last epoch alone (compilation excluded: the steady state of a long run; use ``--epochs 2`` or more), as the
median of ``--repeats`` repeats with the range. Issue 26's target: at least 5x for 10 seeds on a GPU.

    KERAS_BACKEND=jax python benchmarks/seeds_together.py [--seeds 1,4,10] [--limit 5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def timed(fn) -> tuple[float, float, float]:
    """Wall seconds of ``fn()`` (which returns the records), the training seconds the records say (all epochs), and
    those of the last epoch alone (no compilation: the steady state that a long run sees)."""
    t = time.perf_counter()
    records = fn()
    wall = time.perf_counter() - t
    bad = [r for r in records if r["status"] != "ok"]
    if bad:
        raise SystemExit(f"a run failed: {bad[0].get('error') or bad[0]['status']}")
    counted = records[:1] if records[0]["performance"].get("trained_as") else records  # the shared epochs once
    return (wall, sum(sum(r["timings"]["epoch_s"]) for r in counted),
            sum(r["timings"]["epoch_s"][-1] for r in counted))


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.2f} s [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,4,10", help="comma list of K, the seeds trained together")
    parser.add_argument("--model", default="mlp8")
    parser.add_argument("--strategy", default="batchnorm")
    parser.add_argument("--limit", type=int, default=5000, help="training samples")
    parser.add_argument("--eval-limit", type=int, default=1000, help="validation and test samples each")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit("seeds together is JAX only: run with KERAS_BACKEND=jax")
    from normbench.env import accelerator
    from normbench.runner import run
    from normbench.spec import RunSpec
    from normbench.together import run_together

    quiet = lambda _msg: None  # noqa: E731
    device = accelerator("jax") or f"CPU ({len(os.sched_getaffinity(0))} cores)"
    print(f"seeds together vs separate: {args.model}/{args.strategy} on MNIST, {args.limit} training samples, "
          f"{args.epochs} epochs, median [range] of {args.repeats} repeats; device: {device}")
    print(f"{'K':>3}  " + "  ".join(f"{'separate, ' + what:>26}  {'together, ' + what:>26}  {'speed-up':>8}"
                                    for what in ("wall", "training", "last epoch")))
    for k in (int(v) for v in args.seeds.split(",")):
        specs = [RunSpec(args.model, args.strategy, "mnist", seed=s, epochs=args.epochs, limit=args.limit,
                         eval_limit=args.eval_limit, val_size=args.eval_limit, train_eval_size=args.eval_limit)
                 for s in range(k)]
        times = {"separate": [], "together": []}
        for _ in range(args.repeats):
            times["separate"].append(timed(lambda: [run(s, data_dir=args.data_dir, log=quiet) for s in specs]))
            times["together"].append(timed(lambda: [r for _, r in run_together(specs, data_dir=args.data_dir,
                                                                                 log=quiet)]))
        cols = []
        for i in (0, 1, 2):
            sep, tog = ([t[i] for t in times[w]] for w in ("separate", "together"))
            cols += [spread(sep), spread(tog), f"{statistics.median(sep) / statistics.median(tog):7.2f}x"]
        print(f"{k:>3}  " + "  ".join(f"{c:>26}" if j % 3 != 2 else f"{c:>8}" for j, c in enumerate(cols)), flush=True)


if __name__ == "__main__":
    main()
