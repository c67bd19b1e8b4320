"""Budget and convergence (issue 34, item 4): the suite's [convergence] table, the convergence rule, time to a
validation target, rank stability across budgets, and the report's section on real tiny runs."""

import json
import math

import pandas as pd
import pytest
from PIL import Image

from normbench.errors import ConfigError, NormbenchError, UnknownNameError
from normbench.grid import run_grid
from normbench.report import convergence, make_report
from normbench.spec import RunSpec
from normbench.suites import load_suite

from _tiny import quiet, tiny


def _frames(curves: dict[tuple[str, int], list[float]], model="m", dataset="mnist", status=None):
    """Hand-built runs and history frames: ``curves[(strategy, seed)]`` = validation accuracy at epochs 0, 1, ..."""
    runs, hist = [], []
    for (strategy, seed), values in curves.items():
        run_id = f"{strategy}-{seed}"
        runs.append({"run_id": run_id, "dataset": dataset, "model": model, "builder": model, "strategy": strategy,
                     "strategy_name": strategy, "seed": seed, "depth": 2, "test_accuracy": values[-1],
                     "status": (status or {}).get((strategy, seed), "ok")})
        hist += [{"run_id": run_id, "epoch": e, "val_accuracy": v, "epoch_s": None if e == 0 else 2.0}
                 for e, v in enumerate(values)]
    return pd.DataFrame(runs), pd.DataFrame(hist)


def test_a_plateaued_cell_has_converged_and_a_rising_one_has_not():
    runs, hist = _frames({("flat", 0): [0.1, 0.90, 0.950, 0.951], ("flat", 1): [0.1, 0.91, 0.952, 0.9525],
                          ("rising", 0): [0.1, 0.50, 0.70, 0.80], ("rising", 1): [0.1, 0.55, 0.72, 0.84]})
    table = convergence.converged(runs, convergence.curves(runs, hist), plateau_points=0.2).set_index("strategy")
    assert table.loc["flat", "converged"] is True or table.loc["flat", "converged"] == True  # noqa: E712
    assert table.loc["flat", "last_epoch_gain_points"] == pytest.approx((0.1 + 0.05) / 2)
    assert table.loc["rising", "converged"] == False  # noqa: E712
    assert table.loc["rising", "last_epoch_gain_points"] == pytest.approx((10 + 12) / 2)
    assert table.loc["rising", "final_val_accuracy"] == pytest.approx(0.82)
    assert (table.n == 2).all() and (table.epochs == 3).all()
    # the same cell under a looser rule: 11 points a last epoch is a plateau at 20
    assert convergence.converged(runs, convergence.curves(runs, hist), 20.0).set_index("strategy").converged.all()


def test_a_diverged_run_is_left_out_of_curves_and_counted():
    runs, hist = _frames({("s", 0): [0.1, 0.9, 0.95], ("s", 1): [0.1, 0.2, float("nan")]},
                         status={("s", 1): "diverged"})
    row = convergence.converged(runs, convergence.curves(runs, hist), 0.2).iloc[0]
    assert (row.n, row.not_finished) == (1, 1)
    assert row.last_epoch_gain_points == pytest.approx(5.0)


def test_kendall_tau_between_budgets_matches_a_hand_count():
    # epochs 0..4: at 25% (epoch 1) and 50% (epoch 2) the order is a > b > c; at the end a > c > b.
    # pairs (a,b) and (a,c) agree, (b,c) swaps: tau = (2 - 1) / 3
    runs, hist = _frames({("a", 0): [0.1, 0.80, 0.85, 0.90, 0.95],
                          ("b", 0): [0.1, 0.70, 0.75, 0.80, 0.85],
                          ("c", 0): [0.1, 0.60, 0.65, 0.85, 0.90]})
    ranks = convergence.rank_stability(convergence.cell_curves(convergence.curves(runs, hist)))
    row = ranks.iloc[0]
    assert (row.epoch_25, row.epoch_50, row.epoch_100) == (1, 2, 4)
    assert row.order_25 == row.order_50 == "a > b > c" and row.order_100 == "a > c > b"
    assert row.tau_25_vs_100 == pytest.approx(1 / 3)
    assert row.tau_50_vs_100 == pytest.approx(1 / 3)


def test_budget_epochs_are_the_nearest_recorded_epoch_at_least_one():
    assert convergence._budget_epoch([0, 1, 2, 3], 0.25, 3) == 1  # 0.75 -> 1, never 0
    assert convergence._budget_epoch([0, 1, 2, 3], 0.5, 3) == 2  # 1.5: a tie, the later one
    assert convergence._budget_epoch([0, 5, 10, 20], 0.5, 20) == 10
    assert convergence._budget_epoch([0, 1], 0.25, 1) == 1


