"""Budget and convergence (issue 34, item 4): which cells converged, every strategy's learning curves, the time to
a validation target, and how stable the ranking is across budgets.

The criteria come from the suite's ``[convergence]`` table (:func:`normbench.suites.parse_convergence`), which every
record of the suite carries in its ``suite`` section and :func:`settings` reads back, with defaults when none is
stated. Everything here reads validation accuracy, never test accuracy, so nothing chosen here (the target, the
orders) sees the test split; the one exception is the reference target, a test-accuracy floor the suite states and
the report only checks. The report passes the finals only (a tuning study's trials are separated before).

- **Converged**: a cell (dataset, model, strategy) has converged when its finished seeds' validation accuracy rose by
  less than ``plateau_points`` accuracy points over the last epoch (each seed's last epoch against its previous one,
  averaged over seeds; a fall counts as converged). Default :data:`PLATEAU_POINTS`.
- **Time to target**: per run, the first epoch whose validation accuracy reaches the target, and the training seconds
  until then; per cell, the mean over the seeds that reached it and how many did. Without a stated target, the target
  of a dataset is the median over its cells of the final mean validation accuracy, rounded down to 0.01 (so at least
  half of the cells end at or above it, in the mean over their seeds).
- **Rank stability**: per (dataset, model), the strategies ordered by mean validation accuracy at 25%, 50% and 100% of
  the epochs (the recorded epoch >= 1 nearest to that fraction), and Kendall's tau-b between each earlier order and the
  final one (``scipy.stats.kendalltau``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .. import record as rec_mod
from ..errors import NormbenchError
from ..files import write_csv
from . import plots
from .render import markdown_table, slug
from .tables import time_to_threshold

PLATEAU_POINTS = 0.2  # the default rule: converged when the last epoch added less than 0.2 points of val accuracy
METRIC = "val_accuracy"
FRACTIONS = (0.25, 0.5, 1.0)  # the budgets of the rank-stability table, as fractions of the epochs
KEYS = ["dataset", "model", "strategy"]


def settings(records: list[dict]) -> dict:
    """The ``[convergence]`` the records' suite states, with the defaults filled in (``stated``: whether a suite
    stated one); records that state different ones are refused (one report, one criterion)."""
    stated = {json.dumps(c, sort_keys=True) for c in (rec_mod.suite(r).get("convergence") for r in records) if c}
    if len(stated) > 1:
        raise NormbenchError(f"the records state different [convergence] settings {sorted(stated)}: report each "
                             f"suite's records from its own folder")
    given = json.loads(stated.pop()) if stated else {}
    return {"metric": given.get("metric", METRIC), "target": given.get("target"),
            "plateau_points": float(given.get("plateau_points", PLATEAU_POINTS)),
            "reference_target": given.get("reference_target"), "stated": bool(given)}


def curves(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Per finished run and epoch: dataset, model, strategy (the report's keys), seed, epoch, val_accuracy."""
    ok = runs[runs.status == "ok"][["run_id", *KEYS, "seed"]]
    if METRIC not in history:
        return pd.DataFrame(columns=["run_id", *KEYS, "seed", "epoch", METRIC])
    d = history[["run_id", "epoch", METRIC]].merge(ok, on="run_id")
    d = d[np.isfinite(d[METRIC].astype(float))]
    return d.astype({"epoch": int, METRIC: float}).sort_values([*KEYS, "seed", "epoch"]).reset_index(drop=True)


