"""The report of a tuning study's search (:mod:`normbench.search`): every trial, each setting's choice, a warning
where the choice lies at the edge of the grid, the width of each strategy's good range, and a learning-rate
sensitivity figure per (dataset, model). The choice is made again from the trials' records by the same function
the run used, so the report cannot disagree with what was trained."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .. import record as rec_mod
from ..files import write_csv
from ..search import Search, choose, trial_score
from ..spec import RunSpec
from .frames import param_key
from . import plots
from .render import markdown_table, slug

GOOD_RANGE_POINTS = 1.0  # a learning rate is in a strategy's good range within this many accuracy points of its best


def phase(record: dict) -> str | None:
    return rec_mod.suite(record).get("phase")


def trial_frame(trials: list[dict]) -> pd.DataFrame:
    """One row per trial: dataset, model, strategy (with parameters), the searched values, seed, status, score."""
    rows = []
    for r in trials:
        s = r["spec"]
        searched = {name: s.get(name) for name in r["suite"]["search"] if name != "trial_seeds"}
        rows.append({"dataset": s["dataset"], "model": param_key(s["model"], s.get("model_params")),
                     "strategy": param_key(s["strategy"], s.get("strategy_params")), **searched, "seed": s["seed"],
                     "status": r["status"], "val_accuracy": trial_score(r), "run_id": r["run_id"]})
    return pd.DataFrame(rows)


def choices_frame(trials: list[dict]) -> pd.DataFrame:
    """Per setting: the chosen values and score, the edge warning, and the good range of learning rates."""
    search = Search.from_table(trials[0]["suite"]["search"], "the trials' records")
    specs = [RunSpec.from_dict(r["spec"]) for r in trials]
    choices, _ = choose(search, specs, {r["run_id"]: trial_score(r) for r in trials})
    names = [n for n, _ in search.values]
    lr_at = names.index("learning_rate")
    rows = []
    for c in choices:
        best_per_lr: dict[float, float] = {}
        for combo, score in c.table:
            best_per_lr[combo[lr_at]] = max(score, best_per_lr.get(combo[lr_at], -math.inf))
        good = sorted(lr for lr, score in best_per_lr.items() if score >= c.score - GOOD_RANGE_POINTS / 100)
        b = c.base
        rows.append({"dataset": b.dataset, "model": param_key(b.model, b.model_params),
                     "strategy": param_key(b.strategy, b.strategy_params),
                     **{f"chosen_{k}": v for k, v in c.values.items()}, "val_accuracy": c.score,
                     "at_edge": ", ".join(c.at_edge(search)), "good_lrs": len(good), "grid_lrs": len(best_per_lr),
                     "good_lr_min": good[0], "good_lr_max": good[-1], "good_range_factor": good[-1] / good[0]})
    return pd.DataFrame(rows)


def sections(trials: list[dict], out: Path, md: list[str], section) -> list[tuple[str, object]]:
    """Append the search's section to ``md`` (CSVs under tables/); return (title, make) for its figures."""
    if not trials:
        return []
    frame = trial_frame(trials)
    write_csv(frame, out / "tables" / "search_trials.csv", index=False)
    searched = [c for c in frame.columns if c not in ("dataset", "model", "strategy", "seed", "status",
                                                      "val_accuracy", "run_id")]
    seeds = sorted(frame.seed.unique())
    md += ["## Learning-rate search", "",
           f"Every strategy was given the same trials: "
           f"{'; '.join(c + ' in ' + ', '.join(f'{v:g}' for v in sorted(frame[c].unique())) for c in searched)}"
           f", seed(s) {', '.join(map(str, seeds))}. A trial's score is its validation accuracy at the last epoch (0 when it "
           f"diverged); each setting's chosen values have the highest mean score, and the final runs (the tables "
           f"above) use them with other seeds. Test data plays no part in the choice. Good range: the learning rates "
           f"whose best score is within {GOOD_RANGE_POINTS:g} point of the strategy's best (how many of the grid's, "
           f"and the span: the measured form of 'tolerates a range of learning rates'). Every trial: "
           f"`tables/search_trials.csv`.", ""]
    with section(md, "Learning-rate search"):
        chosen = choices_frame(trials)
        write_csv(chosen, out / "tables" / "search_choices.csv", index=False)
        mean = frame.groupby(["dataset", "model", "strategy", *searched], dropna=False).val_accuracy.mean().reset_index()
        edges = chosen[chosen.at_edge != ""]
        if len(edges):
            md += [f"**Warning:** the choice lies at the edge of the grid for {len(edges)} of {len(chosen)} settings "
                   f"({'; '.join(f'{r.dataset} / {r.model} / {r.strategy}: {r.at_edge}' for r in edges.itertuples())}): "
                   f"a wider grid might find a better value.", ""]
        for (dataset, model), g in mean.groupby(["dataset", "model"]):
            g = g.assign(column=[", ".join(f"{c}={getattr(r, c):g}" for c in searched) for r in g.itertuples()])
            table = g.pivot(index="strategy", columns="column", values="val_accuracy")
            table = table[list(dict.fromkeys(g.sort_values(searched).column))]
            text = table.map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
            mark = pd.DataFrame(False, index=table.index, columns=table.columns)
            c = chosen[(chosen.dataset == dataset) & (chosen.model == model)].set_index("strategy")
            for strategy in table.index:
                if strategy in c.index:
                    col = ", ".join(f"{n}={c.loc[strategy, f'chosen_{n}']:g}" for n in searched)
                    mark.loc[strategy, col] = True
                    text.loc[strategy, "good range"] = (f"{c.loc[strategy, 'good_lrs']} of {c.loc[strategy, 'grid_lrs']}: "
                                                        f"{c.loc[strategy, 'good_lr_min']:g}-"
                                                        f"{c.loc[strategy, 'good_lr_max']:g} "
                                                        f"({c.loc[strategy, 'good_range_factor']:.3g}x)")
            mark = mark.reindex(index=text.index, columns=text.columns).fillna(False).astype(bool)
            md += [f"### {dataset} / {model}: mean validation accuracy of the trials (chosen in bold)", "",
                   markdown_table(text.fillna(""), mark, corner="strategy"), ""]

    def figure(dataset, model):
        return plots.lr_sensitivity(frame, dataset, model, out / "figures" / f"lr_{slug(dataset)}_{slug(model)}.png")

    return [(f"{d} / {m}: validation accuracy against learning rate (the search's trials)",
             lambda d=d, m=m: figure(d, m)) for d, m in sorted({(d, m) for d, m in zip(frame.dataset, frame.model)})]
