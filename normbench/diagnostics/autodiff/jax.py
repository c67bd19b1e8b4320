"""Loss gradients and Hessian-vector products on the JAX backend (``jax.grad`` of the model's stateless call)."""

from __future__ import annotations

import jax
import numpy as np


def _loss_of(model, x, y, loss_fn):
    """The loss as a function of the trainable and the non-trainable variables' values."""

    def loss_of(values, fixed):
        logits, _ = model.stateless_call(values, fixed, x, training=False)
        return loss_fn(y, logits)

    return loss_of


def loss_gradients(model, x, y, loss_fn, kernels, offsets, shapes) -> list[np.ndarray]:
    trainable = [v.value for v in model.trainable_variables]
    fixed = [v.value for v in model.non_trainable_variables]
    positions = {id(v): i for i, v in enumerate(model.trainable_variables)}
    loss_at = _loss_of(model, x, y, loss_fn)

    def loss_of(values, offset_values):
        offsets.values = offset_values
        return loss_at(values, fixed)

    g_vars, g_inputs = jax.grad(loss_of, argnums=(0, 1))(trainable, [jax.numpy.zeros(s) for s in shapes])
    return [np.asarray(g_vars[positions[id(k)]]) for k in kernels] + [np.asarray(g) for g in g_inputs]


def hessian_vector_product(model, x, y, loss_fn):
    variables = model.trainable_variables
    grad = jax.grad(_loss_of(model, x, y, loss_fn))
    traced = jax.jit(lambda tv, ntv, vs: jax.jvp(lambda t: grad(t, ntv), (tv,), (vs,))[1])  # compiled once

    def hvp(vs):
        tv, ntv = [v.value for v in variables], [v.value for v in model.non_trainable_variables]
        return [np.asarray(h) for h in traced(tv, ntv, [jax.numpy.asarray(v) for v in vs])]

    return hvp
