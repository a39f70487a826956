"""Scheduled retraining from Python: run a notebook on a cron schedule in the agent.

    sched = nbserve.schedule("train.ipynb", cron="0 3 * * *", name="churn", params={"n_estimators": 200})
    sched.run_now(wait=True); sched.runs(); sched.pause(); sched.resume(); sched.remove()

The agent executes the notebook with papermill (with ``nbserve_scheduled_run=True`` and
``deployment_name`` set) and the notebook deploys as usual; every run is recorded.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._connection import actor, connect
from ._transport import AgentClient
from .errors import AgentError, InvalidArgument

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Schedule", "schedule", "schedules", "get_schedule"]

RUN_COLUMNS = ["id", "trigger", "status", "due_at", "started_at", "duration_seconds", "version", "reason",
               "error", "parameters", "executed_notebook"]


class Schedule:
    """A notebook schedule on an agent. Attributes are a snapshot; :meth:`refresh` reloads."""

    def __init__(self, client: AgentClient, data: dict[str, Any]) -> None:
        self._client = client
        self._data = data

    @property
    def name(self) -> str:
        return self._data["name"]

    @property
    def deployment(self) -> str:
        return self._data["deployment"]

    @property
    def notebook(self) -> str:
        return self._data["notebook"]

    @property
    def cron(self) -> str:
        return self._data["cron"]

    @property
    def timezone(self) -> str:
        return self._data["timezone"]

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self._data["parameters"])

    @property
    def kernel(self) -> str:
        """The Jupyter kernel its runs use (on the agent)."""
        return self._data["kernel"]

    @property
    def paused(self) -> bool:
        return bool(self._data["paused"])

    @property
    def next_run_at(self) -> str | None:
        """The next due time (UTC, ISO 8601); ignored while paused."""
        return self._data["next_run_at"]

    @property
    def last_run_at(self) -> str | None:
        return self._data["last_run_at"]

    @property
    def data(self) -> dict[str, Any]:
        return dict(self._data)

    def _path(self, suffix: str = "") -> str:
        return f"/v1/schedules/{self.name}{suffix}"

    def refresh(self) -> "Schedule":
        self._data = self._client.get(self._path())
        return self

    def pause(self) -> "Schedule":
        """Stop firing (a run in progress finishes)."""
        self._data = self._client.post(self._path("/pause"), json={"actor": actor()})
        return self

    def resume(self) -> "Schedule":
        """Fire again from the next due time after now (a paused period is not caught up)."""
        self._data = self._client.post(self._path("/resume"), json={"actor": actor()})
        return self

    def remove(self) -> None:
        """Delete the schedule and its run records (a run in progress is stopped).

        Executed notebooks stay on disk: versions' provenance points at them.
        """
        # A run in progress is stopped first (its tree killed, what it deployed taken back).
        self._client.request("DELETE", self._path(), params={"actor": actor()}, timeout=120)

    def run_now(self, wait: bool = False, *, timeout: float | None = None) -> dict[str, Any]:
        """Start a run now and return it (a dict); ``wait=True`` returns it once finished.

        The run is ``skipped`` when one of this schedule is in progress.
        """
        run = self._client.post(self._path("/run"), json={"actor": actor()})
        if wait:
            run = self.wait_for_run(run["id"], timeout=timeout)
        return run

    def run(self, run_id: int) -> dict[str, Any]:
        """One run: status, duration, version, reason, error, executed notebook path."""
        return self._client.get(self._path(f"/runs/{run_id}"))

    def wait_for_run(self, run_id: int, *, timeout: float | None = None) -> dict[str, Any]:
        """Poll run ``run_id`` until it is no longer ``running``; return it."""
        limit = timeout if timeout is not None else float(self._data.get("timeout_seconds", 1800)) + 60
        deadline = time.monotonic() + limit
        while True:
            run = self.run(run_id)
            if run["status"] != "running":
                return run
            if time.monotonic() > deadline:
                raise AgentError(f"run {run_id} of {self.name} was still running after {limit:.0f} s",
                                 hint=f"see `nbserve schedule runs {self.name}`")
            time.sleep(0.5)

    def runs(self, limit: int = 100) -> "pd.DataFrame":
        """One row per run, oldest first, indexed by run id."""
        import pandas as pd

        rows = self._client.get(self._path("/runs"), params={"limit": limit})
        frame = pd.DataFrame(rows, columns=[*RUN_COLUMNS, *(k for k in (rows[0] if rows else {})
                                                           if k not in RUN_COLUMNS)])
        for column in ("due_at", "started_at", "finished_at"):
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame.set_index("id")

    def _repr_html_(self) -> str:
        d = self._data
        state = "paused" if d["paused"] else ("running" if d.get("running_run") else "active")
        params = ", ".join(f"{k}={v!r}" for k, v in d["parameters"].items()) or "none"
        rows = [
            ("deployment", d["deployment"]),
            ("notebook", d["notebook"]),
            ("cron", f"{d['cron']} ({d['timezone']})"),
            ("next run", d["next_run_at"] if not d["paused"] else "paused"),
            ("last run", d["last_run_at"] or "never"),
            ("parameters", params),
            ("kernel", d.get("kernel")),
            ("timeout", f"{d['timeout_seconds']:g} s; missed runs: {d['missed']}"),
        ]
        body = "".join(
            f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
            f"<td style='text-align:left'><code>{html.escape(str(v))}</code></td></tr>" for k, v in rows
        )
        return (f"<div class='nbserve-schedule'><b>schedule {html.escape(d['name'])}</b> "
                f"<span>({state})</span><table>{body}</table></div>")

    def __repr__(self) -> str:
        d = self._data
        state = "paused" if d["paused"] else f"next {d['next_run_at']}"
        return f"<Schedule {d['name']}: {d['notebook']} at {d['cron']!r} ({d['timezone']}), {state}>"


def schedule(
    notebook: str | Path,
    *,
    cron: str,
    name: str,
    params: dict[str, Any] | None = None,
    timezone: str = "UTC",
    timeout: float = 1800,
    missed: str = "run_once",
    schedule_name: str | None = None,
    kernel: str | None = None,
    target: str | None = None,
) -> Schedule:
    """Run ``notebook`` on a cron schedule in the agent, retraining deployment ``name``.

    Args:
        notebook: the notebook to execute (papermill); a relative path is taken from here.
        cron: five-field cron expression (minute hour day month weekday), e.g. ``"0 3 * * *"``.
        name: the deployment the notebook deploys; passed to it as ``deployment_name``.
        params: papermill parameters (JSON values), e.g. ``{"n_estimators": 200}``.
        timezone: IANA time zone the cron expression is read in.
        timeout: seconds before a run is stopped (its whole process tree) as ``timed_out``.
        missed: due times missed while the agent was down: ``"run_once"`` or ``"skip"``.
        schedule_name: the schedule's own name, for several schedules of one deployment
            (default: ``name``).
        kernel: the Jupyter kernel the runs use, one the agent has (an unknown one is refused,
            naming those it has). Default: the notebook's own (its kernelspec metadata), or
            ``python3`` (the agent's Python) for a notebook that names none.
        target: the agent (``None``: the local one, started on demand).
    """
    if not isinstance(cron, str):
        raise InvalidArgument(f"cron must be a string such as '0 3 * * *', got {type(cron).__name__}")
    client = connect(target)
    body = {
        "name": schedule_name or name,
        "deployment": name,
        "notebook": str(Path(notebook).expanduser().resolve()),
        "cron": cron,
        "timezone": timezone,
        "parameters": dict(params or {}),
        "timeout": timeout,
        "missed": missed,
        "kernel": kernel,
        "actor": actor(),
    }
    return Schedule(client, client.post("/v1/schedules", json=body))


def schedules(target: str | None = None) -> list[Schedule]:
    """Every schedule on the target."""
    client = connect(target)
    return [Schedule(client, data) for data in client.get("/v1/schedules")]


def get_schedule(name: str, *, target: str | None = None) -> Schedule:
    """The schedule called ``name`` (``NotFound`` if there is none)."""
    client = connect(target)
    return Schedule(client, client.get(f"/v1/schedules/{name}"))
