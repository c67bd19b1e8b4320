"""Run under another Keras backend by tests/test_engines.py (``python tests/_backend_checks.py OUT.json``).

Not a test module (pytest does not collect it): it writes measurements as JSON for the
tests, which run on TensorFlow in their own process, to assert on.

1. For every registered strategy, on an MLP and a small convnet (random inputs: this checks
   the engines' arithmetic, not a dataset), the ``fit`` and ``scan`` engines train two epochs
   from the same initial weights in the same batch order; the largest weight difference is
   reported (JAX only).
2. With real MNIST (when available), one real run's epoch-0 metrics and statistics.
3. Weight and spectral normalization (``reparametrization``): the identity ||w|| = g per unit
   after training steps, the data-dependent init (first-batch pre-activations with mean 0 and
   variance 1 per unit) and sigma(w) = 1, on an MLP and a small convnet. tests/test_layers.py
   calls it directly on TensorFlow and reads its JSON from JAX.
4. The diagnostics' gradients, loss slices and Hessian-vector products; SGD with a momentum ramp
   and an exponential learning-rate decay against the same updates in NumPy (``momentum_ramp``).
5. Every normalization kind against tests/test_norm_numerics.py's NumPy reference, on a Dense- and
   a Conv-shaped input, in training and inference mode (``norm_numerics``: the largest error).
6. Weight standardization (plain and scaled) and adaptive gradient clipping's step against
   tests/test_norm_free.py's NumPy references (``norm_free``: the largest errors).
7. The activation probe's statistics computed with the backend's ops against NumPy's (``probe_device``:
   tests/test_probe.py's cases, the largest error of each).
"""

import json
import os
import sys

import numpy as np


def engine_agreement():
    import keras

    from normbench.builtins import load_builtins
    from normbench.engines import epoch_order, make_engine
    from normbench.execution import choose_execution
    from normbench.registry import NORMS
    from normbench.runner import build, compile_model
    from normbench.spec import RunSpec

    load_builtins()
    rng = np.random.default_rng(0)
    cases = {
        "mlp": ((20,), {"depth": 3, "width": 16}),
        "convnet": ((16, 16, 3), {"filters": [4, 8], "dense": 16}),
    }
    out = {}
    for model_name, (shape, params) in cases.items():
        x = rng.normal(size=(200, *shape)).astype("float32")  # 6 full batches of 32 and a partial one
        y = rng.integers(0, 3, size=200)
        # every registered strategy, the SELU bundle with AlphaDropout (its seed state must thread through), and
        # max-norm under the dropout paper's schedule (momentum ramp, exponential decay: both read the step counter)
        ramp = {"momentum_start": 0.5, "momentum_ramp_epochs": 1.5, "lr_schedule": "exponential", "lr_decay": 0.5}
        for strategy, sparams, extra, tag in ([(s, {}, {}, "") for s in NORMS.list()]
                                              + [("selu", {"dropout_rate": 0.1}, {}, "[dropout]"),
                                                 ("maxnorm", {}, ramp, "[ramp]")]):
            spec = RunSpec(model_name, strategy, "mnist", batch_size=32, learning_rate=0.05, model_params=params,
                           strategy_params=sparams, epochs=2, **extra)
            weights, losses, donated = {}, {}, None
            for engine in ("fit", "scan"):
                keras.backend.clear_session()
                keras.utils.set_random_seed(0)
                model, _ = build(spec, shape, 3)
                compile_model(model, spec, choose_execution(model, "jax", True), steps_per_epoch=7)
                start = [np.array(v.numpy()) for v in model.weights]
                trainer = make_engine(engine, model, x, y, 32)
                for epoch in (1, 2):
                    before = [v.value for v in model.trainable_variables + model.optimizer.variables]
                    logs = trainer.train_epoch(epoch_order(0, epoch, len(y)), epoch)
                    if engine == "scan":  # donated: the arrays the epoch started from were overwritten in place
                        donated = all(a.is_deleted() for a in before)
                losses[engine] = logs["loss"]
                weights[engine] = (start, [np.array(v.numpy()) for v in model.weights])
            (s_fit, w_fit), (s_scan, w_scan) = weights["fit"], weights["scan"]
            out[f"{model_name}/{strategy}{tag}"] = {
                "same_start": all(np.array_equal(a, b) for a, b in zip(s_fit, s_scan)),
                "n_weights": len(w_fit),
                "moved": float(max(np.max(np.abs(a - b)) for a, b in zip(w_fit, s_fit))),
                "max_abs_diff": float(max(np.max(np.abs(a - b)) for a, b in zip(w_fit, w_scan))),
                "max_abs": float(max(np.max(np.abs(a)) for a in w_fit)),
                "loss_fit": losses["fit"],
                "loss_scan": losses["scan"],
                "scan_state_donated": donated,
            }
    return out


