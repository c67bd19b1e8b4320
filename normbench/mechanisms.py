"""What each normalization mechanism did during training: the record's ``mechanisms`` section.

A strategy's mechanism may never engage: a max-norm radius no unit reaches leaves the plain network, an adaptive
gradient clipping threshold no gradient exceeds leaves plain SGD, a DyT or Derf whose inputs never leave tanh's or
erf's linear range is a per-layer scale. :class:`Mechanisms` measures, at every epoch the runner measures (epoch 0
being initialization), tidy rows (epoch, layer, mechanism, quantity, value) with ``layer`` the Keras layer's name
(or ``all``, :data:`NETWORK`: the whole network), for each mechanism the model has:

- ``max_norm``, per layer whose kernel has a ``keras.constraints.MaxNorm`` (radius c, the strategy's ``max_norm``):
  ``at_radius``, the fraction of units whose incoming weight vector norm is at the radius (>= c (1 - 1e-3),
  :data:`AT_RADIUS`; Dense: over kernel axis 0, Conv2D: axes 0, 1, 2, the constraint's own axes) and
  ``norm_max_over_c``, the largest unit norm / c. Keras applies the constraint after each update, so at
  initialization a unit may be beyond the radius (``norm_max_over_c`` > 1);
- ``agc`` (a strategy with ``agc_clip``, :mod:`normbench.agc`): ``clipped``, the fraction of units (of every variable
  AGC clips, a vector being one unit) whose gradient norm exceeds lambda * max(||W_i||, eps), the test
  :func:`normbench.agc.adaptive_clip` applies; and, for the network, ``ratio_median``, the median over units of
  ||G_i|| / (lambda max(||W_i||, eps)) (above 1: clipped). **Measured on a probe batch**, not inside the training
  step: the gradient of the mean cross-entropy on one fixed training batch of the run's batch size (drawn from the
  seed, the same at every epoch), in inference mode (no dropout, batch statistics as evaluated: for the ``nf``
  strategy, which has neither, the function the step differentiates), with the backend's autodiff
  (:mod:`normbench.diagnostics.autodiff`);
- ``pointwise``, per DyT or Derf layer (:class:`normbench.layers.PointwiseNormalization`): its learned ``alpha``
  (and Derf's ``shift``), and ``squashed``, the fraction of its inputs on the probe batch (the activation probe's
  validation samples, inference mode) with |alpha x + s| >= 1, where tanh and erf are no longer near-linear (the
  network row: over every such layer's inputs; and the layers' mean ``alpha``);
- ``batch_norm``, per layer that keeps moving statistics, when the run re-estimates them (precise BN,
  :mod:`normbench.precise_bn`): how far Keras' moving statistics are from the re-estimated ones the evaluation uses,
  ``mean_gap`` = mean over channels of |moving mean - precise mean| / sqrt(precise variance + epsilon) and
  ``var_log_ratio`` = mean over channels of |log((moving variance + epsilon) / (precise variance + epsilon))|
  (mean-only batch norm, which keeps no variance: ``mean_abs_gap`` = mean |moving mean - precise mean|,
  unnormalized); the network row averages the layers. The accuracy gap is in the history already
  (``val_accuracy`` against ``val_accuracy_moving``).

A model without any of these (the ``none`` strategy) gets no rows. Nothing here changes the model: weights and
moving statistics are only read.
"""

from __future__ import annotations

import numpy as np

from .record import MECHANISM_COLUMNS as COLUMNS  # noqa: F401  (the section's columns, kept with the record's layout)

NETWORK = "all"  # the layer of a row about the whole network
AT_RADIUS = 1e-3  # a unit is at the max-norm radius c when its norm is >= c (1 - AT_RADIUS)
SQUASHED = 1.0  # |alpha x + s| from which a point-wise layer's tanh / erf counts as squashing
_SALT = 0x414743  # "AGC": the probe batch is its own stream, not the training order nor precise BN's batches


def max_norm_layers(model) -> list:
    """The layers whose kernel has a max-norm constraint."""
    import keras

    from .precise_bn import all_layers

    return [layer for layer in all_layers(model)
            if isinstance(getattr(layer, "kernel_constraint", None), keras.constraints.MaxNorm)]


