"""Where a report's numbers come from: one reader of provenance over every record a report reads.

:func:`gather` counts what the records say about themselves (commit and uncommitted changes, library
versions, device, backend, seeds, epochs, training-data sizes, how many runs shared the device) over
ALL the records it is given, never over a sample of them, and never fills in a value a record does not
hold: a missing one is counted as ``not recorded``. Every report renders the same aggregate: the
Markdown header (:func:`header_rows`), a papers section (:func:`sentence`), a TeX caption
(:func:`caption`) and ``tables/provenance.json`` (:func:`to_json`). Everything is sorted: the same
records give the same bytes.
"""

from __future__ import annotations

import json
from collections import Counter

from .. import record as rec_mod

NOT_RECORDED = "not recorded"
COMMIT_CHARS = 10  # how much of a commit hash the texts show (provenance.json keeps it whole)
CONTENTION_NOTE = ("normbench records only how many of its own runs shared the device; other work on the "
                   "machine is not recorded, so the {device} may have been shared with it")


def _text(value) -> str:
    return NOT_RECORDED if value is None or value == "" else str(value)


def _order(value: str):
    """Numbers in numeric order, then texts; ``not recorded`` last."""
    if value == NOT_RECORDED:
        return (2, 0, "")
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0, value)


def tally(values) -> dict[str, int]:
    counted = Counter(_text(v) for v in values)
    return {k: counted[k] for k in sorted(counted, key=_order)}


def _versioned(name, version) -> str | None:
    if name in (None, ""):
        return None
    return f"{name} {version}" if version not in (None, "") else f"{name} (version not recorded)"


def gather(records: list[dict]) -> dict:
    """The provenance of ``records``, all of them: plain JSON-able values, every count over the records."""
    envs = [r["environment"] for r in records]
    suites = [rec_mod.suite(r) for r in records]
    commits: dict[str, dict[str, int]] = {}
    for env in envs:
        entry = commits.setdefault(_text(env.get("git_commit")), {"runs": 0, "uncommitted_changes": 0,
                                                                 "changes_not_recorded": 0})
        entry["runs"] += 1
        dirty = env.get("git_dirty")
        entry["uncommitted_changes"] += dirty is True
        entry["changes_not_recorded"] += dirty is None
    sharing = Counter()
    for r in records:
        n = rec_mod.concurrent_runs(r)
        source = r["performance"].get("concurrent_runs_source") or ("recorded by the run" if n is not None
                                                                                 else NOT_RECORDED)
        sharing[(_text(n), source)] += 1
    finished = sorted(r["finished_at"] for r in records if r.get("finished_at"))
    return {
        "runs": len(records),
        "statuses": tally(r.get("status") for r in records),
        "phases": tally(p for p in (s.get("phase") for s in suites) if p),
        "suites": tally(f"{s.get('name')} (definition {s.get('definition_hash')})" if s.get("name") else None
                          for s in suites),
        "schema_versions": tally(r.get("schema_version") for r in records),
        "commits": {k: commits[k] for k in sorted(commits, key=lambda k: (k == NOT_RECORDED, -commits[k]["runs"], k))},
        "backends": tally(e.get("backend") for e in envs),
        "libraries": {
            "backend": tally(_versioned(e.get("backend"), e.get("backend_version")) for e in envs),
            "keras": tally(e.get("keras") for e in envs),
            "numpy": tally(e.get("numpy") for e in envs),
            "python": tally(e.get("python") for e in envs),
            "normbench": tally(e.get("normbench") for e in envs),
        },
        "devices": tally(e.get("device") for e in envs),
        "device_kinds": tally(e.get("device_kind") for e in envs),
        "seeds": tally(r["spec"].get("seed") for r in records),
        "epochs": tally(r["spec"].get("epochs") for r in records),
        "precision": tally(r["spec"].get("precision") for r in records),
        # data.sizes: absent in a record of a run that failed before it loaded its data
        "training_samples": tally((r["data"].get("sizes") or {}).get("train") for r in records),
        "data_sources": tally(r["data"].get("source") for r in records),
        "runs_sharing_the_device": [{"runs_sharing_the_device": n, "source": source, "runs": sharing[(n, source)]}
                                    for n, source in sorted(sharing, key=lambda k: (_order(k[0]), k[1]))],
        "other_work_on_the_machine": NOT_RECORDED,
        "finished": {"first": finished[0], "last": finished[-1]} if finished else NOT_RECORDED,
    }


