"""Regression check of a results folder against a committed baseline.

Runs are matched by run id (the hash of the whole spec), so runs that share a label
(dataset/model/strategy/seed) but differ in, say, batch size are compared apart; their
rows name the spec fields that tell them apart. Tolerance rules come from a small text
file, one ``metric: tolerance`` per line:

    test_accuracy: -0.02          # absolute; a drop of more than 0.02 is worse, a rise of more is improved
    final_train_loss: +10%        # relative; a rise of more than 10% is worse
    init activation std: 1e-4     # no sign: any change beyond 1e-4 (per layer) is worse

A leading ``-`` means lower is worse, ``+`` means higher is worse; ``%`` makes the
tolerance relative to the baseline value. ``[model=mlp16,mlp32] test_accuracy: -0.15`` scopes
a rule to some runs: glob patterns, alternatives for one field separated by commas (a field
may also be repeated: also OR), different fields all required (AND). A scope that matches
no baseline run, an unknown statistic quantity, and a rule that finds its value in no run
are errors: a check that compared nothing would pass on anything.

A check can also pass on nothing when an accuracy rule allows a drop down to chance. For the
accuracies of a trained network (:data:`CHANCE_METRICS`) a (rule, run) row whose baseline value
minus the allowed drop is at or below chance (1 / the number of classes of the run's dataset) is
*unguarded*: a run that learned nothing passes it. Such rows get the verdict ``unguarded`` (unless
the current value is worse even so), are listed by run with the baseline value, the tolerance and
chance, and counted in the summary line; they do not make the check fail, so that CI still judges
the rows a rule does guard. A rule whose every row in the baseline is unguarded guards nothing: it
is an error in the rules file (exit code 2), like a rule that compares nothing. Loss rules have no
chance level, and ``init_val_accuracy`` is at chance before training by construction: neither is
judged so.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import statistics
from dataclasses import MISSING, dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, NormbenchError
from .files import read_small_file
from . import record
from .datasets import TRAIN_SIZES
from .record import SCHEMA_VERSION
from .stats import kernel_norms, summarize, unit_summary
from .reader import load_records
from .spec import RunSpec

SCALARS = {
    "test_accuracy": lambda r: record.test_metrics(r).get("accuracy"),
    "test_loss": lambda r: record.test_metrics(r).get("loss"),
    "init_train_loss": lambda r: record.init_row(r).get("train_loss"),
    "init_val_accuracy": lambda r: record.init_row(r).get("val_accuracy"),
    "final_train_loss": lambda r: record.final_row(r).get("train_loss"),
    "final_train_accuracy": lambda r: record.final_row(r).get("train_accuracy"),
    "final_val_loss": lambda r: record.final_row(r).get("val_loss"),
    "final_val_accuracy": lambda r: record.final_row(r).get("val_accuracy"),
    "s_per_epoch": lambda r: _median([h.get("epoch_s") for h in record.steady(r)]),
}
TAPS = {"activation": "act", "pre": "pre", "kernel": "kernel"}
# The quantities the probe records per tap (normbench.probe): the same functions, so they cannot drift apart.
_ONE = np.zeros((1, 1))
QUANTITIES = {
    "activation": tuple(summarize(_ONE, "relu")),  # sat_frac and dead_units only for activations that saturate
    "pre": tuple(summarize(_ONE)) + tuple(unit_summary(_ONE)),
    "kernel": tuple(kernel_norms(_ONE)),
}
# The accuracies of a trained network: a run that learned nothing scores chance on them (see the module docstring).
CHANCE_METRICS = ("test_accuracy", "final_val_accuracy", "final_train_accuracy")
STAT_METRIC = re.compile(r"(init|final) (activation|pre|kernel) (\w+)")
SCOPE = re.compile(r"^\[(?P<scope>[^\]]*)\]")
SCOPE_FIELDS = ("dataset", "model", "strategy")
_PLURAL = {"dataset": "datasets", "model": "models", "strategy": "strategies"}
RULE_LINE = re.compile(r"^(?P<metric>[A-Za-z_][\w ]*?)\s*:\s*(?P<sign>[+-]?)(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)(?P<pct>%?)$")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class Rule:
    """One parsed tolerance rule."""

    metric: str
    tolerance: float
    relative: bool
    direction: int  # +1: an increase is worse; -1: a decrease is worse; 0: any change beyond tolerance is worse
    text: str
    scope: tuple = ()  # ((field, (glob, ...)), ...): for runs whose every field matches one of its globs
    line: int = 0  # in the rules file

    def applies(self, record: dict) -> bool:
        spec = record["spec"]
        return all(any(fnmatch.fnmatchcase(str(spec.get(k, "")), p) for p in patterns) for k, patterns in self.scope)

    def judge(self, base: float | None, cur: float | None) -> str:
        if base is None or cur is None or not (math.isfinite(base) and math.isfinite(cur)):
            if base is None and cur is None:
                return NA  # nothing to compare: neither "same" nor a change
            return "worse" if cur is None or not math.isfinite(cur) else "improved"
        diff = cur - base
        tol = self.tolerance * abs(base) if self.relative else self.tolerance
        if self.direction == 0:
            return "same" if abs(diff) <= tol else "worse"
        bad = diff * self.direction
        return "worse" if bad > tol else "improved" if -bad > tol else "same"

    def unguarded(self, record: dict) -> dict | None:
        """For an accuracy rule (:data:`CHANCE_METRICS`) and a baseline run whose value minus the allowed drop is at or
        below chance, so that a run at chance passes: its baseline value, the allowed drop, that floor and chance;
        else None (also when the run has no value, or normbench does not know its dataset's classes)."""
        level = chance(record)
        base = SCALARS[self.metric](record) if self.metric in CHANCE_METRICS else None
        if base is None or level is None or not math.isfinite(base):
            return None
        drop = math.inf if self.direction == 1 else self.tolerance * abs(base) if self.relative else self.tolerance
        if base - level > drop:  # judge() calls a drop of more than ``drop`` worse: a run at chance fails
            return None
        return {"baseline": base, "drop": drop, "floor": base - drop, "chance": level}

    def values(self, record: dict) -> dict[str, float | None]:
        """The rule's metric in a record: one value, or one per layer for statistics."""
        if self.metric in SCALARS:
            return {"": SCALARS[self.metric](record)}
        when, tap, quantity = STAT_METRIC.fullmatch(self.metric).groups()
        rows = record["stats"]["rows"]
        if not rows:
            return {}
        epoch = 0 if when == "init" else max(r[0] for r in rows)
        return {f"layer {r[1]}": r[4] for r in rows if r[0] == epoch and r[2] == TAPS[tap] and r[3] == quantity}


NA = "n/a"
UNGUARDED = "unguarded"


def chance(record: dict) -> float | None:
    """The accuracy of guessing, 1 / the number of classes of the run's dataset (from
    :data:`normbench.datasets.TRAIN_SIZES`), or None for a dataset normbench does not know."""
    known = TRAIN_SIZES.get(record["spec"].get("dataset"))
    return 1 / known[1] if known else None


def _parse_scope(text: str) -> tuple | None:
    """``model=mlp8,mlp16,strategy=bn*`` -> (("model", ("mlp8", "mlp16")), ("strategy", ("bn*",))), or None if bad.
    A part without ``=`` is one more alternative for the field before it; a repeated field adds alternatives."""
    scope: dict[str, list[str]] = {}
    field = None
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, eq, value = part.partition("=")
        if eq:
            field, value = key.strip(), value.strip()
        elif field is None:
            return None
        else:
            value = key.strip()
        if field not in SCOPE_FIELDS or not value:
            return None
        scope.setdefault(field, []).append(value)
    return tuple((k, tuple(v)) for k, v in scope.items()) or None


def parse_rules(path: str | Path) -> list[Rule]:
    path = Path(path)
    # a small regular file only: /dev/zero would exhaust the memory, a FIFO would hang the read
    data = read_small_file(path, "rules file", "give a text file of 'metric: tolerance' lines (see results/baseline/"
                                               "rules.txt)")
    try:
        lines = data.decode("utf-8-sig").splitlines()  # a byte-order mark is not part of the first rule
    except UnicodeDecodeError as e:
        raise ConfigError(f"rules file {path}: not UTF-8 text ({e.reason} at byte {e.start}); write the rules as "
                          f"plain text, one 'metric: tolerance' per line") from None
    rules = []
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        scope = ()
        sm = SCOPE.match(line)
        if sm:
            line = line[sm.end():].strip()
            scope = _parse_scope(sm["scope"])
            if scope is None:
                raise ConfigError(f"rules file {path}, line {n}: bad scope {sm.group(0).strip()!r}; write "
                                  f"'[model=mlp16] metric: tolerance' with fields out of {', '.join(SCOPE_FIELDS)} "
                                  f"(glob patterns allowed; '[model=mlp8,mlp16]' for either model, "
                                  f"'[model=mlp16,strategy=bn*]' for both conditions)")
        m = RULE_LINE.match(line)
        if not m:
            alone = " (a scope goes on the same line as its rule: '[model=mlp16] test_accuracy: -0.15')" \
                if sm and not line else ""
            raise ConfigError(
                f"rules file {path}, line {n}: cannot parse {raw.strip()!r}; write 'metric: tolerance', e.g. "
                f"'test_accuracy: -0.02', 'final_train_loss: +10%' or 'init activation std: 1e-4'{alone}"
            )
        metric = " ".join(m["metric"].split())
        if metric not in SCALARS and not STAT_METRIC.fullmatch(metric):
            raise ConfigError(
                f"rules file {path}, line {n}: unknown metric {metric!r}; use one of {sorted(SCALARS)} or "
                f"'init|final activation|pre|kernel QUANTITY' (e.g. 'init activation std')"
            )
        sm_stat = STAT_METRIC.fullmatch(metric)
        if sm_stat and sm_stat[3] not in QUANTITIES[sm_stat[2]]:
            raise ConfigError(
                f"rules file {path}, line {n}: unknown quantity {sm_stat[3]!r} for the {sm_stat[2]} statistics; "
                f"use one of {', '.join(QUANTITIES[sm_stat[2]])} (e.g. '{sm_stat[1]} {sm_stat[2]} "
                f"{QUANTITIES[sm_stat[2]][0]}')"
            )
        sign = {"+": 1, "-": -1, "": 0}[m["sign"]]
        twin = next((r for r in rules if r.metric == metric and r.scope == scope), None)
        if twin is not None:  # two rules for one metric and scope: one of them would silently not count
            raise ConfigError(f"rules file {path}, line {n}: {metric!r} already has a rule for these runs on line "
                              f"{twin.line} ({twin.text!r}); keep one of the two")
        rules.append(Rule(metric, float(m["num"]) / (100 if m["pct"] else 1), bool(m["pct"]), sign, raw.split("#", 1)[0].strip(),
                          scope, n))
    if not rules:
        raise ConfigError(f"rules file {path} has no rules; add lines like 'test_accuracy: -0.02'")
    return rules


def _run_id(r: dict) -> str:
    return r.get("run_id") or json.dumps(r["spec"], sort_keys=True)


def _label(spec: dict) -> str:
    return f"{spec['dataset']}/{spec['model']}/{spec['strategy']}/seed{spec['seed']}"


def _flat(spec: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in spec.items():
        if isinstance(v, dict) and v:
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[prefix + k] = json.dumps(v, sort_keys=True)
    return out


def _shown(j: str) -> str:
    v = json.loads(j)
    return v if isinstance(v, str) else j


def distinct_labels(records: list[dict]) -> dict[str, str]:
    """run id -> label; runs that share a label (dataset/model/strategy/seed) get the spec fields that differ."""
    specs = {_run_id(r): r["spec"] for r in records}
    groups: dict[str, list[str]] = {}
    for rid, spec in specs.items():
        groups.setdefault(_label(spec), []).append(rid)
    out = {}
    for label, ids in groups.items():
        if len(ids) == 1:
            out[ids[0]] = label
            continue
        flat = {rid: _flat(specs[rid]) for rid in ids}
        keys = sorted({k for f in flat.values() for k in f})
        differ = [k for k in keys if len({f.get(k) for f in flat.values()}) > 1]
        for rid in ids:
            shown = [f"{k}={_shown(flat[rid][k]) if k in flat[rid] else '-'}" for k in differ]
            out[rid] = f"{label} " + " ".join(shown or [f"id={rid}"])
    return out



# The settings of a run besides its cell (dataset, model and its parameters, strategy and its parameters) and its seed.
CELL_SETTINGS = tuple(f for f in RunSpec.__dataclass_fields__
                      if f not in ("model", "strategy", "dataset", "seed", "model_params", "strategy_params"))


def _with_params(name: str, params) -> str:
    """``mlp[depth=3,width=32]``: a builder or strategy and its parameters, as the report names them."""
    if not params:
        return name
    return f"{name}[{','.join(f'{k}={json.dumps(v, sort_keys=True)}' for k, v in sorted(params.items()))}]"


def cell(rec: dict) -> str:
    """The cell of a run in a report's tables: dataset / model and its parameters / strategy and its parameters."""
    s = rec["spec"]
    return (f"{s.get('dataset')}/{_with_params(str(s.get('model')), s.get('model_params'))}/"
            f"{_with_params(str(s.get('strategy')), s.get('strategy_params'))}")


def _setting(rec: dict, name: str) -> str:
    """A spec setting of ``rec`` as comparable text; a field an older record lacks has its default."""
    field = RunSpec.__dataclass_fields__[name]
    default = field.default_factory() if field.default_factory is not MISSING else field.default
    return json.dumps(rec["spec"].get(name, default), sort_keys=True)


def cell_conflicts(records: list[dict]) -> list[str]:
    """The cells whose runs were made under different settings, other than the seed: one line per cell naming
    each setting that differs and its values (with how many runs have each). Records of several ``normbench
    run`` commands (benchmark definitions) may share a folder (a seed, model, strategy or dataset added); in one
    cell they conflict when they differ in the record schema, or in a setting that no one definition varies in
    that cell (a batch-size sweep varies ``batch_size`` on purpose, and the report keys its runs by it)."""
    cells: dict[str, list[dict]] = {}
    for rec in records:
        cells.setdefault(cell(rec), []).append(rec)
    out = []
    for name, recs in sorted(cells.items()):
        groups: dict = {}
        for rec in recs:
            groups.setdefault(record.suite(rec).get("definition_hash"), []).append(rec)
        differ = {"record schema": [str(r["schema_version"]) for r in recs]}
        for field in CELL_SETTINGS if len(groups) > 1 else ():
            swept = any(len({_setting(r, field) for r in group}) > 1 for group in groups.values())
            if not swept:
                differ[field] = [_shown(_setting(r, field)) for r in recs]
        shown = []
        for field, values in differ.items():
            counts = {v: values.count(v) for v in sorted(set(values), key=str)}
            if len(counts) > 1:
                shown.append(f"{field} " + " vs ".join(f"{v} ({n} run{'s' * (n > 1)})" for v, n in counts.items()))
        if shown:
            out.append(f"{name}: {'; '.join(shown)}")
    return out


def refuse_conflicts(records: list[dict], where: str) -> None:
    """NormbenchError naming every cell of ``records`` that :func:`cell_conflicts` finds, and the fix."""
    problems = cell_conflicts(records)
    if problems:
        raise NormbenchError(
            f"{where} holds runs of one cell made under different settings (besides the seed), which a table would "
            f"pool as one: {' | '.join(problems)}. A folder may grow by seeds, models, strategies and datasets, not "
            f"by changed settings: move the runs of one setting into their own folder (normbench run --results DIR), "
            f"or rerun them with the other runs' settings.")


MIXED_FIX = {
    "schema version": "re-run those runs into a fresh folder with this normbench, so that all records are of one "
                      "schema version (for the baseline: `make baseline`)",
    "backend": "keep each backend's records in its own folder (normbench run --results DIR) and check one backend "
               "against a baseline of the same backend",
}


def _one(records: list[dict], what: str, side: str) -> str | None:
    values = {what_fn(r) for r in records for what_fn in [WHAT[what]]}
    if len(values) > 1:
        raise NormbenchError(f"the {side} folder mixes {what}s ({', '.join(map(str, sorted(values, key=str)))}): "
                             f"{MIXED_FIX[what]}.")
    return values.pop() if values else None


WHAT = {
    "schema version": lambda r: r.get("schema_version"),
    "suite": lambda r: record.suite(r).get("name"),
    "benchmark definition": lambda r: record.suite(r).get("definition_hash"),
    "backend": lambda r: r["environment"].get("backend"),
}


def _sources(records: list[dict]) -> str:
    return ", ".join(sorted({str(r["data"].get("source")) for r in records}))


# Each side may hold several benchmark definitions (a folder grown by several `normbench run` commands: a seed,
# model, strategy or dataset added) and several suite names, as long as no cell of it conflicts (cell_conflicts);
# runs are matched by run id (the hash of every setting), so a run only in the current results is new (listed, not
# judged), a baseline run that is missing (or whose settings changed, so that its id did) fails.


def _names(records: list[dict], what) -> str:
    return ", ".join(sorted({str(what(r)) for r in records}))


def finals_only(records: list[dict]) -> tuple[list[dict], int]:
    """A tuning study's finals (``suite.phase`` other than ``trial``) and how many trials were left out; a folder
    of trials only (no finals yet), like one outside a study, is compared whole. The report tables the same runs."""
    finals = [r for r in records if record.suite(r).get("phase") != "trial"]
    return (finals, len(records) - len(finals)) if finals else (records, 0)


def refuse_incomparable(baseline: list[dict], current: list[dict]) -> None:
    """Each side holds one schema version and one backend, and no cell of it conflicts (:func:`cell_conflicts`);
    schema version, set of suite names, backend and data sources must match on both sides. The benchmark
    definitions (suite hashes) may differ, within a side and between the sides."""
    for side, recs in (("baseline", baseline), ("current", current)):
        refuse_conflicts(recs, f"the {side} folder")
    pairs = {what: (_one(baseline, what, "baseline"), _one(current, what, "current"))
             for what in ("schema version", "backend")}
    pairs["set of suites"] = (_names(baseline, WHAT["suite"]), _names(current, WHAT["suite"]))
    pairs["set of data sources"] = (_sources(baseline), _sources(current))
    for what, (b, c) in pairs.items():
        if b != c:
            raise NormbenchError(
                f"refusing to compare: the baseline has {what} {b!r}, the current results {c!r}. Results are only "
                f"comparable within one {what}. If the change is intended, refresh the baseline with `make baseline` "
                f"and say why in the commit message."
            )
    if _one(current, "schema version", "current") != SCHEMA_VERSION:
        raise NormbenchError(f"the records are of schema version {_one(current, 'schema version', 'current')}, "
                             f"this normbench writes {SCHEMA_VERSION}: refresh the baseline with `make baseline`.")


def rules_for(rules: list[Rule], record: dict) -> list[Rule]:
    """The rules that judge one run: for each metric, the scoped rule that matches the run (at most one:
    :func:`check_overlaps`) replaces the unscoped ones (e.g. a wider accuracy tolerance for a family known to be sensitive to round-off)."""
    scoped = {r.metric: r for r in rules if r.scope and r.applies(record)}
    return [r for r in rules if not r.scope and r.metric not in scoped] + list(scoped.values())


def check_overlaps(rules: list[Rule], records: list[dict], where: str = "rules file") -> None:
    """No run may be matched by two scoped rules of one metric: :func:`rules_for` would take the later line, so
    reordering the rules file would change the verdict. A ConfigError naming both lines and a run they share."""
    labels = distinct_labels(records)
    problems = {}
    for rec in records:
        scoped: dict[str, list[Rule]] = {}
        for rule in rules:
            if rule.scope and rule.applies(rec):
                scoped.setdefault(rule.metric, []).append(rule)
        for metric, both in scoped.items():
            if len(both) > 1:
                lines = tuple(r.line for r in both)
                problems.setdefault(lines, f"lines {', '.join(f'{r.line} ({r.text!r})' for r in both)} all set "
                                           f"{metric} for {labels[_run_id(rec)]}")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems.values()) + ". Which one judges such a run would depend on "
                          f"the order of the lines: narrow the scopes so that one rule of a metric matches each run "
                          f"(e.g. '[model=mlp8,strategy=batchnorm]' for the runs of both), or delete one.")


