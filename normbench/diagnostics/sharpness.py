"""``sharpness``: the loss Hessian on the probe batch, at every probe epoch.

All trainable parameters, inference mode, through Hessian-vector products by the backend's autodiff
(:mod:`normbench.diagnostics.autodiff`; compiled once per run on TensorFlow and JAX): its eigenvalue of largest
magnitude by power iteration (``hessian_top``; at most 20 steps, stopping once two estimates agree to 1e-3),
and its trace by Hutchinson's estimator over Rademacher vectors (``hessian_trace``), with its standard error
(``hessian_trace_se``) and the number of vectors (``hessian_trace_probes``: from 10, more until the error is within
5% of the trace, at most 50). Seeded, so the same model gives the same numbers. Recorded as layer None (the whole model). Reported in the ``gradients``
diagnostic's section.
"""

from __future__ import annotations

import weakref

import numpy as np

from . import autodiff
from .base import register
from .gradients import flow_report

SHARPNESS_ITERATIONS, SHARPNESS_TOL, SHARPNESS_PROBES = 20, 1e-3, 10
# Hutchinson probes are added, 10 at least and 50 at most, until the trace's standard error is within 5% of it
# (at 10 probes an earlier measurement on mlp8 found a 7-14% spread across probe seeds); where 50 do not reach
# that, the error recorded beside the trace says how far off it is.
TRACE_MAX_PROBES, TRACE_REL_SE = 50, 0.05
_HVP_CACHE = weakref.WeakKeyDictionary()  # model -> (probe batch, its HVP function)


def hessian_vector_product(model, x, y, loss_fn):
    """A function v -> H v for the Hessian of ``loss_fn(y, model(x))`` w.r.t. ``model.trainable_variables``
    (v and H v: lists of NumPy arrays shaped like the variables), on the model's backend."""
    return autodiff.for_backend("sharpness").hessian_vector_product(model, x, np.asarray(y), loss_fn)


def _dot(a, b) -> float:
    return float(sum(np.vdot(u, w) for u, w in zip(a, b)))


def power_top(hvp, shapes, rng: np.random.Generator, iterations: int = 20, tol: float = 0.0) -> float:
    """The Hessian's eigenvalue of largest magnitude by power iteration (at most ``iterations`` steps, stopping
    early once two estimates differ by less than ``tol`` relative)."""
    v = [rng.standard_normal(s).astype("float32") for s in shapes]
    norm = np.sqrt(_dot(v, v))
    v = [u / norm for u in v]
    top = 0.0
    for _ in range(iterations):
        hv = hvp(v)
        previous, top = top, _dot(v, hv)
        if tol and abs(top - previous) <= tol * abs(top):
            break
        norm = np.sqrt(_dot(hv, hv))
        if norm == 0:
            break
        v = [h / norm for h in hv]
    return top


def hutchinson_trace(hvp, shapes, rng: np.random.Generator, probes: int = 10, max_probes: int | None = None,
                     rel_se: float = 0.0) -> tuple[float, float, int]:
    """Hutchinson's trace estimate with Rademacher vectors z (the mean of z^T H z), its standard error (the
    estimates' sample sd / sqrt(n)) and n: ``probes`` vectors, then more, up to ``max_probes``, until the standard
    error is at most ``rel_se`` of the estimate's magnitude."""
    samples = []
    while True:
        z = [rng.choice([-1.0, 1.0], size=s).astype("float32") for s in shapes]
        samples.append(_dot(z, hvp(z)))
        n = len(samples)
        if n < max(probes, 2):
            continue
        mean, se = float(np.mean(samples)), float(np.std(samples, ddof=1) / np.sqrt(n))
        if n >= (max_probes or probes) or se <= rel_se * abs(mean):
            return mean, se, n


def hessian_top_and_trace(hvp, shapes, iterations: int = 20, probes: int = 10, seed: int = 0,
                          tol: float = 0.0) -> tuple[float, float]:
    """Power iteration for the eigenvalue of largest magnitude; Hutchinson's trace over ``probes`` vectors."""
    rng = np.random.default_rng(seed)
    top = power_top(hvp, shapes, rng, iterations, tol)
    return top, hutchinson_trace(hvp, shapes, rng, probes)[0]


@register("sharpness", report=flow_report, report_order=20)
def sharpness(model, context) -> list[tuple[int | None, str, float]]:
    """Loss-Hessian top eigenvalue (power iteration) and trace (Hutchinson) on the probe batch, by HVPs."""
    import keras

    cached = _HVP_CACHE.get(model)
    if cached is None or cached[0] is not context["x"]:  # traced once per run: the probe batch is fixed
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        cached = _HVP_CACHE[model] = (context["x"], hessian_vector_product(model, context["x"], context["y"], loss_fn))
    shapes, rng = [tuple(v.shape) for v in model.trainable_variables], np.random.default_rng(0)
    top = power_top(cached[1], shapes, rng, SHARPNESS_ITERATIONS, SHARPNESS_TOL)
    trace, se, n = hutchinson_trace(cached[1], shapes, rng, SHARPNESS_PROBES, TRACE_MAX_PROBES, TRACE_REL_SE)
    return [(None, "hessian_top", top), (None, "hessian_trace", trace), (None, "hessian_trace_se", se),
            (None, "hessian_trace_probes", float(n))]
