"""Convolutional networks."""

from __future__ import annotations

from ..errors import ConfigError
from ..norms import LayerStack, NormStrategy
from ..registry import MODELS


@MODELS.register
def convnet(input_shape, num_classes, strategy: NormStrategy, filters: tuple = (32, 64), dense: int = 256):
    """LeNet-like: conv5x5-pool-conv5x5-pool-dense, 3 hidden blocks."""
    import keras

    stack = LayerStack(strategy, "relu")
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = inputs
    for i, f in enumerate(filters):
        x = stack.conv(x, int(f), kernel_size=5)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = stack.dense(x, dense)
    return stack.logits(inputs, x, num_classes, name="convnet")


def _stage_sizes(depth: int, stages: int) -> list[int]:
    base, extra = divmod(depth, stages)
    return [base + (1 if s < extra else 0) for s in range(stages)]


def _create_vgg(input_shape, num_classes, strategy: NormStrategy, depth: int, base_filters: int, width: float,
                name: str):
    import keras

    stages = 4
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ConfigError(f"{name}: width must be a positive multiplier of the filters, got {width!r}")
    if not isinstance(base_filters, int) or base_filters < 1:
        raise ConfigError(f"{name}: base_filters must be a positive integer, got {base_filters!r}")
    if depth < stages:
        raise ConfigError(f"{name}: depth must be at least {stages} (one conv layer per stage), got {depth}")
    if min(input_shape[0], input_shape[1]) < 2**stages:
        raise ConfigError(f"{name}: images must be at least {2**stages}x{2**stages} for {stages} poolings")
    stack = LayerStack(strategy, "relu")
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = inputs
    for s, n in enumerate(_stage_sizes(depth, stages)):
        for _ in range(n):
            x = stack.conv(x, max(1, round(base_filters * width)) * 2**s)
        x = keras.layers.MaxPooling2D(2, name=f"pool{s}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return stack.logits(inputs, x, num_classes, name=name)


@MODELS.register
def vgg(input_shape, num_classes, strategy, depth: int = 8, base_filters: int = 16, width: float = 1):
    """Plain VGG-style stack: `depth` 3x3 conv layers in 4 stages (filters x1, x2, x4, x8), pooling between.

    ``width`` multiplies every layer's filters: 4 gives the published VGG's widths, 64-512
    (the default, 16-128, is a quarter of them and a sixteenth of the compute)."""
    return _create_vgg(input_shape, num_classes, strategy, depth, base_filters, width, name=f"vgg{depth}")


@MODELS.register
def vgg8(input_shape, num_classes, strategy, base_filters: int = 16, width: float = 1):
    """VGG-style stack of 8 3x3 conv layers (16-128 filters; `width` = 4: 64-512)."""
    return vgg(input_shape, num_classes, strategy, depth=8, base_filters=base_filters, width=width)


@MODELS.register
def vgg16(input_shape, num_classes, strategy, base_filters: int = 16, width: float = 1):
    """VGG-style stack of 16 3x3 conv layers (16-128 filters; `width` = 4: 64-512, the published widths)."""
    return vgg(input_shape, num_classes, strategy, depth=16, base_filters=base_filters, width=width)
