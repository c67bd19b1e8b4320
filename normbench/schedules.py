"""The learning-rate schedule of a run spec: constant, step or cosine, with linear warm-up.

Written with ``keras.ops`` as a Keras ``LearningRateSchedule``, so it is evaluated inside the
compiled train step on every backend (and inside the scan engine's loop) from the optimizer's
step counter.
"""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="normbench")
class SpecSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = base * warm-up(step) * shape(step / total_steps).

    ``step``: multiplied by ``decay`` at each milestone fraction of training (He et al. 2016:
    0.1 at 32k and 48k of 64k iterations = milestones 0.5 and 0.75); ``cosine``: half a cosine
    from ``base`` to 0 (Loshchilov & Hutter 2017, without restarts); warm-up: linear from
    base/warmup_steps to base over the first ``warmup_steps``.
    """

    def __init__(self, base: float, total_steps: int, kind: str | None = None, milestones=(0.5, 0.75),
                 decay: float = 0.1, warmup_steps: int = 0):
        self.base, self.total_steps, self.kind = float(base), max(1, int(total_steps)), kind
        self.milestones, self.decay, self.warmup_steps = [float(m) for m in milestones], float(decay), int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        lr = ops.convert_to_tensor(self.base, "float32")
        if self.kind == "step":
            for m in self.milestones:
                lr = lr * ops.where(step >= m * self.total_steps, self.decay, 1.0)
        elif self.kind == "cosine":
            progress = ops.minimum(step / self.total_steps, 1.0)
            lr = lr * 0.5 * (1.0 + ops.cos(math.pi * progress))
        if self.warmup_steps > 0:
            lr = lr * ops.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return lr

    def get_config(self):
        return {"base": self.base, "total_steps": self.total_steps, "kind": self.kind, "milestones": self.milestones,
                "decay": self.decay, "warmup_steps": self.warmup_steps}


def learning_rate(spec, steps_per_epoch: int | None):
    """The optimizer's learning rate for ``spec``: a float, or a :class:`SpecSchedule` when it has one."""
    from .errors import ConfigError

    if not spec.lr_schedule and not spec.warmup_epochs:
        return spec.learning_rate
    if not steps_per_epoch:
        raise ConfigError("a learning-rate schedule needs the number of steps per epoch (the training split's size)")
    return SpecSchedule(spec.learning_rate, spec.epochs * steps_per_epoch, spec.lr_schedule, spec.lr_milestones,
                        spec.lr_decay, round(spec.warmup_epochs * steps_per_epoch))
