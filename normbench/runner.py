"""RunSpec -> record. The only module that trains.

One run: seed, load splits, build and compile, measure at initialization (epoch 0),
then train one epoch at a time, evaluating in inference mode and probing activation
statistics after each. A non-finite loss ends the run as ``diverged``; any other
exception as ``error`` with the message. ``run_grid`` runs a list of specs, writes
each record atomically as soon as it is done and skips completed ones (resume).
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from . import store
from .env import enable_determinism, environment, peak_rss_mib
from .spec import SCHEMA_VERSION, RunSpec

EVAL_BATCH = 1024
Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


def make_optimizer(spec: RunSpec):
    import keras

    if spec.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=spec.learning_rate, momentum=spec.momentum)
    if spec.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=spec.learning_rate)
    return keras.optimizers.RMSprop(learning_rate=spec.learning_rate)


def build_compiled(spec: RunSpec, input_shape, num_classes: int):
    """The spec's model, compiled with its optimizer; logits + sparse cross-entropy."""
    import keras

    from .models import build_model
    from .norms import get_strategy

    strategy = get_strategy(spec.strategy, **spec.strategy_params)
    model = build_model(spec.model, input_shape, num_classes, strategy, **spec.model_params)
    model.compile(
        optimizer=make_optimizer(spec),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model, strategy


def _evaluate(model, x, y) -> tuple[float, float]:
    out = model.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0, return_dict=True)
    return float(out["loss"]), float(out["accuracy"])


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "nan" if v is None or not math.isfinite(v) else format(v, spec)


def new_record(spec: RunSpec) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "status": "running",
        "error": None,
        "diverged_epoch": None,
        "param_count": None,
        "layers": [],
        "data": {},
        "history": [],
        "test": None,
        "stats": {"columns": store.STATS_COLUMNS, "rows": []},
        "timings": {},
        "environment": {},
        "suite": None,
    }