def cell_curves(curve: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model, strategy, epoch): the mean, min and max over seeds of validation accuracy, and n."""
    g = curve.groupby([*KEYS, "epoch"])[METRIC]
    return g.agg(mean="mean", low="min", high="max", n="count").reset_index()


def converged(runs: pd.DataFrame, curve: pd.DataFrame, plateau_points: float) -> pd.DataFrame:
    """Per (dataset, model, strategy): n finished seeds, the last epoch, final mean validation accuracy, the last
    epoch's gain in points (each seed's last epoch minus its previous one, mean over seeds) and whether it is below
    ``plateau_points`` (None where no seed finished two measured epochs)."""
    rows = []
    for (dataset, model, strategy), cell in runs.groupby(KEYS, sort=True):
        c = curve[(curve.dataset == dataset) & (curve.model == model) & (curve.strategy == strategy)]
        gains, finals, lasts = [], [], []
        for _, seed in c.groupby("run_id"):
            seed = seed.sort_values("epoch")
            finals.append(seed[METRIC].iloc[-1])
            lasts.append(int(seed.epoch.iloc[-1]))
            if len(seed) >= 2:
                gains.append(100.0 * (seed[METRIC].iloc[-1] - seed[METRIC].iloc[-2]))
        gain = float(np.mean(gains)) if gains else math.nan
        unfinished = int((cell.status != "ok").sum())
        rows.append({"dataset": dataset, "model": model, "strategy": strategy, "n": len(finals),
                     "not_finished": unfinished, "epochs": max(lasts) if lasts else None,
                     "final_val_accuracy": float(np.mean(finals)) if finals else math.nan,
                     "last_epoch_gain_points": gain,
                     "converged": None if math.isnan(gain) else bool(gain < plateau_points)})
    return pd.DataFrame(rows, columns=["dataset", "model", "strategy", "n", "not_finished", "epochs",
                                       "final_val_accuracy", "last_epoch_gain_points", "converged"])


def choose_target(final_means) -> float:
    """A target most cells reach: the median of the cells' final mean validation accuracies, rounded down to 0.01."""
    values = [v for v in final_means if not math.isnan(v)]
    if not values:
        return math.nan
    return math.floor(float(np.median(values)) * 100 + 1e-9) / 100


def targets(stated, table: pd.DataFrame) -> dict[str, tuple[float, str]]:
    """Per dataset: the validation target and how it was set (stated by the suite, or chosen by :func:`choose_target`)."""
    out = {}
    for dataset in sorted(table.dataset.unique()):
        value = stated.get(dataset) if isinstance(stated, dict) else stated
        if value is not None:
            out[dataset] = (float(value), "stated by the suite's [convergence] target")
        else:
            out[dataset] = (choose_target(table[table.dataset == dataset].final_val_accuracy),
                            "chosen, as the suite states no target: the median over this dataset's cells of the final "
                            "mean validation accuracy, rounded down to 0.01, so that at least half of the cells end "
                            "at or above it")
    return out


def time_to_target(runs: pd.DataFrame, history: pd.DataFrame, goals: dict[str, tuple[float, str]]) -> pd.DataFrame:
    """Per (dataset, model, strategy): the target, runs, how many reached it, and the mean epochs and training
    seconds until the first epoch at or above it over the runs that reached it (every run counts in ``runs``:
    a run that diverged or failed before the target did not reach it)."""
    per_run = time_to_threshold(runs, history, {d: t for d, (t, _) in goals.items()})
    rows = []
    for (dataset, model, strategy), g in per_run.groupby(KEYS, sort=True):
        hit = g.dropna(subset=["epochs_to_threshold"])
        rows.append({"dataset": dataset, "model": model, "strategy": strategy, "target": goals[dataset][0],
                     "runs": len(g), "reached": len(hit),
                     "epochs_to_target": hit.epochs_to_threshold.mean() if len(hit) else math.nan,
                     "seconds_to_target": hit.seconds_to_threshold.mean() if len(hit) else math.nan})
    return pd.DataFrame(rows)


def _budget_epoch(epochs: list[int], fraction: float, last: int) -> int:
    """The recorded epoch >= 1 nearest to ``fraction`` of ``last`` (the later one on a tie)."""
    candidates = [e for e in epochs if 1 <= e <= last]
    return min(candidates, key=lambda e: (abs(e - fraction * last), -e))


