"""The report of a tuning study's search (:mod:`normbench.search`): every trial, each setting's choice with what it
rests on (trial seeds, the margin over the runner-up against the seeds' own spread), what each strategy's search
cost, a warning where the choice lies at the edge of the grid, the width of each strategy's good range, and a
learning-rate sensitivity figure per (dataset, model). The choices are made again from the trials' records by the
same function the run used (:func:`normbench.search.advance`), so the report cannot disagree with what was
trained."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .. import record as rec_mod
from ..errors import NormbenchError
from ..files import write_csv
from ..search import KNOB_PREFIX, SEARCHABLE, Search, choose, trial_score
from ..spec import RunSpec
from .frames import param_key
from . import plots
from .render import markdown_table, slug

GOOD_RANGE_POINTS = 1.0  # a rate is in the good range within this many points of the best (or the seeds' spread)


def phase(record: dict) -> str | None:
    return rec_mod.suite(record).get("phase")


def search_of(records: list[dict]) -> Search:
    """The one search the records were made under; records of several searches are refused, naming them."""
    tables = {json.dumps(rec_mod.suite(r)["search"], sort_keys=True): rec_mod.suite(r)["search"] for r in records
              if rec_mod.suite(r).get("search")}
    if len(tables) > 1:
        raise NormbenchError(f"these records were made under {len(tables)} different searches "
                             f"({'; '.join(map(str, tables.values()))}): a report rebuilds one search's choices; "
                             f"report each study from its own folder")
    (table,) = tables.values()
    return Search.from_table(table, "the trials' records")


def _setting_key(search: Search, spec: RunSpec) -> tuple[str, str, str]:
    base = search.base(spec)
    return base.dataset, param_key(base.model, base.model_params), param_key(base.strategy, base.strategy_params)


def trial_frame(trials: list[dict]) -> pd.DataFrame:
    """One row per trial: dataset, model, strategy (without its searched knobs), the searched values (knobs as
    ``strategy_params.NAME``), rung, epochs, seed, status, score."""
    search = search_of(trials)
    rows = []
    for r in trials:
        spec = RunSpec.from_dict(r["spec"])
        dataset, model, strategy = _setting_key(search, spec)
        searched = {name: getattr(spec, name) for name, _ in search.values}
        knobs = {KNOB_PREFIX + k.name: spec.strategy_params.get(k.name) for k in search.knobs_for(search.base(spec))}
        rows.append({"dataset": dataset, "model": model, "strategy": strategy, **searched, **knobs,
                     "rung": rec_mod.suite(r).get("rung", 1), "epochs": spec.epochs, "seed": spec.seed,
                     "status": r["status"], "val_accuracy": trial_score(r), "run_id": r["run_id"]})
    return pd.DataFrame(rows)


def choices_frame(trials: list[dict], finals: list[dict] = ()) -> pd.DataFrame:
    """Per setting: the chosen values and score, the runner-up and the trial seeds' spread, the cost, the edge
    warning, and the good range of learning rates (among those trained at full length)."""
    search = search_of(trials)
    # the settings are the finals' (a rung-0 trial is shorter than its setting); without finals, full-length trials
    specs = [RunSpec.from_dict(r["spec"]) for r in finals] or [
        RunSpec.from_dict(r["spec"]) for r in trials if rec_mod.suite(r).get("rung", 1) != 0]
    choices, _ = choose(search, specs, {r["run_id"]: trial_score(r) for r in trials})
    rows = []
    for c in choices:
        lr_at = c.names.index("learning_rate")
        best_per_lr: dict[float, float] = {}
        for combo, score in c.table:
            best_per_lr[combo[lr_at]] = max(score, best_per_lr.get(combo[lr_at], -math.inf))
        spread = c.spread[[v for v, _ in c.table].index(tuple(c.values.values()))] if c.spread else math.nan
        tolerance = max(GOOD_RANGE_POINTS / 100, 0.0 if math.isnan(spread) else spread)
        good = sorted(lr for lr, score in best_per_lr.items() if score >= c.score - tolerance)
        grid = sorted(best_per_lr)
        margin = c.score - c.runner_up if c.runner_up is not None else math.nan
        dataset, model, strategy = _setting_key(search, c.base)
        rows.append({"dataset": dataset, "model": model, "strategy": strategy,
                     **{f"chosen_{k}": v for k, v in c.values.items()}, "val_accuracy": c.score,
                     "runner_up": c.runner_up, "margin_points": 100 * margin, "seed_std_points": 100 * spread,
                     "within_spread": bool(margin < spread) if not math.isnan(spread) and not math.isnan(margin)
                     else False, "trial_seeds": len(search.trial_seeds), "trials": c.trials, "trial_epochs": c.epochs,
                     "extended": c.extended, "at_edge": ", ".join(c.edge), "good_lrs": len(good),
                     "grid_lrs": len(grid), "good_lr_min": good[0], "good_lr_max": good[-1],
                     "good_range_factor": good[-1] / good[0],
                     "good_range_censored": bool(good[0] == grid[0] or good[-1] == grid[-1]) and len(grid) > 1})
    return pd.DataFrame(rows)


def _cost_table(chosen: pd.DataFrame) -> str:
    """What each strategy's search cost, per (dataset, model): trials and epochs trained."""
    view = chosen.assign(cost=[f"{t} trials, {e} epochs" + (f" ({x} beyond an edge)" if x else "")
                               for t, e, x in zip(chosen.trials, chosen.trial_epochs, chosen.extended)])
    table = view.pivot(index="strategy", columns="model", values="cost").fillna("")
    return markdown_table(table, corner="strategy")


