"""Hostile input (issue 24, items 5-8): corrupt or extreme files and settings end with exit 2 and a message that
names the file or variable and the fix, never a traceback, a hang or a write outside the folder normbench was given.

- 5: a damaged pack file, JSON nested 100,000 deep, integer variables in other scripts' digits or out of range,
  a rules file that is /dev/zero or a FIFO.
- 6: a full disk names the file being written; a suite path that is a link loop, a device or a FIFO says so.
- 7: an environment variable is parsed once, by the function the code acting on it and the record both use.
- 8: nothing is written through a symbolic link in a results, pack or report folder.
"""

import errno
import gzip
import os
import subprocess
import sys
import zlib

import pytest

from normbench import pack, record, store
from normbench.cli import main
from normbench.errors import ConfigError, NormbenchError
from normbench.spec import RunSpec

NONE = RunSpec("mlp8", "none", "mnist", epochs=1, limit=200)
BN = RunSpec("mlp8", "batchnorm", "mnist", epochs=1, limit=200)
DEEP = "[" * 100_000 + "]" * 100_000


def cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "normbench.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def refused(done, *phrases):
    assert done.returncode == 2, (done.returncode, done.stdout[-1500:], done.stderr[-1500:])
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr[-3000:]


def complete(spec: RunSpec) -> dict:
    rec = record.new(spec)
    rec.update(status="ok", param_count=100, data={"source": "test data"},
               history=[{"epoch": 0, "train_loss": 2.3, "val_loss": 2.3, "val_accuracy": 0.1},
                        {"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "val_accuracy": 0.5, "epoch_s": 1.0}],
               test={"loss": 1.0, "accuracy": 0.5},
               stats={"columns": record.STATS_COLUMNS, "rows": [[0, 0, "act", "mean", 0.1], [1, 0, "act", "mean", 0.2]]},
               environment={"backend": "tensorflow", "device": "cpu"}, performance={"engine": "fit"},
               finished_at="2026-01-01T00:00:00+00:00")
    return rec


@pytest.fixture
def packed(tmp_path):
    store.save_record(tmp_path / "rec", complete(NONE))
    store.save_record(tmp_path / "rec", complete(BN))
    pack.pack(store.load_records(tmp_path / "rec"), tmp_path / "pack")
    return tmp_path / "pack"


# --- 5a: a damaged pack file ------------------------------------------------------------------------------------

def _flip(path, start: int, count: int) -> None:
    data = bytearray(path.read_bytes())
    for i in range(start, min(start + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_40_flipped_bytes_in_a_pack_file_exit_2_naming_it_in_report_pack_and_a_resumed_run(packed, tmp_path):
    stats = packed / pack.STATS
    _flip(stats, 12, 40)  # past the 10-byte gzip header: into the deflate stream
    with pytest.raises(zlib.error):  # what the readers met, and let through as a traceback
        with gzip.open(stats, "rt") as f:
            f.read()
    fix = "normbench pack"
    refused(cli("report", "--results", str(packed), "--out", str(tmp_path / "report")), str(stats), fix)
    refused(cli("pack", "--results", str(packed), "--out", str(tmp_path / "again")), str(stats), fix)
    refused(cli("run", "--models", "mlp8", "--strategies", "none", "--epochs", "1", "--limit", "200",
                "--results", str(packed)), str(stats), fix)


@pytest.mark.parametrize("damage", ["truncated", "not gzip", "not UTF-8", "a NUL in the CSV"])
def test_every_kind_of_damaged_pack_file_is_a_normbench_error_naming_it(packed, damage):
    path = packed / pack.HISTORY
    text = gzip.decompress(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-12])
    elif damage == "not gzip":
        path.write_bytes(b"PK\x03\x04 a zip file")
    elif damage == "not UTF-8":
        path.write_bytes(gzip.compress(text + b"\xff\xfe\n"))
    else:
        path.write_bytes(gzip.compress(text.replace(b",", b"\x00,", 1)))
    for reader in (store.load_records, store.completed_ids):
        with pytest.raises(NormbenchError, match=str(path)):
            reader(packed)


# --- 5b: JSON nested 100,000 brackets deep ----------------------------------------------------------------------

def test_a_record_nested_100000_deep_is_refused_by_the_readers_and_retrained_on_resume(tmp_path):
    store.save_record(tmp_path, complete(BN))
    path = store.save_record(tmp_path, complete(NONE))
    path.write_text(path.read_text().replace('"data": {', f'"data": {{"x": {DEEP}, ', 1))
    done = cli("run", "--models", "mlp8", "--strategies", "none,batchnorm", "--epochs", "1", "--limit", "200",
               "--dry-run", "--results", str(tmp_path))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"{NONE.run_id}  mnist/mlp8/none/seed0  epochs=1 limit=200  [to run]" in done.stdout, done.stdout
    assert path.name in done.stderr and "nested too deeply" in done.stderr and "trained again" in done.stderr
    refused(cli("report", "--results", str(tmp_path), "--out", str(tmp_path / "report")), path.name,
            "nested too deeply", "delete or re-run")


def test_a_record_nested_deeper_than_a_record_ever_is_refused_before_a_reader_recurses_into_it(tmp_path):
    """900 levels parse, but copying (record.normalized) or cleaning (store.clean) them overflowed the stack later."""
    path = store.save_record(tmp_path, complete(NONE))
    path.write_text(path.read_text().replace('"data": {', f'"data": {{"x": {"[" * 900 + "]" * 900}, ', 1))
    warnings = []
    assert store.completed_ids(tmp_path, warn=warnings.append) == set()
    assert path.name in warnings[0] and "nested 902 levels deep" in warnings[0], warnings
    with pytest.raises(NormbenchError, match=path.name):
        store.load_records(tmp_path)


def test_a_pack_cell_nested_100000_deep_is_refused_like_any_cell_that_is_not_json(packed, tmp_path, capsys):
    runs = packed / pack.RUNS
    rows = [line for line in gzip.decompress(runs.read_bytes()).decode().splitlines(keepends=True)]
    header = rows[0].rstrip("\r\n").split(",")
    import csv
    import io

    body = list(csv.reader(io.StringIO("".join(rows[1:]))))
    body[0][header.index("data")] = DEEP
    deep_run = body[0][header.index("run_id")]
    pack._write(runs, header, body)
    warnings = []
    # as for a cell that is not JSON: that run is not complete (resume trains it again, saying why), the other is
    assert deep_run not in store.completed_ids(packed, warn=warnings.append) and len(warnings) == 1
    assert "nested too deeply" in warnings[0] and deep_run in warnings[0]
    assert main(["report", "--results", str(packed), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert str(packed) in err and f"{pack.RUNS}, row 1" in err and "nested too deeply" in err
    assert "normbench pack" in err and "Traceback" not in err


# --- 5c, 7: environment variables -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["²", "１６", "99999999999999999999", "1" + "0" * 5000, "-3", "16.0", ""])
def test_steps_per_execution_takes_ascii_digits_in_range_only_and_names_the_variable(tmp_path, capsys, monkeypatch,
                                                                                      value):
    from normbench.execution import choose_execution

    monkeypatch.setenv("NORMBENCH_STEPS_PER_EXECUTION", value)
    assert main(["run", "--models", "mlp8", "--strategies", "none", "--dry-run", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "NORMBENCH_STEPS_PER_EXECUTION=" in err and "from 1 to 10000" in err and "Traceback" not in err, err
    with pytest.raises(ConfigError, match="NORMBENCH_STEPS_PER_EXECUTION.*from 1 to 10000"):  # the run's own path
        choose_execution(None, "torch", True)


def test_steps_per_execution_reads_what_it_accepts(monkeypatch):
    from normbench.env import steps_per_execution

    for text, value in [("1", 1), (" 32 ", 32), ("0016", 16), ("10000", 10000)]:
        monkeypatch.setenv("NORMBENCH_STEPS_PER_EXECUTION", text)
        assert steps_per_execution() == value
    monkeypatch.delenv("NORMBENCH_STEPS_PER_EXECUTION")
    assert steps_per_execution() == 16


@pytest.mark.parametrize("spelling", ["0", "off", "OFF", "false", "no"])
def test_every_spelling_of_off_turns_determinism_off_and_the_record_says_so(monkeypatch, spelling):
    """`off` used to turn determinism off while the record said deterministic_ops: True, and so it chose another
    jit_compile than `0`."""
    from types import SimpleNamespace

    from normbench.env import enable_determinism, environment
    from normbench.execution import choose_execution

    monkeypatch.setenv("NORMBENCH_DETERMINISTIC", spelling)
    assert enable_determinism() is False
    assert environment()["deterministic_ops"] is False
    mlp = SimpleNamespace(layers=[])  # no BN, no conv: XLA unless determinism is on
    assert choose_execution(mlp, "tensorflow", environment()["deterministic_ops"]).jit_compile is True
    monkeypatch.setenv("NORMBENCH_DETERMINISTIC", "on")
    assert environment()["deterministic_ops"] is True
    assert choose_execution(mlp, "tensorflow", environment()["deterministic_ops"]).jit_compile is False


def test_a_run_records_the_determinism_and_compilation_that_were_in_force(data_dir, monkeypatch):
    from normbench.runner import run

    monkeypatch.setenv("NORMBENCH_DETERMINISTIC", "off")
    monkeypatch.setenv("NORMBENCH_JIT_COMPILE", "off")
    monkeypatch.setenv("NORMBENCH_STEPS_PER_EXECUTION", "4")
    spec = RunSpec("mlp", "none", "mnist", epochs=1, limit=100, eval_limit=50, val_size=50, probe_size=8,
                   train_eval_size=50, model_params={"depth": 2, "width": 8})
    rec = run(spec, data_dir=data_dir, log=lambda _m: None)
    assert rec["status"] == "ok", rec["error"]
    assert rec["environment"]["deterministic_ops"] is False
    assert rec["performance"]["jit_compile"] is False and rec["performance"]["steps_per_execution"] == 4


@pytest.mark.parametrize("name,value", [("NORMBENCH_DETERMINISTIC", "maybe"), ("NORMBENCH_JIT_COMPILE", "sometimes")])
def test_an_unknown_spelling_is_refused_listing_the_accepted_ones(monkeypatch, tmp_path, capsys, name, value):
    from normbench.env import determinism_requested, jit_override

    monkeypatch.setenv(name, value)
    assert main(["run", "--models", "mlp8", "--strategies", "none", "--dry-run", "--results", str(tmp_path)]) == 2
    assert "1/on/true/yes" in (err := capsys.readouterr().err) and "0/off/false/no" in err, err
    with pytest.raises(ConfigError, match="0/off/false/no"):  # the library's own reading refuses it too
        (determinism_requested if name == "NORMBENCH_DETERMINISTIC" else jit_override)()


# --- 5d, 6b: input files that are not small regular files ---------------------------------------------------------

@pytest.fixture
def odd_paths(tmp_path):
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    dangling = tmp_path / "dangling.toml"
    dangling.symlink_to(tmp_path / "gone.toml")
    return {"loop": (loop, "symbolic link loop"), "fifo": (fifo, "is a FIFO (named pipe), not a regular file"),
            "zero": ("/dev/zero", "is a character device, not a regular file"),
            "dangling": (dangling, "gone.toml, which does not exist")}


@pytest.mark.parametrize("kind", ["loop", "fifo", "zero", "dangling"])
def test_a_suite_path_that_is_not_a_regular_file_says_what_it_is(odd_paths, tmp_path, kind):
    path, phrase = odd_paths[kind]
    done = cli("run", "--suite", str(path), "--dry-run", "--results", str(tmp_path / "r"), timeout=60)
    refused(done, f"suite file {path}", phrase)
    assert "does not exist" not in done.stderr or kind == "dangling"


@pytest.mark.parametrize("kind", ["loop", "fifo", "zero"])
def test_a_rules_file_that_is_not_a_regular_file_is_refused_without_reading_it(odd_paths, packed, tmp_path, kind):
    path, phrase = odd_paths[kind]
    refused(cli("check", "--baseline", str(packed), "--current", str(packed), "--rules", str(path), timeout=60),
            f"rules file {path}", phrase)


def test_a_rules_or_suite_file_over_a_mebibyte_is_refused(tmp_path):
    from normbench.check import parse_rules
    from normbench.suites import get_suite

    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="rules file .*big.toml is 1,048,579 bytes"):
        parse_rules(big)
    with pytest.raises(ConfigError, match="suite file .*big.toml is 1,048,579 bytes"):
        get_suite(str(big))


# --- 6a: a full disk names the file ------------------------------------------------------------------------------

def _full(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_a_record_names_the_record(tmp_path, monkeypatch):
    for target in ("normbench.store.json.dump", "normbench.store.os.replace"):
        with monkeypatch.context() as m:
            m.setattr(target, _full)
            with pytest.raises(OSError) as e:
                store.save_record(tmp_path, complete(NONE))
        assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / store.record_filename(NONE))
    assert not list(tmp_path.iterdir())  # and no temporary file is left behind


@pytest.mark.parametrize("where", ["write", "replace"])
def test_a_full_disk_while_packing_names_the_pack_file(tmp_path, monkeypatch, capsys, where):
    store.save_record(tmp_path / "rec", complete(NONE))
    monkeypatch.setattr("gzip.GzipFile.write" if where == "write" else "normbench.pack.os.replace", _full)
    assert main(["pack", "--results", str(tmp_path / "rec"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    first = pack.HISTORY  # written first (the runs file, which holds the other two's hashes, is written last)
    assert f"no space left on the device while writing {tmp_path / 'out' / first}" in err, err
    assert "standard output" not in err


@pytest.mark.parametrize("where", ["write", "replace"])
def test_a_full_disk_while_reporting_names_the_report_file(tmp_path, monkeypatch, capsys, where):
    store.save_record(tmp_path / "rec", complete(NONE))
    store.save_record(tmp_path / "rec", complete(BN))
    if where == "write":
        monkeypatch.setattr("pandas.DataFrame.to_csv", _full)
    else:
        monkeypatch.setattr("normbench.report.os.replace", _full)
    assert main(["report", "--results", str(tmp_path / "rec"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"no space left on the device while writing {tmp_path / 'out'}{os.sep}" in err, err
    assert "standard output" not in err and ".report-" not in err  # the report's file, not its temporary copy
    if where == "write":
        assert str(tmp_path / "out" / "tables" / "accuracy.csv") in err


# --- 8: no write through a link ------------------------------------------------------------------------------------

def test_a_run_never_appends_to_a_file_that_backend_log_links_to(tmp_path):
    results, outside = tmp_path / "results", tmp_path / "outside.txt"
    results.mkdir()
    outside.write_text("precious\n")
    (results / "backend.log").symlink_to(outside)
    done = cli("run", "--models", "mlp8", "--strategies", "none", "--epochs", "1", "--limit", "100", "--force",
               "--results", str(results), timeout=300)
    refused(done, f"{results / 'backend.log'} is a symbolic link", "Remove the link")
    assert outside.read_text() == "precious\n"


def test_a_pack_never_writes_through_a_link_in_its_folder(tmp_path):
    store.save_record(tmp_path / "rec", complete(NONE))
    out, outside = tmp_path / "out", tmp_path / "outside.gz"
    out.mkdir()
    outside.write_text("precious")
    (out / f".{pack.RUNS}.partial").symlink_to(outside)
    with pytest.raises(NormbenchError, match=r"\.runs\.csv\.gz\.partial is a symbolic link"):
        pack.pack(store.load_records(tmp_path / "rec"), out)
    assert outside.read_text() == "precious"
    (out / f".{pack.RUNS}.partial").unlink(missing_ok=True)
    (out / pack.RUNS).symlink_to(outside)  # a link at the pack's own name is replaced, not written through
    pack.pack(store.load_records(tmp_path / "rec"), out)
    assert outside.read_text() == "precious" and not (out / pack.RUNS).is_symlink()


def test_a_record_replaces_a_link_at_its_path_rather_than_writing_through_it(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("precious")
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / store.record_filename(NONE)).symlink_to(outside)
    path = store.save_record(tmp_path / "rec", complete(NONE))
    assert outside.read_text() == "precious" and not path.is_symlink()


def test_a_report_never_writes_through_a_linked_folder_or_file(tmp_path, capsys):
    store.save_record(tmp_path / "rec", complete(NONE))
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "tables").symlink_to(elsewhere)
    assert main(["report", "--results", str(tmp_path / "rec"), "--out", str(out)]) == 2
    assert f"{out / 'tables'} is a symbolic link" in capsys.readouterr().err
    assert not list(elsewhere.iterdir())


def test_the_papers_report_never_writes_through_a_link(tmp_path):
    from normbench.files import write_text
    from normbench.report.plots import _save

    import matplotlib.pyplot as plt

    outside = tmp_path / "outside"
    outside.write_text("precious")
    (tmp_path / "papers.md").symlink_to(outside)
    (tmp_path / "fig.png").symlink_to(outside)
    with pytest.raises(NormbenchError, match="papers.md is a symbolic link"):
        write_text(tmp_path / "papers.md", "# report")
    with pytest.raises(NormbenchError, match="fig.png is a symbolic link"):
        _save(plt.figure(), tmp_path / "fig.png")
    assert outside.read_text() == "precious"


# --- the data folder's origin -------------------------------------------------------------------------------------

def test_a_missing_data_folder_from_the_variable_names_the_variable(tmp_path, monkeypatch):
    """The test suite's data fixture passed the variable's value as an argument, so its skip said --data-dir."""
    from conftest import real_data_dir

    from normbench.errors import DataError

    monkeypatch.setenv("NORMBENCH_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataError) as e:
        real_data_dir()
    assert "(from NORMBENCH_DATA_DIR)" in str(e.value) and "--data-dir" not in str(e.value)


# --- a results folder that grew: runs of other settings are never pooled as seeds -----------------------------------

@pytest.mark.parametrize("change", [{"momentum": 0.5}, {"precision": "mixed_bfloat16"}, {"weight_decay": 1e-4},
                                    {"input_scaling": "unit"}, {"eval_limit": 100}])
def test_runs_of_one_strategy_with_other_settings_are_separate_cells_of_the_report(tmp_path, change):
    """A suite whose two grids differ in momentum (same seeds) was reported as one cell, n=2: the momentum 0.9 and 0.5
    runs averaged as if they were two seeds of one configuration. Only batch size, rate, optimizer, epochs and limit
    told runs apart."""
    import csv

    for spec, accuracy in ((NONE, 0.5), (NONE.with_(**change), 0.7)):
        rec = complete(spec)
        rec["test"]["accuracy"] = accuracy
        rec["suite"] = {"name": "two", "definition_hash": "h"}
        store.save_record(tmp_path / "rec", rec)
    assert main(["report", "--results", str(tmp_path / "rec"), "--out", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "tables" / "accuracy.csv").open()))
    (name, value), = change.items()
    assert sorted((r["strategy"], r["n"], r["mean"]) for r in rows) == sorted(
        [(f"none[{name}={getattr(NONE, name)}]", "1", "0.5"), (f"none[{name}={value}]", "1", "0.7")]), rows


# --- settings the machine cannot hold: said before anything trains ------------------------------------------------

def test_more_jobs_than_the_machine_holds_is_warned_about_before_training_naming_the_fix(tmp_path, capsys,
                                                                                          monkeypatch):
    """`run --jobs 64` on 2 cores and 23 GiB started 60 TensorFlow workers without a word: more than the memory holds
    at 3 GiB a job (workers killed mid-run, recorded as errors), and 30 jobs to a core."""
    from normbench.executors import processes

    monkeypatch.setattr(processes, "cpu_cores", lambda: [0, 1])
    monkeypatch.setattr(processes, "memory_gib", lambda: 23.0)
    monkeypatch.setattr(processes, "visible_gpus", lambda: 0)
    grid = ["run", "--models", "mlp8,mlp16", "--strategies", "*", "--limit", "300", "--dry-run", "--results",
            str(tmp_path)]
    assert main([*grid, "--jobs", "64"]) == 0
    err = capsys.readouterr().err
    assert "--jobs 64: 30 runs at once" in err and "23 GiB of memory" in err and "2 CPU core(s)" in err, err
    assert "Use --jobs auto (2 here) or --jobs 2" in err, err
    assert main([*grid, "--jobs", "2"]) == 0 and "warning" not in capsys.readouterr().err


# --- a rules file reordered: the same verdict or a refusal ----------------------------------------------------------

@pytest.mark.parametrize("order", [(1, 2), (2, 1)])
def test_two_scoped_rules_matching_one_run_are_refused_whatever_their_order(tmp_path, capsys, order):
    """`[model=mlp8] test_accuracy: -0.04` and `[strategy=batchnorm] test_accuracy: -0.01` both match mlp8/batchnorm:
    the later line judged it, so swapping the two lines turned a regression (exit 1) into a pass (exit 0)."""
    for spec in (NONE, BN):
        store.save_record(tmp_path / "base", complete(spec))
        rec = complete(spec)
        rec["test"]["accuracy"] -= 0.02 if spec is BN else 0.0
        store.save_record(tmp_path / "cur", rec)
    scoped = {1: "[model=mlp8] test_accuracy: -0.04", 2: "[strategy=batchnorm] test_accuracy: -0.01"}
    rules = tmp_path / "rules.txt"
    rules.write_text("test_accuracy: -0.05\n" + "".join(f"{scoped[i]}\n" for i in order))
    assert main(["check", "--baseline", str(tmp_path / "base"), "--current", str(tmp_path / "cur"),
                 "--rules", str(rules)]) == 2
    err = capsys.readouterr().err
    assert f"rules file {rules}" in err and scoped[1] in err and scoped[2] in err, err
    assert "mnist/mlp8/batchnorm/seed0" in err and "order of the lines" in err, err


# --- a pack file with a column twice -------------------------------------------------------------------------------

@pytest.mark.parametrize("name,column", [(pack.RUNS, "test"), (pack.HISTORY, "val_accuracy"), (pack.STATS, "value")])
def test_a_pack_file_with_a_column_twice_is_refused_naming_it(packed, tmp_path, capsys, name, column):
    """runs.csv.gz with a second `test` column (accuracy 0.99) was read with the last one: the report's table said
    0.99 for every run, with no word; csv.DictReader keeps the last of two columns of one name."""
    import csv
    import io
    import json

    path = packed / name
    rows = list(csv.reader(io.StringIO(gzip.decompress(path.read_bytes()).decode())))
    i = rows[0].index(column)
    twin = [(json.dumps({**json.loads(r[i]), "accuracy": 0.99}) if column == "test" else "0.99") for r in rows[1:]]
    pack._write(path, [*rows[0], column], [[*r, t] for r, t in zip(rows[1:], twin)])
    for reader in (store.load_records, store.completed_ids):
        with pytest.raises(NormbenchError, match=f"{path}: column.s. {column} appear more than once"):
            reader(packed)
    assert main(["report", "--results", str(packed), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "normbench pack" in err and "Traceback" not in err, err


# --- a JSON record with a key twice ----------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["top", "history row"])
def test_a_record_with_a_key_twice_is_refused_naming_the_file_and_retrained_on_resume(tmp_path, capsys, where):
    """A record with a second `"test": {"accuracy": 0.99, ...}` appended was read with the last one: the report said
    0.99 for the run, and resume counted it complete. json.loads keeps the last of two keys silently."""
    path = store.save_record(tmp_path / "rec", complete(NONE))
    text = path.read_text()
    if where == "top":
        text = text[:text.rindex("}")].rstrip() + ', "test": {"loss": 0.1, "accuracy": 0.99}}'
    else:
        text = text.replace('"val_accuracy": 0.5', '"val_accuracy": 0.5, "val_accuracy": 0.99', 1)
    path.write_text(text)
    with pytest.raises(NormbenchError, match=f"{path.name} .the JSON repeats the key.s. '(test|val_accuracy)'"):
        store.load_records(tmp_path / "rec")
    warnings = []
    assert store.completed_ids(tmp_path / "rec", warn=warnings.append) == set()
    assert path.name in warnings[0] and "repeats the key" in warnings[0] and "trained again" in warnings[0], warnings
    assert main(["report", "--results", str(tmp_path / "rec"), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert path.name in err and "delete or re-run" in err and "Traceback" not in err, err
