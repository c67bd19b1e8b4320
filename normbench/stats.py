"""Per-layer activation statistics, pure NumPy.

``summarize`` turns one tapped tensor (batch, ..., units) into named numbers;
``saturation_mask`` says, per activation, which outputs count as dead or
saturated; ``kernel_norms`` gives the per-unit incoming weight norms that
max-norm bounds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PERCENTILES = (5, 15, 50, 85, 95)
MAX_VALUES = 262144  # larger taps (conv feature maps) are summarized on a fixed subset of rows
MAX_PERCENTILE_VALUES = 65536  # percentiles use a fixed subsample of at most this many values

SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
# SELU counts as saturated when its output is within 5% of its lower bound -lambda*alpha,
# i.e. its input is below ln(0.05) ~ -3.
SELU_SATURATED_BELOW = -SELU_LAMBDA * SELU_ALPHA * 0.95

# Written with operators only, so the same functions also run on backend tensors (normbench.device_stats).
SATURATION: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda a: a <= 0.0,  # dead: exactly zero output
    "sigmoid": lambda a: (a < 0.01) | (a > 0.99),
    "tanh": lambda a: abs(a) > 0.99,
    "selu": lambda a: a < SELU_SATURATED_BELOW,
}

_SUBSAMPLE_CACHE: dict[tuple[int, int], np.ndarray] = {}


def fixed_subset(n: int, k: int) -> np.ndarray:
    """``k`` sorted indices out of ``n``, the same every call (so epochs compare like with like)."""
    idx = _SUBSAMPLE_CACHE.get((n, k))
    if idx is None:
        idx = np.sort(np.random.default_rng(n).choice(n, size=k, replace=False))
        _SUBSAMPLE_CACHE[(n, k)] = idx
    return idx


def saturation_mask(activation: str, values: np.ndarray) -> np.ndarray | None:
    """Boolean mask of dead/saturated outputs for a known activation, else None."""
    fn = SATURATION.get(activation)
    return None if fn is None else fn(values)


def _percentile_sample(flat: np.ndarray) -> np.ndarray:
    n = flat.size
    return flat if n <= MAX_PERCENTILE_VALUES else flat[fixed_subset(n, MAX_PERCENTILE_VALUES)]


def summarize(values: np.ndarray, activation: str | None = None) -> dict[str, float]:
    """Mean, std, percentiles and (for an activation output) saturation of one tapped tensor.

    The last axis is the unit (or channel) axis. ``sat_frac`` is the fraction of all
    values that are saturated/dead; ``dead_units`` the fraction of units saturated for
    every probe value. A tap of more than ``MAX_VALUES`` values (a conv feature map) is
    summarized on a fixed random subset of its (sample, position) rows, all units kept.
    """
    v = np.asarray(values, dtype=np.float32)
    v = v.reshape(-1, v.shape[-1])
    if v.size > MAX_VALUES:
        v = v[fixed_subset(len(v), max(1, MAX_VALUES // v.shape[1]))]
    flat = v.reshape(-1)
    out = {
        "mean": float(flat.mean(dtype=np.float64)),
        "std": float(flat.std(dtype=np.float64)),
    }
    pct = np.percentile(_percentile_sample(flat), PERCENTILES)
    out.update({f"p{p:02d}": float(x) for p, x in zip(PERCENTILES, pct)})
    if activation is not None:
        mask = saturation_mask(activation, v)
        if mask is not None:
            out["sat_frac"] = float(mask.mean())
            out["dead_units"] = float(mask.all(axis=0).mean())
    return out


UNIT_PERCENTILES = (15, 50, 85)  # the BN paper's Figure 1 bands


def unit_summary(values: np.ndarray, unit: int = 0) -> dict[str, float]:
    """Percentiles of one fixed unit (or channel) over every probe sample and position: ``u0_p15`` ..."""
    v = np.asarray(values, dtype=np.float32)[..., unit].reshape(-1)
    return {f"u{unit}_p{p:02d}": float(x) for p, x in zip(UNIT_PERCENTILES, np.percentile(v, UNIT_PERCENTILES))}


def kernel_norms(kernel: np.ndarray) -> dict[str, float]:
    """Max and mean L2 norm of each unit's incoming weights (all axes but the last)."""
    k = np.asarray(kernel, dtype=np.float64)
    norms = np.sqrt((k.reshape(-1, k.shape[-1]) ** 2).sum(axis=0))
    return {"norm_max": float(norms.max()), "norm_mean": float(norms.mean())}