def test_a_target_is_chosen_when_none_is_stated_and_reached_by_most_cells():
    runs, hist = _frames({("a", 0): [0.1, 0.9, 0.973], ("b", 0): [0.1, 0.8, 0.961], ("c", 0): [0.1, 0.5, 0.7]})
    table = convergence.converged(runs, convergence.curves(runs, hist), 0.2)
    (value, how), = convergence.targets(None, table).values()
    assert value == pytest.approx(0.96)  # the median final 0.961, rounded down
    assert how.startswith("chosen")
    ttt = convergence.time_to_target(runs, hist, {"mnist": (value, how)}).set_index("strategy")
    assert ttt.reached.to_dict() == {"a": 1, "b": 1, "c": 0}
    assert ttt.loc["a", "epochs_to_target"] == 2 and ttt.loc["a", "seconds_to_target"] == pytest.approx(4.0)
    assert math.isnan(ttt.loc["c", "epochs_to_target"])
    # a stated target wins, one number or one per dataset
    assert convergence.targets(0.5, table) == {"mnist": (0.5, "stated by the suite's [convergence] target")}
    assert convergence.targets({"mnist": 0.9}, table)["mnist"][0] == 0.9
    assert convergence.choose_target([0.979, 0.98, 0.5]) == pytest.approx(0.97)


def test_the_reference_target_is_checked_on_test_accuracy():
    runs, _ = _frames({("batchnorm", 0): [0.1, 0.985], ("batchnorm", 1): [0.1, 0.979]}, model="mlp8")
    met = convergence.reference_check(runs, {"strategy": "batchnorm", "model": "mlp8", "test_accuracy": 0.98})
    assert "**met**" in met and "0.9820 over 2 finished seeds" in met
    assert "**not met**" in convergence.reference_check(runs, {"strategy": "batchnorm", "model": "mlp8",
                                                               "test_accuracy": 0.99})
    assert "not checked" in convergence.reference_check(runs, {"strategy": "selu", "model": "mlp8",
                                                               "test_accuracy": 0.9})


def test_settings_default_read_back_and_refuse_disagreement():
    assert convergence.settings([{"suite": None}]) == {"metric": "val_accuracy", "target": None, "plateau_points": 0.2,
                                                       "reference_target": None, "stated": False}
    stated = {"suite": {"name": "s", "convergence": {"target": 0.9, "plateau_points": 1.0}}}
    got = convergence.settings([stated, stated])
    assert (got["target"], got["plateau_points"], got["stated"]) == (0.9, 1.0, True)
    other = {"suite": {"name": "t", "convergence": {"target": 0.8}}}
    with pytest.raises(NormbenchError, match="different \\[convergence\\] settings"):
        convergence.settings([stated, other])


GRID = """
[[grid]]
datasets = ["mnist"]
models = ["mlp8"]
strategies = ["none"]
seeds = [0]
"""


def _suite(tmp_path, convergence_table: str):
    path = tmp_path / "s.toml"
    path.write_text('description = "x"\n' + convergence_table + GRID)  # [convergence] before the grid tables
    return load_suite(path)


def test_a_stated_convergence_table_goes_into_every_records_suite_provenance(tmp_path):
    suite = _suite(tmp_path, '[convergence]\nmetric = "val_accuracy"\ntarget = 0.97\nplateau_points = 0.2\n'
                             'reference_target = {strategy = "batchnorm", model = "mlp8", test_accuracy = 0.98}\n')
    assert suite.provenance()["convergence"] == {
        "metric": "val_accuracy", "target": 0.97, "plateau_points": 0.2,
        "reference_target": {"strategy": "batchnorm", "model": "mlp8", "test_accuracy": 0.98}}
    assert "convergence" not in _suite(tmp_path, "").provenance()
    assert _suite(tmp_path, "[convergence]\ntarget = {mnist = 0.97}\n").convergence == {"target": {"mnist": 0.97}}


@pytest.mark.parametrize("table, message", [
    ("convergence = 3", r"\[convergence\] must be a table"),
    ("[convergence]\nepochs = 3", r"takes metric, target, plateau_points, reference_target, not \['epochs'\]"),
    ('[convergence]\nmetric = "test_accuracy"', r"metric = 'test_accuracy'.*never test.*val_accuracy"),
    ("[convergence]\ntarget = 97", r"target = 97; expected a validation accuracy in \(0, 1\]"),
    ("[convergence]\ntarget = {mnist = true}", r"target.mnist = True"),
    ("[convergence]\nplateau_points = -1", r"plateau_points = -1; expected a number of accuracy points"),
    ('[convergence]\nreference_target = {strategy = "batchnorm"}', r"reference_target lacks \['model', 'test_accuracy'\]"),
    ('[convergence]\nreference_target = {strategy = "batchnorm", model = "mlp8", test_accuracy = 98}',
     r"reference_target.test_accuracy = 98; expected a test accuracy in \(0, 1\]"),
])
def test_convergence_table_errors_name_the_key_and_the_fix(tmp_path, table, message):
    with pytest.raises(ConfigError, match=message) as e:
        _suite(tmp_path, table + "\n")
    assert "s.toml" in str(e.value)