def to_json(agg: dict) -> str:
    """``provenance.json``'s text: sorted keys, no timestamp of its own (the same records, the same bytes)."""
    return json.dumps(agg, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _runs(n: int) -> str:
    return f"{n} run{'' if n == 1 else 's'}"


def counted(counts: dict[str, int]) -> str:
    """One value alone when every run has it; else each value with its number of runs."""
    if not counts:
        return NOT_RECORDED
    if len(counts) == 1:
        return next(iter(counts))
    if len(set(counts.values())) == 1:
        return f"{', '.join(counts)} ({_runs(next(iter(counts.values())))} each)"
    return ", ".join(f"{value} ({_runs(n)})" for value, n in counts.items())


def commits_text(agg: dict) -> str:
    """E.g. ``65c7cb66ab (150 runs)``, ``a1b31f2c3d (10 runs, 10 with uncommitted changes), 13e7748a82 (2 runs, ...)``."""
    parts = []
    for commit, c in agg["commits"].items():
        notes = [_runs(c["runs"])]
        if c["uncommitted_changes"]:
            notes.append(f"{c['uncommitted_changes']} with uncommitted changes")
        if c["changes_not_recorded"]:
            notes.append(f"{c['changes_not_recorded']} without a record of uncommitted changes")
        parts.append(f"{commit if commit == NOT_RECORDED else commit[:COMMIT_CHARS]} ({', '.join(notes)})")
    return ", ".join(parts) or NOT_RECORDED


def libraries_text(agg: dict) -> str:
    lib = agg["libraries"]
    return f"Keras {counted(lib['keras'])}, NumPy {counted(lib['numpy'])}, Python {counted(lib['python'])}"


def _device_word(agg: dict) -> str:
    return "CPU" if list(agg["device_kinds"]) == ["cpu"] else "device"


def contention_text(agg: dict) -> str:
    """How many runs shared the device, as recorded, and that nothing else about other work is."""
    rows, note = agg["runs_sharing_the_device"], CONTENTION_NOTE.format(device=_device_word(agg))
    if len(rows) == 1 and rows[0]["source"] == "recorded by the run":
        return f"{rows[0]['runs_sharing_the_device']} ({note})"
    shown = ", ".join(f"{row['runs_sharing_the_device']} ({_runs(row['runs'])}"
                      + ("" if row["source"] in ("recorded by the run", NOT_RECORDED) else f", {row['source']}")
                      + ")" for row in rows)
    return f"{shown}; {note}"


def statuses_text(agg: dict) -> str:
    return ", ".join(f"{n} {status}" for status, n in agg["statuses"].items())


def header_rows(agg: dict) -> list[tuple[str, str]]:
    """The provenance rows of a Markdown report's header."""
    return [
        ("seeds", counted(agg["seeds"])),
        ("epochs", counted(agg["epochs"])),
        ("training samples", counted(agg["training_samples"])),
        ("precision", counted(agg["precision"])),
        ("backend", counted(agg["libraries"]["backend"])),
        ("Keras / NumPy / Python", " / ".join(counted(agg["libraries"][k]) for k in ("keras", "numpy", "python"))),
        ("device", counted(agg["devices"])),
        ("runs sharing the device", contention_text(agg)),
        ("commit", commits_text(agg)),
    ]


def sentence(agg: dict) -> str:
    """The provenance of a papers section in one sentence (no final full stop)."""
    return (f"{_runs(agg['runs'])} ({statuses_text(agg)}); seeds {counted(agg['seeds'])}; epochs "
            f"{counted(agg['epochs'])}; training samples {counted(agg['training_samples'])}; data "
            f"{counted(agg['data_sources'])}; {counted(agg['libraries']['backend'])} ({libraries_text(agg)}) on "
            f"{counted(agg['devices'])}; commit {commits_text(agg)}; runs sharing the device: {contention_text(agg)}")


def caption(agg: dict) -> str:
    """A TeX caption's provenance of the runs in that table (the caption's first sentences say what ± is)."""
    suites = [s.split(" (definition")[0] for s in agg["suites"] if s != NOT_RECORDED] or ["ad-hoc grid"]
    return (f"Suite: {', '.join(suites)}; {_runs(agg['runs'])}; seeds: {counted(agg['seeds'])}; epochs: "
            f"{counted(agg['epochs'])}; training samples: {counted(agg['training_samples'])}; precision: "
            f"{counted(agg['precision'])}; device: {counted(agg['devices'])}; backend: "
            f"{counted(agg['libraries']['backend'])}; commit: {commits_text(agg)}.")
