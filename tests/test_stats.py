import numpy as np
import pytest

from normbench.stats import PERCENTILES, SELU_SATURATED_BELOW, kernel_norms, saturation_mask, summarize


def test_summary_matches_numpy(rng):
    v = rng.normal(2.0, 3.0, size=(500, 40)).astype("float32")
    s = summarize(v)
    assert s["mean"] == pytest.approx(v.mean(), rel=1e-5)
    assert s["std"] == pytest.approx(v.std(), rel=1e-5)
    for p in PERCENTILES:
        assert s[f"p{p:02d}"] == pytest.approx(np.percentile(v, p), rel=1e-5)
    assert "sat_frac" not in s  # a pre-activation has no saturation


def test_large_tensors_use_a_fixed_subsample_that_estimates_the_whole(rng):
    v = rng.normal(1.0, 2.0, size=(64, 32, 32, 16)).astype("float32")  # about a million values
    v[..., 3] = -1.0  # one dead channel
    a, b = summarize(v, "relu"), summarize(v.copy(), "relu")
    assert a == b  # the same subset every call
    assert a["mean"] == pytest.approx(v.mean(), abs=0.02)
    assert a["std"] == pytest.approx(v.std(), rel=0.01)
    assert a["p50"] == pytest.approx(np.percentile(v, 50), abs=0.05)
    assert a["p85"] == pytest.approx(np.percentile(v, 85), abs=0.05)
    assert a["sat_frac"] == pytest.approx((v <= 0).mean(), abs=0.01)
    assert a["dead_units"] == 1 / 16


def test_relu_dead_fraction_and_dead_units():
    v = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]], dtype="float32")
    s = summarize(v, "relu")
    assert s["sat_frac"] == pytest.approx(4 / 6)
    assert s["dead_units"] == pytest.approx(1 / 3)  # only unit 0 is zero for every sample


def test_saturation_per_activation():
    assert saturation_mask("sigmoid", np.array([0.005, 0.5, 0.995])).tolist() == [True, False, True]
    assert saturation_mask("selu", np.array([SELU_SATURATED_BELOW - 0.01, -1.0, 3.0])).tolist() == [True, False, False]
    assert saturation_mask("linear", np.zeros(3)) is None


def test_kernel_norms_per_unit_incoming_weights():
    dense = np.array([[3.0, 0.0], [4.0, 1.0]])  # (in, out): unit norms 5 and 1
    assert kernel_norms(dense) == {"norm_max": 5.0, "norm_mean": 3.0}
    conv = np.ones((3, 3, 2, 4))  # each filter has 18 ones
    assert kernel_norms(conv)["norm_max"] == pytest.approx(np.sqrt(18))
