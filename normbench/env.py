"""Run environment: library versions, backend, device, git commit. Never the hostname."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

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


@lru_cache(maxsize=1)
def environment() -> dict[str, object]:
    import keras

    from . import __version__

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
        "deterministic_ops": os.environ.get(DETERMINISM_ENV, "1") != "0",
    }
    env.update(git_commit())
    return env


DETERMINISM_ENV = "NORMBENCH_DETERMINISTIC"
_TRUE, _FALSE = ("1", "on", "true", "yes"), ("0", "off", "false", "no")


def determinism_requested() -> bool:
    """NORMBENCH_DETERMINISTIC: on unless 0/off/false/no (validated by :func:`check_environment`)."""
    return os.environ.get(DETERMINISM_ENV, "1").strip().lower() not in _FALSE


def check_environment() -> None:
    """normbench's own environment variables, checked before anything starts; a bad value names the variable."""
    from .errors import ConfigError
    from .perf import JIT_ENV, SPE_ENV

    def bad(name: str, expected: str) -> ConfigError:
        return ConfigError(f"{name}={os.environ[name]!r} is not valid: expected {expected}; fix or unset it")

    if DETERMINISM_ENV in os.environ and os.environ[DETERMINISM_ENV].strip().lower() not in _TRUE + _FALSE:
        raise bad(DETERMINISM_ENV, "1/on/true/yes or 0/off/false/no")
    if JIT_ENV in os.environ and os.environ[JIT_ENV].strip().lower() not in ("auto",) + _TRUE + _FALSE:
        raise bad(JIT_ENV, "auto, on (1/true/yes) or off (0/false/no)")
    if SPE_ENV in os.environ:
        value = os.environ[SPE_ENV].strip()
        if not value.isdigit() or int(value) < 1:
            raise bad(SPE_ENV, "a positive integer (steps per compiled execution, default 16)")


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
