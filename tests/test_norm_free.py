"""The normalization-free strategies' maths against NumPy: weight standardization (plain and scaled),
the NF activation gain, adaptive gradient clipping's step, and the NF residual scaling's variance.

(DyT and Derf are norm kinds: tests/test_norm_numerics.py checks them with the other kinds.)
Each NumPy reference is written here from the papers' definitions, and each comparison has a
``..._has_power`` companion: the same reference with one mistake (the wrong axis, no sqrt(fan-in),
whole-tensor clipping, ...) must miss the layer's output, so the comparison would catch that mistake.
:func:`norm_free_errors` repeats the comparisons for tests/_backend_checks.py on JAX and torch.
"""

import math

import keras
import numpy as np
import pytest

from normbench.agc import AGC_EPSILON, with_adaptive_clipping
from normbench.layers import KernelReparametrization, ScaledActivation, activation_gain
from normbench.models import build_model
from normbench.norms import get_strategy

TOLERANCE = 1e-4
POWER = 1e-2
WS_EPSILON = {"standardize": 1e-5, "scaled_standardize": 1e-4}
KERNELS = {"dense": (12, 5), "conv": (3, 3, 4, 6)}


# --- weight standardization ------------------------------------------------------------------


def ws_reference(v, mode, gain=None, *, axes=None, scaled=None, ddof=0):
    """Each unit's kernel (last axis) standardized over its fan-in (every other axis), in float64;
    ``scaled``: divided by sqrt(fan-in) too and times the gain (Scaled WS)."""
    v = np.asarray(v, dtype=np.float64)
    m = v.reshape(-1, v.shape[-1])
    axis = 0 if axes is None else axes
    scaled = mode == "scaled_standardize" if scaled is None else scaled
    mean = m.mean(axis=axis, keepdims=True)
    var = m.var(axis=axis, keepdims=True, ddof=ddof)
    if scaled:
        w = (m - mean) / np.sqrt(m.shape[0] * var + WS_EPSILON[mode]) * np.asarray(gain, dtype=np.float64)
    else:
        w = (m - mean) / np.sqrt(var + WS_EPSILON[mode])
    return w.reshape(v.shape)


def ws_layer(mode: str, case: str, seed: int = 0):
    """A standardized Dense or Conv2D with a random kernel (offsets and scales per unit) and a random gain."""
    rng = np.random.default_rng(seed)
    shape = KERNELS[case]
    inner = (keras.layers.Dense(shape[-1]) if case == "dense"
             else keras.layers.Conv2D(shape[-1], shape[0], padding="same"))
    layer = KernelReparametrization(inner, mode=mode)
    layer.build((None, shape[0]) if case == "dense" else (None, 7, 7, shape[2]))
    v = (rng.normal(size=shape) * np.exp(rng.uniform(-2, 1, shape[-1])) + rng.normal(size=shape[-1])).astype("float32")
    inner.kernel.assign(v)
    inner.bias.assign(rng.normal(size=shape[-1]).astype("float32"))
    gain = None
    if mode == "scaled_standardize":
        gain = rng.normal(1.0, 0.5, shape[-1]).astype("float32")
        layer.g.assign(gain)
    return layer, v, gain


def ws_errors(mode: str, case: str) -> tuple[float, float]:
    """(largest |kernel - reference|, largest |output - NumPy output|) for one mode and layer kind."""
    layer, v, gain = ws_layer(mode, case)
    expected = ws_reference(v, mode, gain)
    kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float64)
    rng = np.random.default_rng(1)
    if case == "dense":
        x = rng.normal(size=(8, KERNELS[case][0])).astype("float32")
        out_expected = x.astype(np.float64) @ expected + keras.ops.convert_to_numpy(layer.layer.bias)
    else:  # the same convolution with the reference kernel in a plain Conv2D
        x = rng.normal(size=(2, 7, 7, KERNELS[case][2])).astype("float32")
        plain = keras.layers.Conv2D(KERNELS[case][-1], 3, padding="same")
        plain.build(x.shape)
        plain.kernel.assign(expected.astype("float32"))
        plain.bias.assign(keras.ops.convert_to_numpy(layer.layer.bias))
        out_expected = np.asarray(keras.ops.convert_to_numpy(plain(x)), dtype=np.float64)
    out = np.asarray(keras.ops.convert_to_numpy(layer(x)), dtype=np.float64)
    return float(np.abs(kernel - expected).max()), float(np.abs(out - out_expected).max() / (1 + np.abs(out_expected).max()))


