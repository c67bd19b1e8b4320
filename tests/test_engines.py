"""Engines and backends compute the same thing: scan = fit (JAX), and one spec starts alike on every backend."""

import numpy as np
import pytest

from normbench.builtins import load_builtins
from normbench.engines import epoch_order, resolve_engine
from normbench.errors import ConfigError
from normbench.models import portable_kernel
from normbench.registry import NORMS
from normbench.spec import RunSpec

load_builtins()


@pytest.mark.parametrize("model", ["mlp", "convnet"])
@pytest.mark.parametrize("strategy", [*NORMS.list(), "selu[dropout]", "maxnorm[ramp]"])
def test_scan_engine_trains_the_same_weights_as_fit(jax_checks, model, strategy):
    r = jax_checks["engines"][f"{model}/{strategy}"]
    assert r["same_start"]
    assert r["moved"] > 1e-3  # training changed the weights, so agreement is not trivial
    # two epochs (14 steps, a partial batch each epoch) agree to float32 round-off, as it grows over 14 steps: on an
    # AMD EPYC CPU (XLA fuses the conv kernels differently inside the scan) convnet/batchnorm_post ended 3.9e-3 apart
    # (max |w| 1.9; loss 1.04343 vs 1.04335), the same before and after precise BN; every other case within 1e-6.
    # A computation that differs (statistics, seeds or constraints not threaded through) moves weights by ~0.1-1.
    assert r["max_abs_diff"] <= 5e-3 * max(1.0, r["max_abs"]), r
    assert r["loss_fit"] == pytest.approx(r["loss_scan"], rel=2e-4)
    assert r["scan_state_donated"]  # no second copy of the weights and optimizer state during an epoch


def test_every_registered_strategy_is_covered_by_the_engine_check(jax_checks):
    assert {k.split("/")[1] for k in jax_checks["engines"]} >= set(NORMS.list())


def test_one_spec_starts_from_the_same_weights_on_tensorflow_and_jax(jax_checks, data_dir):
    from normbench.runner import run

    assert jax_checks["epoch0"], "the JAX side found no MNIST"
    for strategy, theirs in jax_checks["epoch0"].items():
        spec = RunSpec("mlp8", strategy, "mnist", epochs=0, limit=500, eval_limit=200, val_size=500, probe_size=64,
                       train_eval_size=200)
        ours = run(spec, data_dir=data_dir, log=lambda _m: None)
        assert ours["status"] == theirs["status"] == "ok", (ours["error"], theirs["error"])
        for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
            assert ours["history"][0][key] == pytest.approx(theirs["history0"][key], rel=1e-5), key
        a, b = ours["stats"]["rows"], theirs["stats"]
        assert [list(r[:4]) for r in a] == [list(r[:4]) for r in b]
        assert [r[4] for r in a] == pytest.approx([r[4] for r in b], rel=1e-4, abs=1e-5)


RAMP = {"momentum_start": 0.5, "momentum_ramp_epochs": 1.5, "lr_schedule": "exponential", "lr_decay": 0.5}
TINY = {"mlp": ((20,), {"depth": 3, "width": 16}), "convnet": ((16, 16, 3), {"filters": [4, 8], "dense": 16})}


# the fast tier: batch norm's moving statistics, AlphaDropout's seed state, max-norm under a schedule, a conv net;
# the slow tier every other registered strategy
@pytest.mark.parametrize("model,strategy,strategy_params,extra",
                         [pytest.param("mlp", s, {}, {}, marks=() if s == "batchnorm" else (pytest.mark.slow,))
                          for s in NORMS.list()]
                         + [("mlp", "selu", {"dropout_rate": 0.1}, {}), ("mlp", "maxnorm", {}, RAMP),
                            ("convnet", "batchnorm", {}, {})])
