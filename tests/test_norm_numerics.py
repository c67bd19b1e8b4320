"""Every normalization kind against a NumPy reference, on a Dense-shaped and a Conv-shaped input.

Each layer comes from ``norms.norm_layer`` (what the models build), gets random non-default
weights (gamma, beta, and for the batch kinds moving statistics), and its output in training and
in inference mode is compared with a float64 reference written here from the definitions:

- batch: per channel over the batch (and positions), batch statistics in training, the moving
  ones at inference, epsilon 1e-3 (Keras' BatchNormalization default, which the kind keeps);
- mean_batch: the same mean, no division, a shift only (``layers.MeanOnlyBatchNormalization``);
- layer: per sample over every non-batch axis, epsilon ``NORM_EPSILON``, gain and shift per channel;
- group: per sample over each group of channels and every position, the groups of
  ``layers.group_count`` (written out here: 24 units -> 6 groups, 16 channels -> 4);
- rms: layer norm's axes and epsilon without the centering and the shift;
- dyt, derf: no statistic, element-wise gamma * tanh(alpha x) + beta and gamma * erf(alpha x + s)
  + beta with scalars alpha and s (``layers.PointwiseNormalization``).

The inputs have per-sample and per-channel scales from 0.01 to 3 and offsets, so that a wrong
epsilon shows on the small ones; the ``..._has_power`` tests run the same reference with a wrong
axis, group count, epsilon or centering and require it to disagree with the layer, so a layer
with any of those mistakes would fail ``test_matches_the_numpy_reference``.
"""

import math

import keras
import numpy as np
import pytest

from normbench.errors import ConfigError
from normbench.layers import MIN_GROUP_CHANNELS, NORM_EPSILON, SampleRMSNormalization, group_count
from normbench.norms import NORM_KIND_TABLE, NORM_KINDS, NormStrategy, get_strategy, norm_layer
from normbench.registry import NORMS

BN_EPSILON = 1e-3  # Keras' BatchNormalization default
SHAPES = {"dense": (16, 24), "conv": (8, 5, 6, 16)}  # (batch, units), (batch, H, W, C)
GROUPS = {"dense": 6, "conv": 4}  # the group rule's answer for 24 units and 16 channels: groups of 4
KINDS = [kind for kind in NORM_KINDS if kind is not None]
BATCH_KINDS = ("batch", "mean_batch")
TOLERANCE = 1e-4  # float32 layer against the float64 reference, absolute and relative
POWER = 1e-2  # a wrong reference must miss the layer's output by at least this much somewhere


def reference_params(kind: str, case: str) -> dict:
    """What the kind must compute on input ``case``: the statistics' axes (of the input; the channel axis
    -1 then means the channels within one group), groups, epsilon, centering, division, moving statistics."""
    ndim = len(SHAPES[case])
    sample_axes, batch_axes = tuple(range(1, ndim)), tuple(range(ndim - 1))
    return {
        "batch": dict(axes=batch_axes, eps=BN_EPSILON, moving=True),
        "mean_batch": dict(axes=batch_axes, divide=False, moving=True),
        "layer": dict(axes=sample_axes, eps=NORM_EPSILON),
        "group": dict(axes=sample_axes, groups=GROUPS[case], eps=NORM_EPSILON),
        "rms": dict(axes=sample_axes, eps=NORM_EPSILON, center=False),
        "dyt": dict(pointwise="tanh"),
        "derf": dict(pointwise="erf"),
    }[kind]


WEIGHTS = {  # the per-channel weights each kind must have, nothing else
    "batch": {"gamma", "beta", "moving_mean", "moving_variance"},
    "mean_batch": {"beta", "moving_mean"},
    "layer": {"gamma", "beta"},
    "group": {"gamma", "beta"},
    "rms": {"gamma"},
    "dyt": {"gamma", "beta", "alpha"},
    "derf": {"gamma", "beta", "alpha", "shift"},
}
SCALARS = {"alpha", "shift"}  # the point-wise kinds' one value per layer
POINTWISE_NUMPY = {"tanh": np.tanh, "erf": np.vectorize(math.erf)}


