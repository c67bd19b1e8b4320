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
