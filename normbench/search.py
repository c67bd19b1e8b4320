"""A tuning protocol built into suites: trials on a grid of settings, selection on validation, finals with new seeds.

A suite file may declare a ``[search]`` table::

    [search]
    learning_rate = [0.003, 0.01, 0.03, 0.1, 0.3]   # a list per searched setting (learning_rate required)
    trial_seeds = [100, 101, 102]                   # seeds of the trials; never the grids' seeds
    knobs = true                  # also search each strategy's own knobs (norms.Knob), jointly with the rate
    budget = 15                   # configurations per setting, equal for every strategy (default: the largest need)
    halving = { eta = 3, epochs = 1 }   # successive halving: all configurations for 1 epoch on the first trial
                                        # seed, the best 1/3 at full length on every trial seed
    extend = 2                    # a choice at the edge of the rate grid gets up to 2 more rates beyond it

Every run of the suite's grids (its final seeds) is then made in phases, by ``normbench run``:

1. **trials**. For every distinct setting of the grids (dataset, model, strategy and the rest, without the seed)
   its *configurations*: with ``knobs``, every combination of the strategy's declared knob values (max-norm's
   radius, DyT's alpha0, NF's AGC lambda, SELU's AlphaDropout rate; see ``normbench list strategies``) times a
   learning-rate grid, sized so that every strategy has exactly ``budget`` configurations: a strategy with m knob
   combinations gets budget / m rates, log-spaced over the range of ``learning_rate`` (the list itself when the
   counts agree). A strategy without knobs spends its budget on a finer rate grid. Without ``knobs`` the
   configurations are the product of the searched lists, the same for every strategy (the protocol of records
   made before knobs). Without ``halving`` every configuration trains at full length on every trial seed; with it,
   rung 0 trains every configuration for ``halving.epochs`` epochs on the first trial seed, and the best
   ceil(budget / eta) of them (by rung-0 validation accuracy) train at full length on every trial seed (rung 1).
   With ``extend``, a choice whose learning rate is the edge of its grid is bracketed: the next rate beyond the
   edge (the grid's own spacing) trains at full length on every trial seed, up to ``extend`` times per setting;
   these trials are counted and reported with the setting's cost.
2. **finals**: each setting re-run with its chosen values and each of the grid's seeds. The chosen values are
   those whose full-length trials have the highest mean *validation* accuracy at their last epoch over the trial
   seeds (a diverged trial scores 0; ties go to the first configuration in grid order). The selection reads the
   records' validation history only: :func:`trial_score` never touches a test metric.

:func:`advance` is the protocol in one pure function: given the scores of the trials finished so far, the trials
still to run and the choices made. ``normbench run`` calls it until nothing is left to run; the report calls it on
the records and so makes exactly the choices the run made. Records say their phase in ``suite.phase`` (``trial``
or ``final``) and a trial its rung in ``suite.rung``; a final's ``suite.chosen`` holds the values, their score,
the runner-up's, and what the setting's search cost (trials and epochs). Resume works across phases.
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
KNOB_PREFIX = "strategy_params."  # a knob's name among a configuration's values
MAX_EXTEND = 5


@dataclass(frozen=True)
class Halving:
    """Successive halving in two rungs: every configuration for ``epochs`` epochs on the first trial seed, then the
    best ceil(n / eta) at full length on every trial seed."""

    eta: int = 3
    epochs: int = 1

    def keep(self, n: int) -> int:
        return max(1, math.ceil(n / self.eta))


def _knobs_of(strategy: str) -> tuple:
    from .builtins import load_builtins
    from .norms import strategy_knobs

    load_builtins()
    return strategy_knobs(strategy)


def _log_grid(low: float, high: float, n: int) -> tuple[float, ...]:
    """n rates log-spaced from ``low`` to ``high``, rounded to 3 significant digits (clean run ids)."""
    if n == 1:
        return (low,)
    ratio = (high / low) ** (1 / (n - 1))
    return tuple(float(f"{low * ratio ** i:.3g}") for i in range(n))


@dataclass(frozen=True)
class Search:
    """The searched settings (each a tuple of values, in grid order), the trials' seeds, and the protocol."""

    values: tuple[tuple[str, tuple], ...]
    trial_seeds: tuple[int, ...]
    knobs: bool = False
    budget: int | None = None  # configurations per setting (with knobs); resolved against the suite's strategies
    halving: Halving | None = None
    extend: int = 0

    @classmethod
    def from_table(cls, table, where: str) -> "Search":
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [search] must be a table, e.g. learning_rate = [0.01, 0.1] and trial_seeds = [100]")
        protocol = {"trial_seeds", "knobs", "budget", "halving", "extend"}
        unknown = sorted(set(table) - set(SEARCHABLE) - protocol)
        if unknown:
            raise ConfigError(f"{where}: [search] cannot search {unknown}; it searches {list(SEARCHABLE)} "
                              f"(and takes {', '.join(sorted(protocol))})")
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
        if values[0][1][0] <= 0:
            raise ConfigError(f"{where}: [search] learning_rate = {table['learning_rate']!r}; rates must be > 0")
        seeds = table.get("trial_seeds")
        if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds)):
            raise ConfigError(f"{where}: [search] trial_seeds = {seeds!r}; expected a non-empty list of distinct "
                              f"integers >= 0, e.g. trial_seeds = [100, 101, 102]")
        knobs = table.get("knobs", False)
        if not isinstance(knobs, bool):
            raise ConfigError(f"{where}: [search] knobs = {knobs!r}; expected true (search each strategy's declared "
                              f"knobs with the learning rate) or false")
        budget = table.get("budget")
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or not 2 <= budget <= 1000):
            raise ConfigError(f"{where}: [search] budget = {budget!r}; expected an integer number of configurations "
                              f"per setting in [2, 1000], e.g. budget = 15")
        if budget is not None and not knobs:
            raise ConfigError(f"{where}: [search] budget needs knobs = true (without knobs every strategy gets the "
                              f"product of the searched lists)")
        halving = table.get("halving")
        if halving is not None:
            if not isinstance(halving, dict) or set(halving) - {"eta", "epochs"} or not all(
                    isinstance(halving.get(k, 2), int) and not isinstance(halving.get(k, 2), bool) for k in halving):
                raise ConfigError(f"{where}: [search] halving = {halving!r}; expected a table of integers "
                                  f"{{ eta = 3, epochs = 1 }}")
            halving = Halving(**halving)
            if halving.eta < 2 or halving.epochs < 1:
                raise ConfigError(f"{where}: [search] halving = {{ eta = {halving.eta}, epochs = {halving.epochs} }}; "
                                  f"eta must be >= 2 and epochs >= 1")
        extend = table.get("extend", 0)
        if not isinstance(extend, int) or isinstance(extend, bool) or not 0 <= extend <= MAX_EXTEND:
            raise ConfigError(f"{where}: [search] extend = {extend!r}; expected an integer in [0, {MAX_EXTEND}] (rates "
                              f"added beyond the edge of the grid when a choice lands on it)")
        return cls(tuple(values), tuple(seeds), knobs, budget, halving, extend)

    def as_dict(self) -> dict:
        out = {**{name: list(v) for name, v in self.values}, "trial_seeds": list(self.trial_seeds)}
        if self.knobs:
            out.update(knobs=True, budget=self.budget)
        if self.halving:
            out["halving"] = dataclasses.asdict(self.halving)
        if self.extend:
            out["extend"] = self.extend
        return out

    # --- configurations ---------------------------------------------------------------------------------------

    @property
    def _others(self) -> list[tuple[str, tuple]]:
        """The searched settings other than the learning rate (the same for every strategy)."""
        return [(n, v) for n, v in self.values if n != "learning_rate"]

    @property
    def _rates(self) -> tuple:
        return dict(self.values)["learning_rate"]

    def knobs_for(self, base: RunSpec) -> tuple:
        """The knobs this search tunes for ``base``'s strategy (none without ``knobs``)."""
        return _knobs_of(base.strategy) if self.knobs else ()

    def knob_combinations(self, base: RunSpec) -> int:
        return math.prod(len(k.values) for k in self.knobs_for(base))

    def rate_grid(self, base: RunSpec) -> tuple:
        """``base``'s learning rates: the list, or (with knobs) budget / (other settings x knob combinations)
        rates log-spaced over its range."""
        if not self.knobs:
            return self._rates
        per = math.prod(len(v) for _, v in self._others) * self.knob_combinations(base)
        n = (self.budget or 0) // per
        rates = self._rates
        return rates if n == len(rates) else _log_grid(rates[0], rates[-1], n)

    def configurations(self, base: RunSpec) -> list[dict]:
        """Every configuration of ``base`` in grid order: {"learning_rate": .., other settings.., and each knob as
        "strategy_params.NAME"}."""
        axes = [("learning_rate", self.rate_grid(base)), *self._others,
                *((KNOB_PREFIX + k.name, k.values) for k in self.knobs_for(base))]
        return [dict(zip([n for n, _ in axes], combo)) for combo in itertools.product(*(v for _, v in axes))]

    def resolved(self, specs) -> "Search":
        """This search with its budget set and checked against the suite's strategies: every strategy must get
        exactly ``budget`` configurations with at least 2 learning rates."""
        if not self.knobs:
            return self
        for spec in specs:
            fixed = sorted({k.name for k in _knobs_of(spec.strategy)} & set(spec.strategy_params))
            if fixed:
                raise ConfigError(f"[search] knobs = true searches {spec.strategy!r}'s {fixed}, which a grid fixes in "
                                  f"its strategy_params ({spec.label}): drop it from the grid, or set knobs = false")
        per_other = math.prod(len(v) for _, v in self._others)
        need = {b.strategy: per_other * self.knob_combinations(b) for b in self.bases(specs)}
        budget = self.budget if self.budget is not None else max(need.values()) * len(self._rates)
        for strategy, per in sorted(need.items()):
            if budget % per or budget // per < 2:
                raise ConfigError(f"[search] budget {budget}: strategy {strategy!r} has {per} configurations per "
                                  f"learning rate (its knobs x the other searched settings), so the budget must be a "
                                  f"multiple of {per} with at least 2 learning rates: give budget = "
                                  f"{math.lcm(*need.values()) * 2} or another common multiple")
        return dataclasses.replace(self, budget=budget)

    # --- specs --------------------------------------------------------------------------------------------------

    def base(self, spec: RunSpec) -> RunSpec:
        """The setting a spec belongs to: its seed, searched values and searched knobs set aside."""
        defaults = {f.name: f.default for f in dataclasses.fields(RunSpec) if f.name in SEARCHABLE}
        out = spec.with_(seed=0, **{name: defaults[name] for name, _ in self.values})
        if self.knobs:
            searched = {k.name for k in _knobs_of(spec.strategy)}
            out = out.with_(strategy_params={k: v for k, v in spec.strategy_params.items() if k not in searched})
        return out

    def bases(self, specs) -> list[RunSpec]:
        return list({self.base(s).run_id: self.base(s) for s in specs}.values())

    def check_seeds(self, specs) -> None:
        clash = sorted({s.seed for s in specs} & set(self.trial_seeds))
        if clash:
            raise ConfigError(f"[search] trial_seeds {clash} are also final seeds of the grids; a final must not "
                              f"repeat a trial (choose trial seeds the grids do not use)")

    @staticmethod
    def apply(base: RunSpec, config: dict, **changes) -> RunSpec:
        """``base`` with a configuration's values (knobs into strategy_params) and ``changes`` (seed, epochs)."""
        plain = {k: v for k, v in config.items() if not k.startswith(KNOB_PREFIX)}
        knobs = {k[len(KNOB_PREFIX):]: v for k, v in config.items() if k.startswith(KNOB_PREFIX)}
        params = {"strategy_params": {**base.strategy_params, **knobs}} if knobs else {}
        return base.with_(**plain, **params, **changes)

    def trials(self, specs) -> list[RunSpec]:
        """The first phase's trials: rung 0 with halving (every configuration, the first trial seed, short), else
        every configuration x every trial seed at full length."""
        self.check_seeds(specs)
        if self.halving:
            return [self.apply(b, c, seed=self.trial_seeds[0], epochs=self.halving.epochs)
                    for b in self.bases(specs) for c in self.configurations(b)]
        return [self.apply(b, c, seed=seed) for b in self.bases(specs) for c in self.configurations(b)
                for seed in self.trial_seeds]

    def most_trials(self, specs) -> int:
        """An upper bound of the trials the whole search trains (for a dry run)."""
        n = 0
        for b in self.bases(specs):
            configs = len(self.configurations(b))
            full = self.halving.keep(configs) if self.halving else configs
            n += (configs if self.halving else 0) + (full + self.extend) * len(self.trial_seeds)
        return n

    def describe(self) -> str:
        """One line: what this search does."""
        parts = [f"learning rate over {self._rates[0]:g}-{self._rates[-1]:g}"]
        parts += [f"{n} in {', '.join(f'{x:g}' for x in v)}" for n, v in self._others]
        if self.knobs:
            parts.append(f"each strategy's knobs, {self.budget} configurations per setting")
        if self.halving:
            parts.append(f"successive halving (rung 0: {self.halving.epochs} epoch(s), 1 seed; the best 1/"
                         f"{self.halving.eta} at full length)")
        parts.append(f"{len(self.trial_seeds)} trial seed(s)")
        if self.extend:
            parts.append(f"up to {self.extend} rate(s) beyond an edge choice")
        return "; ".join(parts)


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
    """One setting's choice: the chosen values, their mean score over the trial seeds, every full-length
    configuration's mean score and seed spread (grid order, extensions last), and what the search cost."""

    base: RunSpec
    values: dict
    score: float
    table: tuple[tuple[tuple, float], ...]
    trials: int  # trials trained for this setting, every rung and extension
    epochs: int = 0  # their epochs, summed
    spread: tuple[float, ...] = ()  # per row of ``table``: the std of its trial seeds' scores (NaN for one seed)
    names: tuple[str, ...] = ()  # the value names of ``table``'s tuples
    edge: tuple[str, ...] = ()  # settings whose chosen value is the edge of its grid, after any extension
    extended: int = 0  # rates added beyond the edge
    rung0: tuple[tuple[tuple, float], ...] = ()  # with halving: every configuration's rung-0 score

    def at_edge(self, search: Search | None = None) -> list[str]:
        """The searched settings whose chosen value is the smallest or largest of its grid (extensions included)."""
        return list(self.edge)

    @property
    def runner_up(self) -> float | None:
        """The second-best full-length mean score (None with one configuration)."""
        scores = sorted((s for _, s in self.table), reverse=True)
        return scores[1] if len(scores) > 1 else None

    def as_dict(self) -> dict:
        """What a final's record says about its setting's choice (``suite.chosen``)."""
        return {"values": {k: v for k, v in self.values.items()}, "score": self.score, "runner_up": self.runner_up,
                "trials": self.trials, "trial_epochs": self.epochs, "at_edge": list(self.edge),
                "extended": self.extended}


