"""Opt-in measurements that explain a run, registered in ``DIAGNOSTICS``.

A diagnostic is a function ``(model, context) -> rows`` of ``(layer, quantity, value)``, run
at every probe epoch when a spec names it in ``diagnostics``; the runner records the rows with
the epoch and the seconds each diagnostic cost. ``context`` holds the probe batch (``x``, ``y``).
Diagnostics read the model and never train it.

``gradients``: gradient flow. Per Dense/Conv2D layer, the norm of the gradient of the probe
batch's mean cross-entropy with respect to the layer's kernel (``grad_norm``; v for a
reparametrized kernel) and its ratio to the kernel's norm (``grad_ratio``, the relative step
plain SGD would take). The model runs in inference mode (BN with its moving statistics,
dropout off), so that measuring changes nothing. Gradients need the backend's autodiff:
TensorFlow (GradientTape), JAX (jax.grad of the model's stateless call) and torch (autograd)
are supported. ``input_grad_rms``: the root-mean-square over the probe batch of the norm of
each example's loss gradient with respect to the layer's input (the backpropagated signal itself,
which vanishes or explodes through depth), taken by adding a zero offset to the layer's input and
differentiating with respect to it.

``sharpness``: the loss Hessian on the probe batch (all trainable parameters, inference mode),
through Hessian-vector products by the backend's autodiff (TensorFlow, JAX, torch; compiled once
per run on TensorFlow and JAX): its eigenvalue of largest magnitude by power iteration
(``hessian_top``; at most 20 steps, stopping once two estimates agree to 1e-3), and its trace
by Hutchinson's estimator over 10 Rademacher vectors (``hessian_trace``). Seeded, so the same
model gives the same numbers. Recorded as layer None (the whole model).

``spectra``: heavy-tailed self-regularization (Martin & Mahoney 2021). For every Dense and
Conv2D layer (the effective kernel of a reparametrized one; the logits layer is layer -1), the
eigenvalues of X = W^T W / N, where W is the kernel as an N x M matrix: a conv kernel
(rows, cols, in, out) is unfolded to (rows * cols * in) x out, the linear map from one
receptive-field patch to the output channels (WeightWatcher instead fits each spatial slice;
the unfolded matrix is one spectrum per layer, the same matrix the max-norm and kernel-norm
statistics see). Recorded: the power-law exponent ``alpha`` of the spectrum's tail, fitted by
maximum likelihood with xmin chosen by the Kolmogorov-Smirnov distance (Clauset, Shalizi &
Newman 2009), its ``xmin``, ``ks`` distance and ``n_tail``; the ``spectral_norm`` ||W||_2; the
``stable_rank`` ||W||_F^2 / ||W||_2^2; and ``mp_spikes``, the eigenvalues beyond the
Marchenko-Pastur bulk edge sigma^2 (1 + sqrt(M/N))^2 of a random matrix of W's shape and entry
variance (with a margin of three Tracy-Widom widths, so a random matrix has none).
"""

from __future__ import annotations

import weakref

import numpy as np

from .registry import DIAGNOSTICS

MIN_TAIL = 10  # fewest eigenvalues a power-law fit may rest on


class NotApplicable(Exception):
    """Raised by a diagnostic that does not apply to the model (the message says why). The runner records it
    with the diagnostics that failed (``diagnostics_errors``) and logs it: nothing is measured, and a silent empty
    result would look like a measurement that found nothing."""


