"""What one run produced: the record's layout, its schema version, and the helpers every reader needs.

A record is a plain JSON-able dict (written by :mod:`normbench.store`). This module is its
one home: the runner creates records with :func:`new`, executors make failure records with
:func:`error_record`, and store, check and report read them through :func:`normalized`
and the helpers below, so no reader has to guess which keys an older or failed record has.

Schema versions:

- 1: the layout up to commit 2856ea3 (the records in ``shared/gpu-runs``).
- 2: the training data order is drawn by normbench from the spec's seed (the same on every
  backend and engine); ``performance`` names the ``engine`` and the ``concurrent_runs`` that
  shared the device. A version-1 record is read (upgraded in memory: engine ``fit``,
  concurrent runs unknown), but ``check`` refuses to compare across versions, because the
  same spec trains on another batch order.
"""

from __future__ import annotations

import copy
from typing import Any

SCHEMA_VERSION = 2  # bump when the record layout or a run's computation changes; comparisons across versions are refused
READABLE_VERSIONS = (1, 2)  # versions that readers upgrade in memory
STATS_COLUMNS = ["epoch", "layer", "tap", "quantity", "value"]
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


def check_layout(rec: Any) -> None:
    """Raise ValueError unless ``rec`` looks like a normbench record of a readable version."""
    if not isinstance(rec, dict) or "schema_version" not in rec or not isinstance(rec.get("spec"), dict):
        raise ValueError("not a normbench record")
    if rec["schema_version"] not in READABLE_VERSIONS:
        raise ValueError(f"schema version {rec['schema_version']!r}; this normbench reads {READABLE_VERSIONS}")
    if rec.get("status") not in STATUSES:
        raise ValueError(f"unknown status {rec.get('status')!r}")


def normalized(rec: dict) -> dict:
    """A copy of ``rec`` with every key of the current layout present (None/empty where it has none).

    The original ``schema_version`` is kept: it says how the run was computed.
    """
    check_layout(rec)
    out = {**copy.deepcopy(_DEFAULTS), **{k: v for k, v in rec.items() if v is not None or k not in _DEFAULTS}}
    for key in ("layers", "history"):
        out[key] = out[key] or []
    for key in ("data", "timings", "environment", "performance"):
        out[key] = out[key] or {}
    out["stats"] = out["stats"] or {"columns": STATS_COLUMNS, "rows": []}
    out["performance"].setdefault("engine", "fit")
    out["performance"].setdefault("concurrent_runs", 1 if rec["schema_version"] >= 2 else None)
    if out["performance"]["concurrent_runs"] is None:  # readers then ask concurrent_runs(), which says "unknown"
        del out["performance"]["concurrent_runs"]
    return out


def history(rec: dict) -> list[dict]:
    """Per-epoch rows, epoch 0 (initialization) first."""
    return rec.get("history") or []


def steady(rec: dict) -> list[dict]:
    """The epochs whose timings are steady-state: all but the warm-up (initialization and the compiling epoch)."""
    return [h for h in history(rec) if h.get("epoch", 0) >= WARMUP_EPOCHS]


def init_row(rec: dict) -> dict:
    """The epoch-0 row (at initialization), or {} when the run never measured it."""
    h = history(rec)
    return h[0] if h and h[0].get("epoch") == 0 else {}


def final_row(rec: dict) -> dict:
    """The last measured epoch's row, or {}."""
    h = history(rec)
    return h[-1] if h else {}


def test_metrics(rec: dict) -> dict:
    """Final test loss and accuracy, or {} when the run did not finish."""
    return rec.get("test") or {}


def concurrent_runs(rec: dict) -> int | None:
    """How many runs shared the device while this one trained (1 = alone; None = not recorded)."""
    perf = rec.get("performance") or {}
    if "concurrent_runs" in perf:
        return perf["concurrent_runs"]
    return 1 if rec.get("schema_version", 1) >= 2 else None


def engine(rec: dict) -> str:
    """The training engine that produced the record (``fit`` or ``scan``)."""
    return (rec.get("performance") or {}).get("engine", "fit")
