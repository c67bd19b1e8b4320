"""Records are trusted for the protocol they were made under (issue 34, item 6), and a folder grown by several
`normbench run` commands reports and checks as one (item 7)."""

import csv
import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from normbench import reader, record, store
from normbench.errors import ConfigError
from normbench.grid import run_grid
from normbench.spec import RunSpec

from _tiny import quiet

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "results" / "cifar-resnet-cpu" / "records"  # the published schema-2 pack
ONE_EPOCH = [{"epoch": 0, "train_loss": 2.3}, {"epoch": 1, "train_loss": 1.9}]
NONE = RunSpec("mlp8", "none", "mnist", epochs=1)
SELU = RunSpec("mlp8", "selu", "mnist", epochs=1)


def cli(*args, env=None, timeout=600):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "normbench.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


def saved(folder, spec, schema=record.SCHEMA_VERSION, **fields):
    rec = {**record.new(spec), "status": "ok", "history": ONE_EPOCH, "schema_version": schema, **fields}
    return store.save_record(folder, rec)


# -- item 6: resume trusts records made under the current protocol only --------------------------------------------

def test_an_older_schema_record_is_not_complete_and_accept_can_reject_a_current_one(tmp_path):
    saved(tmp_path, NONE, schema=2)
    saved(tmp_path, SELU, suite={"name": None, "definition_hash": "abc", "search": {"lr": [0.1]}})
    assert reader.completed_ids(tmp_path) == {SELU.run_id}
    seen = []

    def same_search(rec):
        seen.append(rec["run_id"])
        return record.suite(rec).get("search") == {"lr": [0.1, 0.01]}

    assert reader.completed_ids(tmp_path, accept=same_search) == set()
    assert SELU.run_id in seen  # the predicate was asked, and its answer counted
    assert reader.completed_ids(tmp_path, accept=lambda rec: True) == {SELU.run_id}
    assert [r["run_id"] for r in reader.superseded(tmp_path)] == [NONE.run_id]


def test_a_current_copy_of_a_run_outranks_its_older_copy(tmp_path):
    saved(tmp_path, NONE, schema=2)
    newer = {**record.new(NONE), "status": "ok", "history": ONE_EPOCH}
    (tmp_path / "copy.json").write_text(__import__("json").dumps(newer))
    assert reader.superseded(tmp_path) == [] and reader.completed_ids(tmp_path) == {NONE.run_id}


def test_run_grid_refuses_a_folder_of_older_records_before_training_even_with_force(tmp_path):
    path = saved(tmp_path, NONE, schema=2)
    before = path.read_bytes()
    for force in (False, True):
        with pytest.raises(ConfigError, match=r"1 record\(s\) of record schema 2 \(1 of them of runs in this grid"):
            run_grid([NONE, SELU], tmp_path, force=force, log=quiet)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_dry_run_on_the_published_schema_2_pack_refuses_instead_of_0_to_run(tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(PUBLISHED, folder)
    done = cli("run", "--suite", "cifar-resnet-cpu", "--dry-run", "--results", str(folder))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "0 to run" not in done.stdout and "already complete" not in done.stdout
    assert done.stdout.count("[schema-2 record, superseded: refused]") == 4, done.stdout
    for phrase in ("4 record(s) of record schema 2", "4 of them of runs in this grid", "new --results folder",
                   f"normbench report --results {folder}", "marks them superseded", "--force does not"):
        assert phrase in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    run = cli("run", "--suite", "cifar-resnet-cpu", "--force", "--results", str(folder))
    assert run.returncode == 2 and "nothing was trained" in run.stderr, run.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in PUBLISHED.iterdir())
    assert all(filecmp.cmp(folder / p.name, p, shallow=False) for p in PUBLISHED.iterdir())