def check_scopes(rules: list[Rule], baseline: list[dict], where: str = "rules file") -> None:
    """Every scoped rule, and every pattern in its scope, must match some baseline run: else it is a typo (or a
    rule for runs this baseline does not hold) that would silently judge nothing."""
    problems = []
    for rule in rules:
        if not rule.scope:
            continue
        held = {k: sorted({str(r["spec"].get(k, "")) for r in baseline}) for k, _ in rule.scope}
        unmatched = [(k, p) for k, patterns in rule.scope for p in patterns
                     if not any(fnmatch.fnmatchcase(v, p) for v in held[k])]
        if unmatched:
            why = "; ".join(f"no {k} matches {p!r} (the baseline's {_PLURAL[k]}: {', '.join(held[k])})"
                            for k, p in unmatched)
        elif not any(rule.applies(r) for r in baseline):
            why = "no run has all of " + ", ".join(f"{k}={'|'.join(ps)}" for k, ps in rule.scope) + " (" + "; ".join(
                f"the baseline's {_PLURAL[k]}: {', '.join(held[k])}" for k, _ in rule.scope) + ")"
        else:
            continue
        problems.append(f"line {rule.line}: {rule.text!r} matches no run in the baseline: {why}")
    if problems:
        raise ConfigError(f"{where}: " + ". ".join(problems) + ". Patterns are case-sensitive globs; fix the scope, "
                          f"or delete the rule if it is for runs this baseline does not hold.")


