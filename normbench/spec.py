"""The run contract: a RunSpec in, a record out. Written once; one line per member."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "rmsprop")
INPUT_SCALINGS = ("standardize", "unit", "standardize_feature")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
AUGMENTATIONS = (None, "crop_flip")
LR_SCHEDULES = (None, "step", "cosine", "exponential")
IDENTITY = ("model", "strategy", "dataset", "seed")
FLOAT_FIELDS = ("learning_rate", "momentum", "weight_decay", "lr_decay", "warmup_epochs", "momentum_start",
                "momentum_ramp_epochs")


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run (and so its run id)."""

    model: str  # registered model builder
    strategy: str  # registered normalization strategy
    dataset: str  # registered dataset
    seed: int = 0  # keras.utils.set_random_seed: init, shuffling, dropout
    epochs: int = 1  # passes over the training split
    batch_size: int = 128  # mini-batch size
    optimizer: str = "sgd"  # sgd | adam | rmsprop
    learning_rate: float = 0.01  # optimizer step size
    momentum: float = 0.9  # SGD momentum (0 = plain SGD); ignored by other optimizers
    limit: int | None = None  # class-balanced cap on training samples (None = all)
    eval_limit: int | None = None  # class-balanced cap on validation and test samples each
    val_size: int = 5000  # samples held out of the training set for validation
    probe_size: int = 256  # fixed validation samples probed for activation statistics
    train_eval_size: int = 5000  # fixed training samples evaluated in inference mode every epoch
    model_params: dict = field(default_factory=dict)  # extra builder arguments, e.g. {"width": 784}
    strategy_params: dict = field(default_factory=dict)  # strategy arguments, e.g. {"c": 2.0}
    precision: str = "float32"  # Keras dtype policy; mixed precision changes results, so it is part of the id
    probe_every_steps: int | None = None  # also probe stats, validation and test metrics every N optimizer steps
    augment: str | None = None  # None, or "crop_flip": 4-pixel zero padding, random crop, random horizontal flip
    weight_decay: float = 0.0  # L2 penalty (weight_decay / 2) * ||W||^2 on every kernel, in the loss
    lr_schedule: str | None = None  # None (constant), "step", "cosine" or "exponential", evaluated every step
    lr_milestones: list = field(default_factory=lambda: [0.5, 0.75])  # "step": fractions of training ...
    lr_decay: float = 0.1  # ... at which the rate is multiplied by lr_decay; "exponential": the factor per epoch
    warmup_epochs: float = 0.0  # linear warm-up of the rate from 0 over this many epochs
    diagnostics: list = field(default_factory=list)  # registered diagnostics measured at every probe epoch
    momentum_start: float | None = None  # SGD only: momentum ramps linearly from this to `momentum` ...
    momentum_ramp_epochs: float = 0.0  # ... over this many epochs, then stays (Srivastava et al. 2014)
    input_scaling: str = "standardize"  # every strategy's inputs: "standardize" (per channel, training-split
    # statistics), "unit" (pixels / 255) or "standardize_feature" (per pixel and channel, the SNN paper's code)
    precise_bn_batches: int = 16  # training batches that re-estimate batch-norm statistics before every
    # evaluation (precise BN, normbench.precise_bn); 0 evaluates with Keras' moving averages

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ConfigError:
            return ConfigError(f"run spec: {name} must be {expected}, got {getattr(self, name)!r}")

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_real(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        for name in ("model", "strategy", "dataset"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise bad(name, "a registered name (a non-empty string)")
        if not is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise bad("seed", "an integer in [0, 2**32)")
        for name in FLOAT_FIELDS:  # 1 and 1.0 are the same setting: one run id (a frozen dataclass: set it in place)
            value = getattr(self, name)
            if is_int(value):
                object.__setattr__(self, name, float(value))
        for name in ("epochs", "batch_size", "val_size", "probe_size", "train_eval_size", "precise_bn_batches"):
            value = getattr(self, name)
            zero_ok = name in ("epochs", "precise_bn_batches")
            if not is_int(value) or not (0 if zero_ok else 1) <= value < 2**31:
                raise bad(name, "an integer in [0, 2**31)" if zero_ok else "a positive integer < 2**31")
        if self.probe_every_steps is not None and (not is_int(self.probe_every_steps)
                                                   or not 1 <= self.probe_every_steps < 2**31):
            raise bad("probe_every_steps", "a positive integer or absent")
        for name in ("limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or not 10 <= value < 2**31):
                raise bad(name, "an integer in [10, 2**31) (at least one per class) or absent")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"one of {OPTIMIZERS}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"one of {PRECISIONS}")
        if not is_real(self.learning_rate) or not self.learning_rate > 0:
            raise bad("learning_rate", "a finite number > 0 (a number, not a string)")
        if not is_real(self.momentum) or not 0 <= self.momentum < 1:
            raise bad("momentum", "a number in [0, 1)")
        if self.input_scaling not in INPUT_SCALINGS:
            raise bad("input_scaling", f"one of {INPUT_SCALINGS}")
        if self.augment not in AUGMENTATIONS:
            raise bad("augment", f"one of {AUGMENTATIONS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise bad("lr_schedule", f"one of {LR_SCHEDULES}")
        if not is_real(self.weight_decay) or self.weight_decay < 0:
            raise bad("weight_decay", "a number >= 0")
        if not is_real(self.warmup_epochs) or self.warmup_epochs < 0:
            raise bad("warmup_epochs", "a number >= 0")
        if self.momentum_start is not None and (not is_real(self.momentum_start)
                                                or not 0 <= self.momentum_start < 1):
            raise bad("momentum_start", "a number in [0, 1) or absent")
        if not is_real(self.momentum_ramp_epochs) or self.momentum_ramp_epochs < 0:
            raise bad("momentum_ramp_epochs", "a number >= 0")
        if (self.momentum_start is None) != (self.momentum_ramp_epochs == 0):
            raise ConfigError("run spec: momentum_start and momentum_ramp_epochs go together (a ramp from "
                              f"momentum_start to momentum over momentum_ramp_epochs), got momentum_start="
                              f"{self.momentum_start!r}, momentum_ramp_epochs={self.momentum_ramp_epochs!r}")
        if self.momentum_start is not None and self.optimizer != "sgd":
            raise ConfigError(f"run spec: a momentum ramp (momentum_start) needs optimizer \"sgd\", got "
                              f"{self.optimizer!r}")
        if not is_real(self.lr_decay) or not 0 < self.lr_decay <= 1:
            raise bad("lr_decay", "a number in (0, 1]")
        if (not isinstance(self.lr_milestones, list) or not all(is_real(m) and 0 < m < 1 for m in self.lr_milestones)
                or self.lr_milestones != sorted(self.lr_milestones)):
            raise bad("lr_milestones", "an increasing list of fractions of training in (0, 1), e.g. [0.5, 0.75]")
        if not isinstance(self.diagnostics, list) or not all(isinstance(d, str) and d for d in self.diagnostics) \
                or len(set(self.diagnostics)) != len(self.diagnostics):
            raise bad("diagnostics", 'a list of distinct registered diagnostic names, e.g. ["spectra"]')
        for name in ("model_params", "strategy_params"):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise bad(name, "a table of named parameters, e.g. {width = 64}")
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise bad(name, "plain data (numbers, strings, booleans, lists; finite)") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ConfigError(f"unknown run spec field(s) {unknown}; valid fields: {sorted(fields)}")
        return cls(**d)

    def canonical(self) -> dict[str, Any]:
        """The fields that identify the run: model, strategy, dataset, seed, and every other field
        that differs from its default. A field added later with a default keeps old run ids valid."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if f.name in IDENTITY or value != default:
                out[f.name] = value
        return out

    @property
    def run_id(self) -> str:
        """Hash of the canonical spec: the same spec always gets the same id."""
        canonical = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.model}/{self.strategy}/seed{self.seed}"

    def with_(self, **changes: Any) -> "RunSpec":
        return dataclasses.replace(self, **changes)


def definition_hash(specs) -> str:
    """Hash of a grid's run ids: two grids with the same hash train the same runs."""
    return hashlib.sha256("\n".join(sorted(s.run_id for s in specs)).encode()).hexdigest()[:16]
