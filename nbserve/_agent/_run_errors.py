"""Why a scheduled run failed, cut to what matters: the cell that raised, a full disk, or the
last error papermill logged."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import InsufficientStorage, NbserveError
from ._supervisor import log_tail

ERROR_CHARS = 1000
# A failed run whose output folder has less free space than this could not write its notebook or log.
DISK_FULL_BYTES = 1 << 20


def run_error(executed: Path, log_path: Path, code: int) -> str:
    """Why papermill failed: the cell that raised, else a full disk, else its log's last error."""
    full = disk_full(log_path.parent, force=log_says_disk_full(log_path))
    return (notebook_error(executed) or (error_text(full) if full else None) or log_error(log_path)
            or f"papermill exited with code {code}")


def disk_full(folder: Path, *, force: bool = False) -> InsufficientStorage | None:
    """An InsufficientStorage when the disk holding ``folder`` (a run's output folder) has no
    room left (``force``: a write there already failed with ENOSPC), else None."""
    try:
        st = os.statvfs(folder)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    if not force and (free is None or free >= DISK_FULL_BYTES):
        return None
    left = f" ({free // 1024} KiB free)" if free is not None else ""
    return InsufficientStorage(
        f"the disk at {folder} is full{left}: the run's executed notebook and log could not be written",
        path=str(folder),
    )


def log_says_disk_full(log_path: Path) -> bool:
    tail = log_tail(log_path, 40)
    return "No space left on device" in tail or "[Errno 28]" in tail


def error_text(exc: NbserveError) -> str:
    """What a run's ``error`` says of an nbserve error: ``Class: message``, as for a cell's."""
    return f"{type(exc).__name__}: {exc.message}"


def notebook_error(executed: Path) -> str | None:
    """``ename: evalue`` of the first cell that raised, from the executed notebook."""
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except Exception:  # noqa: BLE001 - missing or half-written
        return None
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                where = f" (cell {cell.get('execution_count')})" if cell.get("execution_count") else ""
                return f"{out.get('ename')}: {strip_ansi(str(out.get('evalue')))}{where}"
    return None


def log_error(log_path: Path) -> str | None:
    """The last meaningful line of papermill's log (kernel missing, bad parameters...)."""
    lines = [line.strip() for line in log_tail(log_path, 40).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return strip_ansi(line)
    return strip_ansi(lines[-1]) if lines else None


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
