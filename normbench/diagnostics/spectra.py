"""``spectra``: heavy-tailed self-regularization (Martin & Mahoney 2021), at every probe epoch.

For every Dense and Conv2D layer (the effective kernel of a reparametrized one; the logits layer is layer -1),
the eigenvalues of X = W^T W / N, where W is the kernel as an N x M matrix: a conv kernel (rows, cols, in, out)
is unfolded to (rows * cols * in) x out, the linear map from one receptive-field patch to the output channels
(WeightWatcher instead fits each spatial slice; the unfolded matrix is one spectrum per layer, the same matrix
the max-norm and kernel-norm statistics see). Recorded: the power-law exponent ``alpha`` of the spectrum's
tail, fitted by maximum likelihood with xmin chosen by the Kolmogorov-Smirnov distance (Clauset, Shalizi &
Newman 2009), its ``xmin``, ``ks`` distance and ``n_tail``; the ``spectral_norm`` ||W||_2; the
``stable_rank`` ||W||_F^2 / ||W||_2^2; and ``mp_spikes``, the eigenvalues beyond the Marchenko-Pastur bulk
edge sigma^2 (1 + sqrt(M/N))^2 of a random matrix of W's shape and entry variance (with a margin of three
Tracy-Widom widths, so a random matrix has none).
"""

from __future__ import annotations

import numpy as np

import pandas as pd

from .base import linear_layers, register

MIN_TAIL = 10  # fewest eigenvalues a power-law fit may rest on
# Below this many eigenvalues alpha says nothing about training: Gaussian random N x M matrices (N = 2M, 20 each,
# fitted as below) give a median alpha of 2.2 at M = 16, 3.0 at 32, 4.1 at 64 and 5.4 at 128, inside the 2-6
# "well-trained" band, and 7.9 at 256 (4 of 20 still inside). Such alphas are flagged and left out of summaries.
MIN_EIGENVALUES = 256


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
    """alpha, xmin, ks, n_tail, n_eigenvalues, spectral_norm, stable_rank, mp_spikes of one kernel (see the module
    docstring)."""
    w = matrix_of(kernel)
    n, m = w.shape
    eig = np.linalg.svd(w, compute_uv=False) ** 2 / n  # eigenvalues of W^T W / N
    sigma2 = float(w.var())
    edge = sigma2 * (1.0 + np.sqrt(m / n)) ** 2
    tw_width = sigma2 * (1.0 + np.sqrt(m / n)) ** (4.0 / 3.0) * (m / n) ** (-1.0 / 6.0) * n ** (-2.0 / 3.0)
    out = powerlaw_fit(eig)
    out.update(
        n_eigenvalues=int(m),
        spectral_norm=float(np.sqrt(eig.max() * n)),
        stable_rank=float(eig.sum() / eig.max()),
        mp_spikes=int((eig > edge + 3.0 * tw_width).sum()),
    )
    return out


# the report section's paragraph (its line breaks are spaces there)
REPORT_TEXT = """\
Per run and layer, the eigenvalues of W^T W / N (conv kernels unfolded); alpha is the exponent of a power law
fitted to the spectrum's tail (Clauset et al. 2009). Martin & Mahoney read alpha between about 2 and 6 as a
well-trained layer and large alpha (a Marchenko-Pastur bulk, as at random initialization) as an untrained one.
MP spikes: eigenvalues beyond the bulk edge of a random matrix of the layer's shape and variance. Hidden layers
only. alpha is used only where the matrix has at least {min_eig} eigenvalues: below that, Gaussian random matrices
fit alphas inside the 2-6 band (median 2.2 at 16 eigenvalues, 5.4 at 128, 7.9 at 256), so such a layer's alpha
means nothing and is left out of the medians and figures ({flagged} of {layers} layer measurements here; records
made before ``n_eigenvalues`` was recorded are judged by the layer's units, which bound it).
"""


def with_eigenvalue_counts(spectra: pd.DataFrame, records: list[dict]) -> pd.DataFrame:
    """One row per (run, epoch, layer) of ``spectra``'s quantities, with ``n_eigenvalues`` where the record lacks it
    taken from the layer's units (an upper bound: min(fan-in, units)) and ``alpha_reliable``."""
    wide = spectra.pivot_table(index=["run_id", "dataset", "model", "strategy", "epoch", "layer"],
                               columns="quantity", values="value").reset_index()
    units = {(r["run_id"], layer["index"]): layer["units"] for r in records for layer in r["layers"]}
    bound = pd.Series([units.get((run, layer), np.nan) for run, layer in zip(wide.run_id, wide.layer)], index=wide.index)
    counts = wide["n_eigenvalues"] if "n_eigenvalues" in wide else pd.Series(np.nan, index=wide.index)
    wide["n_eigenvalues"] = counts.fillna(bound)
    wide["alpha_reliable"] = wide.n_eigenvalues >= MIN_EIGENVALUES
    return wide


def reliable_alphas(spectra: pd.DataFrame, records: list[dict], wide: pd.DataFrame | None = None) -> pd.DataFrame:
    """``spectra`` without the alpha rows of matrices with fewer than :data:`MIN_EIGENVALUES` eigenvalues
    (``wide``: :func:`with_eigenvalue_counts` of it, when the caller has made it already)."""
    wide = with_eigenvalue_counts(spectra, records) if wide is None else wide
    keys = ["run_id", "epoch", "layer"]
    flagged = pd.MultiIndex.from_frame(spectra[keys]).isin(pd.MultiIndex.from_frame(wide.loc[~wide.alpha_reliable, keys]))
    return spectra[~((spectra.quantity == "alpha").to_numpy() & flagged)]


def report(view) -> None:
    """The report's 'Weight spectra' section: a summary table, alpha per layer, alpha against test accuracy."""
    spectra = view.frame("spectra")
    if not len(spectra):
        return
    wide = with_eigenvalue_counts(spectra, view.records)
    used = reliable_alphas(spectra, view.records, wide)
    hidden = wide[wide.layer >= 0]
    text = REPORT_TEXT.format(min_eig=MIN_EIGENVALUES, flagged=int((~hidden.alpha_reliable).sum()), layers=len(hidden))
    with view.section("Weight spectra"):
        view.table("spectra", "## Weight spectra (the `spectra` diagnostic)", text, view.tables.spectra_summary(used))
    for d, m in view.models_of(used[used.quantity == "alpha"]):
        view.figure(f"{d} / {m}: weight-spectrum alpha per layer (layers with at least {MIN_EIGENVALUES} eigenvalues)",
                    lambda d=d, m=m: view.plots.spectra_alpha(used, d, m, view.figure_path("spectra", d, m)))
    if (used.quantity == "alpha").any():
        view.figure("Weight-spectrum alpha against test accuracy",
                    lambda: view.plots.alpha_vs_accuracy(used, view.runs, view.figure_path("alpha_vs_accuracy")))


@register("spectra", report=report, report_order=10)
def spectra(model, context=None) -> list[tuple[int, str, float]]:
    """Weight spectra per layer: power-law alpha (Clauset MLE + KS xmin), spectral norm, stable rank, MP spikes."""
    import keras

    rows = []
    for index, layer in linear_layers(model):
        summary = spectrum_summary(keras.ops.convert_to_numpy(layer.kernel))
        rows += [(index, q, float(v)) for q, v in summary.items()]
    return rows
