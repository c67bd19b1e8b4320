"""The report's sections for the opt-in diagnostics (weight spectra, gradient flow, sharpness, loss
landscapes, mean-field theory) and what each costs: tables appended to the report's Markdown, CSVs under
``tables/``, and figure makers that the report draws with its others."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..files import write_csv
from . import plots, tables
from .render import markdown_table, slug


def _names(records) -> set[str]:
    return {row[2] for r in records for row in (r.get("diagnostics") or {}).get("rows", [])}


def _table(md: list[str], out: Path, name: str, heading: str, text: str, table: pd.DataFrame, digits: int = 3) -> None:
    """One per-(dataset / model / strategy) table: its CSV under tables/, and its heading, text and table in md."""
    write_csv(table, out / "tables" / f"{name}.csv")
    md += [heading, "", text, "", markdown_table(table.round(digits), corner="dataset / model / strategy"), ""]


def sections(records: list[dict], runs: pd.DataFrame, out: Path, md: list[str], section) -> list[tuple[str, object]]:
    """Append the diagnostics' sections to ``md``; return (title, make) for their figures."""
    names = _names(records)
    makers: list[tuple[str, object]] = []
    fig = out / "figures"
    if not names:
        return makers

    def models_of(frame):
        return sorted({(d, m) for d, m in zip(frame.dataset, frame.model)})

    spectra = tables.diagnostics_frame(records, runs, "spectra")
    if len(spectra):
        with section(md, "Weight spectra"):
            _table(md, out, "spectra", "## Weight spectra (the `spectra` diagnostic)",
                   "Per run and layer, the eigenvalues of W^T W / N (conv kernels unfolded); alpha is the exponent of a "
                   "power law fitted to the spectrum's tail (Clauset et al. 2009). Martin & Mahoney read alpha between "
                   "about 2 and 6 as a well-trained layer and large alpha (a Marchenko-Pastur bulk, as at random "
                   "initialization) as an untrained one. MP spikes: eigenvalues beyond the bulk edge of a random "
                   "matrix of the layer's shape and variance. Hidden layers only.", tables.spectra_summary(spectra))
        for d, m in models_of(spectra):
            makers.append((f"{d} / {m}: weight-spectrum alpha per layer",
                           lambda d=d, m=m: plots.spectra_alpha(spectra, d, m, fig / f"spectra_{slug(d)}_{slug(m)}.png")))
        makers.append(("Weight-spectrum alpha against test accuracy",
                       lambda: plots.alpha_vs_accuracy(spectra, runs, fig / "alpha_vs_accuracy.png")))

    gradients = tables.diagnostics_frame(records, runs, "gradients")
    sharpness = tables.diagnostics_frame(records, runs, "sharpness")
    if len(gradients) or len(sharpness):
        with section(md, "Gradient flow and sharpness"):
            _table(md, out, "gradient_flow", "## Gradient flow and sharpness (the `gradients` and `sharpness` diagnostics)",
                   "On the probe batch in inference mode: the norm of the loss gradient with respect to a layer's "
                   "kernel over the kernel's norm (grad/weight), and the root-mean-square norm of each example's loss "
                   "gradient with respect to the layer's input (input grad: the backpropagated signal), for the first "
                   "and the last hidden layer (a first layer far below the last one is a vanishing gradient), and the "
                   "loss Hessian's eigenvalue of largest magnitude (power iteration; negative where the curvature "
                   "is) and trace (Hutchinson). Medians over seeds; per-layer values are in the records and the "
                   "figures. No diagnostic runs at an epoch whose loss is not finite, so a run that diverged "
                   "shows its last finite epoch as 'final' (see 'Runs that did not finish').",
                   tables.flow_summary(gradients, sharpness), digits=4)
        for d, m in models_of(gradients):
            makers.append((f"{d} / {m}: backpropagated gradient per layer",
                           lambda d=d, m=m: plots.layer_profile(
                               gradients, d, m, "input_grad_rms", "per-example gradient norm w.r.t. the layer's input",
                               "gradient flow through depth (probe batch, inference mode; log scale)",
                               fig / f"gradients_{slug(d)}_{slug(m)}.png", logy=True)))
        for d, m in models_of(sharpness):
            makers.append((f"{d} / {m}: sharpness over training",
                           lambda d=d, m=m: plots.over_training(
                               sharpness, d, m, [("hessian_top", "|top Hessian eigenvalue|"), ("hessian_trace", "|Hessian trace|")],
                               "loss-Hessian sharpness over training (probe batch)", fig / f"sharpness_{slug(d)}_{slug(m)}.png")))

    landscape = tables.landscape_frame(records, runs)
    if len(landscape):
        with section(md, "Loss landscapes"):
            _table(md, out, "landscape", "## Loss landscapes (the `landscape` diagnostic)",
                   "At the end of training, the training loss (first 256 training samples, unaugmented, inference "
                   "mode) at w + a d1 + b d2, for random Gaussian directions d1, d2 scaled filter by filter to the "
                   "norms of the trained weights' filters (Li et al. 2018; biases and normalization parameters are "
                   "not perturbed), a and b in [-1, 1]. A small rise means a wide, flat minimum along random "
                   "directions; the 2-D figures show whether the basin is convex-like or chaotic. One pair of "
                   "directions per run (seeded by the run's seed).",
                   tables.landscape_summary(landscape, tables.diagnostics_frame(records, runs, "landscape")))
        for d in sorted(landscape.dataset.unique()):
            makers.append((f"{d}: 1-D loss slices", lambda d=d: plots.landscape_lines(landscape, d, fig / f"landscape_1d_{slug(d)}.png")))
        for d, m in models_of(landscape):
            makers.append((f"{d} / {m}: 2-D loss slices",
                           lambda d=d, m=m: plots.landscape_contours(landscape, d, m, fig / f"landscape_2d_{slug(d)}_{slug(m)}.png")))

    if "meanfield" in names:
        with section(md, "Mean-field theory"):
            frame = tables.meanfield_frame(records, runs)
            if not len(frame):
                raise ValueError("no run's model is a chain of Dense layers the recursion covers")
            _table(md, out, "meanfield", "## Signal propagation against mean-field theory (the `meanfield` diagnostic)",
                   "At initialization, on the probe batch: the measured second moment of each hidden layer's "
                   "pre-activation (variance + mean^2 over all units and samples) and the activation's mean, beside "
                   "the mean-field prediction from the input's second moment and each layer's actual weight variance "
                   "(ReLU + He init keeps the second moment constant; SELU + LeCun init is drawn to mean 0, variance "
                   "1; BN in inference mode at initialization is the identity up to 1/sqrt(1 + epsilon)). Only chains "
                   "of Dense layers are predicted (no residual, convolutional or pooled models). A ratio near 1 at "
                   "every depth means the network propagates the signal as the theory says; the spread is finite "
                   "width (256 units).", tables.meanfield_summary(frame))
            for d, m in models_of(frame):
                makers.append((f"{d} / {m}: signal propagation against mean-field theory",
                               lambda d=d, m=m: plots.meanfield_overlay(frame, d, m, fig / f"meanfield_{slug(d)}_{slug(m)}.png")))

    failed = [(r["run_id"], *row) for r in records for row in r.get("diagnostics_errors") or []]
    if failed:
        md += ["Diagnostics that failed or do not apply to the model (`NotApplicable`; the runs went on without "
               "them at those epochs):", "",
               markdown_table(pd.DataFrame(failed, columns=["run", "epoch", "diagnostic", "error"]).set_index("run"),
                              corner="run"), ""]

    with section(md, "Diagnostics' cost"):
        cost = tables.diagnostic_cost(records, runs)
        write_csv(cost, out / "tables" / "diagnostic_cost.csv", index=False)
        view = cost.set_index(cost.dataset + " / " + cost.model + " / " + cost.diagnostic).drop(
            columns=["dataset", "model", "diagnostic"])
        md += ["## What the diagnostics cost", "",
               "Seconds each diagnostic took in a run (summed over the epochs it was measured at) against the run's "
               "training seconds (optimizer steps only), medians over runs; measured on the device in the "
               "provenance table. `landscape` runs once at the end, `meanfield` once at initialization, the others "
               "at every epoch.", "",
               markdown_table(view.round(2), corner="dataset / model / diagnostic"), ""]
    return makers
