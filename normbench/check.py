"""Regression check of a results folder against a committed baseline.

Runs are matched by (dataset, model, strategy, seed) — in practice by run id, since
both sides must come from the same benchmark definition. Tolerance rules come from
a small text file, one ``metric: tolerance`` per line:

    test_accuracy: -0.02          # absolute; a drop of more than 0.02 is worse, a rise of more is improved
    final_train_loss: +10%        # relative; a rise of more than 10% is worse
    init activation std: 1e-4     # no sign: any change beyond 1e-4 (per layer) is worse

A leading ``-`` means lower is worse, ``+`` means higher is worse; ``%`` makes the
tolerance relative to the baseline value.
"""

from __future__ import annotations

import fnmatch
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, NormbenchError
from . import record
from .record import SCHEMA_VERSION

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
STAT_METRIC = re.compile(r"(init|final) (activation|pre|kernel) (\w+)")
SCOPE = re.compile(r"^\[(?P<scope>[^\]]*)\]")
SCOPE_FIELDS = ("dataset", "model", "strategy")
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
    scope: tuple = ()  # ((field, glob), ...): the rule is for runs whose dataset/model/strategy match

    def applies(self, record: dict) -> bool:
        spec = record.get("spec") or {}
        return all(fnmatch.fnmatchcase(str(spec.get(k, "")), pattern) for k, pattern in self.scope)

    def judge(self, base: float | None, cur: float | None) -> str:
        if base is None or cur is None or not (math.isfinite(base) and math.isfinite(cur)):
            if base is None and cur is None:
                return "same"
            return "worse" if cur is None or not math.isfinite(cur) else "improved"
        diff = cur - base
        tol = self.tolerance * abs(base) if self.relative else self.tolerance
        if self.direction == 0:
            return "same" if abs(diff) <= tol else "worse"
        bad = diff * self.direction
        return "worse" if bad > tol else "improved" if -bad > tol else "same"

    def values(self, record: dict) -> dict[str, float | None]:
        """The rule's metric in a record: one value, or one per layer for statistics."""
        if self.metric in SCALARS:
            return {"": SCALARS[self.metric](record)}
        when, tap, quantity = STAT_METRIC.fullmatch(self.metric).groups()
        rows = (record.get("stats") or {}).get("rows") or []
        if not rows:
            return {}
        epoch = 0 if when == "init" else max(r[0] for r in rows)
        return {f"layer {r[1]}": r[4] for r in rows if r[0] == epoch and r[2] == TAPS[tap] and r[3] == quantity}


def parse_rules(path: str | Path) -> list[Rule]:
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"rules file {path}: cannot read it ({e})") from None
    rules = []
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        scope = ()
        sm = SCOPE.match(line)
        if sm:
            line = line[sm.end():].strip()
            pairs = [part.strip().partition("=") for part in sm["scope"].split(",") if part.strip()]
            bad = [f"{k}{eq}{v}" for k, eq, v in pairs if k.strip() not in SCOPE_FIELDS or not eq or not v.strip()]
            if bad or not pairs:
                raise ConfigError(f"rules file {path}, line {n}: bad scope {sm.group(0).strip()!r}; write "
                                  f"'[model=mlp16] metric: tolerance' with fields out of {', '.join(SCOPE_FIELDS)} "
                                  f"(glob patterns allowed, several separated by commas)")
            scope = tuple((k.strip(), v.strip()) for k, _, v in pairs)
        m = RULE_LINE.match(line)
        if not m:
            raise ConfigError(
                f"rules file {path}, line {n}: cannot parse {raw.strip()!r}; write 'metric: tolerance', e.g. "
                f"'test_accuracy: -0.02', 'final_train_loss: +10%' or 'init activation std: 1e-4'"
            )
        metric = " ".join(m["metric"].split())
        if metric not in SCALARS and not STAT_METRIC.fullmatch(metric):
            raise ConfigError(
                f"rules file {path}, line {n}: unknown metric {metric!r}; use one of {sorted(SCALARS)} or "
                f"'init|final activation|pre|kernel QUANTITY' (e.g. 'init activation std')"
            )
        sign = {"+": 1, "-": -1, "": 0}[m["sign"]]
        rules.append(Rule(metric, float(m["num"]) / (100 if m["pct"] else 1), bool(m["pct"]), sign, raw.split("#", 1)[0].strip(),
                          scope))
    if not rules:
        raise ConfigError(f"rules file {path} has no rules; add lines like 'test_accuracy: -0.02'")
    return rules


def _index(records: list[dict]) -> dict[tuple, dict]:
    out = {}
    for r in records:
        s = r["spec"]
        out[(s["dataset"], s["model"], s["strategy"], s["seed"])] = r
    return out


def _one(records: list[dict], what: str, side: str) -> str | None:
    values = {what_fn(r) for r in records for what_fn in [WHAT[what]]}
    if len(values) > 1:
        raise NormbenchError(f"the {side} folder mixes {what}s ({', '.join(map(str, sorted(values, key=str)))})")
    return values.pop() if values else None


