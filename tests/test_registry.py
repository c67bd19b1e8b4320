import pytest

from normbench import models, norms  # noqa: F401
from normbench.errors import UnknownNameError
from normbench.registry import MODELS, NORMS, Registry


def test_register_by_decorator_and_lookup():
    reg = Registry("widget")

    @reg.register
    def alpha():
        return 1

    @reg.register(name="beta2")
    def beta():
        return 2

    assert reg.get("alpha")() == 1
    assert reg.get("beta2")() == 2
    assert reg.list() == ["alpha", "beta2"]
    assert reg.list("b*") == ["beta2"]
    assert "alpha" in reg and len(reg) == 2


def test_duplicate_registration_fails():
    reg = Registry("widget")
    reg.register(lambda: 0, name="x")
    with pytest.raises(ValueError, match="already registered"):
        reg.register(lambda: 0, name="x")


def test_unknown_name_lists_valid_names_and_suggests():
    with pytest.raises(UnknownNameError) as exc:
        MODELS.get("mlp9")
    msg = str(exc.value)
    assert "unknown model 'mlp9'" in msg
    assert "Did you mean" in msg
    for name in MODELS.list():
        assert name in msg


def test_expand_comma_lists_and_globs_in_order_without_repeats():
    assert MODELS.expand("mlp32,mlp8") == ["mlp32", "mlp8"]
    assert MODELS.expand("vgg*, vgg8") == ["vgg", "vgg16", "vgg8"]
    batch_named = NORMS.expand(["batchnorm*"])
    assert batch_named == [name for name in NORMS.list() if name.startswith("batchnorm")]
    assert batch_named[:2] == ["batchnorm", "batchnorm_post"]
    with pytest.raises(UnknownNameError, match="no strategy matches the pattern 'zz\\*'"):
        NORMS.expand("zz*")
    with pytest.raises(UnknownNameError, match="unknown strategy 'bn'"):
        NORMS.expand("none,bn")


def test_required_names_are_registered():
    for name in ["mlp", "mlp8", "mlp16", "mlp32", "bn_paper_mlp", "convnet", "vgg", "vgg8", "vgg16", "resnet20",
                 "resnet32", "resnet56", "plain20", "resmlp8", "resmlp16", "resmlp32"]:
        assert name in MODELS
    for name in ["none", "batchnorm", "batchnorm_post", "maxnorm", "selu"]:  # the SELU paper's comparison
        assert name in NORMS


def test_every_strategy_and_model_of_the_committed_baseline_is_registered():
    """The CI baseline's runs name strategies and models that must still exist (names read from the records, so
    adding a strategy edits no list here)."""
    import json
    from pathlib import Path

    specs = [json.loads(p.read_text())["spec"]
             for p in (Path(__file__).resolve().parents[1] / "results" / "baseline").glob("*.json")]
    assert specs
    assert {s["strategy"] for s in specs} <= set(NORMS.list())
    assert {s["model"] for s in specs} <= set(MODELS.list())
