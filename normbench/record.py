"""What one run produced: the record's layout, its schema versions, and the helpers every reader needs.

A record is a plain JSON-able dict (written by :mod:`normbench.store`, read by :mod:`normbench.reader`).
This module is its one home: the runner creates records with :func:`new`, executors make failure
records with :func:`error_record`, and the reader turns what a file holds into a record of the
current layout with :func:`normalized`: :func:`check_layout`, then the schema upgrades in order
(:data:`UPGRADES`), then every section filled in. So no reader has to guess which keys an older
or failed record has.

Schema versions (each step has its upgrade function, which says what changed):

- 1: the layout up to commit 2856ea3 (the records in ``shared/gpu-runs``).
- 2: :func:`upgrade_1_to_2`: the data order drawn by normbench; ``performance`` names the engine and
  the runs that shared the device.
- 3: :func:`upgrade_2_to_3`: fair comparisons (issue 22): precise BN, the same input scaling for
  every strategy. The layout did not change.

Layout additions within a version: a section added to what a run records, without changing how the run is
computed (its training, its numbers), keeps the version and needs no upgrade: :data:`_DEFAULTS` gives it to every
record, so a record made before it is read with the section empty (:func:`normalized`). So far:

- ``mechanisms`` (schema 3, issue 34): rows (epoch, layer, mechanism, quantity, value) of what each normalization
  mechanism did (:mod:`normbench.mechanisms`); empty in an older record and in a run whose strategy has none.

An upgrade changes the layout only, never the ``schema_version``: the version says how the run was
computed, so ``check`` refuses to compare records of different versions even after they are upgraded.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from .errors import NormbenchError
from .spec import RunSpec

SCHEMA_VERSION = 3  # bump when the record layout or a run's computation changes; comparisons across versions are refused
STATS_COLUMNS = ["epoch", "layer", "tap", "quantity", "value"]
MECHANISM_COLUMNS = ["epoch", "layer", "mechanism", "quantity", "value"]  # normbench.mechanisms.COLUMNS
STATUSES = ("running", "ok", "diverged", "error")
COMPLETE = ("ok", "diverged")  # statuses that resume skips; "error" runs are retried
WARMUP_EPOCHS = 2  # epoch 0 is initialization, epoch 1 includes tracing/compilation: timings skip both

_DEFAULTS: dict[str, Any] = {
    "status": "running",
    "error": None,
    "diverged_epoch": None,
    "param_count": None,
    "layers": [],
    "data": {},
    "history": [],
    "test": None,
    "stats": {"columns": STATS_COLUMNS, "rows": []},
    "mechanisms": {"columns": MECHANISM_COLUMNS, "rows": []},  # a layout addition (see above): empty when older
    "timings": {},
    "environment": {},
    "suite": None,
    "performance": {},
    "finished_at": None,
}


def new(spec) -> dict:
    """An empty record of ``spec`` (status ``running``), in the current schema."""
    return {"schema_version": SCHEMA_VERSION, "run_id": spec.run_id, "spec": spec.to_dict(), **copy.deepcopy(_DEFAULTS)}


def error_record(spec, message: str) -> dict:
    """The record of a run that failed outside the runner (a dead worker, a crashed process)."""
    rec = new(spec)
    rec.update(status="error", error=message)
    return rec


def upgrade_1_to_2(rec: dict) -> dict:
    """Schema 1 -> 2. What changed in version 2: the training data order is drawn by normbench from the spec's
    seed (the same on every backend and engine; before, Keras shuffled it), and ``performance`` names the
    ``engine`` that trained the run and the ``concurrent_runs`` that shared its device.

    A version-1 run was trained by Keras' ``fit`` (the only engine then), so ``performance.engine`` becomes
    ``fit``; how many runs shared its device was not recorded, so ``performance.concurrent_runs`` stays
    unknown (None, which :func:`normalized` drops: :func:`concurrent_runs` then says None) unless the pack
    states it (``normbench pack --shared-device``). The batch order cannot be upgraded: it is why ``check``
    refuses to compare the versions.
    """
    performance = dict(rec["performance"])
    performance.setdefault("engine", "fit")
    performance.setdefault("concurrent_runs", None)
    return {**rec, "performance": performance}


def upgrade_2_to_3(rec: dict) -> dict:
    """Schema 2 -> 3: fair comparisons (issue 22). The layout did not change, so the record is returned as it is;
    what changed is how a run computes its numbers:

    - evaluations of a network with batch-norm layers use re-estimated population statistics (precise BN,
      ``spec.precise_bn_batches``); the moving-average numbers stay beside them (history and test
      ``*_moving``) and ``data.bn_statistics`` says how they were made. A version-2 record has neither:
      its batch-norm numbers are moving-average numbers;
    - every strategy gets the spec's ``input_scaling`` (default ``standardize``); in version 2 the strategy
      set it (only SELU was standardized);
    - group norm keeps at least 4 channels per group; layer and RMS norm share axes and epsilon.

    None of that can be filled in from a version-2 record: the report says which version it reads
    (``report.inputs``, ``report.bn_evaluation``) and ``check`` refuses to compare across versions.
    """
    return rec


# The upgrade from each old version to the next, applied in this order by normalized(); a new schema version adds
# its step here (a function named upgrade_N_to_M that says what changed) and bumps SCHEMA_VERSION.
UPGRADES: dict[int, Any] = {1: upgrade_1_to_2, 2: upgrade_2_to_3}
READABLE_VERSIONS = (*UPGRADES, SCHEMA_VERSION)  # versions that readers upgrade in memory


def upgraded(rec: dict) -> dict:
    """``rec`` (of a readable version, its sections filled in: :func:`normalized`) in the current layout: each
    upgrade from its version on, in order. The ``schema_version`` is kept (it says how the run was computed)."""
    for version in range(rec["schema_version"], SCHEMA_VERSION):
        rec = UPGRADES[version](rec)
    return rec


# The type of each section a reader relies on. Every one may be missing or null (normalized() fills it in),
# except run_id; a present section of another type makes the record unreadable (check_layout). The tables a
# diagnostic writes (each an object) are declared with the diagnostic: see section_types().
SECTION_TYPES: dict[str, type] = {
    "run_id": str, "error": str, "diverged_epoch": int, "param_count": int, "finished_at": str,
    "layers": list, "data": dict, "history": list, "test": dict, "stats": dict, "timings": dict,
    "environment": dict, "suite": dict, "performance": dict, "strategy_config": dict,
    "diagnostics": dict, "diagnostics_errors": list, "steps": dict, "step_stats": dict, "mechanisms": dict,
}


def section_types() -> dict[str, type]:
    """:data:`SECTION_TYPES` and the table sections the registered diagnostics declare (each an object)."""
    from .diagnostics import record_sections  # here: importing the diagnostics imports NumPy, which a record needs not

    return {**SECTION_TYPES, **{name: dict for name in record_sections()}}
# Inner values that readers sort, slice or compare: each a string (or null) when present.
_TEXT_FIELDS = {"data": ("source",), "suite": ("name", "definition_hash"), "environment": ("git_commit",),
                "performance": ("engine",)}
_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """A metric value: a finite number (not a bool) or null (the writers store a non-finite value as null)."""
    return v is None or _is_int(v) or (isinstance(v, float) and math.isfinite(v))


class LayoutError(ValueError):
    """A record that fails :func:`check_layout`; ``section`` names the record's section at fault (``history``,
    ``stats``, ...) so that a pack can name the file that holds it."""

    def __init__(self, message: str, section: str | None = None):
        super().__init__(message)
        self.section = section


NEWER_SCHEMA = "is newer than this normbench reads"  # in the message of a NewerSchemaError


class NewerSchemaError(LayoutError):
    """A record of a schema version newer than :data:`SCHEMA_VERSION`: the fix is a newer normbench, not a rerun."""


def _not_json_number(token: str):
    raise ValueError(f"the JSON holds {token}, which no normbench writer writes (a non-finite value is stored as "
                     f"null): the file was edited or written by something else")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: JSON's own syntax, but a float overflows to inf
        _not_json_number(text)
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object whose keys are distinct (json.loads would keep the last of two silently: no writer repeats one)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        twice = sorted({k for k, _ in pairs if sum(1 for j, _ in pairs if j == k) > 1})
        raise ValueError(f"the JSON repeats the key(s) {', '.join(map(repr, twice))} in one object, which no "
                         f"normbench writer writes (a reader would take the last silently): the file was edited or "
                         f"written by something else")
    return out


def _what(v: Any) -> str:
    return f"{type(v).__name__} {v!r}"[:80]


def check_layout(rec: Any) -> None:
    """Raise :class:`LayoutError` (a ValueError) unless ``rec`` looks like a normbench record of a readable version.

    Besides the identity (schema version, spec, run id, status) it checks what every reader relies
    on: each section's type (:func:`section_types`), history rows that are objects with an integer
    ``epoch`` and finite (or null) metrics, stats rows with the schema's columns (:data:`STATS_COLUMNS`:
    integer epoch and layer, text tap and quantity, a finite or null value), finite or null test
    metrics, a string ``finished_at``, and tables that fit the run (:func:`check_epochs`). A record that
    fails is refused by the readers and not counted as complete by resume (see :mod:`normbench.store`).
    """
    if not isinstance(rec, dict) or "schema_version" not in rec or not isinstance(rec.get("spec"), dict):
        raise LayoutError("not a normbench record")
    version = rec["schema_version"]
    if _is_int(version) and version > SCHEMA_VERSION:
        raise NewerSchemaError(f"schema version {version} {NEWER_SCHEMA} (versions "
                               f"{READABLE_VERSIONS[0]} to {SCHEMA_VERSION}): a newer normbench wrote it. Update "
                               f"normbench (`git pull`, then `make install`) to read it; do not delete it")
    if not _is_int(version) or version not in READABLE_VERSIONS:
        raise LayoutError(f"schema version {version!r}; this normbench reads {READABLE_VERSIONS}")
    if rec.get("status") not in STATUSES:
        raise LayoutError(f"unknown status {rec.get('status')!r}")
    if not isinstance(rec.get("run_id"), str):
        raise LayoutError(f"run_id is {_what(rec.get('run_id'))}, not a string")
    for key, kind in section_types().items():
        value = rec.get(key)
        if value is not None and not (_is_int(value) if kind is int else isinstance(value, kind)):
            raise LayoutError(f"{key} is {_what(value)}, not {_TYPE_NAMES[kind]}", key)
    rec = _filled(rec)  # every section now of its type; a missing or null one is filled in as new() makes it
    for section, fields in _TEXT_FIELDS.items():
        if rec[section] is None:  # suite: truly absent for a run outside a suite
            continue
        for name in fields:
            value = rec[section].get(name)
            if value is not None and not isinstance(value, str):
                raise LayoutError(f"{section}.{name} is {_what(value)}, not a string", section)
    concurrent = rec["performance"].get("concurrent_runs")
    if concurrent is not None and not _is_int(concurrent):
        raise LayoutError(f"performance.concurrent_runs is {_what(concurrent)}, not an integer", "performance")
    for i, layer in enumerate(rec["layers"]):
        if not isinstance(layer, dict):
            raise LayoutError(f"layers[{i}] is {_what(layer)}, not an object", "layers")
    if rec["status"] == "ok" and not rec["history"]:
        raise LayoutError("status ok without a history (a finished run has at least its initialization row)",
                          "history")
    for i, row in enumerate(rec["history"]):
        if not isinstance(row, dict) or not _is_int(row.get("epoch")):
            raise LayoutError(f"history[{i}] is {_what(row)}, not a row with an integer epoch", "history")
        for name, value in row.items():
            if not _is_number(value):
                raise LayoutError(f"history[{i}].{name} is {_what(value)}, not a finite number or null", "history")
    for name, value in test_metrics(rec).items():
        if not _is_number(value):
            raise LayoutError(f"test.{name} is {_what(value)}, not a finite number or null", "test")
    stats = rec["stats"]
    if stats["columns"] != STATS_COLUMNS:
        raise LayoutError(f"stats.columns are {stats['columns']!r}, not {STATS_COLUMNS}", "stats")
    rows = stats["rows"]
    if not isinstance(rows, list):
        raise LayoutError(f"stats.rows is {_what(rows)}, not a list", "stats")
    for i, row in enumerate(rows):
        # (epoch, layer, tap, quantity, value); type() rather than isinstance: bools are no epochs or layers
        if not (isinstance(row, (list, tuple)) and len(row) == 5 and type(row[0]) is int and type(row[1]) is int
                and type(row[2]) is str and type(row[3]) is str and _is_number(row[4])):
            raise LayoutError(f"stats.rows[{i}] is {_what(row)}, not a row of {STATS_COLUMNS} "
                              f"(integer epoch and layer, text tap and quantity, a finite number or null)", "stats")
    _check_mechanisms(rec["mechanisms"])
    check_epochs(rec)


def _check_mechanisms(table: dict) -> None:
    """The ``mechanisms`` section's columns and rows (integer epoch, text layer, mechanism and quantity, a finite
    number or null); LayoutError otherwise."""
    if table["columns"] != MECHANISM_COLUMNS:
        raise LayoutError(f"mechanisms.columns are {table['columns']!r}, not {MECHANISM_COLUMNS}", "mechanisms")
    if not isinstance(table["rows"], list):
        raise LayoutError(f"mechanisms.rows is {_what(table['rows'])}, not a list", "mechanisms")
    for i, row in enumerate(table["rows"]):
        if not (isinstance(row, (list, tuple)) and len(row) == 5 and type(row[0]) is int
                and all(type(v) is str for v in row[1:4]) and _is_number(row[4])):
            raise LayoutError(f"mechanisms.rows[{i}] is {_what(row)}, not a row of {MECHANISM_COLUMNS} (integer "
                              f"epoch, text layer, mechanism and quantity, a finite number or null)", "mechanisms")


def _planned_epochs(spec: dict) -> int | None:
    """The epochs a run's spec asks for (the spec's default when it leaves them out), or None when not an integer
    (such a spec is refused by :func:`genuine`)."""
    epochs = spec.get("epochs", RunSpec.__dataclass_fields__["epochs"].default)
    return epochs if _is_int(epochs) else None


def _epoch_problem(epochs: list[int]) -> str:
    """What is wrong with history epochs that are not 0, 1, 2, ... (the first deviation)."""
    i = next(i for i, e in enumerate(epochs) if e != i)
    shown = ", ".join(map(str, epochs[max(0, i - 2): i + 3]))
    where = f"[{'..., ' if i > 2 else ''}{shown}{', ...' if i + 3 < len(epochs) else ''}]"
    if epochs[i] in epochs[:i]:
        why = f"epoch {epochs[i]} is repeated"
    elif epochs[i] > i:
        why = f"epoch {i} is missing"
    else:
        why = f"epoch {epochs[i]} is out of order"
    return f"history epochs {where}: {why}; a run's history has one row per epoch 0, 1, 2, ..."


def check_epochs(rec: dict) -> None:
    """The tables fit the run (LayoutError if not): history epochs are 0, 1, ..., k without repeats or gaps,
    with k = the spec's epochs for a finished run (status ok), k = ``diverged_epoch`` for a diverged run that
    names it (training stops at the epoch it diverged), k <= the spec's epochs for any run; stats rows are at
    epochs the history has (a run that failed may also hold the epoch it was measuring when it failed). The
    runner writes nothing else, so anything else is an edited record or a table of another run. ``rec`` is a
    record whose sections :func:`check_layout` checked and filled in."""
    epochs = [row["epoch"] for row in rec["history"]]
    if epochs != list(range(len(epochs))):
        raise LayoutError(_epoch_problem(epochs), "history")
    last, planned, status = len(epochs) - 1, _planned_epochs(rec["spec"]), rec["status"]
    if planned is not None and (last > planned or (status == "ok" and last != planned)):
        if not genuine(rec):  # the spec was edited, not the history: say that
            raise LayoutError(NOT_GENUINE)
        if status == "ok":
            raise LayoutError(f"history ends at epoch {last}, but a finished run (status ok) of {planned} epoch(s) "
                              f"has epochs 0..{planned}", "history")
        raise LayoutError(f"history reaches epoch {last}, beyond the {planned} epoch(s) of its spec", "history")
    diverged = rec["diverged_epoch"]
    if status == "diverged" and diverged is not None and last != diverged:
        raise LayoutError(f"history ends at epoch {last}, but the run diverged at epoch {diverged} (training stops "
                          f"there)", "history")
    allowed = len(epochs) if status in COMPLETE else len(epochs) + 1
    has = f"epochs 0..{last}" if epochs else "no epochs"
    for section in ("stats", "mechanisms"):
        for i, row in enumerate(rec[section]["rows"]):
            if not 0 <= row[0] < allowed:
                raise LayoutError(f"{section}.rows[{i}] is at epoch {row[0]}, which the run's history does not have "
                                  f"({has})", section)


MAX_DEPTH = 64  # a record nests 4 levels deep (a diagnostic's table rows); readers recurse into what they read


def nesting(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (0 for a number or a string), counted without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            todo += [(v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def loads(text: str | bytes) -> Any:
    """JSON text read from disk (a record, a pack's cell) as the writers write it (ValueError otherwise):
    no ``NaN``, ``Infinity``, ``-Infinity`` or numbers that overflow to infinity (the writers store a non-finite
    value as null: :func:`clean`, ``allow_nan=False``, so such a token means an edited or foreign
    file), no key twice in one object (json.loads would keep the last), and no nesting deeper than
    :data:`MAX_DEPTH` (100,000 brackets make the parser itself, or any later
    recursive reader, overflow the stack)."""
    try:
        value = json.loads(text, parse_constant=_not_json_number, parse_float=_finite, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError(f"JSON nested too deeply to parse (a record nests at most {MAX_DEPTH} levels)") from None
    if nesting(value) > MAX_DEPTH:
        raise ValueError(f"JSON nested {nesting(value)} levels deep (a record nests at most {MAX_DEPTH})")
    return value


NOT_GENUINE = "its run_id is not the hash of its spec: edited or mislabelled"


def genuine(rec: dict) -> bool:
    """Whether the record's run id is the hash of its own spec (not a hand-edited or mislabelled record)."""
    try:
        return RunSpec.from_dict(rec["spec"]).run_id == rec["run_id"]
    except (NormbenchError, TypeError, KeyError, ValueError, AttributeError):
        return False


def _filled(rec: dict) -> dict:
    """A shallow copy of ``rec`` (whose sections are each missing, null or of their type) with every key of
    :func:`new`'s layout: a missing or null section as :func:`new` makes it, stats (and mechanisms) with its columns and a list
    of rows unless they are given (:func:`check_layout` checks those), ``performance`` a copy (to add to)."""
    out = {**copy.deepcopy(_DEFAULTS), **{k: v for k, v in rec.items() if v is not None or k not in _DEFAULTS}}
    for section, columns in (("stats", STATS_COLUMNS), ("mechanisms", MECHANISM_COLUMNS)):
        table = out[section]
        out[section] = {**table, "columns": columns if table.get("columns") is None else table["columns"],
                        "rows": [] if table.get("rows") is None else table["rows"]}
    out["performance"] = dict(out["performance"])
    return out


def normalized(rec: dict) -> dict:
    """A copy of ``rec`` in the current layout, every section present, for any reader to trust.

    :func:`check_layout` (LayoutError if the record is not one a normbench writer writes), then the upgrades
    from its version on (:func:`upgraded`), then the defaults: every key of :func:`new`'s layout present;
    ``layers`` and ``history`` lists, ``data``, ``timings``, ``environment`` and ``performance`` objects,
    ``stats`` with its columns and a list of rows, ``performance.engine`` named. What a run may truly lack
    stays None: ``test`` (a run that did not finish), ``suite`` (a run outside a suite), ``error``,
    ``diverged_epoch``, ``param_count``, ``finished_at``; the sections of the diagnostics and probes are present
    only when the run made them. The original ``schema_version`` is kept: it says how the run was computed.
    """
    check_layout(rec)
    out = upgraded(_filled(rec))
    out["performance"].setdefault("engine", "fit")  # a record that never trained (error_record) names the default
    out["performance"].setdefault("concurrent_runs", 1)  # alone, unless upgrade_1_to_2 said unknown (None)
    if out["performance"]["concurrent_runs"] is None:  # readers then ask concurrent_runs(), which says "unknown"
        del out["performance"]["concurrent_runs"]
    return out


def usable(rec: Any) -> dict:
    """What every codec of :mod:`normbench.reader` does with a record it decoded: :func:`normalized` (the layout
    checked, upgraded, every section filled in), then :func:`genuine`; LayoutError (a ValueError) if either fails."""
    out = normalized(rec)
    if not genuine(out):
        raise LayoutError(NOT_GENUINE)
    return out


# The helpers below read a record the reader gives (normalized): every section they read is there.

def history(rec: dict) -> list[dict]:
    """Per-epoch rows, epoch 0 (initialization) first."""
    return rec["history"]


def steady(rec: dict) -> list[dict]:
    """The epochs whose timings are steady-state: all but the warm-up (initialization and the compiling epoch)."""
    return [h for h in history(rec) if h["epoch"] >= WARMUP_EPOCHS]


def init_row(rec: dict) -> dict:
    """The epoch-0 row (at initialization), or {} when the run never measured it."""
    h = history(rec)
    return h[0] if h and h[0]["epoch"] == 0 else {}


def final_row(rec: dict) -> dict:
    """The last measured epoch's row, or {}."""
    h = history(rec)
    return h[-1] if h else {}


def test_metrics(rec: dict) -> dict:
    """Final test loss and accuracy, or {} when the run did not finish."""
    return rec["test"] or {}  # truly absent: None until the run finishes (normalized() keeps it None)


def suite(rec: dict) -> dict:
    """The suite the run belongs to (name, definition hash, phase), {} for a run outside a suite."""
    return rec["suite"] or {}  # truly absent: None for a run outside a suite (normalized() keeps it None)


def table_rows(rec: dict, section: str) -> list:
    """The rows of a diagnostic's table section (``diagnostics``, ``landscape``, ...), [] when the run has none."""
    return (rec.get(section) or {}).get("rows", [])  # truly absent: present only when its diagnostic ran


def concurrent_runs(rec: dict) -> int | None:
    """How many runs shared the device while this one trained (1 = alone; None = not recorded, schema 1)."""
    return rec["performance"].get("concurrent_runs")


def engine(rec: dict) -> str:
    """The training engine that produced the record (``fit`` or ``scan``)."""
    return rec["performance"]["engine"]


def clean(obj: Any) -> Any:
    """Strict JSON: non-finite floats become None (the run's status says why)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalars
        return clean(obj.item())
    return obj
