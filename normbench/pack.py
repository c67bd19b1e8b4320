"""A compact, committable form of a results folder: tidy rows in three gzipped CSV files; one of the two codecs
of :mod:`normbench.reader` (the other: a JSON file per run).

``pack(records, out_dir)`` writes the records of a results folder (read by
:func:`normbench.reader.load_records`) as

- ``runs.csv.gz``: one row per run: run id, schema version, status, error, the record's
  small sections (spec, layers, data, test, timings, environment, suite, performance, strategy
  config) as JSON text in their cells, and the SHA-256 of the run's rows in the other two files;
- ``history.csv.gz``: one row per (run, epoch) with every per-epoch metric;
- ``stats.csv.gz``: one row per (run, epoch, layer, tap, quantity) with its value,

floats to 9 significant digits (float32 precision, which is what the runs computed in).
:func:`read` turns them back into records (plain dicts, read with the csv and json modules:
nothing in a pack can run code), each made usable as a JSON record is (:func:`normbench.record.usable`:
checked, upgraded, normalized, genuine), so the reader reads a folder holding a pack as it reads a
folder of JSON records, and ``normbench report`` rebuilds a published report from the pack alone. A
folder may hold a pack and JSON records (a run resumed in a packed folder): readers and resume see
both, one record per run id. Each run's history and stats rows must also hash to what its runs row
holds (:func:`read`): an edited row, in any of the three files, is refused, not read.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
import os
import zlib
from pathlib import Path

from . import record as rec_mod
from .errors import NormbenchError
from .files import naming, open_for_writing

RUNS, HISTORY, STATS = "runs.csv.gz", "history.csv.gz", "stats.csv.gz"
JSON_SECTIONS = ("spec", "layers", "data", "test", "timings", "environment", "suite", "performance", "strategy_config")
DIGESTS = ("history_sha256", "stats_sha256")  # per run: the SHA-256 of its rows in history.csv.gz and stats.csv.gz;
# a pack made before they existed lacks the columns
TABLE_FILES = {"history": HISTORY, "stats": STATS}  # the file that holds a record section (the rest: runs.csv.gz)
SCALARS = ("run_id", "schema_version", "status", "error", "diverged_epoch", "param_count", "finished_at")


def optional_sections() -> tuple[str, ...]:
    """The sections some records have, each a column of runs.csv.gz (a pack made before one existed lacks its
    column): the diagnostics' rows, the tables the registered diagnostics declare, their errors, the step probes, the
    mechanisms' rows (normbench.mechanisms)."""
    from .diagnostics import record_sections  # here: importing the diagnostics imports NumPy, which a pack needs not

    return ("diagnostics", *record_sections(), "diagnostics_errors", "steps", "step_stats", "mechanisms")


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
    with naming(name or path), open_for_writing(path, "wb", what="a pack's file") as raw, \
            gzip.open(raw, "wt", newline="", compresslevel=9) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _history_line(epoch: str, values) -> bytes:
    """One history row as hashed into its run's ``history_sha256``: the cells' text, as written and as read."""
    return json.dumps([epoch, sorted((k, v) for k, v in values if v != "")]).encode() + b"\n"


def _stats_line(cells: list[str]) -> bytes:
    """One stats row (epoch, layer, tap, quantity, value: the cells' text) as hashed into its run's ``stats_sha256``."""
    return json.dumps(cells).encode() + b"\n"


