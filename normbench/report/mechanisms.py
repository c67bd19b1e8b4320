"""The report's 'Mechanisms' section: what each normalization mechanism did (the records' ``mechanisms`` rows,
:mod:`normbench.mechanisms`), and :func:`never_engaged`, the cells whose mechanism never engaged in any run.

A strategy whose mechanism never engaged is another strategy in disguise: a max-norm radius no unit reached leaves
the unconstrained network (at its own learning rate), an AGC threshold no gradient exceeded leaves plain SGD. The
verdicts print :func:`never_engaged`'s sentence where such a strategy is ranked.
"""

from __future__ import annotations

import pandas as pd

from .. import record as rec_mod
from ..files import write_csv
from ..mechanisms import NETWORK
from .render import markdown_table

KEYS = ["dataset", "model", "strategy"]
SQUASHED_ENGAGED = 0.01  # a DyT/Derf engaged when at least this fraction of its inputs was squashed (|alpha x| >= 1)

# the network rows the section shows, in order: (mechanism, quantity) -> label
SHOWN = {
    ("max_norm", "at_radius"): "max-norm: units at the radius",
    ("max_norm", "norm_max_over_c"): "max-norm: largest unit norm / c",
    ("agc", "clipped"): "AGC: units clipped (probe batch)",
    ("agc", "ratio_median"): "AGC: median gradient norm / limit",
    ("pointwise", "alpha"): "DyT/Derf: alpha (mean over layers)",
    ("pointwise", "squashed"): "DyT/Derf: inputs squashed (|alpha x + s| >= 1)",
    ("batch_norm", "mean_gap"): "BN: |moving - precise mean| / precise std",
    ("batch_norm", "var_log_ratio"): "BN: |log(moving / precise variance)|",
    ("batch_norm", "mean_abs_gap"): "mean-only BN: |moving - precise mean|",
}

TEXT = """\
What each normalization mechanism did, per (dataset / model / strategy): the network's value at initialization
(epoch 0), at the middle epoch and at the last epoch of each run, averaged over seeds. Max-norm: the fraction of
units whose incoming weight vector is at the radius c (norm >= c (1 - 1e-3); at initialization, before the first
update applies the constraint, also beyond it) and the largest unit norm over c. AGC: the fraction of units whose
gradient would be clipped, ||G_i|| > lambda max(||W_i||, 1e-3), measured on one fixed training batch of the run's
batch size in inference mode (not inside the training step), and the median ratio of the two sides. DyT/Derf: the
learned alpha and the fraction of the layers' inputs on the probe batch where alpha x (+ s) leaves the near-linear
range of tanh/erf. Batch norm: how far Keras' moving statistics are from the re-estimated (precise BN) ones that
the evaluations use (the accuracy with the moving statistics is in the history as *_moving). Per-layer values:
`tables/mechanisms_layers.csv`.
"""


