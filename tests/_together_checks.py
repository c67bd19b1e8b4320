"""Run under JAX by tests/test_together.py (``python tests/_together_checks.py OUT.json [STRATEGY ...]``).

Not a test module: for every registered strategy (or those named), plus the SELU bundle with AlphaDropout and
max-norm under the dropout paper's momentum ramp and exponential decay, a tiny MLP on real MNIST is run once per
seed alone and once with its seeds together (:mod:`normbench.together`); it writes, per case, the run ids, statuses,
how each record says it was trained, and the largest differences of the final weights, the history's metrics
and the test metrics, as JSON for the test to assert on. With no strategy named it also runs
``normbench run --seeds-together`` twice into one folder (``cli``), a group whose shared epoch raises (``failure``)
and a group that trains with the fit engine (``fallback``).
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from _tiny import quiet, tiny  # noqa: E402

SEEDS = (0, 1, 2)
TIMING = ("epoch_s", "eval_s", "probe_s", "samples_per_s")  # seconds differ by nature; everything else must not
# record sections compared numerically below (history, test, stats), or that differ by nature (when and how fast)
COMPARED = {"history", "test", "stats", "timings", "environment", "finished_at", "performance"}


def cases(names):
    from normbench.builtins import load_builtins
    from normbench.registry import NORMS

    load_builtins()
    ramp = {"momentum_start": 0.5, "momentum_ramp_epochs": 1.5, "lr_schedule": "exponential", "lr_decay": 0.5}
    out = [(s, {}, {}, "") for s in (names or NORMS.list())]
    if not names:
        out += [("selu", {"dropout_rate": 0.1}, {}, "[dropout]"), ("maxnorm", {}, ramp, "[ramp]")]
    return out


def alone(spec):
    """One run as the runner trains it, and its model's weights at the end (the record notes how far they moved)."""
    from normbench.runner import finish, run_steps

    steps = run_steps(spec, log=quiet)
    request = next(steps)
    start = [np.array(v.numpy()) for v in request.trainer.model.weights]
    record = finish(steps, request)
    end = [np.array(v.numpy()) for v in request.trainer.model.weights]
    record["moved"] = max(float(np.max(np.abs(a - b))) for a, b in zip(start, end))  # training changed the weights
    return record, end


def together(specs):
    """The runs trained together, each model's weights at the end and whether its training split went to the device
    (the program's trainers, caught)."""
    from normbench import together as module

    caught = []

    class Caught(module.Lanes):
        def __init__(self, trainers):
            super().__init__(trainers)
            caught.extend(trainers)

    module.Lanes, original = Caught, module.Lanes
    try:
        records = dict((s.run_id, r) for s, r in module.run_together(specs, log=quiet))
    finally:
        module.Lanes = original
    weights = {t.model: [np.array(v.numpy()) for v in t.model.weights] for t in caught}
    on_device = [t._device is not None for t in caught]  # whose training split the program moved to the device
    return records, [weights[t.model] for t in caught], on_device


def biggest(a: dict, b: dict) -> float:
    keys = [k for k in a if k not in TIMING]
    assert keys and set(keys) == {k for k in b if k not in TIMING}, (sorted(a), sorted(b))
    return max(abs(float(a[k]) - float(b[k])) for k in keys)


