"""``gradients``: gradient flow, at every probe epoch.

Per Dense/Conv2D layer, the norm of the gradient of the probe batch's mean cross-entropy with respect to the
layer's kernel (``grad_norm``; v for a reparametrized kernel) and its ratio to the kernel's norm
(``grad_ratio``, the relative step plain SGD would take). The model runs in inference mode (BN with its
moving statistics, dropout off), so that measuring changes nothing. Gradients need the backend's autodiff
(:mod:`normbench.diagnostics.autodiff`: TensorFlow's GradientTape, jax.grad of the model's stateless call,
torch's autograd). ``input_grad_rms``: the root-mean-square over the probe batch of the norm of each example's
loss gradient with respect to the layer's input (the backpropagated signal itself, which vanishes or explodes
through depth), taken by adding a zero offset to the layer's input and differentiating with respect to it.

Its report section, 'Gradient flow and sharpness', is shared with the ``sharpness`` diagnostic.
"""

from __future__ import annotations

import numpy as np

from . import autodiff
from .base import kernels, linear_layers, register


class InputOffsets:
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
    :func:`~normbench.diagnostics.base.kernels` and to the input of each of its layers (same order)."""
    import keras

    backend = autodiff.for_backend("gradients")
    linear = [layer for _, layer in linear_layers(model)]
    variables = [k for _, k in kernels(model)]
    shapes = [(len(x), *layer.input.shape[1:]) for layer in linear]
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with InputOffsets(linear) as offsets:
        grads = backend.loss_gradients(model, x, np.asarray(y), loss_fn, variables, offsets, shapes)
    return grads[: len(variables)], grads[len(variables):]


def kernel_gradients(model, x, y) -> list[np.ndarray]:
    """Gradients of the mean cross-entropy on (x, y), inference mode, with respect to each kernel of ``kernels``."""
    return loss_gradients(model, x, y)[0]


# the report section's paragraph (its line breaks are spaces there)
REPORT_TEXT = """\
On the probe batch in inference mode: the norm of the loss gradient with respect to a layer's kernel over the
kernel's norm (grad/weight), and the root-mean-square norm of each example's loss gradient with respect to the
layer's input (input grad: the backpropagated signal), for the first and the last hidden layer (a first layer
far below the last one is a vanishing gradient), and the loss Hessian's eigenvalue of largest magnitude (power
iteration; negative where the curvature is) and trace (Hutchinson), with the trace's relative standard error
(probes are added, 10 to 50, until it is at most 5%; blank for records made before it was measured, which used 10
probes: an earlier measurement on mlp8 found their estimate spread 7-14% across probe seeds). Medians over seeds; per-layer values are in
the records and the figures. No diagnostic runs at an epoch whose loss is not finite, so a run that diverged
shows its last finite epoch as 'final' (see 'Runs that did not finish').
"""


def flow_report(view) -> None:
    """The report's 'Gradient flow and sharpness' section (the ``gradients`` and ``sharpness`` diagnostics): a
    summary table, the backpropagated gradient per layer, sharpness over training."""
    gradients, sharpness = view.frame("gradients"), view.frame("sharpness")
    if not (len(gradients) or len(sharpness)):
        return
    with view.section("Gradient flow and sharpness"):
        view.table("gradient_flow", "## Gradient flow and sharpness (the `gradients` and `sharpness` diagnostics)",
                   REPORT_TEXT, view.tables.flow_summary(gradients, sharpness), digits=4)
    for d, m in view.models_of(gradients):
        view.figure(f"{d} / {m}: backpropagated gradient per layer",
                    lambda d=d, m=m: view.plots.layer_profile(
                        gradients, d, m, "input_grad_rms", "per-example gradient norm w.r.t. the layer's input",
                        "gradient flow through depth (probe batch, inference mode; log scale)",
                        view.figure_path("gradients", d, m), logy=True))
    for d, m in view.models_of(sharpness):
        view.figure(f"{d} / {m}: sharpness over training",
                    lambda d=d, m=m: view.plots.over_training(
                        sharpness, d, m, [("hessian_top", "|top Hessian eigenvalue|"), ("hessian_trace", "|Hessian trace|")],
                        "loss-Hessian sharpness over training (probe batch)", view.figure_path("sharpness", d, m)))


@register("gradients", report=flow_report, report_order=20)
def gradients(model, context) -> list[tuple[int, str, float]]:
    """Gradient flow per layer: loss-gradient norms w.r.t. the kernel (and its ratio to the kernel's norm) and the input."""
    import keras

    x = context["x"]
    kernel_grads, input_grads = loss_gradients(model, x, context["y"])
    rows = []
    for (index, kernel), g, g_in in zip(kernels(model), kernel_grads, input_grads):
        g_norm = float(np.linalg.norm(g))
        w_norm = float(np.linalg.norm(keras.ops.convert_to_numpy(kernel)))
        # in inference mode every example's loss depends on its own input only, so the per-example
        # gradient is len(x) times its row of the mean loss's gradient
        per_example = np.linalg.norm(g_in.reshape(len(x), -1), axis=1) * len(x)
        rows += [(index, "grad_norm", g_norm), (index, "grad_ratio", g_norm / w_norm if w_norm else float("nan")),
                 (index, "input_grad_rms", float(np.sqrt(np.mean(per_example ** 2))))]
    return rows