def test_an_unknown_name_in_the_reference_target_names_the_key(tmp_path):
    with pytest.raises(UnknownNameError, match=r"reference_target.model: unknown model 'mlp9'"):
        _suite(tmp_path, '[convergence]\nreference_target = {strategy = "batchnorm", model = "mlp9", '
                         'test_accuracy = 0.9}\n')


CONVERGENCE = {"target": 0.5, "plateau_points": 0.2,
               "reference_target": {"strategy": "selu", "model": "mlp", "test_accuracy": 0.3}}


@pytest.fixture(scope="module")
def curve_report(tmp_path_factory, data_dir):
    """A report of real tiny runs (3 epochs, 2 strategies, 2 seeds) of a suite that states [convergence]."""
    records = tmp_path_factory.mktemp("conv-records")
    specs = [RunSpec("mlp", strategy, "mnist", seed=seed, model_params={"depth": 2, "width": 16},
                     **tiny(epochs=3, probe_size=16)) for strategy in ("none", "selu") for seed in (0, 1)]
    run_grid(specs, records, data_dir=data_dir, log=quiet,
             suite={"name": "conv", "definition_hash": "x", "convergence": CONVERGENCE})
    out = tmp_path_factory.mktemp("conv-report")
    make_report(records, out, log=quiet)
    return records, out


def test_the_report_has_the_section_tables_and_a_readable_figure(curve_report):
    records, out = curve_report
    md = (out / "README.md").read_text()
    assert md.index("## Verdicts") < md.index("## Budget and convergence") < md.index("## Time to a validation")
    part = md.split("## Budget and convergence")[1].split("\n## ")[0]
    assert "the suite's `[convergence]` table" in part
    assert "mnist: target validation accuracy 0.5 (stated by the suite's [convergence] target)" in part
    assert "Reference target (the suite's): `selu` on `mlp`" in part
    assert "### Rank stability across budgets" in part and "Kendall" in part
    png = out / "figures" / "curves_mnist_mlp_depth_2_width_16.png"
    assert f"![mnist / mlp[depth=2,width=16]: learning curves](figures/{png.name})" in part
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 500 and im.size[1] > 300

    table = pd.read_csv(out / "tables" / "convergence.csv")
    assert sorted(table.strategy) == ["none", "selu"] and (table.n == 2).all() and (table.epochs == 3).all()
    recs = [json.loads(p.read_text()) for p in records.glob("*.json")]
    for r in table.itertuples():  # the gain is each seed's last epoch minus its previous one, mean over seeds
        gains = [100 * (x["history"][-1]["val_accuracy"] - x["history"][-2]["val_accuracy"]) for x in recs
                 if x["spec"]["strategy"] == r.strategy]
        assert r.last_epoch_gain_points == pytest.approx(sum(gains) / len(gains))
        assert r.converged == (r.last_epoch_gain_points < 0.2)
    ranks = pd.read_csv(out / "tables" / "rank_stability.csv")
    assert (ranks.epoch_25.iloc[0], ranks.epoch_50.iloc[0], ranks.epoch_100.iloc[0]) == (1, 2, 3)
    ttt = pd.read_csv(out / "tables" / "time_to_target.csv")
    assert (ttt.target == 0.5).all() and (ttt.runs == 2).all()


def test_only_the_finals_reach_the_section():
    trial = {"suite": {"name": "s", "phase": "trial"}}
    with pytest.raises(NormbenchError, match="finals only"):
        convergence.section([trial], pd.DataFrame(), pd.DataFrame(), None, [], None)


def test_a_target_stated_for_one_dataset_leaves_the_others_chosen():
    mnist, mnist_hist = _frames({("a", 0): [0.1, 0.99]})
    cifar, cifar_hist = _frames({("a", 1): [0.1, 0.456], ("b", 1): [0.1, 0.30]}, dataset="cifar10")
    table = convergence.converged(pd.concat([mnist, cifar]), convergence.curves(
        pd.concat([mnist, cifar]), pd.concat([mnist_hist, cifar_hist])), 0.2)
    goals = convergence.targets({"mnist": 0.97}, table)
    assert goals["mnist"][0] == 0.97 and goals["cifar10"][0] == pytest.approx(0.37)  # median 0.378 rounded down
    assert goals["cifar10"][1].startswith("chosen")


def test_the_gpu_tuning_study_states_the_issues_reference_target():
    from normbench.suites import get_suite

    stated = get_suite("tuned-gpu").provenance()["convergence"]
    assert stated["reference_target"] == {"strategy": "batchnorm", "model": "mlp8", "dataset": "mnist",
                                          "test_accuracy": 0.98}
