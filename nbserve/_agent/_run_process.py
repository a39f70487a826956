"""One scheduled run as a process: papermill in its own session, every process seen under it, and their end."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .._config import Home
from ._supervisor import kill_tree

log = logging.getLogger("nbserve.agent")

KILL_GRACE = 5.0


@dataclass
class ActiveRun:
    """A run in progress: its papermill process and every process seen under it."""

    run_id: int
    schedule: str
    proc: asyncio.subprocess.Process | None = None
    known: dict[int, psutil.Process] = field(default_factory=dict)
    stop_reason: str | None = None
    task: asyncio.Task[Any] | None = None

    def scan(self) -> None:
        # Only while papermill is not reaped: after that its PID may belong to anyone. What was
        # seen before stays safe to signal (psutil checks each process's creation time).
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            self.known.setdefault(proc.pid, proc)


def papermill_command(python: str, notebook: Path, executed: Path, params: dict[str, Any], kernel: str,
                      language: str | None) -> list[str]:
    return [
        python, "-m", "papermill", str(notebook), str(executed),
        "-y", json.dumps(params),  # JSON is YAML: types are kept exactly
        "-k", kernel, "--cwd", str(notebook.parent),
        # papermill writes the parameters in the notebook's language, which a notebook without
        # kernelspec metadata does not name: the kernel's is the one that runs them
        *(["-l", language] if language else []),
        "--no-progress-bar", "--log-output", "--request-save-on-cell-execute",
    ]


async def run_notebook(active: ActiveRun, command: list[str], *, env: dict[str, str], cwd: Path,
                       log_path: Path, timeout: float) -> int | None:
    """Start papermill (its output to ``log_path``) and record every process under it while it
    runs; its exit code, or None past ``timeout`` (the caller ends the tree either way)."""
    with log_path.open("ab") as log_file:
        active.proc = await asyncio.create_subprocess_exec(
            *command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=env, cwd=str(cwd), start_new_session=True,
        )
    watcher = asyncio.get_running_loop().create_task(_watch(active))
    try:
        return await asyncio.wait_for(active.proc.wait(), timeout=timeout)
    except TimeoutError:
        return None
    finally:
        watcher.cancel()


async def _watch(active: ActiveRun) -> None:
    """Record every process under the run while it runs (the kernel leads its own session)."""
    while True:
        active.scan()
        await asyncio.sleep(0.5)


async def end_run(home: Home, active: ActiveRun) -> None:
    """End the run's whole tree: what was seen under it, and anything carrying its run id."""
    active.scan()
    procs = list(active.known.values())
    procs += [p for p in await asyncio.to_thread(processes_of_run, home, active.run_id) if p.pid not in active.known]
    if procs:
        left = await asyncio.to_thread(kill_tree, procs, KILL_GRACE)
        if left:
            log.warning("scheduled run %s: processes still alive after SIGKILL: %s", active.run_id, left)
    if active.proc is not None and active.proc.returncode is None:
        try:
            await asyncio.wait_for(active.proc.wait(), timeout=5)
        except TimeoutError:  # pragma: no cover
            pass


def end_left_over(home: Home, run_id: int) -> None:
    """End what a previous agent's run left behind (found by its run id; nothing was seen under it)."""
    for proc in processes_of_run(home, run_id):
        kill_tree([proc], KILL_GRACE)


def processes_of_run(home: Home, run_id: int) -> list[psutil.Process]:
    """Live processes started for this run: they carry its home and run id in their environment."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            env = proc.environ()
            if (env.get("NBSERVE_RUN_ID") == str(run_id) and env.get("NBSERVE_HOME") == str(home.root)
                    and proc.status() != psutil.STATUS_ZOMBIE):
                found.append(proc)
        except psutil.Error:
            continue
    return found