def powerlaw_fit(x: np.ndarray, min_tail: int = MIN_TAIL, xmin: float | None = None) -> dict[str, float]:
    """Continuous power-law fit of the tail of ``x``: alpha by maximum likelihood, xmin by KS distance.

    For each candidate xmin (every distinct value leaving at least ``min_tail`` points at or above
    it), alpha = 1 + n / sum(ln(x_i / xmin)) over the tail, and D = max |S(x) - P(x)| between the
    tail's empirical CDF and the fitted one, P(x) = 1 - (x / xmin)^(1 - alpha). The xmin with the
    smallest D wins (Clauset, Shalizi & Newman 2009, section 3.3). D is the supremum over both
    sides of each step of the empirical CDF (the ``powerlaw`` package compares at the data points
    only, which favours short tails). A given ``xmin`` is used as it is.
    """
    x = np.sort(np.asarray(x, dtype=np.float64))
    x = x[x > 0]
    best = {"alpha": float("nan"), "xmin": float("nan"), "ks": float("inf"), "n_tail": 0}
    if len(x) < min_tail:
        return best
    logs = np.log(x)
    suffix = np.cumsum(logs[::-1])[::-1]  # sum of log x over x[i:]
    candidates = range(0, len(x) - min_tail + 1) if xmin is None else [int(np.searchsorted(x, xmin))]
    for i in candidates:
        if xmin is None and i and x[i] == x[i - 1]:
            continue
        n = len(x) - i
        total = suffix[i] - n * logs[i]
        if total <= 0:
            continue
        alpha = 1.0 + n / total
        tail = x[i:]
        fitted = 1.0 - (tail / x[i]) ** (1.0 - alpha)
        empirical_hi = np.arange(1, n + 1) / n
        empirical_lo = np.arange(0, n) / n
        ks = float(max(np.abs(empirical_hi - fitted).max(), np.abs(fitted - empirical_lo).max()))
        if ks < best["ks"]:
            best = {"alpha": float(alpha), "xmin": float(x[i]), "ks": ks, "n_tail": int(n)}
    return best


def matrix_of(kernel: np.ndarray) -> np.ndarray:
    """The kernel as an N x M matrix (N >= M after transposing if needed): conv kernels unfolded."""
    m = np.asarray(kernel, dtype=np.float64).reshape(-1, kernel.shape[-1])
    return m if m.shape[0] >= m.shape[1] else m.T


def spectrum_summary(kernel: np.ndarray) -> dict[str, float]:
    """alpha, xmin, ks, n_tail, spectral_norm, stable_rank, mp_spikes of one kernel (see the module docstring)."""
    w = matrix_of(kernel)
    n, m = w.shape
    eig = np.linalg.svd(w, compute_uv=False) ** 2 / n  # eigenvalues of W^T W / N
    sigma2 = float(w.var())
    edge = sigma2 * (1.0 + np.sqrt(m / n)) ** 2
    tw_width = sigma2 * (1.0 + np.sqrt(m / n)) ** (4.0 / 3.0) * (m / n) ** (-1.0 / 6.0) * n ** (-2.0 / 3.0)
    out = powerlaw_fit(eig)
    out.update(
        spectral_norm=float(np.sqrt(eig.max() * n)),
        stable_rank=float(eig.sum() / eig.max()),
        mp_spikes=int((eig > edge + 3.0 * tw_width).sum()),
    )
    return out


def _linear_layers(model):
    from .layers import linear_kind

    out = []
    for layer in model.layers:
        if linear_kind(layer) is None:
            continue
        if layer.name == "logits":
            index = -1
        elif layer.name.startswith("h") and layer.name.endswith("_linear"):
            index = int(layer.name[1:3])
        else:
            continue  # projection shortcuts
        out.append((index, layer))
    return out


@DIAGNOSTICS.register(name="spectra")
def spectra(model, context=None) -> list[tuple[int, str, float]]:
    """Weight spectra per layer: power-law alpha (Clauset MLE + KS xmin), spectral norm, stable rank, MP spikes."""
    import keras

    rows = []
    for index, layer in _linear_layers(model):
        summary = spectrum_summary(keras.ops.convert_to_numpy(layer.kernel))
        rows += [(index, q, float(v)) for q, v in summary.items()]
    return rows


def _kernels(model):
    from .layers import KernelReparametrization

    out = []
    for index, layer in _linear_layers(model):
        inner = layer.layer if isinstance(layer, KernelReparametrization) else layer
        out.append((index, inner.kernel))
    return out


