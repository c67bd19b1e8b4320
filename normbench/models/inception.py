"""A small inception-style CNN for CIFAR-10: parallel 1x1, 3x3, 5x5 and pooling branches, concatenated.

Every convolution, in every branch, is a hidden block of :class:`normbench.norms.LayerStack`, so
every branch is normalized by the strategy. The concatenation of a module is ``hNN_concat`` (NN:
the module's last block), which the probe taps as ``concat``.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..norms import LayerStack
from ..registry import MODELS

# Filters per module: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection (GoogLeNet's layout, small)
MODULES = (
    ((16, 16, 24, 4, 8, 8), (24, 16, 32, 4, 12, 12)),
    ((32, 24, 48, 8, 16, 16), (48, 32, 64, 8, 24, 24)),
    ((64, 48, 96, 12, 32, 32),),
)


def _module(stack: LayerStack, x, filters, width: float, index: int):
    import keras

    f1, f3r, f3, f5r, f5, fp = (max(1, round(f * width)) for f in filters)
    b1 = stack.conv(x, f1, kernel_size=1)
    b3 = stack.conv(stack.conv(x, f3r, kernel_size=1), f3, kernel_size=3)
    b5 = stack.conv(stack.conv(x, f5r, kernel_size=1), f5, kernel_size=5)
    pooled = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"m{index}_pool")(x)
    bp = stack.conv(pooled, fp, kernel_size=1)
    return keras.layers.Concatenate(name=f"h{stack.count - 1:02d}_concat")([b1, b3, b5, bp])


@MODELS.register
def inception(input_shape, num_classes, strategy, width: float = 1):
    """Small inception CNN: a 3x3 stem, 5 inception modules (1x1, 3x3, 5x5, pool branches) in 3 stages, GAP."""
    import keras

    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ConfigError(f"inception: width must be a positive multiplier of the filters, got {width!r}")
    if min(input_shape[0], input_shape[1]) < 4:
        raise ConfigError("inception: images must be at least 4x4 for its two poolings")
    stack = LayerStack(strategy, "relu")
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = stack.conv(inputs, max(1, round(32 * width)))
    index = 0
    for stage, modules in enumerate(MODULES):
        for filters in modules:
            x = _module(stack, x, filters, width, index)
            index += 1
        if stage < len(MODULES) - 1:
            x = keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return stack.logits(inputs, x, num_classes, name="inception")
