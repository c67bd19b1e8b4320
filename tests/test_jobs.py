"""--jobs N: worker processes claim runs; only the parent writes records (real runs on tiny MNIST slices)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import default_sigint

from normbench import store
from normbench.executors import FAULT_ENV
from normbench.executors.processes import auto_jobs, sharing_env
from normbench.grid import run_grid
from normbench.spec import RunSpec

from _tiny import quiet, tiny

TINY = tiny()
SPECS = [RunSpec("mlp", s, "mnist", model_params={"depth": 2, "width": 16}, **TINY) for s in ("none", "selu", "batchnorm")]


def _metrics(rec):
    return [(h["epoch"], h["train_loss"], h["val_loss"]) for h in rec["history"]], rec["test"]


@pytest.mark.slow
def test_two_jobs_give_the_same_runs_and_metrics_as_one(tmp_path, data_dir, monkeypatch):
    lines = []
    one = run_grid(SPECS, tmp_path / "one", data_dir=data_dir, log=quiet)
    two = run_grid(SPECS, tmp_path / "two", data_dir=data_dir, jobs=2, log=lines.append)
    assert one["ok"] == two["ok"] == 3
    assert any("[job 2]" in line for line in lines) and any("processes: 2 jobs" in line for line in lines)
    for spec in SPECS:
        a, b = store.find_record(tmp_path / "one", spec), store.find_record(tmp_path / "two", spec)
        assert a["run_id"] == b["run_id"] == spec.run_id
        assert a["performance"]["concurrent_runs"] == 1 and b["performance"]["concurrent_runs"] == 2
        (ha, ta), (hb, tb) = _metrics(a), _metrics(b)
        # a job has one core instead of two: other thread counts, the same deterministic math to round-off
        for (ea, la, va), (eb, lb, vb) in zip(ha, hb):
            assert ea == eb and la == pytest.approx(lb, rel=1e-4) and va == pytest.approx(vb, rel=1e-4)
        assert ta["loss"] == pytest.approx(tb["loss"], rel=1e-4)


@pytest.mark.slow
def test_a_dying_worker_is_recorded_as_error_and_the_grid_goes_on(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, SPECS[0].run_id)  # the spawned workers inherit it
    counts = run_grid(SPECS, tmp_path, data_dir=data_dir, jobs=2, log=quiet)
    assert counts == {"skipped": 0, "ok": 2, "diverged": 0, "error": 1}
    rec = store.find_record(tmp_path, SPECS[0])
    assert rec["status"] == "error" and "worker process died (exit code 17)" in rec["error"]
    monkeypatch.delenv(FAULT_ENV)
    again = run_grid(SPECS, tmp_path, data_dir=data_dir, jobs=2, log=quiet)  # resume retries the failed run only
    assert again == {"skipped": 2, "ok": 1, "diverged": 0, "error": 0}


def _cmd(results, *extra):
    return [sys.executable, "-m", "normbench.cli", "run", "--models", "mlp8", "--strategies", "none,selu,batchnorm,maxnorm",
            "--datasets", "mnist", "--epochs", "2", "--limit", "2000", "--results", str(results), "--jobs", "2", *extra]


LONGER = ("--epochs", "6")  # the last --epochs wins


def _cli(results, *extra, env=None):
    return subprocess.Popen(_cmd(results, *extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True, preexec_fn=default_sigint)


def _wait_for_records(folder, n, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(folder.glob("*.json"))) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"normbench exited early ({proc.returncode}): {proc.stdout.read()[-2000:]}")
        time.sleep(0.2)
    pytest.fail("no record appeared in time")


def _workers_of(pgid):
    out = subprocess.run(["ps", "-o", "pid=,pgid=,args=", "-e"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split()[1] == str(pgid) and "multiprocessing" in line]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill -9", "ctrl-c", "sigterm"])
def test_interrupting_the_parent_loses_no_record_and_resume_completes(tmp_path, data_dir, how):
    env = {**os.environ, **({"NORMBENCH_DATA_DIR": data_dir} if data_dir else {})}
    # 6 epochs: the grid must still be training when the signal comes (at 2 epochs on a loaded 2-core CI
    # machine the last runs finished before it, and the grid exited 0)
    proc = _cli(tmp_path, *LONGER, env=env)
    _wait_for_records(tmp_path, 1, proc)
    proc.send_signal({"kill -9": signal.SIGKILL, "ctrl-c": signal.SIGINT, "sigterm": signal.SIGTERM}[how])
    output = proc.communicate(timeout=60)[0]
    if how != "kill -9":  # SIGTERM stops like Ctrl-C, exiting 128 + its number
        assert proc.returncode == {"ctrl-c": 130, "sigterm": 143}[how] and "interrupted" in output, output[-2000:]
    deadline = time.monotonic() + 30  # orphaned workers notice that their parent is gone and stop
    while _workers_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _workers_of(proc.pid)
    done = list(tmp_path.glob("*.json"))
    for path in done:  # every file is a whole record
        assert json.loads(path.read_text())["status"] == "ok"
    assert not list(tmp_path.glob(".*.tmp"))
    resumed = subprocess.run(_cmd(tmp_path, *LONGER), capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"{len(done)} of 4 runs already complete" in resumed.stdout
    assert len(store.load_records(tmp_path)) == 4


def test_auto_picks_from_the_device_and_says_why():
    n, why = auto_jobs(90, gpus=1, cores=16, mem_gib=128)
    assert n == 12 and "GPU" in why
    assert auto_jobs(3, gpus=1, cores=16, mem_gib=128)[0] == 3  # never more jobs than runs
    n, why = auto_jobs(90, gpus=0, cores=2, mem_gib=24)
    assert n == 2 and "no GPU" in why and "1 core(s) each" in why
    assert auto_jobs(90, gpus=0, cores=16, mem_gib=24)[0] == 8  # host memory bounds it: 3 GiB per job


def test_sharing_env_caps_gpu_memory_per_job_and_splits_cpu_threads():
    env = sharing_env(4, gpu=True)
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) == pytest.approx(0.225)
    env = sharing_env(2, gpu=False, threads=1)
    assert env["OMP_NUM_THREADS"] == "1" and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in env


@pytest.mark.slow
def test_a_closed_output_pipe_stops_the_grid_like_ctrl_c(tmp_path, data_dir):
    env = {**os.environ, **({"NORMBENCH_DATA_DIR": data_dir} if data_dir else {})}
    proc = subprocess.Popen(_cmd(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    proc.stdout.readline()  # like `normbench run ... | head -1`
    proc.stdout.close()
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 141 and "output closed" in err and "Traceback" not in err, err[-2000:]
    for path in tmp_path.glob("*.json"):
        assert json.loads(path.read_text())["status"] == "ok"
    # the folder is free again: its lock (an OS lock on .normbench.lock, released on exit) can be taken at once
    from normbench import store

    with store.hold_folder(tmp_path):
        pass


@pytest.mark.slow
def test_diagnostics_are_measured_in_worker_processes(tmp_path, data_dir):
    """A spawned worker knows every registered diagnostic (it failed every run with 'unknown diagnostic')."""
    results = tmp_path / "runs"
    env = {**os.environ, **({"NORMBENCH_DATA_DIR": data_dir} if data_dir else {})}
    done = subprocess.run([sys.executable, "-m", "normbench.cli", "run", "--models", "mlp8", "--strategies", "none,selu",
                           "--datasets", "mnist", "--epochs", "1", "--limit", "300", "--results", str(results),
                           "--jobs", "2", "--diagnostics", "meanfield"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    records = store.load_records(results)
    assert len(records) == 2 and all(r["status"] == "ok" and not r.get("diagnostics_errors") for r in records)
    assert all({row[2] for row in r["diagnostics"]["rows"]} == {"meanfield"} for r in records)
