"""Statistics that decide: confidence intervals, Welch tests per (dataset, model), the verdict sentences generated
from them, the gap to batch norm with intervals, and a rank test over configurations.

The primary family (:func:`reference_tests`) answers the question a reader asks of a benchmark: where does each
strategy stand against a reference (batch norm unless the suite names another)? k-1 Welch tests, Holm-adjusted
over those k-1 (statsmodels' ``multipletests``), intervals adjusted to the same family (each at the level of the
Holm step that tested it, so an interval excludes 0 exactly when Holm rejects), an equivalence test (TOST, statsmodels'
``ttost_ind``) against a stated margin, and the minimum detectable difference (statsmodels' power solver) for
every comparison that is neither. "Not separable" never reads as "equal": only a TOST says equivalent. All pairs
(:func:`pairwise`, :func:`verdicts`) stay as the secondary table.

Failed runs count. A diverged run is scored at chance accuracy (1 / classes: a network that outputs NaN has
learned nothing), so that four good seeds and one diverged one are not read as four good seeds; a run that ended
in an error (a crash of the code or the machine, not an outcome of the strategy) is not scored, and its cell is
named incomplete wherever it is tested. Seeds are replicates of one configuration, never independent blocks:
tests across configurations average the seeds first.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower
from statsmodels.stats.weightstats import ttost_ind

from .. import reader
from ..datasets import DATASET_FACTS
from . import frames

ALPHA = 0.05
REFERENCE = "batchnorm"  # the strategy every other one is measured against (a suite may name another)
MARGIN_POINTS = 0.5  # equivalence margin of the TOST, in accuracy points (a suite may state another)
POWER = 0.8  # the power at which the minimum detectable difference is computed
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
    if len(tested):
        out[tested] = multipletests(p[tested], alpha=ALPHA, method="holm")[1]
    return out


def holm_levels(p_values, alpha: float = ALPHA) -> np.ndarray:
    """The level at which Holm's step-down tests each hypothesis: alpha / (m - r + 1) for the r-th smallest p, up to
    the first one it keeps; that one and every later one get the level of the step where it stopped. An interval at
    this level excludes 0 exactly when Holm rejects (the intervals are consistent with the adjusted p; they are
    Bonferroni's, alpha / m, for the first step). NaN entries stay NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    for r, i in enumerate(order):
        step = alpha / (m - r)
        if p[i] > step:  # Holm stops here: this and every later hypothesis keep this step's level
            out[order[r:]] = step
            break
        out[i] = step
    return out


def welch(a, b) -> dict:
    """Welch comparison of two samples: means, difference a - b with its 95% CI half-width (Welch-Satterthwaite df;
    the standard error ``se`` and ``df`` too), the two-sided p-value, and a note when the test is undefined (NaN p) or trivially 1 (identical constants)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out = {"n_a": len(a), "n_b": len(b), "mean_a": a.mean() if len(a) else math.nan,
           "mean_b": b.mean() if len(b) else math.nan, "ci95": math.nan, "p_value": math.nan, "note": "",
           "se": math.nan, "df": math.nan}
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
        out.update(ci95=float(stats.t.ppf(0.975, df) * se), p_value=float(2 * stats.t.sf(abs(out["diff"]) / se, df)),
                   se=se, df=df)  # for an interval at another level
    return out


def _depth(g: pd.DataFrame) -> float:
    """A configuration's number of hidden layers; NaN when its records do not say."""
    return pd.to_numeric(g.depth).max()


def chance(dataset: str) -> float:
    """The accuracy a diverged run is scored at: 1 / the dataset's classes (10 when the dataset is not built in)."""
    facts = DATASET_FACTS.get(dataset)
    return 1.0 / (facts.classes if facts else 10)


def scored(g: pd.DataFrame, dataset: str) -> dict[str, np.ndarray]:
    """{strategy: per-seed scores}: a finished run's test accuracy, a diverged run's chance accuracy; runs that
    ended in an error (or are still running) are not scored."""
    out = {}
    for s, h in g.groupby("strategy", sort=True):
        values = [float(a) if status == "ok" else chance(dataset)
                  for status, a in zip(h.status, h.test_accuracy) if status in ("ok", "diverged")]
        if values:
            out[s] = np.asarray(values, dtype=float)
    return out


def _families(runs: pd.DataFrame):
    """Per (dataset, model), shallow models first: its runs and {strategy: scored runs' accuracies} (:func:`scored`)."""
    groups = sorted(runs.groupby(KEYS), key=lambda kv: (kv[0][0], np.nan_to_num(_depth(kv[1]), nan=np.inf), kv[0][1]))
    for (dataset, model), g in groups:
        yield dataset, model, g, scored(g, dataset)


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


def failure_note(statuses: pd.Series, dataset: str) -> str:
    """How a cell's runs that did not finish were counted, e.g. '1 diverged (scored 0.1), 1 error (not scored)'."""
    bad = statuses[statuses != "ok"].value_counts()
    how = {"diverged": f"scored {chance(dataset):g}"}
    return ", ".join(f"{n} {s} ({how.get(s, 'not scored')})" for s, n in bad.items())


def _verdict(dataset: str, model: str, g: pd.DataFrame, samples: dict, pairs: pd.DataFrame) -> dict:
    """One (dataset, model)'s all-pairs verdict row; see ``verdicts``."""
    n = {s: len(v) for s, v in samples.items()}
    unfinished = {s: failure_note(h.status, dataset) for s, h in g.groupby("strategy", sort=True)}
    unfinished = "; ".join(f"{_names([s])} {note}" for s, note in unfinished.items() if note)
    row = {"dataset": dataset, "model": model, "verdict": "undecided", "strategies": "", "top_strategy": None,
           "top_mean": math.nan, "n": ", ".join(f"{s}={k}" for s, k in n.items()), "p_holm": math.nan,
           "not_finished": unfinished}
    head = f"{dataset} / {model}: "
    tail = f"; runs that did not finish: {unfinished}" if unfinished else ""
    if len(samples) < 2:
        what = f"only {_names(list(samples))} has scored runs" if samples else "no strategy has a scored run"
        return {**row, "sentence": f"{head}nothing to compare, {what}{tail}"}
    means = {s: v.mean() for s, v in samples.items()}
    top = max(means, key=means.get)
    vs = pairs[(pairs.strategy_a == top) | (pairs.strategy_b == top)]
    vs = vs.assign(other=np.where(vs.strategy_a == top, vs.strategy_b, vs.strategy_a)).set_index("other")
    vs = vs.loc[sorted(vs.index, key=lambda s: -means[s])]  # the others, best mean first
    beaten = vs.index[vs.p_holm < ALPHA].tolist()
    close = vs.index[vs.p_holm >= ALPHA].tolist()
    untested = [(note, vs.index[vs.p_holm.isna() & (vs.note == note)].tolist()) for note in (NO_N, CONSTANT)]
    untested = "".join(f"; no Welch test against {_some(names)} ({note})" for note, names in untested if names)
    sizes = sorted(set(n.values()))
    n_text = f"n = {sizes[0]} each" if len(sizes) == 1 else f"n = {sizes[0]} to {sizes[-1]} per strategy"
    row.update(top_strategy=top, top_mean=means[top], strategies=top)
    if len(beaten) == len(vs):
        row.update(verdict="best", p_holm=vs.p_holm.max())
        text = (f"{_names([top])} is best ({n_text}; Holm-adjusted Welch p <= {_p(row['p_holm'])} against each of "
                f"{len(beaten)} other{'s' * (len(beaten) > 1)}, all pairs)")
    else:
        below = f"; below it: {_some(beaten)} (p <= {_p(vs.p_holm[beaten].max())})" if beaten else ""
        lead = f"top mean {_names([top])} {means[top]:.4f}, "
        if close:
            row.update(verdict="no single best", strategies=", ".join([top] + close), p_holm=vs.p_holm[close].min())
            text = (f"no single best: {_names(close)} not separable from {_names([top])} ({lead}{n_text}; "
                    f"Holm-adjusted Welch p >= {_p(row['p_holm'])} over all pairs; not separable is not equal){below}"
                    f"{untested}")
        else:
            text = f"no verdict ({lead}{n_text}{below}{untested})"
    return {**row, "sentence": head + text + tail}


def verdicts(runs: pd.DataFrame, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The secondary, all-pairs verdict per (dataset, model): 'best' when the top-mean strategy beats every other
    (Holm-adjusted Welch p < 0.05 over all pairs), 'no single best' with the strategies not separable from it, or
    'undecided' (a test against the top one is undefined, or nothing to compare); with a generated sentence."""
    pairs = pairwise(runs) if pairs is None else pairs
    return pd.DataFrame([_verdict(dataset, model, g, samples,
                                  pairs[(pairs.dataset == dataset) & (pairs.model == model)])
                         for dataset, model, g, samples in _families(runs)],
                        columns=["dataset", "model", "verdict", "strategies", "top_strategy", "top_mean", "n", "p_holm",
                                 "not_finished", "sentence"])


def _pooled_sd(a: np.ndarray, b: np.ndarray) -> float:
    return math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))


def detectable(a, b, alpha: float, power: float = POWER) -> float:
    """The smallest difference of means (same units as the samples) a two-sided two-sample t-test at level
    ``alpha`` detects with ``power``, given these samples' sizes and pooled spread (statsmodels' TTestIndPower);
    NaN when a side has n < 2, 0 when both are constant."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(len(a), len(b)) < 2:
        return math.nan
    sd = _pooled_sd(a, b)
    if sd == 0:
        return 0.0
    d = TTestIndPower().solve_power(effect_size=None, nobs1=len(a), alpha=alpha, power=power,
                                    ratio=len(b) / len(a), alternative="two-sided")
    return float(d) * sd


def tost(a, b, margin: float) -> float:
    """p-value of the two one-sided tests (Welch) that the difference of means lies within +-``margin``
    (statsmodels' ttost_ind); NaN when a side has n < 2; for two constants, 0 when |difference| < margin else 1."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(len(a), len(b)) < 2:
        return math.nan
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 0.0 if abs(a[0] - b[0]) < margin else 1.0
    return float(ttost_ind(a, b, -margin, margin, usevar="unequal")[0])


def _reference_name(samples: dict, strategy_names: dict, reference: str) -> str | None:
    """The cell key of the reference: the key itself, or the one key whose bare strategy name it is
    (``maxnorm[c=1.0]`` for ``maxnorm``)."""
    if reference in samples:
        return reference
    keys = [k for k in samples if strategy_names.get(k) == reference]
    return keys[0] if len(keys) == 1 else None


REFERENCE_COLUMNS = ["dataset", "model", "strategy", "reference", "n", "n_ref", "mean", "mean_ref", "diff_points",
                     "ci_low", "ci_high", "p_value", "p_holm", "p_tost", "p_tost_holm", "margin_points",
                     "mdd_points", "family", "outcome", "failed"]


def reference_tests(runs: pd.DataFrame, reference: str = REFERENCE, margin_points: float = MARGIN_POINTS,
                    alpha: float = ALPHA) -> pd.DataFrame:
    """The primary family: per (dataset, model) where ``reference`` has scored runs, every other strategy against it.

    Welch t-test of strategy - reference (percentage points), Holm-adjusted over the k-1 comparisons of that
    (dataset, model); an interval adjusted to the same family (at the level of Holm's step that tested it,
    :func:`holm_levels`, so it excludes 0 exactly when Holm rejects); TOST against +-``margin_points``, Holm-adjusted over the family; and the
    minimum detectable difference at the family's level and 80% power. Outcome: 'above' / 'below' (adjusted Welch
    p < alpha), 'equivalent' (adjusted TOST p < alpha), 'not separable' (neither: mdd_points says what could have
    been seen), 'no test' (n < 2 on a side, or two different constants), or 'incomplete' (a run ended in an
    error: the cell is not tested until it is rerun)."""
    rows = []
    names = dict(zip(runs.strategy, runs.strategy_name)) if "strategy_name" in runs else {}
    for dataset, model, g, samples in _families(runs):
        ref = _reference_name(samples, names, reference)
        if ref is None:
            continue
        errors = {s: h for s, h in g.groupby("strategy", sort=True) if (h.status == "error").any()}
        others = [s for s in sorted(set(samples) | set(errors)) if s != ref]  # an errored reference: all incomplete
        family = []
        for s in others:
            a, b = samples.get(s, np.array([])), samples[ref]
            w = welch(a, b)
            row = {"dataset": dataset, "model": model, "strategy": s, "reference": ref, "n": w["n_a"],
                   "n_ref": w["n_b"], "mean": w["mean_a"], "mean_ref": w["mean_b"],
                   "diff_points": 100 * w["diff"], "p_value": w["p_value"], "note": w["note"],
                   "failed": failure_note(g[g.strategy == s].status, dataset),
                   "incomplete": s in errors or ref in errors, "a": a, "b": b, "se": w["se"], "df": w["df"]}
            if row["incomplete"]:
                row["p_value"] = math.nan
            family.append(row)
        m = sum(not math.isnan(r["p_value"]) for r in family)
        level = alpha / max(m, 1)  # the first step's: the minimum detectable difference is computed at it
        p_holm = holm([r["p_value"] for r in family])
        steps = holm_levels([r["p_value"] for r in family], alpha)
        p_tost = [tost(r["a"], r["b"], margin_points / 100) if not r["incomplete"] else math.nan for r in family]
        p_tost_holm = holm(p_tost)
        for r, ph, pt, pth, step in zip(family, p_holm, p_tost, p_tost_holm, steps):
            a, b, se, df = r.pop("a"), r.pop("b"), r.pop("se"), r.pop("df")
            half = math.nan
            if not math.isnan(r["p_value"]) and r["note"] == "":
                half = 100 * float(stats.t.ppf(1 - step / 2, df) * se)  # welch's interval at the Holm step's level
            elif r["note"] == "identical values":
                half = 0.0
            mdd = 100 * detectable(a, b, level) if not r["incomplete"] else math.nan
            note = r.pop("note")
            if r.pop("incomplete"):
                outcome = "incomplete"
            elif math.isnan(ph):
                outcome = "no test"
            elif ph < alpha:
                outcome = "above" if r["diff_points"] > 0 else "below"
            elif not math.isnan(pth) and pth < alpha:
                outcome = "equivalent"
            else:
                outcome = "not separable"
            r.update(ci_low=r["diff_points"] - half, ci_high=r["diff_points"] + half, p_holm=ph, p_tost=pt,
                     p_tost_holm=pth, margin_points=margin_points, mdd_points=mdd, family=m, outcome=outcome)
            if note and outcome == "no test":
                r["failed"] = "; ".join(x for x in (r["failed"], note) if x)
            rows.append(r)
    return pd.DataFrame(rows, columns=REFERENCE_COLUMNS)


OUTCOME_ORDER = ("above", "equivalent", "not separable", "below", "no test", "incomplete")


def reference_sentences(table: pd.DataFrame, flags: dict | None = None) -> list[str]:
    """One sentence per (dataset, model) of a :func:`reference_tests` table: the strategies above, equivalent to,
    not separable from (with what could have been detected), and below the reference; ``flags`` maps
    (dataset, model, strategy) to a note printed beside the strategy (e.g. a mechanism that never engaged)."""
    flags = flags or {}
    out = []
    for (dataset, model), g in table.groupby(["dataset", "model"], sort=False):
        ref = g.reference.iloc[0]
        sizes = sorted(set(g.n) | set(g.n_ref))
        n_text = f"n = {sizes[0]}" if len(sizes) == 1 else f"n = {sizes[0]} to {sizes[-1]}"
        parts = []
        for outcome in OUTCOME_ORDER:
            h = g[g.outcome == outcome].sort_values("diff_points", ascending=False)
            if not len(h):
                continue

            def item(r) -> str:
                flag = flags.get((dataset, model, r.strategy))
                flag = f" [{flag}]" if flag else ""
                if outcome in ("above", "below"):
                    return (f"{_names([r.strategy])} {r.diff_points:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}], "
                            f"p = {_p(r.p_holm)}{flag}")
                if outcome == "equivalent":
                    return f"{_names([r.strategy])} {r.diff_points:+.2f}, TOST p = {_p(r.p_tost_holm)}{flag}"
                if outcome == "not separable":
                    return (f"{_names([r.strategy])} {r.diff_points:+.2f} (could detect >= {r.mdd_points:.2f}, "
                            f"n = {r.n} vs {r.n_ref}){flag}")
                return f"{_names([r.strategy])} ({r.failed or 'n < 2'}){flag}"

            word = {"equivalent": f"equivalent within +-{g.margin_points.iloc[0]:g} points",
                    "not separable": "not separable (not shown equal; the smallest gap these seeds could detect at "
                                     "80% power in brackets)"}.get(outcome, outcome)
            parts.append(f"{word}: " + "; ".join(item(r) for r in h.itertuples()))
        lead = (f"{dataset} / {model}, against {_names([ref])} ({g.mean_ref.iloc[0]:.4f}, {n_text}; Holm over "
                f"{int(g.family.max())} comparisons, points with family-adjusted intervals): ")
        out.append(lead + " | ".join(parts))
    return out


def verdict_sentences(runs) -> list[str]:
    """The verdict sentences of a runs frame, or of a results folder's records when given its path."""
    if not isinstance(runs, pd.DataFrame):
        runs = frames.runs_frame(reader.load_records(runs))
    return verdicts(runs).sentence.tolist()


def gap_to_reference(runs: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Per (dataset, model, strategy) where the reference has scored runs: mean test accuracy minus the reference's
    in percentage points (diverged runs scored at chance, as in every test here), with its 95% Welch interval and
    unadjusted Welch p (NaN when either side has n < 2)."""
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
                        "p_value": w["p_value"], "failed": failure_note(h.status, dataset)})
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