def pack(records: list[dict], out_dir: str | Path, shared_device: int | None = None) -> dict[str, int]:
    """Write the pack of a results folder's ``records`` (as :func:`normbench.reader.load_records` reads
    them: the caller loads, then packs); return the byte size of each file.

    ``shared_device``: for records that do not say how many runs shared their device (schema 1),
    the number known from how they were made (e.g. shared/gpu-runs/README.md: up to 12); it is
    stored as ``performance.concurrent_runs`` with ``concurrent_runs_source: "stated when packed"``.
    Each run's row in ``runs.csv.gz`` holds the SHA-256 of its rows in the other two files
    (:data:`DIGESTS`), which :func:`read` checks.
    """
    if not records:
        raise NormbenchError("no records to pack")
    if shared_device is not None:
        for r in records:
            if rec_mod.concurrent_runs(r) is None:
                r["performance"] = {**r["performance"], "concurrent_runs": int(shared_device),
                                    "concurrent_runs_source": "stated when packed"}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digests = {r["run_id"]: (hashlib.sha256(), hashlib.sha256()) for r in records}
    metrics = sorted({k for r in records for h in r["history"] for k in h if k != "epoch"})

    def history_rows():
        for r in records:
            for h in r["history"]:
                cells = [str(h["epoch"]), *(_num(h.get(m)) for m in metrics)]
                digests[r["run_id"]][0].update(_history_line(cells[0], zip(metrics, cells[1:])))
                yield [r["run_id"], *cells]

    def stats_rows():
        for r in records:
            for e, layer, tap, q, v in r["stats"]["rows"]:
                cells = [str(e), str(layer), tap, q, _num(v)]
                digests[r["run_id"]][1].update(_stats_line(cells))
                yield [r["run_id"], *cells]

    # Written beside the old pack under temporary names, then moved into place only when all three are whole: an
    # interrupted pack leaves the previous pack (and the temporary files are removed), never a truncated file.
    # The runs file is written last: its rows hold the hashes of the rows written into the other two.
    staged = {name: out / f".{name}.partial" for name in (RUNS, HISTORY, STATS)}
    try:
        _write(staged[HISTORY], ["run_id", "epoch", *metrics], history_rows(), name=out / HISTORY)
        _write(staged[STATS], ["run_id", *rec_mod.STATS_COLUMNS], stats_rows(), name=out / STATS)
        optional = optional_sections()
        _write(staged[RUNS], [*SCALARS, *JSON_SECTIONS, *optional, *DIGESTS],
               ([_num(r.get(k)) for k in SCALARS] + [json.dumps(rec_mod.clean(r.get(k)), sort_keys=True, separators=(",", ":"))
                                                     for k in (*JSON_SECTIONS, *optional)]
                + [h.hexdigest() for h in digests[r["run_id"]]] for r in records), name=out / RUNS)
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
            reader = csv.DictReader(f)
            names = reader.fieldnames or []
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:  # csv.DictReader would keep the last of each silently
                raise NormbenchError(f"{path}: column(s) {', '.join(twice)} appear more than once in its header, which "
                                     f"`normbench pack` never writes (a reader would take one of them silently). "
                                     f"Re-create the pack from the original records with `normbench pack`, or restore "
                                     f"it from version control")
            yield from reader
    except (OSError, EOFError, zlib.error, csv.Error, UnicodeDecodeError) as e:
        kind = "zlib.error" if isinstance(e, zlib.error) else type(e).__name__
        why = "it is missing" if isinstance(e, FileNotFoundError) else "the file is damaged"
        raise NormbenchError(f"cannot read {path} as a normbench pack ({kind}: {e}): {why}. "
                             f"Re-create the pack from the original records with `normbench pack`, or restore it "
                             f"from version control") from None


def _float(name: str, text: str):
    """A value cell: empty (null) or a finite number; ValueError otherwise (the writer writes a non-finite value as
    an empty cell, so ``inf`` or ``nan`` is an edit)."""
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        raise ValueError(f"{name} is {text!r}, not a finite number (the writer writes a non-finite value as an empty "
                         f"cell)")
    return value


def _int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} is {text!r}, not an integer") from None


def _run_row(row: dict) -> dict:
    """The record (without history and stats) of one row of ``runs.csv.gz``; ValueError naming the bad cell."""
    rec = {}
    for k in (*JSON_SECTIONS, *(k for k in optional_sections() if row.get(k) and row[k] != "null")):
        try:
            rec[k] = rec_mod.loads(row[k])
        except ValueError as e:
            raise ValueError(f"column {k}: {e}") from None
    rec.update(run_id=row["run_id"], schema_version=_int("schema_version", row["schema_version"]),
               status=row["status"], error=row["error"] or None, finished_at=row["finished_at"] or None,
               diverged_epoch=_int("diverged_epoch", row["diverged_epoch"]) if row["diverged_epoch"] else None,
               param_count=_int("param_count", row["param_count"]) if row["param_count"] else None,
               history=[], stats={"columns": rec_mod.STATS_COLUMNS, "rows": []})
    return rec


def _cells(row: dict) -> None:
    """A row with as many cells as the header (csv.DictReader files extra ones under None and fills missing ones
    with None)."""
    if None in row or None in row.values():
        raise ValueError(f"it does not have the header's {len(row) - (None in row)} cells")


