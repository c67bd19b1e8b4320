"""Result tables, computed from the records' DataFrames only (never from folder names)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import record as rec_mod
from ..builtins import load_builtins
from ..norms import get_strategy
from ..registry import NORMS

from .significance import REFERENCE, ci95, status_note

DEFAULT_THRESHOLDS = {"mnist": 0.97, "cifar10": 0.45}


def model_label(model: str, depth) -> str:
    return f"{model} ({int(depth)} layers)" if depth is not None and not pd.isna(depth) else model


def accuracy_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model, strategy): test accuracy mean, std (ddof=1), n ok runs, 95% CI half-width, failures."""
    out = []
    for (dataset, model, strategy), g in runs.groupby(["dataset", "model", "strategy"], sort=True):
        ok = g[g.status == "ok"].test_accuracy.astype(float)
        std = ok.std(ddof=1) if len(ok) > 1 else np.nan
        out.append(
            {
                "dataset": dataset,
                "model": model,
                "depth": g.depth.dropna().max() if g.depth.notna().any() else None,
                "strategy": strategy,
                "n": len(ok),
                "runs": len(g),
                "mean": ok.mean() if len(ok) else np.nan,
                "std": std,
                "ci95": ci95(std, len(ok)),
                "failed": status_note(g.status),
            }
        )
    return pd.DataFrame(out)


