"""Suites: named grids of run specs, defined as TOML files under ``benchmarks/suites/``.

A suite file has a ``description``, optional ``[defaults]`` (any RunSpec field) and
one or more ``[[grid]]`` tables with ``datasets``, ``models``, ``strategies`` (names
or glob patterns) and ``seeds``; any other key in a grid table is a RunSpec field
that overrides the defaults for that grid. Every grid expands to the cross product.
An optional ``[search]`` table makes the suite a tuning study (:mod:`normbench.search`):
trials over the searched settings first, then the grids' runs with the chosen values.
An optional ``[verdicts]`` table states how the report decides: ``reference`` (the strategy every
other one is tested against, default batch norm) and ``margin_points`` (the equivalence margin of
the TOST, in accuracy points, default 0.5). It is recorded with every run's suite provenance.
An optional ``[convergence]`` table states the report's budget-and-convergence criteria (:func:`parse_convergence`):
``metric`` (``val_accuracy``, the only one), ``target`` (the validation accuracy for time-to-target: one number, or a
table per dataset), ``plateau_points`` (a cell has converged when its seeds' mean validation accuracy rose by less than
this many points over the last epoch) and ``reference_target`` (a test-accuracy floor for one strategy on one model,
which the report says is met or not). It is recorded with every run's suite provenance too.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .builtins import load_builtins, suites_dir
from .env import SUITES_DIR_ENV
from .errors import ConfigError, UnknownNameError
from .files import read_small_file
from .preflight import validate_specs
from .registry import DATASETS, MODELS, NORMS, SUITES, as_floats
from .search import Search
from .spec import RunSpec, definition_hash  # noqa: F401  (definition_hash: used through here too)

GRID_AXES = ("datasets", "models", "strategies", "seeds")
SPEC_FIELDS = {f.name for f in dataclasses.fields(RunSpec)} - {"model", "strategy", "dataset", "seed"}


@dataclass(frozen=True)
class Suite:
    """A named, versioned list of run specs."""

    name: str
    description: str
    specs: tuple[RunSpec, ...]  # with a search: the finals' grid, before their searched values are chosen
    path: str
    search: Search | None = None  # a tuning study's [search] (trials first, then the specs with chosen values)
    verdicts: dict | None = None  # [verdicts]: reference and margin_points for the report's primary family
    convergence: dict | None = None  # [convergence]: metric, target, plateau_points, reference_target for the report

    def provenance(self, specs=None) -> dict:
        """What every record of this suite says about it: name, definition hash, and [verdicts] and [convergence]
        when stated."""
        out = {"name": self.name, "definition_hash": definition_hash(self.specs if specs is None else specs)}
        if self.verdicts:
            out["verdicts"] = dict(self.verdicts)
        if self.convergence:
            out["convergence"] = dict(self.convergence)
        return out

    @property
    def definition_hash(self) -> str:
        return definition_hash(self.specs)


def expand_grid(
    datasets, models, strategies, seeds, overrides: dict[str, Any] | None = None
) -> list[RunSpec]:
    """The cross product of names/patterns as RunSpecs (order: dataset, model, strategy, seed)."""
    load_builtins()
    overrides = dict(overrides or {})
    bad = sorted(set(overrides) - SPEC_FIELDS)
    if bad:
        raise ConfigError(f"unknown run setting(s) {bad}; valid settings: {sorted(SPEC_FIELDS)}")
    specs = []
    for d in DATASETS.expand(datasets):
        for m in MODELS.expand(models):
            for s in NORMS.expand(strategies):
                params = {k: as_floats(f, overrides[k]) for k, f in
                          (("model_params", MODELS.get(m)), ("strategy_params", NORMS.get(s)))
                          if isinstance(overrides.get(k), dict)}
                for seed in seeds:
                    specs.append(RunSpec(model=m, strategy=s, dataset=d, seed=int(seed), **{**overrides, **params}))
    return specs


SUITE_FIX = "give a suite name from `normbench list suites` or the path of a suite .toml file"


def load_suite(path: Path) -> Suite:
    """Parse one suite file; any problem names the file and the key."""
    text = read_small_file(path, "suite file", SUITE_FIX)  # never a FIFO, a device or a link loop: each is named
    try:
        doc = tomllib.loads(text.decode("utf-8-sig"))  # an editor's byte-order mark is not TOML
    except UnicodeDecodeError as e:
        raise ConfigError(f"suite file {path}: not UTF-8 text ({e.reason} at byte {e.start}); a suite file is TOML, "
                          f"written as UTF-8") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"suite file {path}: cannot parse it as TOML ({e})") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(f"suite file {path}: cannot parse it as TOML (nested too deeply); a suite file is a few "
                          f"flat tables and arrays") from None
    unknown = sorted(set(doc) - {"description", "defaults", "grid", "search", "verdicts", "convergence"})
    if unknown:
        raise ConfigError(f"suite file {path}: unknown top-level key(s) {unknown}; use description, defaults, [[grid]], "
                          f"[search], [verdicts], [convergence]")
    verdicts = parse_verdicts(doc["verdicts"], f"suite file {path}") if "verdicts" in doc else None
    convergence = parse_convergence(doc["convergence"], f"suite file {path}") if "convergence" in doc else None
    search = Search.from_table(doc["search"], f"suite file {path}") if "search" in doc else None
    grids = doc.get("grid")
    if not grids:
        raise ConfigError(f"suite file {path}: no [[grid]] table; add one with datasets, models, strategies, seeds")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"suite file {path}: [defaults] must be a table of run settings, got {defaults!r}")
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise ConfigError(f"suite file {path}: 'grid' must be an array of [[grid]] tables")
    specs: list[RunSpec] = []
    for i, grid in enumerate(grids):
        missing = [a for a in GRID_AXES if a not in grid]
        if missing:
            raise ConfigError(f"suite file {path}: grid {i + 1} lacks {missing}")
        for axis in ("datasets", "models", "strategies"):
            value = grid[axis]
            names = [v for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()] \
                if isinstance(value, (str, list)) else []
            if not names or not (isinstance(value, str) or all(isinstance(v, str) and v.strip() for v in value)):
                raise ConfigError(f"suite file {path}, [[grid]] {i + 1}: {axis} = {value!r}; expected a list of names "
                                  f"or glob patterns, e.g. {axis} = [\"*\"]")
        seeds = grid["seeds"]
        if (not isinstance(seeds, list) or not seeds
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in seeds)
                or len(set(seeds)) != len(seeds)):
            raise ConfigError(f"suite file {path}, [[grid]] {i + 1}: seeds = {seeds!r}; expected a non-empty list of "
                              f"distinct integers >= 0, e.g. seeds = [0, 1, 2]")
        own = {k: v for k, v in grid.items() if k not in GRID_AXES}
        settings = {**defaults, **own}
        try:
            grid_specs = expand_grid(grid["datasets"], grid["models"], grid["strategies"], grid["seeds"], settings)
            validate_specs(grid_specs)  # strategy and model parameters, diagnostics: named here, with the file
            specs += grid_specs
        except (ConfigError, UnknownNameError) as e:
            where = f"[[grid]] {i + 1}" + (" (with [defaults])" if defaults else "")
            raise type(e)(f"suite file {path}, {where}: {e}") from None
    seen: dict[str, RunSpec] = {}
    for s in specs:
        if s.run_id in seen:
            raise ConfigError(f"suite file {path}: the grids repeat the run {s.label} ({s.run_id}); each run must "
                              f"appear once: drop it from all grids but one")
        seen[s.run_id] = s
    if search is not None:
        try:
            search = search.resolved(specs)  # the budget every strategy gets, checked
            trials = search.trials(specs)
            # every value a later phase can train: full-length runs of each configuration, rates beyond the edges
            bases = search.bases(specs)
            full = [search.apply(b, c) for b in bases for c in search.configurations(b)]
            validate_specs(trials + full)
        except ConfigError as e:
            raise ConfigError(f"suite file {path}: {e}") from None
    return Suite(path.stem, doc.get("description", ""), tuple(specs), str(path), search, verdicts, convergence)


def parse_verdicts(table, where: str) -> dict:
    """A suite's ``[verdicts]`` table, checked: a registered reference strategy and a positive margin in points."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [verdicts] must be a table, e.g. reference = \"batchnorm\" and margin_points = 0.5")
    unknown = sorted(set(table) - {"reference", "margin_points"})
    if unknown:
        raise ConfigError(f"{where}: [verdicts] takes reference and margin_points, not {unknown}")
    out = {}
    if "reference" in table:
        load_builtins()
        if not isinstance(table["reference"], str):
            raise ConfigError(f"{where}: [verdicts] reference = {table['reference']!r}; give a strategy name")
        NORMS.get(table["reference"])  # an unknown name lists the valid ones
        out["reference"] = table["reference"]
    if "margin_points" in table:
        out["margin_points"] = _points(table["margin_points"], f"{where}: [verdicts] margin_points", 0.5)
    return out


