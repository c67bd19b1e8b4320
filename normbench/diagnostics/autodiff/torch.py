"""Loss gradients and Hessian-vector products on the torch backend (autograd)."""

from __future__ import annotations

import keras
import numpy as np
import torch


def loss_gradients(model, x, y, loss_fn, kernels, offsets, shapes) -> list[np.ndarray]:
    offsets.values = [keras.ops.zeros(s).requires_grad_() for s in shapes]
    loss = loss_fn(torch.as_tensor(y), model(x, training=False))
    return [g.detach().cpu().numpy() for g in torch.autograd.grad(loss, [k.value for k in kernels] + offsets.values)]


def hessian_vector_product(model, x, y, loss_fn):
    variables = model.trainable_variables

    def hvp(vs):
        params = [v.value for v in variables]
        loss = loss_fn(torch.as_tensor(y), model(x, training=False))
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * torch.as_tensor(v, dtype=g.dtype, device=g.device)).sum() for g, v in zip(grads, vs))
        return [h.detach().cpu().numpy() for h in torch.autograd.grad(dot, params)]

    return hvp
