"""Many runs: resume, progress, and the choice of executor. One run is :func:`normbench.runner.run`.

``run_grid`` skips runs whose record is complete (resume), hands the rest to a registered
executor (:mod:`normbench.executors`), and writes each record atomically, in this process,
as soon as it arrives, so an interrupted grid loses at most the runs in progress.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from . import reader, store
from . import record as rec_mod
from .executors import GridContext, get_executor
from .errors import OutputClosed, say
from .flops import run_costs
from .preflight import check_grid
from .runner import run
from .search import Search, advance, finals, trial_score
from .spec import RunSpec, definition_hash
from .together import run_together

Log = Callable[[str], None]


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


def _costs(todo: Sequence[RunSpec], log: Log) -> dict[str, float]:
    """Per-run cost estimates for the ETA; empty (count-based ETA) for a single run or if it fails."""
    if len(todo) < 2:
        return {}
    try:
        return run_costs(todo)
    except Exception as e:  # noqa: BLE001  (progress display only)
        log(f"(no cost estimate for the ETA: {type(e).__name__}: {e}; it counts runs instead)")
        return {}


def _bar(runs: int, total_cost: float | None, stream):
    """A tqdm bar over the grid's work: percent of the estimated cost, or runs when there is no estimate."""
    if total_cost:
        return tqdm(total=100.0, file=stream, unit="%", desc="grid", dynamic_ncols=True,
                    bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed} elapsed, {remaining} left{postfix}")
    return tqdm(total=runs, file=stream, unit="run", desc="grid", dynamic_ncols=True)


def run_grid(
    specs: Sequence[RunSpec],
    results_dir: str | Path,
    *,
    force: bool = False,
    data_dir: str | None = None,
    suite: dict | Callable[[RunSpec], dict] | None = None,
    executor: str | None = None,
    jobs: int = 1,
    engine: str | None = None,
    executor_options: dict | None = None,
    log: Log = say,
    bar_stream=None,
    accept: Callable[[dict], bool] | None = None,
) -> dict[str, int]:
    """Run every spec not already complete in ``results_dir``; return counts by status.

    ``suite`` (name and definition hash, or a function of the spec giving them) is stored in each record as
    provenance; it is not part of the run id. ``jobs`` runs train at once (``processes`` executor by default).
    A progress bar (tqdm) weighted by each run's estimated cost is drawn on ``bar_stream``, by
    default on the terminal when the output is one and the log is the default; the log's lines
    are printed above it. Output that is not a terminal (CI logs, a file) gets plain lines only.

    Resume counts a run as complete only when its record was made under the current record schema and
    ``accept`` (when given) takes it (:func:`normbench.reader.completed_ids`). A folder that holds records of an
    older schema is refused before anything trains, ``force`` or not (:func:`normbench.reader.refuse_superseded`):
    they would be reported as current, or overwritten.
    """
    results_dir = Path(results_dir)
    check_grid(specs)  # the pre-flight the CLI runs too (normbench.preflight)
    name = choose_executor(executor, jobs)
    run_executor = get_executor(name)
    reader.refuse_superseded(results_dir, {s.run_id for s in specs})  # before anything trains, --force or not
    done = set() if force else reader.completed_ids(results_dir, warn=log, accept=accept)  # known by content, not by file name
    todo = [s for s in specs if s.run_id not in done]
    counts = {"skipped": len(specs) - len(todo), "ok": 0, "diverged": 0, "error": 0}
    if counts["skipped"]:
        log(f"{counts['skipped']} of {len(specs)} runs already complete in {results_dir} (use --force to rerun)")
    costs = _costs(todo, log)
    total_cost = sum(costs.values()) if costs else None
    t_grid = time.perf_counter()
    finished = 0
    done_cost = 0.0

    def progress() -> str:
        """Elapsed time and an ETA weighted by each run's estimated cost (FLOPs), not by run count."""
        elapsed = time.perf_counter() - t_grid
        if not finished:
            return f"elapsed {duration(elapsed)}"
        if total_cost and done_cost:
            eta = elapsed / done_cost * (total_cost - done_cost)
        else:
            eta = elapsed / finished * (len(todo) - finished)
        return f"elapsed {duration(elapsed)}, ETA {duration(eta)}"

    def header(i: int, spec: RunSpec) -> str:
        share = f", {costs[spec.run_id] / total_cost:.0%} of the grid's work" if total_cost else ""
        return f"[{i + 1}/{len(todo)}] {spec.label} ({spec.epochs} epochs, run {spec.run_id}{share}; {progress()})"

    if bar_stream is None and log is say and todo and sys.stdout.isatty():
        bar_stream = sys.stdout
    bar = _bar(len(todo), total_cost, bar_stream) if bar_stream is not None and todo else None
    if bar is not None:
        def log(msg: str, _stream=bar_stream) -> None:  # lines above the bar
            try:
                bar.write(msg, file=_stream)
            except BrokenPipeError:  # as say(): a closed output stops the grid like Ctrl-C
                raise OutputClosed() from None
    ctx = GridContext(run=run, run_seeds=run_together, data_dir=data_dir, log=log, header=header, jobs=jobs, engine=engine,
                      options=dict(executor_options or {}))
    try:
        for spec, record in run_executor(todo, ctx):
            record["suite"] = suite(spec) if callable(suite) else suite
            store.save_record(results_dir, record)
            counts[record["status"]] += 1
            finished += 1
            done_cost += costs.get(spec.run_id, 0.0)
            if bar is not None:
                bar.set_postfix_str(f"{finished}/{len(todo)} runs", refresh=False)
                bar.update(costs[spec.run_id] / total_cost * 100.0 if total_cost else 1)
            if name != "local":
                note = f": {record['error']}" if record.get("error") else ""
                log(f"[{finished}/{len(todo)} done] {spec.label} {record['status']}{note} ({progress()})")
    finally:
        if bar is not None:
            bar.close()
    log(
        f"done in {duration(time.perf_counter() - t_grid)}: {counts['ok']} ok, {counts['diverged']} diverged, "
        f"{counts['error']} error, {counts['skipped']} skipped; records in {results_dir}"
    )
    return counts