class _InputOffsets:
    """While active, each of ``layers`` adds ``values[i]`` to its input before its own call.

    With zero offsets the model computes exactly what it computes without them, and the gradient
    of the loss with respect to offset i is the gradient with respect to layer i's input: the
    backpropagated signal, which no variable holds. Works on every backend (the offsets are
    whatever tensors the backend differentiates: watched TF tensors, JAX tracers, torch leaves),
    by shadowing each layer's ``call`` with an instance attribute that is removed on exit.
    """

    def __init__(self, layers):
        self.layers = layers
        self.values: list = [None] * len(layers)

    def __enter__(self):
        import keras

        for i, layer in enumerate(self.layers):
            original = type(layer).call.__get__(layer)

            def call(inputs, *args, _i=i, _original=original, **kwargs):
                return _original(inputs + keras.ops.cast(self.values[_i], inputs.dtype), *args, **kwargs)

            layer.call = call
        return self

    def __exit__(self, *exc):
        for layer in self.layers:
            del layer.call


def loss_gradients(model, x, y) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Gradients of the mean cross-entropy on (x, y), inference mode, with respect to each kernel of
    ``_kernels`` and to the input of each of its layers (same order)."""
    import keras

    linear = [layer for _, layer in _linear_layers(model)]
    kernels = [k for _, k in _kernels(model)]
    shapes = [(len(x), *layer.input.shape[1:]) for layer in linear]
    backend = keras.backend.backend()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    y = np.asarray(y)
    with _InputOffsets(linear) as offsets:
        if backend == "tensorflow":
            import tensorflow as tf

            offsets.values = [tf.zeros(s) for s in shapes]
            with tf.GradientTape() as tape:
                tape.watch(offsets.values)
                loss = loss_fn(y, model(x, training=False))
            grads = tape.gradient(loss, [k.value for k in kernels] + offsets.values)
            grads = [np.asarray(g) for g in grads]
        elif backend == "jax":
            import jax

            trainable = [v.value for v in model.trainable_variables]
            fixed = [v.value for v in model.non_trainable_variables]
            positions = {id(v): i for i, v in enumerate(model.trainable_variables)}

            def loss_of(values, offset_values):
                offsets.values = offset_values
                logits, _ = model.stateless_call(values, fixed, x, training=False)
                return loss_fn(y, logits)

            g_vars, g_inputs = jax.grad(loss_of, argnums=(0, 1))(trainable, [jax.numpy.zeros(s) for s in shapes])
            grads = [np.asarray(g_vars[positions[id(k)]]) for k in kernels] + [np.asarray(g) for g in g_inputs]
        elif backend == "torch":
            import torch

            offsets.values = [keras.ops.zeros(s).requires_grad_() for s in shapes]
            loss = loss_fn(torch.as_tensor(y), model(x, training=False))
            grads = [g.detach().cpu().numpy() for g in torch.autograd.grad(loss, [k.value for k in kernels] + offsets.values)]
        else:
            raise NotImplementedError(f"the gradients diagnostic supports tensorflow, jax and torch, not {backend}")
    return grads[: len(kernels)], grads[len(kernels):]


def kernel_gradients(model, x, y) -> list[np.ndarray]:
    """Gradients of the mean cross-entropy on (x, y), inference mode, with respect to each kernel of ``_kernels``."""
    return loss_gradients(model, x, y)[0]


@DIAGNOSTICS.register(name="gradients")
def gradients(model, context) -> list[tuple[int, str, float]]:
    """Gradient flow per layer: loss-gradient norms w.r.t. the kernel (and its ratio to the kernel's norm) and the input."""
    import keras

    x = context["x"]
    kernel_grads, input_grads = loss_gradients(model, x, context["y"])
    rows = []
    for (index, kernel), g, g_in in zip(_kernels(model), kernel_grads, input_grads):
        g_norm = float(np.linalg.norm(g))
        w_norm = float(np.linalg.norm(keras.ops.convert_to_numpy(kernel)))
        # in inference mode every example's loss depends on its own input only, so the per-example
        # gradient is len(x) times its row of the mean loss's gradient
        per_example = np.linalg.norm(g_in.reshape(len(x), -1), axis=1) * len(x)
        rows += [(index, "grad_norm", g_norm), (index, "grad_ratio", g_norm / w_norm if w_norm else float("nan")),
                 (index, "input_grad_rms", float(np.sqrt(np.mean(per_example ** 2))))]
    return rows


def hessian_vector_product(model, x, y, loss_fn):
    """A function v -> H v for the Hessian of ``loss_fn(y, model(x))`` w.r.t. ``model.trainable_variables``
    (v and H v: lists of NumPy arrays shaped like the variables), on the model's backend."""
    import keras

    variables = model.trainable_variables
    backend = keras.backend.backend()
    y = np.asarray(y)
    if backend == "tensorflow":
        import tensorflow as tf

        tx, ty = tf.constant(x), tf.constant(y)

        @tf.function  # traced once per call of this function: eager double tapes cost 10x more
        def traced(vs):
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    loss = loss_fn(ty, model(tx, training=False))
                grads = inner.gradient(loss, [v.value for v in variables])
                dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vs)])
            return outer.gradient(dot, [v.value for v in variables])

        def hvp(vs):
            return [np.asarray(h) for h in traced([tf.constant(v, dtype=var.dtype) for v, var in zip(vs, variables)])]

        return hvp
    if backend == "jax":
        import jax

        def loss_of(values, fixed):
            logits, _ = model.stateless_call(values, fixed, x, training=False)
            return loss_fn(y, logits)

        grad = jax.grad(loss_of)
        traced = jax.jit(lambda tv, ntv, vs: jax.jvp(lambda t: grad(t, ntv), (tv,), (vs,))[1])  # compiled once

        def hvp(vs):
            tv, ntv = [v.value for v in variables], [v.value for v in model.non_trainable_variables]
            return [np.asarray(h) for h in traced(tv, ntv, [jax.numpy.asarray(v) for v in vs])]

        return hvp
    if backend == "torch":
        import torch

        def hvp(vs):
            params = [v.value for v in variables]
            loss = loss_fn(torch.as_tensor(y), model(x, training=False))
            grads = torch.autograd.grad(loss, params, create_graph=True)
            dot = sum((g * torch.as_tensor(v, dtype=g.dtype, device=g.device)).sum() for g, v in zip(grads, vs))
            return [h.detach().cpu().numpy() for h in torch.autograd.grad(dot, params)]

        return hvp
    raise NotImplementedError(f"the sharpness diagnostic supports tensorflow, jax and torch, not {backend}")


