"""Weight norm, spectral norm, mean-only BN, option-A shortcuts and residual blocks, on the real layers."""

import dataclasses

import keras
import numpy as np
import pytest

from _backend_checks import reparametrization
from normbench.errors import ConfigError
from normbench.layers import KernelReparametrization, MeanOnlyBatchNormalization, ShortcutA, group_count
from normbench.models import build_model
from normbench.norms import NormStrategy, get_strategy
from normbench.probe import ActivationProbe


def _check_reparametrization(results):
    for case, r in results.items():
        assert r["wrapped"] >= 3, case  # every hidden linear layer is reparametrized
        if case.endswith("weightnorm"):
            assert r["init_max_abs_mean"] < 1e-4, (case, r)
            assert r["init_max_abs_var_minus_1"] < 1e-3, (case, r)
            assert r["identity_max_rel_err"] < 1e-5, (case, r)
        else:  # one power-iteration step per training step keeps the estimate within a few percent
            assert r["sigmas"] and all(abs(s - 1.0) < 0.03 for s in r["sigmas"]), (case, r)


def test_weight_and_spectral_norm_identities_on_tensorflow():
    _check_reparametrization(reparametrization())


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_weight_and_spectral_norm_identities_on_other_backends(backend, request):
    _check_reparametrization(request.getfixturevalue(f"{backend}_checks")["reparametrization"])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_norm_layers_match_the_numpy_reference_on_other_backends(backend, request):
    """tests/test_norm_numerics.py's comparison (every kind, Dense and Conv, training and inference) there."""
    from test_norm_numerics import KINDS, TOLERANCE

    errors = request.getfixturevalue(f"{backend}_checks")["norm_numerics"]
    assert len(errors) == 4 * len(KINDS) and max(errors.values()) < TOLERANCE, errors


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_weight_standardization_and_agc_match_numpy_on_other_backends(backend, request):
    """tests/test_norm_free.py's comparisons (both standardizations on Dense and Conv, AGC's step) there."""
    from test_norm_free import KERNELS, TOLERANCE as FREE_TOLERANCE, WS_EPSILON

    errors = request.getfixturevalue(f"{backend}_checks")["norm_free"]
    assert len(errors) == 2 * len(WS_EPSILON) * len(KERNELS) + 1 and max(errors.values()) < FREE_TOLERANCE, errors


def test_weight_norm_without_data_init_computes_what_the_plain_layer_would(rng):
    dense = keras.layers.Dense(5, name="d")
    wrapped = KernelReparametrization(keras.layers.Dense(5), mode="weight")
    x = rng.normal(size=(4, 7)).astype("float32")
    dense.build((None, 7))
    wrapped.build((None, 7))
    wrapped.layer.kernel.assign(dense.kernel)
    wrapped.reset()  # g = ||v||: w == v
    np.testing.assert_allclose(keras.ops.convert_to_numpy(wrapped(x)), keras.ops.convert_to_numpy(dense(x)), rtol=1e-5)


def test_spectral_norm_gradient_flows_through_sigma(rng):
    """d(loss)/dv includes the sigma term: scaling v leaves the effective kernel (and the loss) unchanged,
    so the gradient is orthogonal to v (a projection like Keras' own wrapper would not be)."""
    import tensorflow as tf

    layer = KernelReparametrization(keras.layers.Dense(3, use_bias=False), mode="spectral")
    layer.build((None, 6))
    x = tf.constant(rng.normal(size=(8, 6)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=False) ** 2)
    grad = tape.gradient(loss, layer.layer.kernel).numpy().ravel()
    v = layer.layer.kernel.numpy().ravel()
    assert abs(grad @ v) < 1e-4 * np.linalg.norm(grad) * np.linalg.norm(v)


def test_mean_only_batch_norm_centres_in_training_and_uses_the_moving_mean_at_inference(rng):
    layer = MeanOnlyBatchNormalization(momentum=0.5)
    x = (rng.normal(size=(32, 4, 4, 3)) * 2 + 5).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2)), x.std(axis=(0, 1, 2)), rtol=1e-5)  # no division
    moving = keras.ops.convert_to_numpy(layer.moving_mean)
    np.testing.assert_allclose(moving, 0.5 * x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x, training=False)), x - moving, rtol=1e-5)