def compare(baseline: list[dict], current: list[dict], rules: list[Rule]) -> list[dict]:
    """One row per (run, rule), plus rows for missing runs and status changes. Each rule's rows carry it
    (key ``_rule``); a rule whose value neither record holds gives a row with verdict 'n/a'."""
    refuse_incomparable(baseline, current)
    b_idx, c_idx = {_run_id(r): r for r in baseline}, {_run_id(r): r for r in current}
    labels = distinct_labels(baseline + current)
    rows = []
    for key in sorted(set(b_idx) | set(c_idx), key=lambda k: (labels[k], k)):
        label = labels[key]
        b, c = b_idx.get(key), c_idx.get(key)
        if c is None:
            rows.append(dict(run=label, metric="run", baseline="present", current="missing", change="", verdict="worse", rule="a baseline run is missing"))
            continue
        if b is None:
            current_status = "present" if c.get("status") == "ok" else f"present ({c.get('status')})"
            rows.append(dict(run=label, metric="run", baseline="missing", current=current_status, change="",
                             verdict="new", rule="not in the baseline"))
            continue
        if b["status"] != c["status"]:
            verdict = "worse" if b["status"] == "ok" else "improved" if c["status"] == "ok" else "worse"
            rows.append(dict(run=label, metric="status", baseline=b["status"], current=c["status"], change="", verdict=verdict,
                             rule="status changed" + (f": {c.get('error')}" if c.get("error") else "")))
        for rule in rules_for(rules, c):
            bv, cv = rule.values(b), rule.values(c)
            keys = sorted(set(bv) | set(cv), key=lambda k: (len(k), k))
            if not keys:
                rows.append(dict(run=label, metric=rule.metric, baseline=_num(None), current=_num(None), change="",
                                 verdict=NA, rule=f"{rule.text}: neither record holds it", _rule=rule))
                continue
            verdicts = {k: rule.judge(bv.get(k), cv.get(k)) for k in keys}
            order = {"worse": 0, "improved": 1, "same": 2, NA: 3}
            worst = min(verdicts.values(), key=order.get)

            def gap(k):
                x, y = bv.get(k), cv.get(k)
                return abs(y - x) if x is not None and y is not None and math.isfinite(x) and math.isfinite(y) else math.inf

            k = max((k for k in keys if verdicts[k] == worst), key=gap)
            x, y = bv.get(k), cv.get(k)
            change = "" if x is None or y is None else f"{y - x:+.4g}" + (f" ({(y - x) / abs(x):+.1%})" if x else "")
            row = dict(run=label, metric=rule.metric + (f" [{k}]" if k else ""), baseline=_num(x), current=_num(y),
                       change=change, verdict=worst,
                       rule=(f"{rule.text}: neither record holds it" if worst == NA else
                             rule.text if worst != "same" else ""), _rule=rule)
            unguarded = rule.unguarded(b) if worst in ("same", "improved") else None
            if unguarded:  # it passes, but so would a run that learned nothing
                row.update(verdict=UNGUARDED, _unguarded=unguarded,
                           rule=f"{rule.text}: a run at chance ({unguarded['chance']:.3g}) passes too")
            rows.append(row)
    return rows