def sections(trials: list[dict], out: Path, md: list[str], section, finals: list[dict] = ()) -> list[tuple[str, object]]:
    """Append the search's section to ``md`` (CSVs under tables/); return (title, make) for its figures."""
    if not trials:
        return []
    search = search_of(trials)
    frame = trial_frame(trials)
    write_csv(frame, out / "tables" / "search_trials.csv", index=False)
    searched = [n for n, _ in search.values] + [c for c in frame.columns if c.startswith(KNOB_PREFIX)]
    full = frame[frame.rung != 0]
    knobs = sorted({c[len(KNOB_PREFIX):] for c in frame.columns if c.startswith(KNOB_PREFIX)})
    md += ["## Search", "",
           f"Every strategy was searched under the same protocol: {search.describe()}. "
           + (f"With knobs, each strategy has exactly {search.budget} configurations per setting: its own knobs "
              f"({', '.join(knobs) or 'none here'}; values and reasons in `normbench list strategies`) times a "
              f"learning-rate grid over the same range, so a strategy without knobs gets a finer rate grid. "
              if search.knobs else "")
           + f"A trial's score is its validation accuracy at the last epoch (0 when it diverged); each setting's "
           f"chosen values have the highest mean score over the {len(search.trial_seeds)} trial seed(s) at full "
           f"length, and the finals (the tables above) use them with other seeds. Test data plays no part in the "
           f"choice. Margin: the chosen configuration's mean minus the runner-up's, beside the standard deviation of "
           f"the chosen one's trial seeds (a margin inside that spread is marked: the choice is close to a coin "
           f"toss). Good range: the rates trained at full length whose best mean is within {GOOD_RANGE_POINTS:g} "
           f"point of the best, or within the seeds' spread if that is wider ('censored' when it reaches an end of "
           f"the grid: the range may be wider). Every trial: `tables/search_trials.csv`.", ""]
    with section(md, "Search"):
        chosen = choices_frame(trials, finals)
        write_csv(chosen, out / "tables" / "search_choices.csv", index=False)
        md += ["### What each strategy's search cost", "", _cost_table(chosen), ""]
        edges = chosen[chosen.at_edge != ""]
        if len(edges):
            md += [f"**Warning:** the choice lies at the edge of the grid for {len(edges)} of {len(chosen)} settings "
                   f"({'; '.join(f'{r.dataset} / {r.model} / {r.strategy}: {r.at_edge}' for r in edges.itertuples())})"
                   f"{' after the extensions the search allows' if search.extend else ''}: a wider grid might find a "
                   f"better value.", ""]
        close = chosen[chosen.within_spread]
        if len(close):
            md += [f"{len(close)} of {len(chosen)} choices beat the runner-up by less than one trial-seed standard "
                   f"deviation: {', '.join(f'{r.model} / {r.strategy}' for r in close.itertuples())}.", ""]
        mean = full.groupby(["dataset", "model", "strategy", *searched], dropna=False).val_accuracy.mean().reset_index()
        for (dataset, model), g in mean.groupby(["dataset", "model"]):
            g = g.assign(column=[", ".join(f"{c.replace(KNOB_PREFIX, '')}={r[c]:g}" for c in searched
                                           if not pd.isna(r[c])) for r in g.to_dict("records")])
            best = g.loc[g.groupby("strategy").val_accuracy.idxmax()]
            c = chosen[(chosen.dataset == dataset) & (chosen.model == model)].set_index("strategy")
            rows = []
            for r in best.itertuples():
                if r.strategy not in c.index:
                    continue
                x = c.loc[r.strategy]
                rows.append({"strategy": r.strategy, "chosen": r.column, "validation (mean)": f"{x.val_accuracy:.4f}",
                             "margin / seed std (points)": " / ".join("-" if pd.isna(v) else f"{v:.2f}" for v in
                                                                      (x.margin_points, x.seed_std_points))
                             + (" (within spread)" if x.within_spread else ""),
                             "good range": f"{x.good_lrs} of {x.grid_lrs}: {x.good_lr_min:g}-{x.good_lr_max:g} "
                                           f"({x.good_range_factor:.3g}x)" + (", censored" if x.good_range_censored
                                                                              else ""),
                             "at edge": x.at_edge})
            if rows:
                md += [f"### {dataset} / {model}: the choices (full-length trials)", "",
                       markdown_table(pd.DataFrame(rows).set_index("strategy"), corner="strategy"), ""]

    def figure(dataset, model):
        return plots.lr_sensitivity(full.drop(columns=["rung", "epochs"]), dataset, model,
                                    out / "figures" / f"lr_{slug(dataset)}_{slug(model)}.png")

    return [(f"{d} / {m}: validation accuracy against learning rate (full-length trials, mean over trial seeds)",
             lambda d=d, m=m: figure(d, m)) for d, m in sorted({(d, m) for d, m in zip(full.dataset, full.model)})]
