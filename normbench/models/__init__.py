"""Model builders, registered in ``MODELS``.

A builder takes ``(input_shape, num_classes, strategy, **params)`` and returns a
Keras model whose hidden blocks come from :class:`normbench.norms.LayerStack`.
Variants (``mlp8``, ``vgg16``) are thin presets over one private function.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ConfigError
from ..norms import NormStrategy
from ..registry import MODELS, check_arguments
from . import cnn, inception, mlp, residual  # noqa: F401  (registers the builders)


def check_model_params(name: str, params: dict) -> Any:
    """The registered builder ``name``, after checking ``params`` against its signature (no Keras needed)."""
    builder = MODELS.get(name)
    accepted = [p for p in inspect.signature(builder).parameters if p not in ("input_shape", "num_classes", "strategy")]
    bad = sorted(set(params) - set(accepted))
    if bad:
        raise ConfigError(f"model {name!r} takes no parameter(s) {bad}; it takes: {accepted or 'none'}")
    check_arguments(f"model {name!r}", builder, params, positive=True)  # sizes: depth, width, filters, ...
    return builder


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, strategy: NormStrategy, **params: Any):
    """Build the registered model ``name``; unknown parameters name the valid ones."""
    builder = check_model_params(name, params)
    return builder(tuple(input_shape), int(num_classes), strategy, **params)


def describe(name: str) -> str:
    """First line of a builder's docstring."""
    doc = inspect.getdoc(MODELS.get(name)) or ""
    return doc.splitlines()[0] if doc else ""


_TRUNCATED_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2], as Keras' VarianceScaling uses


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = 1
    for d in shape[:-2]:
        receptive *= d
    return shape[-2] * receptive, shape[-1] * receptive


def portable_kernel(initializer_config: dict, shape: tuple[int, ...], rng) -> "np.ndarray":
    """A kernel drawn with NumPy from a Keras VarianceScaling-family initializer's distribution."""
    import numpy as np

    cfg = initializer_config
    scale, mode, dist = float(cfg["scale"]), cfg["mode"], cfg["distribution"]
    fan_in, fan_out = _fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    variance = scale / max(1.0, fan)
    if dist == "uniform":
        limit = np.sqrt(3.0 * variance)
        return rng.uniform(-limit, limit, size=shape).astype("float32")
    if dist == "untruncated_normal":
        return (rng.standard_normal(shape) * np.sqrt(variance)).astype("float32")
    # truncated normal on [-2, 2] standard deviations, rescaled to the target variance (redraw outside)
    z = rng.standard_normal(shape)
    bad = np.abs(z) > 2.0
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2.0
    return (z * np.sqrt(variance) / _TRUNCATED_STD).astype("float32")


def portable_initialization(model, seed: int) -> int:
    """Redraw every Dense/Conv2D kernel with NumPy from ``seed`` and the layer's position.

    Keras' initializers draw from each backend's own random generator, so one seed gave other
    initial weights on TensorFlow and JAX. With this, a run's initial weights are a function of
    its spec alone: the same distribution (the layer's own initializer: He, LeCun or Glorot,
    normal, truncated normal or uniform), the same numbers on every backend. Biases and
    normalization parameters are constants already. Returns how many kernels were redrawn;
    a kernel whose initializer is not of the VarianceScaling family keeps Keras' draw.
    """
    import numpy as np

    count = 0
    from ..layers import KernelReparametrization

    for index, layer in enumerate(model.layers):
        wrapper = layer if isinstance(layer, KernelReparametrization) else None
        layer = wrapper.layer if wrapper else layer  # a reparametrized kernel: redraw its free parameter v
        init = getattr(layer, "kernel_initializer", None)
        kernel = getattr(layer, "kernel", None)
        if init is None or kernel is None:
            continue
        if not all(hasattr(init, a) for a in ("scale", "mode", "distribution")):  # VarianceScaling and its presets
            continue
        cfg = {"scale": init.scale, "mode": init.mode, "distribution": init.distribution}
        rng = np.random.default_rng([int(seed), index, 0x1417])
        kernel.assign(portable_kernel(cfg, tuple(int(d) for d in kernel.shape), rng))
        if wrapper:
            wrapper.reset()
        count += 1
    return count
