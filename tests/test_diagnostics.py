"""Diagnostics: the weight-spectra estimator on matrices with known answers, and runs they leave unchanged."""

import numpy as np
import pytest

from normbench.diagnostics import powerlaw_fit, spectrum_summary
from normbench.runner import run
from normbench.spec import RunSpec


def _pareto(alpha, n, rng, xmin=1.0):
    return xmin * (1.0 - rng.uniform(size=n)) ** (-1.0 / (alpha - 1.0))


@pytest.mark.parametrize("alpha", [2.0, 2.5, 3.5, 5.0])
def test_power_law_exponent_is_recovered_from_samples(alpha, rng):
    fit = powerlaw_fit(_pareto(alpha, 3000, rng))
    assert fit["alpha"] == pytest.approx(alpha, abs=0.1)
    assert fit["xmin"] == pytest.approx(1.0, abs=0.1)  # the whole sample is the power law


def test_the_estimator_agrees_with_the_powerlaw_package(rng):
    powerlaw = pytest.importorskip("powerlaw")
    x = np.concatenate([rng.uniform(0.1, 1.0, 1000), _pareto(3.0, 1500, rng)])  # a body below xmin = 1
    reference = powerlaw.Fit(x, verbose=False).power_law
    ours = powerlaw_fit(x, xmin=reference.xmin)
    assert ours["alpha"] == pytest.approx(reference.alpha, rel=1e-6)  # the same MLE at the same xmin
    free = powerlaw_fit(x)
    assert free["alpha"] == pytest.approx(3.0, abs=0.15) and free["xmin"] == pytest.approx(1.0, abs=0.3)


def test_a_gaussian_matrix_is_all_bulk_and_a_planted_spike_is_found(rng):
    g = rng.normal(size=(1000, 300))
    s = spectrum_summary(g)
    assert s["mp_spikes"] == 0 and s["alpha"] > 6  # Marchenko-Pastur bulk: no heavy tail
    assert s["spectral_norm"] == pytest.approx(np.linalg.norm(g, 2), rel=1e-9)
    assert s["stable_rank"] == pytest.approx(np.linalg.norm(g) ** 2 / np.linalg.norm(g, 2) ** 2, rel=1e-9)
    spiked = spectrum_summary(g + 0.5 * np.outer(rng.normal(size=1000), rng.normal(size=300)))
    assert spiked["mp_spikes"] == 1 and spiked["stable_rank"] < s["stable_rank"] / 10


def test_conv_kernels_are_unfolded_and_short_matrices_transposed(rng):
    k = rng.normal(size=(3, 3, 8, 32))
    s = spectrum_summary(k)
    assert s["spectral_norm"] == pytest.approx(np.linalg.norm(k.reshape(72, 32), 2), rel=1e-9)
    wide = rng.normal(size=(16, 200))
    assert spectrum_summary(wide)["spectral_norm"] == pytest.approx(np.linalg.norm(wide, 2), rel=1e-9)