def reference(x, weights, *, training, axes=(), groups=1, eps=0.0, center=True, divide=True, moving=False,
              pointwise=None, use_alpha=True, use_shift=True, alpha_outside=False):
    """The normalization of ``x`` in float64, then ``* gamma + beta`` for those of them in ``weights``. A
    ``pointwise`` kind: f(alpha x + shift) (its mistakes: no alpha, no shift, alpha outside f)."""
    x = np.asarray(x, dtype=np.float64)
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    if pointwise:
        alpha = w["alpha"] if use_alpha else 1.0
        shift = w.get("shift", 0.0) if use_shift else 0.0
        f = POINTWISE_NUMPY[pointwise]
        y = alpha * f(x + shift) if alpha_outside else f(alpha * x + shift)
    elif moving and not training:
        y = x - w["moving_mean"]
        if divide:
            y = y / np.sqrt(w["moving_variance"] + eps)
    else:
        channels = x.shape[-1]
        xg = x.reshape(*x.shape[:-1], groups, channels // groups)  # the channel axis split into (group, within)
        ax = tuple(a % x.ndim for a in axes)
        ax = tuple(x.ndim if a == x.ndim - 1 else a for a in ax)  # channels: within a group, never across groups
        mean = xg.mean(axis=ax, keepdims=True) if center else 0.0
        yg = xg - mean
        if divide:
            yg = yg / np.sqrt(np.mean(np.square(yg), axis=ax, keepdims=True) + eps)
        y = yg.reshape(x.shape)
    if "gamma" in w:
        y = y * w["gamma"]
    if "beta" in w:
        y = y + w["beta"]
    return y


def inputs(case: str, seed: int = 0):
    """Random inputs with per-sample and per-channel scales spanning 0.01..3 and offsets of about a scale."""
    rng = np.random.default_rng(seed)
    shape = SHAPES[case]
    n, c = shape[0], shape[-1]
    sample = np.exp(rng.uniform(np.log(0.01), np.log(3.0), n))
    sample[0], sample[1] = 0.01, 3.0
    channel = np.exp(rng.uniform(np.log(0.02), np.log(2.0), c))
    channel[0] = 0.02
    offset = rng.normal(size=c)
    x = (rng.normal(size=shape) + offset) * channel * sample.reshape((n,) + (1,) * (len(shape) - 1))
    return x.astype("float32")


def layer_with_weights(kind: str, case: str, seed: int = 1):
    """``norm_layer``'s layer for the kind and input case, with random non-default weights assigned."""
    rng = np.random.default_rng(seed)
    shape = SHAPES[case]
    layer = norm_layer(NormStrategy("numerics", norm=kind), (None, *shape[1:]), f"{kind}_{case}")
    layer.build((None, *shape[1:]))
    c = shape[-1]
    values = {"gamma": rng.normal(1.0, 0.5, c), "beta": rng.normal(0.0, 0.5, c),
              "moving_mean": rng.normal(0.0, 0.5, c), "moving_variance": np.exp(rng.uniform(np.log(1e-3), 0.0, c)),
              "alpha": np.array(1.7), "shift": np.array(-0.4)}
    assigned = {}
    for variable in layer.weights:
        name = variable.name.split("/")[-1]
        expected_shape = () if name in SCALARS else (c,)  # one value per channel, or per layer
        assert tuple(variable.shape) == expected_shape, (kind, name, variable.shape)
        variable.assign(values[name].astype("float32"))
        assigned[name] = values[name].astype("float32")
    assert set(assigned) == WEIGHTS[kind], (kind, sorted(assigned))
    return layer, assigned


def output(layer, x, training: bool):
    return np.asarray(keras.ops.convert_to_numpy(layer(x, training=training)), dtype=np.float64)


def current_weights(layer) -> dict:
    """The layer's weights now (a training call has moved the batch kinds' moving statistics)."""
    return {v.name.split("/")[-1]: keras.ops.convert_to_numpy(v) for v in layer.weights}


def test_every_kind_has_a_reference():
    assert set(WEIGHTS) == set(KINDS)
    for case in SHAPES:
        assert all(reference_params(kind, case) for kind in KINDS)
    registered = {get_strategy(name).norm for name in NORMS.list()} - {None}
    assert registered <= set(KINDS)
    assert norm_layer(NormStrategy("plain"), (None, 4), "n") is None


@pytest.mark.parametrize("case", sorted(SHAPES))
@pytest.mark.parametrize("kind", KINDS)
def test_matches_the_numpy_reference(kind, case):
    x = inputs(case)
    layer, _ = layer_with_weights(kind, case)
    for training in (True, False):  # training first: it also moves the moving statistics, which inference uses
        got = output(layer, x, training)
        expected = reference(x, current_weights(layer), training=training, **reference_params(kind, case))
        np.testing.assert_allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE,
                                   err_msg=f"{kind} on {case}, training={training}")


