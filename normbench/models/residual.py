"""Residual networks: He et al. 2016's CIFAR ResNets and a residual MLP family.

Every block comes from :class:`normbench.norms.LayerStack`, so every strategy applies; a block
that closes a residual branch is given its shortcut, and the strategy's placement decides
whether the normalization sits inside the branch ("pre") or after the addition ("post").
"""

from __future__ import annotations

from ..errors import ConfigError
from ..norms import LayerStack, NormStrategy
from ..registry import MODELS

SHORTCUTS = ("A", "B")


def _check_zero_init(name: str, zero_init_residual) -> bool:
    if not isinstance(zero_init_residual, bool):
        raise ConfigError(f"{name}: zero_init_residual must be true or false, got {zero_init_residual!r}")
    return zero_init_residual


def _create_resnet(input_shape, num_classes, strategy: NormStrategy, depth: int, base_filters: int, shortcut: str,
                   zero_init_residual: bool, name: str, residual: bool = True):
    import keras

    from ..layers import ShortcutA

    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"{name}: depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth!r}")
    if shortcut not in SHORTCUTS:
        raise ConfigError(f"{name}: shortcut must be 'A' (zero-padded identity) or 'B' (1x1 projection), got {shortcut!r}")
    if not isinstance(base_filters, int) or base_filters < 1:
        raise ConfigError(f"{name}: base_filters must be a positive integer, got {base_filters!r}")
    zero = _check_zero_init(name, zero_init_residual)
    if not isinstance(residual, bool):
        raise ConfigError(f"{name}: residual must be true or false, got {residual!r}")
    if zero and not residual:
        raise ConfigError(f"{name}: zero_init_residual needs residual = true (a plain net's zero layer blocks the signal)")
    n = (depth - 2) // 6
    stack = LayerStack(strategy, "relu", residual=residual)
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = stack.conv(inputs, base_filters)
    for stage in range(3):
        filters = base_filters * 2**stage
        for block in range(n):
            strides = 2 if stage > 0 and block == 0 else 1
            transition = residual and (strides != 1 or int(x.shape[-1]) != filters)
            x, skip = stack.open_branch(x, transition) if residual else (x, None)
            if transition:
                index = stack.count + 1  # the block whose addition this shortcut joins
                if shortcut == "A":
                    skip = ShortcutA(filters, strides, name=f"h{index:02d}_shortcut")(skip)
                else:
                    skip = stack.projection(skip, filters, strides, index)
            y = stack.conv(x, filters, strides=strides)
            x = stack.conv(y, filters, shortcut=skip, zero_init=zero)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return stack.logits(inputs, x, num_classes, name=name)


@MODELS.register
def resnet(input_shape, num_classes, strategy, depth: int = 20, base_filters: int = 16, shortcut: str = "A",
           zero_init_residual: bool = False, residual: bool = True):
    """CIFAR ResNet (He et al. 2016): conv, 3 stages of (depth-2)/6 basic blocks (16/32/64 filters), GAP.

    ``residual = false`` drops the shortcuts: the paper's "plain" network of the same depth."""
    return _create_resnet(input_shape, num_classes, strategy, depth, base_filters, shortcut, zero_init_residual,
                          name=f"{'resnet' if residual else 'plain'}{depth}", residual=residual)


@MODELS.register
def plain20(input_shape, num_classes, strategy, base_filters: int = 16):
    """ResNet-20 without its shortcuts (He et al.'s plain-20): 19 conv layers, 16-64 filters."""
    return resnet(input_shape, num_classes, strategy, 20, base_filters, residual=False)


@MODELS.register
def resnet20(input_shape, num_classes, strategy, base_filters: int = 16, shortcut: str = "A",
             zero_init_residual: bool = False):
    """ResNet-20 for CIFAR: 19 conv layers in 9 basic blocks, 16-64 filters, option-A shortcuts."""
    return resnet(input_shape, num_classes, strategy, 20, base_filters, shortcut, zero_init_residual)


@MODELS.register
def resnet32(input_shape, num_classes, strategy, base_filters: int = 16, shortcut: str = "A",
             zero_init_residual: bool = False):
    """ResNet-32 for CIFAR: 31 conv layers in 15 basic blocks, 16-64 filters, option-A shortcuts."""
    return resnet(input_shape, num_classes, strategy, 32, base_filters, shortcut, zero_init_residual)


@MODELS.register
def resnet56(input_shape, num_classes, strategy, base_filters: int = 16, shortcut: str = "A",
             zero_init_residual: bool = False):
    """ResNet-56 for CIFAR: 55 conv layers in 27 basic blocks, 16-64 filters, option-A shortcuts."""
    return resnet(input_shape, num_classes, strategy, 56, base_filters, shortcut, zero_init_residual)


def _create_resmlp(input_shape, num_classes, strategy: NormStrategy, depth: int, width: int,
                   zero_init_residual: bool, name: str):
    import keras

    if not isinstance(depth, int) or depth < 3 or not isinstance(width, int) or width < 1:
        raise ConfigError(f"{name}: depth must be an integer >= 3 and width a positive integer, "
                          f"got depth={depth!r}, width={width!r}")
    zero = _check_zero_init(name, zero_init_residual)
    stack = LayerStack(strategy, "relu", residual=True)
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    x = stack.dense(x, width)  # input -> width: the one layer without a shortcut at the start
    pairs, single = divmod(depth - 1, 2)
    for _ in range(pairs):
        branch, skip = stack.open_branch(x)
        y = stack.dense(branch, width)
        x = stack.dense(y, width, shortcut=skip, zero_init=zero)
    if single:
        x = stack.dense(x, width)
    return stack.logits(inputs, x, num_classes, name=name)


@MODELS.register
def resmlp(input_shape, num_classes, strategy, depth: int = 8, width: int = 256, zero_init_residual: bool = False):
    """Residual MLP: `depth` hidden layers of `width`; after the first, identity shortcuts every two layers."""
    return _create_resmlp(input_shape, num_classes, strategy, depth, width, zero_init_residual, name=f"resmlp{depth}")


@MODELS.register
def resmlp8(input_shape, num_classes, strategy, width: int = 256, zero_init_residual: bool = False):
    """Residual MLP, 8 hidden layers of 256 units (3 two-layer residual blocks between a first and a last layer)."""
    return resmlp(input_shape, num_classes, strategy, 8, width, zero_init_residual)


@MODELS.register
def resmlp16(input_shape, num_classes, strategy, width: int = 256, zero_init_residual: bool = False):
    """Residual MLP, 16 hidden layers of 256 units (7 two-layer residual blocks)."""
    return resmlp(input_shape, num_classes, strategy, 16, width, zero_init_residual)


@MODELS.register
def resmlp32(input_shape, num_classes, strategy, width: int = 256, zero_init_residual: bool = False):
    """Residual MLP, 32 hidden layers of 256 units (15 two-layer residual blocks)."""
    return resmlp(input_shape, num_classes, strategy, 32, width, zero_init_residual)
