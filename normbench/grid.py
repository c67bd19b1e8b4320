"""Many runs: resume, progress, and the choice of executor. One run is :func:`normbench.runner.run`.

``run_grid`` skips runs whose record is complete (resume), hands the rest to a registered
executor (:mod:`normbench.executors`), and writes each record atomically, in this process,
as soon as it arrives, so an interrupted grid loses at most the runs in progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import store
from .executors import GridContext, get_executor
from .spec import RunSpec

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def choose_executor(executor: str | None, jobs: int) -> str:
    """``None`` means: ``processes`` when more than one job is asked for, else ``local``."""
    if executor is None:
        return "processes" if jobs > 1 else "local"
    return executor


def run_grid(
    specs: Sequence[RunSpec],
    results_dir: str | Path,
    *,
    force: bool = False,
    data_dir: str | None = None,
    suite: dict | None = None,
    executor: str | None = None,
    jobs: int = 1,
    engine: str | None = None,
    executor_options: dict | None = None,
    log: Log = _print,
) -> dict[str, int]:
    """Run every spec not already complete in ``results_dir``; return counts by status.

    ``suite`` (name and definition hash) is stored in each record as provenance; it is not
    part of the run id. ``jobs`` runs train at once (``processes`` executor by default).
    """
    results_dir = Path(results_dir)
    name = choose_executor(executor, jobs)
    run_executor = get_executor(name)
    todo = [s for s in specs if force or not store.is_complete(results_dir, s)]
    counts = {"skipped": len(specs) - len(todo), "ok": 0, "diverged": 0, "error": 0}
    if counts["skipped"]:
        log(f"{counts['skipped']} of {len(specs)} runs already complete in {results_dir} (use --force to rerun)")
    t_grid = time.perf_counter()

    def progress(done: int) -> str:
        elapsed = time.perf_counter() - t_grid
        eta = f", ETA {duration(elapsed / done * (len(todo) - done))}" if done else ""
        return f"elapsed {duration(elapsed)}{eta}"

    finished = 0

    def header(i: int, spec: RunSpec) -> str:
        return f"[{i + 1}/{len(todo)}] {spec.label} ({spec.epochs} epochs, run {spec.run_id}; {progress(finished)})"

    ctx = GridContext(data_dir=data_dir, log=log, header=header, jobs=jobs, engine=engine,
                      options=dict(executor_options or {}))
    for spec, record in run_executor(todo, ctx):
        record["suite"] = suite
        store.save_record(results_dir, record)
        counts[record["status"]] += 1
        finished += 1
        if name != "local":
            note = f": {record['error']}" if record.get("error") else ""
            log(f"[{finished}/{len(todo)} done] {spec.label} {record['status']}{note} ({progress(finished)})")
    log(
        f"done in {duration(time.perf_counter() - t_grid)}: {counts['ok']} ok, {counts['diverged']} diverged, "
        f"{counts['error']} error, {counts['skipped']} skipped; records in {results_dir}"
    )
    return counts