def test_fit_engine_input_pipeline_trains_as_fit_on_arrays(model, strategy, strategy_params, extra):
    """On TensorFlow the fit engine feeds its own tf.data batches (autotuning off): the same steps as ``fit`` on the
    arrays, bit for bit (a partial last batch, moving statistics, dropout seeds, constraints, schedules)."""
    import keras

    from normbench.engines import FitEngine
    from normbench.runner import build, compile_model

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the tf.data input is TensorFlow's; other backends get the arrays")
    shape, params = TINY[model]
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((200, *shape)).astype("float32"), rng.integers(0, 3, 200)
    spec = RunSpec(model, strategy, "mnist", batch_size=32, learning_rate=0.05, model_params=params,
                   strategy_params=strategy_params, epochs=2, **extra)
    runs = []
    for pipeline in (True, False):
        keras.backend.clear_session()
        keras.utils.set_random_seed(3)
        net, _ = build(spec, shape, 3)
        compile_model(net, spec, steps_per_epoch=7)
        start = [w.copy() for w in net.get_weights()]
        engine = FitEngine(net, x, y, 32, own_batches=pipeline)  # 6 full batches and one of 8
        logs = [engine.train_epoch(epoch_order(0, k, len(y)), k) for k in (1, 2)]
        runs.append((start, net.get_weights(), logs))
    (start, ours, our_logs), (_, theirs, their_logs) = runs
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(start, ours)) > 1e-4  # training moved the weights
    assert our_logs == their_logs
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def test_the_batch_order_is_a_seeded_permutation_of_the_spec_alone():
    a = epoch_order(3, 1, 1000)
    assert sorted(a) == list(range(1000))
    assert np.array_equal(a, epoch_order(3, 1, 1000))
    assert not np.array_equal(a, epoch_order(3, 2, 1000)) and not np.array_equal(a, epoch_order(4, 1, 1000))


@pytest.mark.parametrize("dist,mode,scale", [("truncated_normal", "fan_in", 2.0), ("truncated_normal", "fan_in", 1.0),
                                             ("uniform", "fan_avg", 1.0), ("untruncated_normal", "fan_out", 1.0)])
def test_portable_kernels_have_the_initializers_variance(dist, mode, scale):
    shape = (3, 3, 64, 128)  # conv: fan_in 576, fan_out 1152
    w = portable_kernel({"scale": scale, "mode": mode, "distribution": dist}, shape, np.random.default_rng(0))
    fan = {"fan_in": 576, "fan_out": 1152, "fan_avg": 864}[mode]
    assert w.shape == shape and w.dtype == np.float32
    assert w.var() == pytest.approx(scale / fan, rel=0.02)
    if dist == "truncated_normal":
        assert np.abs(w).max() <= 2 * np.sqrt(scale / fan) / 0.87962566 + 1e-6


def test_portable_kernels_match_keras_initializers_in_distribution():
    import keras

    for name in ("he_normal", "lecun_normal", "glorot_uniform"):
        init = keras.initializers.get(name)
        ours = portable_kernel({"scale": init.scale, "mode": init.mode, "distribution": init.distribution},
                               (400, 300), np.random.default_rng(1))
        theirs = keras.ops.convert_to_numpy(init((400, 300)))
        assert ours.std() == pytest.approx(theirs.std(), rel=0.02) and abs(ours.mean()) < 1e-3
        assert np.abs(ours).max() == pytest.approx(np.abs(theirs).max(), rel=0.05)


def test_engine_requests_are_validated_before_training():
    spec = RunSpec("mlp8", "none", "mnist")
    assert resolve_engine(None, "jax", spec) == "scan" and resolve_engine(None, "tensorflow", spec) == "fit"
    with pytest.raises(ConfigError, match="needs the JAX backend"):
        resolve_engine("scan", "torch", spec)
    with pytest.raises(ConfigError, match="probe every N steps"):
        resolve_engine("scan", "jax", spec.with_(probe_every_steps=10))
    assert resolve_engine(None, "jax", spec.with_(probe_every_steps=10)) == "fit"


def test_conv_nets_default_to_fit_on_jax(rng):
    from normbench.runner import build

    mlp, _ = build(RunSpec("mlp", "none", "mnist", model_params={"depth": 2, "width": 8}), (8,), 3)
    conv, _ = build(RunSpec("convnet", "none", "cifar10", model_params={"filters": [4, 8], "dense": 8}), (16, 16, 3), 3)
    assert resolve_engine(None, "jax", RunSpec("mlp", "none", "mnist"), mlp) == "scan"
    assert resolve_engine(None, "jax", RunSpec("convnet", "none", "cifar10"), conv) == "fit"
    assert resolve_engine("scan", "jax", RunSpec("convnet", "none", "cifar10"), conv) == "scan"  # asked for: granted
