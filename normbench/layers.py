"""Layers Keras does not ship, written once with ``keras.ops`` so they run on every backend.

- :class:`KernelReparametrization` wraps a ``Dense`` or ``Conv2D`` and computes its kernel
  from a free parameter ``v``: weight normalization (Salimans & Kingma 2016), w = g * v / ||v||
  per output unit, or spectral normalization (Miyato et al. 2018), w = v / sigma(v) with sigma
  estimated by one power iteration per training step. The gradient flows through the
  normalization in both (Keras' own ``SpectralNormalization`` instead writes v / sigma back into
  the kernel before each training step, so its gradient skips the sigma term: a projection, not
  the paper's reparametrization).
  Two more modes standardize each unit's kernel over its fan-in: ``"standardize"``, w = (v -
  mean) / sqrt(var + 1e-5) (weight standardization, Qiao et al. 2019), and
  ``"scaled_standardize"``, w = g * (v - mean) / sqrt(N var + 1e-4) with N the fan-in and a
  learned gain g per unit starting at 1 (Scaled WS of the NF-ResNets, Brock et al. 2021a).
- :class:`PointwiseNormalization` replaces a normalization layer by an element-wise squashing
  function: DyT, gamma * tanh(alpha x) + beta (Zhu et al. 2025), or Derf, gamma * erf(alpha x + s)
  + beta (Chen et al. 2025), with alpha (and s) one learned scalar per layer.
- :class:`ScaledActivation` is an activation times a constant gain gamma; :func:`activation_gain`
  gives the NF nets' gamma, 1 / std(g(z)) for z ~ N(0, 1).
- :class:`MeanOnlyBatchNormalization` subtracts the batch mean (moving mean at inference) and
  adds a learned shift, without dividing by the standard deviation (Salimans & Kingma 2016, §4).
- :class:`SampleRMSNormalization` is RMS norm (Zhang & Sennrich 2019) over every non-batch axis of
  a sample (all units of a Dense output; positions and channels of a feature map), with a gain
  per channel: layer norm over the same axes without the centering and the shift.
- :func:`group_count` is group norm's rule for the number of groups of a layer.
- :class:`ShortcutA` is the parameter-free shortcut of He et al. 2016's CIFAR ResNets (option A):
  subsample by the stride, zero-pad the new channels.
- :func:`data_dependent_init` is weight normalization's initialization: on one batch, set each
  unit's g and bias so that its pre-activation has mean 0 and variance 1.
"""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

LINEAR_KINDS = ("Dense", "Conv2D")


def linear_kind(layer) -> str | None:
    """``"Dense"`` or ``"Conv2D"`` for a linear layer, wrapped or not; None for anything else."""
    inner = layer.layer if isinstance(layer, KernelReparametrization) else layer
    kind = type(inner).__name__
    return kind if kind in LINEAR_KINDS else None


def _unit_norms(matrix):
    return ops.sqrt(ops.sum(ops.square(matrix), axis=0) + 1e-12)


