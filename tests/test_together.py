"""Seeds as one program (normbench.together, ``normbench run --seeds-together``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from normbench.cli import main
from normbench.errors import ConfigError
from normbench.executors.together import check_seeds_together, seed_groups
from normbench.spec import RunSpec

CHECKS = Path(__file__).with_name("_together_checks.py")
# Float32 rounding, not a looser comparison: a vmapped matrix product may sum in another order than the unbatched one
# (layer norm and spectral norm differed by up to 7e-7 in weights of size ~0.1 after 14 steps, a few float32 ulps; every
# other strategy was bitwise equal). 1e-5 is over ten times that, and far below any difference a wrong seed, batch
# order or dropout stream makes (weights move by 0.05 to 0.3 in these runs).
TOLERANCE = 1e-5


def test_seed_groups_are_the_specs_that_differ_only_in_their_seed():
    a = [RunSpec("mlp", "none", "mnist", seed=s) for s in (0, 1, 2)]
    b = [RunSpec("mlp", "batchnorm", "mnist", seed=s) for s in (0, 1)]
    c = RunSpec("mlp", "none", "mnist", seed=3, epochs=2)
    groups = seed_groups([a[0], b[0], a[1], c, b[1], a[2]])
    assert groups == [a, b, [c]]


def test_seeds_together_needs_jax_and_this_process():
    check_seeds_together("jax", None, 1)  # accepted: JAX, in this process
    with pytest.raises(ConfigError, match="--backend jax"):
        check_seeds_together("tensorflow", None, 1)
    with pytest.raises(ConfigError, match="drop --executor and --jobs"):
        check_seeds_together("jax", "processes", 4)


def test_the_flag_on_tensorflow_is_a_config_error_naming_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    code = main(["run", "--models", "mlp", "--strategies", "none", "--seeds", "0,1", "--seeds-together",
                 "--dry-run", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "--seeds-together" in err and "tensorflow" in err and "--backend jax" in err


@pytest.fixture(scope="module")
def together_checks(tmp_path_factory, data_dir):
    """Every case of tests/_together_checks.py, under JAX in its own process (about 4 minutes on 2 cores)."""
    pytest.importorskip("jax")
    out = tmp_path_factory.mktemp("together") / "checks.json"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "-1",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    if data_dir:
        env["NORMBENCH_DATA_DIR"] = data_dir
    proc = subprocess.run([sys.executable, str(CHECKS), str(out)], env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _cases():
    from normbench.builtins import load_builtins
    from normbench.registry import NORMS

    load_builtins()
    return [*NORMS.list(), "selu[dropout]", "maxnorm[ramp]"]


@pytest.mark.slow
@pytest.mark.parametrize("case", _cases())
def test_seeds_together_record_what_separate_runs_record(together_checks, case):
    got = together_checks[case]
    assert got["together_ids"] == sorted(got["run_ids"])  # one record per seed, under the separate runs' ids
    assert set(got["status"]) == {"ok"}
    assert got["epochs"] == [3] * len(got["run_ids"])  # initialization and two epochs each
    # one device copy of the training split for the group: the first run's, never the others'
    assert got["training_split_on_device"] == [True] + [False] * (len(got["run_ids"]) - 1)
    assert got["moved"] > 100 * TOLERANCE  # training moved every run's weights: the equality below says something
    assert got["weights"] <= TOLERANCE
    assert got["history"] <= TOLERANCE
    assert got["test"] <= TOLERANCE
    assert got["stats"] <= TOLERANCE
    assert got["other_sections_differ"] == []  # data, layers, strategy config, spec...: identical
    assert got["trained_as"] == [{"seeds_together": len(got["run_ids"])}] * len(got["run_ids"])
    assert got["alone_trained_as"] == [None] * len(got["run_ids"])
    assert set(got["performance_differs"]) == {"concurrent_runs"}  # the shared program's seconds: K runs at once


@pytest.mark.slow
def test_the_flag_writes_one_record_per_seed_and_a_resume_skips_them(together_checks):
    got = together_checks["cli"]
    assert got["codes"] == [0, 0]
    seeds = {0, 1, 2}
    assert set(map(int, got["records"])) == seeds
    ids = {RunSpec("mlp8", "none", "mnist", seed=s, epochs=1, limit=100).run_id for s in seeds}
    assert {r["run_id"] for r in got["records"].values()} == ids  # the ids of separate runs
    assert all(r["status"] == "ok" and r["trained_as"] == {"seeds_together": 3} for r in got["records"].values())


@pytest.mark.slow
def test_a_failing_shared_epoch_is_recorded_by_every_run_of_the_group(together_checks):
    got = together_checks["failure"]
    assert len(got) == 2
    for r in got:
        assert r["status"] == "error" and r["error"] == "RuntimeError: the shared program failed"
        assert r["epochs"] == 1  # initialization measured, no epoch
        assert r["trained_as"] == {"seeds_together": 2}


@pytest.mark.slow
def test_runs_that_train_with_fit_run_one_after_another_and_say_so(together_checks):
    got = together_checks["fallback"]
    assert len(got["said"]) == 1 and "cannot be vmapped" in got["said"][0]
    assert [r["run_id"] for r in got["records"]] == got["run_ids"]
    for r in got["records"]:
        assert r["status"] == "ok" and r["engine"] == "fit"
        assert r["trained_as"] is None and r["concurrent_runs"] == 1  # trained alone: recorded as any separate run
