"""The statistics behind the verdicts: Holm, Welch intervals, verdicts, the gap to BN and the rank test."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from normbench.report import significance as sig
from normbench.report import tables


def _runs(*cells, dataset="mnist", model="mlp8"):
    """A runs frame from (strategy, [accuracies], [statuses of further unfinished runs]) cells of one configuration."""
    rows = []
    for strategy, accs, *bad in cells:
        for seed, acc in enumerate(accs):
            rows.append({"dataset": dataset, "model": model, "strategy": strategy, "seed": seed, "status": "ok",
                         "test_accuracy": acc, "depth": 8})
        for i, status in enumerate(bad[0] if bad else []):
            rows.append({"dataset": dataset, "model": model, "strategy": strategy, "seed": len(accs) + i,
                         "status": status, "test_accuracy": None, "depth": 8})
    return pd.DataFrame(rows)


def _verdict(runs):
    v = sig.verdicts(runs)
    assert len(v) == 1
    return v.iloc[0]


def test_holm_matches_a_hand_worked_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06; the NaN is no test
    assert sig.holm([0.01, 0.04, np.nan, 0.03, 0.005]) == pytest.approx([0.03, 0.06, np.nan, 0.06, 0.02], nan_ok=True)
    # 0.01*3 = 0.03, 0.6*2 = 1.2 -> capped at 1, 0.7*1 = 0.7 -> running max 1
    assert sig.holm([0.6, 0.7, 0.01]) == pytest.approx([1.0, 1.0, 0.03])
    assert sig.holm([]).size == 0


def test_confidence_interval_of_a_mean():
    assert sig.ci95(0.02, 5) == pytest.approx(2.776445 * 0.02 / math.sqrt(5), rel=1e-6)  # t(0.975, 4) = 2.776445
    assert math.isnan(sig.ci95(np.nan, 1)) and math.isnan(sig.ci95(0.0, 0))


def test_welch_interval_and_p_of_a_difference_by_hand():
    a, b = [0.90, 0.92, 0.94], [0.80, 0.85, 0.83, 0.86]
    # means 0.92 and 0.835; sample variances 0.0008 / 2 and 0.0021 / 3
    va, vb = 0.0004 / 3, 0.0007 / 4
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    assert df == pytest.approx(4.978, abs=1e-3)
    w = sig.welch(a, b)
    assert w["diff"] == pytest.approx(0.085)
    assert w["ci95"] == pytest.approx(stats.t.ppf(0.975, df) * math.sqrt(va + vb))
    assert w["p_value"] == pytest.approx(2 * stats.t.sf(0.085 / math.sqrt(va + vb), df))
    assert w["note"] == ""
    rng = np.random.default_rng(1)
    x, y = rng.normal(0.9, 0.01, 5), rng.normal(0.89, 0.03, 7)
    assert sig.welch(x, y)["p_value"] == pytest.approx(stats.ttest_ind(x, y, equal_var=False).pvalue)


def test_welch_degenerate_cases_are_named_not_invented():
    one = sig.welch([0.9], [0.8, 0.81])
    assert math.isnan(one["p_value"]) and math.isnan(one["ci95"]) and one["note"] == "n < 2"
    same = sig.welch([0.1135] * 3, [0.1135] * 4)
    assert same["p_value"] == 1.0 and same["note"] == "identical values"
    differ = sig.welch([0.98] * 3, [0.97] * 3)
    assert math.isnan(differ["p_value"]) and differ["note"] == "zero variance, different values"
    half = sig.welch([0.98] * 3, [0.90, 0.91, 0.92])  # one side constant: Welch is defined
    assert 0 < half["p_value"] < 0.05 and half["ci95"] > 0


def test_a_clear_winner_is_best_and_bold():
    runs = _runs(("selu", [0.970, 0.972, 0.971, 0.973, 0.969]), ("batchnorm", [0.950, 0.953, 0.951, 0.949, 0.952]),
                 ("none", [0.90, 0.91, 0.905, 0.895, 0.90]))
    pairs = sig.pairwise(runs)
    assert len(pairs) == 3 and (pairs.p_holm >= pairs.p_value).all()
    v = _verdict(runs)
    assert v.verdict == "best" and v.strategies == "selu" and v.n == "batchnorm=5, none=5, selu=5"
    top = pairs[(pairs.strategy_a == "selu") | (pairs.strategy_b == "selu")]
    assert v.p_holm == pytest.approx(top.p_holm.max()) and v.p_holm < 0.05
    assert v.sentence == (f"mnist / mlp8: `selu` is best (n = 5 each; Holm-adjusted Welch p <= {v.p_holm:.2g} "
                          f"against each of 2 others, all pairs)")
    text, bold = tables.accuracy_cells(tables.accuracy_summary(runs), sig.verdicts(runs), "mnist")
    assert bold.loc["mlp8 (8 layers)"].to_dict() == {"batchnorm": False, "none": False, "selu": True}
    half = stats.t.ppf(0.975, 4) * np.std([0.970, 0.972, 0.971, 0.973, 0.969], ddof=1) / math.sqrt(5)
    assert text.loc["mlp8 (8 layers)", "selu"] == f"0.9710 ± {half:.4f} (n=5)"


def test_overlapping_strategies_are_not_separable_never_tied_and_none_is_bold():
    runs = _runs(("selu", [0.90, 0.93, 0.91, 0.94, 0.92]), ("batchnorm", [0.91, 0.92, 0.90, 0.94, 0.925]),
                 ("none", [0.50, 0.51, 0.52, 0.50, 0.51]))
    v = _verdict(runs)
    assert v.verdict == "no single best" and v.strategies == "selu, batchnorm" and v.p_holm > 0.5
    assert v.sentence.startswith("mnist / mlp8: no single best: `batchnorm` not separable from `selu` (top mean "
                                 "`selu` 0.9200, n = 5 each; Holm-adjusted Welch p >= ")
    assert "tied" not in v.sentence
    assert "below it: `none` (p <= " in v.sentence
    _, bold = tables.accuracy_cells(tables.accuracy_summary(runs), sig.verdicts(runs), "mnist")
    assert not bold.to_numpy().any()


def test_a_strategy_with_one_run_leaves_no_verdict():
    runs = _runs(("selu", [0.970, 0.972, 0.971]), ("batchnorm", [0.950, 0.953, 0.951]), ("groupnorm", [0.80]))
    v = _verdict(runs)
    assert v.verdict == "undecided" and v.top_strategy == "selu"
    assert v.sentence == (f"mnist / mlp8: no verdict (top mean `selu` 0.9710, n = 1 to 3 per strategy; below it: "
                          f"`batchnorm` (p <= {v.sentence.split('p <= ')[1].split(')')[0]}); "
                          f"no Welch test against `groupnorm` (n < 2))")


def test_identical_values_tie_and_different_constants_are_undefined():
    v = _verdict(_runs(("selu", [0.98] * 3), ("batchnorm", [0.98] * 3)))
    assert v.verdict == "no single best" and v.p_holm == 1.0
    v = _verdict(_runs(("selu", [0.98] * 3), ("batchnorm", [0.97] * 3)))
    assert v.verdict == "undecided" and "no Welch test against `batchnorm` (zero variance, different values)" in v.sentence


def test_diverged_runs_are_scored_at_chance_and_said():
    runs = _runs(("selu", [0.970, 0.972, 0.971, 0.973]), ("none", [0.90, 0.91, 0.905], ["diverged", "diverged"]),
                 ("spectralnorm", [], ["diverged"]))
    v = _verdict(runs)
    # none: 3 finished + 2 diverged scored 0.1 = n 5; spectral norm: one diverged run, n = 1, no test
    assert v.verdict == "no single best" and v.strategies == "selu, none" and v.n == "none=5, selu=4, spectralnorm=1"
    assert v.sentence.endswith("runs that did not finish: `none` 2 diverged (scored 0.1); `spectralnorm` 1 diverged "
                               "(scored 0.1)")
    assert "below it: `none`" not in v.sentence  # 0.90, 0.91, 0.905, 0.1, 0.1 is not separable from selu at n = 5
    assert "no Welch test against `spectralnorm` (n < 2)" in v.sentence
    assert sig.verdict_sentences(runs) == [v.sentence]
    assert _verdict(_runs(("none", [], ["error"]))).sentence == (
        "mnist / mlp8: nothing to compare, no strategy has a scored run; runs that did not finish: `none` 1 error "
        "(not scored)")


def test_gap_to_batch_norm_has_a_welch_interval_in_points():
    runs = _runs(("batchnorm", [0.80, 0.85, 0.83, 0.86]), ("selu", [0.90, 0.92, 0.94]), ("groupnorm", [0.7]),
                 ("none", [], ["diverged"]), ("maxnorm", [0.80, 0.85, 0.83], ["diverged"]),
                 ("rmsnorm", [0.80, 0.85, 0.83, 0.86]))
    gaps = sig.gap_to_reference(runs).set_index("strategy")
    va, vb = 0.0004 / 3, 0.0007 / 4
    half = 100 * stats.t.ppf(0.975, (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)) * math.sqrt(va + vb)
    assert gaps.gap_points["selu"] == pytest.approx(8.5)
    assert (gaps.ci95_low["selu"], gaps.ci95_high["selu"]) == pytest.approx((8.5 - half, 8.5 + half))
    assert gaps.gap_points["groupnorm"] == pytest.approx(-13.5) and math.isnan(gaps.ci95_low["groupnorm"])
    cells = tables.gap_cells(gaps.reset_index(), "mnist").loc["mlp8 (8 layers)"].to_dict()
    # a side with fewer finished runs than BN says how many, and why (full's none/mlp32 showed n = 2 nowhere)
    # a diverged run is scored at chance (0.1) in the gap too, and named
    assert cells == {"batchnorm": "reference", "groupnorm": "-13.50 (n=1 vs 4)",
                     "none": "-73.50 (n=1 vs 4; 1 diverged (scored 0.1))",
                     "selu": f"+8.50 [{8.5 - half:+.2f}, {8.5 + half:+.2f}] (n=3 vs 4)",
                     "maxnorm": cells["maxnorm"].split(" (")[0] + " (1 diverged (scored 0.1))",
                     "rmsnorm": cells["rmsnorm"]}
    assert cells["maxnorm"].startswith("-19.00 [")  # (0.80 + 0.85 + 0.83 + 0.1) / 4 - 0.835
    assert cells["rmsnorm"].startswith("+0.00 [") and "(n=" not in cells["rmsnorm"]  # equal n: no note
    assert sig.gap_to_reference(_runs(("selu", [0.9, 0.91]), ("none", [0.8, 0.81]))).empty  # no BN beside them


def test_the_rank_test_averages_seeds_first():
    rng = np.random.default_rng(0)
    # two configurations, 5 seeds each; seed by seed the order flips, the seed means do not
    a = _runs(("selu", [0.95, 0.90, 0.95, 0.90, 0.95]), ("batchnorm", [0.91, 0.94, 0.91, 0.94, 0.91]),
              ("none", list(0.80 + rng.normal(0, 0.001, 5))), model="mlp8")
    b = _runs(("selu", [0.70, 0.71, 0.72, 0.70, 0.71]), ("batchnorm", [0.60, 0.61, 0.62, 0.60, 0.61]),
              ("none", list(0.65 + rng.normal(0, 0.001, 5))), model="mlp16")
    ranks, friedman = sig.rank_test(pd.concat([a, b]))
    assert ranks.configurations.tolist() == [2, 2, 2]  # 2 blocks, not 10 (dataset, model, seed) blocks
    assert dict(zip(ranks.strategy, ranks.average_rank)) == {"selu": 1.0, "batchnorm": 2.5, "none": 2.5}
    assert math.isnan(friedman["p_value"]) and "No Friedman test: it needs at least 3 configurations" in friedman["note"]
    # a third configuration with the same order (1, 2, 3) in all three: Q = 12 / (3*3*4) * (3^2 + 6^2 + 9^2) - 3*3*4 = 6
    c = [_runs(("selu", [0.9, 0.91]), ("batchnorm", [0.8, 0.81]), ("none", [0.7, 0.71]), model=m) for m in "xyz"]
    ranks, friedman = sig.rank_test(pd.concat(c))
    assert friedman["statistic"] == pytest.approx(6.0) and friedman["p_value"] == pytest.approx(math.exp(-3))
    _, two = sig.rank_test(pd.concat(c).query("strategy != 'none'"))
    assert "it needs at least 3 strategies, these records have 2" in two["note"]


def test_the_rank_test_leaves_out_configurations_where_a_strategy_never_finished():
    runs = pd.concat([_runs(("selu", [0.9]), ("none", [0.8]), model="m1"),
                      _runs(("selu", [0.9]), ("none", [], ["diverged"]), model="m2")])
    ranks, friedman = sig.rank_test(runs)
    assert ranks.configurations.tolist() == [1, 1] and friedman["left_out"] == 1
    assert "(1 left out where some strategy has no finished run)" in friedman["note"]


def test_norm_free_strategies_against_the_comparators_read_the_verdicts_family():
    runs = pd.concat([
        _runs(("batchnorm", [0.95, 0.951, 0.949, 0.952]), ("nf", [0.90, 0.901, 0.899, 0.902]),
              ("dyt", [0.95, 0.948, 0.953, 0.951]), ("layernorm", [0.96, 0.961, 0.959, 0.962]),
              ("none", [0.93, 0.931, 0.929, 0.93])),
        _runs(("batchnorm", [0.95, 0.951]), ("nf", [0.97]), model="resmlp8"),
    ])
    pairs = sig.pairwise(runs)
    table = sig.versus(pairs)
    assert set(table.strategy) == {"nf", "dyt"} and set(table.comparator) == {"batchnorm", "layernorm"}  # no selu here
    row = table[(table.model == "mlp8") & (table.strategy == "nf") & (table.comparator == "batchnorm")].iloc[0]
    assert row.diff_points == pytest.approx(-5.0, abs=1e-9) and row.outcome == "below"
    family = pairs[(pairs.model == "mlp8") & (pairs.strategy_a == "batchnorm") & (pairs.strategy_b == "nf")].iloc[0]
    assert row.p_holm == family.p_holm and row.ci95_high - row.ci95_low == pytest.approx(2 * family.ci95_points)
    dyt = table[(table.model == "mlp8") & (table.strategy == "dyt") & (table.comparator == "batchnorm")].iloc[0]
    assert dyt.outcome == "not separable" and dyt.p_holm >= sig.ALPHA
    assert table[(table.model == "mlp8") & (table.strategy == "dyt") & (table.comparator == "layernorm")].outcome.iloc[0] \
        == "below"
    one_seed = table[(table.model == "resmlp8")].iloc[0]
    assert one_seed.outcome == "no test" and one_seed.n == 1
    sentences = sig.versus_sentences(table)
    assert sentences[0].startswith("`dyt` against `batchnorm`: not separable on mnist/mlp8")
    assert "below on mnist/mlp8 (-5.00 points" in sentences[1] and "no test on mnist/resmlp8" in sentences[1]
    cells = tables.versus_cells(table)
    assert cells.loc["mnist / mlp8 / nf", "vs batchnorm"].startswith("-5.00 [") and cells.loc[
        "mnist / mlp8 / nf", "vs batchnorm"].endswith(": below")


def _primary(*cells, reference="batchnorm", margin=0.5):
    runs = _runs(*cells)
    names = runs.strategy.str.split("[").str[0]  # the bare name, as runs_frame gives it
    return sig.reference_tests(runs.assign(strategy_name=names), reference, margin).set_index("strategy")


BN = ("batchnorm", [0.951, 0.953, 0.950, 0.952, 0.954])


def test_the_primary_family_is_each_strategy_against_the_reference_holm_over_k_minus_1():
    table = _primary(BN, ("none", [0.945, 0.946, 0.944, 0.947, 0.945]), ("layernorm", [0.952, 0.9525, 0.951, 0.953,
                     0.9515]), ("selu", [0.960, 0.961, 0.962, 0.960, 0.961]))
    assert sorted(table.index) == ["layernorm", "none", "selu"] and (table.family == 3).all()
    raw = {s: stats.ttest_ind(np.array(c[1]), np.array(BN[1]), equal_var=False).pvalue
           for s, c in (("none", ("", [0.945, 0.946, 0.944, 0.947, 0.945])), ("selu", ("", [0.960, 0.961, 0.962, 0.960,
                                                                                             0.961])))}
    assert table.p_value["none"] == pytest.approx(raw["none"])
    assert table.p_holm.to_numpy() == pytest.approx(sig.holm(table.p_value.to_numpy()))  # Holm over 3, not 6 pairs
    assert table.outcome.to_dict() == {"layernorm": "equivalent", "none": "below", "selu": "above"}
    # the interval is adjusted to the family: Bonferroni level 0.05 / 3, wider than the 95% one
    a, b = np.array([0.960, 0.961, 0.962, 0.960, 0.961]), np.array(BN[1])
    va, vb = a.var(ddof=1) / 5, b.var(ddof=1) / 5
    df = (va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 4)
    half = 100 * stats.t.ppf(1 - 0.05 / 6, df) * math.sqrt(va + vb)
    gap = 100 * (a.mean() - b.mean())
    assert table.diff_points["selu"] == pytest.approx(gap)
    assert (table.ci_low["selu"], table.ci_high["selu"]) == pytest.approx((gap - half, gap + half))
    assert table.ci_low["selu"] > 0 and table.ci_high["none"] < 0
    sentence = sig.reference_sentences(table.reset_index())[0]
    assert sentence.startswith("mnist / mlp8, against `batchnorm` (0.9520, n = 5; Holm over 3 comparisons")
    assert "above: `selu` +0.88 [" in sentence and "equivalent within +-0.5 points: `layernorm` +0.00, TOST p" in sentence
    assert "tied" not in sentence


def test_a_noisy_strategy_is_never_called_equivalent_and_says_what_it_could_detect():
    rng = np.random.default_rng(3)
    for _ in range(20):  # planted: the same mean as the reference, a 5-point spread
        noisy = list(0.952 + rng.normal(0, 0.05, 5))
        row = _primary(BN, ("dyt", noisy)).loc["dyt"]
        assert row.outcome in ("not separable", "above", "below") and row.outcome != "equivalent"
        if row.outcome == "not separable":
            assert row.mdd_points > 2  # a spread of about 5 points hides gaps of several points at n = 5
    # the MDD is statsmodels' power solution times the pooled spread: a gap of exactly that size has 80% power
    from statsmodels.stats.power import TTestIndPower
    a, b = np.array([0.95, 0.93, 0.97, 0.94, 0.96]), np.array(BN[1])
    mdd = sig.detectable(a, b, 0.05)
    sd = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert TTestIndPower().power(effect_size=mdd / sd, nobs1=5, alpha=0.05, ratio=1.0) == pytest.approx(0.8, abs=1e-6)
    # a narrower margin than the seeds can resolve is not met either
    assert _primary(BN, ("layernorm", [0.952, 0.9525, 0.951, 0.953, 0.9515]), margin=0.01).loc[
        "layernorm", "outcome"] == "not separable"


def test_a_diverged_final_counts_and_can_change_the_verdict():
    good = [0.960, 0.961, 0.962, 0.960, 0.961]
    assert _primary(BN, ("selu", good)).loc["selu", "outcome"] == "above"
    planted = _primary(BN, ("selu", good[:4], ["diverged"])).loc["selu"]  # four good seeds and one diverged
    assert planted.n == 5 and planted["mean"] == pytest.approx((sum(good[:4]) + 0.1) / 5)
    assert planted.outcome != "above" and planted.failed == "1 diverged (scored 0.1)"
    errored = _primary(BN, ("selu", good[:4], ["error"])).loc["selu"]  # an error is not a result: incomplete
    assert errored.outcome == "incomplete" and errored.n == 4 and math.isnan(errored.p_holm)
    assert "incomplete: `selu` (1 error (not scored))" in sig.reference_sentences(
        _primary(BN, ("selu", good[:4], ["error"])).reset_index())[0]


def test_the_reference_can_be_named_and_matches_a_strategy_with_parameters():
    table = _primary(("maxnorm[c=1.0]", [0.95, 0.951, 0.952]), ("none", [0.94, 0.941, 0.942]), reference="maxnorm")
    assert table.reference.tolist() == ["maxnorm[c=1.0]"] and table.outcome["none"] == "below"
    assert _primary(("none", [0.94, 0.941]), ("selu", [0.95, 0.951])).empty  # no reference: no primary family


@pytest.mark.parametrize("table,message", [
    ({"reference": "batchnrom"}, "Did you mean 'batchnorm'"),
    ({"margin_points": 0}, r"margin_points = 0; expected a number of accuracy points in \(0, 100\)"),
    ({"margin": 0.5}, "takes reference and margin_points, not"),
    ("batchnorm", "must be a table"),
])
def test_a_bad_verdicts_table_is_refused_naming_the_problem(table, message):
    from normbench.errors import NormbenchError
    from normbench.suites import parse_verdicts

    with pytest.raises(NormbenchError, match=message):
        parse_verdicts(table, "suite file x.toml")
    assert parse_verdicts({"reference": "layernorm", "margin_points": 1}, "x") == {"reference": "layernorm",
                                                                                  "margin_points": 1.0}


def test_the_report_reads_the_verdict_settings_the_records_state():
    from normbench.errors import NormbenchError
    from normbench.report import verdict_settings

    def rec(v):
        return {"suite": {"name": "s", "verdicts": v} if v is not None else None}

    assert verdict_settings([rec(None)]) == ("batchnorm", 0.5)
    assert verdict_settings([rec({"reference": "layernorm", "margin_points": 1.0}), rec(None)]) == ("layernorm", 1.0)
    with pytest.raises(NormbenchError, match="different verdict settings"):
        verdict_settings([rec({"margin_points": 1.0}), rec({"margin_points": 0.25})])


def test_holm_step_levels_make_intervals_agree_with_the_adjusted_p():
    p = np.array([0.001, 0.02, 0.013, np.nan, 0.2, 0.04])
    levels = sig.holm_levels(p)  # m = 5: 0.001 <= .01, 0.013 <= .0125? no: Holm stops at the second step
    assert levels == pytest.approx([0.01, 0.0125, 0.0125, np.nan, 0.0125, 0.0125], nan_ok=True)
    adjusted = sig.holm(p)
    assert ((p <= levels) == (adjusted < 0.05))[~np.isnan(p)].all()
    rng = np.random.default_rng(5)
    for _ in range(200):  # consistency on random families, ties and all-rejected ones included
        p = np.round(rng.uniform(0, 0.08, rng.integers(1, 9)), 3)
        levels, adjusted = sig.holm_levels(p), sig.holm(p)
        assert ((p <= levels) == (adjusted <= 0.05)).all(), (p, levels, adjusted)


def test_a_flag_is_printed_where_the_strategy_is_ranked():
    table = _primary(BN, ("maxnorm", [0.945, 0.946, 0.944, 0.947, 0.945]))
    flag = "max-norm never bound (largest unit norm 0.54 c): the network trained as without the constraint"
    sentence = sig.reference_sentences(table.reset_index(), {("mnist", "mlp8", "maxnorm"): flag})[0]
    assert f"below: `maxnorm` -0.66 [" in sentence and sentence.endswith(f"[{flag}]")


def _write_folder(folder, cells):
    """Records on disk for ``normbench report``: {strategy: [test accuracy or "diverged", ...]} on mnist/mlp8."""
    from normbench import record, store
    from normbench.spec import RunSpec

    for strategy, values in cells.items():
        for seed, value in enumerate(values):
            rec = record.new(RunSpec("mlp8", strategy, "mnist", seed=seed))
            if value == "diverged":
                rec.update(status="diverged", diverged_epoch=1,
                           history=[{"epoch": 0, "train_loss": 2.3}, {"epoch": 1, "train_loss": float("nan")}])
                rec["history"][1]["train_loss"] = None
            else:
                rec.update(status="ok", history=[{"epoch": 0, "train_loss": 2.3}, {"epoch": 1, "train_loss": 0.2}],
                           test={"accuracy": value, "loss": 0.2})
            store.save_record(folder, rec)


def test_planted_noise_is_never_equivalent_and_a_planted_diverged_final_changes_the_verdict(tmp_path):
    """Through the CLI, on records on disk: the primary family's words follow the planted data."""
    import pandas as pd

    from normbench.cli import main

    bn = [0.951, 0.953, 0.950, 0.952, 0.954]
    cells = {"batchnorm": bn, "layernorm": [0.952, 0.9525, 0.951, 0.953, 0.9515],
             "dyt": [0.90, 0.99, 0.93, 0.97, 0.92],  # the same mean as BN, a 3-point spread
             "selu": [0.960, 0.961, 0.962, 0.960, 0.961]}
    _write_folder(tmp_path / "a", cells)
    assert main(["report", "--results", str(tmp_path / "a"), "--out", str(tmp_path / "ra")]) == 0
    a = pd.read_csv(tmp_path / "ra" / "tables" / "reference_tests.csv").set_index("strategy")
    assert a.outcome.to_dict() == {"dyt": "not separable", "layernorm": "equivalent", "selu": "above"}
    assert a.mdd_points["dyt"] > 3
    _write_folder(tmp_path / "b", {**cells, "selu": [0.960, 0.961, 0.962, 0.960, "diverged"]})
    assert main(["report", "--results", str(tmp_path / "b"), "--out", str(tmp_path / "rb")]) == 0
    b = pd.read_csv(tmp_path / "rb" / "tables" / "reference_tests.csv").set_index("strategy")
    assert b.outcome["selu"] != "above" and b.n["selu"] == 5 and "1 diverged (scored 0.1)" in b.failed["selu"]
    assert "`selu`" in (tmp_path / "rb" / "README.md").read_text().split("## Verdicts")[1].split("### All pairs")[0]
