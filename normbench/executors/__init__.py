"""Executors turn a list of run specs into records; the grid (:mod:`normbench.grid`) writes them.

Every executor is registered in ``EXECUTORS`` under its name and has one signature::

    executor(todo: Sequence[RunSpec], ctx: GridContext) -> Iterator[tuple[RunSpec, dict]]

yielding ``(spec, record)`` in completion order. The executor never writes records: the
grid's process writes each one atomically as it arrives, so an interrupted grid loses at
most the runs in progress, whichever executor ran them. Nor does it train: it calls
``ctx.run`` (the grid hands it :func:`normbench.runner.run`, a module-level function that a
worker process or a Ray task receives by reference), so executors sit below the runner.

- ``local``: in this process, one run after another.
- ``processes``: ``--jobs N`` worker processes on this machine, sharing its cores or its GPU.
- ``ray``: one Ray task per run on a cluster (or a local Ray instance).
- ``seeds-together``: in this process, the runs that differ only in their seed as one JAX program per group
  (``ctx.run_seeds``, :func:`normbench.together.run_together`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..env import FAULT_ENV  # noqa: F401  (tests import it from here)
from ..registry import EXECUTORS

Log = Callable[[str], None]


@dataclass
class GridContext:
    """What every executor gets besides the specs."""

    run: Callable  # one run: run(spec, *, data_dir, log, engine, concurrent_runs) -> record (normbench.runner.run)
    data_dir: str | None = None  # data directory (None: $NORMBENCH_DATA_DIR or the Keras download)
    log: Log = print  # where progress lines go
    header: Callable = lambda i, spec: spec.label  # the line announcing the i-th run (0-based) as it starts
    jobs: int = 1  # runs that train at the same time
    engine: str | None = None  # training engine (None: the backend's default)
    run_seeds: Callable | None = None  # runs differing only in their seed, as one program (normbench.together)
    options: dict = field(default_factory=dict)  # executor-specific settings (Ray: address, CPUs and GPUs per run)


def load_executors() -> None:
    """Register the built-in executors (their modules import no backend, so the CLI can list them first)."""
    from . import local, processes, ray, together  # noqa: F401


def get_executor(name: str):
    """The registered executor ``name`` (unknown names list the valid ones)."""
    load_executors()
    return EXECUTORS.get(name)


def executor_names() -> list[str]:
    load_executors()
    return EXECUTORS.list()
