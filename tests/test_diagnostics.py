"""Diagnostics: the weight-spectra estimator on matrices with known answers, and runs they leave unchanged."""

from pathlib import Path

import numpy as np
import pytest

from normbench.builtins import load_builtins
from normbench.diagnostics import powerlaw_fit, spectrum_summary
from normbench.registry import DIAGNOSTICS
from normbench.runner import run
from normbench.spec import RunSpec


load_builtins()


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
    every = DIAGNOSTICS.list()  # every registered diagnostic at once: none may change training
    diag = run(RunSpec("mlp", "batchnorm", "mnist", diagnostics=every, **base), data_dir=data_dir,
               log=lambda _m: None)
    assert plain["status"] == diag["status"] == "ok", (plain["error"], diag["error"])
    assert diag["test"] == plain["test"]
    for a, b in zip(plain["history"], diag["history"]):
        assert (a["train_loss"], a["val_loss"]) == (b["train_loss"], b["val_loss"])
    rows = diag["diagnostics"]["rows"]
    epochs = {name: {r[0] for r in rows if r[2] == name} for name in every}
    for name in every:
        fn = DIAGNOSTICS.get(name)
        expected = {0} if getattr(fn, "at_init", False) else {2} if getattr(fn, "at_end", False) else {0, 1, 2}
        assert epochs[name] == expected, name
        assert diag["timings"]["diagnostics_s"][name] > 0
    spectra = [r for r in rows if r[2] == "spectra"]
    assert {(r[0], r[1]) for r in spectra} == {(e, layer) for e in (0, 1, 2) for layer in (0, 1, -1)}
    assert {r[3] for r in spectra} >= {"alpha", "spectral_norm", "stable_rank", "mp_spikes"}
    assert "diagnostics" not in plain and "landscape" not in plain
    # a pack keeps them
    import json

    from normbench import pack, store

    (tmp_path / "runs").mkdir()
    for rec in (plain, diag):
        (tmp_path / "runs" / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    pack.pack(store.load_records(tmp_path / "runs"), tmp_path / "pack")
    back = {r["run_id"]: r for r in store.load_records(tmp_path / "pack")}
    assert back[diag["run_id"]]["diagnostics"]["rows"] == rows and "diagnostics" not in back[plain["run_id"]]
    assert back[diag["run_id"]]["landscape"] == diag["landscape"]


def test_unknown_diagnostics_are_refused_before_training(tmp_path):
    from normbench.errors import ConfigError
    from normbench.preflight import validate_specs

    with pytest.raises(ConfigError, match="unknown diagnostic 'hessian'|diagnostic 'hessian'"):
        validate_specs([RunSpec("mlp", "none", "mnist", diagnostics=["hessian"])])
    with pytest.raises(ConfigError, match="diagnostics must be a list of distinct"):
        RunSpec("mlp", "none", "mnist", diagnostics="spectra")


@pytest.mark.slow
def test_the_report_tables_and_draws_the_spectra(tmp_path, data_dir):
    from normbench.grid import run_grid
    from normbench.report import make_report

    tiny = dict(epochs=1, limit=200, eval_limit=100, val_size=100, probe_size=16, train_eval_size=100,
                model_params={"depth": 3, "width": 32}, diagnostics=DIAGNOSTICS.list())
    run_grid([RunSpec("mlp", s, "mnist", **tiny) for s in ("none", "batchnorm")], tmp_path / "runs", data_dir=data_dir,
             log=lambda _m: None)
    make_report(tmp_path / "runs", tmp_path / "report", log=lambda _m: None)
    import pandas as pd

    table = pd.read_csv(tmp_path / "report" / "tables" / "spectra.csv", index_col=0)
    assert list(table.index) == ["mnist / mlp[depth=3,width=32] / batchnorm", "mnist / mlp[depth=3,width=32] / none"]
    # width 32: 32 eigenvalues per hidden layer, too few for alpha (see spectra.MIN_EIGENVALUES): blank, not drawn
    assert (table["init alpha layers"] == 0).all() and table["init alpha (median)"].isna().all()
    assert (table["final MP spikes"] >= 0).all() and (table["init stable rank (mean)"] > 0).all()
    assert "## Weight spectra" in (tmp_path / "report" / "README.md").read_text()
    assert not list((tmp_path / "report" / "figures").glob("spectra_*.png"))
    flow = pd.read_csv(tmp_path / "report" / "tables" / "gradient_flow.csv", index_col=0)
    assert list(flow.index) == list(table.index)
    assert {"init grad/weight, first layer", "final hessian top", "final hessian trace"} <= set(flow.columns)
    assert flow["final hessian trace rel. SE"].between(0, 1).all()
    assert (flow["init hessian top"] > 0).all()
    assert "## Gradient flow and sharpness" in (tmp_path / "report" / "README.md").read_text()
    assert (flow["init input grad, first layer"] > 0).all()
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "cannot be made" not in readme
    land = pd.read_csv(tmp_path / "report" / "tables" / "landscape.csv", index_col=0)
    assert list(land.index) == list(table.index) and (land["rise at |a| = 1"] > 0).all()
    theory = pd.read_csv(tmp_path / "report" / "tables" / "meanfield.csv", index_col=0)
    assert list(theory.index) == list(table.index) and (theory.layers == 3).all()
    assert theory["pre m2 measured / predicted (median)"].between(0.5, 2.0).all()
    cost = pd.read_csv(tmp_path / "report" / "tables" / "diagnostic_cost.csv")
    assert set(cost.diagnostic) == set(DIAGNOSTICS.list()) and (cost.diagnostic_s > 0).all()
    figures = {f.name.split("_")[0] for f in (tmp_path / "report" / "figures").glob("*.png")}
    assert {"gradients", "sharpness", "landscape", "meanfield"} <= figures and "alpha" not in figures
    for heading in ("## Loss landscapes", "## Signal propagation against mean-field theory", "## What the diagnostics cost"):
        assert heading in readme


def test_kernel_gradients_match_a_finite_difference(rng):
    import keras

    from normbench.diagnostics import kernel_gradients, kernels
    from normbench.diagnostics.gradients import gradients
    from normbench.runner import build

    model, _ = build(RunSpec("mlp", "none", "mnist", model_params={"depth": 2, "width": 8}), (6,), 3)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.integers(0, 3, size=16)
    grads = kernel_gradients(model, x, y)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss():
        return float(keras.ops.convert_to_numpy(loss_fn(y, model(x, training=False))))

    (_, kernel), g = kernels(model)[0], grads[0]
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
    assert {(layer, q) for layer, q, _ in rows} == {(l, q) for l in (0, 1, -1) for q in ("grad_norm", "grad_ratio", "input_grad_rms")}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_gradients_on_other_backends(backend, request):
    r = request.getfixturevalue(f"{backend}_checks").get("gradients")
    assert r, f"the {backend} side did not measure gradients"
    assert r["layers"] == [0, 1, -1] and all(v > 0 for v in r["grad_norms"])
    assert r["max_rel_diff_to_finite_difference"] < 2e-2
    assert r["input_grad_max_abs_err"] < 1e-4 * r["input_grad_max_abs"] and all(v > 0 for v in r["input_grad_rms"])
    assert r["slice_rel_err"] < 1e-5 and r["slice_restored"]


def test_hessian_of_a_linear_model_with_squared_loss(rng):
    """H = 2 X^T X / n exactly: the power iteration finds its top eigenvalue, Hutchinson its trace."""
    from _backend_checks import linear_squared_loss

    from normbench.diagnostics import hessian_top_and_trace

    hvp, h, v = linear_squared_loss(rng)
    np.testing.assert_allclose(hvp([v])[0], h @ v, rtol=1e-4)
    top, trace = hessian_top_and_trace(hvp, [(5, 1)], iterations=50, probes=400)
    assert top == pytest.approx(np.linalg.eigvalsh(h).max(), rel=1e-3)
    assert trace == pytest.approx(np.trace(h), rel=0.1)


def test_the_trace_error_covers_the_exact_trace_and_more_probes_shrink_it(rng):
    """Hutchinson on H = 2 X^T X / n: the estimate lies within 4 standard errors of the exact trace, and asking
    for a 2% error draws probes until the error is that small."""
    from _backend_checks import linear_squared_loss

    from normbench.diagnostics.sharpness import hutchinson_trace

    hvp, h, _ = linear_squared_loss(rng)
    exact = np.trace(h)
    few = hutchinson_trace(hvp, [(5, 1)], np.random.default_rng(1), probes=10)
    assert few[2] == 10 and abs(few[0] - exact) <= 4 * few[1]
    many = hutchinson_trace(hvp, [(5, 1)], np.random.default_rng(1), probes=10, max_probes=5000, rel_se=0.02)
    assert 10 < many[2] < 5000 and many[1] <= 0.02 * abs(many[0]) and abs(many[0] - exact) <= 4 * many[1]
    capped = hutchinson_trace(hvp, [(5, 1)], np.random.default_rng(1), probes=10, max_probes=12, rel_se=1e-9)
    assert capped[2] == 12  # an error it cannot reach stops at the cap, and the error says how far off it is


def test_sharpness_is_recorded_and_seeded(data_dir):
    spec = RunSpec("mlp", "none", "mnist", epochs=1, limit=200, eval_limit=100, val_size=100, probe_size=32,
                   train_eval_size=100, model_params={"depth": 2, "width": 16}, diagnostics=["sharpness"])
    rec = run(spec, data_dir=data_dir, log=lambda _m: None)
    assert rec["status"] == "ok", rec["error"]
    rows = {(r[0], r[3]): r[4] for r in rec["diagnostics"]["rows"]}
    quantities = ("hessian_top", "hessian_trace", "hessian_trace_se", "hessian_trace_probes")
    assert set(rows) == {(e, q) for e in (0, 1) for q in quantities}
    assert all(np.isfinite(v) for v in rows.values()) and rows[(0, "hessian_top")] > 0
    for e in (0, 1):  # probes were added until the error was within 5% of the trace, or the 50 allowed were spent
        probes, se, trace = rows[(e, "hessian_trace_probes")], rows[(e, "hessian_trace_se")], rows[(e, "hessian_trace")]
        assert 10 <= probes <= 50 and se > 0 and (se <= 0.05 * abs(trace) or probes == 50)
    again = run(spec, data_dir=data_dir, log=lambda _m: None)
    assert [r[4] for r in again["diagnostics"]["rows"]] == pytest.approx([r[4] for r in rec["diagnostics"]["rows"]],
                                                                         rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_hessian_vector_products_on_other_backends(backend, request):
    r = request.getfixturevalue(f"{backend}_checks").get("hessian")
    assert r, f"the {backend} side did not measure the Hessian check"
    assert r["hvp_max_rel_err"] < 1e-4 and r["top_rel_err"] < 1e-3, r


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_input_gradients_match_closed_forms(rng):
    """The logits layer's input gradient is (softmax - onehot) W^T / n; the first layer's is the gradient w.r.t.
    the data, taken directly."""
    import keras
    import tensorflow as tf

    from normbench.diagnostics import loss_gradients
    from normbench.diagnostics.gradients import gradients
    from normbench.runner import build

    model, _ = build(RunSpec("mlp", "batchnorm", "mnist", model_params={"depth": 3, "width": 16}), (6,), 4)
    x = rng.normal(size=(20, 6)).astype("float32")
    y = rng.integers(0, 4, size=20)
    before = keras.ops.convert_to_numpy(model(x, training=False))
    _, inputs = loss_gradients(model, x, y)
    last_hidden = keras.Model(model.input, model.get_layer("logits").input)(x, training=False)
    logits_kernel = keras.ops.convert_to_numpy(model.get_layer("logits").kernel)
    probs = _softmax(keras.ops.convert_to_numpy(model(x, training=False)).astype("float64"))
    expected = (probs - np.eye(4)[y]) @ logits_kernel.T / len(x)
    assert keras.ops.convert_to_numpy(last_hidden).shape == inputs[-1].shape
    np.testing.assert_allclose(inputs[-1], expected, rtol=1e-4, atol=1e-7)
    tx = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tx)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(tx, training=False))
    np.testing.assert_allclose(inputs[0], tape.gradient(loss, tx).numpy(), rtol=1e-4, atol=1e-8)
    rows = {(layer, q): v for layer, q, v in gradients(model, {"x": x, "y": y})}
    per_example = np.linalg.norm(expected, axis=1) * len(x)
    assert rows[(-1, "input_grad_rms")] == pytest.approx(np.sqrt(np.mean(per_example ** 2)), rel=1e-4)
    # the layers compute as before once measured: no offset is left behind
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)), before)
    assert all("call" not in vars(layer) for layer in model.layers)