def read(pack_dir: str | Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """The usable records of a pack (:func:`normbench.record.normalized`) and (run id, why) for each run that is not.

    A run is checked as a JSON record is (:func:`normbench.record.usable`): its rows must pass
    :func:`normbench.record.check_layout` (types, finite values, history epochs 0..N that fit its status
    and spec, stats rows at epochs it has) and its run id must be the hash of its spec (a row edited by
    hand is not genuine); a run id listed twice in ``runs.csv.gz``, a cell that is not what the writer
    writes (text or ``inf`` for a number, ``NaN`` in a JSON cell), and history or stats rows whose hash is
    not the one ``runs.csv.gz`` holds for the run (:data:`DIGESTS`: rows edited, added, dropped, reordered
    or moved from another run) are refused too. Each ``why`` starts with the file at fault. A pack made
    before the hashes existed (no such columns) gets every check but that one. A pack that cannot be read
    as a whole (not gzip, a missing file or column, rows of runs that ``runs.csv.gz`` does not list) raises
    NormbenchError.

    The hashes, like the run id, are no signature: they catch an edited or mislabelled row, not someone who
    recomputes them.
    """
    root = Path(pack_dir)
    records: dict[str, dict] = {}
    repeated: set[str] = set()
    problems: dict[str, str] = {}  # run id -> the first thing wrong with its rows
    stored: dict[str, tuple[str | None, str | None]] = {}  # run id -> its hashes in runs.csv.gz

    def refuse(run_id: str, why: str) -> None:
        problems.setdefault(run_id, why)

    def owner(path: Path, n: int, row: dict) -> str:
        run_id = row.pop("run_id")
        if run_id not in records:
            raise NormbenchError(f"{path}, row {n}: run {run_id!r} is not listed in {root / RUNS}; a pack is written "
                                 f"by `normbench pack`, never edited: re-create it from the original records")
        return run_id

    reading = root / RUNS
    try:
        for n, row in enumerate(_rows(root / RUNS), 1):
            run_id = row["run_id"]
            if run_id in records:
                repeated.add(run_id)
                continue
            try:
                _cells(row)
                records[run_id] = _run_row(row)
            except ValueError as e:
                records[run_id] = {"history": [], "stats": {"rows": []}}
                refuse(run_id, f"{RUNS}, row {n}: {e}")
            stored[run_id] = tuple(row.get(k) for k in DIGESTS)
        hashes = {run_id: (hashlib.sha256(), hashlib.sha256()) for run_id in records}
        reading = root / HISTORY
        for n, row in enumerate(_rows(root / HISTORY), 1):
            run_id = owner(root / HISTORY, n, row)
            try:
                _cells(row)
                epoch = row.pop("epoch")
                hashes[run_id][0].update(_history_line(epoch, row.items()))
                h = {"epoch": _int("epoch", epoch)}
                h.update({k: _float(k, v) for k, v in row.items() if v != ""})
            except ValueError as e:
                refuse(run_id, f"{HISTORY}, row {n}: {e}")
                continue
            records[run_id]["history"].append(h)
        reading = root / STATS
        for n, row in enumerate(_rows(root / STATS), 1):
            run_id = owner(root / STATS, n, row)
            try:
                _cells(row)
                cells = [row[k] for k in rec_mod.STATS_COLUMNS]
                hashes[run_id][1].update(_stats_line(cells))
                records[run_id]["stats"]["rows"].append([_int("epoch", cells[0]), _int("layer", cells[1]), cells[2],
                                                         cells[3], _float("value", cells[4])])
            except ValueError as e:
                refuse(run_id, f"{STATS}, row {n}: {e}")
    except (KeyError, TypeError, AttributeError) as e:
        raise NormbenchError(f"{reading} is not part of a consistent normbench pack ({type(e).__name__}: {e}); "
                             f"re-create the pack from the original records with `normbench pack`") from None
    out, bad = [], []
    for run_id, rec in records.items():
        if run_id in repeated:
            bad.append((run_id, f"listed more than once in {RUNS}"))
            continue
        if run_id in problems:
            bad.append((run_id, problems[run_id]))
            continue
        try:
            rec = rec_mod.usable(rec)  # the checks, upgrades and defaults a JSON record gets (normbench.reader)
        except ValueError as e:  # named by the file that holds the section at fault (not genuine: the runs file)
            bad.append((run_id, f"{TABLE_FILES.get(getattr(e, 'section', None), RUNS)}: {e}"))
            continue
        why = _digest_problem(stored[run_id], hashes[run_id])
        if why:
            bad.append((run_id, why))
            continue
        out.append(rec)
    return out, bad


def _digest_problem(stored: tuple[str | None, str | None], hashes) -> str | None:
    """Why a run's history or stats rows are not the ones packed with it (None when they are, or when the pack
    predates the hashes: its runs file has no such columns)."""
    for name, column, want, got in zip((HISTORY, STATS), DIGESTS, stored, hashes):
        if want is None:
            continue
        if not want:
            return f"{RUNS}: the run has no {column} (a pack written by `normbench pack` holds one for every run)"
        if want != got.hexdigest():
            return (f"{name}: the run's rows are not the ones packed with it (their hash is not its {column} in "
                    f"{RUNS}): rows edited, added, dropped, reordered or moved from another run")
    return None


def refusal(pack_dir: str | Path, bad: list[tuple[str, str]]) -> str:
    """The message that refuses a pack's unusable runs (from :func:`read`), with the fix."""
    root = Path(pack_dir)
    runs = "; ".join(f"run {run_id} ({why})" for run_id, why in bad)
    if all(rec_mod.NEWER_SCHEMA in why for _, why in bad):  # nothing edited: this normbench is too old for them
        return f"unreadable run(s) in the pack {root} ({RUNS}): {runs}."
    return (f"unreadable run(s) in the pack {root} ({RUNS}, {HISTORY}, {STATS}): {runs}. "
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