@keras.saving.register_keras_serializable(package="normbench")
class KernelReparametrization(keras.layers.Wrapper):
    """A Dense or Conv2D whose kernel is ``g * v / ||v||`` (``mode="weight"``) or ``v / sigma(v)``
    (``mode="spectral"``).

    ``v`` is the wrapped layer's own kernel variable (so its initializer and constraint apply to
    it); ``kernel`` is the effective kernel, which is what the probe measures. Weight norm's ``g``
    starts at ||v|| per unit (the wrapped layer computes what it would unwrapped) until
    :func:`data_dependent_init` or :meth:`reset` sets it.
    """

    MODES = ("weight", "spectral", "standardize", "scaled_standardize")
    STANDARDIZE_EPSILON = {"standardize": 1e-5, "scaled_standardize": 1e-4}

    def __init__(self, layer, mode: str = "weight", **kwargs):
        super().__init__(layer, **kwargs)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if type(layer).__name__ not in LINEAR_KINDS:
            raise ValueError(f"KernelReparametrization wraps Dense or Conv2D, got {type(layer).__name__}")
        self.mode = mode

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        units = int(self.layer.kernel.shape[-1])
        fan_in = int(np.prod(self.layer.kernel.shape[:-1]))
        if self.mode in self.STANDARDIZE_EPSILON and fan_in < 2:
            raise ValueError(f"{self.name}: {self.mode} needs a fan-in of at least 2 (a single weight standardizes "
                             f"to 0), got {fan_in}")
        if self.mode in ("weight", "scaled_standardize"):
            self.g = self.add_weight(name="g", shape=(units,), initializer="ones", trainable=True)
        elif self.mode == "spectral":
            self.u = self.add_weight(name="u", shape=(units,), initializer="ones", trainable=False)
        self.built = True
        self.reset()

    def reset(self) -> None:
        """Start from the kernel v holds now: g = ||v|| per unit, or u = v's top right singular vector (the
        standardizing modes: g = 1, set at creation)."""
        if self.mode in self.STANDARDIZE_EPSILON:
            return
        v = np.asarray(ops.convert_to_numpy(self.layer.kernel), dtype=np.float64)
        m = v.reshape(-1, v.shape[-1])
        if self.mode == "weight":
            self.g.assign(np.sqrt((m**2).sum(axis=0)).astype("float32"))
            return
        u = np.ones(m.shape[1]) / np.sqrt(m.shape[1])
        for _ in range(30):
            u = m.T @ (m @ u)
            u /= np.linalg.norm(u) + 1e-12
        self.u.assign(u.astype("float32"))

    def _matrix(self):
        v = self.layer.kernel
        return v, ops.reshape(v, (-1, v.shape[-1]))

    def effective_kernel(self, training: bool = False):
        v, m = self._matrix()
        if self.mode == "weight":
            return v * (self.g / _unit_norms(m))
        if self.mode in self.STANDARDIZE_EPSILON:
            mean = ops.mean(m, axis=0)
            var = ops.mean(ops.square(m - mean), axis=0)
            eps = self.STANDARDIZE_EPSILON[self.mode]
            if self.mode == "standardize":
                return (v - mean) * ops.rsqrt(var + eps)
            return (v - mean) * (self.g * ops.rsqrt(m.shape[0] * var + eps))
        u = ops.stop_gradient(self.u)
        if training:  # one power-iteration step per training step, as the paper does
            left = ops.matmul(m, u)
            left = left / (ops.norm(left) + 1e-12)
            u = ops.stop_gradient(ops.matmul(ops.transpose(m), left))
            u = u / (ops.norm(u) + 1e-12)
            self.u.assign(u)
        sigma = ops.norm(ops.matmul(m, u))
        return v / (sigma + 1e-12)

    @property
    def kernel(self):
        return self.effective_kernel(training=False)

    def call(self, inputs, training=False):
        w = self.effective_kernel(training=bool(training))
        layer = self.layer
        if isinstance(layer, keras.layers.Dense):
            out = ops.matmul(inputs, ops.cast(w, inputs.dtype))
        else:
            out = layer.convolution_op(inputs, ops.cast(w, inputs.dtype))
        if layer.use_bias:
            out = out + ops.cast(layer.bias, out.dtype)
        return out

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="normbench")
class MeanOnlyBatchNormalization(keras.layers.Layer):
    """x - mean over the batch (and positions), + beta; the moving mean is used at inference."""

    def __init__(self, momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.momentum = float(momentum)

    def build(self, input_shape):
        units = (int(input_shape[-1]),)
        self.beta = self.add_weight(name="beta", shape=units, initializer="zeros", trainable=True)
        self.moving_mean = self.add_weight(name="moving_mean", shape=units, initializer="zeros", trainable=False)
        self.built = True

    def call(self, inputs, training=False):
        axes = list(range(len(inputs.shape) - 1))
        if training:
            mean = ops.mean(ops.cast(inputs, "float32"), axis=axes)
            self.moving_mean.assign(self.momentum * self.moving_mean + (1.0 - self.momentum) * mean)
        else:
            mean = self.moving_mean
        return inputs - ops.cast(mean, inputs.dtype) + ops.cast(self.beta, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}


POINTWISE_FUNCTIONS = {"tanh": ops.tanh, "erf": ops.erf}


@keras.saving.register_keras_serializable(package="normbench")
class PointwiseNormalization(keras.layers.Layer):
    """A normalization layer's element-wise replacement: y = gamma * f(alpha * x + s) + beta.

    ``function="tanh"``: DyT (Zhu et al. 2025, "Transformers without Normalization"), no shift s;
    ``function="erf"``: Derf (Chen et al. 2025, arXiv 2512.10938), with a learned scalar shift s
    starting at 0. alpha is one learned scalar per layer starting at ``alpha_init`` (DyT's 0.5 for
    non-LLM models); gamma (starting at ``gamma_initializer``, "zeros" for a residual branch that
    starts as the identity) and beta (starting at 0) are per channel, like a norm layer's. No
    statistic is taken over anything: the output of a sample does not depend on any other value.
    Computed in float32 under a float16/bfloat16 policy.
    """

    def __init__(self, function: str = "tanh", alpha_init: float = 0.5, gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        if function not in POINTWISE_FUNCTIONS:
            raise ValueError(f"function must be one of {sorted(POINTWISE_FUNCTIONS)}, got {function!r}")
        self.function, self.alpha_init = function, float(alpha_init)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel axis needs a defined size, got input shape {input_shape}")
        self.alpha = self.add_weight(name="alpha", shape=(), initializer=keras.initializers.Constant(self.alpha_init),
                                     trainable=True, autocast=False)
        if self.function == "erf":
            self.shift = self.add_weight(name="shift", shape=(), initializer="zeros", trainable=True, autocast=False)
        self.gamma = self.add_weight(name="gamma", shape=(int(channels),), initializer=self.gamma_initializer,
                                     trainable=True, autocast=False)
        self.beta = self.add_weight(name="beta", shape=(int(channels),), initializer="zeros", trainable=True,
                                    autocast=False)
        self.built = True

    def call(self, inputs):
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        x = ops.cast(inputs, "float32") if dtype in ("float16", "bfloat16") else inputs
        z = ops.cast(self.alpha, x.dtype) * x
        if self.function == "erf":
            z = z + ops.cast(self.shift, x.dtype)
        y = POINTWISE_FUNCTIONS[self.function](z) * ops.cast(self.gamma, x.dtype) + ops.cast(self.beta, x.dtype)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "function": self.function, "alpha_init": self.alpha_init,
                "gamma_initializer": keras.initializers.serialize(self.gamma_initializer)}


def activation_gain(activation: str) -> float:
    """The NF nets' gamma of an activation g: 1 / std(g(z)) for z ~ N(0, 1) (Brock et al. 2021a), so that
    gamma * g maps a unit Gaussian to unit variance. ReLU: sqrt(2 / (1 - 1/pi)) = 1.7139; any other Keras
    activation by 200-point Gauss-Hermite quadrature (in float64, on the activation's Keras definition)."""
    if activation == "relu":
        return float(np.sqrt(2.0 / (1.0 - 1.0 / np.pi)))
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    weights = weights / weights.sum()
    values = np.asarray(ops.convert_to_numpy(keras.activations.get(activation)(ops.convert_to_tensor(nodes))),
                        dtype=np.float64)
    mean = float(weights @ values)
    std = float(np.sqrt(weights @ (values - mean) ** 2))
    if not std > 0:
        raise ValueError(f"activation {activation!r} is constant on a unit Gaussian: no gain makes its variance 1")
    return 1.0 / std


@keras.saving.register_keras_serializable(package="normbench")
class ScaledActivation(keras.layers.Activation):
    """``gain * activation(x)``: the NF nets' scaled nonlinearity (Brock et al. 2021a). Its config keeps
    the activation's name, so the probe measures saturation as for the plain activation."""

    def __init__(self, activation, gain: float = 1.0, **kwargs):
        super().__init__(activation, **kwargs)
        self.gain = float(gain)

    def call(self, inputs):
        return super().call(inputs) * ops.cast(self.gain, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "gain": self.gain}


@keras.saving.register_keras_serializable(package="normbench")
class ShortcutA(keras.layers.Layer):
    """He et al. 2016 option A: keep every ``stride``-th position and zero-pad to ``filters`` channels."""

    def __init__(self, filters: int, stride: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.stride = int(filters), int(stride)

    def call(self, inputs):
        x = inputs[:, :: self.stride, :: self.stride, :]
        extra = self.filters - int(inputs.shape[-1])
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        return (b, None if h is None else -(-h // self.stride), None if w is None else -(-w // self.stride), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride}


NORM_EPSILON = 1e-5
"""The epsilon of layer, group and RMS norm, added to the variance (the mean square for RMS) inside
the square root: the group-norm paper's code (Wu & He 2018, Figure 3) and PyTorch's LayerNorm and
GroupNorm use 1e-5. One value for the three kinds, so layer and RMS norm differ only in centering.
(Batch norm keeps Keras' 1e-3.)"""

MIN_GROUP_CHANNELS = 4
"""Group norm's default minimum of channels per group (``NormStrategy.min_group_channels``)."""


def group_count(channels: int, groups: int = 32, min_group_channels: int = MIN_GROUP_CHANNELS) -> int:
    """Group norm's number of groups for a layer of ``channels`` channels (units of a Dense layer).

    The largest divisor g of ``channels`` with g <= ``groups`` and ``channels / g >=
    min_group_channels``: the group-norm paper's 32 groups (Wu & He 2018) where the layer has at
    least 32 * min_group_channels channels, otherwise groups of at least ``min_group_channels``
    channels, so that a group is never one channel (instance norm on a feature map; a constant on
    a Dense layer, whose group holds the sample's units only). Where no g >= 2 qualifies (fewer
    than 2 * ``min_group_channels`` channels, e.g. any layer with fewer than ``min_group_channels``,
    or a prime number of channels) the layer gets one group: layer norm over that layer. With the
    defaults (32, 4): 16, 32, 64, 128 and 256 channels get 4, 8, 16, 32 and 32 groups; 48 get 12,
    10 get 2, 6 and 3 get 1.
    """
    for name, value in (("channels", channels), ("groups", groups), ("min_group_channels", min_group_channels)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"group_count: {name} must be a positive integer, got {value!r}")
    for g in range(min(groups, channels // min_group_channels), 1, -1):
        if channels % g == 0:
            return g
    return 1


@keras.saving.register_keras_serializable(package="normbench")
class SampleRMSNormalization(keras.layers.Layer):
    """RMS norm over every non-batch axis: y = gamma * x / sqrt(mean(x^2) + epsilon), gamma per channel.

    The mean square is over all the sample's units (every position and channel of a feature map),
    the axes layer norm uses here, with the same epsilon (:data:`NORM_EPSILON`), so that the two
    differ only in centering (and layer norm's shift; RMS norm has none: Zhang & Sennrich 2019).
    Statistics are computed in float32 under a float16/bfloat16 policy. ``gamma_initializer``
    ("zeros" for a residual branch that starts as the identity).
    """

    def __init__(self, epsilon: float = NORM_EPSILON, gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{self.name}: the channel axis needs a defined size, got input shape {input_shape}")
        self.gamma = self.add_weight(name="gamma", shape=(int(channels),), initializer=self.gamma_initializer,
                                     trainable=True, autocast=False)
        self.built = True

    def call(self, inputs):
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        x = ops.cast(inputs, "float32") if dtype in ("float16", "bfloat16") else inputs
        axes = list(range(1, len(x.shape)))
        mean_square = ops.mean(ops.square(x), axis=axes, keepdims=True)
        y = x * ops.rsqrt(mean_square + self.epsilon) * ops.cast(self.gamma, x.dtype)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon,
                "gamma_initializer": keras.initializers.serialize(self.gamma_initializer)}


def data_dependent_init(model, x) -> int:
    """Weight norm's data-dependent initialization (Salimans & Kingma 2016, §3) on the batch ``x``.

    Layer by layer in depth order, with g = 1 and bias 0 the unit's pre-activation is
    t = v.x / ||v||; then g = 1 / std(t) and bias = -mean(t) / std(t), so that on ``x`` every
    unit's pre-activation has mean 0 and variance 1 (a unit without a bias gets the scale only).
    Later layers see the already initialized earlier ones. Returns how many layers were set.
    """
    count = 0
    for layer in model.layers:
        if not isinstance(layer, KernelReparametrization) or layer.mode != "weight":
            continue
        units = int(layer.g.shape[0])
        layer.g.assign(np.ones(units, dtype="float32"))
        if layer.layer.use_bias:
            layer.layer.bias.assign(np.zeros(units, dtype="float32"))
        t = keras.Model(model.input, layer.output)(x, training=False)
        t = np.asarray(ops.convert_to_numpy(t), dtype=np.float64).reshape(-1, units)
        mean, std = t.mean(axis=0), t.std(axis=0) + 1e-8
        layer.g.assign((1.0 / std).astype("float32"))
        if layer.layer.use_bias:
            layer.layer.bias.assign((-mean / std).astype("float32"))
        count += 1
    return count


@keras.saving.register_keras_serializable(package="normbench")
class CropFlip(keras.layers.Layer):
    """Training-time augmentation of He et al. 2016's CIFAR recipe, on the device with ``keras.ops``.

    In training: zero-pad ``pad`` pixels on each side, take a random crop of the original size
    (an independent offset per image), flip it left-right with probability 1/2. At inference:
    the identity. The randomness comes from a seeded Keras ``SeedGenerator`` (the run's seed), so
    a run is repeatable on one backend; the draws differ between backends.
    """

    def __init__(self, pad: int = 4, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.pad, self.seed = int(pad), int(seed)
        self.generator = keras.random.SeedGenerator(self.seed)

    def call(self, inputs, training=False):
        if not training:
            return inputs
        p = self.pad
        b, h, w, c = ops.shape(inputs)[0], inputs.shape[1], inputs.shape[2], inputs.shape[3]
        padded = ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]])
        dy = keras.random.randint((b, 1), 0, 2 * p + 1, seed=self.generator)
        dx = keras.random.randint((b, 1), 0, 2 * p + 1, seed=self.generator)
        rows = ops.reshape(dy + ops.arange(h)[None, :], (b, h, 1, 1))
        padded = ops.take_along_axis(padded, ops.broadcast_to(rows, (b, h, w + 2 * p, c)), axis=1)
        cols = ops.reshape(dx + ops.arange(w)[None, :], (b, 1, w, 1))
        cropped = ops.take_along_axis(padded, ops.broadcast_to(cols, (b, h, w, c)), axis=2)
        flip = keras.random.uniform((b, 1, 1, 1), seed=self.generator) < 0.5
        return ops.where(flip, ops.flip(cropped, axis=2), cropped)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "pad": self.pad, "seed": self.seed}


def with_augmentation(model, augment: str | None, seed: int):
    """``model`` behind the augmentation layer (a new model sharing its layers), or ``model`` itself.

    The runner trains and evaluates the returned model; the probe and the layer descriptions use
    ``model``, whose layers are the same objects (augmentation is the identity at inference).
    """
    if not augment:
        return model
    inputs = keras.Input(shape=model.input_shape[1:], name="raw_inputs")
    outputs = model(CropFlip(4, seed, name="augment")(inputs))
    return keras.Model(inputs, outputs, name=f"{model.name}_augmented")


def apply_weight_decay(model, weight_decay: float) -> int:
    """L2 (weight_decay / 2) * ||W||^2 on every Dense and Conv2D kernel (v for a reparametrized one), in the loss.

    Added to the loss, the penalty's gradient weight_decay * W goes through momentum, as in He et
    al.'s and most papers' SGD (Keras' optimizer ``weight_decay`` is decoupled instead). With a
    scale-invariant layer (any kernel followed by batch, layer or group norm) it does not regularize
    the function; it shrinks ||W|| and so raises the effective learning rate (van Laarhoven 2017).
    Returns how many kernels it was set on.
    """
    if not weight_decay:
        return 0
    count = 0
    for layer in model.layers:
        if linear_kind(layer) is None:
            continue
        inner = layer.layer if isinstance(layer, KernelReparametrization) else layer
        inner.kernel.regularizer = keras.regularizers.L2(weight_decay / 2.0)
        count += 1
    return count