def check_guards(rules: list[Rule], baseline: list[dict], where: str = "rules file") -> None:
    """An accuracy rule whose every baseline run is unguarded (:meth:`Rule.unguarded`: a run at chance would pass it)
    guards nothing: a ConfigError naming its line and those runs."""
    labels = distinct_labels(baseline)
    problems = []
    for rule in rules:
        judged = [b for b in baseline if any(r is rule for r in rules_for(rules, b))
                  and rule.metric in CHANCE_METRICS and SCALARS[rule.metric](b) is not None and chance(b) is not None]
        if not judged or not all(rule.unguarded(b) for b in judged):
            continue
        shown = ", ".join(f"{labels[_run_id(b)]} {SCALARS[rule.metric](b):.4g}" for b in judged)
        problems.append(f"line {rule.line} {rule.text!r} guards nothing: in each of the {len(judged)} baseline run(s) "
                        f"it judges, the baseline {rule.metric} minus the allowed drop is at or below chance "
                        f"({', '.join(sorted({f'{chance(b):.3g}' for b in judged}))}), so a run that learned nothing "
                        f"passes it ({shown})")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems) + ". Allow a drop smaller than the baseline's margin over "
                          "chance, or delete the rule; or give the baseline runs enough data and epochs to learn "
                          "(`make baseline`).")


