"""Every (builder, strategy) pair builds, compiles and trains a step: parametrized over the registries."""

import keras
import numpy as np
import pytest

from normbench.errors import ConfigError
from normbench.models import build_model
from normbench.norms import get_strategy
from normbench.probe import hidden_blocks
from normbench.registry import MODELS, NORMS
from normbench.runner import build_compiled
from normbench.spec import RunSpec

from _tiers import covering

# Narrow settings keep the grid of pairs fast; builders missing here run with their defaults.
SMALL = {
    "mlp": {"depth": 3, "width": 16},
    "mlp8": {"width": 16},
    "mlp16": {"width": 16},
    "mlp32": {"width": 16},
    "convnet": {"filters": (4, 8), "dense": 16},
    "vgg": {"depth": 4, "base_filters": 4},
    "vgg8": {"base_filters": 4},
    "vgg16": {"base_filters": 4},
    "resnet": {"depth": 8, "base_filters": 2},
    "resnet20": {"base_filters": 2},
    "resnet32": {"base_filters": 2},
    "resnet56": {"base_filters": 2},
    "plain20": {"base_filters": 2},
    "inception": {"width": 0.25},
    "resmlp": {"depth": 3, "width": 8},
    "resmlp8": {"width": 8},
    "resmlp16": {"width": 8},
    "resmlp32": {"width": 8},
}
EXPECTED_DEPTH = {"mlp": 3, "mlp8": 8, "mlp16": 16, "mlp32": 32, "bn_paper_mlp": 3, "convnet": 3, "vgg": 4, "vgg8": 8, "vgg16": 16,
                  "dropout_paper_mlp": 3, "resnet": 7, "resnet20": 19, "resnet32": 31, "resnet56": 55, "plain20": 19, "resmlp": 3,
                  "resmlp8": 8, "resmlp16": 16, "resmlp32": 32,
                  "inception": 31}


# Every pair runs in `make test-all`; `make test` keeps the pairs that cover each model and each strategy once.
@pytest.mark.parametrize("model_name, strategy",
                         covering([(m, s) for m in MODELS.list() for s in NORMS.list()], lambda c: c,
                                  ids=lambda c: f"{c[0]}-{c[1]}"))
def test_every_pair_builds_compiles_and_trains_a_step(model_name, strategy, rng):
    spec = RunSpec(model_name, strategy, "mnist", model_params=SMALL.get(model_name, {}), learning_rate=0.01)
    model, _ = build_compiled(spec, (16, 16, 1), 10)
    # Eagerly: the same layers and train step, 10x faster than tracing a graph for one step (the
    # compiled paths are trained by the runner, engine and smoke tests); 230 pairs stay under 3 minutes.
    model.run_eagerly = True
    x = rng.normal(size=(8, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 10, size=8)
    before = [w.copy() for w in model.get_weights()]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert model.predict_on_batch(x).shape == (8, 10)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights())), "a step changed no weight"
    if model_name in EXPECTED_DEPTH:
        assert len(hidden_blocks(model)) == EXPECTED_DEPTH[model_name]


def test_unknown_builder_parameter_names_valid_ones():
    with pytest.raises(ConfigError, match=r"takes no parameter\(s\) \['heigth'\]; it takes: \['depth', 'width', 'activation'\]"):
        build_model("mlp", (8,), 2, get_strategy("none"), heigth=3)


def test_vgg_refuses_images_too_small_for_its_poolings():
    with pytest.raises(ConfigError, match="at least 16x16"):
        build_model("vgg8", (8, 8, 1), 2, get_strategy("none"))


def test_same_seed_same_initial_weights():
    ws = []
    for _ in range(2):
        keras.backend.clear_session()
        keras.utils.set_random_seed(7)
        ws.append(build_model("mlp", (8,), 2, get_strategy("none"), depth=2, width=4).get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*ws))


def test_vgg_width_reaches_the_published_filters():
    model = build_model("vgg16", (32, 32, 3), 10, get_strategy("none"), width=4)
    filters = [int(linear.kernel.shape[-1]) for _, _, linear in hidden_blocks(model)]
    assert filters[0] == 64 and filters[-1] == 512
    with pytest.raises(ConfigError, match="width must be a (positive multiplier|number > 0)"):
        build_model("vgg8", (32, 32, 3), 10, get_strategy("none"), width=0)


def test_plain_and_residual_nets_of_one_depth_differ_only_in_their_shortcuts():
    res = build_model("resnet20", (32, 32, 3), 10, get_strategy("batchnorm"))
    plain = build_model("plain20", (32, 32, 3), 10, get_strategy("batchnorm"))
    # convs 432 + 6*2304 + (4608 + 5*9216) + (18432 + 5*36864) = 267,696; BN 4 * (7*16 + 6*32 + 6*64) = 2,752;
    # logits 650: 271,098 (He et al.: 0.27M). Option-A shortcuts add no parameters.
    assert res.count_params() == plain.count_params() == 271098
    assert sum(layer.name.endswith("_add") for layer in res.layers) == 9
    assert not any(layer.name.endswith("_add") for layer in plain.layers)