def hessian_top_and_trace(hvp, shapes, iterations: int = 20, probes: int = 10, seed: int = 0,
                          tol: float = 0.0) -> tuple[float, float]:
    """Power iteration for the eigenvalue of largest magnitude (at most ``iterations`` steps, stopping early
    once two estimates differ by less than ``tol`` relative); Hutchinson's trace with Rademacher vectors."""
    rng = np.random.default_rng(seed)

    def dot(a, b):
        return float(sum(np.vdot(u, w) for u, w in zip(a, b)))

    v = [rng.standard_normal(s).astype("float32") for s in shapes]
    norm = np.sqrt(dot(v, v))
    v = [u / norm for u in v]
    top = 0.0
    for _ in range(iterations):
        hv = hvp(v)
        previous, top = top, dot(v, hv)
        if tol and abs(top - previous) <= tol * abs(top):
            break
        norm = np.sqrt(dot(hv, hv))
        if norm == 0:
            break
        v = [h / norm for h in hv]
    trace = float(np.mean([dot(z, hvp(z)) for z in
                           ([rng.choice([-1.0, 1.0], size=s).astype("float32") for s in shapes] for _ in range(probes))]))
    return top, trace


SHARPNESS_ITERATIONS, SHARPNESS_TOL, SHARPNESS_PROBES = 20, 1e-3, 10
_HVP_CACHE = weakref.WeakKeyDictionary()  # model -> (probe batch, its HVP function)


@DIAGNOSTICS.register(name="sharpness")
def sharpness(model, context) -> list[tuple[int | None, str, float]]:
    """Loss-Hessian top eigenvalue (power iteration) and trace (Hutchinson) on the probe batch, by HVPs."""
    import keras

    cached = _HVP_CACHE.get(model)
    if cached is None or cached[0] is not context["x"]:  # traced once per run: the probe batch is fixed
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        cached = _HVP_CACHE[model] = (context["x"], hessian_vector_product(model, context["x"], context["y"], loss_fn))
    top, trace = hessian_top_and_trace(cached[1], [tuple(v.shape) for v in model.trainable_variables],
                                       iterations=SHARPNESS_ITERATIONS, probes=SHARPNESS_PROBES, tol=SHARPNESS_TOL)
    return [(None, "hessian_top", top), (None, "hessian_trace", trace)]