def accuracy_cells(summary: pd.DataFrame, verdicts: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Wide table (rows model, columns strategy) of 'mean ± 95% CI half-width (n=..)' texts, and a same-shape mask
    of the verdicts' best strategy per row (none where the verdict is not 'best')."""
    d = summary[summary.dataset == dataset].copy()
    d["row"] = [model_label(m, dep) for m, dep in zip(d.model, d.depth)]
    d = d.sort_values(["depth", "model"])
    rows = list(dict.fromkeys(d.row))
    cols = sorted(d.strategy.unique())
    text = pd.DataFrame("", index=rows, columns=cols)
    best = pd.DataFrame(False, index=rows, columns=cols)
    winners = {(v.dataset, v.model): v.top_strategy for v in verdicts.itertuples() if v.verdict == "best"}
    for r in d.itertuples():
        if r.n == 0:
            cell = r.failed or "no run"
        else:
            half = f" ± {r.ci95:.4f}" if not math.isnan(r.ci95) else ""
            cell = f"{r.mean:.4f}{half} (n={r.n})" + (f"; {r.failed}" if r.failed else "")
            best.loc[r.row, r.strategy] = winners.get((r.dataset, r.model)) == r.strategy
        text.loc[r.row, r.strategy] = cell
    return text, best


def gap_cells(gaps: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Wide table (rows model, columns strategy) of the gap to batch norm with its 95% interval, e.g.
    '-16.31 [-18.02, -14.60]', '-16.31' (n < 2 on a side: no interval), '+0.64 [+0.25, +1.03] (n=2 vs 3; 1 diverged)'
    (fewer finished runs than batch norm) or '1 diverged'."""
    d = gaps[gaps.dataset == dataset].copy()
    d["row"] = [model_label(m, dep) for m, dep in zip(d.model, d.depth)]
    d = d.sort_values(["depth", "model"])
    text = pd.DataFrame("", index=list(dict.fromkeys(d.row)), columns=sorted(d.strategy.unique()))
    for r in d.itertuples():
        interval = f" [{r.ci95_low:+.2f}, {r.ci95_high:+.2f}]" if not math.isnan(r.ci95_low) else ""
        # a side with fewer scored runs than the other says so, and runs that did not finish are always named
        notes = [f"n={r.n} vs {r.n_ref}"] if r.n and r.n != r.n_ref else []
        notes += [r.failed] if r.failed else []
        fewer = f" ({'; '.join(notes)})" if notes else ""
        text.loc[r.row, r.strategy] = ("reference" if r.strategy == REFERENCE else
                                       f"{r.gap_points:+.2f}{interval}{fewer}" if r.n else (r.failed or "no run"))
    return text


def versus_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Wide table of ``significance.versus`` (rows dataset / model / strategy, columns 'vs comparator'), e.g.
    '-1.20 [-2.10, -0.30], p 0.012: below'."""
    d = table.assign(row=table.dataset + " / " + table.model + " / " + table.strategy)
    text = pd.DataFrame("", index=list(dict.fromkeys(d.row)), columns=[f"vs {c}" for c in dict.fromkeys(d.comparator)])
    for r in d.itertuples():
        interval = f" [{r.ci95_low:+.2f}, {r.ci95_high:+.2f}]" if not math.isnan(r.ci95_low) else ""
        p = f", p {r.p_holm:.2g}" if not math.isnan(r.p_holm) else ""
        text.loc[r.row, f"vs {r.comparator}"] = f"{r.diff_points:+.2f}{interval}{p}: {r.outcome}"
    return text


def time_to_threshold(runs: pd.DataFrame, history: pd.DataFrame, thresholds: dict[str, float]) -> pd.DataFrame:
    """Per run: the first epoch whose validation accuracy reaches the dataset's threshold, and training seconds until then."""
    out = []
    for r in runs.itertuples():
        thr = thresholds.get(r.dataset)
        h = history[history.run_id == r.run_id].sort_values("epoch")
        reached = h[h.val_accuracy >= thr] if thr is not None else h.iloc[0:0]
        epoch = int(reached.epoch.iloc[0]) if len(reached) else None
        seconds = float(h[h.epoch <= epoch].epoch_s.fillna(0).sum()) if epoch is not None else None
        out.append({"run_id": r.run_id, "dataset": r.dataset, "model": r.model, "depth": r.depth,
                    "strategy": r.strategy, "seed": r.seed, "status": r.status, "threshold": thr,
                    "epochs_to_threshold": epoch, "seconds_to_threshold": seconds})
    return pd.DataFrame(out)


def threshold_cells(ttt: pd.DataFrame, dataset: str) -> pd.DataFrame:
    d = ttt[ttt.dataset == dataset].copy()
    d["row"] = [model_label(m, dep) for m, dep in zip(d.model, d.depth)]
    d = d.sort_values(["depth", "model"])
    text = pd.DataFrame("", index=list(dict.fromkeys(d.row)), columns=sorted(d.strategy.unique()))
    for (row, strategy), g in d.groupby(["row", "strategy"], sort=False):
        hit = g.dropna(subset=["epochs_to_threshold"])
        if len(hit):
            cell = f"{hit.epochs_to_threshold.mean():.1f} ep ({hit.seconds_to_threshold.mean():.0f} s)"
            if len(hit) < len(g):
                cell += f", {len(g) - len(hit)}/{len(g)} never"
        else:
            cell = "not reached" if (g.status == "ok").any() else status_note(g.status)
        text.loc[row, strategy] = cell
    return text


def history_frame(long: pd.DataFrame) -> pd.DataFrame:
    """Per (run, epoch) metrics, wide."""
    m = long[long.tap == "metric"]
    return m.pivot_table(index=["run_id", "epoch"], columns="quantity", values="value", aggfunc="first").reset_index()


def layer_stats(long: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model, strategy, layer): activation mean and std at initialization and at the run's last epoch, averaged over seeds."""
    act = long[(long.tap == "act") & long.quantity.isin(["mean", "std", "sat_frac", "dead_units"])]
    last = act.groupby("run_id").epoch.transform("max")
    parts = []
    for when, sel in (("init", act.epoch == 0), ("end", act.epoch == last)):
        w = act[sel].pivot_table(index=["run_id", "layer"], columns="quantity", values="value", aggfunc="first")
        w.columns = [f"{when}_{c}" for c in w.columns]
        parts.append(w)
    wide = pd.concat(parts, axis=1).reset_index().merge(runs[["run_id", "dataset", "model", "strategy", "status"]], on="run_id")
    keys = ["dataset", "model", "strategy", "layer"]
    cols = [c for c in wide.columns if c.startswith(("init_", "end_"))]
    return wide.groupby(keys)[cols].mean().reset_index()


def drift_summary(layers: pd.DataFrame) -> pd.DataFrame:
    """One line per (dataset, model, strategy): how far the signal drifts through depth, at init and at the end."""
    out = []
    for (dataset, model, strategy), g in layers.groupby(["dataset", "model", "strategy"]):
        g = g.sort_values("layer")
        row = {"dataset": dataset, "model": model, "strategy": strategy, "layers": len(g)}
        for when in ("init", "end"):
            row[f"{when}_max_abs_mean"] = g[f"{when}_mean"].abs().max()
            row[f"{when}_std_min"] = g[f"{when}_std"].min()
            row[f"{when}_std_max"] = g[f"{when}_std"].max()
            for q in ("sat_frac", "dead_units"):
                col = f"{when}_{q}"
                row[f"{when}_last_{q}"] = g[col].iloc[-1] if col in g else np.nan
        out.append(row)
    df = pd.DataFrame(out)
    return df.sort_values(["dataset", "layers", "model", "strategy"], kind="stable").reset_index(drop=True) if len(df) else df


def batch_dependent(strategies) -> list[str]:
    """The registered strategies among ``strategies`` whose outputs depend on the rest of the batch."""
    load_builtins()
    return [s for s in strategies if s in NORMS and get_strategy(s).needs_batch_statistics]


def error_by_batch_size(runs: pd.DataFrame) -> pd.DataFrame:
    """Test error (%) by (dataset / model / strategy) and batch size, mean over the finished seeds."""
    d = runs[runs.status == "ok"].copy()
    d["row"] = d.dataset + " / " + d.builder + " / " + d.strategy_name
    d["test_error_pct"] = 100.0 * (1.0 - d.test_accuracy)
    table = d.pivot_table(index="row", columns="batch_size", values="test_error_pct", aggfunc="mean")
    table.columns = [f"batch {int(c)}" for c in table.columns]
    return table


def spectra_summary(spectra: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset / model / strategy), at initialization and at the last epoch: the median power-law alpha of
    the hidden layers whose alpha rows ``spectra`` holds (the report drops unreliable ones first) and how many
    layer measurements it rests on, their largest spectral norm, mean stable rank and total Marchenko-Pastur
    spikes."""
    d = spectra[spectra.layer >= 0]
    out = []
    for (dataset, model, strategy), g in d.groupby(["dataset", "model", "strategy"]):
        row = {"row": f"{dataset} / {model} / {strategy}"}
        for when, epoch in (("init", g.epoch.min()), ("final", g.epoch.max())):
            e = g[g.epoch == epoch].pivot_table(index=["run_id", "layer"], columns="quantity", values="value")
            alpha = e["alpha"].dropna() if "alpha" in e else pd.Series(dtype=float)  # reliable layers' only
            row.update({f"{when} alpha (median)": alpha.median(), f"{when} alpha layers": len(alpha),
                        f"{when} spectral norm (max)": e.spectral_norm.max(),
                        f"{when} stable rank (mean)": e.stable_rank.mean(), f"{when} MP spikes": int(e.mp_spikes.sum())})
        out.append(row)
    return pd.DataFrame(out).set_index("row")


def diagnostics_frame(records: list[dict], runs: pd.DataFrame, name: str) -> pd.DataFrame:
    """One diagnostic's rows of every record: run_id, dataset, model, strategy, epoch, layer, quantity, value."""
    rows = [(r["run_id"], e, layer, q, v) for r in records for e, layer, n, q, v in rec_mod.table_rows(r, "diagnostics")
            if n == name]
    d = pd.DataFrame(rows, columns=["run_id", "epoch", "layer", "quantity", "value"])
    return d.merge(runs[["run_id", "dataset", "model", "strategy"]], on="run_id")


def flow_summary(gradients: pd.DataFrame, sharpness: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset / model / strategy), at initialization and at the last epoch: the gradient-to-weight ratio
    and the input-gradient norm (the backpropagated signal) of the first and the last hidden layer (their
    quotient shows vanishing or exploding gradients through depth) and the loss-Hessian top eigenvalue and
    trace, medians over seeds."""
    keys = ["dataset", "model", "strategy"]
    groups = {}
    for frame in (gradients, sharpness):
        for key, g in frame.groupby(keys):
            groups.setdefault(key, []).append(g)
    out = []
    for (dataset, model, strategy), parts in sorted(groups.items()):
        g = pd.concat(parts)
        row = {"row": f"{dataset} / {model} / {strategy}"}
        for when, pick in (("init", "min"), ("final", "max")):
            e = g[g.epoch == g.groupby("run_id").epoch.transform(pick)]
            for q, label in (("grad_ratio", "grad/weight"), ("input_grad_rms", "input grad")):
                per_layer = e[(e.quantity == q) & (e.layer.notna()) & (e.layer >= 0)]
                if len(per_layer):
                    first, last = per_layer.layer.min(), per_layer.layer.max()
                    row[f"{when} {label}, first layer"] = per_layer[per_layer.layer == first].value.median()
                    row[f"{when} {label}, last layer"] = per_layer[per_layer.layer == last].value.median()
            for q in ("hessian_top", "hessian_trace"):
                v = e[e.quantity == q].value
                if len(v):
                    row[f"{when} {q.replace('_', ' ')}"] = v.median()
            trace = e[e.quantity == "hessian_trace"].set_index("run_id").value
            se = e[e.quantity == "hessian_trace_se"].set_index("run_id").value
            if len(trace):  # blank for records made before the error was measured
                row[f"{when} hessian trace rel. SE"] = (se / trace.abs()).median() if len(se) else np.nan
        out.append(row)
    return pd.DataFrame(out).set_index("row")


def landscape_frame(records: list[dict], runs: pd.DataFrame) -> pd.DataFrame:
    """The loss slices of every record: run_id, epoch, slice ("1d"/"2d"), x, y, loss, accuracy, dataset, model, strategy."""
    rows = [(r["run_id"], *row) for r in records for row in rec_mod.table_rows(r, "landscape")]
    d = pd.DataFrame(rows, columns=["run_id", "epoch", "slice", "x", "y", "loss", "accuracy"])
    return d.merge(runs[["run_id", "dataset", "model", "strategy", "depth"]], on="run_id")


def landscape_summary(landscape: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset / model / strategy): the loss at the trained weights and its rise along the 1-D slice
    (at a quarter of the span, mean of both sides; and at the span's ends), and the 2-D slice's range."""
    out = []
    for (dataset, model, strategy), g in landscape.groupby(["dataset", "model", "strategy"]):
        one = g[g.slice == "1d"]
        two = g[g.slice == "2d"]
        centre = one.loc[one.x.abs().idxmin(), "loss"]
        s = summary[summary.run_id.isin(g.run_id.unique())]
        out.append({"row": f"{dataset} / {model} / {strategy}", "loss at the trained weights": centre,
                    "rise at |a| = 0.25": s[s.quantity == "loss_rise_quarter"].value.median(),
                    "rise at |a| = 1": one[one.x.abs() == one.x.abs().max()].loss.mean() - centre,
                    "2-D slice max / centre": two.loss.max() / centre if centre > 0 else float("nan")})
    return pd.DataFrame(out).set_index("row")


def meanfield_frame(records: list[dict], runs: pd.DataFrame) -> pd.DataFrame:
    """Per run and hidden layer at initialization: the mean-field prediction (``pred_*``) beside the probe's
    measurement (``meas_*``): the pre-activation second moment, the activation mean and variance."""
    pred = diagnostics_frame(records, runs, "meanfield")
    if not len(pred):
        return pd.DataFrame()
    pred = pred[pred.epoch == 0].pivot_table(index=["run_id", "layer"], columns="quantity", values="value")
    pred.columns = [f"pred_{c}" for c in pred.columns]
    rows = [(r["run_id"], layer, tap, q, v) for r in records if r["run_id"] in set(pred.index.get_level_values(0))
            for e, layer, tap, q, v in r["stats"]["rows"] if e == 0 and tap in ("pre", "act") and q in ("mean", "std")]
    m = pd.DataFrame(rows, columns=["run_id", "layer", "tap", "quantity", "value"])
    m = m.pivot_table(index=["run_id", "layer"], columns=["tap", "quantity"], values="value")
    meas = pd.DataFrame({"meas_pre_m2": m[("pre", "std")] ** 2 + m[("pre", "mean")] ** 2,
                         "meas_act_mean": m[("act", "mean")], "meas_act_var": m[("act", "std")] ** 2})
    d = pred.join(meas, how="inner").reset_index()
    return d.merge(runs[["run_id", "dataset", "model", "strategy"]], on="run_id")


def meanfield_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset / model / strategy): how far the measured moments at initialization are from the
    mean-field prediction, over the hidden layers."""
    out = []
    for (dataset, model, strategy), g in frame.groupby(["dataset", "model", "strategy"]):
        ratio = g.meas_pre_m2 / g.pred_pre_m2
        last = g[g.layer == g.layer.max()]
        out.append({"row": f"{dataset} / {model} / {strategy}", "layers": int(g.layer.nunique()),
                    "pre m2 measured / predicted (median)": ratio.median(),
                    "pre m2 ratio range": f"{ratio.min():.2f}-{ratio.max():.2f}",
                    "last layer pre m2 measured": last.meas_pre_m2.median(),
                    "last layer pre m2 predicted": last.pred_pre_m2.median(),
                    "act mean max abs error": (g.meas_act_mean - g.pred_act_mean).abs().max()})
    return pd.DataFrame(out).set_index("row")


def diagnostic_cost(records: list[dict], runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset / model) and diagnostic: its seconds per run against the run's training seconds (the sum
    of its epochs' optimizer time), medians over the runs that measured it."""
    rows = []
    for r in records:
        cost = r["timings"].get("diagnostics_s") or {}  # both absent in a run that timed no diagnostic or no epoch
        train = sum(r["timings"].get("epoch_s") or [])
        for name, seconds in cost.items():
            rows.append((r["run_id"], name, seconds, train))
    d = pd.DataFrame(rows, columns=["run_id", "diagnostic", "seconds", "train_s"]).merge(
        runs[["run_id", "dataset", "model"]], on="run_id")
    d["share"] = d.seconds / d.train_s
    table = d.groupby(["dataset", "model", "diagnostic"]).agg(runs=("run_id", "nunique"), training_s=("train_s", "median"),
                                                             diagnostic_s=("seconds", "median"), share=("share", "median"))
    table["% of training"] = 100.0 * table.pop("share")
    return table.reset_index()
