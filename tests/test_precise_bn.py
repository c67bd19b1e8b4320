"""Precise BN: evaluations of batch-norm networks use re-estimated statistics, and measuring never changes training."""

import numpy as np
import pytest

from normbench import precise_bn, store
from normbench.builtins import load_builtins
from normbench.grid import run_grid
from normbench.norms import BATCH_STATISTICS
from normbench.registry import NORMS
from normbench.runner import build
from normbench.spec import RunSpec

from _tiny import quiet, tiny

TINY = tiny(epochs=2, limit=300, val_size=200, probe_size=32)
load_builtins()
BATCH_STRATEGIES = [s for s in NORMS.expand("*") if NORMS.get(s)().norm in BATCH_STATISTICS]


@pytest.mark.parametrize("strategy", BATCH_STRATEGIES)
def test_reestimate_sets_the_average_of_the_batch_statistics(strategy, rng):
    """The first batch-statistics layer's mean (and variance) is the mean over the batches of each batch's own,
    computed in NumPy from the layer's inputs; other state is untouched; dropout plays no part."""
    import keras

    model, _ = build(RunSpec("mlp", strategy, "mnist", model_params={"depth": 3, "width": 16}), (20,), 10)
    x = rng.normal(1.0, 2.0, size=(4 * 16, 20)).astype("float32")
    pbn = precise_bn.PreciseBN(model)
    assert pbn and pbn.reestimate(x, 16) == 4
    layer = pbn.layers[0]
    h = np.asarray(keras.Model(model.input, layer.input).predict_on_batch(x), dtype=np.float64).reshape(4, 16, -1)
    np.testing.assert_allclose(layer.moving_mean.numpy(), h.mean(axis=1).mean(axis=0), rtol=1e-4, atol=1e-5)
    if hasattr(layer, "moving_variance"):
        np.testing.assert_allclose(layer.moving_variance.numpy(), h.var(axis=1).mean(axis=0), rtol=1e-3, atol=1e-5)
    assert layer.momentum == 0.99  # the layer's own momentum is back


def test_moving_statistics_restore_exactly(rng):
    model, _ = build(RunSpec("mlp", "batchnorm", "mnist", model_params={"depth": 3, "width": 16}), (20,), 10)
    saved = precise_bn.MovingStatistics(model)
    before = [v.numpy().copy() for v in saved.variables]
    precise_bn.PreciseBN(model).reestimate(rng.normal(size=(64, 20)).astype("float32"), 16)
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, saved.variables))
    saved.restore()
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, saved.variables))


def test_a_network_without_batch_statistics_is_left_alone(rng):
    model, _ = build(RunSpec("mlp", "layernorm", "mnist", model_params={"depth": 3, "width": 16}), (20,), 10)
    pbn = precise_bn.PreciseBN(model)
    assert not pbn and pbn.reestimate(rng.normal(size=(64, 20)).astype("float32"), 16) == 0


def test_runs_record_both_evaluations_and_training_is_unchanged(tmp_path, data_dir):
    """A BN run records re-estimated and moving-average metrics; re-estimating never changes what is trained:
    the same run with precise_bn_batches = 0 has the same training losses and the same moving-average metrics."""
    model = dict(model_params={"depth": 4, "width": 32})
    precise = RunSpec("mlp", "batchnorm", "mnist", **model, **TINY)
    moving = precise.with_(precise_bn_batches=0)
    plain = RunSpec("mlp", "none", "mnist", **model, **TINY)
    run_grid([precise, moving, plain], tmp_path, data_dir=data_dir, log=quiet)
    a, b, c = (store.find_record(tmp_path, s) for s in (precise, moving, plain))
    assert a["data"]["bn_statistics"] == {"method": "precise", "layers": 4, "batches": 9, "samples": 288}
    assert b["data"]["bn_statistics"] == {"method": "moving", "layers": 4}
    assert c["data"]["bn_statistics"] is None and "accuracy_moving" not in c["test"]
    assert [h["fit_loss"] for h in a["history"][1:]] == [h["fit_loss"] for h in b["history"][1:]]
    for h_a, h_b in zip(a["history"], b["history"]):
        assert h_a["val_accuracy_moving"] == h_b["val_accuracy"] and h_a["train_loss_moving"] == h_b["train_loss"]
    assert a["test"]["accuracy_moving"] == b["test"]["accuracy"] and "accuracy_moving" not in b["test"]
    assert a["test"]["accuracy"] != a["test"]["accuracy_moving"]
