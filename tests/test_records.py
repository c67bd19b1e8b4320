"""Reading a results folder: every reader (report, check, pack) and resume see the same records.

- A record whose run id is the hash of its spec but whose body has the wrong layout (a section of the
  wrong type, a history row without an epoch, a stats row without the schema's columns) is refused by
  the readers with a message naming the file, and resume does not count it as complete (it is trained
  again, and the warning says so).
- A folder holding a pack and JSON records reads as both, de-duplicated by run id; resume counts the
  pack's complete runs too.
- A pack's rows get the genuineness check JSON records get (run id == the hash of the spec).
"""

import copy
import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from normbench import pack, reader, record, store
from normbench.cli import main
from normbench.errors import NormbenchError
from normbench.spec import RunSpec

NONE = RunSpec("mlp8", "none", "mnist", epochs=1, limit=200)
SELU = RunSpec("mlp8", "selu", "mnist", epochs=1, limit=200)
BN = RunSpec("mlp8", "batchnorm", "mnist", epochs=1, limit=200)


def complete(spec: RunSpec, accuracy: float = 0.5, finished_at: str = "2026-01-01T00:00:00+00:00") -> dict:
    """A finished record of ``spec``, made the way the runner makes one (record.new, then its sections filled)."""
    rec = record.new(spec)
    rec.update(status="ok", param_count=100, layers=[{"index": 0, "kind": "Dense", "units": 8, "activation": "relu"}],
               data={"source": "test data"},
               history=[{"epoch": 0, "train_loss": 2.3, "val_loss": 2.3, "val_accuracy": 0.1},
                        {"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "val_accuracy": accuracy, "epoch_s": 1.0,
                         "samples_per_s": 100.0}],
               test={"loss": 1.0, "accuracy": accuracy},
               stats={"columns": record.STATS_COLUMNS,
                      "rows": [[0, 0, "act", "mean", 0.1], [1, 0, "act", "mean", 0.2]]},
               environment={"backend": "tensorflow", "device": "cpu", "git_commit": "abc"},
               suite={"name": "t", "definition_hash": "h"}, performance={"engine": "fit"}, finished_at=finished_at)
    return rec


def dry_run(folder, capsys, strategies="none,batchnorm"):
    rc = main(["run", "--models", "mlp8", "--strategies", strategies, "--epochs", "1", "--limit", "200", "--dry-run",
               "--results", str(folder)])
    assert rc == 0
    return capsys.readouterr()


# --- D9: a genuine run id over a malformed body ---------------------------------------------------------------

MALFORMED = {
    "history is a string": dict(history="garbage"),
    "history rows are numbers": dict(history=[1, 2]),
    "a history row without an epoch": dict(history=[{"train_loss": 1.0}]),
    "a history metric is text": dict(history=[{"epoch": 0, "train_loss": "low"}]),
    "stats is a string": dict(stats="x"),
    "stats rows lack columns": dict(stats={"columns": record.STATS_COLUMNS, "rows": [[1, 2]]}),
    "stats rows without the schema's columns": dict(stats={"rows": [[1, 2]]}),
    "a stats value is text": dict(stats={"columns": record.STATS_COLUMNS, "rows": [[0, 0, "act", "mean", "big"]]}),
    "test is a string": dict(test="x"),
    "a test metric is text": dict(test={"accuracy": "high", "loss": 1.0}),
    "environment is a string": dict(environment="x"),
    "data is a list": dict(data=[1]),
    "performance is a string": dict(performance="x"),
    "suite is a string": dict(suite="abc"),
    "layers is a string": dict(layers="abc"),
    "finished_at is a number": dict(finished_at=5),
    "schema_version is a bool": dict(schema_version=True),
    # tables that do not fit the run (issue 24.4): the runner writes epochs 0..N, stats at those epochs
    "a history epoch repeated (0, 1, 1)": dict(history=[*complete(NONE)["history"], complete(NONE)["history"][-1]]),
    "a history epoch missing (0, 2)": dict(history=[complete(NONE)["history"][0],
                                                    {**complete(NONE)["history"][1], "epoch": 2}]),
    "a finished run short of its spec's epochs": dict(history=complete(NONE)["history"][:1]),
    "a stats row at an epoch the run does not have": dict(stats={"columns": record.STATS_COLUMNS,
                                                                 "rows": [[0, 0, "act", "mean", 0.1],
                                                                          [7, 0, "act", "mean", 0.2]]}),
}


