"""Precise batch-norm statistics: re-estimate the population statistics before evaluating.

Keras' batch norm keeps moving averages with momentum 0.99: after the few hundred steps of a
CPU-sized run many of them are still near their initial (0, 1), and an inference-mode
evaluation scores a network that was never trained (resnet20/BN after 237 steps: test accuracy
0.17 with the moving averages, 0.40 with re-estimated statistics, 0.40 in training mode).
pycls and Detectron2 therefore recompute the statistics before every evaluation ("precise BN").

:class:`PreciseBN` does that for every layer that keeps moving statistics (Keras'
``BatchNormalization`` and normbench's ``MeanOnlyBatchNormalization``): with the weights frozen
it runs the network in training mode over a fixed set of training batches (the batch size the
run trained with, so each layer sees inputs normalized as in training) and sets each layer's
statistics to the equal-weight average of the batch means and batch variances (as pycls does).
Dropout is off during the re-estimate, and every other state the forward pass could touch
(dropout seeds, spectral norm's power-iteration vector) is restored afterwards.

:class:`MovingStatistics` snapshots and restores the moving statistics, so a measurement can
evaluate with re-estimated statistics and leave training exactly as it was.
"""

from __future__ import annotations

import numpy as np

# 16 batches (2,048 images at batch size 128): the standard error of each re-estimated mean is
# std/sqrt(2048) = 0.022 std and of each variance about sqrt(2/2048) = 3%, well below the
# batch-to-batch noise the network saw in training; pycls and Detectron2 use 8,192 images or 200
# batches for ImageNet-sized nets, which would cost more than an epoch of the CPU suites.
DEFAULT_BATCHES = 16
_SALT = 0x50424E  # "PBN": the re-estimate's batches are their own stream, not the training order


def moving_statistics_layers(model) -> list:
    """Every layer of ``model`` (nested models included) that keeps moving statistics for inference."""
    from .layers import MeanOnlyBatchNormalization
    import keras

    kinds = (keras.layers.BatchNormalization, MeanOnlyBatchNormalization)
    return [layer for layer in all_layers(model) if isinstance(layer, kinds)]


def _stat_variables(layer) -> list:
    return [v for v in (getattr(layer, "moving_mean", None), getattr(layer, "moving_variance", None)) if v is not None]


class MovingStatistics:
    """The moving statistics of a model's batch-statistics layers, saved now and put back by :meth:`restore`."""

    def __init__(self, model):
        self.variables = [v for layer in moving_statistics_layers(model) for v in _stat_variables(layer)]
        self.values = [np.array(v.numpy()) for v in self.variables]

    def __bool__(self) -> bool:
        return bool(self.variables)

    def restore(self) -> None:
        for v, value in zip(self.variables, self.values):
            v.assign(value)


def sample_indices(seed: int, n: int, batch_size: int, batches: int = DEFAULT_BATCHES) -> np.ndarray:
    """The training samples of the re-estimate: ``batches`` batches (fewer if the split is smaller), a fixed
    draw from the run's seed, the same at every epoch."""
    count = min(n, batches * batch_size)
    return np.random.default_rng([int(seed), _SALT]).permutation(n)[:count]


class PreciseBN:
    """Re-estimates the statistics of every batch-statistics layer of ``model`` (a no-op without one).

    The training-mode forward pass is one compiled function, built once (Keras' ``predict_on_batch`` of a
    wrapper that calls the model with ``training=True``, dropout off and momentum 0 inside the call, so every
    backend traces it that way): each batch leaves its own statistics in the moving variables, which are read
    after the batch and averaged with equal weight.
    """

    def __init__(self, model):
        import keras

        self.model, self.layers = model, moving_statistics_layers(model)
        self.variables = [v for layer in self.layers for v in _stat_variables(layer)]
        tracked = {id(v) for v in self.variables}
        self.others = [v for v in model.non_trainable_variables if id(v) not in tracked]
        self.dropouts = [layer for layer in all_layers(model) if isinstance(
            layer, (keras.layers.Dropout, keras.layers.AlphaDropout, keras.layers.GaussianDropout))]
        self._forward = None

    def __bool__(self) -> bool:
        return bool(self.layers)

    def _training_forward(self):
        import keras

        owner = self

        class TrainingModeForward(keras.layers.Layer):
            def __init__(self, inner, **kwargs):
                super().__init__(**kwargs)
                # tracked as a sub-layer, so that its variables are the wrapper's: on JAX a compiled function only
                # reads and writes back the variables of the model it belongs to (untracked ones are constants)
                self.inner = inner

            def call(self, x):
                # dropout off; momentum 0: the moving variables receive this batch's statistics
                changes = [(d, "rate") for d in owner.dropouts] + [(b, "momentum") for b in owner.layers]
                saved = [getattr(layer, name) for layer, name in changes]
                try:
                    for layer, name in changes:
                        setattr(layer, name, 0.0)
                    return self.inner(x, training=True)
                finally:
                    for (layer, name), value in zip(changes, saved):
                        setattr(layer, name, value)

        inputs = keras.Input(shape=self.model.input_shape[1:])
        return keras.Model(inputs, TrainingModeForward(self.model)(inputs))

    def reestimate(self, x: np.ndarray, batch_size: int) -> int:
        """Set the statistics from the batches of ``x`` (in order, ``batch_size`` each; a last partial batch is
        dropped unless it is the only one). Returns the number of batches used (0 without such layers)."""
        if not self.layers:
            return 0
        if self._forward is None:
            self._forward = self._training_forward()
        saved = [np.array(v.numpy()) for v in self.others]
        n_batches = max(1, len(x) // batch_size)
        sums = [np.zeros(v.shape, dtype=np.float64) for v in self.variables]
        try:
            for i in range(n_batches):
                self._forward.predict_on_batch(x[i * batch_size : (i + 1) * batch_size])
                for total, v in zip(sums, self.variables):
                    total += np.asarray(v.numpy(), dtype=np.float64)
        finally:
            for v, value in zip(self.others, saved):
                v.assign(value)
        for total, v in zip(sums, self.variables):
            v.assign((total / n_batches).astype(v.dtype))
        return n_batches


def all_layers(model) -> list:
    """Every layer of ``model``, in order: nested models' layers and a wrapper's inner layer included."""
    out, stack = [], list(model.layers)
    while stack:
        layer = stack.pop(0)
        out.append(layer)
        inner = list(getattr(layer, "layers", []) or [])
        if getattr(layer, "layer", None) is not None:  # keras.layers.Wrapper (KernelReparametrization)
            inner.append(layer.layer)
        stack[:0] = inner
    return out
