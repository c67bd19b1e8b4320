"""Signal propagation at initialization: SELU's fixed point (0, 1) against the ReLU baseline."""

import keras
import numpy as np

from normbench.models import build_model
from normbench.norms import get_strategy
from normbench.probe import ActivationProbe


def _act_moments(strategy: str, x: np.ndarray):
    keras.utils.set_random_seed(0)
    model = build_model("mlp32", x.shape[1:], 10, get_strategy(strategy))
    rows = ActivationProbe(model, x).measure(0)
    means = np.array([v for _, _, tap, q, v in rows if tap == "act" and q == "mean"])
    var = np.array([v for _, _, tap, q, v in rows if tap == "act" and q == "std"]) ** 2
    assert len(means) == len(var) == 32
    return means, var


def test_selu_keeps_every_layer_near_zero_mean_unit_variance_where_relu_drifts():
    x = np.random.default_rng(0).normal(size=(512, 784)).astype("float32")  # standardized input
    selu_mean, selu_var = _act_moments("selu", x)
    assert np.abs(selu_mean).max() < 0.1
    assert selu_var.min() > 0.85 and selu_var.max() < 1.15
    relu_mean, relu_var = _act_moments("none", x)
    assert relu_mean.min() > 0.4  # ReLU outputs are positive: the mean moves away from 0 at every layer
    assert np.ptp(relu_var) > 2 * np.ptp(selu_var)  # and the variance wanders more across depth