@dataclass(frozen=True)
class Step:
    """Where a search stands: the trials still to run (the next phase), the choices made, and the labels of
    settings whose trials did not all finish (they get no choice, and no finals)."""

    todo: list[RunSpec]
    choices: list[Choice]
    missing: list[str]
    short: frozenset = frozenset()  # run ids in ``todo`` that are rung-0 (short) trials

    def rung(self, spec: RunSpec) -> int:
        return 0 if spec.run_id in self.short else 1


def _edge_rates(grid: tuple, chosen: float) -> float | None:
    """The next rate beyond the edge of ``grid`` that ``chosen`` sits on (the grid's spacing), or None."""
    if len(grid) < 2 or chosen not in (grid[0], grid[-1]):
        return None
    if chosen == grid[0]:
        return float(f"{grid[0] * grid[0] / grid[1]:.3g}")
    return float(f"{grid[-1] * grid[-1] / grid[-2]:.3g}")


def _setting(search: Search, base: RunSpec, scores: dict) -> tuple[list[RunSpec], Choice | None]:
    """One setting's step: (trials to run now, its choice when made)."""
    configs = search.configurations(base)
    trained, epochs = 0, 0

    def score(spec: RunSpec):
        return scores.get(spec.run_id)

    rung0 = ()
    if search.halving:
        short = [search.apply(base, c, seed=search.trial_seeds[0], epochs=search.halving.epochs) for c in configs]
        got = [score(s) for s in short]
        if any(g is None for g in got):
            return [s for s, g in zip(short, got) if g is None], None
        trained, epochs = len(short), sum(s.epochs for s in short)
        order = sorted(range(len(configs)), key=lambda i: (-got[i], i))  # best first, ties to grid order
        keep = sorted(order[:search.halving.keep(len(configs))])
        rung0 = tuple((tuple(c.values()), g) for c, g in zip(configs, got))
        configs = [configs[i] for i in keep]
    extended = 0
    names = tuple(configs[0])
    while True:
        full = [[search.apply(base, c, seed=seed) for seed in search.trial_seeds] for c in configs]
        got = [[score(s) for s in row] for row in full]
        todo = [s for row, g in zip(full, got) for s, x in zip(row, g) if x is None]
        if todo:
            return todo, None
        means = [sum(g) / len(g) for g in got]
        best = max(range(len(configs)), key=lambda i: (means[i], -i))  # the first of equal scores
        chosen = configs[best]
        grid = tuple(sorted({*search.rate_grid(base), *(c["learning_rate"] for c in configs)}))  # + extensions
        beyond = _edge_rates(grid, chosen["learning_rate"]) if extended < search.extend else None
        if beyond is None or beyond <= 0:
            break
        configs = configs + [{**chosen, "learning_rate": beyond}]
        extended += 1
    all_trials = trained + sum(len(r) for r in full)
    all_epochs = epochs + sum(s.epochs for r in full for s in r)
    spread = tuple(float(_std(g)) for g in got)
    edge = []
    every = search.configurations(base) + configs[len(configs) - extended:] if extended else search.configurations(base)
    for name in names:
        values = sorted({c[name] for c in every})
        if len(values) > 1 and chosen[name] in (values[0], values[-1]):
            edge.append(name)
    return [], Choice(base, dict(chosen), means[best], tuple((tuple(c.values()), m) for c, m in zip(configs, means)),
                      all_trials, all_epochs, spread, names, tuple(edge), extended, rung0)


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return math.nan
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def advance(search: Search, specs, scores: dict[str, float | None], failed: set[str] = frozenset()) -> Step:
    """The protocol as one pure function of the scores known so far (``run_id -> score``, None or absent for a
    trial not finished). ``failed``: run ids of trials that ended in an error in this invocation; their setting is
    not retried now (a later run retries it) and is named in ``missing``."""
    todo, choices, missing, short = [], [], [], set()
    for base in search.bases(specs):
        need, choice = _setting(search, base, scores)
        if choice is not None:
            choices.append(choice)
        elif any(s.run_id in failed for s in need):
            missing.append(base.label.rsplit("/", 1)[0])
        else:
            todo += need
            short |= {s.run_id for s in need if _is_short(search, base, s)}
    return Step(todo, choices, missing, frozenset(short))


def _is_short(search: Search, base: RunSpec, spec: RunSpec) -> bool:
    """Whether ``spec`` is one of ``base``'s rung-0 trials."""
    return bool(search.halving) and spec.run_id in {
        search.apply(base, c, seed=search.trial_seeds[0], epochs=search.halving.epochs).run_id
        for c in search.configurations(base)}


def choose(search: Search, specs, scores: dict[str, float | None]) -> tuple[list[Choice], list[str]]:
    """The choice of every setting of ``specs`` from the trials' scores; the labels of settings that cannot be
    chosen from these scores (a trial without a score), which get no finals."""
    step = advance(search, specs, scores)
    pending = {search.base(s).label.rsplit("/", 1)[0] for s in step.todo}
    return step.choices, sorted(pending)


def finals(search: Search, specs, choices: list[Choice]) -> list[RunSpec]:
    """The grids' specs with their setting's chosen values (settings without a choice are left out)."""
    chosen = {c.base.run_id: c.values for c in choices}
    return [search.apply(s, chosen[search.base(s).run_id]) for s in specs if search.base(s).run_id in chosen]