def reparametrization():
    import keras

    from normbench.builtins import load_builtins
    from normbench.layers import KernelReparametrization
    from normbench.runner import build, compile_model
    from normbench.spec import RunSpec

    load_builtins()
    rng = np.random.default_rng(1)
    cases = {"mlp": ((20,), {"depth": 3, "width": 16}), "convnet": ((16, 16, 3), {"filters": [4, 8], "dense": 16})}
    out = {}
    for model_name, (shape, params) in cases.items():
        x = (rng.normal(size=(64, *shape)) * 3.0 + 1.0).astype("float32")  # far from standardized on purpose
        y = rng.integers(0, 3, size=64)
        for strategy in ("weightnorm", "spectralnorm"):
            keras.backend.clear_session()
            spec = RunSpec(model_name, strategy, "mnist", batch_size=64, learning_rate=0.05, model_params=params)
            model, _ = build(spec, shape, 3, x_train=x)
            wrapped = [layer for layer in model.layers if isinstance(layer, KernelReparametrization)]
            r = {"wrapped": len(wrapped)}
            if strategy == "weightnorm":  # the first batch is all 64 samples: the init's pre-activation statistics
                means, variances = [], []
                for layer in wrapped:
                    t = keras.ops.convert_to_numpy(keras.Model(model.input, layer.output)(x, training=False))
                    t = t.reshape(-1, t.shape[-1]).astype("float64")
                    means.append(float(np.abs(t.mean(axis=0)).max()))
                    variances.append(float(np.abs(t.var(axis=0) - 1.0).max()))
                r["init_max_abs_mean"], r["init_max_abs_var_minus_1"] = max(means), max(variances)
            compile_model(model, spec)
            for _ in range(5):
                model.train_on_batch(x, y)
            identity, sigma = [], []
            for layer in wrapped:
                w = np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype="float64")
                m = w.reshape(-1, w.shape[-1])
                if strategy == "weightnorm":
                    g = keras.ops.convert_to_numpy(layer.g).astype("float64")
                    identity.append(float(np.abs(np.sqrt((m**2).sum(axis=0)) / np.abs(g) - 1.0).max()))  # g may turn negative
                else:
                    sigma.append(float(np.linalg.svd(m, compute_uv=False)[0]))
            r["identity_max_rel_err"] = max(identity) if identity else None
            r["sigmas"] = sigma
            out[f"{model_name}/{strategy}"] = r
    return out


def gradients_check():
    """The gradients diagnostic on this backend, against a central finite difference of one kernel entry."""
    import keras

    from normbench.builtins import load_builtins
    from normbench.diagnostics import kernels
    from normbench.diagnostics.gradients import gradients
    from normbench.runner import build
    from normbench.spec import RunSpec

    load_builtins()
    keras.backend.clear_session()
    rng = np.random.default_rng(2)
    model, _ = build(RunSpec("mlp", "batchnorm", "mnist", model_params={"depth": 2, "width": 8}), (6,), 3)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.integers(0, 3, size=16)
    rows = gradients(model, {"x": x, "y": y})
    from normbench.diagnostics import kernel_gradients

    g = kernel_gradients(model, x, y)[0][1, 2]
    kernel = kernels(model)[0][1]
    w = keras.ops.convert_to_numpy(kernel).astype("float64")
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    losses = []
    for step in (1e-2, -1e-2):
        bumped = w.copy()
        bumped[1, 2] += step
        kernel.assign(bumped.astype("float32"))
        losses.append(float(keras.ops.convert_to_numpy(loss_fn(y, model(x, training=False)))))
    kernel.assign(w.astype("float32"))
    fd = (losses[0] - losses[1]) / 2e-2
    # the logits layer's input gradient in closed form: (softmax - onehot) W^T / n
    from normbench.diagnostics import filter_normalized_direction, loss_gradients, loss_surface

    logits = keras.ops.convert_to_numpy(model(x, training=False)).astype("float64")
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    expected = (probs - np.eye(3)[y]) @ keras.ops.convert_to_numpy(model.get_layer("logits").kernel).T / len(x)
    got = loss_gradients(model, x, y)[1][-1]
    # a loss slice of the model evaluated through predict_on_batch, against setting the weights by hand
    weights = [np.array(v.numpy()) for v in model.trainable_variables]
    d = filter_normalized_direction(weights, rng)
    (sliced, _), = loss_surface(model, lambda t: np.asarray(model.predict_on_batch(t), dtype=np.float64), x, y, [d],
                                [(0.4,)])
    restored = all(np.array_equal(np.array(v.numpy()), w) for v, w in zip(model.trainable_variables, weights))
    for v, w, dv in zip(model.trainable_variables, weights, d):
        v.assign(w + 0.4 * dv)
    by_hand = float(keras.ops.convert_to_numpy(loss_fn(y, model(x, training=False))))
    for v, w in zip(model.trainable_variables, weights):
        v.assign(w)
    return {"layers": [layer for layer, q, _ in rows if q == "grad_norm"],
            "grad_norms": [v for _, q, v in rows if q == "grad_norm"],
            "max_rel_diff_to_finite_difference": float(abs(g - fd) / max(abs(fd), 1e-4)),
            "input_grad_max_abs_err": float(np.abs(got - expected).max()),
            "input_grad_max_abs": float(np.abs(expected).max()),
            "input_grad_rms": [v for _, q, v in rows if q == "input_grad_rms"],
            "slice_rel_err": float(abs(sliced - by_hand) / by_hand), "slice_restored": restored}


