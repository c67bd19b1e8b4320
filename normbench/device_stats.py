"""The probe's activation statistics computed where the activations are (the backend's ops, no host copy).

:class:`TapSummary` is a Keras layer that turns one tapped tensor into the numbers
:func:`normbench.stats.summarize` (and, for a pre-activation, :func:`normbench.stats.unit_summary`)
computes in NumPy: the same quantities, the same fixed subsets of rows and values, the same linear
percentile interpolation, and the same saturation thresholds. The probe appends one per tap to its
model, so a single compiled ``predict_on_batch`` returns a few numbers per tap instead of every
activation (which NumPy then had to sort on the host: most of the probe's time before).

Differences from the NumPy reference are round-off only: means and variances accumulate in float32
here (float64 in NumPy), which tests/test_probe.py bounds by recomputing every quantity with NumPy.
A tap holding a NaN reports NaN for its mean, deviation and percentiles, as NumPy does.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .stats import (
    MAX_PERCENTILE_VALUES,
    MAX_VALUES,
    PERCENTILES,
    SATURATION,
    UNIT_PERCENTILES,
    fixed_subset,
)


def summary_names(activation: str | None = None, pre: bool = False) -> list[str]:
    """The quantities :class:`TapSummary` returns, in its output order (``summarize``'s keys)."""
    names = ["mean", "std", *(f"p{p:02d}" for p in PERCENTILES)]
    if activation in SATURATION:
        names += ["sat_frac", "dead_units"]
    if pre:
        names += [f"u0_p{p:02d}" for p in UNIT_PERCENTILES]
    return names


class TapSummary(keras.layers.Layer):
    """Summary statistics of a tapped tensor as a (1, k) float32 tensor; see :func:`summary_names` for k."""

    def __init__(self, batch: int, activation: str | None = None, pre: bool = False, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.batch, self.activation_name, self.pre = int(batch), activation, pre
        self.names = summary_names(activation, pre)

    def call(self, x):
        x = ops.cast(x, "float32")
        units = int(x.shape[-1])
        # the probe batch is fixed, so every size is static when this is traced (whatever the batch axis says)
        n_rows = self.batch * int(np.prod([int(d) for d in x.shape[1:-1]]))
        v = v_all = ops.reshape(x, (n_rows, units))
        if n_rows * units > MAX_VALUES:  # a conv feature map: summarize's fixed subset of (sample, position) rows
            rows = fixed_subset(n_rows, max(1, MAX_VALUES // units))
            v = ops.take(v, ops.convert_to_tensor(rows.astype("int32")), axis=0)
        flat = ops.reshape(v, (-1,))
        size = int(flat.shape[0])
        sample = flat if size <= MAX_PERCENTILE_VALUES else ops.take(
            flat, ops.convert_to_tensor(fixed_subset(size, MAX_PERCENTILE_VALUES).astype("int32")))
        mean = ops.mean(flat)
        std = ops.sqrt(ops.mean(ops.square(flat - mean)))
        q = ops.convert_to_tensor(np.asarray(PERCENTILES, dtype="float32") / 100.0)
        out = [ops.reshape(mean, (1,)), ops.reshape(std, (1,)), _nan_if_any(flat, ops.quantile(sample, q))]
        if self.activation_name in SATURATION:  # the host's own thresholds, applied to the backend tensor
            mask = ops.cast(SATURATION[self.activation_name](v), "float32")
            out += [ops.reshape(ops.mean(mask), (1,)), ops.reshape(ops.mean(ops.min(mask, axis=0)), (1,))]
        if self.pre:
            unit = v_all[:, 0]  # unit_summary: one unit over every sample and position, no subset
            qu = ops.convert_to_tensor(np.asarray(UNIT_PERCENTILES, dtype="float32") / 100.0)
            out.append(_nan_if_any(unit, ops.quantile(unit, qu)))
        return ops.expand_dims(ops.concatenate(out, axis=0), 0)

    def compute_output_shape(self, input_shape):
        return (1, len(self.names))


def _nan_if_any(values, quantiles):
    """NumPy's percentiles of data holding a NaN are NaN; sorting backends would interpolate around it."""
    has_nan = ops.any(ops.isnan(values))
    return ops.where(has_nan, ops.full_like(quantiles, float("nan")), quantiles)