@pytest.fixture
def malformed_folder(tmp_path, request):
    """A folder with a good batchnorm record and a none record whose body is edited (its run id still genuine)."""
    folder = tmp_path / "rec"
    store.save_record(folder, complete(BN))
    bad = complete(NONE)
    bad.update(MALFORMED[request.param])
    path = store.save_record(folder, bad)
    assert record.genuine(json.loads(path.read_text()))  # the edit leaves the run id the hash of the spec
    return folder, path


@pytest.mark.parametrize("malformed_folder", list(MALFORMED), indirect=True)
def test_a_malformed_record_is_refused_by_every_reader_and_not_complete_for_resume(malformed_folder, tmp_path, capsys):
    folder, path = malformed_folder
    # resume: not complete (it is trained again), and the warning names the file
    assert store.completed_ids(folder) == {BN.run_id}
    assert path.name in capsys.readouterr().err
    out = dry_run(folder, capsys)
    assert f"{NONE.run_id}  mnist/mlp8/none/seed0  epochs=1 limit=200  [to run]" in out.out
    assert "1 to run, 1 already complete" in out.out
    assert path.name in out.err and "trained again" in out.err
    # readers: a clear refusal naming the file (exit 2), never a traceback
    with pytest.raises(NormbenchError, match=path.name):
        store.load_records(folder)
    assert main(["report", "--results", str(folder), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert "unreadable record" in err and path.name in err and "delete or re-run" in err
    assert main(["pack", "--results", str(folder), "--out", str(tmp_path / "pack")]) == 2
    assert path.name in capsys.readouterr().err
    base = tmp_path / "base"
    store.save_record(base, complete(BN))
    store.save_record(base, complete(NONE))
    (base / "rules.txt").write_text("test_accuracy: -0.05\n")
    assert main(["check", "--baseline", str(base), "--current", str(folder)]) == 2
    assert path.name in capsys.readouterr().err


def test_the_layout_check_names_what_is_wrong():
    for case, why in [(dict(history="garbage"), "history"), (dict(schema_version=True), "schema version"),
                      (dict(stats={"rows": [[1, 2]]}), "stats"), (dict(test={"accuracy": "high"}), "test"),
                      (dict(finished_at=5), "finished_at")]:
        rec = {**complete(NONE), **case}
        with pytest.raises(ValueError, match=why):
            record.check_layout(rec)
    record.check_layout(complete(NONE))  # a good record passes
    record.check_layout(record.error_record(NONE, "boom"))  # and so does a failure record, with its empty sections
    diverged = {**complete(NONE), "status": "diverged", "test": None, "diverged_epoch": 1,
                "stats": {"columns": record.STATS_COLUMNS, "rows": [[1, 0, "act", "mean", None]]}}
    record.check_layout(diverged)
    # values the writers never write (they store a non-finite value as null), and tables that do not fit the run
    h0, h1 = complete(NONE)["history"]
    for case, why in [(dict(test={"accuracy": float("nan")}), r"test.accuracy is float nan, not a finite number"),
                      (dict(history=[h0, {**h1, "val_loss": float("inf")}]), r"history\[1\].val_loss is float inf"),
                      (dict(history=[h0, h1, h1]), r"history epochs \[0, 1, 1\]: epoch 1 is repeated"),
                      (dict(history=[h1]), r"history epochs \[1\]: epoch 0 is missing"),
                      (dict(history=[h0]), r"history ends at epoch 0, but a finished run \(status ok\) of 1 epoch"),
                      ({**diverged, "diverged_epoch": 0}, "the run diverged at epoch 0"),
                      ({**diverged, "status": "error", "history": [h0, h1, {**h1, "epoch": 2}]},
                       "beyond the 1 epoch"),
                      (dict(stats={"rows": [[2, 0, "act", "mean", 0.1]]}), r"stats.rows\[0\] is at epoch 2")]:
        with pytest.raises(record.LayoutError, match=why):
            record.check_layout({**complete(NONE), **case})
    # a run that failed while measuring an epoch may hold that epoch's statistics
    record.check_layout({**record.error_record(NONE, "boom"), "history": [h0],
                         "stats": {"rows": [[0, 0, "act", "mean", 0.1], [1, 0, "act", "mean", 0.2]]}})


def test_resume_retrains_a_malformed_record_and_the_readers_then_work(tmp_path, data_dir, capsys):
    from normbench.grid import run_grid

    spec = RunSpec("mlp8", "none", "mnist", epochs=1, limit=200, eval_limit=100, val_size=100, probe_size=16,
                   train_eval_size=100)
    bad = complete(spec)
    bad["history"] = "garbage"
    path = store.save_record(tmp_path, bad)
    lines = []
    counts = run_grid([spec], tmp_path, data_dir=data_dir, log=lines.append)
    assert counts["ok"] == 1 and counts["skipped"] == 0
    assert any(path.name in line and "trained again" in line for line in lines), lines  # the log says why
    [rec] = store.load_records(tmp_path)  # the retrained record replaced the malformed one
    assert rec["run_id"] == spec.run_id and isinstance(rec["history"], list)


# --- D8: a pack and JSON records in one folder ----------------------------------------------------------------

def test_a_json_record_beside_a_pack_is_read_with_it(tmp_path, capsys):
    folder = tmp_path / "rec"
    store.save_record(folder, complete(NONE))
    store.save_record(folder, complete(BN))
    assert main(["pack", "--results", str(folder), "--out", str(folder)]) == 0  # the pack written into the folder
    store.save_record(folder, complete(SELU, 0.7))  # a run added later (e.g. resuming in that folder)
    assert sorted(r["run_id"] for r in store.load_records(folder)) == sorted(s.run_id for s in (NONE, BN, SELU))
    assert store.completed_ids(folder) == {NONE.run_id, BN.run_id, SELU.run_id}
    capsys.readouterr()
    assert main(["report", "--results", str(folder), "--out", str(tmp_path / "report")]) == 0
    assert "(3 runs" in capsys.readouterr().out
    assert main(["pack", "--results", str(folder), "--out", str(tmp_path / "pack")]) == 0
    assert sorted(r["run_id"] for r in pack.load(tmp_path / "pack")) == sorted(s.run_id for s in (NONE, BN, SELU))


def test_resume_counts_the_runs_of_a_pack_only_folder(tmp_path, capsys):
    store.save_record(tmp_path / "rec", complete(NONE))
    error = record.error_record(BN, "boom")  # a failed run in the pack: resume retries it
    store.save_record(tmp_path / "rec", error)
    assert main(["pack", "--results", str(tmp_path / "rec"), "--out", str(tmp_path / "pack")]) == 0
    assert store.completed_ids(tmp_path / "pack") == {NONE.run_id}
    out = dry_run(tmp_path / "pack", capsys)
    assert "2 runs: 1 to run, 1 already complete" in out.out
    assert f"{NONE.run_id}  mnist/mlp8/none/seed0  epochs=1 limit=200  [complete, skipped on resume]" in out.out


def test_on_a_duplicate_run_id_a_complete_record_then_the_newest_then_the_json_wins(tmp_path):
    folder = tmp_path / "rec"
    store.save_record(folder, complete(NONE, accuracy=0.123456789012))  # more digits than a pack keeps
    store.save_record(folder, complete(BN, accuracy=0.5))
    pack.pack(store.load_records(folder), folder)
    by_id = {r["run_id"]: r for r in store.load_records(folder)}
    assert len(by_id) == 2
    # a tie (the pack's copy of the same record): the JSON record wins, with its full precision (a pack keeps
    # 9 significant digits of history and stats values)
    assert by_id[NONE.run_id]["history"][-1]["val_accuracy"] == 0.123456789012
    store.save_record(folder, complete(BN, accuracy=0.6, finished_at="2027-01-01T00:00:00+00:00"))
    assert {r["run_id"]: r for r in store.load_records(folder)}[BN.run_id]["test"]["accuracy"] == 0.6  # the newest
    failed = record.error_record(NONE, "boom")
    failed["finished_at"] = "2099-01-01T00:00:00+00:00"
    pack.pack(store.load_records(folder), folder)  # the pack now holds both runs as they are
    for p in folder.glob("*.json"):
        p.unlink()
    store.save_record(folder, failed)  # a newer failed copy beside the pack's complete one
    by_id = {r["run_id"]: r for r in store.load_records(folder)}
    assert by_id[NONE.run_id]["status"] == "ok" and by_id[BN.run_id]["test"]["accuracy"] == 0.6
    assert store.completed_ids(folder) == {NONE.run_id, BN.run_id}


# --- D10: a pack's rows get the genuineness check -------------------------------------------------------------

def _edit_pack_runs(folder, edit):
    path = folder / pack.RUNS
    with gzip.open(path, "rt", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    body = edit(header, body)
    pack._write(path, header, body)


def _packed(tmp_path):
    store.save_record(tmp_path / "rec", complete(NONE))
    store.save_record(tmp_path / "rec", complete(BN, accuracy=0.6))  # its curves differ from NONE's
    pack.pack(store.load_records(tmp_path / "rec"), tmp_path / "pack")
    return tmp_path / "pack"


def _set_cell(run_id, column, change):
    def edit(header, body):
        for row in body:
            if row[header.index("run_id")] == run_id:
                row[header.index(column)] = change(row[header.index(column)])
        return body
    return edit


def _forge_epochs(text):
    spec = json.loads(text)
    spec["epochs"] = 99
    return json.dumps(spec)


PACK_EDITS = {
    "a spec edited (epochs = 99)": lambda: _set_cell(NONE.run_id, "spec", _forge_epochs),
    "a test cell of the wrong type": lambda: _set_cell(NONE.run_id, "test", lambda _: '"x"'),
    "the row listed twice": lambda: (lambda header, body: body + [r for r in body if r[0] == NONE.run_id]),
}


@pytest.mark.parametrize("edit", list(PACK_EDITS))
def test_an_edited_pack_row_is_refused_like_an_edited_json_record(tmp_path, edit, capsys):
    folder = _packed(tmp_path)
    _edit_pack_runs(folder, PACK_EDITS[edit]())
    with pytest.raises(NormbenchError, match=NONE.run_id):
        store.load_records(folder)
    assert main(["report", "--results", str(folder), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert pack.RUNS in err and NONE.run_id in err and "normbench pack" in err
    assert main(["pack", "--results", str(folder), "--out", str(tmp_path / "again")]) == 2
    capsys.readouterr()
    assert store.completed_ids(folder) == {BN.run_id}  # resume trains it again, and says so
    assert NONE.run_id in capsys.readouterr().err


def test_a_forged_pack_row_says_what_it_is(tmp_path):
    folder = _packed(tmp_path)
    _edit_pack_runs(folder, _set_cell(NONE.run_id, "spec", _forge_epochs))
    with pytest.raises(NormbenchError, match="not the hash of its spec"):
        store.load_records(folder)


def test_a_corrupt_pack_stops_resume_instead_of_retraining_everything(tmp_path, capsys):
    (tmp_path / pack.RUNS).write_bytes(b"not gzip")
    with pytest.raises(NormbenchError, match="normbench pack"):
        store.completed_ids(tmp_path)
    assert main(["run", "--models", "mlp8", "--strategies", "none", "--epochs", "1", "--dry-run",
                 "--results", str(tmp_path)]) == 2
    assert "normbench pack" in capsys.readouterr().err


def test_a_pack_keeps_the_step_probes_of_a_paper_run(tmp_path):
    """paper-bn probes every 500 steps into the ``steps`` and ``step_stats`` sections; a pack must keep them (its
    report reads them), also when one run's cell outgrows csv's default field limit (128 KiB)."""
    rec = complete(NONE)
    rec["steps"] = {"columns": ["step", "val_loss", "val_accuracy", "test_loss", "test_accuracy"],
                    "rows": [[s, 1.0 / (s + 1), 0.5, 1.1, 0.49] for s in range(0, 50_000, 10)]}
    rec["step_stats"] = {"columns": ["step", "layer", "tap", "quantity", "value"],
                         "rows": [[s, 2, "pre", "u0_p50", 0.001 * s] for s in range(0, 50_000, 500)]}
    store.save_record(tmp_path / "rec", rec)
    pack.pack(store.load_records(tmp_path / "rec"), tmp_path / "packed")
    [back] = store.load_records(tmp_path / "packed")
    assert len(json.dumps(rec["steps"])) > 131072  # the case csv refuses by default
    assert back["steps"] == rec["steps"] and back["step_stats"] == rec["step_stats"]


def test_an_interrupted_pack_leaves_the_previous_pack_whole(tmp_path, monkeypatch):
    store.save_record(tmp_path / "rec", complete(NONE))
    pack.pack(store.load_records(tmp_path / "rec"), tmp_path / "packed")
    before = {p.name: p.read_bytes() for p in (tmp_path / "packed").iterdir()}
    store.save_record(tmp_path / "rec", complete(SELU))
    real_write, calls = pack._write, []

    def interrupted(path, *a, **k):
        calls.append(path.name)
        if len(calls) == 3:  # the third file: the first two are written, nothing is in place yet
            raise KeyboardInterrupt
        return real_write(path, *a, **k)

    monkeypatch.setattr(pack, "_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pack.pack(store.load_records(tmp_path / "rec"), tmp_path / "packed")
    assert {p.name: p.read_bytes() for p in (tmp_path / "packed").iterdir()} == before  # no partial file left
    monkeypatch.setattr(pack, "_write", real_write)
    pack.pack(store.load_records(tmp_path / "rec"), tmp_path / "packed")
    assert len(store.load_records(tmp_path / "packed")) == 2


def test_an_ok_record_without_a_history_is_not_a_finished_run(tmp_path):
    rec = complete(NONE)
    rec["history"] = []
    store.save_record(tmp_path, rec)
    warnings = []
    assert store.completed_ids(tmp_path, warn=warnings.append) == set()
    assert "status ok without a history" in warnings[0]


# --- issue 24.4: every table of a pack, and values the writers never write ----------------------------------------

def _edit_pack(folder, name, edit):
    """Rewrite one of a pack's three files through ``edit(header, body)`` (rows of text cells, as the writer wrote)."""
    path = folder / name
    with gzip.open(path, "rt", newline="") as f:
        rows = list(csv.reader(f))
    pack._write(path, rows[0], edit(rows[0], rows[1:]))


def _rows_of(run_id, epoch=None):
    return lambda header, row: row[0] == run_id and (epoch is None or row[header.index("epoch")] == str(epoch))


def _append(which):
    return lambda header, body: body + [list(r) for r in body if which(header, r)]


def _drop(which):
    return lambda header, body: [r for r in body if not which(header, r)]


def _set(which, column, value):
    def edit(header, body):
        for r in body:
            if which(header, r):
                r[header.index(column)] = value
        return body
    return edit


def _swap_runs(a, b):
    return lambda header, body: [[{a: b, b: a}.get(r[0], r[0]), *r[1:]] for r in body]


TABLE_EDITS = {  # what was edited: (file, edit, what the refusal says)
    "a history row repeated (epochs 0, 1, 1)": (pack.HISTORY, _append(_rows_of(NONE.run_id, 1)), "epoch 1 is repeated"),
    "a history row dropped (a gap)": (pack.HISTORY, _drop(_rows_of(NONE.run_id, 0)), "epoch 0 is missing"),
    "a finished run's last epoch dropped": (pack.HISTORY, _drop(_rows_of(NONE.run_id, 1)),
                                            "history ends at epoch 0, but a finished run"),
    "history rows of two runs swapped": (pack.HISTORY, _swap_runs(NONE.run_id, BN.run_id), "not the ones packed with it"),
    "a history value edited": (pack.HISTORY, _set(_rows_of(NONE.run_id, 1), "val_accuracy", "0.9"),
                               "not the ones packed with it"),
    "inf in a history cell": (pack.HISTORY, _set(_rows_of(NONE.run_id, 1), "val_accuracy", "inf"),
                              "val_accuracy is 'inf', not a finite number"),
    "nan in a stats cell": (pack.STATS, _set(_rows_of(NONE.run_id, 1), "value", "nan"),
                            "value is 'nan', not a finite number"),
    "a stats row at an epoch the run does not have": (pack.STATS, _set(_rows_of(NONE.run_id, 1), "epoch", "7"),
                                                      "is at epoch 7, which the run's history does not have"),
    "a stats row moved to another run": (pack.STATS, _set(_rows_of(NONE.run_id, 1), "run_id", BN.run_id),
                                         "not the ones packed with it"),
    "a run's history hash blanked": (pack.RUNS, _set(_rows_of(NONE.run_id), "history_sha256", ""),
                                     "the run has no history_sha256"),
    "NaN in a JSON cell": (pack.RUNS, _set(_rows_of(NONE.run_id), "test", '{"accuracy":NaN,"loss":1.0}'),
                           "column test: the JSON holds NaN"),
}


@pytest.mark.parametrize("edit", list(TABLE_EDITS))
def test_an_edited_row_in_any_table_of_a_pack_is_refused(tmp_path, edit, capsys):
    name, change, phrase = TABLE_EDITS[edit]
    folder = _packed(tmp_path)
    assert len(store.load_records(folder)) == 2  # as packed, it reads
    _edit_pack(folder, name, change)
    with pytest.raises(NormbenchError) as refused:
        store.load_records(folder)
    message = str(refused.value)
    assert f"run {NONE.run_id} ({name}" in message and phrase in message, message  # the run, the file, the problem
    assert main(["report", "--results", str(folder), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert NONE.run_id in err and name in err and phrase in err and "Traceback" not in err, err
    assert NONE.run_id not in store.completed_ids(folder, warn=lambda _: None)  # resume trains it again


def _baseline(folder):
    store.save_record(folder, complete(NONE))
    store.save_record(folder, complete(BN))
    (folder / "rules.txt").write_text("test_accuracy: -0.05\n")
    return folder


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_json_record_holding_a_non_finite_number_is_refused(tmp_path, token, capsys):
    """The writer stores a non-finite value as null (``allow_nan=False``), so such a token is an edit; before, check
    read ``NaN`` test accuracy and printed ``baseline nan, current 0.5 ... improved``, exit 0."""
    base, current = _baseline(tmp_path / "base"), tmp_path / "current"
    store.save_record(current, complete(BN))
    path = store.save_record(current, complete(NONE))
    text = path.read_text()
    assert text.count('"accuracy": 0.5') == 1
    path.write_text(text.replace('"accuracy": 0.5', f'"accuracy": {token}'))
    with pytest.raises(NormbenchError, match=f"{path.name} .the JSON holds {token}"):
        store.load_records(current)
    # the case: the NaN record in the baseline
    assert main(["check", "--baseline", str(current), "--current", str(base), "--rules", str(base / "rules.txt")]) == 2
    err = capsys.readouterr().err
    assert path.name in err and token in err and "Traceback" not in err, err
    assert store.completed_ids(current, warn=lambda _: None) == {BN.run_id}


def test_the_cli_refuses_a_repeated_history_row_and_a_nan_record_with_exit_2(tmp_path):
    """The two cases of issue 24.4 as a user met them: `normbench report` on a pack whose history has epochs
    0, 1, 1 and `normbench check` on a record holding NaN both exited 0."""
    import subprocess
    import sys

    folder = _packed(tmp_path)
    _edit_pack(folder, pack.HISTORY, _append(_rows_of(NONE.run_id, 1)))
    current = tmp_path / "current"
    store.save_record(current, complete(BN))
    path = store.save_record(current, complete(NONE))
    path.write_text(path.read_text().replace('"accuracy": 0.5', '"accuracy": NaN'))
    base = _baseline(tmp_path / "base")
    for argv, names in ((["report", "--results", str(folder), "--out", str(tmp_path / "report")],
                         (str(folder), pack.HISTORY, NONE.run_id, "epoch 1 is repeated")),
                        (["check", "--baseline", str(base), "--current", str(current)],
                         (path.name, "the JSON holds NaN"))):
        done = subprocess.run([sys.executable, "-m", "normbench.cli", *argv], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (argv, done.stdout[-2000:], done.stderr)
        assert all(n in done.stderr for n in names), done.stderr


def test_a_pack_made_before_the_row_hashes_still_reads(tmp_path):
    folder = _packed(tmp_path)
    with gzip.open(folder / pack.RUNS, "rt", newline="") as f:
        header, *body = list(csv.reader(f))
    keep = [i for i, h in enumerate(header) if h not in pack.DIGESTS]
    assert len(keep) == len(header) - 2
    pack._write(folder / pack.RUNS, [header[i] for i in keep], [[r[i] for i in keep] for r in body])
    assert sorted(r["run_id"] for r in store.load_records(folder)) == sorted((NONE.run_id, BN.run_id))
    _edit_pack(folder, pack.HISTORY, _append(_rows_of(NONE.run_id, 1)))  # and its tables are still checked
    with pytest.raises(NormbenchError, match="epoch 1 is repeated"):
        store.load_records(folder)


def test_the_committed_packs_read():
    """results/*/records were packed before the row hashes: they read, and pass the table checks."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "results" / "cifar-resnet-cpu" / "records"
    records = store.load_records(folder)
    assert len(records) == 4 and {r["status"] for r in records} == {"ok", "diverged"}


def _contend_for_the_lock(folder: str, barrier, rounds: int, out) -> None:
    """A child process: take the folder lock at the barrier, ``rounds`` times; while holding it, claim a marker
    file exclusively, which fails if another holder has it."""
    import time

    from normbench import store as st
    from normbench.errors import NormbenchError

    marker = os.path.join(folder, "holder")
    overlaps = held = 0
    for _ in range(rounds):
        barrier.wait()
        try:
            with st.hold_folder(folder):
                held += 1
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL)
                except FileExistsError:
                    overlaps += 1
                else:
                    time.sleep(0.005)
                    os.close(fd)
                    os.unlink(marker)
        except NormbenchError:
            pass
    out.put((held, overlaps))


def test_the_folder_lock_is_exclusive_under_simultaneous_attempts(tmp_path):
    """Six processes take the lock at the same instant, 30 times: never two holders at once (the pid-file lock it
    replaced let two in 8 times in 40), and in every round someone gets it."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs, rounds = 6, 30
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_contend_for_the_lock, args=(str(tmp_path), barrier, rounds, out))
               for _ in range(procs)]
    for w in workers:
        w.start()
    results = [out.get(timeout=300) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    assert sum(o for _, o in results) == 0, results
    assert rounds <= sum(h for h, _ in results) <= procs * rounds


def test_a_lock_that_is_a_folder_or_a_link_is_refused_with_the_fix(tmp_path):
    from normbench.errors import NormbenchError

    (tmp_path / store.LOCK_NAME).mkdir()
    with pytest.raises(NormbenchError, match="is a folder.*Remove it"):
        with store.hold_folder(tmp_path):
            pass
    (tmp_path / store.LOCK_NAME).rmdir()
    (tmp_path / store.LOCK_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(NormbenchError, match="is a link"):
        with store.hold_folder(tmp_path):
            pass
    assert not (tmp_path / "elsewhere").exists()


# --- issue 25.4: one record reader (JSON and pack codecs), named schema upgrades -------------------------------

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _runs_rows(folder):
    """The rows of a committed pack's runs.csv.gz, decoded by the pack codec (no upgrade, no defaults)."""
    return [pack._run_row(row) for row in pack._rows(folder / pack.RUNS)]


def test_upgrade_1_to_2_names_the_engine_and_leaves_the_shared_device_unknown():
    """A real schema-1 run (the full suite's pack), its performance as version 1 wrote it: no engine, no
    concurrent runs (the pack states 12 for these, from how they were made)."""
    old = _runs_rows(RESULTS / "full" / "records")[0]
    assert old["schema_version"] == 1
    stated = old["performance"]["concurrent_runs"]
    as_written = {**old, "performance": {k: v for k, v in old["performance"].items()
                                         if k not in ("engine", "concurrent_runs", "concurrent_runs_source")}}
    new = record.upgrade_1_to_2(as_written)
    assert new["performance"] == {**as_written["performance"], "engine": "fit", "concurrent_runs": None}
    assert {k: v for k, v in new.items() if k != "performance"} == {k: v for k, v in as_written.items()
                                                                    if k != "performance"}
    assert new["schema_version"] == 1 and "engine" not in as_written["performance"]  # the version is kept, the input untouched
    assert record.upgrade_1_to_2(old)["performance"]["concurrent_runs"] == stated == 12  # a stated count is kept


def test_upgrade_2_to_3_changes_no_layout_and_invents_no_precise_bn():
    """Real schema-2 runs (cifar-resnet-cpu's pack): version 3 changed how runs compute, not the layout."""
    folder = RESULTS / "cifar-resnet-cpu" / "records"
    for old in _runs_rows(folder):
        assert old["schema_version"] == 2
        assert record.upgrade_2_to_3(copy.deepcopy(old)) == old
    from normbench.report import bn_evaluation, inputs

    for rec in reader.load_records(folder):
        assert rec["schema_version"] == 2 and "bn_statistics" not in rec["data"]
        assert inputs(rec).startswith("set by the strategy (schema-2 records)")
        if rec["spec"]["strategy"] == "batchnorm":
            assert bn_evaluation(rec).startswith("Keras' moving averages (schema-2 records")


def test_the_upgrades_run_in_order_from_the_records_version(monkeypatch):
    calls = []
    for version, step in list(record.UPGRADES.items()):
        monkeypatch.setitem(record.UPGRADES, version,
                            lambda rec, step=step: calls.append(step.__name__) or step(rec))
    assert record.READABLE_VERSIONS == (1, 2, record.SCHEMA_VERSION) == (1, 2, 3)
    for version, expected in [(1, ["upgrade_1_to_2", "upgrade_2_to_3"]), (2, ["upgrade_2_to_3"]), (3, [])]:
        calls.clear()
        rec = record.normalized({**complete(NONE), "schema_version": version, "performance": None})
        assert calls == expected and rec["schema_version"] == version
        assert record.concurrent_runs(rec) == (None if version == 1 else 1) and record.engine(rec) == "fit"


@pytest.mark.slow
def test_every_schema_1_record_of_the_full_pack_reads_upgraded():
    records = reader.load_records(RESULTS / "full" / "records")
    assert len(records) == 90 and {r["schema_version"] for r in records} == {1}
    for rec in records:
        assert record.engine(rec) == "fit" and record.concurrent_runs(rec) == 12
        assert rec["performance"]["concurrent_runs_source"] == "stated when packed"
        assert isinstance(rec["history"], list) and isinstance(rec["stats"]["rows"], list)


def test_the_reader_gives_the_same_records_from_a_pack_and_from_json_files(tmp_path):
    """The committed cifar-resnet-cpu pack, written out as JSON records, reads back the same; packed again, the
    same records and the same history and stats rows as the committed files."""
    source = RESULTS / "cifar-resnet-cpu" / "records"
    packed = reader.load_records(source)
    for rec in packed:
        store.save_record(tmp_path / "json", rec)
    folder = reader.read_folder(tmp_path / "json")
    assert set(folder.records) == {"JSON"} and not folder.refused["JSON"]
    assert reader.load_records(tmp_path / "json") == packed
    pack.pack(reader.load_records(tmp_path / "json"), tmp_path / "repacked")
    assert reader.load_records(tmp_path / "repacked") == packed
    for name in (pack.HISTORY, pack.STATS):
        assert gzip.open(tmp_path / "repacked" / name).read() == gzip.open(source / name).read()
    # schema-2 records: the same in both forms, never complete on resume (superseded: issue 34, item 6)
    assert reader.completed_ids(tmp_path / "json") == reader.completed_ids(source) == set()
    assert reader.superseded(tmp_path / "json") == reader.superseded(source) == packed
    assert reader.record_backends(tmp_path / "json") == reader.record_backends(source) == {"tensorflow"}


def test_a_record_of_a_newer_schema_is_refused_naming_the_file_and_the_fix(tmp_path):
    folder = tmp_path / "rec"
    store.save_record(folder, complete(BN))
    path = store.save_record(folder, {**complete(NONE), "schema_version": record.SCHEMA_VERSION + 1})
    with pytest.raises(NormbenchError) as e:
        reader.load_records(folder)
    message = str(e.value)
    assert path.name in message and f"schema version {record.SCHEMA_VERSION + 1} is newer than this normbench" in message
    assert "update normbench to read " + path.name in message and "delete or re-run" not in message
    warnings = []
    assert reader.completed_ids(folder, warn=warnings.append) == {BN.run_id}  # trained again, and said
    assert len(warnings) == 1 and path.name in warnings[0] and "newer" in warnings[0]
    # the same in a pack: the runs file named, and no advice to re-create a pack nobody edited
    path.unlink()
    store.save_record(folder, complete(NONE))
    pack.pack(reader.load_records(folder), tmp_path / "pack")
    _edit_pack_runs(tmp_path / "pack", lambda header, body: [
        [str(record.SCHEMA_VERSION + 1) if i == header.index("schema_version") and row[0] == NONE.run_id else cell
         for i, cell in enumerate(row)] for row in body])
    with pytest.raises(NormbenchError, match=rf"run {NONE.run_id} \({pack.RUNS}: schema version 4 is newer than this "
                                             rf"normbench reads .*Update normbench") as e:
        reader.load_records(tmp_path / "pack")
    assert "never edited" not in str(e.value)


def test_a_corrupt_file_is_refused_naming_it(tmp_path):
    folder = tmp_path / "rec"
    path = store.save_record(folder, complete(NONE))
    path.write_text(path.read_text()[:100])  # cut short
    with pytest.raises(NormbenchError, match=rf"unreadable record\(s\) in {folder}: {path.name} \("):
        reader.load_records(folder)
    path.write_bytes(b"\x80\x04\x95 a pickle, not JSON")  # never unpickled: read as text, refused as not UTF-8 JSON
    with pytest.raises(NormbenchError, match=path.name):
        reader.load_records(folder)
    path.unlink()
    store.save_record(folder, complete(NONE))
    pack.pack(reader.load_records(folder), tmp_path / "pack")
    stats = tmp_path / "pack" / pack.STATS
    stats.write_bytes(stats.read_bytes()[:-20])
    with pytest.raises(NormbenchError, match=rf"cannot read {stats} as a normbench pack"):
        reader.load_records(tmp_path / "pack")


def test_store_reads_through_the_one_reader_and_builds_no_frames():
    for name in ("load_records", "completed_ids", "find_record", "is_complete", "record_backends", "record_filename"):
        assert getattr(store, name) is getattr(reader, name)
    assert not hasattr(store, "runs_frame") and not hasattr(store, "load_dataframe")
    done = subprocess.run([sys.executable, "-c", "import sys, normbench.store, normbench.reader; "
                           "print('pandas' in sys.modules)"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"  # reading and writing records needs no pandas
