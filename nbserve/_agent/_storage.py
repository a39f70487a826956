"""A full disk, recognised wherever the agent writes, and said one way.

Uploads, imports, registry and metrics writes each fail differently when space runs out
(``OSError`` errno 28, SQLite's ``SQLITE_FULL``, a ``shutil.Error`` listing every failed
copy). :func:`is_disk_full` knows them all; :func:`insufficient` turns one into a short
:class:`~nbserve.errors.InsufficientStorage` (507) naming the place and, when known, how
much was needed against how much is free.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from .. import errors

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13
_HINT = ("free space on that disk (old logs, Bentos of versions you will never roll back to) or move "
         "NBSERVE_HOME to a larger one, then try again; what was serving keeps serving")


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the disk is full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, shutil.Error):  # copytree: a list of (src, dst, "[Errno 28] ...")
            entries = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
            if any(_names_full(str(entry)) for entry in entries):
                return True
        elif isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        elif isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            if (code is not None and code & 0xFF == _SQLITE_FULL) or "database or disk is full" in str(exc):
                return True
        exc = exc.__cause__ or exc.__context__
    return False


def _names_full(text: str) -> bool:
    return any(f"[Errno {number}]" in text for number in _FULL_ERRNOS)


def free_bytes(path: Path) -> int | None:
    """Bytes free on the disk holding ``path`` (its nearest existing parent)."""
    path = Path(path)
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def insufficient(path: Path, *, needed: int | None = None, what: str | None = None) -> errors.InsufficientStorage:
    """The one error for a full disk: where, what was free, what was needed (when known)."""
    free = free_bytes(path)
    message = f"not enough space on the disk holding {path}: {size_text(free)} free"
    if needed is not None:
        message += f", {what or 'this'} needs {size_text(needed)}"
    elif what:
        message += f" ({what})"
    return errors.InsufficientStorage(message, hint=_HINT, path=str(path), free_bytes=free, needed_bytes=needed)


def require(path: Path, needed: int, what: str) -> None:
    """Refuse before writing ``needed`` bytes under ``path`` when the disk does not have them."""
    free = free_bytes(path)
    if free is not None and needed > free:
        raise insufficient(path, needed=needed, what=what)


def size_text(size: int | None) -> str:
    if size is None:
        return "an unknown amount"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