def test_option_a_shortcut_subsamples_and_zero_pads(rng):
    x = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    y = keras.ops.convert_to_numpy(ShortcutA(8, 2)(x))
    assert y.shape == (2, 4, 4, 8)
    np.testing.assert_array_equal(y[..., 2:6], x[:, ::2, ::2, :])
    assert not y[..., :2].any() and not y[..., 6:].any()


@pytest.mark.parametrize("channels,expected", [(256, 32), (64, 16), (32, 8), (16, 4), (48, 12), (8, 2), (3, 1), (1, 1)])
def test_group_count_rule(channels, expected):
    """At most 32 groups and at least 4 channels per group (tests/test_norm_numerics.py has the whole rule)."""
    assert group_count(channels, 32) == expected


def test_group_norm_groups_are_recorded_per_layer_and_never_one_channel():
    from normbench.runner import norm_description

    model = build_model("resnet", (16, 16, 3), 10, get_strategy("groupnorm"), depth=8, base_filters=16)
    assert norm_description(model, 0) == {"norm": "GroupNormalization", "norm_groups": 4}  # 16 channels
    assert norm_description(model, 6) == {"norm": "GroupNormalization", "norm_groups": 16}  # 64 channels
    per_group = {int(layer.input.shape[-1]): int(layer.input.shape[-1]) // layer.groups for layer in model.layers
                 if isinstance(layer, keras.layers.GroupNormalization)}
    assert per_group == {16: 4, 32: 4, 64: 4}
    mlp = build_model("mlp", (8,), 3, get_strategy("groupnorm"), depth=2, width=16)
    assert norm_description(mlp, 0) == {"norm": "GroupNormalization", "norm_groups": 4}  # 4 groups of 4 units


def test_strategies_say_whether_they_need_batch_statistics():
    """Facts about named strategies (a strategy added later is covered by its kind's entry: test_norm_numerics)."""
    needs = {"batchnorm": True, "batchnorm_post": True, "weightnorm_meanbn": True, "none": False, "selu": False,
             "maxnorm": False, "layernorm": False, "groupnorm": False, "rmsnorm": False, "weightnorm": False,
             "spectralnorm": False, "dyt": False, "derf": False, "ws_groupnorm": False, "nf": False}
    assert {name: get_strategy(name).needs_batch_statistics for name in needs} == needs


def test_schema_1_strategy_configs_still_read():
    old = {"name": "batchnorm_post", "activation": None, "kernel_initializer": None, "batchnorm": "post",
           "max_norm": None, "dropout": None, "dropout_rate": 0.0, "input_dropout_rate": 0.0, "input_scaling": "unit"}
    # the group minimum did not exist then: such a config reads as the divisor rule alone (1 channel per group)
    assert NormStrategy.from_config(old) == dataclasses.replace(get_strategy("batchnorm_post"), min_group_channels=1)
    assert get_strategy("none", batchnorm="pre").norm == "batch"


def _kinds(model, index):
    return [type(layer).__name__ for layer in model.layers if layer.name.startswith(f"h{index:02d}_")]


def test_residual_placement_pre_is_inside_the_branch_and_post_after_the_addition():
    pre = build_model("resmlp", (8,), 3, get_strategy("batchnorm"), depth=3, width=4)
    post = build_model("resmlp", (8,), 3, get_strategy("layernorm", placement="post"), depth=3, width=4)
    assert _kinds(pre, 2) == ["Dense", "BatchNormalization", "Add", "Activation"]
    assert _kinds(post, 2) == ["Dense", "Add", "Activation", "LayerNormalization"]