def probe_batch(seed: int, n: int, batch_size: int) -> np.ndarray:
    """The training samples of the AGC probe: one batch of ``batch_size`` (all ``n`` if fewer), a fixed draw from
    the run's seed, the same at every epoch."""
    return np.sort(np.random.default_rng([int(seed), _SALT]).permutation(n)[: min(n, batch_size)])


class _Offsets:
    """No input offsets: what :mod:`normbench.diagnostics.autodiff` fills when asked for none."""

    values: list = []


class Mechanisms:
    """Measures the ``mechanisms`` rows of one run's model (see the module docstring).

    ``model``: the probed (base) model; ``agc_clip``: the strategy's AGC lambda (None: no AGC); ``x_probe``: the
    activation probe's batch (the point-wise layers' inputs); ``x_train``, ``y_train``, ``seed``, ``batch_size``:
    for AGC's probe batch; ``batch_norm``: whether the run re-estimates batch-norm statistics (no gap otherwise).
    """

    def __init__(self, model, *, agc_clip: float | None = None, x_probe=None, x_train=None, y_train=None,
                 seed: int = 0, batch_size: int = 128, batch_norm: bool = False):
        from .layers import PointwiseNormalization
        from .precise_bn import all_layers, moving_statistics_layers

        self.model = model
        self.max_norm = max_norm_layers(model)
        self.pointwise = [layer for layer in all_layers(model) if isinstance(layer, PointwiseNormalization)]
        self.bn = moving_statistics_layers(model) if batch_norm else []
        self.agc_clip = None if agc_clip is None else float(agc_clip)
        if self.agc_clip is not None:
            rows = probe_batch(seed, len(x_train), batch_size)
            self.agc_x, self.agc_y = x_train[rows], np.asarray(y_train[rows])
        self.x_probe = x_probe
        self._inputs = None  # the point-wise layers' inputs on the probe batch: a model made on first use

    def __bool__(self) -> bool:
        return bool(self.max_norm or self.pointwise or self.bn or self.agc_clip is not None)

    def moving(self) -> dict:
        """The moving statistics as training left them, per batch-norm layer: taken before the evaluation
        re-estimates them, for :meth:`measure`."""
        return {layer.name: _bn_values(layer) for layer in self.bn}

    def measure(self, epoch: int, moving: dict | None = None, finite: bool = True) -> list[list]:
        """The rows of ``epoch``. ``moving``: :meth:`moving`, taken before the re-estimate (the model now holds the
        re-estimated statistics); ``finite``: False when the run's losses are not (no gradients are taken then)."""
        rows = self.max_norm_rows() + self.pointwise_rows() + self.bn_rows(moving or {})
        if self.agc_clip is not None and finite:
            rows += self.agc_rows()
        return [[epoch, layer, mechanism, q, float(v)] for layer, mechanism, q, v in rows]

    def max_norm_rows(self) -> list[tuple]:
        import keras

        rows, norms_all = [], []
        for layer in self.max_norm:
            constraint = layer.kernel_constraint
            c = float(constraint.max_value)
            w = np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float64)
            axis = constraint.axis if isinstance(constraint.axis, int) else tuple(constraint.axis)
            norms = np.sqrt(np.sum(np.square(w), axis=axis)).ravel() / c
            rows += [(layer.name, "max_norm", "at_radius", float(np.mean(norms >= 1 - AT_RADIUS))),
                     (layer.name, "max_norm", "norm_max_over_c", float(norms.max()))]
            norms_all.append(norms)
        if norms_all:
            norms = np.concatenate(norms_all)
            rows += [(NETWORK, "max_norm", "at_radius", float(np.mean(norms >= 1 - AT_RADIUS))),
                     (NETWORK, "max_norm", "norm_max_over_c", float(norms.max()))]
        return rows

    def pointwise_rows(self) -> list[tuple]:
        import keras

        if not self.pointwise:
            return []
        rows, alphas, squashed, count = [], [], 0, 0
        inputs = self._pointwise_inputs()
        for layer, x in zip(self.pointwise, inputs):
            alpha = float(keras.ops.convert_to_numpy(layer.alpha))
            shift = float(keras.ops.convert_to_numpy(layer.shift)) if getattr(layer, "shift", None) is not None else 0.0
            rows.append((layer.name, "pointwise", "alpha", alpha))
            if layer.function == "erf":
                rows.append((layer.name, "pointwise", "shift", shift))
            alphas.append(alpha)
            if x is not None:
                z = np.abs(alpha * np.asarray(x, dtype=np.float64) + shift) >= SQUASHED
                rows.append((layer.name, "pointwise", "squashed", float(z.mean())))
                squashed, count = squashed + int(z.sum()), count + z.size
        rows.append((NETWORK, "pointwise", "alpha", float(np.mean(alphas))))
        if count:
            rows.append((NETWORK, "pointwise", "squashed", squashed / count))
        return rows

    def _pointwise_inputs(self) -> list:
        """Each point-wise layer's input on the probe batch (inference mode), or None for one that is not a node of
        the model's graph (a layer of a nested model) or without a probe batch."""
        import keras

        if self.x_probe is None:
            return [None] * len(self.pointwise)
        if self._inputs is None:
            tapped = []
            for layer in self.pointwise:
                try:
                    tapped.append(layer.input)
                except (AttributeError, ValueError):
                    tapped.append(None)
            self._inputs = (keras.Model(self.model.input, [t for t in tapped if t is not None]) if any(
                t is not None for t in tapped) else None, [t is not None for t in tapped])
        forward, present = self._inputs
        got = [] if forward is None else forward.predict_on_batch(self.x_probe)
        got = iter(got if isinstance(got, (list, tuple)) else [got])  # a one-output model returns the array itself
        return [next(got) if p else None for p in present]

    def bn_rows(self, moving: dict) -> list[tuple]:
        rows, per_quantity = [], {}
        for layer in self.bn:
            if layer.name not in moving:
                continue
            (m_mean, m_var), (p_mean, p_var) = moving[layer.name], _bn_values(layer)
            if p_var is not None and m_var is not None:
                eps = float(getattr(layer, "epsilon", 1e-3))
                values = {"mean_gap": float(np.mean(np.abs(m_mean - p_mean) / np.sqrt(p_var + eps))),
                          "var_log_ratio": float(np.mean(np.abs(np.log((m_var + eps) / (p_var + eps)))))}
            else:
                values = {"mean_abs_gap": float(np.mean(np.abs(m_mean - p_mean)))}
            for q, v in values.items():
                rows.append((layer.name, "batch_norm", q, v))
                per_quantity.setdefault(q, []).append(v)
        rows += [(NETWORK, "batch_norm", q, float(np.mean(v))) for q, v in per_quantity.items()]
        return rows

    def agc_rows(self) -> list[tuple]:
        import keras

        from . import agc  # imports Keras: not at module import (the CLI imports this before the backend's set-up)
        from .diagnostics import autodiff

        variables = [v for v in self.model.trainable_variables if agc.clipped_layer(v.path)]
        if not variables:
            return []
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        grads = autodiff.for_backend("AGC probe").loss_gradients(self.model, self.agc_x, self.agc_y, loss_fn,
                                                                   variables, _Offsets(), [])
        per_layer: dict[str, list[np.ndarray]] = {}
        for v, g in zip(variables, grads):
            w = keras.ops.convert_to_tensor(keras.ops.convert_to_numpy(v), dtype="float32")
            limit = keras.ops.convert_to_numpy(agc.clip_limits(w, self.agc_clip))
            norm = keras.ops.convert_to_numpy(agc.unit_norms(keras.ops.convert_to_tensor(g, dtype="float32"),
                                                             len(v.shape)))
            ratio = np.asarray(norm, dtype=np.float64).ravel() / np.asarray(limit, dtype=np.float64).ravel()
            per_layer.setdefault(v.path.split("/")[0], []).append(ratio)
        rows, ratios = [], []
        for name, parts in per_layer.items():
            r = np.concatenate(parts)
            rows.append((name, "agc", "clipped", float(np.mean(r > 1))))
            ratios.append(r)
        r = np.concatenate(ratios)
        rows += [(NETWORK, "agc", "clipped", float(np.mean(r > 1))), (NETWORK, "agc", "ratio_median", float(np.median(r)))]
        return rows


def _bn_values(layer) -> tuple[np.ndarray, np.ndarray | None]:
    """A batch-statistics layer's (moving mean, moving variance or None), as float64 NumPy arrays."""
    import keras

    mean = np.asarray(keras.ops.convert_to_numpy(layer.moving_mean), dtype=np.float64)
    var = getattr(layer, "moving_variance", None)
    return mean, None if var is None else np.asarray(keras.ops.convert_to_numpy(var), dtype=np.float64)