def run_search(specs: Sequence[RunSpec], search: Search, results_dir: str | Path, *, suite: dict, log: Log = say,
               **options) -> dict[str, int]:
    """A tuning study (:mod:`normbench.search`): its trials phase by phase (rung 0, rung 1, rates beyond an edge:
    whatever :func:`normbench.search.advance` says is left), the choice of each setting's values on validation
    accuracy, then the finals with those values and the grids' seeds; counts by status over every phase.
    ``options`` are :func:`run_grid`'s. Trials are recorded with ``suite.phase = "trial"`` (and ``suite.rung``),
    finals with ``"final"`` and their setting's ``suite.chosen``. A final counts as complete on resume only when
    its record was made under this search (its ``suite.search`` is this one's): a final chosen under another
    protocol is trained again."""
    described = {**suite, "search": search.as_dict()}
    search.check_seeds(specs)
    bases = search.bases(specs)
    log(f"== tuning: {len(bases)} settings; {search.describe()}")
    counts = {"skipped": 0, "ok": 0, "diverged": 0, "error": 0}
    failed: set[str] = set()  # trials this invocation trained that ended in an error: not retried until next time
    attempted: set[str] = set()
    phase = 0
    while True:
        records = reader.load_records(results_dir)  # once a phase: the scores and the errors of the last phase
        scores = {r["run_id"]: trial_score(r) for r in records}
        failed |= attempted & {r["run_id"] for r in records if r["status"] == "error"}
        step = advance(search, specs, scores, failed)
        todo = [t for t in step.todo if t.run_id not in failed]
        if not todo:
            break
        phase += 1
        short = sum(step.rung(t) == 0 for t in todo)
        log(f"== tuning, trial phase {phase}: {len(todo)} trials"
            + (f" ({short} short rung-0 trials of {search.halving.epochs} epoch(s))" if short else " (full length)"))
        got = run_grid(todo, results_dir, suite=lambda t: {**described, "phase": "trial", "definition_hash":
                                                             definition_hash(todo), "rung": step.rung(t)},
                       log=log, **options)
        counts = {k: counts[k] + got[k] for k in counts}
        attempted |= {t.run_id for t in todo}
        if not (got["ok"] + got["diverged"] + got["error"]):  # nothing trained, nothing learned: never loop on it
            failed |= {t.run_id for t in todo}
    for c in step.choices:
        log(f"    chose {', '.join(f'{k} = {v:g}' for k, v in c.values.items())} for {c.base.label.rsplit('/', 1)[0]} "
            f"(validation accuracy {c.score:.4f}, mean over {len(search.trial_seeds)} trial seed(s); runner-up "
            f"{'-' if c.runner_up is None else f'{c.runner_up:.4f}'}; {c.trials} trials, {c.epochs} epochs)"
            + (f"; at the edge of the grid for {', '.join(c.edge)}" if c.edge else ""))
    if step.missing:
        log(f"    no choice for {len(step.missing)} settings whose trials did not all finish (e.g. {step.missing[0]}): "
            f"their finals are not run; run the suite again to retry the failed trials")
    final = finals(search, specs, step.choices)
    chosen = {c.base.run_id: c.as_dict() for c in step.choices}
    log(f"== tuning, finals: {len(final)} runs (the chosen values, {len({s.seed for s in specs})} seeds)")
    this_search = search.as_dict()
    second = run_grid(final, results_dir, suite=lambda f: {**described, "phase": "final", "definition_hash":
                                                           definition_hash(final),
                                                           "chosen": chosen[search.base(f).run_id]},
                      log=log, accept=lambda r: rec_mod.suite(r).get("search") == this_search, **options)
    return {k: counts[k] + second[k] for k in counts}

