"""The Ray executor against the local one, on a local Ray instance (loopback only, 2 CPUs)."""

import os
import sys

import pytest

from normbench import stop, store
from normbench.errors import ConfigError
from normbench.executors import FAULT_ENV
from normbench.grid import run_grid
from normbench.spec import RunSpec

from _tiny import quiet, tiny

TINY = tiny()
SPECS = [RunSpec("mlp", s, "mnist", model_params={"depth": 2, "width": 16}, **TINY) for s in ("none", "selu")]
DOOMED = RunSpec("mlp", "maxnorm", "mnist", model_params={"depth": 2, "width": 16}, **TINY)


def test_ray_executor_without_ray_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'normbench\[ray\]'"):
        run_grid(SPECS[:1], tmp_path, executor="ray", log=quiet)


@pytest.fixture(scope="module")
def ray_instance(data_dir):
    ray = pytest.importorskip("ray")
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", FAULT_ENV: DOOMED.run_id}
    if data_dir:
        env["NORMBENCH_DATA_DIR"] = data_dir
    with stop.kept_handlers():  # ray.init's SIGTERM handler outlived ray.shutdown: a later SIGTERM killed pytest
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


def _values(rec):
    h = [(r["epoch"], r["train_loss"], r["val_accuracy"]) for r in rec["history"]]
    return rec["status"], h, rec["test"], rec["stats"]["rows"]


@pytest.mark.slow
def test_ray_gives_the_same_records_as_local(ray_instance, tmp_path, data_dir):
    run_grid(SPECS, tmp_path / "local", data_dir=data_dir, log=quiet)
    counts = run_grid(SPECS, tmp_path / "ray", data_dir=data_dir, executor="ray", log=quiet)
    assert counts["ok"] == 2
    for spec in SPECS:
        a, b = store.find_record(tmp_path / "local", spec), store.find_record(tmp_path / "ray", spec)
        assert a["run_id"] == b["run_id"] == spec.run_id
        sa, ha, ta, ra = _values(a)
        sb, hb, tb, rb = _values(b)
        assert sa == sb == "ok"
        # a Ray worker runs with other thread settings; deterministic kernels agree to round-off
        for (ea, la, va), (eb, lb, vb) in zip(ha, hb):
            assert ea == eb and la == pytest.approx(lb, rel=1e-4) and va == pytest.approx(vb, abs=0.011)
        assert [r[:4] for r in ra] == [r[:4] for r in rb]
        assert [r[4] for r in ra if r[0] == 0] == pytest.approx([r[4] for r in rb if r[0] == 0], rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_a_dying_worker_is_retried_then_recorded_as_error_and_the_grid_goes_on(ray_instance, tmp_path, data_dir):
    lines = []
    counts = run_grid([DOOMED, *SPECS], tmp_path, data_dir=data_dir, executor="ray",
                      executor_options={"max_retries": 1}, log=lines.append)
    assert counts["ok"] == 2 and counts["error"] == 1
    rec = store.find_record(tmp_path, DOOMED)
    assert rec["status"] == "error" and "after 1 retries" in rec["error"]
    assert any("maxnorm" in line and "error" in line for line in lines)
    # resume: completed runs are skipped before anything is submitted; the failed one is retried
    again = run_grid(SPECS, tmp_path, data_dir=data_dir, executor="ray", log=quiet)
    assert again["skipped"] == 2 and again["ok"] == 0


def test_fault_injection_is_inert_outside_tests():
    assert os.environ.get(FAULT_ENV) is None


@pytest.mark.parametrize("options,phrase", [({"num_gpus": 1}, "--gpus-per-run 1, but the local Ray instance has 0 GPUs"),
                                            ({"num_cpus": 4}, "--cpus-per-run 4, but the local Ray instance has 2 CPUs")])
def test_a_run_that_ray_could_never_schedule_is_refused_not_waited_for(ray_instance, tmp_path, options, phrase):
    """`run --executor ray --gpus-per-run 1` without a GPU printed "local instance (2 CPUs, 0 GPUs)" and then waited
    forever: Ray keeps a task that asks for more than the cluster has pending, so nothing ever trained or failed."""
    import signal

    def give_up(*_):
        raise TimeoutError("the grid waited for a run Ray cannot schedule")

    old = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(60)
    try:
        with pytest.raises(ConfigError, match=phrase) as e:
            run_grid(SPECS[:1], tmp_path, executor="ray", executor_options=options, log=quiet)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert "wait forever" in str(e.value) and "--address" in str(e.value)
    assert not list(tmp_path.glob("*.json"))
