"""Normalization strategies: each one a bundle applied in exactly one place.

A :class:`NormStrategy` says which activation (and its gain), initializer, weight constraint,
normalization kind (batch, mean-only batch, layer, group, RMS, or a point-wise replacement: DyT,
Derf) and its placement, kernel parametrization (weight or spectral normalization, weight
standardization, scaled), residual-branch scaling, gradient clipping and dropout kind a network uses (input preprocessing is the
run's ``input_scaling``, the same for every strategy). Model
builders never look at a strategy's name; they call :class:`LayerStack`, whose ``dense``/``conv``
blocks are the single place where a strategy is applied.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ConfigError
from .registry import NORMS, check_arguments

PLACEMENTS = ("pre", "post")
KERNEL_PARAMETRIZATIONS = (None, "weight", "spectral", "standardize", "scaled_standardize")
DROPOUT_KINDS = (None, "standard", "alpha")

# --- normalization kinds: one table entry each ------------------------------------------------
#
# A kind is everything the rest of normbench needs to know about one normalization layer: how to build it, whether
# its output depends on the other samples of the batch, whether it centres (so a bias before it is dropped), and the
# uses it refuses. Adding a kind is adding one entry to NORM_KIND_TABLE (and its reference in
# tests/test_norm_numerics.py); NORM_KINDS, BATCH_STATISTICS, CENTERING and norm_layer follow from the table.


@dataclass(frozen=True)
class NormUse:
    """One normalization layer to build: the strategy, the input's shape (batch axis first), the layer's name, and
    whether its learned gain starts at 0 (a residual branch that starts as the identity)."""

    strategy: "NormStrategy"
    shape: tuple
    name: str
    zero_scale: bool = False

    @property
    def gamma(self) -> str:
        return "zeros" if self.zero_scale else "ones"


@dataclass(frozen=True)
class Refusal:
    """A use a kind cannot serve: when ``when(use)`` holds, building it raises a ConfigError with ``message``
    (``str.format`` fields: strategy, the strategy's name; kind; name, the layer's; shape)."""

    when: Callable[[NormUse], bool]
    message: str


@dataclass(frozen=True)
class NormKind:
    """One normalization kind: its name (a strategy's ``norm``), its layer factory, and its facts."""

    name: str
    layer: Callable[[NormUse], Any]  # builds the Keras layer for one use
    batch_statistics: bool  # its output depends on the other samples of the batch (precise BN re-estimates it)
    centres: bool  # subtracts a mean and learns a shift: a bias before it is redundant, so the linear layer has none
    refusals: tuple[Refusal, ...] = ()


ONE_VALUE_PER_SAMPLE = Refusal(
    lambda use: math.prod(int(d) for d in use.shape[1:]) == 1,
    "strategy {strategy!r}: {kind} norm over one value per sample ({name}, shape {shape}) would output a constant; "
    "give the layer more units")
NO_SCALE_TO_ZERO = Refusal(
    lambda use: use.zero_scale,
    "zero-initialized residual branches need a normalization with a scale; mean-only batch norm has none")


def _batch(use: NormUse):
    """Keras' BatchNormalization: per channel over the batch and positions, epsilon 1e-3 (Keras' default)."""
    import keras

    return keras.layers.BatchNormalization(gamma_initializer=use.gamma, name=use.name)


def _mean_batch(use: NormUse):
    """Mean-only batch norm (``layers.MeanOnlyBatchNormalization``): the batch mean off, a learned shift, no scale."""
    from .layers import MeanOnlyBatchNormalization

    return MeanOnlyBatchNormalization(name=use.name)


def _layer(use: NormUse):
    """Layer norm over every non-batch axis with a gain and shift per channel; on a feature map that is group norm
    with one group (the group-norm paper's definition; Keras' LayerNormalization over those axes would learn one
    gain per position and channel)."""
    import keras

    from .layers import NORM_EPSILON

    if len(use.shape) > 2:
        return keras.layers.GroupNormalization(groups=1, epsilon=NORM_EPSILON, gamma_initializer=use.gamma,
                                               name=use.name)
    return keras.layers.LayerNormalization(epsilon=NORM_EPSILON, gamma_initializer=use.gamma, name=use.name)


def _group(use: NormUse):
    """Group norm, ``layers.group_count(channels, strategy.groups, strategy.min_group_channels)`` groups (the same
    rule for a Dense layer's units), each over its channels and every position."""
    import keras

    from .layers import NORM_EPSILON, group_count

    s = use.strategy
    groups = group_count(int(use.shape[-1]), s.groups, s.min_group_channels)
    return keras.layers.GroupNormalization(groups=groups, epsilon=NORM_EPSILON, gamma_initializer=use.gamma,
                                           name=use.name)


def _rms(use: NormUse):
    """RMS norm over layer norm's axes (``layers.SampleRMSNormalization``): a gain per channel, no centring, no shift."""
    from .layers import NORM_EPSILON, SampleRMSNormalization

    return SampleRMSNormalization(epsilon=NORM_EPSILON, gamma_initializer=use.gamma, name=use.name)


def _pointwise(function: str) -> Callable[[NormUse], Any]:
    """A point-wise replacement (``layers.PointwiseNormalization``): no statistic, gamma * function(alpha x [+ s])
    + beta with learned scalars and a per-channel gain and shift."""

    def build(use: NormUse):
        from .layers import PointwiseNormalization

        return PointwiseNormalization(function, use.strategy.alpha_init, gamma_initializer=use.gamma, name=use.name)

    return build


NORM_KIND_TABLE: dict[str, NormKind] = {kind.name: kind for kind in (
    NormKind("batch", _batch, batch_statistics=True, centres=True),
    NormKind("mean_batch", _mean_batch, batch_statistics=True, centres=True, refusals=(NO_SCALE_TO_ZERO,)),
    NormKind("layer", _layer, batch_statistics=False, centres=True, refusals=(ONE_VALUE_PER_SAMPLE,)),
    NormKind("group", _group, batch_statistics=False, centres=True, refusals=(ONE_VALUE_PER_SAMPLE,)),
    NormKind("rms", _rms, batch_statistics=False, centres=False, refusals=(ONE_VALUE_PER_SAMPLE,)),
    NormKind("dyt", _pointwise("tanh"), batch_statistics=False, centres=False),
    NormKind("derf", _pointwise("erf"), batch_statistics=False, centres=False),
)}

NORM_KINDS = (None, *NORM_KIND_TABLE)  # a strategy's norm: None (no normalization layer) or a kind of the table
BATCH_STATISTICS = tuple(k.name for k in NORM_KIND_TABLE.values() if k.batch_statistics)
CENTERING = tuple(k.name for k in NORM_KIND_TABLE.values() if k.centres)


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
    norm: str | None = None  # normalization layer kind, one of NORM_KINDS (None: no normalization layer)
    placement: str = "pre"  # "pre": on the input of the nonlinearity; "post": after it (and after a residual addition)
    groups: int = 32  # group norm's groups (Wu & He 2018) where a layer has enough channels; elsewhere fewer,
    min_group_channels: int = 4  # each of at least this many channels or units (layers.group_count)
    kernel_parametrization: str | None = None  # None, "weight" (g v/||v||), "spectral" (v/sigma(v)), "standardize"
    # ((v - mean)/std over each unit's fan-in) or "scaled_standardize" (g (v - mean)/(std sqrt(fan-in)))
    alpha_init: float = 0.5  # DyT's and Derf's initial alpha (the point-wise kinds' input scale)
    activation_gain: bool = False  # multiply the activation by the NF gamma (1 / its std on a unit Gaussian)
    residual_alpha: float | None = None  # NF residual scaling: h + alpha * f(h / beta), beta tracked analytically
    agc_clip: float | None = None  # adaptive gradient clipping's lambda (normbench.agc); None: no clipping
    data_init: bool = False  # weight norm's data-dependent initialization on the first training batch
    max_norm: float | None = None  # radius c of each unit's incoming weight vector
    dropout: str | None = None  # None, "standard" or "alpha", after each hidden block
    dropout_rate: float = 0.0
    input_dropout_rate: float = 0.0  # dropout (of the strategy's kind) on the network input

    def __post_init__(self) -> None:
        if self.norm not in NORM_KINDS:
            raise ConfigError(f"strategy {self.name!r}: norm must be one of {NORM_KINDS}, got {self.norm!r}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"strategy {self.name!r}: placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if self.kernel_parametrization not in KERNEL_PARAMETRIZATIONS:
            raise ConfigError(f"strategy {self.name!r}: kernel_parametrization must be one of "
                              f"{KERNEL_PARAMETRIZATIONS}, got {self.kernel_parametrization!r}")
        if not isinstance(self.groups, int) or isinstance(self.groups, bool) or self.groups < 1:
            raise ConfigError(f"strategy {self.name!r}: groups must be a positive integer, got {self.groups!r}")
        if (not isinstance(self.min_group_channels, int) or isinstance(self.min_group_channels, bool)
                or self.min_group_channels < 1):
            raise ConfigError(f"strategy {self.name!r}: min_group_channels must be a positive integer, "
                              f"got {self.min_group_channels!r}")
        if self.data_init and self.kernel_parametrization != "weight":
            raise ConfigError(f"strategy {self.name!r}: data_init is weight normalization's initialization; "
                              f"it needs kernel_parametrization = 'weight'")
        if self.dropout not in DROPOUT_KINDS:
            raise ConfigError(f"strategy {self.name!r}: dropout must be one of {DROPOUT_KINDS}, got {self.dropout!r}")
        for name in ("dropout_rate", "input_dropout_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"strategy {self.name!r}: {name} must be in [0, 1), got {getattr(self, name)!r}")
        if (self.dropout_rate or self.input_dropout_rate) and self.dropout is None:
            raise ConfigError(f"strategy {self.name!r}: a dropout rate needs a dropout kind ('standard' or 'alpha')")
        if not (isinstance(self.alpha_init, (int, float)) and not isinstance(self.alpha_init, bool)
                and self.alpha_init > 0):
            raise ConfigError(f"strategy {self.name!r}: alpha_init must be a positive number, got {self.alpha_init!r}")
        for name in ("residual_alpha", "agc_clip"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                          and value > 0):
                raise ConfigError(f"strategy {self.name!r}: {name} must be a positive number or None, got {value!r}")
        if self.max_norm is not None and self.max_norm <= 0:
            raise ConfigError(f"strategy {self.name!r}: max_norm radius must be positive, got {self.max_norm!r}")

    @property
    def needs_batch_statistics(self) -> bool:
        """True when a unit's output depends on the other samples of its batch (BN, mean-only BN)."""
        return self.norm in BATCH_STATISTICS

    def activation_for(self, builder_activation: str) -> str:
        return self.activation or builder_activation

    def initializer_for(self, activation: str) -> str:
        return self.kernel_initializer or DEFAULT_INITIALIZER.get(activation, "glorot_uniform")

    def get_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "NormStrategy":
        config = _legacy(config)
        # a config stored before min_group_channels (schemas 1-2) was made with the divisor rule alone: 1 channel
        config = {"min_group_channels": 1, **config}
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise ConfigError(f"unknown NormStrategy field(s) {unknown}; valid fields: {sorted(fields)}")
        return cls(**config)


def _legacy(config: dict[str, Any]) -> dict[str, Any]:
    """Older configs: schema 1 said ``batchnorm = "pre" | "post" | None``; schemas 1-2 had an ``input_scaling``
    field (now the run's, so that no strategy changes its inputs implicitly)."""
    config = {k: v for k, v in config.items() if k != "input_scaling"}
    if "batchnorm" not in config:
        return config
    placement = config.pop("batchnorm")
    if placement is not None:
        config.setdefault("norm", "batch")
        config.setdefault("placement", placement)
    return config


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
        if "input_scaling" in params:
            raise ConfigError(f"strategy {identifier!r}: input_scaling is no longer a strategy parameter; it is a run "
                              f"setting, the same for every strategy: write input_scaling = "
                              f"{params['input_scaling']!r} beside the other run settings (e.g. in [defaults])")
        params = _legacy(params)
        accepted = set(inspect.signature(factory).parameters)
        fields = {f.name for f in dataclasses.fields(NormStrategy)} - {"name"}
        bad = sorted(set(params) - accepted - fields)
        if bad:
            raise ConfigError(
                f"strategy {identifier!r} takes no parameter(s) {bad}; it takes: {sorted(accepted) or 'none'}, "
                f"or any NormStrategy field to override: {sorted(fields)}"
            )
        check_arguments(f"strategy {identifier!r}", factory, params)
        try:
            strategy = factory(**{k: v for k, v in params.items() if k in accepted})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"strategy {identifier!r} with parameters {params}: {e}") from None
        overrides = {k: v for k, v in params.items() if k not in accepted}
        return dataclasses.replace(strategy, **overrides) if overrides else strategy
    raise ConfigError(f"cannot interpret {identifier!r} as a normalization strategy (give a name, dict or NormStrategy)")


# --- knobs: what a tuning study searches for a strategy --------------------------------------


@dataclass(frozen=True)
class Knob:
    """A strategy parameter that a tuning study with ``knobs = true`` searches jointly with the learning rate: its
    values (in grid order) and why they are the ones to try (from the strategy's paper or a measured failure)."""

    name: str  # a parameter of the strategy's factory (a key of the run's strategy_params)
    values: tuple
    reason: str


def knobs(*declared: Knob):
    """Declare a registered strategy's knobs (under ``@NORMS.register``); a strategy without this has none."""

    def attach(factory):
        names = set(inspect.signature(factory).parameters)
        for k in declared:
            if k.name not in names or len(k.values) < 2 or len(set(k.values)) != len(k.values):
                raise ValueError(f"knob {k.name!r} of {factory.__name__}: a parameter of the factory with at least "
                                 f"two distinct values")
        factory.knobs = tuple(declared)
        return factory

    return attach


def strategy_knobs(name: str) -> tuple[Knob, ...]:
    """The knobs a registered strategy declares (empty for none); an unknown name lists the valid ones."""
    return getattr(NORMS.get(name), "knobs", ())


# --- the registered strategies -------------------------------------------------------------


@NORMS.register(name="none")
def _none() -> NormStrategy:
    """Baseline: ReLU (or the builder's activation), He-normal init, no normalization."""
    return NormStrategy("none")


@NORMS.register(name="batchnorm")
def _batchnorm() -> NormStrategy:
    """BN on the input of the nonlinearity, g(BN(Wu)), bias dropped (Ioffe & Szegedy 2015)."""
    return NormStrategy("batchnorm", norm="batch")


@NORMS.register(name="batchnorm_post")
def _batchnorm_post() -> NormStrategy:
    """BN after the activation (the placement of the SELU paper's Figure 1)."""
    return NormStrategy("batchnorm_post", norm="batch", placement="post")


@NORMS.register(name="maxnorm")
@knobs(Knob("c", (1.0, 1.5, 2.0), "He initialization puts each unit's incoming norm near sqrt(2) = 1.41, so "
            "radii of 1-2 bind during training; the usual c = 3-4 (Srivastava et al. 2014, with dropout and large "
            "rates) never bound in normbench's tuned study (largest unit norm 1.61): max-norm was `none` there"))
def _maxnorm(c: float = 3.0, dropout_rate: float = 0.0, input_dropout_rate: float = 0.0) -> NormStrategy:
    """Max-norm: each hidden unit's incoming weight vector rescaled to norm <= c after every update."""
    dropout = "standard" if dropout_rate or input_dropout_rate else None
    return NormStrategy("maxnorm", max_norm=float(c), dropout=dropout, dropout_rate=dropout_rate,
                        input_dropout_rate=input_dropout_rate)


@NORMS.register(name="selu")
@knobs(Knob("dropout_rate", (0.0, 0.05, 0.1), "AlphaDropout is part of the self-normalizing bundle; Klambauer et "
            "al. 2017 used rates of 0.05 and 0.1 for fully connected nets, and none is the plain SELU net"))
def _selu(dropout_rate: float = 0.0) -> NormStrategy:
    """Self-normalizing bundle: SELU, LeCun-normal init, AlphaDropout, no BN (standardized inputs: the run's
    default input_scaling, which every strategy gets)."""
    return NormStrategy(
        "selu",
        activation="selu",
        kernel_initializer="lecun_normal",
        dropout="alpha" if dropout_rate else None,
        dropout_rate=dropout_rate,
    )


@NORMS.register(name="layernorm")
def _layernorm() -> NormStrategy:
    """Layer norm on the pre-activation, over all of a sample's units (every position and channel of a
    feature map), gain and shift per channel, epsilon 1e-5 (Ba et al. 2016)."""
    return NormStrategy("layernorm", norm="layer")


@NORMS.register(name="groupnorm")
def _groupnorm(groups: int = 32, min_group_channels: int = 4) -> NormStrategy:
    """Group norm (Wu & He 2018): the largest divisor g of a layer's channels with g <= groups (32) and at least
    min_group_channels (4) channels per group, one group (layer norm) where none qualifies; a Dense layer's units
    alike (16 units: 4 groups of 4). Each group normalized over its channels and every position, epsilon 1e-5."""
    return NormStrategy("groupnorm", norm="group", groups=int(groups), min_group_channels=int(min_group_channels))


@NORMS.register(name="rmsnorm")
def _rmsnorm() -> NormStrategy:
    """RMS norm: divide by the root mean square over layer norm's axes, same epsilon, gain per channel, no centering
    and no shift (Zhang & Sennrich 2019)."""
    return NormStrategy("rmsnorm", norm="rms")


@NORMS.register(name="weightnorm")
def _weightnorm(data_init: bool = True) -> NormStrategy:
    """Weight norm w = g v/||v|| per unit, data-dependent init on the first batch (Salimans & Kingma 2016)."""
    return NormStrategy("weightnorm", kernel_parametrization="weight", data_init=bool(data_init))


@NORMS.register(name="weightnorm_meanbn")
def _weightnorm_meanbn() -> NormStrategy:
    """Weight norm plus mean-only batch norm, the weight-norm paper's best CIFAR-10 variant."""
    return NormStrategy("weightnorm_meanbn", kernel_parametrization="weight", norm="mean_batch")


@NORMS.register(name="spectralnorm")
def _spectralnorm() -> NormStrategy:
    """Spectral norm w = v/sigma(v), sigma by one power iteration a step (Miyato et al. 2018)."""
    return NormStrategy("spectralnorm", kernel_parametrization="spectral")


@NORMS.register(name="dyt")
@knobs(Knob("alpha_init", (0.5, 1.0, 2.0), "alpha0 = 0.5 is the authors' default for Transformers; on a "
            "He-initialized ReLU net it shrinks the signal about 4x per layer (kernel gradients at init 500-1000x "
            "smaller than without normalization in normbench's tuned study), while 1 trained the same net"))
def _dyt(alpha_init: float = 0.5) -> NormStrategy:
    """Dynamic Tanh in place of the norm layer: gamma * tanh(alpha x) + beta, alpha one learned scalar per layer
    starting at 0.5, gamma and beta per channel (Zhu et al. 2025, "Transformers without Normalization")."""
    return NormStrategy("dyt", norm="dyt", alpha_init=float(alpha_init))


@NORMS.register(name="derf")
@knobs(Knob("alpha_init", (0.5, 1.0, 2.0), "alpha0 = 0.5 is the authors' default for Transformers; on a "
            "He-initialized ReLU net it shrinks the signal about 4x per layer (kernel gradients at init 500-1000x "
            "smaller than without normalization in normbench's tuned study), while 1 trained the same net"))
def _derf(alpha_init: float = 0.5) -> NormStrategy:
    """Dynamic erf in place of the norm layer: gamma * erf(alpha x + s) + beta, alpha and s learned scalars per
    layer (Chen et al. 2025, arXiv 2512.10938); alpha starts at DyT's 0.5 and s at 0."""
    return NormStrategy("derf", norm="derf", alpha_init=float(alpha_init))


@NORMS.register(name="ws_groupnorm")
def _ws_groupnorm(groups: int = 32, min_group_channels: int = 4) -> NormStrategy:
    """Weight standardization plus group norm (Qiao et al. 2019): each unit's kernel standardized over its
    fan-in, (v - mean) / sqrt(var + 1e-5), then group norm as in the groupnorm strategy."""
    return NormStrategy("ws_groupnorm", norm="group", kernel_parametrization="standardize", groups=int(groups),
                        min_group_channels=int(min_group_channels))


@NORMS.register(name="nf")
@knobs(Knob("clip", (0.0, 0.01, 0.1), "AGC's lambda = 0.01 is the NFNets' value at batch 4096; at batch 128 it "
            "clipped every unit in normbench's tuned study, so a larger lambda and no clipping (0) are tried too"))
def _nf(alpha: float = 0.2, clip: float = 0.01) -> NormStrategy:
    """Normalization-free (Brock et al. 2021a, NF-ResNets; 2021b, NFNets): Scaled WS, g (v - mean) / (std
    sqrt(fan-in)) with a learned gain g per unit; the activation times gamma (ReLU: 1.7139); adaptive gradient
    clipping with lambda = clip (0.01, the NFNets' value at batch 4096; 0: no clipping) and eps 1e-3, the classifier
    unclipped; on
    a residual builder, a stem without activation and pre-activation branches h + alpha * f(h / beta), alpha = 0.2,
    beta^2 the analytic variance of h (LayerStack); on a plain net, the standardization, gain and clipping alone."""
    return NormStrategy("nf", kernel_parametrization="scaled_standardize", activation_gain=True,
                        residual_alpha=float(alpha), agc_clip=float(clip) if clip > 0 else None)


# --- the one place a strategy becomes layers ---------------------------------------------


def hidden_layer_name(index: int, part: str) -> str:
    """Layer names of hidden block ``index``: ``h03_linear``, ``h03_norm``, ``h03_add``, ``h03_act``, ``h03_drop``."""
    return f"h{index:02d}_{part}"


def norm_layer(strategy: NormStrategy, shape: tuple, name: str, zero_scale: bool = False):
    """The strategy's normalization layer for a tensor of ``shape`` (batch axis first), or None.

    The kind's entry in :data:`NORM_KIND_TABLE` builds it, after its refusals: layer, group and RMS
    norm take their statistics per sample over every non-batch axis, with epsilon
    ``layers.NORM_EPSILON`` (1e-5) inside the square root and a learned gain per channel; layer and
    group norm also learn a shift per channel, RMS norm does not (it does not center), so layer and
    RMS norm differ only in centering. The three refuse a tensor of one value per sample (their
    output would not depend on it). DyT and Derf take no statistic. The batch kinds normalize per
    channel over the batch and positions. ``zero_scale`` starts the learned gain at 0 (a residual
    branch that starts as the identity); mean-only batch norm, which has no gain, refuses it.
    """
    if strategy.norm is None:
        return None
    kind = NORM_KIND_TABLE[strategy.norm]
    use = NormUse(strategy, tuple(shape), name, zero_scale)
    for refusal in kind.refusals:
        if refusal.when(use):
            raise ConfigError(refusal.message.format(strategy=strategy.name, kind=kind.name, name=name,
                                                     shape=use.shape))
    return kind.layer(use)


class LayerStack:
    """Builds hidden blocks for one network, numbering them and applying the strategy.

    Each block is linear -> [norm if "pre"] -> [+ shortcut] -> activation -> [norm if "post"]
    -> [dropout]; the first block starts with input dropout when the strategy has one. A block
    given a ``shortcut`` closes a residual branch: with "pre" placement the norm sits inside the
    branch, with "post" after the addition. The activation layer is named ``hNN_act``: its input
    is the pre-activation and its output the activation, which is what the probe measures; the
    addition is ``hNN_add`` (inputs: shortcut, branch), which the probe also taps.

    A residual builder opens each branch with :meth:`open_branch`. For a strategy with
    ``residual_alpha`` (the NF nets) that makes the branch a pre-activation one, as in the
    NF-ResNets (Brock et al. 2021a): the branch starts from the (scaled) activation of h / beta,
    where beta^2 is the analytic variance of the stream h; the block that closes it multiplies the
    branch by alpha, adds it, and applies no activation (its ``hNN_act`` is the identity, so the
    probe still sees the stream), so Var(h) grows by alpha^2 per block. A transition block (stride
    or channel change) takes its shortcut from the same normalized activation, and the variance
    restarts at 1 + alpha^2. (An identity-like option-A shortcut pads channels with zeros, whose
    variance is 0: the restart is exact for the kept channels only.) In a ``residual`` stack the
    first block (the stem) has no activation either, so the stream starts zero-mean with variance
    1 (Scaled WS on unit-variance inputs); the branches' centred kernels keep it zero-mean. Other
    strategies: the branch starts from h itself, the post-activation ResNet, and the stem is an
    ordinary block.
    """

    def __init__(self, strategy: NormStrategy, activation: str = "relu", residual: bool = False):
        self.strategy = strategy
        self.activation = strategy.activation_for(activation)
        self.residual = residual
        self.count = 0
        self.variance = 1.0  # the NF nets' expected variance of the residual stream
        self._transition = False

    def dense(self, x, units: int, shortcut=None, zero_init: bool = False):
        return self._block(x, "dense", units, shortcut=shortcut, zero_init=zero_init)

    def conv(self, x, filters: int, kernel_size: int = 3, strides: int = 1, shortcut=None, zero_init: bool = False):
        return self._block(x, "conv", filters, kernel_size, strides, shortcut, zero_init)

    def linear(self, x, kind: str, size: int, kernel_size: int = 3, strides: int = 1, *, name: str,
               use_bias: bool = True, zero: bool = False):
        """One Dense or Conv2D with the strategy's initializer, constraint and kernel parametrization."""
        import keras

        from .layers import KernelReparametrization

        s = self.strategy
        if zero and s.kernel_parametrization:
            raise ConfigError(f"strategy {s.name!r}: a zero-initialized residual branch cannot be combined with "
                              f"{s.kernel_parametrization} normalization (the kernel's norm would be zero)")
        common = dict(use_bias=use_bias, name=name if not s.kernel_parametrization else f"{name}_inner",
                      kernel_initializer="zeros" if zero else s.initializer_for(self.activation))
        if kind == "dense":
            constraint = keras.constraints.MaxNorm(s.max_norm, axis=0) if s.max_norm else None
            layer = keras.layers.Dense(size, kernel_constraint=constraint, **common)
        else:
            # Each filter (rows, cols, in) is one unit's incoming weight vector.
            constraint = keras.constraints.MaxNorm(s.max_norm, axis=[0, 1, 2]) if s.max_norm else None
            layer = keras.layers.Conv2D(size, kernel_size, strides=strides, padding="same",
                                        kernel_constraint=constraint, **common)
        if s.kernel_parametrization:
            layer = KernelReparametrization(layer, mode=s.kernel_parametrization, name=name)
        return layer(x)

    def open_branch(self, x, transition: bool = False):
        """The inputs of a residual branch that starts from ``x``: (branch input, shortcut input).

        Both are ``x`` except with NF residual scaling (see the class docstring): then the branch
        input is gamma * act(x / beta), and so is the shortcut's at a ``transition``.
        """
        import keras

        self._transition = bool(transition)
        if self.strategy.residual_alpha is None:
            return x, x
        i = self.count
        beta = self.variance ** 0.5
        y = keras.layers.Rescaling(1.0 / beta, name=hidden_layer_name(i, "beta"))(x)
        y = self._activation(hidden_layer_name(i, "preact"))(y)
        return y, (y if transition else x)

    def _activation(self, name: str, activation: str | None = None):
        import keras

        from .layers import ScaledActivation, activation_gain

        activation = activation or self.activation
        if self.strategy.activation_gain and activation != "linear":
            return ScaledActivation(activation, activation_gain(activation), name=name)
        return keras.layers.Activation(activation, name=name)

    def projection(self, x, filters: int, strides: int, index: int):
        """A 1x1 conv shortcut (He et al.'s option B), normalized like the branch it joins."""
        s = self.strategy
        pre = s.norm if s.placement == "pre" else None
        y = self.linear(x, "conv", filters, 1, strides, name=hidden_layer_name(index, "proj"),
                        use_bias=pre not in CENTERING)
        if pre:
            y = norm_layer(s, tuple(y.shape), hidden_layer_name(index, "proj_norm"))(y)
        return y

    def _block(self, x, kind: str, size: int, kernel_size: int = 3, strides: int = 1, shortcut=None,
               zero_init: bool = False):
        import keras

        s = self.strategy
        i = self.count
        if i == 0 and s.input_dropout_rate > 0:
            layer = keras.layers.AlphaDropout if s.dropout == "alpha" else keras.layers.Dropout
            x = layer(s.input_dropout_rate, name="input_drop")(x)
        self.count += 1
        pre = s.norm if s.placement == "pre" else None
        # A zero-initialized branch end: the pre-norm's scale starts at 0, else the kernel does.
        x = self.linear(x, kind, size, kernel_size, strides, name=hidden_layer_name(i, "linear"),
                        use_bias=pre not in CENTERING, zero=zero_init and not pre)
        if pre:
            x = norm_layer(s, tuple(x.shape), hidden_layer_name(i, "norm"), zero_scale=zero_init)(x)
        alpha = s.residual_alpha if shortcut is not None else None
        if alpha is not None:  # NF: h + alpha * branch, and no activation on the stream
            x = keras.layers.Rescaling(alpha, name=hidden_layer_name(i, "alpha"))(x)
            self.variance = (1.0 if self._transition else self.variance) + alpha**2
        if shortcut is not None:
            x = keras.layers.Add(name=hidden_layer_name(i, "add"))([shortcut, x])
        nf_stream = alpha is not None or (i == 0 and self.residual and s.residual_alpha is not None)
        x = self._activation(hidden_layer_name(i, "act"), "linear" if nf_stream else None)(x)
        if s.norm and s.placement == "post":
            x = norm_layer(s, tuple(x.shape), hidden_layer_name(i, "norm"))(x)
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
