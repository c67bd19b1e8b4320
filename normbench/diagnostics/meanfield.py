"""``meanfield``: mean-field signal propagation at initialization (epoch 0 only).

For a chain of Dense layers (with batch norm and activations), the mean-field prediction of each hidden
layer's pre-activation second moment and activation moments (:mod:`normbench.theory`), from the probe
batch's second moment and each layer's actual weight and bias variance; the report sets it beside the
activation statistics the probe measured. Any other model raises :class:`NotApplicable`.
"""

from __future__ import annotations

import numpy as np

from .base import NotApplicable, register

MEANFIELD_PASSTHROUGH = ("InputLayer", "Flatten", "Dropout", "AlphaDropout", "GaussianDropout")


# the report section's paragraph (its line breaks are spaces there)
REPORT_TEXT = """\
At initialization, on the probe batch: the measured second moment of each hidden layer's pre-activation
(variance + mean^2 over all units and samples) and the activation's mean, beside the mean-field prediction from
the input's second moment and each layer's actual weight variance (ReLU + He init keeps the second moment
constant; SELU + LeCun init is drawn to mean 0, variance 1; BN in inference mode at initialization is the
identity up to 1/sqrt(1 + epsilon)). Only chains of Dense layers are predicted (no residual, convolutional or
pooled models). A ratio near 1 at every depth means the network propagates the signal as the theory says; the
spread is finite width (256 units).
"""


def report(view) -> None:
    """The report's 'Mean-field theory' section: measured against predicted moments, a table and a figure per model."""
    if "meanfield" not in view.names:
        return
    with view.section("Mean-field theory"):
        frame = view.tables.meanfield_frame(view.records, view.runs)
        if not len(frame):
            raise ValueError("no run's model is a chain of Dense layers the recursion covers")
        view.table("meanfield", "## Signal propagation against mean-field theory (the `meanfield` diagnostic)",
                   REPORT_TEXT, view.tables.meanfield_summary(frame))
        for d, m in view.models_of(frame):
            view.figure(f"{d} / {m}: signal propagation against mean-field theory",
                        lambda d=d, m=m: view.plots.meanfield_overlay(frame, d, m, view.figure_path("meanfield", d, m)))


@register("meanfield", when="init", report=report, report_order=40)  # a prediction for the initial network only
def meanfield(model, context) -> list[tuple[int, str, float]]:
    """Mean-field prediction of each hidden layer's activation moments at initialization (chains of Dense layers).

    Any other model raises :class:`NotApplicable`, saying which layer the recursion cannot follow.
    """
    import keras

    from ..theory import propagate_chain

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
