"""Pre-flight: what a grid can check before anything trains, for the CLI and :func:`normbench.grid.run_grid` alike.

Nothing here reads data, starts a backend or writes a record (a writability probe file aside, removed
at once). Each check raises a :class:`~normbench.errors.NormbenchError` that names the problem and
its fix; the CLI turns it into exit status 2. The parsers behind a check stay beside what they
parse (a strategy's parameters in norms.py, a model's in models/, the environment's variables in
env.py, a data folder's files in datasets.py); this module is where they are called from before a grid.
Checks of files as they are read (record layout, rules, report inputs) are the readers' own.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .builtins import load_builtins
from .datasets import TRAIN_SIZES, check_available
from .diagnostics import check_names
from .engines import resolve_engine
from .env import check_environment
from .errors import ConfigError, NormbenchError
from .models import check_model_params
from .norms import get_strategy
from .registry import DATASETS
from .spec import RunSpec
from .reader import record_backends


def validate_specs(specs: Sequence[RunSpec]) -> None:
    """Everything about a grid that can be checked without data or a backend, before anything trains.

    Every spec's strategy (name and parameters) and model (name and parameter names) is resolved;
    a grid with bad specs fails listing each problem once, instead of failing run by run.
    """
    load_builtins()
    problems: dict[str, list[str]] = {}
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        problems.setdefault("the grid repeats a run: each run must appear once", [])
    for spec in specs:
        try:
            get_strategy(spec.strategy, **spec.strategy_params)
            DATASETS.get(spec.dataset)
            check_model_params(spec.model, spec.model_params)
            check_names(spec.diagnostics)
            size, classes = TRAIN_SIZES.get(spec.dataset, (None, 0))
            if size is not None and spec.val_size > size - classes:
                raise ConfigError(f"val_size = {spec.val_size} leaves too few {spec.dataset} training images ({size} "
                                  f"in all, at least one per class must stay for training); choose val_size < "
                                  f"{size - classes}")
        except NormbenchError as e:
            problems.setdefault(str(e), []).append(spec.label)
    if problems:
        lines = [f"- {msg}" + (f" ({len(labels)} runs, e.g. {labels[0]})" if labels else "") for msg, labels in problems.items()]
        raise ConfigError("the grid cannot be run; nothing was trained. Fix these and run again:\n" + "\n".join(lines))


def check_grid(specs: Sequence[RunSpec], *, engine: str | None = None, backend: str | None = None) -> None:
    """The grid's own checks: normbench's environment variables parse (:func:`normbench.env.check_environment`);
    with a ``backend``, the ``engine`` asked for (None: the default) suits it and every spec; then
    :func:`validate_specs`. ``run_grid`` calls it, and the CLI (through :func:`check_run`)."""
    check_environment()
    if backend is not None:
        for spec in specs:
            resolve_engine(engine, backend, spec)
    validate_specs(specs)


def check_backend(results_dir: str, backend: str, force: bool = False) -> None:
    """A folder of records made with another Keras backend is not resumed on this one: its records would be
    skipped as complete, and its report refuses to mix backends. Checked before anything trains."""
    others = record_backends(results_dir) - {backend}
    if others and not force:
        raise ConfigError(f"{results_dir} holds records made with the {', '.join(sorted(others))} backend; this run "
                          f"uses {backend}, and a report never mixes backends. Give this run another --results folder "
                          f"(or run with --backend {sorted(others)[0]} to resume it)")


def _write_probe(folder: Path) -> None:
    """Create and remove a file in ``folder`` (OSError when that cannot be done)."""
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.")
    os.close(fd)
    os.unlink(probe)


def check_output_folder(option: str, folder: str | os.PathLike, create: bool = True) -> None:
    """``folder`` can hold what a command writes: not a file, and writable (created when ``create``; a dry
    run only proves that its nearest existing parent takes a file). Checked before any work starts."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file, not a folder; give a folder")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
            _write_probe(path)
        except OSError as e:
            raise ConfigError(f"cannot write records into {path} ({e.strerror or e}); choose a writable {option} "
                              f"folder") from None
        return
    parent = path
    while not parent.exists():
        parent = parent.parent
    try:
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is a file")
        _write_probe(parent)
    except OSError as e:
        raise ConfigError(f"cannot write into {path} ({e.strerror or e}); choose a writable {option} folder") from None


def check_run(specs: Sequence[RunSpec], results_dir: str, *, backend: str, engine: str | None = None,
              data_dir: str | None = None, force: bool = False, create: bool = True) -> None:
    """Everything ``normbench run`` checks before it trains, a dry run included (``create=False``: the results
    folder is not made): the grid (:func:`check_grid`), the results folder's backend, the data folder's
    files, and that the results folder takes a file."""
    check_grid(specs, engine=engine, backend=backend)
    check_backend(results_dir, backend, force=force)
    check_available(sorted({s.dataset for s in specs}), data_dir)
    check_output_folder("--results", results_dir, create=create)
