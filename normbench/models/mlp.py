"""Fully connected networks."""

from __future__ import annotations

from ..errors import ConfigError
from ..norms import LayerStack, NormStrategy
from ..registry import MODELS


def _create_mlp(input_shape, num_classes, strategy: NormStrategy, depth: int, width: int, activation: str, name: str):
    import keras

    if depth < 1 or width < 1:
        raise ConfigError(f"{name}: depth and width must be positive, got depth={depth}, width={width}")
    stack = LayerStack(strategy, activation)
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    for _ in range(depth):
        x = stack.dense(x, width)
    return stack.logits(inputs, x, num_classes, name=name)


@MODELS.register
def mlp(input_shape, num_classes, strategy, depth: int = 8, width: int = 256, activation: str = "relu"):
    """Fully connected net, `depth` hidden layers of `width` units (ReLU unless the strategy says)."""
    return _create_mlp(input_shape, num_classes, strategy, depth, width, activation, name=f"mlp{depth}")


@MODELS.register
def mlp8(input_shape, num_classes, strategy, width: int = 256):
    """Fully connected net, 8 hidden layers of 256 units."""
    return mlp(input_shape, num_classes, strategy, depth=8, width=width)


@MODELS.register
def mlp16(input_shape, num_classes, strategy, width: int = 256):
    """Fully connected net, 16 hidden layers of 256 units."""
    return mlp(input_shape, num_classes, strategy, depth=16, width=width)


@MODELS.register
def mlp32(input_shape, num_classes, strategy, width: int = 256):
    """Fully connected net, 32 hidden layers of 256 units."""
    return mlp(input_shape, num_classes, strategy, depth=32, width=width)


@MODELS.register
def bn_paper_mlp(input_shape, num_classes, strategy):
    """3 hidden layers of 100 sigmoid units: the MNIST net of the BN paper's Figure 1."""
    return _create_mlp(input_shape, num_classes, strategy, 3, 100, "sigmoid", name="bn_paper_mlp")


@MODELS.register
def dropout_paper_mlp(input_shape, num_classes, strategy):
    """784-1024-1024-2048-10 ReLU net of the dropout paper's MNIST max-norm results."""
    import keras

    stack = LayerStack(strategy, "relu")
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    for width in (1024, 1024, 2048):
        x = stack.dense(x, width)
    return stack.logits(inputs, x, num_classes, name="dropout_paper_mlp")