def check_names(names) -> list[str]:
    """The diagnostics a spec names, each registered (an unknown name lists the valid ones)."""
    from .errors import UnknownNameError

    for name in names:
        try:
            DIAGNOSTICS.get(name)
        except UnknownNameError as e:
            raise UnknownNameError(f"diagnostics = {list(names)!r}: {e}") from None
    return list(names)


# ---------------------------------------------------------------------------------------------
# Loss-landscape slices (Li et al. 2018)

LANDSCAPE_SPAN = 1.0  # the slices cover [-span, span] times each filter-normalized direction
LANDSCAPE_POINTS_1D = 41
LANDSCAPE_POINTS_2D = 21  # per axis: 441 forward passes
LANDSCAPE_SAMPLES = 256  # the first training samples (unaugmented): the loss whose landscape is drawn


def filter_normalized_direction(weights: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """A Gaussian random direction shaped like ``weights``, filter-normalized (Li et al. 2018, section 4):
    in every kernel (a variable of two or more axes) the slice of each output unit or filter (the last
    axis) is scaled to the norm of the same slice of the weights. One-axis variables (biases,
    normalization scales and shifts, weight-norm gains) get a zero direction, as in the paper's
    experiments, which leave biases and BN parameters unperturbed."""
    out = []
    for w in weights:
        w = np.asarray(w)
        if w.ndim < 2:
            out.append(np.zeros_like(w))
            continue
        d = rng.standard_normal(w.shape)
        axes = tuple(range(w.ndim - 1))
        w_norm = np.sqrt(np.sum(np.square(w), axis=axes, keepdims=True))
        d *= w_norm / np.maximum(np.sqrt(np.sum(np.square(d), axis=axes, keepdims=True)), 1e-12)
        out.append(d.astype(w.dtype))
    return out


def loss_surface(model, logits_of, x, y, directions: list[list[np.ndarray]], coords) -> list[tuple[float, float]]:
    """(loss, accuracy) on (x, y) at w + sum_k c_k d_k for each coordinate tuple c of ``coords``, where w
    are the model's trainable weights; the weights are restored exactly afterwards."""
    from .metrics import loss_and_accuracy

    variables = model.trainable_variables
    origin = [np.array(v.numpy()) for v in variables]
    out = []
    try:
        for c in coords:
            for v, w, *ds in zip(variables, origin, *directions):
                v.assign(w + sum(ck * d for ck, d in zip(c, ds)).astype(w.dtype) if any(c) else w)
            out.append(loss_and_accuracy(logits_of(x), y))
    finally:
        for v, w in zip(variables, origin):
            v.assign(w)
    return out


@DIAGNOSTICS.register(name="landscape")
def landscape(model, context) -> dict:
    """Loss-landscape slices at the end of a run: 1-D and 2-D along filter-normalized random directions."""
    rng = np.random.default_rng(context.get("seed", 0))
    weights = [np.array(v.numpy()) for v in model.trainable_variables]
    d1, d2 = filter_normalized_direction(weights, rng), filter_normalized_direction(weights, rng)
    x, y = context["x_train"][:LANDSCAPE_SAMPLES], np.asarray(context["y_train"][:LANDSCAPE_SAMPLES])
    line = np.linspace(-LANDSCAPE_SPAN, LANDSCAPE_SPAN, LANDSCAPE_POINTS_1D)
    grid = np.linspace(-LANDSCAPE_SPAN, LANDSCAPE_SPAN, LANDSCAPE_POINTS_2D)
    points = [(a, b) for a in grid for b in grid]
    one = loss_surface(model, context["logits"], x, y, [d1], [(a,) for a in line])
    two = loss_surface(model, context["logits"], x, y, [d1, d2], points)
    table = [["1d", float(a), 0.0, loss, acc] for a, (loss, acc) in zip(line, one)]
    table += [["2d", float(a), float(b), loss, acc] for (a, b), (loss, acc) in zip(points, two)]
    center = one[LANDSCAPE_POINTS_1D // 2][0]
    losses_1d = np.array([loss for loss, _ in one])
    finite = losses_1d[np.isfinite(losses_1d)]
    rows = [(None, "loss_center", center),
            (None, "loss_1d_max", float(finite.max()) if len(finite) else float("nan")),
            # the loss rise at a quarter of the span, averaged over both sides: a flat minimum rises little
            (None, "loss_rise_quarter", float(np.mean([one[LANDSCAPE_POINTS_1D // 2 + k * (LANDSCAPE_POINTS_1D // 8)][0]
                                                       for k in (-1, 1)]) - center)),
            (None, "forward_passes", float(len(one) + len(two)))]
    return {"rows": rows, "tables": {"landscape": {"columns": ["slice", "x", "y", "loss", "accuracy"], "rows": table}}}


landscape.at_end = True  # many forward passes: measured once, after the last epoch


# ---------------------------------------------------------------------------------------------
# Mean-field signal propagation at initialization

MEANFIELD_PASSTHROUGH = ("InputLayer", "Flatten", "Dropout", "AlphaDropout", "GaussianDropout")


@DIAGNOSTICS.register(name="meanfield")
def meanfield(model, context) -> list[tuple[int, str, float]]:
    """Mean-field prediction of each hidden layer's activation moments at initialization (chains of Dense layers).

    Any other model raises :class:`NotApplicable`, saying which layer the recursion cannot follow.
    """
    from .theory import propagate_chain

    import keras

    steps = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in MEANFIELD_PASSTHROUGH:
            continue
        if kind == "Dense":
            kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
            bias = keras.ops.convert_to_numpy(layer.bias).astype(np.float64) if layer.use_bias else np.zeros(1)
            steps.append(("linear", kernel.shape[0] * float(np.mean(kernel ** 2)), float(np.mean(bias ** 2))))
        elif kind == "BatchNormalization":  # inference mode: an affine map per unit
            gamma = np.asarray(keras.ops.convert_to_numpy(layer.gamma) if layer.scale else 1.0, dtype=np.float64)
            beta = np.asarray(keras.ops.convert_to_numpy(layer.beta) if layer.center else 0.0, dtype=np.float64)
            mean = np.asarray(keras.ops.convert_to_numpy(layer.moving_mean), dtype=np.float64)
            var = np.asarray(keras.ops.convert_to_numpy(layer.moving_variance), dtype=np.float64)
            if np.any(beta != 0):
                raise NotApplicable(f"batch norm {layer.name} has a nonzero shift (beta); the mean-field recursion "
                                    f"tracks zero-mean pre-activations only")
            if np.all(mean == 0) and np.all(var == 1):  # Keras' initial statistics: a per-unit scaling
                steps.append(("scale", float(np.mean(gamma ** 2 / (1 + layer.epsilon))), 0.0))
            else:  # population statistics (precise BN): each unit standardized, then gamma
                steps.append(("standardize", float(np.mean(gamma ** 2 * var / (var + layer.epsilon))), 0.0))
        elif kind == "Activation" and layer.name.startswith("h") and layer.name.endswith("_act"):
            steps.append(("act", layer.get_config()["activation"], int(layer.name[1:3])))
        else:  # convolutions, pooling, residual additions, other normalizations: no prediction here
            raise NotApplicable(f"the mean-field recursion covers chains of Dense layers (with batch norm and "
                                f"activations) only; this model has {layer.name}, a {kind} layer")
    x = np.asarray(context["x"], dtype=np.float64)
    try:
        predicted = propagate_chain(float(np.mean(x ** 2)), steps)
    except KeyError as e:
        raise NotApplicable(f"the activation {e.args[0]!r} has no mean-field moment map (normbench.theory)") from None
    return [(index, q, v) for index, moments in predicted for q, v in moments.items()]


meanfield.at_init = True  # a prediction for the initial network only