def test_filter_normalized_directions(rng):
    from normbench.diagnostics import filter_normalized_direction

    weights = [rng.normal(size=(5, 7)), rng.normal(size=7), rng.normal(size=(3, 3, 2, 4)) * 3]
    d = filter_normalized_direction(weights, rng)
    np.testing.assert_allclose(np.linalg.norm(d[0], axis=0), np.linalg.norm(weights[0], axis=0), rtol=1e-6)
    np.testing.assert_allclose(np.sqrt((d[2] ** 2).sum(axis=(0, 1, 2))), np.sqrt((weights[2] ** 2).sum(axis=(0, 1, 2))), rtol=1e-6)
    assert not d[1].any()  # biases and normalization parameters are not perturbed
    assert abs(np.vdot(d[0], weights[0])) < np.linalg.norm(d[0]) * np.linalg.norm(weights[0])  # random, not w itself


def test_loss_slices_of_a_softmax_regression_match_numpy(rng):
    """Along d, a softmax regression's logits are x (W + a D) + b: the slice is that cross-entropy exactly,
    and the weights are restored bit for bit afterwards."""
    import keras

    from normbench.diagnostics import filter_normalized_direction, loss_surface

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, name="logits")])
    x = rng.normal(size=(40, 6)).astype("float32")
    y = rng.integers(0, 3, size=40)
    w, b = [np.array(v.numpy()) for v in model.trainable_variables]
    before = [np.array(v.numpy()) for v in model.weights]
    d1, d2 = (filter_normalized_direction([w, b], rng) for _ in range(2))
    coords = [(-1.0, 0.5), (0.0, 0.0), (0.3, -0.7)]
    got = loss_surface(model, lambda t: np.asarray(model.predict_on_batch(t), dtype=np.float64), x, y, [d1, d2], coords)
    for (a, c), (loss, acc) in zip(coords, got):
        z = x.astype("float64") @ (w + a * d1[0] + c * d2[0]) + b
        p = _softmax(z)
        assert loss == pytest.approx(-np.log(p[np.arange(40), y]).mean(), rel=1e-5)
        assert acc == pytest.approx((z.argmax(axis=1) == y).mean())
    for v, w0 in zip(model.weights, before):
        np.testing.assert_array_equal(np.array(v.numpy()), w0)


