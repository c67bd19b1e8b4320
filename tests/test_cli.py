"""The command line as a user meets it: bad input exits 2 with a message that names the problem, never a traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from normbench import record, store
from normbench.cli import main
from normbench.spec import RunSpec

ONE_EPOCH = [{"epoch": 0, "train_loss": 2.3}, {"epoch": 1, "train_loss": 1.9}]  # a finished 1-epoch run's history


def cli(*args, env=None, timeout=600):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "normbench.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def _refused(done, *phrases):
    assert done.returncode == 2, (done.returncode, done.stdout[-1500:], done.stderr[-1500:])
    assert "Traceback" not in done.stderr + done.stdout
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr


def test_version(capsys):
    from normbench import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"normbench {__version__}"


def test_global_options_are_accepted_after_the_sub_command_too(tmp_path):
    done = cli("run", "--models", "mlp8", "--strategies", "none", "--device", "cpu", "--backend", "tensorflow",
               "--dry-run", "--results", str(tmp_path))
    assert done.returncode == 0 and "1 runs: 1 to run" in done.stdout, done.stderr


def test_a_suite_can_be_given_as_a_path(tmp_path):
    suite = tmp_path / "mine.toml"
    suite.write_text('description = "two runs"\n[defaults]\nepochs = 1\n[[grid]]\ndatasets = ["mnist"]\n'
                     'models = ["mlp8"]\nstrategies = ["none", "selu"]\nseeds = [0]\n')
    done = cli("run", "--suite", str(suite), "--dry-run", "--results", str(tmp_path / "runs"))
    assert done.returncode == 0 and "2 runs: 2 to run" in done.stdout, done.stderr
    _refused(cli("run", "--suite", str(tmp_path / "nope.toml"), "--dry-run"), "nope.toml does not exist")


def test_dry_run_shows_which_runs_resume_would_skip(tmp_path):
    spec = RunSpec("mlp8", "none", "mnist", epochs=1)
    rec = record.new(spec)
    rec.update(status="ok", history=ONE_EPOCH)
    store.save_record(tmp_path, rec)
    done = cli("run", "--models", "mlp8", "--strategies", "none,selu", "--epochs", "1", "--dry-run", "--results", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"{spec.run_id}  mnist/mlp8/none/seed0  epochs=1 limit=None  [complete, skipped on resume]" in done.stdout
    assert "2 runs: 1 to run, 1 already complete" in done.stdout


def test_check_without_a_baseline_says_what_to_do(tmp_path):
    _refused(cli("check", "--baseline", str(tmp_path / "none"), "--current", str(tmp_path)), "make baseline")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "rules.txt").write_text("test_accuracy: -0.05\n")
    _refused(cli("check", "--baseline", str(tmp_path / "empty"), "--current", str(tmp_path)), "holds no records", "make baseline")


@pytest.mark.parametrize("make_bad", ["file", "under a file", "read-only"])
def test_an_unwritable_results_path_fails_before_training(tmp_path, make_bad):
    (tmp_path / "f").write_text("x")
    results = tmp_path / "f" if make_bad == "file" else tmp_path / "f" / "sub"
    if make_bad == "read-only":
        if os.geteuid() != 0:  # a folder without write permission
            results = tmp_path / "ro"
            results.mkdir()
            results.chmod(0o555)
        elif Path("/sys").is_dir():  # root may write anywhere it has permission for: use a kernel file system
            results = Path("/sys/normbench-results")
        else:
            pytest.skip("running as root on a system without /sys: no folder here is read-only to root")
    done = cli("run", "--models", "mlp8", "--strategies", "none", "--results", str(results), timeout=120)
    _refused(done, str(results))
    assert "epoch" not in done.stdout  # nothing trained


def test_a_missing_backend_names_the_extra_to_install():
    hide_jax = ("import importlib.util as u; real = u.find_spec; "
                "u.find_spec = lambda n, *a: None if n == 'jax' else real(n, *a); "
                "from normbench.cli import main; raise SystemExit(main(['--backend', 'jax', 'list', 'models']))")
    done = subprocess.run([sys.executable, "-c", hide_jax], capture_output=True, text=True, timeout=120)
    _refused(done, 'pip install -e ".[jax]"')


@pytest.mark.slow
def test_a_second_run_on_a_held_folder_stops_and_a_stale_lock_is_taken_over(tmp_path, data_dir):
    import fcntl

    env = {"NORMBENCH_DATA_DIR": data_dir} if data_dir else {}
    args = ("run", "--models", "mlp", "--strategies", "none", "--epochs", "1", "--limit", "100", "--results", str(tmp_path))
    lock = tmp_path / store.LOCK_NAME
    lock.write_text(f"{os.getpid()}\n")
    with open(lock) as held:  # this test process holds the folder, as a running `normbench run` would
        fcntl.flock(held, fcntl.LOCK_EX)
        _refused(cli(*args, env=env), "in use by another `normbench run`", f"pid {os.getpid()}")
    # released: the file left behind, even naming a live process (this one), does not block the folder
    done = cli(*args, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(store.load_records(tmp_path)) == 1
    # the backend's C++ start-up chatter went to the results folder, not to the terminal: no line in the
    # native logger's format (severity letter, MMDD, time, thread; or a source-file tag) reaches stderr
    import re

    native = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|\w+\.(cc|cpp|h):\d+\]")
    assert [line for line in done.stderr.splitlines() if native.search(line)] == []
    assert "cuda" not in done.stderr.lower()
    log = (tmp_path / "backend.log").read_text()
    # TensorFlow on a CPU always announces oneDNN or the missing CUDA drivers: that went here instead
    assert any(native.search(line) for line in log.splitlines()), log[:2000]


SUITE_HEAD = 'description = "x"\n'
GRID = '[[grid]]\ndatasets = ["mnist"]\nmodels = ["mlp8"]\nstrategies = ["none"]\nseeds = [0]\n'
BAD_DEFAULTS = [
    ("epochs", '"2"'), ("epochs", "-1"), ("epochs", "1.5"), ("batch_size", "0"), ("batch_size", '"x"'),
    ("learning_rate", '"0.01"'), ("learning_rate", "-1.0"), ("learning_rate", "[0.1]"), ("learning_rate", "nan"),
    ("momentum", "1.5"), ("momentum", '"0.9"'), ("limit", "5"), ("limit", '"100"'), ("eval_limit", "true"),
    ("optimizer", '"sgdd"'), ("precision", '"fp8"'), ("model_params", "3"), ("strategy_params", '"c=2"'),
    ("val_size", "0"), ("probe_size", "-3"), ("train_eval_size", "2.0"), ("probe_every_steps", "0"), ("foo", "1"),
    ("augment", '"mixup"'), ("weight_decay", "-1e-4"), ("weight_decay", '"1e-4"'), ("lr_schedule", '"linear"'),
    ("lr_milestones", "[0.75, 0.5]"), ("lr_milestones", "0.5"), ("lr_decay", "0"), ("warmup_epochs", '"1"'),
    ("diagnostics", '"spectra"'), ("diagnostics", '["nope"]'), ("momentum_start", "1.0"),
    ("momentum_start", "0.5"), ("momentum_ramp_epochs", "-2"), ("seed", "1"), ("model", '"mlp8"'),
    ("val_size", "60000"), ("epochs", "99999999999"), ("input_scaling", '"pixels"'), ("precise_bn_batches", "-1"),
    ("precise_bn_batches", "1.5"),
]


def test_the_suite_key_sweep_covers_every_run_spec_field():
    import dataclasses

    from normbench.spec import RunSpec

    swept = {key for key, _ in BAD_DEFAULTS}
    # model, strategy, dataset and seed are the grid's axes (swept by the next test) and not defaults
    assert {f.name for f in dataclasses.fields(RunSpec)} - swept <= {"strategy", "dataset"}


@pytest.mark.parametrize("key,value", BAD_DEFAULTS)
def test_every_suite_key_with_a_wrong_value_is_refused_naming_file_key_and_value(tmp_path, capsys, key, value):
    suite = tmp_path / "bad.toml"
    suite.write_text(f"{SUITE_HEAD}[defaults]\n{key} = {value}\n{GRID}")
    assert main(["run", "--suite", str(suite), "--dry-run", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and key in err and "Traceback" not in err, err


@pytest.mark.parametrize("axis,value", [("seeds", "0"), ("seeds", "[]"), ("seeds", "[-1]"), ("seeds", "[0, 0]"),
                                        ("seeds", '["a"]'), ("datasets", "5"), ("datasets", "[]"), ("models", "[1]"),
                                        ("strategies", '["nope"]'), ("models", '","'), ("strategies", '" "')])
def test_every_grid_axis_with_a_wrong_value_is_refused(tmp_path, capsys, axis, value):
    grid = GRID.replace(next(line for line in GRID.splitlines() if line.startswith(axis)), f"{axis} = {value}")
    suite = tmp_path / "bad.toml"
    suite.write_text(SUITE_HEAD + grid)
    assert main(["run", "--suite", str(suite), "--dry-run", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and (axis in err or "nope" in err) and "Traceback" not in err, err


BAD_OPTIONS = [["--epochs", "0"], ["--epochs", "x"], ["--lr", "abc"], ["--lr", "-1"], ["--lr", "nan"], ["--seeds", "x"],
               ["--jobs", "0"], ["--jobs", "many"], ["--limit", "3"], ["--batch-size", "-1"], ["--gpus-per-run", "1.5"],
               ["--engine", "warp"], ["--optimizer", "lbfgs"], ["--precision", "fp8"], ["--executor", "slurm"],
               ["--models", "mlp999"], ["--strategies", "nope*"], ["--datasets", "imagenet"], ["--diagnostics", "nope"],
               # an empty value (an unset shell variable) selects nothing: it is not the option's default
               ["--models", ","], ["--models", " "], ["--strategies", ""], ["--strategies", ","], ["--datasets", ","],
               ["--diagnostics", ","], ["--seeds", "4294967296"], ["--results", ""], ["--data-dir", ""],
               ["--suite", ""], ["--cpus-per-run", "-3"], ["--max-retries", "-5"],
               # what the run refuses, the dry run refuses too
               ["--max-retries", "3"], ["--cpus-per-run", "2"], ["--jobs", "3", "--executor", "local"],
               ["--batch-size", "99999999999999999999999"]]


@pytest.mark.parametrize("option", BAD_OPTIONS, ids=lambda o: " ".join(o))
def test_every_run_option_with_a_bad_value_exits_2_with_a_message(tmp_path, capsys, option):
    argv = ["run", "--dry-run"] + (["--results", str(tmp_path)] if option[0] != "--results" else [])
    if option[0] not in ("--models", "--suite"):
        argv += ["--models", "mlp8"]
    with pytest.raises(SystemExit) as e:  # argparse errors exit by SystemExit(2); ours return 2
        raise SystemExit(main(argv + option))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err and (option[1] in err or option[0].lstrip("-") in err), err


@pytest.mark.parametrize("params,message", [('model_params = { width = "wide" }', "width must be an integer > 0"),
                                            ("model_params = { width = 0 }", "width must be an integer > 0"),
                                            ("model_params = { width = 2.5 }", "width must be an integer > 0"),
                                            ('strategy_params = { c = "big" }', "c must be a number")])
def test_parameter_values_are_checked_before_anything_trains(tmp_path, capsys, params, message):
    suite = tmp_path / "bad.toml"
    suite.write_text(f"{SUITE_HEAD}[defaults]\n{params}\n{GRID.replace('none', 'maxnorm')}")
    assert main(["run", "--suite", str(suite), "--dry-run", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and message in err and "Traceback" not in err, err


def test_seeds_given_to_a_suite_reseed_every_grid(tmp_path, capsys):
    suite = tmp_path / "two.toml"
    suite.write_text(SUITE_HEAD + GRID + GRID.replace("mlp8", "mlp16").replace("[0]", "[3]"))
    assert main(["run", "--suite", str(suite), "--seeds", "5,6", "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert {line.split()[1] for line in out.splitlines() if "[to run]" in line} == {
        f"mnist/{m}/none/seed{s}" for m in ("mlp8", "mlp16") for s in (5, 6)}, out


def _dry_run_id(tmp_path, capsys, name: str, suite_text: str) -> str:
    """The run id a dry run of the one-run suite ``suite_text`` lists."""
    suite = tmp_path / f"{name}.toml"
    suite.write_text(suite_text)
    assert main(["run", "--suite", str(suite), "--dry-run", "--results", str(tmp_path)]) == 0
    return capsys.readouterr().out.split()[0]


def test_a_number_is_one_setting_however_it_is_written(tmp_path, capsys):
    ids = [_dry_run_id(tmp_path, capsys, f"lr{lr}", f"{SUITE_HEAD}[defaults]\nlearning_rate = {lr}\n{GRID}")
           for lr in ("1", "1.0")]
    assert main(["run", "--models", "mlp8", "--strategies", "none", "--lr", "1", "--dry-run",
                 "--results", str(tmp_path)]) == 0
    ids.append(capsys.readouterr().out.split()[0])
    assert len(set(ids)) == 1, ids  # one run id: resume and check see one run
    assert RunSpec("mlp8", "none", "mnist", learning_rate=1).learning_rate == 1.0


def _dry_run_refusals(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    base = ["run", "--models", "mlp8", "--strategies", "none", "--dry-run"]
    return [
        ({"NORMBENCH_DATA_DIR": str(tmp_path / "afile")}, base + ["--results", str(tmp_path / "r")], "not a folder"),
        ({"NORMBENCH_DATA_DIR": str(tmp_path / "nope")}, base + ["--results", str(tmp_path / "r")], "does not exist"),
        ({"NORMBENCH_DATA_DIR": str(tmp_path / "empty")}, base + ["--results", str(tmp_path / "r")], "mnist.npz"),
        ({}, base + ["--results", str(tmp_path / "afile")], "is a file"),
        ({}, base + ["--results", str(tmp_path / "r"), "--address", "10.0.0.1:6379"], "--executor ray"),
    ]


@pytest.mark.parametrize("case", range(5))
def test_a_dry_run_refuses_what_the_run_would_refuse(tmp_path, capsys, monkeypatch, case):
    env, argv, phrase = _dry_run_refusals(tmp_path)[case]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert phrase in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()  # a dry run creates nothing


@pytest.mark.parametrize("name,value", [("NORMBENCH_STEPS_PER_EXECUTION", "abc"), ("NORMBENCH_STEPS_PER_EXECUTION", "0"),
                                        ("NORMBENCH_JIT_COMPILE", "bogus"), ("NORMBENCH_DETERMINISTIC", "maybe")])
def test_a_bad_environment_variable_is_named_before_anything_starts(tmp_path, capsys, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert main(["run", "--models", "mlp8", "--strategies", "none", "--dry-run", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{name}={value!r}" in err and "Traceback" not in err, err


@pytest.mark.parametrize("value,on", [("0", False), ("false", False), ("OFF", False), ("no", False), ("1", True),
                                      ("yes", True)])
def test_determinism_reads_the_usual_spellings(monkeypatch, value, on):
    from normbench.env import determinism_requested

    monkeypatch.setenv("NORMBENCH_DETERMINISTIC", value)
    assert determinism_requested() is on


def _report_refusals(tmp_path):
    (tmp_path / "afile").write_text("x")
    rec = ["--results", str(tmp_path / "rec")]
    return [
        (["report", *rec, "--out", str(tmp_path / "afile")], "is a file"),
        (["pack", *rec, "--out", str(tmp_path / "afile")], "is a file"),
        (["report", *rec, "--out", str(tmp_path / "o"), "--threshold", "cifar=0.5"], "unknown dataset 'cifar'"),
        (["report", *rec, "--out", str(tmp_path / "o"), "--threshold", "mnist=nan"], "must be in (0, 1]"),
        (["report", *rec, "--out", str(tmp_path / "o"), "--threshold", "mnist=1.5"], "must be in (0, 1]"),
        (["report", "--papers", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")], "no records of any paper"),
        (["report", *rec, "--out", str(tmp_path / "o"), "--threshold", "cifar10=0.5"], "no run in"),
        (["report", *rec, "--out", str(tmp_path / "o"), "--threshold", "mnist=0.5", "--threshold", "mnist=0.6"],
         "given twice"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_report_and_pack_refuse_bad_outputs_and_thresholds(tmp_path, capsys, case):
    store.save_record(tmp_path / "rec", {**record.new(RunSpec("mlp8", "none", "mnist")), "status": "ok",
                                         "history": ONE_EPOCH})
    argv, phrase = _report_refusals(tmp_path)[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert phrase in err and "Traceback" not in err, err


def test_a_suite_file_that_is_not_text_is_refused_and_listed_as_unreadable(tmp_path, capsys, monkeypatch):
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00garbage\x80")
    assert main(["run", "--suite", str(tmp_path / "binary.toml"), "--dry-run", "--results", str(tmp_path)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    from normbench.registry import SUITES

    monkeypatch.setenv("NORMBENCH_SUITES_DIR", str(tmp_path))
    monkeypatch.setattr(SUITES, "_items", {})  # the registry is read again from the folder
    monkeypatch.setattr("normbench.builtins._loaded", False)
    assert main(["list", "suites"]) == 0
    assert "binary" in (out := capsys.readouterr().out) and "cannot be read" in out, out
    monkeypatch.setenv("NORMBENCH_SUITES_DIR", str(tmp_path / "nope"))
    monkeypatch.setattr("normbench.builtins._loaded", False)
    assert main(["list", "suites"]) == 2 and "is not a folder" in capsys.readouterr().err
    assert main(["run", "--suite", str(tmp_path), "--dry-run"]) == 2 and "is a folder" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("command", ["list", "run --models 'mlp*' --dry-run"])
@pytest.mark.parametrize("sink", ["> /dev/full", "| true"])
def test_a_closed_pipe_or_a_full_disk_ends_with_a_message(tmp_path, command, sink):
    # `| true` closes the pipe at once (long before Python has started), so normbench's writes meet EPIPE
    line = f"set -o pipefail; {sys.executable} -m normbench.cli {command} {sink}"
    done = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    if sink == "> /dev/full":
        assert done.returncode == 2 and "no space left" in done.stderr, done.stderr[-2000:]
    else:
        assert done.returncode in (0, 141) and (done.returncode == 0 or "output closed" in done.stderr), done.stderr


def test_a_folder_made_with_another_backend_is_not_resumed_on_this_one(tmp_path, capsys):
    rec = {**record.new(RunSpec("mlp8", "none", "mnist")), "status": "ok", "environment": {"backend": "jax"},
           "history": ONE_EPOCH}
    store.save_record(tmp_path, rec)
    argv = ["run", "--models", "mlp8", "--strategies", "none,selu", "--dry-run", "--results", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "made with the jax backend" in err and "tensorflow" in err, err
    assert main(argv + ["--force"]) == 0  # retraining everything on this backend is allowed


def test_a_dry_run_names_what_tells_runs_with_one_label_apart(tmp_path, capsys):
    suite = tmp_path / "bs.toml"
    suite.write_text(SUITE_HEAD + GRID + "batch_size = 32\n" + GRID + "batch_size = 64\n")
    assert main(["run", "--suite", str(suite), "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mnist/mlp8/none/seed0 batch_size=32" in out and "mnist/mlp8/none/seed0 batch_size=64" in out, out


def test_a_suite_file_with_a_byte_order_mark_reads(tmp_path, capsys):
    suite = tmp_path / "bom.toml"
    suite.write_bytes(("\ufeff" + SUITE_HEAD + GRID).encode("utf-8"))
    assert main(["run", "--suite", str(suite), "--dry-run", "--results", str(tmp_path)]) == 0
    assert "1 runs: 1 to run" in capsys.readouterr().out


def test_an_integer_for_a_float_strategy_parameter_is_the_same_run(tmp_path, capsys):
    ids = [_dry_run_id(tmp_path, capsys, f"c{c}", f"{SUITE_HEAD}[defaults]\nstrategy_params = {{ c = {c} }}\n"
                       f"{GRID.replace('none', 'maxnorm')}") for c in ("2", "2.0")]
    assert ids[0] == ids[1], ids


def test_a_repeated_run_and_records_in_sub_folders_are_named(tmp_path, capsys):
    suite = tmp_path / "twice.toml"
    suite.write_text(SUITE_HEAD + GRID + GRID)
    assert main(["run", "--suite", str(suite), "--dry-run", "--results", str(tmp_path / "r")]) == 2
    assert "repeat the run mnist/mlp8/none/seed0" in capsys.readouterr().err
    store.save_record(tmp_path / "parent" / "mnist", {**record.new(RunSpec("mlp8", "none", "mnist")), "status": "ok",
                                                      "history": ONE_EPOCH})
    assert main(["report", "--results", str(tmp_path / "parent"), "--out", str(tmp_path / "o")]) == 2
    assert "its sub-folders mnist do" in capsys.readouterr().err


def test_looking_for_a_gpu_that_is_not_there_prints_no_backend_noise(tmp_path):
    import re

    from normbench.env import accelerator

    if accelerator("tensorflow") is not None:
        pytest.skip("this machine has a GPU: --device gpu is accepted here")
    done = cli("run", "--models", "mlp8", "--strategies", "none", "--device", "gpu", "--dry-run",
               "--results", str(tmp_path / "r"))
    _refused(done, "sees no GPU")
    native = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|\w+\.(cc|cpp|h):\d+\]")
    assert [line for line in done.stderr.splitlines() if native.search(line)] == [], done.stderr