def _points(value, what: str, example: float) -> float:
    """A number of accuracy points in (0, 100), else an error naming ``what`` and an example."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 100:
        raise ConfigError(f"{what} = {value!r}; expected a number of accuracy points in (0, 100), e.g. {example:g}")
    return float(value)


CONVERGENCE_KEYS = ("metric", "target", "plateau_points", "reference_target")
CONVERGENCE_METRICS = ("val_accuracy",)  # validation only: nothing the report chooses may read the test split
REFERENCE_TARGET_KEYS = ("strategy", "model", "test_accuracy", "dataset")
CONVERGENCE_EXAMPLE = ('e.g. metric = "val_accuracy", target = 0.97, plateau_points = 0.2, '
                       'reference_target = {strategy = "batchnorm", model = "mlp8", test_accuracy = 0.98}')


def _fraction(value) -> bool:
    """An accuracy in (0, 1]: a number, never a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1


def _registered(registry, name: str, where: str) -> None:
    """A registered name, else the registry's error (it lists the valid names) led by the key that gave it."""
    try:
        registry.get(name)
    except UnknownNameError as e:
        raise UnknownNameError(f"{where}: {e}") from None


def parse_convergence(table, where: str) -> dict:
    """A suite's ``[convergence]`` table, checked: the metric (validation accuracy), a target in (0, 1] (one number or
    one per registered dataset), a positive plateau in points, and a reference target naming a registered strategy
    and model with a test-accuracy floor in (0, 1] (and optionally a registered dataset)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [convergence] must be a table, {CONVERGENCE_EXAMPLE}")
    unknown = sorted(set(table) - set(CONVERGENCE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: [convergence] takes {', '.join(CONVERGENCE_KEYS)}, not {unknown}")
    load_builtins()
    out: dict = {}
    if "metric" in table:
        if table["metric"] not in CONVERGENCE_METRICS:
            raise ConfigError(f"{where}: [convergence] metric = {table['metric']!r}; the report's curves, targets and "
                              f"ranks use validation accuracy only (never test): give metric = \"val_accuracy\" or "
                              f"leave it out")
        out["metric"] = table["metric"]
    if "target" in table:
        t = table["target"]
        if isinstance(t, dict) and t:
            for dataset, value in t.items():
                _registered(DATASETS, dataset, f"{where}: [convergence] target.{dataset}")
                if not _fraction(value):
                    raise ConfigError(f"{where}: [convergence] target.{dataset} = {value!r}; expected a validation "
                                      f"accuracy in (0, 1], e.g. target = {{{dataset} = 0.97}}")
            out["target"] = {d: float(v) for d, v in sorted(t.items())}
        elif _fraction(t):
            out["target"] = float(t)
        else:
            raise ConfigError(f"{where}: [convergence] target = {t!r}; expected a validation accuracy in (0, 1] "
                              f"(target = 0.97) or one per dataset (target = {{mnist = 0.97, cifar10 = 0.45}})")
    if "plateau_points" in table:
        out["plateau_points"] = _points(table["plateau_points"], f"{where}: [convergence] plateau_points", 0.2)
    if "reference_target" in table:
        r = table["reference_target"]
        example = 'reference_target = {strategy = "batchnorm", model = "mlp8", test_accuracy = 0.98}'
        if not isinstance(r, dict):
            raise ConfigError(f"{where}: [convergence] reference_target = {r!r}; expected a table, {example}")
        missing = [k for k in ("strategy", "model", "test_accuracy") if k not in r]
        extra = sorted(set(r) - set(REFERENCE_TARGET_KEYS))
        if missing or extra:
            raise ConfigError(f"{where}: [convergence] reference_target " + (f"lacks {missing}" if missing else
                              f"takes {', '.join(REFERENCE_TARGET_KEYS)}, not {extra}") + f"; {example}")
        for key, registry in (("strategy", NORMS), ("model", MODELS), ("dataset", DATASETS)):
            if key in r:
                if not isinstance(r[key], str):
                    raise ConfigError(f"{where}: [convergence] reference_target.{key} = {r[key]!r}; give a {key} name")
                _registered(registry, r[key], f"{where}: [convergence] reference_target.{key}")
        if not _fraction(r["test_accuracy"]):
            raise ConfigError(f"{where}: [convergence] reference_target.test_accuracy = {r['test_accuracy']!r}; "
                              f"expected a test accuracy in (0, 1], e.g. 0.98")
        out["reference_target"] = {**{k: r[k] for k in REFERENCE_TARGET_KEYS if k in r},
                                   "test_accuracy": float(r["test_accuracy"])}
    return out


def get_suite(name: str) -> Suite:
    """A registered suite by name, or a suite file by path (anything ending in .toml or holding a path separator)."""
    if name.endswith(".toml") or os.sep in name or (os.altsep and os.altsep in name):
        path = Path(name)
        if path.is_dir():
            raise ConfigError(f"--suite {path} is a folder; give one suite .toml file in it (or set "
                              f"{SUITES_DIR_ENV}={path} and give a suite name)")
        return load_suite(path)  # a missing file, a link loop, a FIFO, a device: load_suite says which
    load_builtins()  # registers the suite files (normbench.builtins.register_suites)
    if not len(SUITES):
        raise ConfigError(
            f"no suite files found in {suites_dir()}. Run from a source checkout (pip install -e .) "
            f"or set {SUITES_DIR_ENV} to a folder of suite .toml files."
        )
    return load_suite(SUITES.get(name))
