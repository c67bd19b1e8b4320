"""Statistics that decide: confidence intervals, Holm-corrected Welch tests per (dataset, model), the verdict
sentences generated from them, the gap to batch norm with intervals, and a rank test over configurations.

Every test here works on per-seed final test accuracies of finished runs (status ok). Seeds are replicates of
one configuration, never independent blocks: tests across configurations average the seeds first.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from .. import reader
from . import frames

ALPHA = 0.05
REFERENCE = "batchnorm"  # the strategy every other one is measured against in the gap table
MIN_FRIEDMAN_BLOCKS = 3  # fewer (dataset, model) configurations give a Friedman statistic with no meaning
KEYS = ["dataset", "model"]
NO_N = "n < 2"
CONSTANT = "zero variance, different values"


def status_note(statuses: pd.Series) -> str:
    """The runs that did not finish, e.g. '2 diverged, 1 error'; '' when every run finished."""
    bad = statuses[statuses != "ok"].value_counts()
    return ", ".join(f"{n} {s}" for s, n in bad.items())


def ci95(std: float, n: int) -> float:
    """Half-width of the 95% t confidence interval of a mean from its sample std (ddof=1) and n; NaN for n < 2."""
    return float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n >= 2 else math.nan


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries (undefined tests) stay NaN and are not counted in the family."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def welch(a, b) -> dict:
    """Welch comparison of two samples: means, difference a - b with its 95% CI half-width (Welch-Satterthwaite df),
    the two-sided p-value, and a note when the test is undefined (NaN p) or trivially 1 (identical constants)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out = {"n_a": len(a), "n_b": len(b), "mean_a": a.mean() if len(a) else math.nan,
           "mean_b": b.mean() if len(b) else math.nan, "ci95": math.nan, "p_value": math.nan, "note": ""}
    out["diff"] = out["mean_a"] - out["mean_b"]
    if min(len(a), len(b)) < 2:
        out["note"] = NO_N
    elif np.ptp(a) == 0 and np.ptp(b) == 0:  # exact: a mean of equal floats can differ from them by round-off
        same = a[0] == b[0]
        out.update(note="identical values" if same else CONSTANT, p_value=1.0 if same else math.nan)
    else:
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        se = math.sqrt(va + vb)  # = scipy.stats.ttest_ind(a, b, equal_var=False), without its warning on a constant side
        out.update(ci95=float(stats.t.ppf(0.975, df) * se), p_value=float(2 * stats.t.sf(abs(out["diff"]) / se, df)))
    return out


def _depth(g: pd.DataFrame) -> float:
    """A configuration's number of hidden layers; NaN when its records do not say."""
    return pd.to_numeric(g.depth).max()


def _families(runs: pd.DataFrame):
    """Per (dataset, model), shallow models first: its runs and {strategy: finished runs' test accuracies}."""
    groups = sorted(runs.groupby(KEYS), key=lambda kv: (kv[0][0], np.nan_to_num(_depth(kv[1]), nan=np.inf), kv[0][1]))
    for (dataset, model), g in groups:
        ok = g[g.status == "ok"]
        yield dataset, model, g, {s: h.test_accuracy.to_numpy(dtype=float) for s, h in ok.groupby("strategy", sort=True)}


def pairwise(runs: pd.DataFrame) -> pd.DataFrame:
    """Welch t-tests between every two strategies of each (dataset, model) on per-seed test accuracy, with
    Holm-adjusted p-values over that (dataset, model)'s family of pairs; differences in percentage points."""
    rows = []
    for dataset, model, _, samples in _families(runs):
        family = [{"dataset": dataset, "model": model, "strategy_a": a, "strategy_b": b, **welch(samples[a], samples[b])}
                  for a, b in itertools.combinations(samples, 2)]
        for row, p in zip(family, holm([r["p_value"] for r in family])):
            row.update(diff_points=100 * row.pop("diff"), ci95_points=100 * row.pop("ci95"), p_holm=p)
        rows += family
    return pd.DataFrame(rows, columns=["dataset", "model", "strategy_a", "strategy_b", "n_a", "n_b", "mean_a", "mean_b",
                                       "diff_points", "ci95_points", "p_value", "p_holm", "note"])


def _p(p: float) -> str:
    return f"{p:.2g}"


def _names(names: list[str]) -> str:
    names = [f"`{s}`" for s in names]  # quoted: a strategy is called `none`
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _some(names: list[str]) -> str:
    return _names(names) if len(names) <= 3 else f"{len(names)} others"


