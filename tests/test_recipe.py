"""The CIFAR recipe's parts as run-spec fields: augmentation, weight decay, learning-rate schedules."""

import keras
import numpy as np
import pytest

from normbench.errors import ConfigError
from normbench.layers import CropFlip, apply_weight_decay, with_augmentation
from _backend_checks import momentum_ramp_check
from normbench.runner import build, build_compiled, make_optimizer, run
from normbench.schedules import RampedSGD, SpecSchedule, learning_rate, momentum_at
from normbench.spec import RunSpec


def test_crop_flip_takes_a_window_of_the_padded_image_and_is_the_identity_at_inference(rng):
    x = rng.normal(size=(16, 8, 8, 2)).astype("float32")
    layer = CropFlip(pad=2, seed=3)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    padded = np.pad(x, [(0, 0), (2, 2), (2, 2), (0, 0)])
    offsets, flips = set(), 0
    for i in range(len(x)):
        found = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                 if np.array_equal(y[i], (lambda w: w[:, ::-1] if f else w)(padded[i, dy:dy + 8, dx:dx + 8]))]
        assert found, f"image {i} is no window of its padded original"
        offsets.add(found[0][:2])
        flips += found[0][2]
    assert len(offsets) > 3 and 0 < flips < len(x)  # independent draws per image
    again = keras.ops.convert_to_numpy(CropFlip(pad=2, seed=3)(x, training=True))
    np.testing.assert_array_equal(again, y)  # seeded


@pytest.mark.parametrize("kind,expected", [
    ("step", [0.1, 0.1, 0.01, 0.001]),
    ("cosine", [0.1, 0.1 * 0.5 * (1 + np.cos(np.pi * 0.49)), 0.1 * 0.5 * (1 + np.cos(np.pi * 0.74)), 0.0]),
])
def test_schedules(kind, expected):
    schedule = SpecSchedule(0.1, 100, kind, [0.5, 0.75], 0.1)
    got = [float(keras.ops.convert_to_numpy(schedule(s))) for s in (0, 49, 74, 100)]
    assert got[:3] == pytest.approx(expected[:3], rel=1e-5) and got[3] == pytest.approx(expected[3], abs=1e-7)
    warm = SpecSchedule(0.1, 100, None, warmup_steps=10)
    assert [float(keras.ops.convert_to_numpy(warm(s))) for s in (0, 4, 9, 50)] == pytest.approx([0.01, 0.05, 0.1, 0.1])


def test_exponential_decay_is_per_epoch_and_continuous():
    schedule = SpecSchedule(0.1, 100, "exponential", decay=0.5, steps_per_epoch=10)
    got = [float(keras.ops.convert_to_numpy(schedule(s))) for s in (0, 10, 25, 100)]
    assert got == pytest.approx([0.1, 0.05, 0.1 * 0.5 ** 2.5, 0.1 * 0.5 ** 10], rel=1e-5)
    spec = RunSpec("mlp", "none", "mnist", epochs=3, lr_schedule="exponential", lr_decay=0.998, learning_rate=0.05)
    sized = learning_rate(spec, steps_per_epoch=550)
    assert (sized.steps_per_epoch, sized.total_steps, sized.decay) == (550, 1650, 0.998)


def test_momentum_ramps_linearly_then_stays():
    assert [float(keras.ops.convert_to_numpy(momentum_at(s, 0.5, 0.95, 100))) for s in (0, 50, 100, 10_000)] == \
        pytest.approx([0.5, 0.725, 0.95, 0.95])


def test_sgd_with_a_momentum_ramp_and_decay_makes_the_numpy_updates():
    r = momentum_ramp_check()
    assert r["max_rel_err"] < 1e-5, r


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_sgd_with_a_momentum_ramp_on_other_backends(backend, request):
    r = request.getfixturevalue(f"{backend}_checks").get("momentum_ramp")
    assert r and r["max_rel_err"] < 1e-5, r


def test_a_spec_with_a_ramp_gets_the_ramped_optimizer_sized_in_steps():
    spec = RunSpec("mlp", "none", "mnist", epochs=5, momentum=0.95, momentum_start=0.5, momentum_ramp_epochs=2.5)
    opt = make_optimizer(spec, steps_per_epoch=40)
    assert isinstance(opt, RampedSGD) and (opt.momentum_start, opt.final_momentum, opt.ramp_steps) == (0.5, 0.95, 100)
    assert type(make_optimizer(RunSpec("mlp", "none", "mnist"), 40)) is keras.optimizers.SGD
    with pytest.raises(ConfigError, match="steps per epoch"):
        make_optimizer(spec, None)


def test_a_schedule_is_sized_from_the_spec():
    spec = RunSpec("mlp", "none", "mnist", epochs=4, lr_schedule="step", warmup_epochs=0.5, learning_rate=0.1)
    s = learning_rate(spec, steps_per_epoch=50)
    assert (s.total_steps, s.warmup_steps, s.milestones) == (200, 25, [0.5, 0.75])
    assert learning_rate(RunSpec("mlp", "none", "mnist"), None) == 0.01
    with pytest.raises(ConfigError, match="steps per epoch"):
        learning_rate(spec, None)


