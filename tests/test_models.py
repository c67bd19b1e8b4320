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
}
EXPECTED_DEPTH = {"mlp": 3, "mlp8": 8, "mlp16": 16, "mlp32": 32, "bn_paper_mlp": 3, "convnet": 3, "vgg": 4, "vgg8": 8, "vgg16": 16,
                  "dropout_paper_mlp": 3}


@pytest.mark.parametrize("strategy", NORMS.list())
@pytest.mark.parametrize("model_name", MODELS.list())
def test_every_pair_builds_compiles_and_trains_a_step(model_name, strategy, rng):
    spec = RunSpec(model_name, strategy, "mnist", model_params=SMALL.get(model_name, {}), learning_rate=0.01)
    model, _ = build_compiled(spec, (16, 16, 1), 10)
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