def main(out_path, names):
    from normbench.spec import RunSpec

    out = {}
    for strategy, sparams, extra, tag in cases(names):
        specs = [RunSpec("mlp", strategy, "mnist", seed=s, model_params={"depth": 3, "width": 16},
                         strategy_params=sparams, learning_rate=0.05, **tiny(epochs=2, limit=200), **extra)
                 for s in SEEDS[: 3 if tag else 2]]
        separate = [alone(s) for s in specs]
        records, weights, on_device = together(specs)
        out[strategy + tag] = {
            "run_ids": [s.run_id for s in specs],
            "together_ids": sorted(records),
            "status": [r["status"] for r, _ in separate] + [records[s.run_id]["status"] for s in specs],
            "trained_as": [records[s.run_id]["performance"].get("trained_as") for s in specs],
            "alone_trained_as": [r["performance"].get("trained_as") for r, _ in separate],
            "moved": min(r.pop("moved") for r, _ in separate),
            "weights": max(float(np.max(np.abs(a - b))) for (_, wa), wb in zip(separate, weights)
                           for a, b in zip(wa, wb, strict=True)),
            "history": max(biggest(ha, hb) for (r, _), s in zip(separate, specs)
                           for ha, hb in zip(r["history"], records[s.run_id]["history"], strict=True)),
            "other_sections_differ": sorted({k for (r, _), s in zip(separate, specs) for k in set(r) | set(records[s.run_id])
                                             if k not in COMPARED and r.get(k) != records[s.run_id].get(k)}),
            "performance_differs": sorted({k for (r, _), s in zip(separate, specs) for k in r["performance"]
                                           if r["performance"][k] != records[s.run_id]["performance"][k]}),
            "epochs": [len(records[s.run_id]["history"]) for s in specs],
            "training_split_on_device": on_device,
            "test": max(biggest(r["test"], records[s.run_id]["test"]) for (r, _), s in zip(separate, specs)),
            "stats": max(float(np.max(np.abs(np.array([row[-1] for row in r["stats"]["rows"]], dtype=float)
                                             - np.array([row[-1] for row in records[s.run_id]["stats"]["rows"]],
                                                        dtype=float)), initial=0.0))
                         for (r, _), s in zip(separate, specs)),
        }
        print(strategy + tag, {k: v for k, v in out[strategy + tag].items() if k not in ("run_ids", "together_ids")},
              flush=True)
    if not names:
        out["cli"] = through_the_cli(os.path.join(os.path.dirname(out_path), "cli"))
        out["failure"] = failing_program()
        out["fallback"] = with_the_fit_engine()
    with open(out_path, "w") as f:
        json.dump(out, f)


def through_the_cli(folder):
    """``normbench run --seeds-together`` twice into ``folder``: the records, then a resume that skips them all."""
    from normbench.cli import main
    from normbench.reader import load_records

    args = ["run", "--models", "mlp8", "--strategies", "none", "--seeds", "0,1,2", "--epochs", "1", "--limit", "100",
            "--seeds-together", "--results", folder]
    codes = [main(args), main(args)]
    records = load_records(folder)
    return {"codes": codes, "records": {r["spec"]["seed"]: {"run_id": r["run_id"], "status": r["status"],
                                                           "trained_as": r["performance"].get("trained_as")}
                                        for r in records}}


def with_the_fit_engine():
    """Seeds together asked for runs that train with ``fit`` (here ``engine="fit"``; conv nets by default): they run
    one after another, as the log says, and their records say nothing of a shared program."""
    from normbench.spec import RunSpec
    from normbench.together import run_together

    lines = []
    specs = [RunSpec("mlp", "none", "mnist", seed=s, model_params={"depth": 3, "width": 16}, **tiny())
             for s in (0, 1)]
    records = [r for _, r in run_together(specs, log=lines.append, engine="fit")]
    return {"said": [line.strip() for line in lines if "seeds together" in line],
            "records": [{"run_id": r["run_id"], "status": r["status"], "engine": r["performance"]["engine"],
                         "trained_as": r["performance"].get("trained_as"),
                         "concurrent_runs": r["performance"]["concurrent_runs"]} for r in records],
            "run_ids": [s.run_id for s in specs]}


def failing_program():
    """A shared epoch that raises: every run of the group records the error, as a run alone records its own."""
    from normbench import together as module
    from normbench.spec import RunSpec

    def broken(self, orders):
        raise RuntimeError("the shared program failed")

    specs = [RunSpec("mlp", "none", "mnist", seed=s, model_params={"depth": 3, "width": 16}, **tiny())
             for s in (0, 1)]
    module.Lanes.train_epoch, original = broken, module.Lanes.train_epoch
    try:
        records = [r for _, r in module.run_together(specs, log=quiet)]
    finally:
        module.Lanes.train_epoch = original
    return [{"status": r["status"], "error": r.get("error"), "epochs": len(r["history"]),
             "trained_as": r["performance"].get("trained_as")} for r in records]


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
