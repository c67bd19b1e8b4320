import json
import os
import signal
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from normbench.errors import DataError  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras():
    import keras

    keras.backend.clear_session()
    yield


def real_data_dir() -> str | None:
    """NORMBENCH_DATA_DIR (None: the Keras download), once MNIST is found there; else DataError.

    The library reads the variable itself (no ``data_dir`` argument), so a message about a missing folder
    names NORMBENCH_DATA_DIR, the setting to fix, not --data-dir, which a test run never had.
    """
    from normbench.datasets import load_raw

    load_raw("mnist")
    return os.environ.get("NORMBENCH_DATA_DIR") or None


@pytest.fixture(scope="session")
def data_dir():
    """The real data: NORMBENCH_DATA_DIR when set, else the Keras download; skip if neither works."""
    try:
        value = real_data_dir()
    except DataError as e:
        if os.environ.get("CI"):  # CI must exercise the real data, never skip it
            pytest.fail(f"CI without MNIST: {e}")
        pytest.skip(f"no MNIST available: {e}")
    return value


CHECKS = Path(__file__).with_name("_backend_checks.py")


SLOW_FIXTURES = {"jax_checks", "torch_checks"}  # each one subprocess of minutes, made once per session


_RUNNING: dict = {}  # the test being set up or run


def pytest_collection_modifyitems(config, items):
    """A test that asks for another backend's checks by fixture name is slow (see tests/_tiers.py)."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _RUNNING["item"] = item  # before any fixture of the test is made


def other_backend(backend, request, tmp_path_factory, data_dir):
    """Run tests/_backend_checks.py under ``backend`` (skip if it is not installed) and return its JSON.

    The run takes minutes (about 6 on JAX on 2 cores): a test not marked slow that reaches it through
    ``request.getfixturevalue`` (which the collection hook cannot see) fails here, naming the fix."""
    test = _RUNNING.get("item")
    if test is not None and test.get_closest_marker("slow") is None:
        pytest.fail(f"a test outside the slow tier asked for the {backend} checks (minutes): mark it "
                    f"@pytest.mark.slow or take {backend}_checks as a fixture argument")
    pytest.importorskip(backend)
    out = tmp_path_factory.mktemp(backend) / "checks.json"
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "-1"}
    if data_dir:
        env["NORMBENCH_DATA_DIR"] = data_dir
    proc = subprocess.run([sys.executable, str(CHECKS), str(out)], env=env, capture_output=True, text=True,
                          timeout=1800)  # 15 strategies' engine checks took over 900 s on 2 cores shared with a suite
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def jax_checks(request, tmp_path_factory, data_dir):
    """The JAX side's measurements, made once per test session."""
    return other_backend("jax", request, tmp_path_factory, data_dir)


@pytest.fixture(scope="session")
def torch_checks(request, tmp_path_factory, data_dir):
    """The torch side's measurements (no engine check there: the scan engine is JAX's), made once."""
    return other_backend("torch", request, tmp_path_factory, data_dir)


def default_sigint() -> None:
    """preexec_fn for a test's normbench subprocess: SIGINT back to its default.

    A shell without job control starts background commands (`cmd &`, nohup) with SIGINT ignored, and Python
    keeps an inherited SIG_IGN: normbench would then never see the test's Ctrl-C (a CI script run in the
    background failed this way). The test's normbench gets the default, as from a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def default_signal_handlers():
    """SIGINT and SIGTERM at their defaults for an in-process signal test, whatever the test process inherited
    (SIGINT ignored in a background CI shell) or an earlier test left (ray.init's SIGTERM handler); put back after."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


NO_DATA = "no MNIST available"


def pytest_terminal_summary(terminalreporter):
    """Say how many tests were skipped for want of the data, and the one setting that fixes it."""
    skipped = terminalreporter.stats.get("skipped", [])
    no_data = [r for r in skipped if NO_DATA in str(getattr(r, "longrepr", ""))]
    if no_data:
        terminalreporter.write_line(
            f"normbench: {len(no_data)} tests were SKIPPED because the real data was not found: they did not run. "
            f"Set NORMBENCH_DATA_DIR to a folder holding mnist.npz and the CIFAR-10 files (see the README's Data "
            f"section) and run the tests again.", yellow=True, bold=True)