def format_unguarded(rows: list[dict]) -> list[str]:
    """The unguarded rows (see the module docstring), by run: baseline value, allowed drop, chance."""
    mine = sorted((r for r in rows if r["verdict"] == UNGUARDED), key=lambda r: (r["run"], r["metric"]))
    if not mine:
        return []
    out = [f"UNGUARDED: {len(mine)} row(s) cannot fail: the baseline value minus the allowed drop is at or below "
           f"chance, so a run that learned nothing would pass them too:"]
    for r in mine:
        u, rule = r["_unguarded"], r["_rule"]
        drop = "any drop" if math.isinf(u["drop"]) else f"a drop of {u['drop']:.4g} allowed"
        out.append(f"  {r['run']}  {r['metric']}: baseline {u['baseline']:.4g}, {drop} (line {rule.line} "
                   f"{rule.text!r}), chance {u['chance']:.3g}")
    out.append("These rows are not failures; to guard them, allow a smaller drop for these runs (a scoped rule), or "
               "give the baseline runs enough data and epochs to learn (`make baseline`).")
    return out


def _uncompared(rules: list[Rule], rows: list[dict], where: str) -> tuple[str | None, list[str]]:
    """An error for the rules that judged runs but compared no value in any; notes for unscoped rules that
    judged no run at all (scoped rules replace them everywhere)."""
    judged = {}
    for row in rows:
        if "_rule" in row:
            judged.setdefault(id(row["_rule"]), []).append(row)
    problems, notes = [], []
    for rule in rules:
        mine = judged.get(id(rule), [])
        if mine and all(r["verdict"] == NA for r in mine):
            hint = {"s_per_epoch": f" (it needs runs of at least {record.WARMUP_EPOCHS} epochs: the time of "
                                   f"epoch 1 includes tracing and is left out)"}.get(rule.metric, "")
            problems.append(f"line {rule.line} {rule.text!r} compared no value: neither record holds it in any of "
                            f"the {len(mine)} run(s) it judges{hint}")
        elif not mine and not rule.scope and any("_rule" in r for r in rows):
            notes.append(f"note: line {rule.line} {rule.text!r} judged no run: scoped rules for {rule.metric} "
                         f"replace it in every run")
    error = None
    if problems:
        error = (f"{where}: " + "; ".join(problems) + ". A rule that compares nothing would pass on anything: "
                 "delete it, or change it to a metric these runs record.")
    return error, notes