def wrong_variants(kind: str, case: str) -> list:
    """The reference's parameters with one mistake each: (label, parameters) for a wrong axis, group
    count, epsilon or centering."""
    params = reference_params(kind, case)
    if "pointwise" in params:
        other = "erf" if params["pointwise"] == "tanh" else "tanh"
        out = [(f"function={other}", {**params, "pointwise": other}), ("without alpha", {**params, "use_alpha": False}),
               ("alpha outside the function", {**params, "alpha_outside": True})]
        if kind == "derf":
            out.append(("without the shift", {**params, "use_shift": False}))
        return out
    if kind in BATCH_KINDS:
        axes = [(0,)] if case == "conv" else [(1,)]  # per position only; over the units instead of the batch
    else:
        axes = [(3,), (1, 2)] if case == "conv" else [(0,)]  # over channels per position; per channel; the batch
    out = [(f"axes={a}", {**params, "axes": a}) for a in axes]
    if kind == "group":
        c = SHAPES[case][-1]
        out += [(f"groups={g}", {**params, "groups": g}) for g in (1, 2 * GROUPS[case], c) if c % g == 0]
    if params.get("divide", True):
        out += [(f"eps={e}", {**params, "eps": e}) for e in (1e-3, 1e-5, 1e-6) if e != params["eps"]]
    if kind in ("layer", "rms"):
        out.append((f"center={not params.get('center', True)}", {**params, "center": not params.get("center", True)}))
    return out


@pytest.mark.parametrize("case", sorted(SHAPES))
@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_axis_group_or_epsilon_would_fail_the_comparison(kind, case):
    """The reference with one mistake misses the layer's output by far more than the tolerance (at inference
    the batch kinds use the moving statistics: no axes to get wrong there, but the epsilon)."""
    x = inputs(case)
    layer, _ = layer_with_weights(kind, case)
    variants = wrong_variants(kind, case)
    assert len(variants) >= (1 if kind == "mean_batch" else 3)
    for training in (True, False):
        got = output(layer, x, training)
        for label, params in variants:
            if kind in BATCH_KINDS and not training and label.startswith("axes"):
                continue
            wrong = reference(x, current_weights(layer), training=training, **params)
            miss = float(np.max(np.abs(wrong - got)))
            assert miss > POWER, f"{kind} on {case}, training={training}: the reference with {label} is not told apart"


# --- the group rule and the done-criterion of issue 22 -----------------------------------


