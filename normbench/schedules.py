"""The schedules of a run spec: the learning rate (constant, step, cosine or exponential, with linear
warm-up) and SGD's momentum (constant, or a linear ramp).

Written with ``keras.ops`` as a Keras ``LearningRateSchedule``, so it is evaluated inside the
compiled train step on every backend (and inside the scan engine's loop) from the optimizer's
step counter.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from .agc import with_adaptive_clipping
from .errors import ConfigError


@keras.saving.register_keras_serializable(package="normbench")
class SpecSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = base * warm-up(step) * shape(step / total_steps).

    ``step``: multiplied by ``decay`` at each milestone fraction of training (He et al. 2016:
    0.1 at 32k and 48k of 64k iterations = milestones 0.5 and 0.75); ``cosine``: half a cosine
    from ``base`` to 0 (Loshchilov & Hutter 2017, without restarts); ``exponential``: multiplied by
    ``decay`` per epoch, continuously (``base * decay ** (step / steps_per_epoch)``; the dropout
    papers' per-epoch decay); warm-up: linear from base/warmup_steps to base over the first
    ``warmup_steps``.
    """

    def __init__(self, base: float, total_steps: int, kind: str | None = None, milestones=(0.5, 0.75),
                 decay: float = 0.1, warmup_steps: int = 0, steps_per_epoch: int = 1):
        self.base, self.total_steps, self.kind = float(base), max(1, int(total_steps)), kind
        self.milestones, self.decay, self.warmup_steps = [float(m) for m in milestones], float(decay), int(warmup_steps)
        self.steps_per_epoch = max(1, int(steps_per_epoch))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr = ops.convert_to_tensor(self.base, "float32")
        if self.kind == "step":
            for m in self.milestones:
                lr = lr * ops.where(step >= m * self.total_steps, self.decay, 1.0)
        elif self.kind == "cosine":
            progress = ops.minimum(step / self.total_steps, 1.0)
            lr = lr * 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.kind == "exponential":
            lr = lr * ops.exp(step / self.steps_per_epoch * math.log(self.decay))
        if self.warmup_steps > 0:
            lr = lr * ops.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return lr

    def get_config(self):
        return {"base": self.base, "total_steps": self.total_steps, "kind": self.kind, "milestones": self.milestones,
                "decay": self.decay, "warmup_steps": self.warmup_steps, "steps_per_epoch": self.steps_per_epoch}


def learning_rate(spec, steps_per_epoch: int | None):
    """The optimizer's learning rate for ``spec``: a float, or a :class:`SpecSchedule` when it has one."""
    if not spec.lr_schedule and not spec.warmup_epochs:
        return spec.learning_rate
    if not steps_per_epoch:
        raise ConfigError("a learning-rate schedule needs the number of steps per epoch (the training split's size)")
    return SpecSchedule(spec.learning_rate, spec.epochs * steps_per_epoch, spec.lr_schedule, spec.lr_milestones,
                        spec.lr_decay, round(spec.warmup_epochs * steps_per_epoch), steps_per_epoch)


def momentum_at(step, start: float, end: float, ramp_steps: int):
    """SGD momentum at optimizer step ``step`` (0-based): linear from ``start`` to ``end`` over
    ``ramp_steps`` steps, then ``end`` (Srivastava et al. 2014's ramp). ``step`` may be a tensor."""
    step = ops.cast(step, "float32")
    return start + (end - start) * ops.minimum(1.0, step / max(1, int(ramp_steps)))


@keras.saving.register_keras_serializable(package="normbench")
class RampedSGD(keras.optimizers.SGD):
    """Keras' SGD with classical momentum, whose momentum follows :func:`momentum_at` of the
    optimizer's own step counter, inside the compiled step (so on every backend and in the scan
    engine). The update is Keras' non-Nesterov rule: v = mu v - lr g; w = w + v."""

    def __init__(self, momentum_start: float, ramp_steps: int, momentum: float, **kwargs):
        # a momentum of exactly 0 would make Keras skip the velocity slots; the ramp always needs them
        super().__init__(momentum=max(float(momentum), 1e-12), **kwargs)
        self.final_momentum, self.momentum_start, self.ramp_steps = float(momentum), float(momentum_start), int(ramp_steps)

    def current_momentum(self):
        return momentum_at(self.iterations, self.momentum_start, self.final_momentum, self.ramp_steps)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        mu = ops.cast(self.current_momentum(), variable.dtype)
        velocity = self.momentums[self._get_variable_index(variable)]
        self.assign(velocity, ops.subtract(ops.multiply(velocity, mu), ops.multiply(gradient, learning_rate)))
        self.assign_add(variable, velocity)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.final_momentum, momentum_start=self.momentum_start, ramp_steps=self.ramp_steps)
        return config


def optimizer(spec, steps_per_epoch: int | None, agc_clip: float | None = None):
    """The spec's Keras optimizer, with its learning-rate schedule and (SGD) momentum ramp, and with adaptive
    gradient clipping at ``agc_clip`` when given (a strategy's, :mod:`normbench.agc`)."""
    lr = learning_rate(spec, steps_per_epoch)
    if spec.optimizer == "sgd":
        if spec.momentum_start is None:
            cls, kwargs = keras.optimizers.SGD, dict(learning_rate=lr, momentum=spec.momentum)
        else:
            if not steps_per_epoch:
                raise ConfigError("a momentum ramp needs the number of steps per epoch (the training split's size)")
            cls, kwargs = RampedSGD, dict(momentum_start=spec.momentum_start, momentum=spec.momentum,
                                          ramp_steps=round(spec.momentum_ramp_epochs * steps_per_epoch),
                                          learning_rate=lr)
    elif spec.optimizer == "adam":
        cls, kwargs = keras.optimizers.Adam, dict(learning_rate=lr)
    else:
        cls, kwargs = keras.optimizers.RMSprop, dict(learning_rate=lr)
    if agc_clip is not None:
        return with_adaptive_clipping(cls)(agc_clip=agc_clip, **kwargs)
    return cls(**kwargs)