@pytest.mark.parametrize("case", sorted(KERNELS))
@pytest.mark.parametrize("mode", sorted(WS_EPSILON))
def test_weight_standardization_matches_numpy(mode, case):
    kernel_error, output_error = ws_errors(mode, case)
    assert kernel_error < TOLERANCE and output_error < TOLERANCE, (kernel_error, output_error)
    layer, _, _ = ws_layer(mode, case)
    m = keras.ops.convert_to_numpy(layer.kernel).reshape(-1, KERNELS[case][-1])
    np.testing.assert_allclose(m.mean(axis=0), 0, atol=1e-5)  # every unit centred over its fan-in
    if mode == "standardize":
        np.testing.assert_allclose(m.var(axis=0), 1, rtol=1e-3)


@pytest.mark.parametrize("case", sorted(KERNELS))
@pytest.mark.parametrize("mode", sorted(WS_EPSILON))
def test_weight_standardization_reference_has_power(mode, case):
    """A reference over the wrong axis, with Bessel's correction, or with the other mode's sqrt(fan-in)
    scaling misses the layer's kernel by at least 10 times the comparison's tolerance."""
    layer, v, gain = ws_layer(mode, case)
    kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float64)
    wrong = {"over the units": dict(axes=1), "whole tensor": dict(axes=None), "ddof=1": dict(ddof=1),
             "scaling switched": dict(scaled=mode != "scaled_standardize")}
    for label, params in wrong.items():
        if label == "whole tensor":
            ref = ws_reference(np.reshape(v, (-1, 1)), mode, 1.0).reshape(v.shape) * (1.0 if gain is None else gain)
        else:
            ref = ws_reference(v, mode, gain if gain is not None else 1.0, **params)
        assert np.abs(ref - kernel).max() > 10 * TOLERANCE, label


def test_standardization_refuses_a_fan_in_of_one():
    layer = KernelReparametrization(keras.layers.Dense(3), mode="standardize")
    with pytest.raises(ValueError, match="fan-in of at least 2"):
        layer.build((None, 1))


# --- the NF activation gain --------------------------------------------------------------------


def test_activation_gain_gives_unit_variance_on_a_unit_gaussian():
    assert activation_gain("relu") == pytest.approx(math.sqrt(2 / (1 - 1 / math.pi)))
    # 1.71286 exactly; the NF nets' published constant, 1.7139, is a sampled estimate of the same quantity
    assert activation_gain("relu") == pytest.approx(1.7139, abs=2e-3)
    assert activation_gain("linear") == pytest.approx(1.0, abs=1e-9)
    z = np.random.default_rng(0).normal(size=2_000_000)
    numpy_activations = {"relu": lambda t: np.maximum(t, 0), "tanh": np.tanh, "sigmoid": lambda t: 1 / (1 + np.exp(-t))}
    for name, f in numpy_activations.items():
        assert activation_gain(name) == pytest.approx(1 / f(z).std(), rel=2e-3), name
        if name != "relu":  # the quadrature, not the closed form
            assert abs(activation_gain(name) - activation_gain("relu")) > 0.1


def test_scaled_activation_is_the_gain_times_the_activation():
    layer = ScaledActivation("relu", 1.7139, name="a")
    x = np.linspace(-3, 3, 13, dtype="float32").reshape(1, -1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), 1.7139 * np.maximum(x, 0), rtol=1e-6)
    assert layer.get_config()["activation"] == "relu"  # what the probe reads for saturation
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, ScaledActivation) and restored.gain == pytest.approx(1.7139)


# --- adaptive gradient clipping ----------------------------------------------------------------