def test_zero_initialized_branches_start_as_the_identity():
    model = build_model("resnet", (16, 16, 3), 10, get_strategy("none"), depth=8, base_filters=4,
                        zero_init_residual=True)
    closing = [layer for layer in model.layers if layer.name.endswith("_add")]
    assert len(closing) == 3
    for add in closing:
        kernel = model.get_layer(add.name.replace("_add", "_linear")).kernel
        assert not keras.ops.convert_to_numpy(kernel).any()
    bn = build_model("resnet", (16, 16, 3), 10, get_strategy("batchnorm"), depth=8, base_filters=4,
                     zero_init_residual=True)
    assert not keras.ops.convert_to_numpy(bn.get_layer("h02_norm").gamma).any()
    rms = build_model("resnet", (16, 16, 3), 10, get_strategy("rmsnorm"), depth=8, base_filters=4,
                      zero_init_residual=True)
    assert type(rms.get_layer("h02_norm")).__name__ == "SampleRMSNormalization"
    assert not keras.ops.convert_to_numpy(rms.get_layer("h02_norm").gamma).any()
    assert keras.ops.convert_to_numpy(rms.get_layer("h01_norm").gamma).all()
    with pytest.raises(ConfigError, match="weight normalization"):
        build_model("resnet", (16, 16, 3), 10, get_strategy("weightnorm"), depth=8, zero_init_residual=True)
    with pytest.raises(ConfigError, match="6n\\+2"):
        build_model("resnet", (16, 16, 3), 10, get_strategy("none"), depth=21)


def test_probe_taps_the_skip_and_the_branch_whose_sum_is_the_pre_activation(rng):
    model = build_model("resnet", (16, 16, 3), 10, get_strategy("batchnorm"), depth=8, base_filters=4, shortcut="B")
    rows = ActivationProbe(model, rng.normal(size=(16, 16, 16, 3)).astype("float32")).measure(0)
    got = {(layer, tap, q): v for _, layer, tap, q, v in rows}
    taps = {(layer, tap) for layer, tap, _ in got}
    assert {(2, "skip"), (2, "branch"), (4, "skip"), (6, "skip")} <= taps
    assert (1, "skip") not in taps  # the first conv of a block closes no branch
    for layer in (2, 4, 6):  # means add up (the pre-activation is skip + branch)
        assert got[(layer, "pre", "mean")] == pytest.approx(got[(layer, "skip", "mean")] + got[(layer, "branch", "mean")],
                                                            rel=1e-4, abs=1e-5)


def test_probe_taps_each_inception_concatenation(rng):
    model = build_model("inception", (16, 16, 3), 10, get_strategy("groupnorm"), width=0.25)
    rows = ActivationProbe(model, rng.normal(size=(8, 16, 16, 3)).astype("float32")).measure(0)
    concat = sorted({layer for _, layer, tap, _, _ in rows if tap == "concat"})
    assert concat == [6, 12, 18, 24, 30]  # the stem, then 6 branch convs per module
    assert model.get_layer("h06_concat").output.shape[-1] == sum(max(1, round(f * 0.25)) for f in (16, 24, 8, 8))


@pytest.mark.slow
def test_a_tiny_grid_of_the_new_families_runs_end_to_end(tmp_path, data_dir):
    """The residual and inception builders through the real runner, records and report (1 epoch, 100 images)."""
    from normbench import store
    from normbench.grid import run_grid
    from normbench.report import make_report
    from normbench.spec import RunSpec

    tiny = dict(epochs=1, limit=100, eval_limit=100, val_size=100, probe_size=16, train_eval_size=100, batch_size=50)
    specs = [RunSpec("resnet", "groupnorm", "cifar10", model_params={"depth": 8, "base_filters": 4}, **tiny),
             RunSpec("plain20", "batchnorm", "cifar10", model_params={"base_filters": 2}, **tiny),
             RunSpec("resmlp", "weightnorm", "cifar10", model_params={"depth": 5, "width": 16}, **tiny),
             RunSpec("inception", "layernorm", "cifar10", model_params={"width": 0.25}, **tiny)]
    run_grid(specs, tmp_path / "runs", data_dir=data_dir, log=lambda _m: None)
    records = {r["spec"]["model"]: r for r in store.load_records(tmp_path / "runs")}
    if any("not found" in (r.get("error") or "") for r in records.values()):
        pytest.skip("no CIFAR-10 available")
    assert {m: r["status"] for m, r in records.items()} == {s.model: "ok" for s in specs}
    taps = {m: {row[2] for row in r["stats"]["rows"]} for m, r in records.items()}
    assert {"skip", "branch"} <= taps["resnet"] and {"skip", "branch"} <= taps["resmlp"]
    assert "concat" in taps["inception"] and "skip" not in taps["plain20"]
    make_report(tmp_path / "runs", tmp_path / "report", log=lambda _m: None)
    assert "resnet" in (tmp_path / "report" / "README.md").read_text()