def test_the_landscape_is_measured_once_at_the_end(data_dir):
    from normbench.diagnostics import LANDSCAPE_POINTS_1D, LANDSCAPE_POINTS_2D

    spec = RunSpec("mlp", "none", "mnist", epochs=2, limit=300, eval_limit=100, val_size=100, probe_size=16,
                   train_eval_size=100, model_params={"depth": 2, "width": 16}, diagnostics=["landscape"])
    rec = run(spec, data_dir=data_dir, log=lambda _m: None)
    assert rec["status"] == "ok", rec["error"]
    table = rec["landscape"]
    assert table["columns"] == ["epoch", "slice", "x", "y", "loss", "accuracy"]
    assert len(table["rows"]) == LANDSCAPE_POINTS_1D + LANDSCAPE_POINTS_2D ** 2 and {r[0] for r in table["rows"]} == {2}
    center = [r for r in table["rows"] if r[1] == "1d" and r[2] == 0.0]
    summary = {r[3]: r[4] for r in rec["diagnostics"]["rows"]}
    assert summary["loss_center"] == pytest.approx(center[0][4])
    # the centre is the trained net's loss on the same (first, unaugmented) training samples
    assert summary["loss_center"] == pytest.approx(rec["history"][-1]["train_loss"], rel=0.3)
    assert summary["loss_1d_max"] > summary["loss_center"] and summary["forward_passes"] == len(table["rows"])


