import keras
import pytest
import numpy as np

from normbench.models import build_model
from normbench.norms import get_strategy
from normbench.probe import ActivationProbe
from normbench.runner import build_compiled
from normbench.spec import RunSpec
from normbench.stats import summarize


def _bn_state(model):
    return [v.numpy().copy() for l in model.layers if isinstance(l, keras.layers.BatchNormalization) for v in l.non_trainable_variables]


def test_probe_leaves_bn_moving_statistics_and_weights_unchanged(rng):
    for strategy in ("batchnorm", "batchnorm_post"):
        model, _ = build_compiled(RunSpec("mlp", strategy, "mnist", model_params={"depth": 3, "width": 16}), (20,), 4)
        x = rng.normal(3.0, 2.0, size=(64, 20)).astype("float32")  # far from the initial moving stats (0, 1)
        model.train_on_batch(x, rng.integers(0, 4, size=64))  # moving stats move once, in training
        state, weights = _bn_state(model), model.get_weights()
        probe = ActivationProbe(model, x)
        probe.measure(0)
        probe.measure(1)
        assert all(np.array_equal(a, b) for a, b in zip(state, _bn_state(model)))
        assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
        # the check above can fail: a training-mode call does move the statistics
        model(x, training=True)
        assert not all(np.array_equal(a, b) for a, b in zip(state, _bn_state(model)))


def test_probe_rows_equal_direct_computation(rng):
    keras.utils.set_random_seed(1)
    model = build_model("mlp", (12,), 3, get_strategy("batchnorm"), depth=2, width=8)
    x = rng.normal(size=(32, 12)).astype("float32")
    rows = ActivationProbe(model, x).measure(5)
    sub = keras.Model(model.input, [model.get_layer("h01_act").input, model.get_layer("h01_act").output])
    pre, act = (np.asarray(t) for t in sub(x, training=False))
    got = {(tap, q): v for e, layer, tap, q, v in rows if layer == 1}
    assert {e for e, *_ in rows} == {5}
    for q, v in summarize(pre).items():
        assert np.isclose(got[("pre", q)], v, rtol=1e-5, atol=1e-6)
    for q, v in summarize(act, "relu").items():
        assert np.isclose(got[("act", q)], v, rtol=1e-5, atol=1e-6)
    kernel = model.get_layer("h01_linear").kernel.numpy()
    assert np.isclose(got[("kernel", "norm_max")], np.linalg.norm(kernel, axis=0).max(), rtol=1e-6)


def _rows_by_key(rows):
    return {(layer, tap, q): v for _, layer, tap, q, v in rows}


# (model, strategy, model params, input shape): every tap kind (pre, act with each saturating activation, skip and
# branch of a residual block, concat of an inception module) and a conv tap above MAX_VALUES (its fixed row subset)
PROBE_CASES = [
    ("mlp", "none", {"depth": 2, "width": 8, "activation": "relu"}, (12,)),
    ("mlp", "none", {"depth": 2, "width": 8, "activation": "sigmoid"}, (12,)),
    ("mlp", "none", {"depth": 2, "width": 8, "activation": "tanh"}, (12,)),
    ("mlp", "selu", {"depth": 2, "width": 8}, (12,)),
    ("resmlp8", "batchnorm", {"width": 16}, (12,)),
    pytest.param(("inception", "batchnorm", {"width": 0.25}, (16, 16, 3)), marks=pytest.mark.slow),  # 20 s
    ("convnet", "batchnorm", {"filters": [64, 8], "dense": 16}, (16, 16, 3)),
]


def probe_device_error(case) -> float:
    """The largest difference between the probe's device and NumPy statistics on ``case`` over two measurements
    (the second after a weight change), relative to max(1, the tap's standard deviation). Also run on JAX and
    torch by tests/_backend_checks.py. Fails at once if the two paths name other quantities or order them otherwise.
    """
    from normbench.stats import MAX_VALUES

    name, strategy, params, shape = case
    keras.utils.set_random_seed(2)
    model = build_model(name, shape, 3, get_strategy(strategy), **params)
    x = np.random.default_rng(0).normal(size=(64, *shape)).astype("float32")
    host, device = (ActivationProbe(model, x, on_device=d) for d in (False, True))
    if name == "convnet":  # the conv case must exercise the fixed row subset
        assert any(int(np.prod(t.shape[1:])) * 64 > MAX_VALUES for t in host.probe_model.outputs)
    worst = 0.0
    for epoch in (0, 1):
        a, b = host.measure(epoch), device.measure(epoch)
        assert [r[:4] for r in a] == [r[:4] for r in b]
        got, want = _rows_by_key(b), _rows_by_key(a)
        for key, v in want.items():
            scale = max(1.0, abs(want.get((key[0], key[1], "std"), 1.0)))
            worst = max(worst, abs(got[key] - v) / scale)
        kernel = host.blocks[0][2].kernel
        kernel.assign(kernel * 1.5)  # epoch 1 sees changed weights
    return worst


@pytest.mark.parametrize("case", PROBE_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2].get('activation', '')}")
def test_device_statistics_equal_numpy(case):
    """The statistics the probe computes with the backend's ops equal NumPy's (normbench.stats) on the same taps,
    up to float32 accumulation (means and deviations; NumPy accumulates in float64), in the same order. A wrong
    percentile, subset or threshold is off by ~0.01-1 of the deviation, far above the bound."""
    assert probe_device_error(case) <= 2e-5


@pytest.mark.slow
@pytest.mark.parametrize("checks", ["jax_checks", "torch_checks"])
def test_device_statistics_equal_numpy_on_other_backends(request, checks):
    errors = request.getfixturevalue(checks)["probe_device"]
    assert len(errors) == len(PROBE_CASES) - 1  # all but the inception case (slow to build, TensorFlow only)
    assert max(errors.values()) <= 2e-5, errors


def test_device_statistics_of_a_diverged_network_are_nan(rng):
    """A NaN weight makes every tap after it NaN: mean, deviation and percentiles are NaN on both paths, as NumPy
    gives them (a sorting backend would otherwise interpolate around the NaNs)."""
    keras.utils.set_random_seed(3)
    model = build_model("mlp", (12,), 3, get_strategy("none"), depth=2, width=8)
    kernel = model.get_layer("h00_linear").kernel
    kernel.assign(keras.ops.where(keras.ops.arange(kernel.shape[1]) == 0, float("nan"), kernel))
    x = rng.normal(size=(32, 12)).astype("float32")
    for on_device in (False, True):
        rows = _rows_by_key(ActivationProbe(model, x, on_device=on_device).measure(0))
        for q in ("mean", "std", "p05", "p50", "p95"):
            assert np.isnan(rows[(1, "pre", q)]), (on_device, q)