def agc_reference(grad, weight, clip, eps=AGC_EPSILON, whole=False):
    """AGC in float64: each unit (last axis of a kernel; a vector is one unit) rescaled to norm
    clip * max(||W_unit||, eps) when its gradient's norm exceeds that."""
    g, w = np.asarray(grad, np.float64), np.asarray(weight, np.float64)
    axes = None if (w.ndim <= 1 or whole) else tuple(range(w.ndim - 1))
    keep = axes is not None
    limit = clip * np.maximum(np.sqrt((w**2).sum(axis=axes, keepdims=keep)), eps)
    norm = np.sqrt((g**2).sum(axis=axes, keepdims=keep))
    return np.where(norm > limit, g * limit / np.maximum(norm, 1e-12), g)


def agc_case(seed: int = 0):
    """Real layers (a Dense, a Conv2D, a zero bias, the classifier), weights and gradients whose units are
    partly above and partly below the clipping limit; returns (variables, weights, gradients)."""
    rng = np.random.default_rng(seed)
    dense, conv, logits = keras.layers.Dense(4, name="d"), keras.layers.Conv2D(5, 3, name="c"), \
        keras.layers.Dense(3, name="logits")
    dense.build((None, 6))
    conv.build((None, 8, 8, 2))
    logits.build((None, 4))
    variables = [dense.kernel, dense.bias, conv.kernel, logits.kernel]
    weights, grads = [], []
    for v in variables:
        w = rng.normal(size=v.shape).astype("float32") if len(v.shape) > 1 else np.zeros(v.shape, "float32")
        v.assign(w)
        # per-unit gradient scales from far below to far above clip * ||W_unit||
        g = rng.normal(size=v.shape) * np.exp(rng.uniform(np.log(1e-4), np.log(1.0), v.shape[-1]))
        weights.append(w)
        grads.append(g.astype("float32"))
    return variables, weights, grads


def agc_step(clip: float = 0.05):
    """One plain-SGD step (lr 1, no momentum) through the AGC optimizer: (new weights, the NumPy reference's)."""
    variables, weights, grads = agc_case()
    optimizer = with_adaptive_clipping(keras.optimizers.SGD)(learning_rate=1.0, momentum=0.0, agc_clip=clip)
    optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    got = [np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in variables]
    expected = [w - (g if v.path.startswith("logits/") else agc_reference(g, w, clip))
                for v, w, g in zip(variables, weights, grads)]
    return got, expected, weights, grads


def test_agc_step_matches_numpy():
    got, expected, weights, grads = agc_step()
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=TOLERANCE, atol=1e-6)
    # the case is meaningful: some units clipped and some not, and the classifier's gradient passes unclipped
    clipped = [agc_reference(g, w, 0.05) for g, w in zip(grads[:3], weights[:3])]
    assert any((c != g).any() for c, g in zip(clipped, grads[:3]))
    assert any((c == g).any() for c, g in zip(clipped, grads[:3]))
    assert (agc_reference(grads[3], weights[3], 0.05) != grads[3]).any()  # it would have been clipped


def test_agc_reference_has_power():
    got, _, weights, grads = agc_step()
    wrong = {
        "no clipping": [w - g for w, g in zip(weights, grads)],
        "whole-tensor norms": [w - agc_reference(g, w, 0.05, whole=True) for w, g in zip(weights, grads)],
        "classifier clipped too": [w - agc_reference(g, w, 0.05) for w, g in zip(weights, grads)],
        "no eps floor": [w - agc_reference(g, w, 0.05, eps=0.0) for w, g in zip(weights, grads)],
    }
    for label, expected in wrong.items():
        assert max(np.abs(a - b).max() for a, b in zip(got, expected)) > 1e-6, label


