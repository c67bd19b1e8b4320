"""Max-norm holds after training steps, per unit, for Dense and Conv kernels."""

import numpy as np
import pytest

from normbench.runner import build_compiled
from normbench.spec import RunSpec


def _unit_norms(model):
    out = {}
    for layer in model.layers:
        if layer.name.endswith("_linear"):
            k = layer.kernel.numpy()
            out[layer.name] = np.linalg.norm(k.reshape(-1, k.shape[-1]), axis=0)
    return out


@pytest.mark.parametrize("c", [0.5, 2.0])
def test_maxnorm_bounds_every_hidden_unit_after_training(c, rng):
    x = rng.normal(0, 5, size=(64, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 10, size=64)
    norms = {}
    for strategy, params in (("maxnorm", {"c": c}), ("none", {})):
        spec = RunSpec("convnet", strategy, "mnist", learning_rate=0.5, momentum=0.0, strategy_params=params,
                       model_params={"filters": (4, 8), "dense": 16})
        model, _ = build_compiled(spec, (16, 16, 1), 10)
        for _ in range(5):
            model.train_on_batch(x, y)
        norms[strategy] = _unit_norms(model)
    for name, n in norms["maxnorm"].items():
        assert n.max() <= c * (1 + 1e-5), name  # conv filters (h00, h01) and the dense layer (h02)
    # the same training without the constraint does exceed c, so the check above can fail
    assert max(n.max() for n in norms["none"].values()) > c
