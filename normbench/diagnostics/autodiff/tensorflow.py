"""Loss gradients and Hessian-vector products on the TensorFlow backend (GradientTape)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def loss_gradients(model, x, y, loss_fn, kernels, offsets, shapes) -> list[np.ndarray]:
    offsets.values = [tf.zeros(s) for s in shapes]
    with tf.GradientTape() as tape:
        tape.watch(offsets.values)
        loss = loss_fn(y, model(x, training=False))
    return [np.asarray(g) for g in tape.gradient(loss, [k.value for k in kernels] + offsets.values)]


def hessian_vector_product(model, x, y, loss_fn):
    variables = model.trainable_variables
    tx, ty = tf.constant(x), tf.constant(y)

    @tf.function  # traced once per call of this function: eager double tapes cost 10x more
    def traced(vs):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = loss_fn(ty, model(tx, training=False))
            grads = inner.gradient(loss, [v.value for v in variables])
            dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vs)])
        return outer.gradient(dot, [v.value for v in variables])

    def hvp(vs):
        return [np.asarray(h) for h in traced([tf.constant(v, dtype=var.dtype) for v, var in zip(vs, variables)])]

    return hvp
