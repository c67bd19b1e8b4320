"""The reporter on records made by the real runner on tiny real data."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from normbench import reader, store
from normbench.report.frames import runs_frame
from normbench.errors import NormbenchError
from normbench.report import make_report, plots
from normbench.grid import run_grid
from normbench.spec import RunSpec

from _tiny import quiet, tiny

TINY = tiny(probe_size=32)


@pytest.fixture(scope="session")
def records_dir(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("records")
    specs = [
        RunSpec("mlp", strategy, "mnist", seed=seed, model_params={"depth": depth, "width": 16}, **TINY)
        for depth in (2, 4) for strategy in ("none", "selu") for seed in (0, 1)
    ]
    specs.append(RunSpec("mlp", "none", "mnist", learning_rate=1e6, model_params={"depth": 3, "width": 32}, **TINY))
    # an error: Keras knows no activation "nope3" (the pre-flight checks only that it is a string)
    specs.append(RunSpec("mlp", "batchnorm", "mnist", model_params={"depth": 2, "width": 8, "activation": "nope3"}, **TINY))
    run_grid(specs, out, data_dir=data_dir, suite={"name": "test", "definition_hash": "x"}, log=quiet)
    return out


@pytest.fixture(scope="session")
def report(records_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    captured = []
    original = plots._save

    def spy(fig, path):
        captured.append((path.name, len([a for a in fig.axes if a.get_visible()])))
        return original(fig, path)

    mp = pytest.MonkeyPatch()
    mp.setattr(plots, "_save", spy)
    make_report(records_dir, out, log=quiet)
    mp.undo()
    return out, dict(captured)


def test_every_file_is_written_and_plots_are_valid_pngs(report):
    out, panels = report
    assert (out / "README.md").is_file()
    for name in ("accuracy.csv", "time_to_threshold.csv", "layer_stats.csv", "drift.csv", "pairwise.csv", "verdicts.csv",
                 "ranks.csv", "accuracy_mnist.tex", "drift.tex"):
        assert (out / "tables" / name).stat().st_size > 0, name
    assert not (out / "tables" / "wilcoxon.csv").exists()
    pngs = sorted((out / "figures").glob("*.png"))
    assert {p.name for p in pngs} == set(panels)
    for p in pngs:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200
    assert panels["training_loss.png"] == 1  # one panel per dataset
    assert panels["accuracy_vs_depth.png"] == 1
    assert panels["signal_mnist_mlp_depth_2_width_16.png"] == 4  # mean/variance x init/end
    # one panel per strategy with statistics for that model; the run that errored has none
    assert panels["preact_mnist_mlp_depth_2_width_16.png"] == 2
    assert "signal_mnist_mlp_depth_2_width_3.png" not in panels


def test_accuracy_table_equals_direct_computation_from_records(records_dir, report):
    out, _ = report
    table = pd.read_csv(out / "tables" / "accuracy.csv")
    recs = [json.loads(p.read_text()) for p in records_dir.glob("*.json")]
    for depth in (2, 4):
        for strategy in ("none", "selu"):
            accs = [r["test"]["accuracy"] for r in recs if r["spec"]["strategy"] == strategy
                    and r["spec"]["model_params"] == {"depth": depth, "width": 16} and r["status"] == "ok"]
            row = table[(table.model == f"mlp[depth={depth},width=16]") & (table.strategy == strategy)].iloc[0]
            assert row.n == len(accs) == 2
            assert row["mean"] == pytest.approx(np.mean(accs))
            assert row["std"] == pytest.approx(np.std(accs, ddof=1))
            assert row["ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * np.std(accs, ddof=1) / np.sqrt(2))
    md = (out / "README.md").read_text()
    assert "| suite | test (definition x) |" in md
    assert "data source | mnist (" in md


def test_failed_runs_are_shown_not_dropped(report):
    out, _ = report
    table = pd.read_csv(out / "tables" / "accuracy.csv")
    diverged = table[table.model == "mlp[depth=3,width=32]"].iloc[0]
    assert diverged.n == 0 and diverged.failed == "1 diverged"
    md = (out / "README.md").read_text()
    assert "| 1 diverged |" in md.replace("  ", " ")
    section = md.split("## Runs that did not finish")[1]
    assert "diverged" in section and "error" in section and "nope3" in section


def test_verdicts_pairwise_tests_and_ranks_come_from_per_seed_values(records_dir, report):
    out, _ = report
    runs = runs_frame(reader.load_records(records_dir))
    pairs = pd.read_csv(out / "tables" / "pairwise.csv")
    verdicts = pd.read_csv(out / "tables" / "verdicts.csv", keep_default_na=False)
    md = (out / "README.md").read_text()
    listed = md.split("## Verdicts")[1].split("\n## ")[0]
    assert sorted(verdicts.model) == sorted(runs.model.unique())  # one verdict per (dataset, model)
    for v in verdicts.itertuples():
        assert f"- {v.sentence}" in listed
        assert v.sentence.startswith(f"mnist / {v.model}: ")
    for depth in (2, 4):
        model = f"mlp[depth={depth},width=16]"
        acc = {s: runs[(runs.model == model) & (runs.strategy == s)].test_accuracy.to_numpy(float) for s in ("none", "selu")}
        pair = pairs[pairs.model == model].iloc[0]
        assert (pair.strategy_a, pair.strategy_b, pair.n_a, pair.n_b) == ("none", "selu", 2, 2)
        assert pair.p_value == pytest.approx(stats.ttest_ind(acc["none"], acc["selu"], equal_var=False).pvalue)
        assert pair.p_holm == pytest.approx(pair.p_value)  # a family of one pair
        v = verdicts[verdicts.model == model].iloc[0]
        assert v.n == "none=2, selu=2" and v.verdict == ("best" if pair.p_value < 0.05 else "no single best" if pair.p_value >= 0.05
                                                   else "undecided")
        top = max(acc, key=lambda s: acc[s].mean())
        cell = f"{acc[top].mean():.4f} ± "
        assert (f"**{cell}" in md) == (v.verdict == "best") and cell in md
    diverged = verdicts[verdicts.model == "mlp[depth=3,width=32]"].iloc[0]
    assert diverged.sentence == ("mnist / mlp[depth=3,width=32]: nothing to compare, only `none` has scored runs; "
                                 "runs that did not finish: `none` 1 diverged (scored 0.1)")
    ranks = pd.read_csv(out / "tables" / "ranks.csv")
    assert ranks.configurations.tolist() == [2, 2]  # the two models where both finished, seeds averaged first
    assert "No Friedman test: it needs at least 3 strategies, these records have 2." in md
    assert "95% t confidence interval" in md


def test_empty_and_mixed_folders_give_clear_errors(tmp_path, records_dir):
    with pytest.raises(NormbenchError, match="holds no records"):
        make_report(tmp_path, tmp_path / "out", log=quiet)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, p in enumerate(sorted(records_dir.glob("*.json"))[:2]):
        rec = json.loads(p.read_text())
        rec["suite"] = {"name": f"suite{i}", "definition_hash": str(i)}  # two suites: one folder grown (issue 34)
        rec["environment"]["backend"] = ["tensorflow", "jax"][i]  # two backends: never reported together
        (mixed / p.name).write_text(json.dumps(rec))
    with pytest.raises(NormbenchError, match="mixes records of several Keras backends"):
        make_report(mixed, tmp_path / "out", log=quiet)
    (mixed / "broken.json").write_text("{not json")
    with pytest.raises(NormbenchError, match="unreadable record"):
        store.load_records(mixed)


def test_a_single_strategy_folder_reports_and_says_why_there_is_no_test(tmp_path, data_dir):
    spec = RunSpec("mlp", "none", "mnist", model_params={"depth": 2, "width": 16}, **TINY)
    run_grid([spec], tmp_path / "runs", data_dir=data_dir, log=quiet)
    make_report(tmp_path / "runs", tmp_path / "out", log=quiet)
    md = (tmp_path / "out" / "README.md").read_text()
    assert "Rank test: need two strategies with finished runs; these records have 1 (none)" in md
    assert "mnist / mlp[depth=2,width=16]: nothing to compare, only `none` has scored runs" in md
    assert (tmp_path / "out" / "tables" / "accuracy.csv").exists()


def test_a_folder_of_errors_reports_what_it_can_and_says_what_it_cannot(tmp_path, data_dir):
    specs = [RunSpec("mlp", s, "mnist", model_params={"depth": 2, "width": 8, "activation": "nope3"}, **TINY)
             for s in ("none", "batchnorm")]
    counts = run_grid(specs, tmp_path / "runs", data_dir=data_dir, log=quiet)
    assert counts["error"] == 2
    make_report(tmp_path / "runs", tmp_path / "out", log=quiet)
    md = (tmp_path / "out" / "README.md").read_text()
    assert "## Runs that did not finish" in md and "cannot be made from these records" in md
    assert "need two strategies" in md


def test_a_failing_report_leaves_the_previous_one_untouched(records_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("the previous report")
    (out / "papers.md").write_text("another report's file")

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("normbench.report.markdown_table", broken)  # fails outside any optional section
    with pytest.raises(OSError):
        make_report(records_dir, out, log=quiet)
    assert (out / "README.md").read_text() == "the previous report"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "papers.md"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.report-")]


def test_a_pack_round_trips_the_records_and_rebuilds_the_same_tables(records_dir, report, tmp_path):
    from normbench import pack

    sizes = pack.pack(store.load_records(records_dir), tmp_path / "pack")
    assert set(sizes) == {"runs.csv.gz", "history.csv.gz", "stats.csv.gz"}
    originals = {r["run_id"]: r for r in store.load_records(records_dir)}
    packed = {r["run_id"]: r for r in store.load_records(tmp_path / "pack")}  # a folder holding a pack reads as records
    assert packed.keys() == originals.keys()
    for run_id, a in originals.items():
        b = packed[run_id]
        assert b["spec"] == a["spec"] and b["status"] == a["status"] and b["test"] == a["test"]
        assert [h["epoch"] for h in b["history"]] == [h["epoch"] for h in a["history"]]
        assert [r[:4] for r in b["stats"]["rows"]] == [list(r[:4]) for r in a["stats"]["rows"]]
        va, vb = [r[4] for r in a["stats"]["rows"]], [r[4] for r in b["stats"]["rows"]]
        assert [x is None for x in va] == [x is None for x in vb]
        assert [x for x in vb if x is not None] == pytest.approx([x for x in va if x is not None], rel=1e-8, abs=1e-12)
    make_report(tmp_path / "pack", tmp_path / "from_pack", log=quiet)
    out, _ = report
    for table in ("accuracy.csv", "drift.csv", "ranks.csv"):
        a = pd.read_csv(out / "tables" / table)
        b = pd.read_csv(tmp_path / "from_pack" / "tables" / table)
        pd.testing.assert_frame_equal(a, b, rtol=1e-7)


def test_a_corrupt_pack_is_refused_with_the_fix(tmp_path):
    from normbench import pack

    (tmp_path / pack.RUNS).write_bytes(b"not gzip")
    with pytest.raises(NormbenchError, match="normbench pack"):
        store.load_records(tmp_path)


@pytest.mark.slow
def test_a_batch_size_sweep_is_tabled_by_batch_size_and_never_pooled(tmp_path, data_dir):
    specs = [RunSpec("mlp", strategy, "mnist", model_params={"depth": 2, "width": 16},
                     **{**TINY, "batch_size": bs, "learning_rate": 0.01 * bs / 32})
             for strategy in ("none", "batchnorm") for bs in (8, 32)]
    run_grid(specs, tmp_path / "runs", data_dir=data_dir, suite={"name": "sweep", "definition_hash": "y"}, log=quiet)
    runs = runs_frame(reader.load_records(tmp_path / "runs"))
    assert sorted(runs.strategy) == ["batchnorm[batch_size=32,learning_rate=0.01]", "batchnorm[batch_size=8,learning_rate=0.0025]",
                                     "none[batch_size=32,learning_rate=0.01]", "none[batch_size=8,learning_rate=0.0025]"]
    make_report(tmp_path / "runs", tmp_path / "report", log=quiet)
    table = pd.read_csv(tmp_path / "report" / "tables" / "batch_size.csv", index_col=0)
    assert list(table.columns) == ["batch 8", "batch 32"]
    for (row, column), value in table.stack().items():
        strategy, bs = row.split(" / ")[-1], int(column.split()[1])
        acc = runs[(runs.strategy_name == strategy) & (runs.batch_size == bs)].test_accuracy.item()
        assert value == pytest.approx(100 * (1 - acc))
    text = (tmp_path / "report" / "README.md").read_text()
    assert "need batch statistics: batchnorm." in text and "error_vs_batch_size.png" in text
    assert "| training | sgd lr 0.0025 momentum 0.9, batch 8, sgd lr 0.01 momentum 0.9, batch 32 |" in text
    assert (tmp_path / "report" / "figures" / "error_vs_batch_size.png").stat().st_size > 0


def _two_commits(records_dir, folder):
    """The fixture's records, copied to ``folder``: the first 6 made at commit a... with uncommitted changes, the rest
    at commit b... without; returns the records as written."""
    folder.mkdir()
    written = []
    for i, p in enumerate(sorted(records_dir.glob("*.json"))):
        rec = json.loads(p.read_text())
        rec["environment"].update(git_commit=("a" if i < 6 else "b") * 40, git_dirty=i < 6)
        (folder / p.name).write_text(json.dumps(rec))
        written.append(rec)
    return written


def test_the_header_counts_every_records_commit_and_its_uncommitted_changes(records_dir, tmp_path):
    written = _two_commits(records_dir, tmp_path / "runs")
    assert len(written) == 10
    make_report(tmp_path / "runs", tmp_path / "out", log=quiet)
    md = (tmp_path / "out" / "README.md").read_text()
    assert "| commit | aaaaaaaaaa (6 runs, 6 with uncommitted changes), bbbbbbbbbb (4 runs) |" in md
    sharing = next(line for line in md.splitlines() if line.startswith("| runs sharing the device |"))
    assert sharing.startswith("| runs sharing the device | 1 (") and "other work on the machine is not recorded" in sharing


@pytest.mark.slow
def test_tex_captions_state_the_provenance_of_their_own_tables_runs(tmp_path, data_dir):
    specs = [RunSpec("mlp", "none", "mnist", model_params={"depth": 2, "width": 16}, **TINY),
             RunSpec("mlp", "none", "mnist_binary", model_params={"depth": 2, "width": 16}, **{**TINY, "epochs": 2})]
    run_grid(specs, tmp_path / "runs", data_dir=data_dir, suite={"name": "mixed", "definition_hash": "z"}, log=quiet)
    make_report(tmp_path / "runs", tmp_path / "out", log=quiet)
    env = store.load_records(tmp_path / "runs")[0]["environment"]
    for dataset, epochs in (("mnist", 1), ("mnist_binary", 2)):
        for table in ("accuracy", "time_to_threshold"):
            caption = next(line for line in (tmp_path / "out" / "tables" / f"{table}_{dataset}.tex").read_text()
                           .splitlines() if line.startswith(r"\caption{"))
            assert f"; epochs: {epochs}; " in caption, (table, dataset, caption)
            assert "1 run;" in caption and f"backend: {env['backend']} {env['backend_version']};" in caption
            assert f"commit: {env['git_commit'][:10]} (1 run" in caption and "device: CPU" in caption
    accuracy = (tmp_path / "out" / "tables" / "accuracy_mnist.tex").read_text()
    assert r"half-width of the 95\% t confidence interval of the mean" in accuracy
    assert r"$\pm$ is not a standard deviation" in accuracy


def test_provenance_json_beside_the_csv_tables_counts_every_record(records_dir, report):
    from normbench.report import origin

    out, _ = report
    path = out / "tables" / "provenance.json"
    assert sorted(p.name for p in path.parent.glob("*.csv"))  # beside the CSV tables
    recs = [json.loads(p.read_text()) for p in sorted(records_dir.glob("*.json"))]
    data = json.loads(path.read_text())
    assert data["runs"] == len(recs) == 10
    commit = recs[0]["environment"]["git_commit"]
    assert data["commits"] == {commit: {"runs": 10, "uncommitted_changes": sum(r["environment"]["git_dirty"] for r in recs),
                                        "changes_not_recorded": 0}}
    assert data["seeds"] == {str(s): sum(r["spec"]["seed"] == s for r in recs) for s in {r["spec"]["seed"] for r in recs}}
    assert data["epochs"] == {"1": 10}
    assert data["devices"] == {recs[0]["environment"]["device"]: 10}
    assert data["libraries"]["keras"] == {recs[0]["environment"]["keras"]: 10}
    assert data["training_samples"] == {"100": 10}
    assert data["statuses"] == {"diverged": 1, "error": 1, "ok": 8}
    assert data["other_work_on_the_machine"] == "not recorded"
    # plain JSON with sorted keys, the same bytes whatever order the records were read in (by the one reader)
    assert path.read_text() == origin.to_json(origin.gather(reader.load_records(records_dir)[::-1]))
    assert path.read_text() == json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
