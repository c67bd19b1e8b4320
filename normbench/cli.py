"""Command line: ``normbench list | run | report | pack | check``.

Not thin: besides argument parsing it holds the backend choice, the pre-flight of ``run`` (the GPU for
``--device gpu``, the executor and ``--jobs`` options, then :mod:`normbench.preflight`'s checks of engines,
specs, data, the results folder and the backend its records were made with, which ``run_grid`` calls too),
the redirection of the backend's native log output (file descriptors) into the results folder, and the exit
statuses. Training, reports, packs and checks are the library's.

The Keras backend is chosen here (``--backend`` or ``KERAS_BACKEND``) before Keras is
first imported. Bad input exits with status 2 and a one-paragraph message.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import math
import os
import sys
from pathlib import Path

from . import __version__, stop
from .builtins import load_builtins
from .env import accelerator, check_environment, determinism_requested, keras_backend
from .errors import ConfigError, NormbenchError, OutputClosed
from .executors import executor_names
from .executors.processes import auto_jobs, too_many_jobs
from .files import open_for_writing
from .registry import DATASETS, DIAGNOSTICS, MODELS, NORMS, SUITES

# The rest is imported where it is used, to keep `normbench --help` fast (about 0.1 s): what imports numpy (suites,
# pre-flight, grid, datasets, check) or pandas (report), and the model builders and the record readers and writers
# (measured: each adds 10-30 ms). Nothing here imports Keras before the backend is chosen.

BACKENDS = ("tensorflow", "jax", "torch")
ENGINES = ("fit", "scan")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers like 0,1,2, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _path(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty value (an unset shell variable?)")
    return text


def _argument(convert, ok, expected: str):
    """An argparse type: ``convert`` the text, then accept it when ``ok``; else say what was ``expected``."""
    def parse(text: str):
        try:
            value = convert(text)
            accepted = ok(value)
        except (ValueError, OverflowError):
            accepted = False
        if not accepted:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


_positive = _argument(int, lambda v: v >= 1, "a positive integer")
_count = _argument(int, lambda v: v >= 0, "an integer >= 0")
_cpus = _argument(float, lambda v: 0 < v < float("inf"), "a number of CPUs > 0, e.g. 1 or 0.5")
_jobs = _argument(lambda t: t if t == "auto" else int(t), lambda v: v == "auto" or v >= 1,
                  "a positive integer or 'auto'")
_fraction = _argument(float, lambda v: v > 0 and (v <= 1 or v == int(v)),
                      "a GPU fraction in (0, 1] or a whole number of GPUs")


def build_parser() -> argparse.ArgumentParser:
    try:
        load_builtins()  # the --diagnostics help lists the registered diagnostics and when each runs
    except NormbenchError:  # a bad NORMBENCH_SUITES_DIR (filled last): the command that reads suites reports it
        pass

    def global_options(parser: argparse.ArgumentParser, default) -> None:
        # accepted before and after the sub-command; after it, only when given (SUPPRESS keeps the earlier value)
        parser.add_argument("--backend", choices=BACKENDS, default=default and None,
                            help="Keras backend (default: $KERAS_BACKEND or tensorflow)")
        parser.add_argument("--device", choices=["auto", "cpu", "gpu"], default=default and "auto",
                            help="auto: a GPU when the backend sees one; cpu: hide GPUs; gpu: fail unless one is visible")
        parser.add_argument("--verbose", action="store_true", default=default and False,
                            help="show the backend's own log output (default: it goes to a log file in the results folder)")

    p = argparse.ArgumentParser(prog="normbench", description="Benchmark normalization strategies in deep networks.")
    p.add_argument("--version", action="version", version=f"normbench {__version__}")
    global_options(p, default=True)
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    global_options(common, default=False)
    for action in common._actions:
        action.default = argparse.SUPPRESS
    sub = p.add_subparsers(dest="command", required=True)
    _add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: _add_parser(*a, parents=[common], **k)  # every sub-command takes them too

    ls = sub.add_parser("list", help="list registered models, strategies, datasets, diagnostics or suites")
    ls.add_argument("what", nargs="?", default="all",
                    choices=["all", "models", "strategies", "datasets", "diagnostics", "suites"])

    r = sub.add_parser("run", help="train a grid and write one record per run")
    r.add_argument("--suite", type=_path, help="a suite name from benchmarks/suites (see `normbench list suites`) or the path of a suite .toml file")
    r.add_argument("--models", help="comma list of model names or glob patterns, e.g. 'mlp8,vgg*'")
    r.add_argument("--strategies", help="comma list of strategy names or patterns (default with --models: all)")
    r.add_argument("--datasets", help="comma list of datasets (default with --models: mnist)")
    r.add_argument("--seeds", type=_int_list, help="comma list of seeds, e.g. 0,1,2 (default: 0)")
    r.add_argument("--epochs", type=_positive, help="epochs per run (overrides the suite)")
    r.add_argument("--limit", type=_positive, help="class-balanced cap on training samples (overrides the suite)")
    r.add_argument("--batch-size", type=_positive, help="mini-batch size (overrides the suite)")
    r.add_argument("--lr", type=float, help="learning rate (overrides the suite)")
    r.add_argument("--optimizer", choices=["sgd", "adam", "rmsprop"], help="optimizer (overrides the suite)")
    r.add_argument("--diagnostics", metavar="NAMES",
                   help="comma list of opt-in measurements, each at every probe epoch unless said (see `normbench list "
                        "diagnostics`): " + ", ".join(n + {"epoch": "", "init": " (at initialization only)",
                                                          "end": " (after the last epoch only)"}[DIAGNOSTICS.get(n).when]
                                                      for n in DIAGNOSTICS))
    r.add_argument("--precision", choices=["float32", "mixed_float16", "mixed_bfloat16"],
                   help="dtype policy (default float32); mixed precision changes results and is named in every table")
    r.add_argument("--results", type=_path, default="runs", help="folder for the records (default: runs)")
    r.add_argument("--data-dir", type=_path, help="folder with mnist.npz / CIFAR-10 files (default: $NORMBENCH_DATA_DIR)")
    r.add_argument("--force", action="store_true", help="rerun runs whose record exists")
    r.add_argument("--dry-run", action="store_true", help="print the grid and exit")
    r.add_argument("--jobs", type=_jobs, default=1,
                   help="runs that train at once, in worker processes sharing the GPU or splitting the CPU cores; "
                        "'auto' picks from the device and says what it picked (default 1)")
    r.add_argument("--engine", choices=ENGINES,
                   help="training engine: fit (Keras model.fit, every backend) or scan (JAX only: each epoch one "
                        "compiled program); default: the fastest correct one for the backend")
    r.add_argument("--executor", choices=executor_names(),
                   help="local: in this process; processes: --jobs worker processes; ray: one Ray task per run "
                        "(pip install 'normbench[ray]'). Default: local, or processes with --jobs > 1")
    r.add_argument("--seeds-together", action="store_true",
                   help="JAX only: train the runs that differ only in their seed as one compiled program (vmapped), "
                        "each recorded as a separate run (same run ids); off by default (slower on a CPU, see "
                        "docs/backends.md)")
    r.add_argument("--address", help="Ray cluster address, e.g. 10.0.0.1:6379 (default: start a local Ray instance)")
    r.add_argument("--cpus-per-run", type=_cpus, help="Ray: CPUs each run asks for (default 1)")
    r.add_argument("--gpus-per-run", type=_fraction,
                   help="Ray: GPUs each run asks for, e.g. 0.25 to put four runs on one GPU (default: 1 with --device gpu, else 0)")
    r.add_argument("--max-retries", type=_count, help="Ray: retries of a run whose worker died (default 2)")

    rp = sub.add_parser("report", help="tables and figures from a folder of records")
    rp.add_argument("--results", type=_path, default="runs/standard", help="folder of records (default: runs/standard)")
    rp.add_argument("--out", type=_path, default="results", help="folder for README.md, tables/ and figures/ (default: results)")
    rp.add_argument("--papers", type=_path, metavar="RUNS_DIR",
                    help="instead: the paper-replication report from RUNS_DIR/paper-snn, paper-bn, paper-maxnorm (writes OUT/papers.md)")
    rp.add_argument("--published", type=_path, metavar="PACK",
                    help="also compare each cell with the same cell of a published pack (e.g. results/tuned/records): "
                         "inside or outside its 95%% interval, and whether the search chose the same values")
    rp.add_argument("--threshold", action="append", default=[], metavar="DATASET=ACC",
                    help="validation-accuracy threshold for the time-to-threshold table, e.g. mnist=0.98 (repeatable)")

    pk = sub.add_parser("pack", help="write the compact, committable form of a results folder (gzipped CSV rows)")
    pk.add_argument("--results", type=_path, required=True, help="folder of records")
    pk.add_argument("--out", type=_path, required=True, help="folder for runs.csv.gz, history.csv.gz, stats.csv.gz")
    pk.add_argument("--shared-device", type=_positive, metavar="N",
                    help="for records that do not say it (schema 1): how many runs shared the device when they were made")

    c = sub.add_parser("check", help="compare results against a baseline with tolerance rules; exit 1 on a regression")
    c.add_argument("--baseline", type=_path, default="results/baseline", help="baseline folder (default: results/baseline)")
    c.add_argument("--current", type=_path, required=True, help="folder of the records to check")
    c.add_argument("--rules", type=_path, help="rules file (default: BASELINE/rules.txt)")
    return p


def _select_backend(args: argparse.Namespace) -> None:
    if args.backend:
        if "keras" in sys.modules and keras_backend() != args.backend:
            raise ConfigError("Keras is already imported with another backend; set KERAS_BACKEND before starting")
        os.environ["KERAS_BACKEND"] = args.backend
    if args.device == "cpu":  # before any backend starts: it must never see the GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
        os.environ["JAX_PLATFORMS"] = "cpu"
    backend = keras_backend()
    if backend not in BACKENDS:
        raise ConfigError(f"KERAS_BACKEND={backend!r} is not one of {BACKENDS}")
    if importlib.util.find_spec(backend) is None:
        extra = {"jax": 'pip install -e ".[jax]"', "torch": 'pip install -e ".[torch]" (CPU-only machines: install the '
                 "CPU wheel first, see docs/backends.md)", "tensorflow": 'pip install -e .'}[backend]
        raise ConfigError(f"the {backend} backend is not installed in this environment; install it with {extra}, "
                          f"or choose another with --backend")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output
    check_environment()
    if backend == "jax" and determinism_requested():
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_gpu_deterministic_ops" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()


def _describe_suite(name: str) -> str:
    from .suites import get_suite

    try:
        suite = get_suite(name)
    except NormbenchError as e:
        return f"cannot be read: {e}"
    if suite.search is not None:
        return (f"at most {suite.search.most_trials(suite.specs)} trials + {len(suite.specs)} finals. "
                f"{suite.description}")
    return f"{len(suite.specs)} runs. {suite.description}"


def cmd_list(what: str) -> None:
    from . import models
    from .norms import strategy_knobs
    from .suites import get_suite

    load_builtins()
    sections = {
        "models": (MODELS, lambda n: models.describe(n)),
        "strategies": (NORMS, lambda n: (NORMS.get(n).__doc__ or "").strip().splitlines()[0] + "".join(
            f" [knob {k.name}: {', '.join(f'{v:g}' for v in k.values)}]" for k in strategy_knobs(n))),
        "datasets": (DATASETS, lambda n: (DATASETS.get(n).__doc__ or "").strip().splitlines()[0]),
        "diagnostics": (DIAGNOSTICS, lambda n: (DIAGNOSTICS.get(n).__doc__ or "").strip().splitlines()[0]),
        "suites": (SUITES, _describe_suite),
    }
    for name, (registry, describe) in sections.items():
        if what not in ("all", name):
            continue
        print(f"{name}:")
        for item in registry.list():
            print(f"  {item:<18} {describe(item)}")


def _names(option: str, text: str) -> list[str]:
    names = [d.strip() for d in text.split(",") if d.strip()]
    if not names:
        raise ConfigError(f"{option} {text!r} names nothing; give a comma list of names (see `normbench list`)")
    return names


def grid_from_args(args: argparse.Namespace) -> tuple[list, dict | None, object]:
    """The specs to run, the suite's provenance, and a tuning study's search (or None)."""
    from .suites import definition_hash, expand_grid, get_suite

    overrides = {
        k: v
        for k, v in {
            "epochs": args.epochs,
            "limit": args.limit,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "optimizer": args.optimizer,
            "precision": args.precision,
            "diagnostics": _names("--diagnostics", args.diagnostics) if args.diagnostics is not None else None,
        }.items()
        if v is not None
    }
    if args.suite is not None:
        if args.models is not None or args.strategies is not None or args.datasets is not None:
            raise ConfigError("give either --suite or --models/--strategies/--datasets, not both")
        suite = get_suite(args.suite)
        specs = list(suite.specs)
        if args.seeds:  # every distinct run of every grid, once, with each of the given seeds
            bases = list({s.with_(seed=0).run_id: s.with_(seed=0) for s in specs}.values())
            specs = [b.with_(seed=seed) for b in bases for seed in args.seeds]
        specs = [s.with_(**overrides) for s in specs]
        # a suite changed from the command line is a different benchmark definition
        modified = bool(overrides or args.seeds)
        name = f"{suite.name} (modified)" if modified else suite.name
        if suite.search is not None and any(k in overrides for k, _ in suite.search.values):
            raise ConfigError(f"suite {suite.name!r} searches {', '.join(k for k, _ in suite.search.values)}; "
                              f"--lr cannot fix a searched setting (drop it, or edit the suite's [search])")
        return specs, {**suite.provenance(specs), "name": name}, suite.search
    if args.models is None:
        raise ConfigError("nothing to run: give --suite NAME or --models (see `normbench list`)")
    for option, value in (("--models", args.models), ("--strategies", args.strategies), ("--datasets", args.datasets)):
        if value is not None and not [v for v in value.split(",") if v.strip()]:
            raise ConfigError(f"{option} {value!r} names nothing; give a comma list of names or patterns "
                              f"(see `normbench list`), or leave {option} out for its default")
    specs = expand_grid(args.datasets if args.datasets is not None else "mnist", args.models,
                        args.strategies if args.strategies is not None else "*", args.seeds or [0], overrides)
    return specs, {"name": None, "definition_hash": definition_hash(specs)}, None


def cmd_run(args: argparse.Namespace) -> int:
    from .datasets import load_raw
    from .grid import run_grid, run_search

    specs, suite, search = grid_from_args(args)
    finals = specs
    if search is not None:  # a tuning study: the trials run first; the finals are known only after them
        specs = search.trials(finals)
    if args.device == "gpu":
        backend = keras_backend()
        # starting the backend to look for a GPU prints its C++ start-up lines; no results folder exists yet to log
        # them into, so they are dropped (shown with --verbose)
        with native_log(None, args.verbose, path=os.devnull):
            found = accelerator(backend)
        if found is None:
            raise ConfigError(
                f"--device gpu: the {backend} backend sees no GPU. Install its CUDA build (see docs/backends.md), "
                f"check that the driver works, or run with --device auto/cpu."
            )
    from .preflight import check_run

    ray_only = [o for o, v in (("--address", args.address), ("--gpus-per-run", args.gpus_per_run),
                               ("--cpus-per-run", args.cpus_per_run), ("--max-retries", args.max_retries)) if v is not None]
    if args.executor != "ray" and ray_only:
        raise ConfigError(f"{', '.join(ray_only)}: for --executor ray only; add --executor ray or drop them")
    if args.executor == "local" and args.jobs != 1:
        raise ConfigError(f"--executor local runs one run at a time; drop --executor (or use processes) for "
                          f"--jobs {args.jobs}")
    if args.seeds_together or args.executor == "seeds-together":
        from .executors.together import check_seeds_together

        check_seeds_together(keras_backend(), args.executor, args.jobs)
        args.executor = "seeds-together"
    # everything a run can check before it trains (normbench.preflight, which run_grid calls too), for a dry run too
    check_run(specs, args.results, backend=keras_backend(), engine=args.engine,
              data_dir=args.data_dir, force=args.force, create=not args.dry_run)
    if args.jobs not in (1, "auto") and args.executor != "ray":  # before anything trains, for a dry run too
        warning = too_many_jobs(args.jobs, len(specs))
        if warning:
            print(f"normbench: warning: {warning}", file=sys.stderr, flush=True)
    from .reader import superseded, superseded_message

    old = {r["run_id"]: r for r in superseded(args.results)}  # records of an older schema: never resumed, refused
    if args.dry_run:  # a dry run lists only a grid that would run: it passed the same checks, nothing was created
        from .check import distinct_labels
        from .reader import completed_ids

        complete_ids = set() if args.force else completed_ids(args.results)  # read the folder once
        labels = distinct_labels([{"run_id": s.run_id, "spec": s.to_dict()} for s in specs])
        done = 0
        for s in specs:
            complete = s.run_id in complete_ids
            done += complete
            state = ("complete, skipped on resume" if complete else
                     f"schema-{old[s.run_id]['schema_version']} record, superseded: refused" if s.run_id in old
                     else "to run")
            print(f"{s.run_id}  {labels[s.run_id]}  epochs={s.epochs} limit={s.limit}  [{state}]")
        if old:
            raise ConfigError(superseded_message(args.results, list(old.values()), {s.run_id for s in specs}))
        print(f"{len(specs)} runs: {len(specs) - done} to run, {done} already complete in {args.results}")
        if search is not None:
            later = search.most_trials(finals) - len(specs)
            print(f"the runs above are the first trials of a search ({search.describe()})"
                  + (f"; then at most {later} more trials (the best configurations at full length, rates beyond an "
                     f"edge), chosen from these" if later > 0 else "")
                  + f"; then {len(finals)} finals with each setting's values chosen on validation accuracy")
        return 0
    if old:  # before the data is loaded and the folder held; run_grid refuses it too
        raise ConfigError(superseded_message(args.results, list(old.values()), {s.run_id for s in specs}))
    from .store import hold_folder

    options = None
    jobs = args.jobs
    if jobs == "auto":
        jobs, why = auto_jobs(len(specs))
        print(f"--jobs auto: {jobs} ({why})", flush=True)
    if args.executor == "ray":
        gpus = args.gpus_per_run if args.gpus_per_run is not None else (1 if args.device == "gpu" else 0)
        options = {"address": args.address, "num_cpus": 1.0 if args.cpus_per_run is None else args.cpus_per_run,
                   "max_retries": 2 if args.max_retries is None else args.max_retries, "num_gpus": gpus}
    with hold_folder(args.results), native_log(args.results, args.verbose):
        for name in sorted({s.dataset for s in specs}):  # fail fast on missing data, before any training
            load_raw(name, args.data_dir)
        options = dict(force=args.force, data_dir=args.data_dir, executor=args.executor, jobs=jobs, engine=args.engine,
                       executor_options=options)
        if search is not None:
            counts = run_search(finals, search, args.results, suite=suite, **options)
        else:
            counts = run_grid(specs, args.results, suite=suite, **options)
    return 1 if counts["error"] else 0


@contextlib.contextmanager
def native_log(results_dir, verbose: bool, path=None):
    """Send what the backend's C++ code writes to stderr into RESULTS/backend.log, or ``path`` (unless --verbose).

    Python's own messages (normbench's errors, warnings) still reach the terminal: ``sys.stderr``
    is re-bound to a copy of the original stream before file descriptor 2 is redirected.
    """
    if verbose:
        yield
        return
    path = Path(path) if path is not None else Path(results_dir) / "backend.log"
    try:  # never through a link: RESULTS/backend.log linked elsewhere is refused, naming it
        log = open_for_writing(path, "a", what="the backend's log")
    except OSError:  # no log file (a read-only folder): the backend's lines stay on the terminal
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    old_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
    os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sys.stderr.close()
        sys.stderr = old_stderr
        log.close()


def _thresholds(items: list[str]) -> dict[str, float]:
    load_builtins()
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if name.strip() in out:
            raise ConfigError(f"--threshold for {name.strip()} is given twice ({item!r}); give each dataset once")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError(f"--threshold takes DATASET=ACCURACY, e.g. mnist=0.98; got {item!r}")
        DATASETS.get(name.strip())  # an unknown dataset names the registered ones
        if not (math.isfinite(out[name.strip()]) and 0 < out[name.strip()] <= 1):
            raise ConfigError(f"--threshold {item!r}: the accuracy must be in (0, 1], e.g. {name.strip()}=0.98")
    return out


def cmd_report(args: argparse.Namespace) -> int:
    from .preflight import check_output_folder

    check_output_folder("--out", args.out)
    if args.papers:
        from .report.papers import PAPER_SUITES, has_records, make_papers_report

        folder = Path(args.papers)
        if not any(has_records(folder / suite) for suite in PAPER_SUITES):
            raise ConfigError(f"--papers {folder}: no records of any paper suite in it (expected records or a pack "
                              f"in {folder}/{{{','.join(PAPER_SUITES)}}}). Run `make papers`, or "
                              f"`normbench run --suite paper-bn --results {folder}/paper-bn` and the others")
        make_papers_report(args.papers, args.out)
        return 0
    from .report import make_report

    thresholds = _thresholds(args.threshold)
    make_report(args.results, args.out, thresholds=thresholds, published_dir=args.published)
    return 0


RESUME = " Finished runs are saved; run the same command again to resume."


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGINT and SIGTERM (a scheduler, `kill`): `run` stops at its next safe point, the rest at once (normbench.stop)
    with stop.handling(deferred=args.command == "run"):
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a closed pipe or a full disk shows here, not after main returns
        return code
    except NormbenchError as e:
        print(f"normbench: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if not isinstance(e, BrokenPipeError) and e.errno != errno.ENOSPC:
            raise
        sys.stdout = open(os.devnull, "w")  # nothing more can be shown; keep Python's exit from failing on it
        why = ("output closed" if isinstance(e, BrokenPipeError)
               else f"no space left on the device while writing {e.filename}; free some space there (or give "
                    f"another folder)" if e.filename  # the writers name their file (normbench.files.naming)
               else "no space left on the device for the standard output")
        print(f"normbench: {why}; stopped.{RESUME if args.command == 'run' else ''}", file=sys.stderr)
        return 141 if isinstance(e, BrokenPipeError) else 2
    except OutputClosed:
        sys.stdout = open(os.devnull, "w")  # nothing more can be shown; keep Python's exit from failing on it
        print(f"normbench: output closed; stopped.{RESUME if args.command == 'run' else ''}", file=sys.stderr)
        return 141
    except KeyboardInterrupt as e:
        what = RESUME if args.command == "run" else " Nothing was half-written; run the same command again."
        print(f"\nnormbench: interrupted.{what}", file=sys.stderr)
        return e.exit_code if isinstance(e, stop.StopRequested) else 130


def _dispatch(args: argparse.Namespace) -> int:
    """One sub-command; errors are turned into messages and exit codes by :func:`main`."""
    if getattr(args, "jobs", 1) != 1:  # the parent starts the backend too (cost estimates): never preallocate the GPU
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    _select_backend(args)
    if args.command == "list":
        cmd_list(args.what)
        return 0
    if args.command == "report":
        return cmd_report(args)
    if args.command == "pack":
        from .pack import pack
        from .preflight import check_output_folder
        from .reader import load_records

        check_output_folder("--out", args.out)
        records = load_records(args.results)  # the caller reads, pack writes
        if not records:
            raise NormbenchError(f"{args.results} holds no records to pack")
        sizes = pack(records, args.out, shared_device=args.shared_device)
        print(f"packed {args.results} into {args.out}: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()))
        return 0
    if args.command == "check":
        from .check import run_check

        return run_check(args.baseline, args.current, args.rules)
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