def test_agc_runs_inside_a_compiled_training_step(rng):
    """fit() with the nf strategy's optimizer: the first step's update of a bias (zero at start, so its limit
    is clip * eps) is at most lr * clip * eps, which an unclipped SGD step exceeds by far."""
    from normbench.runner import build, compile_model
    from normbench.spec import RunSpec

    x = rng.normal(size=(64, 10)).astype("float32")
    y = rng.integers(0, 3, size=64)
    sizes = {}
    for strategy, params in (("nf", {}), ("nf", {"agc_clip": None})):
        spec = RunSpec("mlp", strategy, "mnist", learning_rate=0.5, momentum=0.0, model_params={"depth": 2, "width": 8},
                       strategy_params=params, batch_size=64)
        keras.utils.set_random_seed(0)
        model, _ = build(spec, (10,), 3)
        compile_model(model, spec)
        bias = next(v for v in model.trainable_variables if v.path.endswith("bias") and v.path.startswith("h00"))
        before = keras.ops.convert_to_numpy(bias).copy()
        model.train_on_batch(x, y)
        sizes[params.get("agc_clip", "nf")] = float(np.linalg.norm(keras.ops.convert_to_numpy(bias) - before))
    assert sizes["nf"] <= 0.5 * 0.01 * AGC_EPSILON * 1.001
    assert sizes[None] > 100 * sizes["nf"]


# --- the NF residual scaling ---------------------------------------------------------------------


def test_nf_residual_mlp_tracks_the_stream_variance():
    """resmlp with nf at initialization on unit Gaussian inputs: each branch divides the stream by beta =
    sqrt(1 + k alpha^2) and adds alpha * branch, so the stream's variance after k branches is ~1 + k alpha^2
    (measured, within 20%); the stem and the closing blocks apply no activation."""
    alpha = 0.5  # large, so that the growth is measurable against the noise
    model = build_model("resmlp", (64,), 10, get_strategy("nf", alpha=alpha), depth=9, width=512)
    from normbench.models import portable_initialization

    portable_initialization(model, 0)
    blocks = [i for i in range(9) if f"h{i:02d}_alpha" in {layer.name for layer in model.layers}]
    assert blocks == [2, 4, 6, 8]
    assert model.get_layer("h00_act").get_config()["activation"] == "linear"
    for k, i in enumerate(blocks):
        assert model.get_layer(f"h{i - 1:02d}_beta").scale == pytest.approx(1 / math.sqrt(1 + k * alpha**2))
        assert model.get_layer(f"h{i:02d}_alpha").scale == pytest.approx(alpha)
        assert model.get_layer(f"h{i:02d}_act").get_config()["activation"] == "linear"
    streams = keras.Model(model.input, [model.get_layer(f"h{i:02d}_act").output for i in [0, *blocks]])
    x = np.random.default_rng(0).normal(size=(4096, 64)).astype("float32")
    variances = [float(np.asarray(keras.ops.convert_to_numpy(s)).var(axis=0).mean()) for s in streams(x)]
    for k, var in enumerate(variances):
        assert var == pytest.approx(1 + k * alpha**2, rel=0.2), variances


def test_nf_resnet_restarts_the_variance_at_transitions():
    model = build_model("resnet", (16, 16, 3), 10, get_strategy("nf"), depth=8, base_filters=8)
    names = {layer.name for layer in model.layers}
    betas = {n: model.get_layer(n).scale for n in sorted(names) if n.endswith("_beta")}
    # stage 1 (no transition): beta 1; stages 2 and 3 start at a transition whose input had 1 + 0.04
    assert list(betas.values()) == pytest.approx([1.0, 1 / math.sqrt(1.04), 1 / math.sqrt(1.04)])
    assert "h04_shortcut" in names and "h06_shortcut" in names
    assert model.get_layer("h00_act").get_config()["activation"] == "linear"  # the stem: a zero-mean stream


def norm_free_errors() -> dict:
    """The largest errors of the comparisons above on the current backend (for _backend_checks.py)."""
    out = {}
    for mode in sorted(WS_EPSILON):
        for case in sorted(KERNELS):
            keras.backend.clear_session()
            kernel_error, output_error = ws_errors(mode, case)
            out[f"{mode}/{case}/kernel"], out[f"{mode}/{case}/output"] = kernel_error, output_error
    keras.backend.clear_session()
    got, expected, _, _ = agc_step()
    out["agc/step"] = float(max(np.abs(a - b).max() / (1 + np.abs(b).max()) for a, b in zip(got, expected)))
    return out