WHAT = {
    "schema version": lambda r: r.get("schema_version"),
    "benchmark definition": lambda r: (r.get("suite") or {}).get("definition_hash"),
    "backend": lambda r: (r.get("environment") or {}).get("backend"),
}


def _sources(records: list[dict]) -> str:
    return ", ".join(sorted({str((r.get("data") or {}).get("source")) for r in records}))


def refuse_incomparable(baseline: list[dict], current: list[dict]) -> None:
    """Schema version, benchmark definition (suite hash) and backend must match on both sides."""
    pairs = {what: (_one(baseline, what, "baseline"), _one(current, what, "current")) for what in WHAT}
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
    """The rules that judge one run: for each metric, the last scoped rule that matches the run replaces
    the unscoped ones (e.g. a wider accuracy tolerance for a family known to be sensitive to round-off)."""
    scoped = {r.metric: r for r in rules if r.scope and r.applies(record)}
    return [r for r in rules if not r.scope and r.metric not in scoped] + list(scoped.values())


def compare(baseline: list[dict], current: list[dict], rules: list[Rule]) -> list[dict]:
    """One row per (run, rule), plus rows for missing runs and status changes."""
    refuse_incomparable(baseline, current)
    b_idx, c_idx = _index(baseline), _index(current)
    rows = []
    for key in sorted(set(b_idx) | set(c_idx), key=str):
        label = "/".join(map(str, key[:3])) + f"/seed{key[3]}"
        b, c = b_idx.get(key), c_idx.get(key)
        if c is None:
            rows.append(dict(run=label, metric="run", baseline="present", current="missing", change="", verdict="worse", rule="a baseline run is missing"))
            continue
        if b is None:
            rows.append(dict(run=label, metric="run", baseline="missing", current="present", change="", verdict="new", rule="not in the baseline"))
            continue
        if b["status"] != c["status"]:
            verdict = "worse" if b["status"] == "ok" else "improved" if c["status"] == "ok" else "worse"
            rows.append(dict(run=label, metric="status", baseline=b["status"], current=c["status"], change="", verdict=verdict,
                             rule="status changed" + (f": {c.get('error')}" if c.get("error") else "")))
        for rule in rules_for(rules, c):
            bv, cv = rule.values(b), rule.values(c)
            keys = sorted(set(bv) | set(cv), key=lambda k: (len(k), k))
            if not keys:
                continue
            verdicts = {k: rule.judge(bv.get(k), cv.get(k)) for k in keys}
            order = {"worse": 0, "improved": 1, "same": 2}
            worst = min(verdicts.values(), key=order.get)

            def gap(k):
                x, y = bv.get(k), cv.get(k)
                return abs(y - x) if x is not None and y is not None and math.isfinite(x) and math.isfinite(y) else math.inf

            k = max((k for k in keys if verdicts[k] == worst), key=gap)
            x, y = bv.get(k), cv.get(k)
            change = "" if x is None or y is None else f"{y - x:+.4g}" + (f" ({(y - x) / abs(x):+.1%})" if x else "")
            rows.append(dict(run=label, metric=rule.metric + (f" [{k}]" if k else ""), baseline=_num(x), current=_num(y),
                             change=change, verdict=worst, rule=rule.text if worst != "same" else ""))
    return rows


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.6g}"


def format_table(rows: list[dict]) -> str:
    cols = ["run", "metric", "baseline", "current", "change", "verdict", "rule"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols} if rows else {c: len(c) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip() for r in rows]
    return "\n".join(lines)


def run_check(baseline_dir, current_dir, rules_path=None, out=print) -> int:
    """Print the comparison; return 1 if anything got worse (or a baseline run is missing), else 0."""
    from .store import load_records

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
    rules = parse_rules(rules_path or baseline_dir / "rules.txt")
    if not rules:
        raise NormbenchError(f"the rules file {rules_path or baseline_dir / 'rules.txt'} holds no rules: a check "
                             f"against nothing would pass on anything. Add at least one 'metric: tolerance' line.")
    baseline, current = load_records(baseline_dir), load_records(current_dir)
    for side, recs, d in (("baseline", baseline, baseline_dir), ("current", current, current_dir)):
        if not recs:
            raise NormbenchError(f"the {side} folder {d} holds no records: {fixes[side]}.")
    rows = compare(baseline, current, rules)
    out(format_table(rows))
    counts = {v: sum(r["verdict"] == v for r in rows) for v in ("improved", "same", "worse", "new")}
    out(f"\n{counts['worse']} worse, {counts['improved']} improved, {counts['same']} same"
        + (f", {counts['new']} new runs" if counts["new"] else "")
        + f" ({len({r['run'] for r in rows})} runs, {len(rules)} rules)")
    if counts["worse"]:
        out("REGRESSION: see the rows marked 'worse'. If the change is intended, refresh the baseline with "
            "`make baseline` and say why in the commit message.")
    return 1 if counts["worse"] else 0
