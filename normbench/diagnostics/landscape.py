"""``landscape``: loss-landscape slices (Li et al. 2018), measured once after the last epoch.

The training loss (the first ``LANDSCAPE_SAMPLES`` training samples, unaugmented, inference mode) at
w + a d1 + b d2 for two filter-normalized random directions d1, d2: a 1-D slice along d1 and a 2-D slice on
a grid, written to the record's ``landscape`` section (slice, x, y, loss, accuracy), with a summary in its rows.
"""

from __future__ import annotations

import numpy as np

from .base import register

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
    from ..metrics import loss_and_accuracy

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


# the report section's paragraph (its line breaks are spaces there)
REPORT_TEXT = """\
At the end of training, the training loss (first 256 training samples, unaugmented, inference mode) at w + a d1
+ b d2, for random Gaussian directions d1, d2 scaled filter by filter to the norms of the trained weights'
filters (Li et al. 2018; biases and normalization parameters are not perturbed), a and b in [-1, 1]. A small
rise means a wide, flat minimum along random directions; the 2-D figures show whether the basin is convex-like
or chaotic. One pair of directions per run (seeded by the run's seed).
"""


def report(view) -> None:
    """The report's 'Loss landscapes' section: a summary table, 1-D slices per dataset, 2-D slices per model."""
    landscape = view.tables.landscape_frame(view.records, view.runs)
    if not len(landscape):
        return
    with view.section("Loss landscapes"):
        view.table("landscape", "## Loss landscapes (the `landscape` diagnostic)",
                   REPORT_TEXT, view.tables.landscape_summary(landscape, view.frame("landscape")))
    for d in sorted(landscape.dataset.unique()):
        view.figure(f"{d}: 1-D loss slices",
                    lambda d=d: view.plots.landscape_lines(landscape, d, view.figure_path("landscape_1d", d)))
    for d, m in view.models_of(landscape):
        view.figure(f"{d} / {m}: 2-D loss slices",
                    lambda d=d, m=m: view.plots.landscape_contours(landscape, d, m, view.figure_path("landscape_2d", d, m)))


@register("landscape", when="end", tables=("landscape",), report=report, report_order=30)  # many forward passes
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
