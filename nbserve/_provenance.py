"""Where a version came from: the notebook and cell, who and where, the Python and packages, the
git commit of the notebook's folder, and the scheduled run that made it (if one did)."""

from __future__ import annotations

import datetime as _dt
import getpass
import hashlib
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

def _git_commit(directory: Path) -> dict[str, Any] | None:
    try:
        head = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(dirty)} if head else None


def current_cell() -> tuple[str | None, int | None, str | None]:
    """(notebook path, execution count, cell source) of the running cell, if in IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None, None, None
    shell = get_ipython()
    if shell is None:
        return None, None, None
    notebook = (
        shell.user_ns.get("__vsc_ipynb_file__")
        or os.environ.get("NBSERVE_NOTEBOOK_PATH")
        or os.environ.get("JPY_SESSION_NAME")
        or shell.user_ns.get("__session__")
    )
    history = shell.user_ns.get("_ih") or [None]
    return (str(notebook) if notebook else None, shell.execution_count, history[-1])


def provenance(packages: list[str], *, resolved: list[str] | None = None,
               notebook: str | None = None) -> dict[str, Any]:
    nb_path, execution_count, cell_source = current_cell()
    notebook = notebook or nb_path
    where = Path(notebook).resolve().parent if notebook else Path.cwd()
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = str(os.getuid())
    return {
        "notebook": notebook,
        "cell_execution_count": execution_count,
        "cell_sha256": hashlib.sha256(cell_source.encode()).hexdigest() if cell_source else None,
        "cell_source": cell_source[:4000] if cell_source else None,
        "user": user,
        "host": socket.gethostname(),
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "packages": packages,
        # the pins with what they need, at the kernel's versions: what a serving environment installs
        "resolved": resolved if resolved is not None else packages,
        "git": _git_commit(where),
        "cwd": str(Path.cwd()),
        "scheduled_run": _scheduled_run(),
    }


def _scheduled_run() -> dict[str, Any] | None:
    """Set by the agent's scheduler in the environment of the notebook it executes."""
    run_id = os.environ.get("NBSERVE_RUN_ID")
    if not run_id:
        return None
    return {
        "run_id": run_id,
        "schedule": os.environ.get("NBSERVE_SCHEDULE"),
        "executed_notebook": os.environ.get("NBSERVE_RUN_NOTEBOOK"),
    }
