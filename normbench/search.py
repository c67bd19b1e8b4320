"""A tuning protocol built into suites: trials on a grid of settings, selection on validation, finals with new seeds.

A suite file may declare a ``[search]`` table::

    [search]
    learning_rate = [0.003, 0.01, 0.03, 0.1, 0.3]   # a list per searched setting (learning_rate required)
    trial_seeds = [100]                             # seeds of the trials; never the grids' seeds

Every run of the suite's grids (its final seeds) is then made in two phases, by ``normbench run``:

1. **trials**: for every distinct setting of the grids (dataset, model, strategy and the rest, without
   the seed), every combination of the searched values, once per trial seed. Every strategy gets the
   same combinations: the same tuning budget.
2. **finals**: each setting re-run with its chosen values and each of the grid's seeds. The chosen
   values are those whose trials have the highest mean *validation* accuracy at their last epoch (a
   diverged trial scores 0; ties go to the first combination in grid order). The selection reads the
   records' validation history only: :func:`trial_scores` never touches a test metric.

Records say their phase in ``suite.phase`` (``trial`` or ``final``), and a final's ``suite.chosen``
holds the values, their score and the number of trials. Resume works across phases: complete
trials are not trained again, and the choice is made again from their records (the same choice).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

from .errors import ConfigError
from .spec import RunSpec

SEARCHABLE = ("learning_rate", "momentum", "weight_decay")
SELECTION_METRIC = "val_accuracy"  # the only metric a choice may read: validation, never test


@dataclass(frozen=True)
class Search:
    """The searched settings (each a tuple of values, in grid order) and the trials' seeds."""

    values: tuple[tuple[str, tuple], ...]
    trial_seeds: tuple[int, ...]

    @classmethod
    def from_table(cls, table, where: str) -> "Search":
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [search] must be a table, e.g. learning_rate = [0.01, 0.1] and trial_seeds = [100]")
        unknown = sorted(set(table) - set(SEARCHABLE) - {"trial_seeds"})
        if unknown:
            raise ConfigError(f"{where}: [search] cannot search {unknown}; it searches {list(SEARCHABLE)} "
                              f"(and takes trial_seeds)")
        if "learning_rate" not in table:
            raise ConfigError(f"{where}: [search] needs learning_rate = [...] (a log grid, e.g. [0.01, 0.03, 0.1])")
        values = []
        for name in SEARCHABLE:
            if name not in table:
                continue
            v = table[name]
            if (not isinstance(v, list) or len(v) < 2 or len(set(v)) != len(v)
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
                raise ConfigError(f"{where}: [search] {name} = {v!r}; expected a list of at least two distinct numbers")
            values.append((name, tuple(sorted(float(x) for x in v))))
        seeds = table.get("trial_seeds")
        if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds)):
            raise ConfigError(f"{where}: [search] trial_seeds = {seeds!r}; expected a non-empty list of distinct "
                              f"integers >= 0, e.g. trial_seeds = [100]")
        return cls(tuple(values), tuple(seeds))

    def as_dict(self) -> dict:
        return {**{name: list(v) for name, v in self.values}, "trial_seeds": list(self.trial_seeds)}

    def combinations(self) -> list[dict]:
        names = [n for n, _ in self.values]
        return [dict(zip(names, combo)) for combo in itertools.product(*(v for _, v in self.values))]

    def base(self, spec: RunSpec) -> RunSpec:
        """The setting a spec belongs to: its seed and searched values set aside."""
        defaults = {f.name: f.default for f in dataclasses.fields(RunSpec) if f.name in SEARCHABLE}
        return spec.with_(seed=0, **{name: defaults[name] for name, _ in self.values})

    def bases(self, specs) -> list[RunSpec]:
        return list({self.base(s).run_id: self.base(s) for s in specs}.values())

    def check_seeds(self, specs) -> None:
        clash = sorted({s.seed for s in specs} & set(self.trial_seeds))
        if clash:
            raise ConfigError(f"[search] trial_seeds {clash} are also final seeds of the grids; a final must not "
                              f"repeat a trial (choose trial seeds the grids do not use)")

    def trials(self, specs) -> list[RunSpec]:
        """Every setting x every combination x every trial seed."""
        self.check_seeds(specs)
        return [b.with_(seed=seed, **combo) for b in self.bases(specs) for combo in self.combinations()
                for seed in self.trial_seeds]


def trial_score(record: dict | None) -> float | None:
    """A trial's score: its last epoch's validation accuracy (0 when it diverged); None when it has not finished.
    Reads the validation history only."""
    if record is None or record.get("status") not in ("ok", "diverged"):
        return None
    if record["status"] == "diverged":
        return 0.0
    values = [h.get(SELECTION_METRIC) for h in record["history"]]
    value = values[-1] if values else None
    return float(value) if value is not None and math.isfinite(value) else 0.0


@dataclass(frozen=True)
class Choice:
    """One setting's choice: the chosen values, their mean score, every combination's mean score (grid order)."""

    base: RunSpec
    values: dict
    score: float
    table: tuple[tuple[tuple, float], ...]
    trials: int

    def at_edge(self, search: Search) -> list[str]:
        """The searched settings whose chosen value is the smallest or largest of its grid."""
        return [name for name, grid in search.values if self.values[name] in (grid[0], grid[-1])]


def choose(search: Search, specs, scores: dict[str, float | None]) -> tuple[list[Choice], list[str]]:
    """The choice of every setting of ``specs`` from its trials' scores (``run_id -> score``); the labels of
    settings that cannot be chosen yet (a trial without a score), which get no finals."""
    choices, missing = [], []
    for base in search.bases(specs):
        table, complete = [], True
        for combo in search.combinations():
            got = [scores.get(base.with_(seed=seed, **combo).run_id) for seed in search.trial_seeds]
            if any(g is None for g in got):
                complete = False
                break
            table.append((tuple(combo.values()), sum(got) / len(got)))
        if not complete:
            missing.append(base.label.rsplit("/", 1)[0])
            continue
        best = max(range(len(table)), key=lambda i: (table[i][1], -i))  # the first of equal scores
        names = [n for n, _ in search.values]
        choices.append(Choice(base, dict(zip(names, table[best][0])), table[best][1], tuple(table),
                              len(table) * len(search.trial_seeds)))
    return choices, missing


def finals(search: Search, specs, choices: list[Choice]) -> list[RunSpec]:
    """The grids' specs with their setting's chosen values (settings without a choice are left out)."""
    chosen = {c.base.run_id: c.values for c in choices}
    return [s.with_(**chosen[search.base(s).run_id]) for s in specs if search.base(s).run_id in chosen]