def test_weight_decay_is_an_l2_term_whose_gradient_goes_into_the_step(rng):
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.integers(0, 3, size=16)
    after = {}
    for wd in (0.0, 0.1):
        keras.backend.clear_session()
        spec = RunSpec("mlp", "none", "mnist", momentum=0.0, learning_rate=0.5, weight_decay=wd,
                       model_params={"depth": 2, "width": 4})
        model, _ = build_compiled(spec, (6,), 3)
        kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
        start = [keras.ops.convert_to_numpy(k) for k in kernels]
        if wd:
            penalty = float(keras.ops.convert_to_numpy(keras.ops.sum(model.losses)))
            assert penalty == pytest.approx(wd / 2 * sum(float((k**2).sum()) for k in start), rel=1e-5)
        model.train_on_batch(x, y)
        after[wd] = [keras.ops.convert_to_numpy(k) for k in kernels]
    for w0, plain, decayed in zip(start, after[0.0], after[0.1]):  # one SGD step: w - lr * (grad + wd * w)
        np.testing.assert_allclose(decayed - plain, -0.5 * 0.1 * w0, atol=1e-6)
    assert apply_weight_decay(model, 0.0) == 0


def test_recipe_fields_are_validated_before_anything_trains():
    for field, value, message in [("augment", "mixup", "augment must be one of"),
                                  ("lr_schedule", "linear", "lr_schedule must be one of"),
                                  ("weight_decay", -1e-4, "weight_decay must be a number >= 0"),
                                  ("lr_milestones", [0.75, 0.5], "lr_milestones must be an increasing list"),
                                  ("lr_milestones", [1.5], "lr_milestones must be an increasing list"),
                                  ("lr_decay", 0.0, "lr_decay must be a number in"),
                                  ("warmup_epochs", "1", "warmup_epochs must be a number >= 0"),
                                  ("momentum_start", 1.0, "momentum_start must be a number in"),
                                  ("momentum_start", 0.5, "momentum_start and momentum_ramp_epochs go together"),
                                  ("momentum_ramp_epochs", 3, "momentum_start and momentum_ramp_epochs go together"),
                                  ("momentum_ramp_epochs", -1, "momentum_ramp_epochs must be a number >= 0")]:
        with pytest.raises(ConfigError, match=message):
            RunSpec("mlp", "none", "mnist", **{field: value})


def test_a_momentum_ramp_needs_sgd():
    with pytest.raises(ConfigError, match='needs optimizer "sgd"'):
        RunSpec("mlp", "none", "mnist", optimizer="adam", momentum_start=0.5, momentum_ramp_epochs=1)


def test_recipe_fields_leave_old_run_ids_alone():
    spec = RunSpec("mlp8", "none", "mnist", epochs=5)
    assert RunSpec.from_dict(spec.to_dict()).run_id == spec.run_id
    assert "augment" not in spec.canonical() and "lr_milestones" not in spec.canonical()
    assert RunSpec("mlp8", "none", "mnist", epochs=5, augment="crop_flip").run_id != spec.run_id


def test_a_run_with_the_whole_recipe_trains_through_the_augmented_model(data_dir):
    spec = RunSpec("resnet", "batchnorm", "cifar10", epochs=2, limit=200, eval_limit=100, val_size=100, probe_size=16,
                   train_eval_size=100, batch_size=50, learning_rate=0.1, augment="crop_flip", weight_decay=1e-4,
                   lr_schedule="step", warmup_epochs=0.5, model_params={"depth": 8, "base_filters": 4})
    try:
        rec = run(spec, data_dir=data_dir, log=lambda _m: None)
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"run raised {e!r}")
    if rec["status"] == "error" and "CIFAR" in (rec["error"] or "") and "not found" in rec["error"]:
        pytest.skip("no CIFAR-10 available: " + rec["error"])
    assert rec["status"] == "ok", rec["error"]
    assert rec["spec"]["augment"] == "crop_flip" and rec["spec"]["weight_decay"] == 1e-4
    assert len(rec["layers"]) == 7 and {"epoch", "train_loss"} <= set(rec["history"][-1])
    # the probe measured the base model's blocks (augmentation is outside them)
    assert {row[1] for row in rec["stats"]["rows"]} == set(range(7))


def test_the_augmented_model_shares_the_base_models_weights():
    keras.backend.clear_session()
    model, _ = build(RunSpec("convnet", "none", "cifar10", model_params={"filters": [4, 8], "dense": 8}), (16, 16, 3), 10)
    wrapped = with_augmentation(model, "crop_flip", 0)
    assert {id(v) for v in model.trainable_variables} == {id(v) for v in wrapped.trainable_variables}
    assert with_augmentation(model, None, 0) is model


def test_every_suite_file_parses_and_its_specs_pass_the_pre_flight():
    from normbench.builtins import load_builtins
    from normbench.preflight import validate_specs
    from normbench.registry import SUITES
    from normbench.suites import get_suite

    load_builtins()
    for name in SUITES.list():
        specs = get_suite(name).specs
        assert specs, name
        validate_specs(list(specs))


def test_the_cifar_resnet_suite_is_he_et_al_s_schedule():
    from normbench.suites import get_suite

    specs = get_suite("cifar-resnet").specs
    steps_per_epoch = -(-(50000 - 5000) // 128)
    for s in specs:
        total = s.epochs * steps_per_epoch
        assert 64000 <= total <= 64100  # 64k iterations
        assert [round(m * total, -3) for m in s.lr_milestones] == [32000, 48000]
        assert (s.learning_rate, s.momentum, s.weight_decay, s.batch_size, s.augment) == (0.1, 0.9, 1e-4, 128, "crop_flip")
    assert {s.seed for s in specs} == {0, 1, 2} and {s.model for s in specs} == {"resnet20"}
