"""Records on disk, written: one JSON file per run, written atomically, and the lock on a results folder.

Reading is :mod:`normbench.reader`'s (JSON files and packs, the schema upgrades); its functions keep their
names here for the scripts and tests that read through ``store``. DataFrames of records are the report's
(:mod:`normbench.report.frames`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import NormbenchError
from .files import naming
from .reader import completed_ids, find_record, is_complete, load_records, record_backends, record_filename  # noqa: F401
from .record import clean
from .spec import RunSpec


def atomic_write_json(path: Path, data: Any) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    Nothing is written through a link: the temporary file is new (``mkstemp``), and the rename replaces a
    link at ``path`` rather than the file it points to. An error (a full disk) names ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with naming(path):
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; records are ordinary readable files
            with os.fdopen(fd, "w") as f:
                json.dump(clean(data), f, indent=1, allow_nan=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


LOCK_NAME = ".normbench.lock"


def _lock_holder(fd: int) -> str:
    """The pid the holder wrote into the lock file, as text ('' when none could be read)."""
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").split()
    except OSError:
        return ""
    return text[0] if text and text[0].isascii() and text[0].isdigit() else ""


@contextlib.contextmanager
def hold_folder(results_dir: str | os.PathLike):
    """Hold ``results_dir`` for one `normbench run`: an exclusive OS lock (``fcntl.flock``) on its lock file.

    A second run on the same folder stops with a message instead of training the same runs twice. The
    kernel releases the lock when the holder exits, however it exits, so there is no stale lock to take
    over and no window in which two processes both see the folder free; the pid written into the file is
    only for the message. The file stays when the run ends (deleting it would let a process that had
    already opened it lock a file nobody else sees).
    """
    lock = Path(results_dir) / LOCK_NAME
    if lock.is_symlink() or (lock.exists() and not lock.is_file()):
        kind = "a link" if lock.is_symlink() else "a folder" if lock.is_dir() else "not a regular file"
        raise NormbenchError(f"{lock} is {kind}; normbench keeps its folder lock there. Remove it and run again.")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        raise NormbenchError(f"cannot open the folder lock {lock} ({e.strerror or e}); check the folder's "
                             f"permissions or give another --results folder") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            raise NormbenchError(
                f"{results_dir} is in use by another `normbench run`{f' (pid {holder})' if holder else ''}. Wait for "
                f"it to finish, or give this run another --results folder.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def save_record(results_dir: str | os.PathLike, record: dict) -> Path:
    spec = RunSpec.from_dict(record["spec"])
    path = Path(results_dir) / record_filename(spec)
    atomic_write_json(path, record)
    return path