def frame(records: list[dict], runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every record's ``mechanisms`` rows: run_id, dataset, model, strategy (the keys of the report's runs frame),
    seed, epoch, layer, mechanism, quantity, value."""
    from .frames import runs_frame

    runs = runs_frame(records) if runs is None else runs
    rows = [(r["run_id"], r["spec"]["seed"], *row) for r in records for row in rec_mod.table_rows(r, "mechanisms")]
    d = pd.DataFrame(rows, columns=["run_id", "seed", *rec_mod.MECHANISM_COLUMNS])
    d["value"] = pd.to_numeric(d["value"], errors="coerce")
    return d.merge(runs[["run_id", *KEYS]], on="run_id")


def _when(d: pd.DataFrame) -> pd.DataFrame:
    """``d`` with a column ``when``: init (epoch 0), mid (each run's middle epoch), end (its last epoch); rows at
    other epochs dropped. A run of one epoch has mid = end = epoch 1 (counted as end only: mid is then blank)."""
    last = d.groupby("run_id").epoch.transform("max")
    mid = last // 2
    parts = [d[d.epoch == 0].assign(when="init"), d[(d.epoch == mid) & (mid > 0) & (mid < last)].assign(when="mid"),
             d[(d.epoch == last) & (last > 0)].assign(when="end")]
    return pd.concat(parts)


def summary(d: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset / model / strategy, shown quantity): the network's value at init, mid and end, averaged
    over the seeds, and the number of runs."""
    net = d[d.layer == NETWORK]
    if net.empty:
        return pd.DataFrame(columns=[*KEYS, "quantity", "init", "mid", "end", "runs"])
    net = _when(net)
    out = []
    order = {k: i for i, k in enumerate(SHOWN)}
    for (dataset, model, strategy, mechanism, quantity), g in net.groupby([*KEYS, "mechanism", "quantity"]):
        if (mechanism, quantity) not in SHOWN:
            continue
        means = g.groupby("when").value.mean()
        out.append({"dataset": dataset, "model": model, "strategy": strategy,
                    "quantity": SHOWN[(mechanism, quantity)], "_order": order[(mechanism, quantity)],
                    **{w: means.get(w) for w in ("init", "mid", "end")}, "runs": g.run_id.nunique()})
    return pd.DataFrame(out).sort_values([*KEYS, "_order"]).drop(columns="_order").reset_index(drop=True)


def _pointwise_name(records: list[dict], run_ids) -> str:
    kinds = {(r.get("strategy_config") or {}).get("norm") for r in records if r["run_id"] in run_ids}
    names = sorted({{"dyt": "DyT", "derf": "Derf"}.get(k, "") for k in kinds} - {""})
    return "/".join(names) or "DyT/Derf"


def never_engaged(records: list[dict]) -> dict[tuple[str, str, str], str]:
    """(dataset, model, strategy) -> a short sentence, for each cell (keys as in the report's tables) whose
    mechanism never engaged in any of its runs that measured it:

    - max-norm: no unit at the radius at any epoch ("max-norm never bound (largest unit norm 0.54 c): ...");
    - AGC: no unit clipped at any probe epoch;
    - DyT/Derf: at most 1% of the inputs squashed (|alpha x + s| >= 1) at every epoch: a per-layer linear scale.

    Batch norm always normalizes: it is never flagged. Records without ``mechanisms`` rows (made before they
    were measured) are not judged; a cell with a mechanism in several runs is flagged only when none engaged.
    """
    d = frame(records)
    net = d[d.layer == NETWORK]
    out: dict[tuple[str, str, str], str] = {}
    for key, g in net.groupby(KEYS):
        def q(mechanism: str, quantity: str) -> pd.Series:
            return g[(g.mechanism == mechanism) & (g.quantity == quantity)].value.dropna()

        flags = []
        bound, largest = q("max_norm", "at_radius"), q("max_norm", "norm_max_over_c")
        if len(bound) and (bound <= 0).all():
            flags.append(f"max-norm never bound (largest unit norm {largest.max():.2f} c): the network trained as "
                         f"without the constraint (`none` at this learning rate)")
        clipped = q("agc", "clipped")
        if len(clipped) and (clipped <= 0).all():
            ratio = q("agc", "ratio_median")
            flags.append("AGC never clipped" + (f" (median gradient norm at most {ratio.max():.2g} of its limit)"
                                                if len(ratio) else "") + ": plain SGD on this network")
        squashed = q("pointwise", "squashed")
        if len(squashed) and (squashed < SQUASHED_ENGAGED).all():
            alpha = g[(g.mechanism == "pointwise") & (g.quantity == "alpha")]
            first, last = alpha[alpha.epoch == alpha.epoch.min()].value, alpha[alpha.epoch == alpha.epoch.max()].value
            flags.append(f"{_pointwise_name(records, set(g.run_id))} never squashed (at most {squashed.max():.1%} of "
                         f"inputs beyond |alpha x| = 1; alpha {first.mean():.2f} -> {last.mean():.2f}): a per-layer "
                         f"linear scale")
        if flags:
            out[tuple(key)] = "; ".join(flags)
    return out


def section(records: list[dict], runs: pd.DataFrame, out, md: list[str], guard) -> None:
    """Append the '## Mechanisms' section to ``md`` (nothing when no record has mechanisms rows), its tables under
    ``out/tables``; ``guard`` is the report's ``section`` context (a failure says why and the report goes on)."""
    if not any(rec_mod.table_rows(r, "mechanisms") for r in records):
        return
    with guard(md, "Mechanisms"):
        d = frame(records, runs)
        layers = d.groupby([*KEYS, "epoch", "layer", "mechanism", "quantity"]).value.mean().reset_index()
        write_csv(layers, out / "tables" / "mechanisms_layers.csv", index=False)
        table = summary(d)
        write_csv(table, out / "tables" / "mechanisms.csv", index=False)
        view = table.set_index(table.dataset + " / " + table.model + " / " + table.strategy).drop(columns=KEYS)
        md += ["## Mechanisms", "", " ".join(TEXT.split()), "",
               markdown_table(view.round(3), corner="dataset / model / strategy"), ""]
        flags = never_engaged(records)
        if flags:
            md += ["Mechanisms that never engaged in any run of their cell:", ""]
            md += [f"- {' / '.join(key)}: {sentence}." for key, sentence in sorted(flags.items())] + [""]
