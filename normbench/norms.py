"""Normalization strategies: each one a bundle applied in exactly one place.

A :class:`NormStrategy` says which activation, initializer, weight constraint,
batch-norm placement, dropout kind and input scaling a network uses. Model
builders never look at a strategy's name; they call :class:`LayerStack`, whose
``dense``/``conv`` blocks are the single place where a strategy is applied.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .registry import NORMS

BN_PLACEMENTS = (None, "pre", "post")
DROPOUT_KINDS = (None, "standard", "alpha")
INPUT_SCALINGS = ("unit", "standardize")

# Initializer used when a strategy leaves it to the activation.
DEFAULT_INITIALIZER = {
    "relu": "he_normal",
    "selu": "lecun_normal",
    "sigmoid": "glorot_normal",
    "tanh": "glorot_normal",
    "linear": "glorot_normal",
}


@dataclass(frozen=True)
class NormStrategy:
    """A normalization bundle; every field is plain data so it round-trips through JSON."""

    name: str
    activation: str | None = None  # None: the builder's activation (ReLU unless it says otherwise)
    kernel_initializer: str | None = None  # None: chosen by the activation (DEFAULT_INITIALIZER)
    batchnorm: str | None = None  # None, "pre" (input of the nonlinearity) or "post" (after it)
    max_norm: float | None = None  # radius c of each unit's incoming weight vector
    dropout: str | None = None  # None, "standard" or "alpha", after each hidden block
    dropout_rate: float = 0.0
    input_dropout_rate: float = 0.0  # dropout (of the strategy's kind) on the network input
    input_scaling: str = "unit"  # "unit": pixels / 255; "standardize": zero mean, unit variance

    def __post_init__(self) -> None:
        if self.batchnorm not in BN_PLACEMENTS:
            raise ConfigError(f"strategy {self.name!r}: batchnorm must be one of {BN_PLACEMENTS}, got {self.batchnorm!r}")
        if self.dropout not in DROPOUT_KINDS:
            raise ConfigError(f"strategy {self.name!r}: dropout must be one of {DROPOUT_KINDS}, got {self.dropout!r}")
        if self.input_scaling not in INPUT_SCALINGS:
            raise ConfigError(
                f"strategy {self.name!r}: input_scaling must be one of {INPUT_SCALINGS}, got {self.input_scaling!r}"
            )
        for name in ("dropout_rate", "input_dropout_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"strategy {self.name!r}: {name} must be in [0, 1), got {getattr(self, name)!r}")
        if (self.dropout_rate or self.input_dropout_rate) and self.dropout is None:
            raise ConfigError(f"strategy {self.name!r}: a dropout rate needs a dropout kind ('standard' or 'alpha')")
        if self.max_norm is not None and self.max_norm <= 0:
            raise ConfigError(f"strategy {self.name!r}: max_norm radius must be positive, got {self.max_norm!r}")

    def activation_for(self, builder_activation: str) -> str:
        return self.activation or builder_activation

    def initializer_for(self, activation: str) -> str:
        return self.kernel_initializer or DEFAULT_INITIALIZER.get(activation, "glorot_uniform")

    def get_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "NormStrategy":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise ConfigError(f"unknown NormStrategy field(s) {unknown}; valid fields: {sorted(fields)}")
        return cls(**config)


def get_strategy(identifier: "str | dict | NormStrategy", **params: Any) -> NormStrategy:
    """A strategy from a registered name (with parameters), a config dict or an instance."""
    if isinstance(identifier, NormStrategy):
        if params:
            raise ConfigError("parameters can only be given with a strategy name")
        return identifier
    if isinstance(identifier, dict):
        return NormStrategy.from_config(identifier)
    if isinstance(identifier, str):
        factory = NORMS.get(identifier)
        accepted = set(inspect.signature(factory).parameters)
        fields = {f.name for f in dataclasses.fields(NormStrategy)} - {"name"}
        bad = sorted(set(params) - accepted - fields)
        if bad:
            raise ConfigError(
                f"strategy {identifier!r} takes no parameter(s) {bad}; it takes: {sorted(accepted) or 'none'}, "
                f"or any NormStrategy field to override: {sorted(fields)}"
            )
        strategy = factory(**{k: v for k, v in params.items() if k in accepted})
        overrides = {k: v for k, v in params.items() if k not in accepted}
        return dataclasses.replace(strategy, **overrides) if overrides else strategy
    raise ConfigError(f"cannot interpret {identifier!r} as a normalization strategy (give a name, dict or NormStrategy)")


# --- the registered strategies -------------------------------------------------------------


@NORMS.register(name="none")
def _none() -> NormStrategy:
    """Baseline: ReLU (or the builder's activation), He-normal init, no normalization."""
    return NormStrategy("none")


@NORMS.register(name="batchnorm")
def _batchnorm() -> NormStrategy:
    """BN on the input of the nonlinearity, g(BN(Wu)), bias dropped (Ioffe & Szegedy 2015)."""
    return NormStrategy("batchnorm", batchnorm="pre")


@NORMS.register(name="batchnorm_post")
def _batchnorm_post() -> NormStrategy:
    """BN after the activation (the placement of the SELU paper's Figure 1)."""
    return NormStrategy("batchnorm_post", batchnorm="post")


@NORMS.register(name="maxnorm")
def _maxnorm(c: float = 3.0, dropout_rate: float = 0.0, input_dropout_rate: float = 0.0) -> NormStrategy:
    """Max-norm: each hidden unit's incoming weight vector rescaled to norm <= c after every update."""
    dropout = "standard" if dropout_rate or input_dropout_rate else None
    return NormStrategy("maxnorm", max_norm=float(c), dropout=dropout, dropout_rate=dropout_rate,
                        input_dropout_rate=input_dropout_rate)


@NORMS.register(name="selu")
def _selu(dropout_rate: float = 0.0) -> NormStrategy:
    """Self-normalizing bundle: SELU, LeCun-normal init, AlphaDropout, standardized inputs, no BN."""
    return NormStrategy(
        "selu",
        activation="selu",
        kernel_initializer="lecun_normal",
        dropout="alpha" if dropout_rate else None,
        dropout_rate=dropout_rate,
        input_scaling="standardize",
    )


# --- the one place a strategy becomes layers ---------------------------------------------


def hidden_layer_name(index: int, part: str) -> str:
    """Layer names of hidden block ``index``: ``h03_linear``, ``h03_bn``, ``h03_act``, ``h03_drop``."""
    return f"h{index:02d}_{part}"


class LayerStack:
    """Builds hidden blocks for one network, numbering them and applying the strategy.

    Each block is linear -> [BN if "pre"] -> activation -> [BN if "post"] -> [dropout];
    the first block starts with input dropout when the strategy has one.
    The activation layer is named ``hNN_act``: its input is the pre-activation and its
    output the activation, which is what the probe measures.
    """

    def __init__(self, strategy: NormStrategy, activation: str = "relu"):
        self.strategy = strategy
        self.activation = strategy.activation_for(activation)
        self.count = 0

    def dense(self, x, units: int):
        return self._block(x, "dense", units)

    def conv(self, x, filters: int, kernel_size: int = 3):
        return self._block(x, "conv", filters, kernel_size)

    def _block(self, x, kind: str, size: int, kernel_size: int = 3):
        import keras

        s = self.strategy
        i = self.count
        if i == 0 and s.input_dropout_rate > 0:
            layer = keras.layers.AlphaDropout if s.dropout == "alpha" else keras.layers.Dropout
            x = layer(s.input_dropout_rate, name="input_drop")(x)
        self.count += 1
        common = dict(
            use_bias=s.batchnorm != "pre",
            kernel_initializer=s.initializer_for(self.activation),
            name=hidden_layer_name(i, "linear"),
        )
        if kind == "dense":
            constraint = keras.constraints.MaxNorm(s.max_norm, axis=0) if s.max_norm else None
            x = keras.layers.Dense(size, kernel_constraint=constraint, **common)(x)
        else:
            # Each filter (rows, cols, in) is one unit's incoming weight vector.
            constraint = keras.constraints.MaxNorm(s.max_norm, axis=[0, 1, 2]) if s.max_norm else None
            x = keras.layers.Conv2D(size, kernel_size, padding="same", kernel_constraint=constraint, **common)(x)
        if s.batchnorm == "pre":
            x = keras.layers.BatchNormalization(name=hidden_layer_name(i, "bn"))(x)
        x = keras.layers.Activation(self.activation, name=hidden_layer_name(i, "act"))(x)
        if s.batchnorm == "post":
            x = keras.layers.BatchNormalization(name=hidden_layer_name(i, "bn"))(x)
        if s.dropout and s.dropout_rate > 0:
            layer = keras.layers.AlphaDropout if s.dropout == "alpha" else keras.layers.Dropout
            x = layer(s.dropout_rate, name=hidden_layer_name(i, "drop"))(x)
        return x

    def logits(self, inputs, x, num_classes: int, name: str):
        """Close the network with a linear classifier (logits; the loss applies the softmax)."""
        import keras

        init = self.strategy.kernel_initializer or "glorot_uniform"
        # float32 logits even under a mixed-precision policy, so the loss is computed in float32
        outputs = keras.layers.Dense(num_classes, kernel_initializer=init, name="logits", dtype="float32")(x)
        return keras.Model(inputs, outputs, name=name)
