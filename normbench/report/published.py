"""A reader's numbers against the published ones: each cell of a report beside the same cell of a published pack.

``make bench`` trains a small suite whose runs are a subset of a published study's (the same search, the same
specs, so the same run ids) and ends by saying, cell by cell, whether the reader's mean final test accuracy lies
inside the published cell's 95% t interval of the mean, and whether the search chose the same values. Only runs of
the same suite protocol are compared: the published cell must come from finals of the same (dataset, model,
strategy) made under the same search; anything else is named as not comparable rather than compared.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from .. import record as rec_mod
from .. import reader
from ..errors import NormbenchError
from .frames import param_key
from .significance import ci95

COLUMNS = ["dataset", "model", "strategy", "n", "mean", "published_strategy", "published_n", "published_mean",
           "published_low", "published_high", "same_choice", "comparable", "inside", "note"]


def _finals(records: list[dict]) -> list[dict]:
    return [r for r in records if rec_mod.suite(r).get("phase") != "trial"]


def _cells(records: list[dict]) -> dict[tuple[str, str, str], dict]:
    """(dataset, model, bare strategy) -> the cell's chosen key, its finished runs' test accuracies, its search."""
    cells: dict[tuple[str, str, str], dict] = {}
    for r in _finals(records):
        s = r["spec"]
        key = (s["dataset"], param_key(s["model"], s.get("model_params")), s["strategy"])
        cell = cells.setdefault(key, {"keys": set(), "acc": [], "search": set(), "failed": 0})
        cell["keys"].add(param_key(s["strategy"], s.get("strategy_params")) + f"@lr={s['learning_rate']:g}")
        cell["search"].add(json.dumps(rec_mod.suite(r).get("search") or {}, sort_keys=True))  # key order: not a change
        test = rec_mod.test_metrics(r)
        if r["status"] == "ok" and test.get("accuracy") is not None:
            cell["acc"].append(float(test["accuracy"]))
        else:
            cell["failed"] += 1
    return cells


def compare(records: list[dict], published: list[dict]) -> pd.DataFrame:
    """One row per cell of ``records`` (finals): its mean test accuracy and n beside the published cell's mean and
    95% t interval; ``inside`` says whether the reader's mean lies in it, ``same_choice`` whether both searches
    chose the same values (strategy parameters and learning rate)."""
    mine, theirs = _cells(records), _cells(published)
    rows = []
    for key in sorted(mine):
        m = mine[key]
        row = dict(zip(("dataset", "model", "strategy"), key), n=len(m["acc"]),
                   mean=float(np.mean(m["acc"])) if m["acc"] else math.nan, published_strategy="", published_n=0,
                   published_mean=math.nan, published_low=math.nan, published_high=math.nan, same_choice=False,
                   comparable=False, inside=False, note="")
        p = theirs.get(key)
        if p is None:
            row["note"] = "no published cell"
        elif p["search"] != m["search"]:
            row["note"] = "published under another search: not comparable"
        else:
            acc = np.asarray(p["acc"], dtype=float)
            half = ci95(float(acc.std(ddof=1)), len(acc)) if len(acc) > 1 else math.nan
            mean = float(acc.mean()) if len(acc) else math.nan
            row.update(published_strategy=", ".join(sorted(p["keys"])), published_n=len(acc), published_mean=mean,
                       published_low=mean - half, published_high=mean + half, same_choice=p["keys"] == m["keys"])
            if math.isnan(half) or math.isnan(row["mean"]):
                row["note"] = "no interval (fewer than 2 finished runs on a side)"
            else:
                row["comparable"] = True
                row["inside"] = bool(mean - half <= row["mean"] <= mean + half)
            if not row["same_choice"]:
                row["note"] = "; ".join(x for x in (row["note"], f"chose {', '.join(sorted(m['keys']))}") if x)
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def summary(table: pd.DataFrame, published_dir) -> str:
    """One sentence: how many of the reader's cells lie inside the published intervals, and which do not."""
    comparable = table[table.comparable]
    if table.empty or comparable.empty:
        return (f"No cell of these records can be compared with {published_dir}: "
                + ("; ".join(sorted(set(table.note))) or "it holds no finals") + ".")
    inside = comparable[comparable.inside]
    outside = comparable[~comparable.inside]
    text = (f"{len(inside)} of {len(comparable)} cells inside the published 95% intervals ({published_dir})")
    if len(outside):
        text += "; outside: " + ", ".join(
            f"{r.model} / {r.strategy} {r.mean:.4f} vs {r.published_low:.4f}-{r.published_high:.4f}"
            for r in outside.itertuples())
    differ = comparable[~comparable.same_choice]
    if len(differ):
        text += f"; {len(differ)} chose other values than the published search"
    return text + "."


def load_published(published_dir) -> list[dict]:
    """The published folder's records (a pack or JSON records); an empty or missing folder is an error naming it."""
    records = reader.load_records(published_dir)
    if not records:
        raise NormbenchError(f"--published {published_dir} holds no records: give the folder of a published pack, "
                             f"e.g. results/tuned/records")
    return records
