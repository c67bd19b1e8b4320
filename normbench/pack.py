"""A compact, committable form of a results folder: tidy rows in three gzipped CSV files.

``pack(results_dir, out_dir)`` writes

- ``runs.csv.gz``: one row per run: run id, schema version, status, error, and the record's
  small sections (spec, layers, data, test, timings, environment, suite, performance, strategy
  config) as JSON text in their cells;
- ``history.csv.gz``: one row per (run, epoch) with every per-epoch metric;
- ``stats.csv.gz``: one row per (run, epoch, layer, tap, quantity) with its value,

floats to 9 significant digits (float32 precision, which is what the runs computed in).
``load(pack_dir)`` turns them back into records (plain dicts, read with the csv and json
modules: nothing in a pack can run code), and :func:`normbench.store.load_records` reads a
folder holding a pack as it reads a folder of JSON records, so ``normbench report`` rebuilds
a published report from the pack alone. A folder may hold a pack and JSON records (a run
resumed in a packed folder): readers and resume see both, one record per run id. A pack's
rows get the checks a JSON record gets (:func:`read`): an edited row is refused, not read.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import zlib
from pathlib import Path

from . import record as rec_mod
from .errors import NormbenchError

RUNS, HISTORY, STATS = "runs.csv.gz", "history.csv.gz", "stats.csv.gz"
JSON_SECTIONS = ("spec", "layers", "data", "test", "timings", "environment", "suite", "performance", "strategy_config")
OPTIONAL_SECTIONS = ("diagnostics", "landscape", "diagnostics_errors", "steps", "step_stats")  # rows some records have;
# a pack made before they existed lacks the column
SCALARS = ("run_id", "schema_version", "status", "error", "diverged_epoch", "param_count", "finished_at")


def is_pack(folder: str | Path) -> bool:
    return (Path(folder) / RUNS).is_file()


def _num(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return format(v, ".9g")
    return str(v)


def _write(path: Path, header: list[str], rows, name: Path | None = None) -> None:
    """Write one gzipped CSV file at ``path``, never through a link there; an error names ``name`` (default
    ``path``: the pack's file whose staged copy this is)."""
    from .files import naming, open_for_writing

    with naming(name or path), open_for_writing(path, "wb", what="a pack's file") as raw, \
            gzip.open(raw, "wt", newline="", compresslevel=9) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def pack(results_dir: str | Path, out_dir: str | Path, records: list[dict] | None = None,
         shared_device: int | None = None) -> dict[str, int]:
    """Write the pack of a results folder; return the byte size of each file.

    ``shared_device``: for records that do not say how many runs shared their device (schema 1),
    the number known from how they were made (e.g. shared/gpu-runs/README.md: up to 12); it is
    stored as ``performance.concurrent_runs`` with ``concurrent_runs_source: "stated when packed"``.
    """
    from .files import naming
    from .store import clean, load_records

    records = records if records is not None else load_records(results_dir)
    if not records:
        raise NormbenchError(f"{results_dir} holds no records to pack")
    if shared_device is not None:
        for r in records:
            if rec_mod.concurrent_runs(r) is None:
                r["performance"] = {**r["performance"], "concurrent_runs": int(shared_device),
                                    "concurrent_runs_source": "stated when packed"}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Written beside the old pack under temporary names, then moved into place only when all three are whole: an
    # interrupted pack leaves the previous pack (and the temporary files are removed), never a truncated file.
    staged = {name: out / f".{name}.partial" for name in (RUNS, HISTORY, STATS)}
    try:
        _write(staged[RUNS], [*SCALARS, *JSON_SECTIONS, *OPTIONAL_SECTIONS],
               ([_num(r.get(k)) for k in SCALARS] + [json.dumps(clean(r.get(k)), sort_keys=True, separators=(",", ":"))
                                                     for k in (*JSON_SECTIONS, *OPTIONAL_SECTIONS)] for r in records),
               name=out / RUNS)
        metrics = sorted({k for r in records for h in r["history"] for k in h if k != "epoch"})
        _write(staged[HISTORY], ["run_id", "epoch", *metrics],
               ([r["run_id"], h["epoch"], *(_num(h.get(m)) for m in metrics)] for r in records for h in r["history"]),
               name=out / HISTORY)
        _write(staged[STATS], ["run_id", *rec_mod.STATS_COLUMNS],
               ([r["run_id"], e, layer, tap, q, _num(v)] for r in records for e, layer, tap, q, v in r["stats"]["rows"]),
               name=out / STATS)
        for name in (HISTORY, STATS, RUNS):  # runs.csv.gz last: it is what marks a folder as a pack
            with naming(out / name):  # over a link, the link itself is replaced: nothing is written through it
                os.replace(staged[name], out / name)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
    return {name: (out / name).stat().st_size for name in (RUNS, HISTORY, STATS)}


FIELD_LIMIT = 1 << 28  # a JSON cell (a paper run's step probes) may exceed csv's default of 128 KiB


def _rows(path: Path):
    """The rows of one of a pack's files; a file that is not whole gzipped CSV text raises NormbenchError naming it
    (flipped bytes surface as a zlib.error, a bad header or CRC as BadGzipFile, a cut file as EOFError)."""
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    try:
        with gzip.open(path, "rt", newline="") as f:
            yield from csv.DictReader(f)
    except (OSError, EOFError, zlib.error, csv.Error, UnicodeDecodeError) as e:
        kind = "zlib.error" if isinstance(e, zlib.error) else type(e).__name__
        why = "it is missing" if isinstance(e, FileNotFoundError) else "the file is damaged"
        raise NormbenchError(f"cannot read {path} as a normbench pack ({kind}: {e}): {why}. "
                             f"Re-create the pack from the original records with `normbench pack`, or restore it "
                             f"from version control") from None


def _float(text: str):
    return float(text) if text != "" else None


def read(pack_dir: str | Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """The usable records of a pack (:func:`normbench.record.normalized`) and (run id, why) for each run that is not.

    A run is checked as a JSON record is (:func:`normbench.store.load_records`): its row must pass
    :func:`normbench.record.check_layout` and its run id must be the hash of its spec (a row edited by
    hand is not genuine); a run id listed twice in ``runs.csv.gz`` is refused too. A pack that cannot be
    read as a whole (not gzip, a missing file, a cell that is not JSON, rows of unknown runs) raises
    NormbenchError.
    """
    root = Path(pack_dir)
    records: dict[str, dict] = {}
    repeated: set[str] = set()
    reading = root / RUNS
    try:
        for row in _rows(reading):
            rec = {k: rec_mod.loads(row[k]) for k in JSON_SECTIONS}  # a cell nested too deeply: a ValueError
            rec.update({k: rec_mod.loads(row[k]) for k in OPTIONAL_SECTIONS if row.get(k) and row[k] != "null"})
            rec.update(run_id=row["run_id"], schema_version=int(row["schema_version"]), status=row["status"],
                       error=row["error"] or None, finished_at=row["finished_at"] or None,
                       diverged_epoch=int(row["diverged_epoch"]) if row["diverged_epoch"] else None,
                       param_count=int(row["param_count"]) if row["param_count"] else None,
                       history=[], stats={"columns": rec_mod.STATS_COLUMNS, "rows": []})
            if rec["run_id"] in records:
                repeated.add(rec["run_id"])
                continue
            records[rec["run_id"]] = rec
        reading = root / HISTORY
        for row in _rows(reading):
            h = {"epoch": int(row.pop("epoch"))}
            run_id = row.pop("run_id")
            h.update({k: _float(v) for k, v in row.items() if v != ""})
            records[run_id]["history"].append(h)
        reading = root / STATS
        for row in _rows(reading):
            records[row["run_id"]]["stats"]["rows"].append(
                [int(row["epoch"]), int(row["layer"]), row["tap"], row["quantity"], _float(row["value"])])
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise NormbenchError(f"{reading} is not part of a consistent normbench pack ({type(e).__name__}: {e}); "
                             f"re-create the pack from the original records with `normbench pack`") from None
    out, bad = [], []
    for run_id, rec in records.items():
        if run_id in repeated:
            bad.append((run_id, f"listed more than once in {RUNS}"))
            continue
        try:
            rec = rec_mod.normalized(rec)
        except ValueError as e:
            bad.append((run_id, str(e)))
            continue
        if not rec_mod.genuine(rec):
            bad.append((run_id, rec_mod.NOT_GENUINE))
            continue
        out.append(rec)
    return out, bad


def refusal(pack_dir: str | Path, bad: list[tuple[str, str]]) -> str:
    """The message that refuses a pack's unusable runs (from :func:`read`), with the fix."""
    root = Path(pack_dir)
    runs = "; ".join(f"run {run_id} ({why})" for run_id, why in bad)
    return (f"unreadable run(s) in the pack {root / RUNS}: {runs}. "
            f"A pack is written by `normbench pack`, never edited: re-create it from the original records "
            f"(`normbench pack --results RECORDS --out {root}`), or delete its three .csv.gz files and re-run "
            f"those runs.")


def load(pack_dir: str | Path) -> list[dict]:
    """The records of a pack, in the current layout (:func:`normbench.record.normalized`); NormbenchError
    when a run in it is not usable (see :func:`read`)."""
    records, bad = read(pack_dir)
    if bad:
        raise NormbenchError(refusal(pack_dir, bad))
    return records