def test_group_norm_on_16_dense_units_has_4_groups_of_4_and_varies_across_units():
    layer = norm_layer(get_strategy("groupnorm"), (None, 16), "g")
    assert layer.groups == 4
    x = np.random.default_rng(0).normal(size=(32, 16)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    assert (y.var(axis=1) > 0.9).all()  # each group of 4 standardized: variance 1 across the units
    # the old rule (a group per unit) made the output identically beta = 0: what this test tells apart
    one_per_unit = norm_layer(get_strategy("groupnorm", min_group_channels=1), (None, 16), "g1")
    assert one_per_unit.groups == 16
    assert np.abs(keras.ops.convert_to_numpy(one_per_unit(x))).max() < 1e-2


def test_group_rule():
    expected = {16: 4, 32: 8, 64: 16, 128: 32, 256: 32, 48: 12, 24: 6, 10: 2, 8: 2, 6: 1, 4: 1, 3: 1, 1: 1, 37: 1}
    assert {c: group_count(c) for c in expected} == expected
    assert {c: group_count(c, 32, MIN_GROUP_CHANNELS) for c in expected} == expected


def test_group_rule_is_the_largest_divisor_with_enough_channels_per_group():
    for groups, least in ((32, 4), (32, 1), (16, 8), (8, 2)):
        for c in range(1, 600):
            g = group_count(c, groups, least)
            fits = [d for d in range(1, min(groups, c) + 1) if c % d == 0 and c // d >= least]
            assert g == (max(fits) if fits else 1), (c, groups, least)
            assert c % g == 0 and g <= groups and (g == 1 or c // g >= least)
    assert get_strategy("groupnorm").min_group_channels == MIN_GROUP_CHANNELS
    with pytest.raises(ConfigError, match="min_group_channels must be a positive integer"):
        get_strategy("groupnorm", min_group_channels=0)
    with pytest.raises(ValueError, match="min_group_channels"):
        group_count(16, 32, 0)


def test_sample_wise_norms_refuse_one_value_per_sample():
    for kind in ("layer", "group", "rms"):
        with pytest.raises(ConfigError, match="one value per sample"):
            norm_layer(NormStrategy("x", norm=kind), (None, 1), "n")
        assert norm_layer(NormStrategy("x", norm=kind), (None, 4, 4, 1), "n") is not None  # positions remain


def test_mean_only_batch_norm_refuses_a_zero_scale_it_does_not_have():
    with pytest.raises(ConfigError, match="mean-only batch norm has none"):
        norm_layer(NormStrategy("x", norm="mean_batch"), (None, 4), "n", zero_scale=True)


# --- each kind's table entry states what its layer does ---------------------------------------

FACTS = {  # kind: (uses batch statistics, centres): the definitions' facts, written here, not read from the table
    "batch": (True, True), "mean_batch": (True, True), "layer": (False, True), "group": (False, True),
    "rms": (False, False), "dyt": (False, False), "derf": (False, False),
}


def test_the_table_states_the_known_kinds_facts():
    assert {kind: (NORM_KIND_TABLE[kind].batch_statistics, NORM_KIND_TABLE[kind].centres) for kind in FACTS} == FACTS


@pytest.mark.parametrize("kind", KINDS)
def test_a_kinds_facts_are_what_its_layer_does(kind):
    """Batch statistics: a sample's output in training changes with the other samples of its batch. Centring: one
    constant added to every input value leaves the output as it was (so a bias before the layer is redundant)."""
    x = inputs("conv")
    layer, _ = layer_with_weights(kind, "conv")
    y = output(layer, x, True)
    others = x.copy()
    others[1:] = others[1:] * 3.0 + 0.5
    depends_on_batch = not np.allclose(output(layer, others, True)[0], y[0], rtol=1e-3, atol=1e-3)
    centres = np.allclose(output(layer, x + 1.0, True), y, rtol=1e-3, atol=1e-3)
    entry = NORM_KIND_TABLE[kind]
    assert (depends_on_batch, centres) == (entry.batch_statistics, entry.centres)


@pytest.mark.parametrize("kind", KINDS)
def test_a_zero_scale_is_refused_or_starts_the_layer_at_a_constant(kind):
    """A residual branch that starts as the identity needs the layer's output to start independent of its input:
    every kind either refuses ``zero_scale`` (with a message) or starts its gain at 0."""
    strategy = NormStrategy("zero", norm=kind)
    try:
        layer = norm_layer(strategy, (None, *SHAPES["conv"][1:]), "z", zero_scale=True)
    except ConfigError as e:
        assert "scale" in str(e)
        return
    a, b = output(layer, inputs("conv", seed=1), True), output(layer, inputs("conv", seed=2), True)
    np.testing.assert_allclose(a, b, atol=1e-6)


# --- RMS norm's own layer, and statistics in float32 under mixed precision ------------------


def test_rms_layer_zero_scale_and_serialization():
    layer = norm_layer(get_strategy("rmsnorm"), (None, 4, 4, 8), "r", zero_scale=True)
    x = inputs("conv")[:, :4, :4, :8]
    assert not keras.ops.convert_to_numpy(layer(x)).any()
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, SampleRMSNormalization) and restored.epsilon == NORM_EPSILON
    assert restored.get_config() == layer.get_config() and restored.built  # Keras rebuilds it from its build config
    assert not keras.ops.convert_to_numpy(restored.gamma).any()


@pytest.mark.parametrize("kind", ["layer", "group", "rms"])
def test_statistics_in_float32_under_mixed_precision(kind):
    """Inputs near 300 overflow a float16 mean square (65504): the layers compute statistics in float32."""
    case = "conv"
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = norm_layer(NormStrategy("mp", norm=kind), (None, *SHAPES[case][1:]), "mp")
        x = (inputs(case, seed=3) * 100 + 300).astype("float16")
        y = keras.ops.convert_to_numpy(layer(x, training=True))
    finally:
        keras.config.set_dtype_policy(previous)
    assert str(y.dtype) == "float16"
    expected = reference(x.astype("float32"), {"gamma": np.ones(16)} if kind == "rms" else
                         {"gamma": np.ones(16), "beta": np.zeros(16)}, training=True, **reference_params(kind, case))
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y.astype(np.float64), expected, rtol=1e-2, atol=2e-2)


def numerics_errors() -> dict:
    """The largest |layer - reference| per (kind, case, mode) on the current backend (for _backend_checks.py)."""
    out = {}
    for kind in KINDS:
        for case in SHAPES:
            keras.backend.clear_session()
            x = inputs(case)
            layer, _ = layer_with_weights(kind, case)
            for training in (True, False):
                got = output(layer, x, training)
                expected = reference(x, current_weights(layer), training=training, **reference_params(kind, case))
                err = np.abs(got - expected) / (1.0 + np.abs(expected))
                out[f"{kind}/{case}/{'train' if training else 'infer'}"] = float(err.max())
    return out