def run(spec: RunSpec, *, data_dir: str | None = None, log: Log = _print) -> dict:
    """Train one spec and return its record (never raises for a failed run; Ctrl-C propagates)."""
    import keras

    from .datasets import load_splits
    from .probe import ActivationProbe, hidden_blocks

    record = new_record(spec)
    t_start = time.perf_counter()
    try:
        enable_determinism()
        record["environment"] = environment()
        keras.backend.clear_session()
        keras.utils.set_random_seed(spec.seed)
        t = time.perf_counter()
        from .norms import get_strategy

        strategy = get_strategy(spec.strategy, **spec.strategy_params)
        splits = load_splits(
            spec.dataset,
            input_scaling=strategy.input_scaling,
            val_size=spec.val_size,
            limit=spec.limit,
            eval_limit=spec.eval_limit,
            data_dir=data_dir,
        )
        record["data"] = {"source": splits.source, "sizes": splits.sizes(), "preprocessing": splits.preprocessing}
        record["timings"]["data_s"] = time.perf_counter() - t

        t = time.perf_counter()
        model, strategy = build_compiled(spec, splits.input_shape, splits.num_classes)
        record["strategy_config"] = strategy.get_config()
        record["param_count"] = int(model.count_params())
        record["layers"] = [
            {
                "index": i,
                "kind": type(linear).__name__,
                "units": int(linear.kernel.shape[-1]),
                "activation": act.get_config()["activation"],
            }
            for i, act, linear in hidden_blocks(model)
        ]
        x_tr_eval, y_tr_eval = splits.x_train[: spec.train_eval_size], splits.y_train[: spec.train_eval_size]
        probe = ActivationProbe(model, splits.x_val[: spec.probe_size])
        record["timings"]["build_s"] = time.perf_counter() - t

        n_train = len(splits.y_train)
        epoch_times = []
        for epoch in range(spec.epochs + 1):
            row: dict = {"epoch": epoch}
            if epoch > 0:
                t = time.perf_counter()
                h = model.fit(
                    splits.x_train, splits.y_train, batch_size=spec.batch_size, epochs=1, shuffle=True, verbose=0
                )
                dt = time.perf_counter() - t
                epoch_times.append(dt)
                row.update(
                    fit_loss=float(h.history["loss"][-1]),
                    fit_accuracy=float(h.history["accuracy"][-1]),
                    epoch_s=dt,
                    samples_per_s=n_train / dt,
                )
            t = time.perf_counter()
            row["train_loss"], row["train_accuracy"] = _evaluate(model, x_tr_eval, y_tr_eval)
            row["val_loss"], row["val_accuracy"] = _evaluate(model, splits.x_val, splits.y_val)
            row["eval_s"] = time.perf_counter() - t
            t = time.perf_counter()
            record["stats"]["rows"] += probe.measure(epoch)
            row["probe_s"] = time.perf_counter() - t
            record["history"].append(row)
            log(
                f"    epoch {epoch:>3}/{spec.epochs}  train loss {_fmt(row['train_loss'])} acc {_fmt(row['train_accuracy'], '.3f')}"
                f"  val loss {_fmt(row['val_loss'])} acc {_fmt(row['val_accuracy'], '.3f')}"
                + (f"  {row['epoch_s']:.1f}s ({row['samples_per_s']:,.0f} samples/s)" if epoch else "  (initialization)")
            )
            losses = [row.get("fit_loss", 0.0), row["train_loss"], row["val_loss"]]
            if not all(math.isfinite(v) for v in losses):
                record["status"], record["diverged_epoch"] = "diverged", epoch
                log(f"    diverged at epoch {epoch}: loss is not finite")
                break
        if record["status"] == "running":
            loss, acc = _evaluate(model, splits.x_test, splits.y_test)
            record["test"] = {"loss": loss, "accuracy": acc}
            record["status"] = "ok"
        record["timings"]["epoch_s"] = epoch_times
    except KeyboardInterrupt:
        raise
    except Exception as e:  # recorded, and the grid goes on
        record["status"] = "error"
        record["error"] = f"{type(e).__name__}: {e}"
        record["traceback"] = traceback.format_exc(limit=8)
        log(f"    error: {record['error']}")
    record["timings"]["total_s"] = time.perf_counter() - t_start
    record["timings"]["peak_rss_mib"] = peak_rss_mib()
    record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def run_grid(
    specs: Sequence[RunSpec],
    results_dir: str | Path,
    *,
    force: bool = False,
    data_dir: str | None = None,
    suite: dict | None = None,
    log: Log = _print,
) -> dict[str, int]:
    """Run every spec not already complete in ``results_dir``; return counts by status.

    Each record is written as soon as its run ends, so an interrupted grid loses at
    most the run in progress; running the grid again resumes. ``suite`` (name and
    definition hash) is stored in each record as provenance; it is not part of the run id.
    """
    results_dir = Path(results_dir)
    todo = [s for s in specs if force or not store.is_complete(results_dir, s)]
    counts = {"skipped": len(specs) - len(todo), "ok": 0, "diverged": 0, "error": 0}
    if counts["skipped"]:
        log(f"{counts['skipped']} of {len(specs)} runs already complete in {results_dir} (use --force to rerun)")
    t_grid = time.perf_counter()
    for i, spec in enumerate(todo):
        elapsed = time.perf_counter() - t_grid
        eta = f", ETA {_duration(elapsed / i * (len(todo) - i))}" if i else ""
        log(f"[{i + 1}/{len(todo)}] {spec.label} ({spec.epochs} epochs, run {spec.run_id}; elapsed {_duration(elapsed)}{eta})")
        record = run(spec, data_dir=data_dir, log=log)
        record["suite"] = suite
        store.save_record(results_dir, record)
        counts[record["status"]] += 1
    log(
        f"done in {_duration(time.perf_counter() - t_grid)}: {counts['ok']} ok, {counts['diverged']} diverged, "
        f"{counts['error']} error, {counts['skipped']} skipped; records in {results_dir}"
    )
    return counts