def linear_squared_loss(rng):
    """A linear model with squared loss, whose Hessian is H = 2 X^T X / n exactly: (the sharpness diagnostic's
    HVP function for it, H, a random vector v)."""
    import keras

    from normbench.diagnostics import hessian_vector_product

    x = (rng.normal(size=(64, 5)) * np.array([3.0, 1.0, 1.0, 0.5, 0.2])).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, use_bias=False)])
    hvp = hessian_vector_product(model, x, y, lambda t, p: keras.ops.mean((t - p) ** 2))
    return hvp, 2.0 * x.T.astype("float64") @ x / len(x), rng.normal(size=(5, 1)).astype("float32")


def hessian_check():
    """The sharpness diagnostic's Hessian-vector product on a linear model with squared loss (H = 2 X^T X / n)."""
    import keras

    from normbench.diagnostics import hessian_top_and_trace

    keras.backend.clear_session()
    hvp, h, v = linear_squared_loss(np.random.default_rng(3))
    top, _ = hessian_top_and_trace(hvp, [(5, 1)], iterations=50, probes=2)
    return {"hvp_max_rel_err": float(np.abs(hvp([v])[0] - h @ v).max() / np.abs(h @ v).max()),
            "top_rel_err": float(abs(top - np.linalg.eigvalsh(h).max()) / np.linalg.eigvalsh(h).max())}


def momentum_ramp_check():
    """SGD with a momentum ramp and an exponential learning-rate decay (the dropout paper's schedule), trained by
    Keras' compiled ``train_on_batch`` on a linear model with squared loss, against the same updates in NumPy:
    v = mu_t v - lr_t g, w = w + v, mu_t linear from 0.5 to 0.9 over 6 steps, lr_t = 0.05 * 0.5 ** (t / 4)."""
    import keras

    from normbench.schedules import RampedSGD, SpecSchedule

    keras.backend.clear_session()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, use_bias=False)])
    w = keras.ops.convert_to_numpy(model.layers[0].kernel).astype("float64")
    model.compile(optimizer=RampedSGD(0.5, 6, 0.9, learning_rate=SpecSchedule(0.05, 40, "exponential", decay=0.5,
                                                                              steps_per_epoch=4)), loss="mse")
    v = np.zeros_like(w)
    for t in range(10):
        model.train_on_batch(x, y)
        g = 2.0 * x.T.astype("float64") @ (x @ w - y) / len(x)
        mu, lr = 0.5 + 0.4 * min(1.0, t / 6), 0.05 * 0.5 ** (t / 4)
        v = mu * v - lr * g
        w = w + v
    got = keras.ops.convert_to_numpy(model.layers[0].kernel)
    return {"max_rel_err": float(np.abs(got - w).max() / np.abs(w).max())}


def norm_free():
    """tests/test_norm_free.py's comparisons with its NumPy references, on this backend."""
    from test_norm_free import norm_free_errors

    return norm_free_errors()


def norm_numerics():
    """tests/test_norm_numerics.py's comparison with its NumPy reference, on this backend."""
    from test_norm_numerics import numerics_errors

    return numerics_errors()


def probe_device():
    """tests/test_probe.py's comparison of the probe's device and NumPy statistics, on this backend."""
    from test_probe import PROBE_CASES, probe_device_error

    return {f"{c[0]}/{c[1]}/{c[2].get('activation', '')}": probe_device_error(c) for c in PROBE_CASES
            if not hasattr(c, "marks")}


def epoch0(data_dir):
    from normbench.datasets import load_raw
    from normbench.errors import DataError
    from normbench.runner import run
    from normbench.spec import RunSpec

    try:
        load_raw("mnist", data_dir)
    except DataError:
        return None
    out = {}
    for strategy in ("none", "batchnorm", "selu", "weightnorm"):
        spec = RunSpec("mlp8", strategy, "mnist", epochs=0, limit=500, eval_limit=200, val_size=500, probe_size=64,
                       train_eval_size=200)
        rec = run(spec, data_dir=data_dir, log=lambda _m: None)
        out[strategy] = {"status": rec["status"], "error": rec["error"], "history0": rec["history"][0],
                         "stats": rec["stats"]["rows"]}
    return out


if __name__ == "__main__":
    import keras

    result = {"backend": keras.backend.backend(), "epoch0": epoch0(os.environ.get("NORMBENCH_DATA_DIR") or None),
              "reparametrization": reparametrization(), "gradients": gradients_check(),
              "hessian": hessian_check(), "momentum_ramp": momentum_ramp_check(), "norm_numerics": norm_numerics(),
              "norm_free": norm_free(), "probe_device": probe_device()}
    if keras.backend.backend() == "jax":
        result["engines"] = engine_agreement()
    with open(sys.argv[1], "w") as f:
        json.dump(result, f)
