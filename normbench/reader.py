"""The one record reader: every record normbench reads from disk comes through here.

A results folder holds records in two formats, each read by its codec:

- :data:`JSON`: one ``*.json`` file per run, as :func:`normbench.store.save_record` writes it (file name:
  :func:`record_filename`);
- :data:`PACK`: the compact committed form, three gzipped CSV files (:mod:`normbench.pack`).

A folder may hold both (a run resumed in a packed folder). Each codec decodes what it holds into plain
dicts and hands each to :func:`normbench.record.usable`: the layout checked, the schema upgrades applied in
order (:data:`normbench.record.UPGRADES`), every section filled in (:func:`normbench.record.normalized`),
and the run id checked against the spec. So every reader gets records of the current layout and trusts
them: report, check and pack through :func:`load_records`, resume through :func:`completed_ids` (complete records of the current
schema only; :func:`refuse_superseded` stops a run into a folder of older records), preflight through
:func:`record_backends`. A record that fails is refused the same way by all of them: the readers stop
with a message naming it and the fix, resume trains its run again and warns.

Nothing read can run code: JSON text is parsed by :func:`normbench.record.loads` (strict JSON, no pickles),
a pack's cells by the csv and json modules.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import pack
from . import record as rec_mod
from .errors import ConfigError, NormbenchError
from .record import COMPLETE
from .spec import RunSpec

Refused = list[tuple[str, str]]  # (the file name or run id, why) of each record a codec could not use


def record_filename(spec: RunSpec) -> str:
    """The JSON file name of ``spec``'s record (readers know a record by its content, not by this name)."""
    return f"{spec.dataset}-{spec.model}-{spec.strategy}-s{spec.seed}-{spec.run_id}.json"


class JsonCodec:
    """Records as JSON files, one per run: ``*.json`` in the folder, sorted by file name."""

    name = "JSON"

    def holds(self, root: Path) -> bool:
        return any(root.glob("*.json"))

    def read_file(self, path: Path) -> dict:
        """The usable record in ``path``; OSError or ValueError (naming what is wrong, not the file) if none."""
        return rec_mod.usable(rec_mod.loads(path.read_text()))  # too deeply nested: a ValueError like any malformed file

    def read(self, root: Path) -> tuple[list[dict], Refused]:
        """The usable records of ``root``'s JSON files and (file name, why) for each file that is not one:
        unreadable, not a record, a layout that fails :func:`record.check_layout`, or not genuine."""
        good, bad = [], []
        for path in sorted(root.glob("*.json")):
            try:
                good.append(self.read_file(path))
            except (OSError, ValueError) as e:
                bad.append((path.name, str(e)))
        return good, bad

    def refusal(self, root: Path, bad: Refused) -> str:
        """The message that refuses ``bad``, with the fix."""
        newer = [name for name, why in bad if rec_mod.NEWER_SCHEMA in why]  # the fix: a newer normbench
        fix = "delete or re-run them (a fresh folder, or --force)"
        if newer:
            fix = (f"update normbench to read {', '.join(newer)}"
                   + ("; delete or re-run the others (a fresh folder, or --force)" if len(newer) < len(bad) else ""))
        return (f"unreadable record(s) in {root}: {'; '.join(f'{name} ({why})' for name, why in bad)}"
                + ("" if any("schema version" in why for _, why in bad)
                   else f". This normbench reads schema versions {rec_mod.READABLE_VERSIONS}")
                + f"; {fix}.")

    def warning(self, root: Path, name: str, why: str) -> str:
        return (f"{root / name} is not a usable record ({why}): not counted as complete, so a run it holds is "
                f"trained again")


class PackCodec:
    """Records as a pack (``normbench pack``): ``runs.csv.gz``, ``history.csv.gz`` and ``stats.csv.gz``."""

    name = "pack"

    def holds(self, root: Path) -> bool:
        return pack.is_pack(root)

    def read(self, root: Path) -> tuple[list[dict], Refused]:
        """The usable runs of the pack and (run id, why) for each that is not (:func:`normbench.pack.read`)."""
        return pack.read(root)

    def refusal(self, root: Path, bad: Refused) -> str:
        return pack.refusal(root, bad)

    def warning(self, root: Path, name: str, why: str) -> str:
        return (f"run {name} in the pack {root} is not a usable record ({why}): not counted as complete, so "
                f"it is trained again; the readers refuse the pack until it is re-created from the original records "
                f"with `normbench pack`")