def test_spectra_are_recorded_every_epoch_and_leave_training_unchanged(data_dir, tmp_path):
    base = dict(epochs=2, limit=300, eval_limit=100, val_size=100, probe_size=16, train_eval_size=100,
                model_params={"depth": 2, "width": 32})
    plain = run(RunSpec("mlp", "batchnorm", "mnist", **base), data_dir=data_dir, log=lambda _m: None)
    diag = run(RunSpec("mlp", "batchnorm", "mnist", diagnostics=["spectra"], **base), data_dir=data_dir,
               log=lambda _m: None)
    assert plain["status"] == diag["status"] == "ok", (plain["error"], diag["error"])
    assert diag["test"] == plain["test"]
    for a, b in zip(plain["history"], diag["history"]):
        assert (a["train_loss"], a["val_loss"]) == (b["train_loss"], b["val_loss"])
    rows = diag["diagnostics"]["rows"]
    assert {(r[0], r[1]) for r in rows} == {(e, layer) for e in (0, 1, 2) for layer in (0, 1, -1)}
    assert {r[3] for r in rows} >= {"alpha", "spectral_norm", "stable_rank", "mp_spikes"}
    assert diag["timings"]["diagnostics_s"]["spectra"] > 0
    assert "diagnostics" not in plain
    # a pack keeps them
    import json

    from normbench import pack, store

    (tmp_path / "runs").mkdir()
    for rec in (plain, diag):
        (tmp_path / "runs" / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    pack.pack(tmp_path / "runs", tmp_path / "pack")
    back = {r["run_id"]: r for r in store.load_records(tmp_path / "pack")}
    assert back[diag["run_id"]]["diagnostics"]["rows"] == rows and "diagnostics" not in back[plain["run_id"]]


def test_unknown_diagnostics_are_refused_before_training(tmp_path):
    from normbench.errors import ConfigError
    from normbench.grid import validate_specs

    with pytest.raises(ConfigError, match="unknown diagnostic 'hessian'|diagnostic 'hessian'"):
        validate_specs([RunSpec("mlp", "none", "mnist", diagnostics=["hessian"])])
    with pytest.raises(ConfigError, match="diagnostics must be a list of distinct"):
        RunSpec("mlp", "none", "mnist", diagnostics="spectra")


def test_the_report_tables_and_draws_the_spectra(tmp_path, data_dir):
    from normbench.grid import run_grid
    from normbench.report import make_report

    tiny = dict(epochs=1, limit=200, eval_limit=100, val_size=100, probe_size=16, train_eval_size=100,
                model_params={"depth": 3, "width": 32}, diagnostics=["spectra", "gradients", "sharpness"])
    run_grid([RunSpec("mlp", s, "mnist", **tiny) for s in ("none", "batchnorm")], tmp_path / "runs", data_dir=data_dir,
             log=lambda _m: None)
    make_report(tmp_path / "runs", tmp_path / "report", log=lambda _m: None)
    import pandas as pd

    table = pd.read_csv(tmp_path / "report" / "tables" / "spectra.csv", index_col=0)
    assert list(table.index) == ["mnist / mlp[depth=3,width=32] / batchnorm", "mnist / mlp[depth=3,width=32] / none"]
    assert (table["init alpha (median)"] > 0).all() and (table["final MP spikes"] >= 0).all()
    assert "## Weight spectra" in (tmp_path / "report" / "README.md").read_text()
    assert list((tmp_path / "report" / "figures").glob("spectra_*.png"))
    flow = pd.read_csv(tmp_path / "report" / "tables" / "gradient_flow.csv", index_col=0)
    assert list(flow.index) == list(table.index)
    assert {"init grad/weight, first layer", "final hessian top", "final hessian trace"} <= set(flow.columns)
    assert (flow["init hessian top"] > 0).all()
    assert "## Gradient flow and sharpness" in (tmp_path / "report" / "README.md").read_text()


def test_kernel_gradients_match_a_finite_difference(rng):
    import keras

    from normbench.diagnostics import _kernels, gradients, kernel_gradients
    from normbench.runner import build

    model, _ = build(RunSpec("mlp", "none", "mnist", model_params={"depth": 2, "width": 8}), (6,), 3)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.integers(0, 3, size=16)
    grads = kernel_gradients(model, x, y)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss():
        return float(keras.ops.convert_to_numpy(loss_fn(y, model(x, training=False))))

    (_, kernel), g = _kernels(model)[0], grads[0]
    w = keras.ops.convert_to_numpy(kernel).astype("float64")
    eps = 1e-2
    for i, j in [(0, 0), (3, 5)]:
        bumped = w.copy()
        bumped[i, j] += eps
        kernel.assign(bumped.astype("float32"))
        up = loss()
        bumped[i, j] -= 2 * eps
        kernel.assign(bumped.astype("float32"))
        down = loss()
        kernel.assign(w.astype("float32"))
        assert g[i, j] == pytest.approx((up - down) / (2 * eps), rel=2e-2, abs=1e-4)
    rows = gradients(model, {"x": x, "y": y})
    assert {(layer, q) for layer, q, _ in rows} == {(l, q) for l in (0, 1, -1) for q in ("grad_norm", "grad_ratio")}


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_gradients_on_other_backends(backend, request):
    r = request.getfixturevalue(f"{backend}_checks").get("gradients")
    assert r, f"the {backend} side did not measure gradients"
    assert r["layers"] == [0, 1, -1] and all(v > 0 for v in r["grad_norms"])
    assert r["max_rel_diff_to_finite_difference"] < 2e-2


def test_hessian_of_a_linear_model_with_squared_loss(rng):
    """H = 2 X^T X / n exactly: the power iteration finds its top eigenvalue, Hutchinson its trace."""
    import keras

    from normbench.diagnostics import hessian_top_and_trace, hessian_vector_product

    x = (rng.normal(size=(64, 5)) * np.array([3.0, 1.0, 1.0, 0.5, 0.2])).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, use_bias=False)])
    hvp = hessian_vector_product(model, x, y, lambda t, p: keras.ops.mean((t - p) ** 2))
    h = 2.0 * x.T.astype("float64") @ x / len(x)
    v = rng.normal(size=(5, 1)).astype("float32")
    np.testing.assert_allclose(hvp([v])[0], h @ v, rtol=1e-4)
    top, trace = hessian_top_and_trace(hvp, [(5, 1)], iterations=50, probes=400)
    assert top == pytest.approx(np.linalg.eigvalsh(h).max(), rel=1e-3)
    assert trace == pytest.approx(np.trace(h), rel=0.1)


def test_sharpness_is_recorded_and_seeded(data_dir):
    spec = RunSpec("mlp", "none", "mnist", epochs=1, limit=200, eval_limit=100, val_size=100, probe_size=32,
                   train_eval_size=100, model_params={"depth": 2, "width": 16}, diagnostics=["sharpness"])
    rec = run(spec, data_dir=data_dir, log=lambda _m: None)
    assert rec["status"] == "ok", rec["error"]
    rows = {(r[0], r[3]): r[4] for r in rec["diagnostics"]["rows"]}
    assert set(rows) == {(e, q) for e in (0, 1) for q in ("hessian_top", "hessian_trace")}
    assert all(np.isfinite(v) for v in rows.values()) and rows[(0, "hessian_top")] > 0
    again = run(spec, data_dir=data_dir, log=lambda _m: None)
    assert [r[4] for r in again["diagnostics"]["rows"]] == pytest.approx([r[4] for r in rec["diagnostics"]["rows"]],
                                                                         rel=1e-5)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_hessian_vector_products_on_other_backends(backend, request):
    r = request.getfixturevalue(f"{backend}_checks").get("hessian")
    assert r, f"the {backend} side did not measure the Hessian check"
    assert r["hvp_max_rel_err"] < 1e-4 and r["top_rel_err"] < 1e-3, r