def _verdict(dataset: str, model: str, g: pd.DataFrame, samples: dict, pairs: pd.DataFrame) -> dict:
    """One (dataset, model)'s verdict row; see ``verdicts``."""
    n = {s: len(v) for s, v in samples.items()}
    unfinished = {s: status_note(h.status) for s, h in g.groupby("strategy", sort=True)}
    unfinished = "; ".join(f"{_names([s])} {note}" for s, note in unfinished.items() if note)
    row = {"dataset": dataset, "model": model, "verdict": "undecided", "strategies": "", "top_strategy": None,
           "top_mean": math.nan, "n": ", ".join(f"{s}={k}" for s, k in n.items()), "p_holm": math.nan,
           "not_finished": unfinished}
    head = f"{dataset} / {model}: "
    tail = f"; runs not finished (not counted in n): {unfinished}" if unfinished else ""
    if len(samples) < 2:
        what = f"only {_names(list(samples))} has finished runs" if samples else "no strategy has a finished run"
        return {**row, "sentence": f"{head}nothing to compare, {what}{tail}"}
    means = {s: v.mean() for s, v in samples.items()}
    top = max(means, key=means.get)
    vs = pairs[(pairs.strategy_a == top) | (pairs.strategy_b == top)]
    vs = vs.assign(other=np.where(vs.strategy_a == top, vs.strategy_b, vs.strategy_a)).set_index("other")
    vs = vs.loc[sorted(vs.index, key=lambda s: -means[s])]  # the others, best mean first
    beaten = vs.index[vs.p_holm < ALPHA].tolist()
    tied = vs.index[vs.p_holm >= ALPHA].tolist()
    untested = [(note, vs.index[vs.p_holm.isna() & (vs.note == note)].tolist()) for note in (NO_N, CONSTANT)]
    untested = "".join(f"; no Welch test against {_some(names)} ({note})" for note, names in untested if names)
    sizes = sorted(set(n.values()))
    n_text = f"n = {sizes[0]} each" if len(sizes) == 1 else f"n = {sizes[0]} to {sizes[-1]} per strategy"
    row.update(top_strategy=top, top_mean=means[top], strategies=top)
    if len(beaten) == len(vs):
        row.update(verdict="best", p_holm=vs.p_holm.max())
        text = (f"{_names([top])} is best ({n_text}; Holm-adjusted Welch p <= {_p(row['p_holm'])} against each of "
                f"{len(beaten)} other{'s' * (len(beaten) > 1)})")
    else:
        below = f"; below it: {_some(beaten)} (p <= {_p(vs.p_holm[beaten].max())})" if beaten else ""
        lead = f"top mean {_names([top])} {means[top]:.4f}, "
        if tied:
            row.update(verdict="tied", strategies=", ".join([top] + tied), p_holm=vs.p_holm[tied].min())
            text = (f"{_names([top] + tied)} are tied ({lead}n = {n[top]}; Holm-adjusted Welch p >= "
                    f"{_p(row['p_holm'])} against {_names([top])}{below}{untested})")
        else:
            text = f"no verdict ({lead}{n_text}{below}{untested})"
    return {**row, "sentence": head + text + tail}


