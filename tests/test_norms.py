import keras
import pytest

from normbench.errors import ConfigError
from normbench.models import build_model
from normbench.norms import NormStrategy, get_strategy
from normbench.registry import NORMS


@pytest.mark.parametrize("name", NORMS.list())
def test_strategy_config_round_trips(name):
    s = get_strategy(name)
    assert NormStrategy.from_config(s.get_config()) == s
    assert get_strategy(s.get_config()) == s
    assert get_strategy(s) is s


def test_get_strategy_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"takes no parameter\(s\) \['radius'\]; it takes: \['c', 'dropout_rate', 'input_dropout_rate'\]"):
        get_strategy("maxnorm", radius=2)
    with pytest.raises(ConfigError, match="a dropout rate needs a dropout kind"):
        get_strategy("none", dropout_rate=0.5)
    with pytest.raises(ConfigError, match="cannot interpret 42"):
        get_strategy(42)
    with pytest.raises(ConfigError, match="norm must be one of"):
        NormStrategy("x", norm="middle")
    with pytest.raises(ConfigError, match="placement must be one of"):
        get_strategy("layernorm", placement="middle")
    with pytest.raises(ConfigError, match="data_init is weight normalization's"):
        get_strategy("none", data_init=True)
    with pytest.raises(ConfigError, match="unknown NormStrategy field"):
        NormStrategy.from_config({"name": "x", "colour": "red"})


def test_any_strategy_field_can_be_overridden_by_parameter():
    s = get_strategy("batchnorm_post", max_norm=2.0)
    assert s.max_norm == 2.0 and s.norm == "batch" and s.placement == "post" and s.name == "batchnorm_post"
    assert get_strategy("selu", dropout_rate=0.05).dropout == "alpha"


def test_input_dropout_comes_first_and_only_once():
    model = build_model("mlp", (8,), 3, get_strategy("maxnorm", c=2.0, dropout_rate=0.5, input_dropout_rate=0.2),
                        depth=2, width=4)
    names = [l.name for l in model.layers]
    assert names.index("input_drop") < names.index("h00_linear")
    assert model.get_layer("input_drop").rate == 0.2 and model.get_layer("h01_drop").rate == 0.5
    assert names.count("input_drop") == 1


def _types(model):
    return [type(l).__name__ for l in model.layers if l.name.startswith("h00_")]


def test_bn_placement_pre_and_post():
    pre = build_model("mlp", (8,), 3, get_strategy("batchnorm"), depth=2, width=4)
    post = build_model("mlp", (8,), 3, get_strategy("batchnorm_post"), depth=2, width=4)
    assert _types(pre) == ["Dense", "BatchNormalization", "Activation"]
    assert _types(post) == ["Dense", "Activation", "BatchNormalization"]
    assert pre.get_layer("h00_linear").bias is None  # absorbed by BN's beta
    assert post.get_layer("h00_linear").bias is not None


def test_selu_bundle():
    model = build_model("mlp", (8,), 3, get_strategy("selu", dropout_rate=0.05), depth=2, width=4)
    assert _types(model) == ["Dense", "Activation", "AlphaDropout"]
    assert model.get_layer("h00_act").get_config()["activation"] == "selu"
    assert type(model.get_layer("h00_linear").kernel_initializer).__name__ == "LecunNormal"
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in model.layers)


def test_maxnorm_axes_per_kernel_kind():
    model = build_model("convnet", (16, 16, 1), 3, get_strategy("maxnorm", c=2.0), filters=(2, 3), dense=4)
    conv, dense = model.get_layer("h00_linear"), model.get_layer("h02_linear")
    assert conv.kernel_constraint.get_config() == {"max_value": 2.0, "axis": [0, 1, 2]}
    assert dense.kernel_constraint.get_config() == {"max_value": 2.0, "axis": 0}
    assert model.get_layer("logits").kernel_constraint is None  # hidden kernels only


def test_builder_activation_respected_unless_strategy_fixes_it():
    sig = build_model("bn_paper_mlp", (8,), 3, get_strategy("none"))
    assert sig.get_layer("h02_act").get_config()["activation"] == "sigmoid"
    selu = build_model("bn_paper_mlp", (8,), 3, get_strategy("selu"))
    assert selu.get_layer("h02_act").get_config()["activation"] == "selu"


def test_input_scaling_is_the_runs_not_a_strategys():
    """Every strategy gets the run's inputs: the strategy has no input_scaling; asking for one names the fix;
    an old record's strategy config that had one is still read."""
    import dataclasses

    assert "input_scaling" not in {f.name for f in dataclasses.fields(NormStrategy)}
    with pytest.raises(ConfigError, match="input_scaling is no longer a strategy parameter.*run setting"):
        get_strategy("selu", input_scaling="standardize")
    old = {**get_strategy("selu").get_config(), "input_scaling": "standardize"}
    assert NormStrategy.from_config(old) == get_strategy("selu")


def test_a_stored_config_from_before_the_group_minimum_reads_as_what_it_ran():
    old = {k: v for k, v in get_strategy("groupnorm").get_config().items() if k != "min_group_channels"}
    assert NormStrategy.from_config(old).min_group_channels == 1
    assert NormStrategy.from_config(get_strategy("groupnorm").get_config()) == get_strategy("groupnorm")