JSON, PACK = JsonCodec(), PackCodec()
CODECS = (PACK, JSON)  # the order runs are read in: a pack's first (see _one_per_run)


@dataclass
class Folder:
    """What the codecs found in a results folder: the usable records of each and what each refused."""

    root: Path
    records: dict[str, list[dict]] = field(default_factory=dict)  # codec name -> its usable records
    refused: dict[str, Refused] = field(default_factory=dict)  # codec name -> (file or run id, why)

    def all_records(self) -> list[dict]:
        """Every usable record, in codec order (copies of one run included)."""
        return [r for codec in CODECS for r in self.records.get(codec.name, [])]


def holds_records(results_dir: str | os.PathLike) -> bool:
    """Whether ``results_dir`` is a folder that holds records in some codec's format (usable or not)."""
    root = Path(results_dir)
    return root.is_dir() and any(codec.holds(root) for codec in CODECS)


def read_folder(results_dir: str | os.PathLike) -> Folder:
    """Every record of a folder (not recursive), by codec; a folder that does not exist holds none. A pack that
    cannot be read as a whole raises NormbenchError (see :func:`normbench.pack.read`)."""
    folder = Folder(Path(results_dir))
    if not folder.root.is_dir():
        return folder
    for codec in CODECS:
        if codec.holds(folder.root):
            folder.records[codec.name], folder.refused[codec.name] = codec.read(folder.root)
    return folder