def verdicts(runs: pd.DataFrame, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (dataset, model): 'best' when the top-mean strategy beats every other (Holm-adjusted Welch p < 0.05),
    'tied' with the strategies not separable from it, or 'undecided' (no tie, but a test against the top one is
    undefined, or nothing to compare); with a generated sentence that gives n and p."""
    pairs = pairwise(runs) if pairs is None else pairs
    return pd.DataFrame([_verdict(dataset, model, g, samples,
                                  pairs[(pairs.dataset == dataset) & (pairs.model == model)])
                         for dataset, model, g, samples in _families(runs)],
                        columns=["dataset", "model", "verdict", "strategies", "top_strategy", "top_mean", "n", "p_holm",
                                 "not_finished", "sentence"])


def verdict_sentences(runs) -> list[str]:
    """The verdict sentences of a runs frame, or of a results folder's records when given its path."""
    if not isinstance(runs, pd.DataFrame):
        runs = frames.runs_frame(reader.load_records(runs))
    return verdicts(runs).sentence.tolist()


def gap_to_reference(runs: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Per (dataset, model, strategy) where the reference finished: mean test accuracy minus the reference's in
    percentage points, with its 95% Welch interval and unadjusted Welch p (NaN when either side has n < 2)."""
    out = []
    for dataset, model, g, samples in _families(runs):
        if reference not in samples or g.strategy.nunique() < 2:
            continue
        depth = _depth(g)
        for strategy, h in g.groupby("strategy", sort=True):
            w = welch(samples.get(strategy, []), samples[reference])
            if strategy == reference:  # the reference against itself: a gap of 0 by definition, no interval
                w.update(ci95=math.nan, p_value=math.nan)
            gap, half = 100 * w["diff"], 100 * w["ci95"]
            out.append({"dataset": dataset, "model": model, "depth": depth, "strategy": strategy, "n": w["n_a"],
                        "n_ref": w["n_b"], "gap_points": gap, "ci95_low": gap - half, "ci95_high": gap + half,
                        "p_value": w["p_value"], "failed": status_note(h.status)})
    return pd.DataFrame(out, columns=["dataset", "model", "depth", "strategy", "n", "n_ref", "gap_points", "ci95_low",
                                      "ci95_high", "p_value", "failed"])


def rank_test(runs: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Average rank (1 = best) of each strategy over the (dataset, model) configurations where every strategy finished,
    seeds averaged first, and a Friedman test over those configurations (or a note saying why there is none)."""
    ok = runs[runs.status == "ok"].astype({"test_accuracy": float})
    means = ok.pivot_table(index=KEYS, columns="strategy", values="test_accuracy", aggfunc="mean")
    blocks = means.dropna()
    ranks = blocks.rank(axis=1, ascending=False).mean().sort_values()
    table = pd.DataFrame({"strategy": ranks.index, "average_rank": ranks.values, "configurations": len(blocks)})
    k, b = means.shape[1], len(blocks)
    result = {"strategies": k, "configurations": b, "left_out": len(means) - b, "statistic": math.nan,
              "p_value": math.nan}
    head = (f"Seeds averaged first, then ranked within each (dataset, model) configuration: {b} configurations with "
            f"every one of the {k} strategies finished")
    head += f" ({result['left_out']} left out where some strategy has no finished run)." if result["left_out"] else "."
    if k < 3:
        result["note"] = f"{head} No Friedman test: it needs at least 3 strategies, these records have {k}."
    elif b < MIN_FRIEDMAN_BLOCKS:
        result["note"] = f"{head} No Friedman test: it needs at least {MIN_FRIEDMAN_BLOCKS} configurations."
    else:
        stat, p = stats.friedmanchisquare(*blocks.to_numpy().T)
        result.update(statistic=float(stat), p_value=float(p))
        result["note"] = (f"{head} Friedman test over them: chi-squared = {stat:.2f}, df = {k - 1}, p = {_p(p)}"
                          f"{' (the chi-squared approximation is rough below 10 configurations)' * (b < 10)}.")
    return table, result


NORM_FREE = ("dyt", "derf", "ws_groupnorm", "nf")  # the alternatives to normalizing activations (2019-2025)
COMPARATORS = ("batchnorm", "layernorm", "selu")


def versus(pairs: pd.DataFrame, strategies=NORM_FREE, comparators=COMPARATORS) -> pd.DataFrame:
    """Each of ``strategies`` against each of ``comparators`` on the same (dataset, model), read from the
    pairwise family (so the Holm adjustment is the verdicts' own): the difference strategy - comparator in
    percentage points with its 95% Welch interval, the Holm-adjusted p, and the outcome: 'above' or
    'below' (adjusted p < ALPHA), 'not separable' (>= ALPHA: the data do not tell them apart, which is not
    a proof that they are equal) or 'no test' (undefined: n < 2 on a side, or constants)."""
    rows = []
    for r in pairs.itertuples():
        for s, c, sign, n, n_ref in ((r.strategy_a, r.strategy_b, 1, r.n_a, r.n_b),
                                     (r.strategy_b, r.strategy_a, -1, r.n_b, r.n_a)):
            if s not in strategies or c not in comparators:
                continue
            diff = sign * r.diff_points
            outcome = ("no test" if math.isnan(r.p_holm) else "not separable" if r.p_holm >= ALPHA
                       else "above" if diff > 0 else "below")
            rows.append({"dataset": r.dataset, "model": r.model, "strategy": s, "comparator": c, "n": n,
                         "n_comparator": n_ref, "diff_points": diff, "ci95_low": diff - r.ci95_points,
                         "ci95_high": diff + r.ci95_points, "p_holm": r.p_holm, "outcome": outcome})
    return pd.DataFrame(rows, columns=["dataset", "model", "strategy", "comparator", "n", "n_comparator",
                                       "diff_points", "ci95_low", "ci95_high", "p_holm", "outcome"])


def versus_sentences(table: pd.DataFrame, comparator: str = REFERENCE) -> list[str]:
    """Per strategy of a ``versus`` table: where it is above, not separable from, or below ``comparator``."""
    out = []
    rows = table[table.comparator == comparator]
    for strategy, g in rows.groupby("strategy", sort=True):
        parts = []
        for outcome in ("above", "not separable", "below", "no test"):
            h = g[g.outcome == outcome]
            if len(h):
                where = ", ".join(f"{m} ({d:+.2f} points, p = {_p(p)})" if not math.isnan(p) else m
                                  for m, d, p in zip(h.dataset + "/" + h.model, h.diff_points, h.p_holm))
                parts.append(f"{outcome} on {where}")
        out.append(f"{_names([strategy])} against {_names([comparator])}: " + "; ".join(parts))
    return out
