"""Adaptive gradient clipping (AGC; Brock et al. 2021b, "High-Performance Large-Scale Image Recognition
Without Normalization", the NFNets), as an optimizer-side hook.

Unit-wise: a parameter's gradient G is split into the units of the layer (the output units of a Dense
kernel, each over its fan-in; the filters of a Conv2D kernel, each over rows, columns and input
channels; a vector or scalar parameter is one unit). For each unit i with weights W_i, when
||G_i|| > lambda * max(||W_i||, eps), G_i is rescaled to norm lambda * max(||W_i||, eps); otherwise it
is left alone. The paper's defaults: eps = 1e-3 and no clipping of the final linear layer (here the
``logits`` layer). The clipped gradient then goes through the optimizer as usual (momentum, schedule).

:func:`with_adaptive_clipping` turns an optimizer class into one that clips inside ``apply``, the
one call every Keras backend and normbench's scan engine (through ``stateless_apply``) goes through,
so the clipping is inside the compiled step everywhere.
"""

from __future__ import annotations

import functools

from keras import ops

AGC_EPSILON = 1e-3
UNCLIPPED_LAYERS = ("logits",)  # the classifier, which the NFNets do not clip


def unit_axes(ndim: int) -> tuple[int, ...] | None:
    """The axes a unit's norm is taken over: None (the whole tensor) for a scalar or vector, the
    fan-in axes (all but the last) for a kernel."""
    return None if ndim <= 1 else tuple(range(ndim - 1))


def unit_norms(x, ndim: int):
    axes = unit_axes(ndim)
    return ops.sqrt(ops.sum(ops.square(x), axis=axes, keepdims=axes is not None))


def clip_limits(weight, clip: float, eps: float = AGC_EPSILON):
    """Each unit's gradient-norm limit, ``clip * max(||weight unit||, eps)`` (shaped as :func:`unit_norms`'s):
    a unit whose gradient norm exceeds it is clipped."""
    return clip * ops.maximum(unit_norms(weight, len(weight.shape)), eps)


def adaptive_clip(gradient, weight, clip: float, eps: float = AGC_EPSILON):
    """``gradient`` with each unit's norm capped at ``clip * max(||weight unit||, eps)``."""
    ndim = len(weight.shape)
    weight = ops.cast(weight, gradient.dtype)
    limit = clip_limits(weight, clip, eps)
    norm = unit_norms(gradient, ndim)
    scale = ops.where(norm > limit, limit / ops.maximum(norm, 1e-12), 1.0)
    return gradient * ops.cast(scale, gradient.dtype)


def clipped_layer(path: str) -> bool:
    """True for a variable AGC clips: every trainable variable but the classifier's."""
    return path.split("/")[0] not in UNCLIPPED_LAYERS


class AdaptiveClipping:
    """Mixin for a Keras optimizer class: AGC on the gradients, then the class's own update."""

    def __init__(self, *args, agc_clip: float, agc_eps: float = AGC_EPSILON, **kwargs):
        super().__init__(*args, **kwargs)
        self.agc_clip, self.agc_eps = float(agc_clip), float(agc_eps)

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None and not self.built:
            return super().apply(grads, trainable_variables)  # Keras' own error
        variables = self._trainable_variables if trainable_variables is None else list(trainable_variables)
        grads = [g if g is None or not clipped_layer(v.path) else adaptive_clip(g, v, self.agc_clip, self.agc_eps)
                 for g, v in zip(grads, variables)]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "agc_clip": self.agc_clip, "agc_eps": self.agc_eps}


@functools.cache
def with_adaptive_clipping(optimizer_class: type) -> type:
    """``optimizer_class`` with AGC: its constructor takes ``agc_clip`` (lambda) and ``agc_eps`` too."""
    return type(f"AGC{optimizer_class.__name__}", (AdaptiveClipping, optimizer_class), {})