def test_the_published_schema_2_pack_still_reports_and_is_marked_superseded(tmp_path):
    done = cli("report", "--results", str(PUBLISHED), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "out" / "README.md").read_text()
    assert "Superseded for comparing strategies" in text and "schema 2" in text
    with open(tmp_path / "out" / "tables" / "accuracy.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


# -- item 7: a folder grown by several commands reports and checks as one; only a true conflict is refused ---------

TINY_RUN = ("run", "--models", "mlp", "--strategies", "none", "--datasets", "mnist", "--epochs", "1", "--limit", "300")


def _accuracy_rows(out: Path) -> list[dict]:
    with open(out / "tables" / "accuracy.csv") as f:
        return list(csv.DictReader(f))


def test_a_folder_grown_by_a_second_seed_reports_and_checks_as_one_and_a_changed_setting_is_refused(tmp_path,
                                                                                                  data_dir):
    env = {"NORMBENCH_DATA_DIR": data_dir} if data_dir else {}
    runs = tmp_path / "runs"
    for seed in ("0", "1"):
        done = cli(*TINY_RUN, "--seeds", seed, "--results", str(runs), env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    hashes = {record.suite(r)["definition_hash"] for r in reader.load_records(runs)}
    assert len(hashes) == 2  # two benchmark definitions, as before: what `report` used to refuse

    done = cli("report", "--results", str(runs), "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = _accuracy_rows(tmp_path / "report")
    assert (row["dataset"], row["strategy"], row["n"], row["runs"]) == ("mnist", "none", "2", "2"), row

    baseline = tmp_path / "baseline"
    shutil.copytree(runs, baseline)
    (baseline / "rules.txt").write_text("final_train_loss: +50%\n")
    done = cli("check", "--baseline", str(baseline), "--current", str(runs))
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    assert "0 worse" in done.stdout and "(2 runs, 1 rules)" in done.stdout, done.stdout

    # a third command into the same cell with another number of epochs: a true conflict, named with its values
    done = cli(*TINY_RUN[:-4], "--epochs", "2", "--limit", "300", "--seeds", "2", "--results", str(runs), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    for refused in (cli("report", "--results", str(runs), "--out", str(tmp_path / "report2")),
                    cli("check", "--baseline", str(baseline), "--current", str(runs))):
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
        assert "mnist/mlp/none: epochs 1 (2 runs) vs 2 (1 run)" in refused.stderr, refused.stderr
        assert "own folder" in refused.stderr
    assert not (tmp_path / "report2" / "README.md").exists()


def _made(spec, definition, schema=record.SCHEMA_VERSION, **suite):
    return {**record.new(spec), "status": "ok", "history": ONE_EPOCH, "schema_version": schema,
            "suite": {"name": None, "definition_hash": definition, **suite}}


def test_only_settings_that_no_one_definition_varies_in_a_cell_conflict():
    from normbench.check import cell_conflicts

    bs = [RunSpec("mlp8", "none", "mnist", epochs=1, batch_size=b, seed=s) for b in (32, 64) for s in (0, 1)]
    sweep = [_made(s, "sweep-seed0" if s.seed == 0 else "sweep-seed1") for s in bs]
    assert cell_conflicts(sweep) == []  # a batch-size sweep, grown by a seed: the report keys runs by batch size
    other_cells = [_made(NONE, "a"), _made(SELU.with_(learning_rate=0.1), "b")]
    assert cell_conflicts(other_cells) == []  # cells are compared within themselves only
    lr = [_made(NONE, "a"), _made(NONE.with_(seed=1, learning_rate=0.1), "b"), _made(NONE.with_(seed=2), "c")]
    assert cell_conflicts(lr) == ["mnist/mlp8/none: learning_rate 0.01 (2 runs) vs 0.1 (1 run)"]
    schema = [_made(NONE, "a", schema=2), _made(NONE.with_(seed=1), "a")]
    assert cell_conflicts(schema) == ["mnist/mlp8/none: record schema 2 (1 run) vs 3 (1 run)"]
    params = [_made(RunSpec("mlp", "none", "mnist", model_params={"depth": 3, "width": 32}), "a"),
              _made(RunSpec("mlp", "none", "mnist", model_params={"depth": 3, "width": 32}, seed=1, epochs=2), "b")]
    assert cell_conflicts(params) == ['mnist/mlp[depth=3,width=32]/none: epochs 1 (1 run) vs 2 (1 run)']


def test_check_compares_a_tuning_studys_finals_only_and_says_so(tmp_path):
    folder = tmp_path / "study"
    for lr in (0.1, 0.01):
        for spec in (NONE, SELU):
            store.save_record(folder, _made(spec.with_(learning_rate=lr, seed=100), "trials", phase="trial"))
    for seed in (0, 1):
        for spec in (NONE, SELU):
            store.save_record(folder, _made(spec.with_(learning_rate=0.1, seed=seed), "finals", phase="final"))
    (folder / "rules.txt").write_text("final_train_loss: +10%\n")
    done = cli("check", "--baseline", str(folder), "--current", str(folder))
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    assert "(4 runs, 1 rules)" in done.stdout and "seed100" not in done.stdout, done.stdout
    assert "4 search trial(s) of the current folder not compared" in done.stdout, done.stdout
