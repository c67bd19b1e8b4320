"""Run environment: library versions, backend, device, git commit (never the hostname); and the one place
where normbench's environment variables are named and parsed."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from . import __version__
from .errors import ConfigError

FAULT_ENV = "NORMBENCH_FAULT_INJECT_RUN"  # tests only: a worker running this run id dies at once
SUITES_DIR_ENV = "NORMBENCH_SUITES_DIR"  # a folder of suite .toml files (default: the checkout's benchmarks/suites)
DATA_DIR_ENV = "NORMBENCH_DATA_DIR"  # a folder holding mnist.npz / CIFAR-10 files (default: the Keras download)
CACHE_DIR_ENV = "NORMBENCH_CACHE_DIR"  # where downloads and converted data sets are kept (default ~/.cache/normbench)
GPU_MEMORY_FRACTION_ENV = "NORMBENCH_GPU_MEMORY_FRACTION"  # set for --jobs workers sharing a GPU; torch reads it
BACKEND_ENV = "KERAS_BACKEND"  # Keras' own variable: tensorflow (default), jax or torch

BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def accelerator(backend: str) -> str | None:
    """Name of the first GPU the backend sees, or None."""
    try:
        if backend == "jax":
            import jax

            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            return gpus[0].device_kind if gpus else None
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                return None
            return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
    except Exception:  # a broken GPU stack means: no GPU
        return None
    return None


@lru_cache(maxsize=1)
def git_commit() -> dict[str, object]:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return {"git_commit": commit, "git_dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def environment() -> dict[str, object]:
    """What a record says about where it ran; ``deterministic_ops`` is read each time, by the function that
    decides it (:func:`determinism_requested`), so the record says what was in force."""
    return {**_machine(), "deterministic_ops": determinism_requested()}


@lru_cache(maxsize=1)
def _machine() -> dict[str, object]:
    import keras

    backend = keras.backend.backend()
    gpu = accelerator(backend)
    env = {
        "normbench": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "keras": keras.__version__,
        "backend": backend,
        "backend_version": _version(BACKEND_PACKAGES.get(backend, backend)),
        "numpy": _version("numpy"),
        "device": gpu or f"CPU: {cpu_name()}",
        "device_kind": "gpu" if gpu else "cpu",
    }
    env.update(git_commit())
    return env


# normbench's own settings. Each variable is parsed by one function below, used both by the code that acts on it and
# by the code that records it, so a record never says something other than what was in force.
DETERMINISM_ENV = "NORMBENCH_DETERMINISTIC"  # on (default) | off
JIT_ENV = "NORMBENCH_JIT_COMPILE"  # auto (default) | on | off
SPE_ENV = "NORMBENCH_STEPS_PER_EXECUTION"  # 1 .. MAX_STEPS_PER_EXECUTION, default 16
PROBE_STATS_ENV = "NORMBENCH_PROBE_ON_DEVICE"  # auto (default: on a GPU) | on | off
_TRUE, _FALSE = ("1", "on", "true", "yes"), ("0", "off", "false", "no")
MAX_STEPS_PER_EXECUTION = 10_000  # far beyond any epoch's steps here; large values overflow the backends' counters


def _invalid(name: str, expected: str):
    value = os.environ[name]
    shown = repr(value) if len(value) <= 40 else f"{value[:40]!r}... ({len(value)} characters)"
    return ConfigError(f"{name}={shown} is not valid: expected {expected}; fix or unset it")


def env_switch(name: str, default: bool | None, auto: bool = False) -> bool | None:
    """An on/off environment variable: True for 1/on/true/yes, False for 0/off/false/no (any case, spaces
    around ignored), ``default`` when unset (or ``auto`` where ``auto`` is allowed); anything else is refused
    with ConfigError listing the accepted spellings."""
    if name not in os.environ:
        return default
    value = os.environ[name].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if auto and value == "auto":
        return default
    raise _invalid(name, ("auto, " if auto else "") + "on (1/on/true/yes) or off (0/off/false/no)")


def env_int(name: str, default: int, low: int, high: int, meaning: str) -> int:
    """An integer environment variable: ASCII digits only (``str.isdigit`` also takes '²' and other scripts'
    digits), from ``low`` to ``high``; ``default`` when unset. Anything else is refused with ConfigError naming
    the variable and the range, before a backend is handed a number it would overflow on."""
    if name not in os.environ:
        return default
    value = os.environ[name].strip()
    digits = value.lstrip("0") or "0"
    if not (value.isascii() and value.isdigit()) or len(digits) > len(str(high)) or not low <= int(digits) <= high:
        raise _invalid(name, f"an integer from {low} to {high} in the digits 0-9 ({meaning})")
    return int(digits)


def determinism_requested() -> bool:
    """NORMBENCH_DETERMINISTIC: deterministic ops, on unless 0/off/false/no."""
    return bool(env_switch(DETERMINISM_ENV, True))


def jit_override() -> bool | None:
    """NORMBENCH_JIT_COMPILE: True (on) or False (off) forces compilation; None (auto, unset): normbench chooses."""
    return env_switch(JIT_ENV, None, auto=True)


def steps_per_execution() -> int:
    """NORMBENCH_STEPS_PER_EXECUTION: optimizer steps per call into the compiled function (default 16)."""
    return env_int(SPE_ENV, 16, 1, MAX_STEPS_PER_EXECUTION, "steps per compiled execution, default 16")


def probe_on_device_override() -> bool | None:
    """NORMBENCH_PROBE_ON_DEVICE: True (on) or False (off) forces where the probe's statistics are computed;
    None (auto, unset): on the device when it is a GPU, in NumPy on a CPU (see normbench.probe)."""
    return env_switch(PROBE_STATS_ENV, None, auto=True)


def check_environment() -> None:
    """normbench's own environment variables, checked before anything starts; a bad value names the variable."""
    determinism_requested()
    jit_override()
    steps_per_execution()
    probe_on_device_override()


def enable_determinism() -> bool:
    """Ask the backend for deterministic ops (default on; NORMBENCH_DETERMINISTIC=0 turns it off).

    TensorFlow: op determinism. torch: deterministic algorithms (warn-only where none exist).
    JAX is deterministic on the CPU; on a GPU the CLI sets XLA's deterministic-ops flag
    before JAX starts. Returns whether determinism was requested.
    """
    if not determinism_requested():
        return False
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
    return True


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def suites_dir_setting() -> str | None:
    """$NORMBENCH_SUITES_DIR as given (None when unset or empty)."""
    return os.environ.get(SUITES_DIR_ENV) or None


def data_dir_setting() -> str | None:
    """$NORMBENCH_DATA_DIR as given (None when unset or empty)."""
    return os.environ.get(DATA_DIR_ENV) or None


def cache_dir() -> Path:
    """$NORMBENCH_CACHE_DIR, else ~/.cache/normbench."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "normbench")


def gpu_memory_fraction() -> float | None:
    """$NORMBENCH_GPU_MEMORY_FRACTION (written by the processes executor for its workers), None when unset."""
    value = os.environ.get(GPU_MEMORY_FRACTION_ENV)
    return float(value) if value else None


def keras_backend() -> str:
    """The Keras backend this process starts (or started): $KERAS_BACKEND, default tensorflow."""
    return os.environ.get(BACKEND_ENV, "tensorflow")
