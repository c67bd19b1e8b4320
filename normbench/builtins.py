"""``load_builtins()``: register every built-in model, strategy, dataset, diagnostic, executor and suite file.

Registration is explicit: code that reads a registry calls this first (it is cheap and
idempotent) instead of relying on which modules happen to have been imported. It sits below
everything that reads the registries (the pre-flight, suites, the runner, the grid, the CLI, the
report) and above everything that fills them, so any of those can call it in any process.

Suite files are registered by name and path here; reading one (TOML into run specs) is
:func:`normbench.suites.get_suite`'s, which calls this first.
"""

from __future__ import annotations

from pathlib import Path

from .env import SUITES_DIR_ENV, suites_dir_setting
from .errors import ConfigError
from .registry import SUITES

_loaded = False


def suites_dir() -> Path:
    """The folder of suite files: $NORMBENCH_SUITES_DIR, else the checkout's benchmarks/suites."""
    setting = suites_dir_setting()
    return Path(setting) if setting else Path(__file__).resolve().parents[1] / "benchmarks" / "suites"


def register_suites(directory: Path | None = None) -> None:
    """Register every ``*.toml`` in the suites folder under its stem (by path: a suite is parsed when used)."""
    directory = directory or suites_dir()
    if suites_dir_setting() and not directory.is_dir():
        raise ConfigError(f"{SUITES_DIR_ENV}={suites_dir_setting()!r} is not a folder; point it at a folder of "
                          f"suite .toml files, or unset it to use benchmarks/suites")
    for path in sorted(directory.glob("*.toml")):
        if path.stem not in SUITES:
            SUITES.register(path, name=path.stem)


def load_builtins() -> None:
    """Import the modules whose decorators fill MODELS, NORMS, DATASETS, DIAGNOSTICS and EXECUTORS; register the
    suite files in SUITES."""
    global _loaded
    if _loaded:
        return
    from . import datasets, diagnostics, models, norms  # noqa: F401  (importing them is what registers)
    from .executors import load_executors

    load_executors()
    register_suites()
    _loaded = True
