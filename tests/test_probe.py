import keras
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
