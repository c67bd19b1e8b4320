"""Files normbench reads from the user and writes into the folders it is given, opened one careful way.

Writes never follow a symbolic link (``O_NOFOLLOW``): a link planted in a results or report folder
would otherwise send a record, a pack, a log or a table to wherever it points. An error while
writing names the file (a full disk raises ``OSError`` without a file name from ``write``), so the
CLI can say which file could not be written. Small input files (suite and rules files) are read only
when they are regular files of a bounded size: a FIFO would hang the read, ``/dev/zero`` would never end.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from .errors import ConfigError, NormbenchError

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
SMALL_FILE_LIMIT = 1 << 20  # suite and rules files are a few KiB of text


@contextlib.contextmanager
def naming(path: str | os.PathLike):
    """Within: an OSError that names no file (``write`` on a full disk) is raised again naming ``path``."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise type(e)(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e


def refuse_link(path: str | os.PathLike, what: str = "a file normbench writes") -> None:
    """Raise NormbenchError when ``path`` is a symbolic link (normbench never writes through one)."""
    if Path(path).is_symlink():
        raise NormbenchError(f"{path} is a symbolic link, where normbench writes {what}; it never writes through a "
                             f"link (that would write outside the folder it was given). Remove the link and run again.")


def open_for_writing(path: str | os.PathLike, mode: str = "w", *, what: str = "a file normbench writes"):
    """``open(path, mode)`` for ``w``/``wb``/``a``/``ab`` without following a link at ``path`` (refused, named)."""
    flags = os.O_WRONLY | os.O_CREAT | NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_APPEND if mode.startswith("a") else os.O_TRUNC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            refuse_link(path, what)
        raise
    return os.fdopen(fd, mode)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` into ``path`` (not through a link; an error names the file)."""
    with naming(path), open_for_writing(path, "w") as f:
        f.write(text)


def write_csv(frame, path: str | os.PathLike, **kwargs) -> None:
    """``frame.to_csv(path, **kwargs)``, not through a link, an error naming the file."""
    with naming(path), open_for_writing(path, "w") as f:
        frame.to_csv(f, **kwargs)


def subfolder(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (with its parents) that normbench writes into; a link there is refused."""
    path = Path(path)
    refuse_link(path, "a folder of its output")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_small_file(path: str | os.PathLike, what: str, fix: str, limit: int = SMALL_FILE_LIMIT) -> bytes:
    """The bytes of a small regular file, or ConfigError saying what ``path`` is instead.

    ``what`` names the file in messages (``suite file``), ``fix`` says what to give instead. A missing file, a
    link loop, a dangling link, a folder, a FIFO or a device, a file over ``limit`` bytes are refused without
    reading them: the FIFO is opened non-blocking, so no writer is waited for.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigError(f"{what} {path} is a symbolic link loop (the link leads back to itself); {fix}") from None
        if e.errno == errno.ENOENT:
            if path.is_symlink():
                raise ConfigError(f"{what} {path} is a link to {os.readlink(path)}, which does not exist; {fix}") from None
            raise ConfigError(f"{what} {path} does not exist; {fix}") from None
        if e.errno == errno.EISDIR:
            raise ConfigError(f"{what} {path} is a folder, not a file; {fix}") from None
        raise ConfigError(f"{what} {path}: cannot read it ({e.strerror or e}); {fix}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{what} {path} is {_kind(info.st_mode)}, not a regular file; {fix}")
        if info.st_size > limit:
            raise ConfigError(f"{what} {path} is {info.st_size:,} bytes; a {what} is small text (at most {limit:,} "
                              f"bytes): is it the right file? {fix}")
        data = f.read(limit + 1)
    if len(data) > limit:  # grew while read
        raise ConfigError(f"{what} {path} is over {limit:,} bytes; a {what} is small text. {fix}")
    return data
