"""``sharpness``: the loss Hessian on the probe batch, at every probe epoch.

All trainable parameters, inference mode, through Hessian-vector products by the backend's autodiff
(:mod:`normbench.diagnostics.autodiff`; compiled once per run on TensorFlow and JAX): its eigenvalue of largest
magnitude by power iteration (``hessian_top``; at most 20 steps, stopping once two estimates agree to 1e-3),
and its trace by Hutchinson's estimator over 10 Rademacher vectors (``hessian_trace``). Seeded, so the same
model gives the same numbers. Recorded as layer None (the whole model). Reported in the ``gradients``
diagnostic's section.
"""

from __future__ import annotations

import weakref

import numpy as np

from . import autodiff
from .base import register
from .gradients import flow_report

SHARPNESS_ITERATIONS, SHARPNESS_TOL, SHARPNESS_PROBES = 20, 1e-3, 10
_HVP_CACHE = weakref.WeakKeyDictionary()  # model -> (probe batch, its HVP function)


def hessian_vector_product(model, x, y, loss_fn):
    """A function v -> H v for the Hessian of ``loss_fn(y, model(x))`` w.r.t. ``model.trainable_variables``
    (v and H v: lists of NumPy arrays shaped like the variables), on the model's backend."""
    return autodiff.for_backend("sharpness").hessian_vector_product(model, x, np.asarray(y), loss_fn)


def hessian_top_and_trace(hvp, shapes, iterations: int = 20, probes: int = 10, seed: int = 0,
                          tol: float = 0.0) -> tuple[float, float]:
    """Power iteration for the eigenvalue of largest magnitude (at most ``iterations`` steps, stopping early
    once two estimates differ by less than ``tol`` relative); Hutchinson's trace with Rademacher vectors."""
    rng = np.random.default_rng(seed)

    def dot(a, b):
        return float(sum(np.vdot(u, w) for u, w in zip(a, b)))

    v = [rng.standard_normal(s).astype("float32") for s in shapes]
    norm = np.sqrt(dot(v, v))
    v = [u / norm for u in v]
    top = 0.0
    for _ in range(iterations):
        hv = hvp(v)
        previous, top = top, dot(v, hv)
        if tol and abs(top - previous) <= tol * abs(top):
            break
        norm = np.sqrt(dot(hv, hv))
        if norm == 0:
            break
        v = [h / norm for h in hv]
    trace = float(np.mean([dot(z, hvp(z)) for z in
                           ([rng.choice([-1.0, 1.0], size=s).astype("float32") for s in shapes] for _ in range(probes))]))
    return top, trace


@register("sharpness", report=flow_report, report_order=20)
def sharpness(model, context) -> list[tuple[int | None, str, float]]:
    """Loss-Hessian top eigenvalue (power iteration) and trace (Hutchinson) on the probe batch, by HVPs."""
    import keras

    cached = _HVP_CACHE.get(model)
    if cached is None or cached[0] is not context["x"]:  # traced once per run: the probe batch is fixed
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        cached = _HVP_CACHE[model] = (context["x"], hessian_vector_product(model, context["x"], context["y"], loss_fn))
    top, trace = hessian_top_and_trace(cached[1], [tuple(v.shape) for v in model.trainable_variables],
                                       iterations=SHARPNESS_ITERATIONS, probes=SHARPNESS_PROBES, tol=SHARPNESS_TOL)
    return [(None, "hessian_top", top), (None, "hessian_trace", trace)]