def definition_notes(baseline: list[dict], current: list[dict], rows: list[dict]) -> list[str]:
    """Notes for a suite whose definition changed since the baseline: what that means for the rows."""
    b, c = (_names(side, WHAT["benchmark definition"]) for side in (baseline, current))
    if b == c:
        return []
    new = sum(r["verdict"] == "new" for r in rows)
    missing = sum(r["metric"] == "run" and r["current"] == "missing" for r in rows)
    return [f"note: the benchmark definition changed since the baseline ({b} -> {c}); runs are matched by run id "
            f"(every setting), so {new} run(s) only in the current results are listed as new and not judged, and "
            f"{missing} baseline run(s) absent from them (removed, or with a changed setting) are missing. Refresh the "
            f"baseline with `make baseline` to judge the new runs."]


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.6g}"


def format_table(rows: list[dict]) -> str:
    cols = ["run", "metric", "baseline", "current", "change", "verdict", "rule"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols} if rows else {c: len(c) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip() for r in rows]
    return "\n".join(lines)


def run_check(baseline_dir, current_dir, rules_path=None, out=print) -> int:
    """Print the comparison; return 1 if anything got worse (or a baseline run is missing), else 0.

    Unguarded rows (a run at chance would pass them: see the module docstring) are listed and counted but
    do not fail; a rule that guards nothing, like one that compares nothing, raises ConfigError (exit 2)."""
    baseline_dir, current_dir = Path(baseline_dir), Path(current_dir)
    fixes = {"baseline": "make one with `make baseline` (the smoke suite into results/baseline), or point --baseline "
                         "at a folder of records",
             "current": "run the grid first (e.g. `normbench run --suite smoke --results DIR`), or point --current at "
                        "a folder of records"}
    for side, d in (("baseline", baseline_dir), ("current", current_dir)):
        if not d.is_dir():
            raise NormbenchError(f"the {side} folder {d} does not exist: {fixes[side]}.")
    if rules_path is None and not (baseline_dir / "rules.txt").is_file():
        raise NormbenchError(f"the baseline folder {baseline_dir} has no rules.txt: copy results/baseline/rules.txt "
                             f"there, or give --rules FILE.")
    rules_path = Path(rules_path or baseline_dir / "rules.txt")
    rules = parse_rules(rules_path)
    if not rules:
        raise NormbenchError(f"the rules file {rules_path} holds no rules: a check "
                             f"against nothing would pass on anything. Add at least one 'metric: tolerance' line.")
    baseline, current = load_records(baseline_dir), load_records(current_dir)
    for side, recs, d in (("baseline", baseline, baseline_dir), ("current", current, current_dir)):
        if not recs:
            raise NormbenchError(f"the {side} folder {d} holds no records: {fixes[side]}.")
    (baseline, b_trials), (current, c_trials) = finals_only(baseline), finals_only(current)
    trial_note = [f"note: {n} search trial(s) of the {side} folder not compared: a tuning study is checked by its "
                  f"finals (the runs its report tables); its trials try other settings by design"
                  for side, n in (("baseline", b_trials), ("current", c_trials)) if n]
    refuse_incomparable(baseline, current)
    check_scopes(rules, baseline, f"rules file {rules_path}")
    check_overlaps(rules, baseline + current, f"rules file {rules_path}")
    check_guards(rules, baseline, f"rules file {rules_path}")
    rows = compare(baseline, current, rules)
    error, notes = _uncompared(rules, rows, f"rules file {rules_path}")
    out(format_table(rows))
    unguarded = format_unguarded(rows)
    if unguarded:
        out("\n" + "\n".join(unguarded))
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("improved", "same", "worse", "new", NA, UNGUARDED)}
    out(f"\n{counts['worse']} worse, {counts['improved']} improved, {counts['same']} same"
        + (f", {counts[UNGUARDED]} unguarded (cannot fail: see above)" if counts[UNGUARDED] else "")
        + (f", {counts[NA]} not comparable" if counts[NA] else "")
        + (f", {counts['new']} new runs" if counts["new"] else "")
        + f" ({len({r['run'] for r in rows})} runs, {len(rules)} rules)")
    for note in notes + trial_note + definition_notes(baseline, current, rows):
        out(note)
    if counts["worse"]:
        out("REGRESSION: see the rows marked 'worse'. If the change is intended, refresh the baseline with "
            "`make baseline` and say why in the commit message.")
    if error:
        raise ConfigError(error)
    return 1 if counts["worse"] else 0
