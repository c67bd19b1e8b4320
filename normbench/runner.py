"""RunSpec -> record. The only module that trains; one run, never a grid (that is :mod:`normbench.grid`).

One run: seed, load splits, build and compile, measure at initialization (epoch 0),
then train one epoch at a time, evaluating in inference mode and probing activation
statistics after each. A non-finite loss ends the run as ``diverged``; any other
exception as ``error`` with the message.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
import traceback
from collections.abc import Callable

import numpy as np

from . import mechanisms, precise_bn, stop
from . import record as rec_mod
from .builtins import load_builtins
from .datasets import load_splits
from .diagnostics import NotApplicable
from .engines import epoch_order, make_engine, resolve_engine
from .env import enable_determinism, environment, peak_rss_mib
from .errors import say
from .metrics import loss_and_accuracy  # noqa: F401  (runner.loss_and_accuracy: used through here too)
from .models import build_model, portable_initialization
from .norms import get_strategy, hidden_layer_name
from .execution import choose_execution
from .flops import training_flops
from .probe import ActivationProbe, hidden_blocks, statistics_on_device
from .registry import DIAGNOSTICS
from .spec import RunSpec

Log = Callable[[str], None]


def make_optimizer(spec: RunSpec, steps_per_epoch: int | None = None):
    """The spec's optimizer, with its strategy's adaptive gradient clipping if it has one."""
    from .schedules import optimizer  # Keras: imported when a model is compiled, not when the runner is

    return optimizer(spec, steps_per_epoch, get_strategy(spec.strategy, **spec.strategy_params).agc_clip)


def build(spec: RunSpec, input_shape, num_classes: int, x_train=None):
    """The spec's model (uncompiled, its kernels drawn portably from the spec's seed) and its strategy.

    A strategy with a data-dependent initialization (weight norm) is initialized on the first
    batch that epoch 1 trains on, when the training inputs ``x_train`` are given.
    """
    from .layers import apply_weight_decay, data_dependent_init  # Keras: imported when a model is built

    strategy = get_strategy(spec.strategy, **spec.strategy_params)
    model = build_model(spec.model, input_shape, num_classes, strategy, **spec.model_params)
    portable_initialization(model, spec.seed)
    apply_weight_decay(model, spec.weight_decay)
    if strategy.data_init and x_train is not None:
        first = np.sort(epoch_order(spec.seed, 1, len(x_train))[: spec.batch_size])
        data_dependent_init(model, x_train[first])
    return model, strategy


def norm_description(model, index: int) -> dict:
    """The normalization layer of hidden block ``index`` as recorded: its class and group count."""
    try:
        layer = model.get_layer(hidden_layer_name(index, "norm"))
    except ValueError:
        return {}
    out = {"norm": type(layer).__name__}
    if hasattr(layer, "groups"):
        out["norm_groups"] = int(layer.groups)
    return out


def compile_model(model, spec: RunSpec, execution=None, steps_per_epoch: int | None = None) -> None:
    """Compile with the spec's optimizer, logits + sparse cross-entropy, accuracy.

    ``execution`` (a :class:`normbench.execution.Execution`) sets XLA and steps per execution;
    None keeps Keras' defaults. ``steps_per_epoch`` sizes a learning-rate schedule.
    """
    import keras

    model.compile(
        optimizer=make_optimizer(spec, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        **({} if execution is None else execution.as_dict()),
    )


def build_compiled(spec: RunSpec, input_shape, num_classes: int, execution=None):
    """``build`` then ``compile_model``."""
    model, strategy = build(spec, input_shape, num_classes)
    compile_model(model, spec, execution)
    return model, strategy


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "nan" if v is None or not math.isfinite(v) else format(v, spec)


@dataclass
class Epoch:
    """What :func:`run_steps` asks its driver for: train ``trainer`` one epoch in ``order`` (then send back
    ``(fit logs, seconds)``, or throw in what the training raised)."""

    trainer: object
    order: np.ndarray
    epoch: int
    callbacks: list


def run(spec: RunSpec, *, data_dir: str | None = None, log: Log = say, engine: str | None = None,
        concurrent_runs: int = 1) -> dict:
    """Train one spec and return its record (never raises for a failed run; Ctrl-C propagates).

    ``concurrent_runs`` is how many runs share the device with this one (itself included); it is
    recorded, because seconds measured under contention are not comparable with seconds measured alone.
    """
    return finish(run_steps(spec, data_dir=data_dir, log=log, engine=engine, concurrent_runs=concurrent_runs))


def finish(steps, request: "Epoch | None" = None) -> dict:
    """Drive :func:`run_steps` to its record, each epoch trained by the run's own engine (from ``request``, the
    epoch it already asked for, if any). What the training raises is thrown into the run, which records it (or
    re-raises Ctrl-C) exactly as if it had trained inline."""
    try:
        request = next(steps) if request is None else request
        while True:
            t = time.perf_counter()
            try:
                logs = request.trainer.train_epoch(request.order, request.epoch, request.callbacks)
            except BaseException as e:  # noqa: BLE001  (handed to the run: see above)
                request = steps.throw(e)
            else:
                request = steps.send((logs, time.perf_counter() - t))
    except StopIteration as finished:
        return finished.value


def run_steps(spec: RunSpec, *, data_dir: str | None = None, log: Log = say, engine: str | None = None,
              concurrent_runs: int = 1):
    """:func:`run` as a generator: it yields an :class:`Epoch` for each epoch to train and returns the record,
    so that a driver can train several runs' epochs together (:mod:`normbench.together`) while each run builds,
    measures and records itself exactly as alone."""
    import keras

    from .layers import linear_kind, with_augmentation

    load_builtins()  # every registry filled, in whichever process runs this (a --jobs worker, a Ray task)
    record = rec_mod.new(spec)
    t_start = time.perf_counter()
    try:
        enable_determinism()
        record["environment"] = environment()
        keras.backend.clear_session()
        keras.utils.set_random_seed(spec.seed)
        t = time.perf_counter()
        strategy = get_strategy(spec.strategy, **spec.strategy_params)  # fail fast, before loading data
        splits = load_splits(
            spec.dataset,
            input_scaling=spec.input_scaling,
            val_size=spec.val_size,
            limit=spec.limit,
            eval_limit=spec.eval_limit,
            data_dir=data_dir,
        )
        record["data"] = {"source": splits.source, "sizes": splits.sizes(), "preprocessing": splits.preprocessing}
        record["timings"]["data_s"] = time.perf_counter() - t
        capped = [f"{name} = {asked} (used {used})" for name, asked, used in (
            ("limit", spec.limit, len(splits.y_train)), ("eval_limit", spec.eval_limit, len(splits.y_test)),
            ("probe_size", spec.probe_size, len(splits.y_val))) if asked is not None and asked > used]
        if capped:  # the record's data.sizes says what was used; the spec keeps what was asked (its run id)
            log(f"    note: {', '.join(capped)}: the dataset has no more; the record's data sizes say what was used")

        t = time.perf_counter()
        keras.mixed_precision.set_global_policy(spec.precision)
        model, strategy = build(spec, splits.input_shape, splits.num_classes, splits.x_train)
        execution = choose_execution(model, keras.backend.backend(), record["environment"]["deterministic_ops"])
        if spec.probe_every_steps:  # the step hook must see every probed step, and chunks restart each epoch
            steps_per_epoch = -(-len(splits.y_train) // spec.batch_size)
            spe = math.gcd(execution.steps_per_execution, spec.probe_every_steps, steps_per_epoch)
            execution = replace(execution, steps_per_execution=spe)
        trained = with_augmentation(model, spec.augment, spec.seed)  # the probe measures `model`, its layers
        compile_model(trained, spec, execution, steps_per_epoch=-(-len(splits.y_train) // spec.batch_size))
        engine_name = resolve_engine(engine, keras.backend.backend(), spec, model)
        on_device = statistics_on_device(record["environment"]["device_kind"])
        record["performance"] = {**execution.as_dict(), "train_flops_per_sample": training_flops(model),
                                 "engine": engine_name, "concurrent_runs": int(concurrent_runs),
                                 "probe_statistics": "device" if on_device else "host"}
        record["strategy_config"] = strategy.get_config()
        record["param_count"] = int(model.count_params())
        record["layers"] = [
            {
                "index": i,
                "kind": linear_kind(linear),
                "units": int(linear.kernel.shape[-1]),
                "activation": act.get_config()["activation"],
                **norm_description(model, i),
            }
            for i, act, linear in hidden_blocks(model)
        ]
        probe = ActivationProbe(model, splits.x_val[: spec.probe_size], on_device=on_device)
        trainer = make_engine(engine_name, trained, splits.x_train, splits.y_train, spec.batch_size)
        record["timings"]["build_s"] = time.perf_counter() - t
        stop.watch(trained)  # a stop request ends fit() after its current step; checkpoints raise below

        measure = _EpochMeasure(spec, trainer, splits, probe, record, log)
        record["data"]["bn_statistics"] = measure.bn_statistics
        if measure(0):
            for epoch in range(1, spec.epochs + 1):
                order = epoch_order(spec.seed, epoch, len(splits.y_train))
                fit_logs, epoch_s = yield Epoch(trainer, order, epoch, measure.callbacks())
                stop.checkpoint()  # before measuring: an epoch cut short by a stop request is not an epoch
                if not measure(epoch, fit_logs, epoch_s):
                    break
        stop.checkpoint()
        if record["status"] == "running":
            test = {"": (splits.x_test, splits.y_test)}
            record["test"] = measure.moving_scores(test)
            with measure.precise():
                record["test"].update(measure.scores(test))
            record["status"] = "ok"
        record["timings"]["epoch_s"] = [h["epoch_s"] for h in record["history"] if "epoch_s" in h]
    except KeyboardInterrupt:
        raise
    except Exception as e:  # recorded, and the grid goes on
        if stop.requested() is not None:  # a forced stop surfacing as another error: a stop, not a failed run
            raise stop.StopRequested(stop.requested()) from e
        record["status"] = "error"
        record["error"] = f"{type(e).__name__}: {e}"
        record["traceback"] = traceback.format_exc(limit=8)
        log(f"    error: {record['error']}")
    finally:
        keras.mixed_precision.set_global_policy("float32")  # the policy is global: never leak it to the next run
    record["timings"]["total_s"] = time.perf_counter() - t_start
    record["timings"]["peak_rss_mib"] = peak_rss_mib()
    record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


class _EpochMeasure:
    """Measures one epoch's row: evaluations in inference mode, the activation probe, timings.

    Called once before training (epoch 0) and after every epoch the engine trains. Inference
    runs through the engine's ``logits`` (its compiled forward function). A non-finite loss
    marks the run diverged and stops training.
    """

    def __init__(self, spec: RunSpec, trainer, splits, probe, record: dict, log: Log):
        self.spec, self.trainer, self.probe, self.record, self.log = spec, trainer, probe, record, log
        self.model = trainer.model
        self.x_train_eval = splits.x_train[: spec.train_eval_size]
        self.y_train_eval = splits.y_train[: spec.train_eval_size]
        self.x_val, self.y_val = splits.x_val, splits.y_val
        self.x_test, self.y_test = splits.x_test, splits.y_test
        self.n_train = len(splits.y_train)
        self.step_probe_s = 0.0  # time spent in step probes during the current epoch
        # precise BN: the fixed training batches that re-estimate the batch-norm statistics before each evaluation
        self.precise_bn = precise_bn.PreciseBN(probe.model)
        layers = len(self.precise_bn.layers)
        self.bn_x = None
        if layers and spec.precise_bn_batches:
            self.bn_x = splits.x_train[precise_bn.sample_indices(spec.seed, self.n_train, spec.batch_size,
                                                                 spec.precise_bn_batches)]
            batches = max(1, len(self.bn_x) // spec.batch_size)
            self.bn_statistics = {"method": "precise", "layers": layers, "batches": batches,
                                  "samples": min(len(self.bn_x), batches * spec.batch_size)}
        else:
            self.bn_statistics = {"method": "moving", "layers": layers} if layers else None
        # what each normalization mechanism did (normbench.mechanisms): nothing for a strategy without one
        self.mechanisms = mechanisms.Mechanisms(
            probe.model, agc_clip=get_strategy(spec.strategy, **spec.strategy_params).agc_clip, x_probe=probe.x,
            x_train=splits.x_train, y_train=splits.y_train, seed=spec.seed, batch_size=spec.batch_size,
            batch_norm=self.bn_x is not None)
        if spec.diagnostics:
            record["diagnostics"] = {"columns": ["epoch", "layer", "diagnostic", "quantity", "value"], "rows": []}
        # the probe batch: the first probe_size validation samples, the same at every epoch; the training
        # samples and the compiled forward pass for the diagnostics that evaluate the loss (landscape)
        self.diagnostic_context = {"x": splits.x_val[: spec.probe_size], "y": splits.y_val[: spec.probe_size],
                                   "x_train": splits.x_train, "y_train": splits.y_train,
                                   "logits": trainer.logits, "seed": spec.seed}
        if spec.probe_every_steps:
            record["steps"] = {"columns": ["step", "val_loss", "val_accuracy", "test_loss", "test_accuracy"], "rows": []}
            record["step_stats"] = {"columns": ["step", "layer", "tap", "quantity", "value"], "rows": []}
            self.measure_step(0)

    def measure_step(self, step: int) -> None:
        """Validation and test metrics and activation statistics after ``step`` optimizer steps.

        Test accuracy during training is recorded only for replicating figures that plot it
        (the BN paper's Figure 1); nothing in normbench selects models on it.
        """
        t = time.perf_counter()
        with self.precise():
            val = self.evaluate(self.x_val, self.y_val)
            test = self.evaluate(self.x_test, self.y_test)
            self.record["step_stats"]["rows"] += [[step, *row[1:]] for row in self.probe.measure(step)]
        self.record["steps"]["rows"].append([step, *val, *test])
        self.step_probe_s += time.perf_counter() - t

    def diagnose(self, epoch: int, finite: bool) -> None:
        """The spec's diagnostics on the probed (base) model: rows (epoch, layer, diagnostic, quantity, value)
        and each one's cost in seconds, summed over epochs. A diagnostic marked ``at_init`` runs at epoch 0
        only, one marked ``at_end`` after the last epoch only; one that returns ``{"rows": ..., "tables":
        {section: table}}`` adds each table as a record section. None runs at an epoch whose losses are not
        finite (the run is about to be marked diverged; its weights may be too). A diagnostic that fails is
        recorded in ``diagnostics_errors`` (epoch and message) and the run goes on: a measurement never
        ends a run. So is one that does not apply to the model (``NotApplicable``: meanfield on a conv net),
        and the log says which."""
        if not finite:
            return
        for name in self.spec.diagnostics:
            t = time.perf_counter()
            try:
                fn = DIAGNOSTICS.get(name)
                if (getattr(fn, "at_init", False) and epoch != 0) or (getattr(fn, "at_end", False)
                                                                      and epoch != self.spec.epochs):
                    continue
                rows = fn(self.probe.model, self.diagnostic_context)
            except Exception as e:  # noqa: BLE001  (recorded; training is not the diagnostic's to stop)
                self.record.setdefault("diagnostics_errors", []).append([epoch, name, f"{type(e).__name__}: {e}"])
                what = "does not apply to this model" if isinstance(e, NotApplicable) else "failed"
                self.log(f"    diagnostic {name} {what} (epoch {epoch}): {type(e).__name__}: {e}")
                continue
            if isinstance(rows, dict):
                for section, table in rows.get("tables", {}).items():
                    self.record[section] = {"columns": ["epoch", *table["columns"]],
                                            "rows": [[epoch, *r] for r in table["rows"]]}
                rows = rows["rows"]
            self.record["diagnostics"]["rows"] += [[epoch, layer, name, q, v] for layer, q, v in rows]
            cost = self.record["timings"].setdefault("diagnostics_s", {})
            cost[name] = cost.get(name, 0.0) + time.perf_counter() - t

    def measure_mechanisms(self, epoch: int, moving: dict, finite: bool) -> None:
        """The ``mechanisms`` rows of ``epoch`` (:mod:`normbench.mechanisms`), their seconds summed in
        ``timings.mechanisms_s``. A measurement never ends a run: one that fails is recorded in
        ``diagnostics_errors`` (as ``mechanisms``) and logged."""
        if not self.mechanisms:
            return
        t = time.perf_counter()
        try:
            self.record["mechanisms"]["rows"] += self.mechanisms.measure(epoch, moving, finite)
        except Exception as e:  # noqa: BLE001  (recorded; training is not the measurement's to stop)
            self.record.setdefault("diagnostics_errors", []).append([epoch, "mechanisms", f"{type(e).__name__}: {e}"])
            self.log(f"    mechanisms failed (epoch {epoch}): {type(e).__name__}: {e}")
        timings = self.record["timings"]
        timings["mechanisms_s"] = timings.get("mechanisms_s", 0.0) + time.perf_counter() - t

    def evaluate(self, x, y) -> tuple[float, float]:
        return loss_and_accuracy(self.trainer.logits(x), y)

    @contextlib.contextmanager
    def precise(self):
        """Within: the batch-norm statistics re-estimated on the fixed training batches (precise BN); on exit the
        moving averages are back as training left them, so measuring never changes training."""
        if self.bn_x is None:
            yield
            return
        saved = precise_bn.MovingStatistics(self.probe.model)
        try:
            self.precise_bn.reestimate(self.bn_x, self.spec.batch_size)
            yield
        finally:
            saved.restore()

    def scores(self, sets: dict[str, tuple], suffix: str = "") -> dict[str, float]:
        """``{prefix}loss{suffix}`` and ``{prefix}accuracy{suffix}`` of each named set, with the model as it is."""
        out: dict[str, float] = {}
        for prefix, (x, y) in sets.items():
            out[f"{prefix}loss{suffix}"], out[f"{prefix}accuracy{suffix}"] = self.evaluate(x, y)
        return out

    def moving_scores(self, sets: dict[str, tuple]) -> dict[str, float]:
        """For a network whose batch-norm statistics are re-estimated: its scores with Keras' moving averages
        (``..._moving``), kept beside the re-estimated ones; otherwise nothing."""
        return self.scores(sets, "_moving") if self.bn_x is not None else {}

    def __call__(self, epoch: int, fit_logs: dict | None = None, epoch_s: float | None = None) -> bool:
        row: dict = {"epoch": epoch}
        if fit_logs is not None:
            epoch_s -= self.step_probe_s  # training time only
            row.update(
                fit_loss=float(fit_logs["loss"]),
                fit_accuracy=float(fit_logs["accuracy"]),
                epoch_s=epoch_s,
                samples_per_s=self.n_train / epoch_s,
            )
            if self.spec.probe_every_steps:
                row["step_probe_s"] = self.step_probe_s
            self.step_probe_s = 0.0
        t = time.perf_counter()
        sets = {"train_": (self.x_train_eval, self.y_train_eval), "val_": (self.x_val, self.y_val)}
        row.update(self.moving_scores(sets))
        moving = self.mechanisms.moving()  # before the re-estimate: the moving statistics as training left them
        with self.precise():  # metrics, activations and diagnostics of the network as it is evaluated
            row.update(self.scores(sets))
            row["eval_s"] = time.perf_counter() - t
            t = time.perf_counter()
            self.record["stats"]["rows"] += self.probe.measure(epoch)
            row["probe_s"] = time.perf_counter() - t
            finite = all(math.isfinite(v) for v in (row.get("fit_loss", 0.0), row["train_loss"], row["val_loss"]))
            self.diagnose(epoch, finite)
            self.measure_mechanisms(epoch, moving, finite)
        self.record["history"].append(row)
        self.log(
            f"    epoch {epoch:>3}/{self.spec.epochs}  train loss {_fmt(row['train_loss'])} acc {_fmt(row['train_accuracy'], '.3f')}"
            f"  val loss {_fmt(row['val_loss'])} acc {_fmt(row['val_accuracy'], '.3f')}"
            + (f"  {row['epoch_s']:.1f}s ({row['samples_per_s']:,.0f} samples/s)" if epoch else "  (initialization)")
        )
        if not all(math.isfinite(v) for v in (row.get("fit_loss", 0.0), row["train_loss"], row["val_loss"])):
            self.record["status"], self.record["diverged_epoch"] = "diverged", epoch
            self.log(f"    diverged at epoch {epoch}: loss is not finite")
            return False
        return True

    def callbacks(self) -> list:
        """A step callback when step probes are asked for (fit engine only), else none: Keras skips batch
        hooks that no callback overrides, so there is no per-batch Python work otherwise."""
        if not self.spec.probe_every_steps:
            return []
        import keras

        measure = self

        class StepProbe(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
                if step % measure.spec.probe_every_steps == 0:
                    measure.measure_step(step)

        return [StepProbe()]