def rank_stability(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model) with two or more strategies: the epochs at 25/50/100% of the budget, the order of the
    strategies by mean validation accuracy at each (best first), and Kendall's tau-b between each earlier order and
    the final one. The budget is the last epoch every strategy of the model recorded."""
    rows = []
    for (dataset, model), g in cells.groupby(["dataset", "model"], sort=True):
        if g.strategy.nunique() < 2:
            continue
        last = int(g.groupby("strategy").epoch.max().min())
        common = sorted(set.intersection(*(set(s.epoch) for _, s in g.groupby("strategy"))))
        if last < 1 or not any(e >= 1 for e in common):
            continue
        row = {"dataset": dataset, "model": model, "strategies": int(g.strategy.nunique())}
        means = {}
        for f in FRACTIONS:
            epoch = _budget_epoch(common, f, last)
            m = g[g.epoch == epoch].set_index("strategy")["mean"].sort_index()
            means[f] = m
            order = m.sort_values(ascending=False, kind="stable")
            row[f"epoch_{int(f * 100)}"] = epoch
            row[f"order_{int(f * 100)}"] = " > ".join(order.index)
        for f in FRACTIONS[:-1]:
            a, b = means[f], means[FRACTIONS[-1]].reindex(means[f].index)
            tau = stats.kendalltau(a.to_numpy(), b.to_numpy()).statistic
            row[f"tau_{int(f * 100)}_vs_100"] = float(tau) if tau is not None else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def reference_check(runs: pd.DataFrame, target: dict) -> str:
    """One sentence: whether the reference strategy's mean final test accuracy on the named model (and dataset)
    reaches the stated floor, per matching (dataset, model)."""
    name = f"`{target['strategy']}` on `{target['model']}`" + (f" ({target['dataset']})" if "dataset" in target else "")
    floor = target["test_accuracy"]
    sel = runs[(runs.strategy_name == target["strategy"]) & (runs.builder == target["model"])]
    if "dataset" in target:
        sel = sel[sel.dataset == target["dataset"]]
    if sel.empty:
        return f"Reference target: {name} at test accuracy >= {floor:g}: **not checked**, no run of it in these records."
    parts = []
    for (dataset, model, strategy), g in sel.groupby(KEYS, sort=True):
        ok = g[g.status == "ok"].test_accuracy.astype(float)
        if not len(ok):
            parts.append(f"{dataset} / {model} / {strategy}: **not met**, no run finished ({len(g)} runs)")
            continue
        met = ok.mean() >= floor
        parts.append(f"{dataset} / {model} / {strategy}: **{'met' if met else 'not met'}**, mean test accuracy "
                     f"{ok.mean():.4f} over {len(ok)} finished seed{'s' if len(ok) != 1 else ''}"
                     + (f" ({len(g) - len(ok)} not finished)" if len(ok) < len(g) else ""))
    return f"Reference target (the suite's): {name} at mean test accuracy >= {floor:g}. " + "; ".join(parts) + "."


def learning_curves(cells: pd.DataFrame, dataset: str, model: str, path: Path, target: float | None = None) -> Path:
    """Validation accuracy against epoch for one (dataset, model): per strategy the mean over finished seeds (line)
    and their min-max (band), n in the legend, which sits outside the axes; the target as a dashed line. With two or
    more epochs, a second panel shows the second half of training on its own y-scale, where the strategies part."""
    plt, _ = plots._mpl()
    from matplotlib.ticker import MaxNLocator

    d = cells[(cells.dataset == dataset) & (cells.model == model)]
    palette = plots.strategy_palette(d.strategy.unique())
    order = [s for s in palette if s in set(d.strategy)]
    last = int(d.epoch.max())
    start = max(1, last // 2)
    zoom = last >= 2
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(12 if zoom else 7.5, 4.6), squeeze=False,
                             layout="constrained")
    for ax, first in zip(axes[0], (d.epoch.min(), start)):
        for strategy in order:
            c = d[(d.strategy == strategy) & (d.epoch >= first)].sort_values("epoch")
            colour = palette[strategy]
            ax.fill_between(c.epoch, c.low, c.high, color=colour, alpha=0.18, linewidth=0)
            ax.plot(c.epoch, c["mean"], color=colour, marker="o", markersize=3.5, linewidth=1.6,
                    label=f"{strategy} (n={int(c.n.max())})" if len(c) else strategy)
        if target is not None and not math.isnan(target):
            ax.axhline(target, color="0.35", linestyle="--", linewidth=1, label=f"target {target:g}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (0 = initialization)" if first == 0 else "epoch")
        ax.set_ylabel("validation accuracy")
    if zoom:
        axes[0][0].set_title("all epochs", fontsize=10)
        # the zoom's y-scale spans the strategies that learned (final mean at least halfway from the worst to the
        # best), so one cell stuck at chance does not flatten the rest; the cells left below it are named
        final = d[d.epoch == last].set_index("strategy")["mean"]
        learned = final[final >= final.min() + (final.max() - final.min()) / 2] if len(final) else final
        below = sorted(set(final.index) - set(learned.index))
        shown = d[(d.epoch >= start) & d.strategy.isin(learned.index)]
        if len(shown) and below:
            low, high = float(shown.low.min()), float(shown.high.max())
            pad = max(0.002, 0.05 * (high - low))
            axes[0][1].set_ylim(low - pad, high + pad)
        axes[0][1].set_title(f"epochs {start}-{last}, own y-scale" + (f" (below it: {', '.join(below)})"
                                                                     if below else ""), fontsize=10)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="strategy (n seeds)",
                       title_fontsize=8)  # outside the data
    fig.suptitle(f"{dataset} / {model}: validation accuracy per epoch\nline: mean over finished seeds; band: "
                 f"min-max over seeds", fontsize=11)
    return plots._save(fig, path)


def _points(value: float) -> str:
    return "" if math.isnan(value) else f"{value:+.2f}"


def section(records: list[dict], runs: pd.DataFrame, history: pd.DataFrame, out: Path, md: list[str], guard) -> int:
    """Append '## Budget and convergence' to ``md``, its tables under ``out/tables`` and its learning-curve figures
    under ``out/figures``; return the number of figures. ``records`` and ``runs`` are the finals only (a tuning
    study's trials never reach here). ``guard`` is the report's ``section`` context."""
    if any(rec_mod.suite(r).get("phase") == "trial" for r in records):
        raise NormbenchError("convergence.section takes a tuning study's finals only: its trials are reported apart")
    figures, cells, goals = 0, None, {}
    md += ["## Budget and convergence", ""]
    with guard(md, "Budget and convergence"):
        conf = settings(records)
        plateau = conf["plateau_points"]
        curve = curves(runs, history)
        cells = cell_curves(curve)
        table = converged(runs, curve, plateau)
        write_csv(table, out / "tables" / "convergence.csv", index=False)
        rule = ("the suite's `[convergence]` table" if conf["stated"] else
                f"the default rule: the suite states no `[convergence]` table, plateau_points = {PLATEAU_POINTS:g}")
        md += [f"Validation accuracy only (never test), finished runs only. **Converged**: the seeds' validation "
               f"accuracy rose by less than {plateau:g} points over the last epoch (each seed's last epoch against "
               f"its previous one, mean over seeds; a fall counts as converged) ({rule}). A cell that has not "
               f"converged would likely gain from more epochs: its comparisons are at an unfinished budget. Every "
               f"cell: `tables/convergence.csv`.", ""]
        view = pd.DataFrame({
            "n": table.n.astype(str) + [f" ({k} not finished)" if k else "" for k in table.not_finished],
            "epochs": table.epochs.map(lambda e: "" if e is None or pd.isna(e) else str(int(e))),
            "final val accuracy": table.final_val_accuracy.map(lambda v: "" if math.isnan(v) else f"{v:.4f}"),
            "last-epoch gain (points)": table.last_epoch_gain_points.map(_points),
            "converged": table.converged.map(lambda c: "no finished run" if c is None else "yes" if c else "no")})
        view.index = table.dataset + " / " + table.model + " / " + table.strategy
        md += [markdown_table(view, corner="dataset / model / strategy"), ""]
        done = table.converged.dropna()
        md += [f"{int(done.sum())} of {len(done)} cells with finished runs converged by this rule.", ""]
        if conf["reference_target"]:
            md += [reference_check(runs, conf["reference_target"]), ""]

        goals = targets(conf["target"], table)
        ttt = time_to_target(runs, history, goals)
        write_csv(ttt, out / "tables" / "time_to_target.csv", index=False)
        md += ["### Time to the validation target", "",
               "Epochs (and training seconds, the sum of the epochs' optimizer time, epoch 1 including compilation) "
               "until a run's validation accuracy first reaches the target: mean over the seeds that reached it, and "
               "how many of the cell's runs did (a run that diverged or failed first did not). Every cell: "
               "`tables/time_to_target.csv`.", ""]
        for dataset, (value, how) in goals.items():
            d = ttt[ttt.dataset == dataset]
            md += [f"{dataset}: target validation accuracy {value:g} ({how}).", ""]
            view = pd.DataFrame({
                "reached": d.reached.astype(str) + "/" + d.runs.astype(str),
                "epochs to target": d.epochs_to_target.map(lambda v: "not reached" if math.isnan(v) else f"{v:.1f}"),
                "seconds to target": d.seconds_to_target.map(
                    lambda v: "" if math.isnan(v) else f"{v:.1f}" if v < 10 else f"{v:.0f}")})
            view.index = d.model + " / " + d.strategy
            md += [markdown_table(view, corner="model / strategy"), ""]

        ranks = rank_stability(cells)
        md += ["### Rank stability across budgets", "",
               "Per (dataset, model): the strategies ordered by mean validation accuracy over finished seeds (best "
               "first) at 25%, 50% and 100% of the epochs (the recorded epoch >= 1 nearest to that fraction of the "
               "last epoch every strategy recorded), and Kendall's tau-b between each earlier order and the final one "
               "(1: the same order, -1: reversed; with few strategies tau moves in large steps). A low tau says a "
               "shorter budget would have ranked the strategies differently. `tables/rank_stability.csv`.", ""]
        if ranks.empty:
            md += ["_No (dataset, model) with two strategies and an epoch >= 1 of finished runs._", ""]
        else:
            write_csv(ranks, out / "tables" / "rank_stability.csv", index=False)
            view = pd.DataFrame({"epochs (25 / 50 / 100%)": [f"{a} / {b} / {c}" for a, b, c in
                                                             zip(ranks.epoch_25, ranks.epoch_50, ranks.epoch_100)],
                                 "order at 25%": ranks.order_25, "order at 50%": ranks.order_50,
                                 "order at 100%": ranks.order_100,
                                 "tau 25% vs 100%": ranks.tau_25_vs_100.map(lambda t: "n/a" if math.isnan(t) else f"{t:+.2f}"),
                                 "tau 50% vs 100%": ranks.tau_50_vs_100.map(lambda t: "n/a" if math.isnan(t) else f"{t:+.2f}")})
            view.index = ranks.dataset + " / " + ranks.model
            md += [markdown_table(view, corner="dataset / model"), ""]
            if (ranks.epoch_100 <= 1).all():
                md += ["_Every budget here is one epoch: the orders coincide by construction; run more epochs to see "
                       "whether the ranking holds._", ""]

        md += ["### Learning curves", "",
               "Validation accuracy per epoch (0 = at initialization), one line per strategy: the mean over finished "
               "seeds, the band their min-max (n seeds in the legend); the dashed line is the dataset's target. With "
               "two or more epochs the right panel repeats the second half of training on its own y-scale.", ""]
    for (dataset, model), _ in cells.groupby(["dataset", "model"], sort=True) if cells is not None else []:
        title = f"{dataset} / {model}: learning curves"
        with guard(md, f"Figure '{title}'"):
            path = learning_curves(cells, dataset, model,
                                   out / "figures" / f"curves_{slug(dataset)}_{slug(model)}.png",
                                   goals[dataset][0] if dataset in goals else None)
            figures += 1
            md += [f"#### {title}", "", f"![{title}](figures/{path.name})", ""]
    return figures
