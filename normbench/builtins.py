"""``load_builtins()``: register every built-in model, strategy, dataset, executor and suite.

Registration is explicit: code that reads a registry calls this first (it is cheap and
idempotent) instead of relying on which modules happen to have been imported.
"""

from __future__ import annotations

_loaded = False


def load_builtins() -> None:
    """Import the modules whose decorators fill MODELS, NORMS, DATASETS, DIAGNOSTICS and EXECUTORS; register the suites."""
    global _loaded
    if _loaded:
        return
    from . import datasets, diagnostics, models, norms  # noqa: F401
    from .executors import load_executors
    from .suites import register_suites

    load_executors()
    register_suites()
    _loaded = True