@pytest.mark.parametrize("q", [0.05, 1.0, 7.0])
def test_mean_field_moments_match_closed_forms(q):
    from normbench.theory import gaussian_moments, propagate_chain

    mean, second = gaussian_moments("relu", q)
    assert mean == pytest.approx(np.sqrt(q / (2 * np.pi)), rel=1e-7) and second == pytest.approx(q / 2, rel=1e-7)
    assert gaussian_moments("linear", q) == pytest.approx((0.0, q), abs=1e-9)
    # He-initialized ReLU keeps q through depth; LeCun-initialized SELU is drawn to (0, 1)
    relu = propagate_chain(q / 2, [s for i in range(20) for s in (("linear", 2.0, 0.0), ("act", "relu", i))])
    assert [m["pre_m2"] for _, m in relu] == pytest.approx([q] * 20, rel=1e-6)
    selu = propagate_chain(q, [s for i in range(60) for s in (("linear", 1.0, 0.0), ("act", "selu", i))])
    assert selu[-1][1]["act_mean"] == pytest.approx(0.0, abs=1e-4) and selu[-1][1]["act_var"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("strategy", ["none", "batchnorm", "selu"])
def test_mean_field_prediction_matches_a_wide_random_network(strategy, rng):
    """At width 1024, the measured second moment of each layer's pre-activation is within 25% of the prediction
    (finite width: log q of a ReLU net fluctuates with variance about 5 depth / width, Hanin 2018)."""
    import keras

    from normbench.diagnostics.meanfield import meanfield
    from normbench.probe import ActivationProbe
    from normbench.runner import build

    keras.utils.set_random_seed(1)
    model, _ = build(RunSpec("mlp", strategy, "mnist", model_params={"depth": 6, "width": 1024}), (64,), 10)
    x = rng.normal(size=(512, 64)).astype("float32")
    predicted = {(layer, q): v for layer, q, v in meanfield(model, {"x": x})}
    measured = {(r[1], r[2], r[3]): r[4] for r in ActivationProbe(model, x).measure(0)}
    for layer in range(6):
        m2 = measured[(layer, "pre", "std")] ** 2 + measured[(layer, "pre", "mean")] ** 2
        assert m2 == pytest.approx(predicted[(layer, "pre_m2")], rel=0.25), layer
        assert measured[(layer, "act", "mean")] == pytest.approx(predicted[(layer, "act_mean")], abs=0.05 + 0.1 * abs(predicted[(layer, "act_mean")]))


def test_mean_field_says_why_it_makes_no_prediction_where_the_recursion_does_not_hold():
    from normbench.diagnostics import NotApplicable
    from normbench.diagnostics.meanfield import meanfield
    from normbench.runner import build

    for name, params, shape, why in [("convnet", {"filters": [4], "dense": 8}, (8, 8, 3), "a Conv2D layer"),
                                     ("resmlp8", {}, (12,), "chains of Dense layers"),
                                     ("mlp", {"depth": 2, "width": 8}, (12,), "chains of Dense layers")]:
        strategy = "layernorm" if name == "mlp" else "none"
        model, _ = build(RunSpec(name, strategy, "mnist", model_params=params), shape, 3)
        with pytest.raises(NotApplicable, match=why):
            meanfield(model, {"x": np.ones((4, *shape), dtype="float32")})


def test_mean_field_on_a_conv_net_is_recorded_and_logged_as_not_applicable(data_dir):
    """It used to return no rows: the record and the log said nothing, as if it had measured nothing."""
    spec = RunSpec("convnet", "none", "mnist", epochs=1, limit=100, eval_limit=50, val_size=50, probe_size=8,
                   train_eval_size=50, model_params={"filters": [4], "dense": 8}, diagnostics=["meanfield"])
    lines = []
    rec = run(spec, data_dir=data_dir, log=lines.append)
    assert rec["status"] == "ok", rec["error"]
    [(epoch, name, why)] = rec["diagnostics_errors"]
    assert (epoch, name) == (0, "meanfield") and why.startswith("NotApplicable:") and "Conv2D" in why, why
    assert rec["diagnostics"]["rows"] == []
    assert any("diagnostic meanfield does not apply to this model" in line and "Conv2D" in line for line in lines), lines


def test_a_failing_diagnostic_is_recorded_and_the_run_goes_on(data_dir, monkeypatch):
    from normbench.diagnostics import spectra

    def broken(kernel):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(spectra, "spectrum_summary", broken)
    spec = RunSpec("mlp", "none", "mnist", epochs=2, limit=300, eval_limit=100, val_size=100, probe_size=16,
                   train_eval_size=100, model_params={"depth": 2, "width": 16}, diagnostics=["spectra", "gradients"])
    rec = run(spec, data_dir=data_dir, log=lambda _m: None)
    assert rec["status"] == "ok", rec["error"]
    assert rec["diagnostics_errors"] == [[e, "spectra", "LinAlgError: SVD did not converge"] for e in (0, 1, 2)]
    assert {r[2] for r in rec["diagnostics"]["rows"]} == {"gradients"}
    plain = run(spec.with_(diagnostics=[]), data_dir=data_dir, log=lambda _m: None)
    assert plain["test"] == rec["test"]


def test_a_landscape_whose_loss_is_not_finite_is_drawn_as_such(tmp_path):
    import pandas as pd

    from normbench.report import plots

    grid = [(a, b) for a in (-1.0, 0.0, 1.0) for b in (-1.0, 0.0, 1.0)]
    rows = [("r1", 1, "2d", a, b, 1.0 + a * a + b * b, 0.5, "mnist", "mlp8", "none") for a, b in grid]
    rows += [("r2", 1, "2d", a, b, float("nan") if (a, b) != (0.0, 0.0) else 2.3, 0.1, "mnist", "mlp8", "maxnorm")
             for a, b in grid]
    frame = pd.DataFrame(rows, columns=["run_id", "epoch", "slice", "x", "y", "loss", "accuracy", "dataset", "model",
                                        "strategy"])
    path = plots.landscape_contours(frame, "mnist", "mlp8", tmp_path / "l.png")
    assert path.stat().st_size > 1000


def test_a_batch_norm_with_population_statistics_standardizes_in_the_recursion():
    """With re-estimated statistics BN makes each unit zero-mean and unit-variance, then gamma: the pre-activation's
    second moment is gamma^2 whatever the input's (with Keras' initial (0, 1) statistics it is a scaling instead)."""
    from normbench.theory import propagate_chain

    for q in (0.1, 7.3):
        standardized = propagate_chain(q, [("linear", 2.0, 0.0), ("standardize", 0.64, 0.0), ("act", "relu", 0)])
        assert standardized[0][1]["pre_m2"] == pytest.approx(0.64)
        scaled = propagate_chain(q, [("linear", 2.0, 0.0), ("scale", 0.64, 0.0), ("act", "relu", 0)])
        assert scaled[0][1]["pre_m2"] == pytest.approx(2.0 * q * 0.64)


def test_what_a_diagnostic_declares_carries_it_through_record_pack_report_and_help(tmp_path, monkeypatch, capsys):
    """A diagnostic registered with a table and a report section (here one only this test knows) is type-checked by
    the record's layout check, kept by pack, reported by the report's own call and named by `run --help`, with none
    of those modules edited; a table it does not declare is refused when it runs."""
    import pandas as pd

    from normbench import pack, record, store
    from normbench.cli import build_parser
    from normbench.diagnostics import register
    from normbench.report import make_report

    monkeypatch.setattr(DIAGNOSTICS, "_items", dict(DIAGNOSTICS._items))  # the registration ends with the test

    def report(view):
        frame = view.frame("probe_test")
        with view.section("Probe test"):
            view.table("probe_test", "## Probe test (the `probe_test` diagnostic)", "The value per run.",
                       frame.assign(row=frame.dataset + " / " + frame.model + " / " + frame.strategy)
                       .pivot_table(index="row", columns="quantity", values="value"))

    @register("probe_test", when="end", tables=("probe_table",), report=report)
    def probe_test(model, context):
        return {"rows": [(None, "width", 3.0)], "tables": {"probe_table": {"columns": ["a"], "rows": [[1.0]]}}}

    @register("probe_undeclared")
    def probe_undeclared(model, context):
        return {"rows": [], "tables": {"probe_table": {"columns": ["a"], "rows": []}}}

    assert probe_test(None, {})["rows"] == [(None, "width", 3.0)] and DIAGNOSTICS.get("probe_test").at_end
    with pytest.raises(ValueError, match="probe_table.*does not\\s+declare"):
        probe_undeclared(None, {})
    assert record.section_types()["probe_table"] is dict and "probe_table" in pack.optional_sections()

    published = Path(__file__).resolve().parents[1] / "results" / "diagnostics" / "records"
    records = sorted(store.load_records(published), key=lambda r: r["run_id"])[:2]
    for rec in records:  # two published records, their diagnostics replaced by this one's
        rec.pop("landscape")
        rec["diagnostics"]["rows"] = [[rec["spec"]["epochs"], None, "probe_test", "width", 3.0]]
        rec["timings"]["diagnostics_s"] = {"probe_test": 0.5}
        rec["probe_table"] = {"columns": ["epoch", "a"], "rows": [[rec["spec"]["epochs"], 1.0]]}
    with pytest.raises(record.LayoutError, match="probe_table is list"):
        record.check_layout({**records[0], "probe_table": []})
    pack.pack(records, tmp_path / "pack")
    back = {r["run_id"]: r for r in store.load_records(tmp_path / "pack")}
    assert [back[r["run_id"]]["probe_table"] for r in records] == [r["probe_table"] for r in records]

    make_report(tmp_path / "pack", tmp_path / "report", log=lambda _m: None)
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "## Probe test (the `probe_test` diagnostic)" in readme and "## Weight spectra" not in readme
    [schedule] = [line for line in readme.splitlines() if "the others at every epoch" in line]
    assert "`probe_test` run once at the end" in schedule and "`meanfield` once at initialization" in schedule
    table = pd.read_csv(tmp_path / "report" / "tables" / "probe_test.csv", index_col=0)
    assert len(table) >= 1 and (table.width == 3.0).all()

    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "probe_test (after the last epoch only)" in help_text and "meanfield (at initialization only)" in help_text


def test_alpha_of_a_matrix_with_too_few_eigenvalues_is_left_out_of_summaries(rng):
    """A random 27 x 16 matrix fits an alpha inside the 'well-trained' 2-6 band; it has 16 eigenvalues, so it is
    dropped. A record without ``n_eigenvalues`` (older schema) is judged by its layer's units."""
    import pandas as pd

    from normbench.diagnostics.spectra import MIN_EIGENVALUES, reliable_alphas, spectrum_summary

    small, large = spectrum_summary(rng.standard_normal((27, 16))), spectrum_summary(rng.standard_normal((512, 256)))
    assert (small["n_eigenvalues"], large["n_eigenvalues"]) == (16, 256) and MIN_EIGENVALUES == 256
    rows = [("new", 0, 0, q, v) for q, v in small.items()] + [("new", 0, 1, q, v) for q, v in large.items()]
    rows += [("old", 0, layer, q, v) for layer, summary in ((0, small), (1, large))
             for q, v in summary.items() if q != "n_eigenvalues"]
    frame = pd.DataFrame(rows, columns=["run_id", "epoch", "layer", "quantity", "value"]).assign(
        dataset="mnist", model="mlp", strategy="none")
    records = [{"run_id": "old", "layers": [{"index": 0, "units": 16}, {"index": 1, "units": 256}]},
               {"run_id": "new", "layers": []}]
    kept = reliable_alphas(frame, records)
    assert sorted(kept[kept.quantity == "alpha"][["run_id", "layer"]].itertuples(index=False, name=None)) == \
        [("new", 1), ("old", 1)]
    assert len(kept[kept.quantity != "alpha"]) == len(frame[frame.quantity != "alpha"])  # only alphas go