def load_records(results_dir: str | os.PathLike) -> list[dict]:
    """All records of a results folder, each :func:`record.normalized`, one per run id.

    A folder may hold a pack and JSON records: both are read, the pack's runs first, then the JSON records
    sorted by file name; of several copies of one run the one :func:`_one_per_run` says wins. A record that
    any codec refuses (unreadable, malformed, of a newer schema, not genuine) makes this raise NormbenchError
    naming each one and the fix.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise NormbenchError(f"results folder {str(root)!r} does not exist; run `normbench run --results {root}` first.")
    folder = read_folder(root)
    problems = [codec.refusal(root, folder.refused[codec.name]) for codec in (JSON, PACK)
                if folder.refused.get(codec.name)]
    if problems:
        raise NormbenchError(" ".join(problems))
    return _one_per_run(folder.all_records(), packed=len(folder.records.get(PACK.name, [])))


def _one_per_run(records: list[dict], packed: int = 0) -> list[dict]:
    """Copies of one run (under several file names, or in a pack and a JSON file) count once.

    The copy that wins: a complete one over an incomplete one; then the latest ``finished_at`` (a
    rerun with --force); then, on a tie, a JSON record over the pack's copy (the first ``packed``
    records come from a pack, which keeps 9 significant digits of history and stats values), then
    the first in the list. Runs keep the order of their first copy.
    """
    best: dict[str, tuple[tuple, dict]] = {}
    for i, rec in enumerate(records):
        rank = (rec["status"] in COMPLETE, rec["finished_at"] or "", i >= packed)  # finished_at: None while running
        old = best.get(rec["run_id"])
        if old is None or rank > old[0]:
            best[rec["run_id"]] = (rank, rec)
    return [best[k][1] for k in dict.fromkeys(r["run_id"] for r in records)]


def _warn(message: str) -> None:
    print(f"normbench: warning: {message}", file=sys.stderr, flush=True)


def completed_ids(results_dir: str | os.PathLike, warn: Callable[[str], None] | None = None,
                  accept: Callable[[dict], bool] | None = None) -> set[str]:
    """Run ids of the complete records in a folder, known by their content, whatever their file names.

    A record counts as complete when its status is complete (ok or diverged), it was made under the current
    record schema (:data:`normbench.record.SCHEMA_VERSION`: a record of an older schema was computed another way
    and is never resumed as current, see :func:`superseded`), and ``accept`` (when given) returns True for it
    (a caller's own protocol check, e.g. a tuning study's ``suite.search``). A rejected record is not complete,
    so its run is trained again: :func:`normbench.store.save_record` then replaces its JSON file, so a caller
    that must keep such records refuses or moves them first.

    It reads the folder as :func:`load_records` does. A record that a codec refuses is not complete: its
    run is trained again, and ``warn`` (default: a warning on stderr) says so, naming it. A pack that cannot
    be read at all raises NormbenchError, as it does for the readers, rather than retraining every run it holds.
    """
    folder = read_folder(results_dir)
    warn = warn or _warn
    for codec in (JSON, PACK):
        for name, why in folder.refused.get(codec.name, []):
            warn(codec.warning(folder.root, name, why))
    return {r["run_id"] for r in folder.all_records() if r["status"] in COMPLETE
            and r["schema_version"] == rec_mod.SCHEMA_VERSION and (accept is None or accept(r))}


def superseded(results_dir: str | os.PathLike) -> list[dict]:
    """The records of a folder made under an older record schema than :data:`normbench.record.SCHEMA_VERSION`,
    one per run (:func:`_one_per_run`), leaving out runs that also have a copy of the current schema. Records a
    codec refuses are not read (resume warns about them; see :func:`completed_ids`)."""
    records = read_folder(results_dir).all_records()
    current = {r["run_id"] for r in records if r["schema_version"] == rec_mod.SCHEMA_VERSION}
    return [r for r in _one_per_run(records)
            if r["schema_version"] < rec_mod.SCHEMA_VERSION and r["run_id"] not in current]


def superseded_message(results_dir: str | os.PathLike, old: list[dict], grid_ids: set[str] = frozenset()) -> str:
    """Why ``normbench run`` refuses a folder holding the records ``old`` (:func:`superseded`), with the fix."""
    versions = sorted({r["schema_version"] for r in old})
    in_grid = [r for r in old if r["run_id"] in grid_ids]
    spec = in_grid[0]["spec"] if in_grid else old[0]["spec"]
    example = f"{spec.get('dataset')}/{spec.get('model')}/{spec.get('strategy')}/seed{spec.get('seed')}"
    return (f"{results_dir} holds {len(old)} record(s) of record schema {', '.join(map(str, versions))} "
            f"({len(in_grid)} of them of runs in this grid; e.g. {example}); this normbench writes schema "
            f"{rec_mod.SCHEMA_VERSION}, which computes runs another way (see docs/records.md, 'Schema versions'). "
            f"Resuming would report the old records as current, and retraining would overwrite them, so nothing "
            f"was trained (--force does not change this). Run into a new --results folder; the old records stay "
            f"readable by `normbench report --results {results_dir}`, which marks them superseded (or move them "
            f"out of {results_dir} first)")


def refuse_superseded(results_dir: str | os.PathLike, grid_ids: set[str] = frozenset()) -> None:
    """ConfigError (:func:`superseded_message`) if the folder holds records of an older record schema: a folder is
    grown and resumed only under the schema this normbench writes. ``grid_ids``: the run ids about to run (named in
    the message)."""
    old = superseded(results_dir)
    if old:
        raise ConfigError(superseded_message(results_dir, old, grid_ids))


def is_complete(results_dir: str | os.PathLike, spec: RunSpec) -> bool:
    """Whether a complete record of ``spec`` is in the folder (under any file name); for many specs
    call :func:`completed_ids` once instead."""
    return spec.run_id in completed_ids(results_dir)


def record_backends(results_dir: str | os.PathLike) -> set[str]:
    """The Keras backends the usable records (JSON and pack) of a folder were made with."""
    backends = (r["environment"].get("backend") for r in read_folder(results_dir).all_records())
    return {str(b) for b in backends if b}


def find_record(results_dir: str | os.PathLike, spec: RunSpec) -> dict | None:
    """The usable record in ``spec``'s JSON file (:func:`record_filename`), or None when it is absent or not usable."""
    try:
        return JSON.read_file(Path(results_dir) / record_filename(spec))
    except (OSError, ValueError):
        return None
