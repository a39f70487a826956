"""REST routes of the scheduler: typed models, thin handlers (the logic is in ``_scheduler``).

Handlers raise ``nbserve.errors`` only; the app maps them to HTTP statuses in one place.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ._access import Principal
from ._schedule_rules import DEFAULT_TIMEOUT, MAX_TIMEOUT
from ._schedule_store import RunRow, ScheduleRow
from ._scheduler import Scheduler

# -- models -------------------------------------------------------------------------------


class ScheduleIn(BaseModel):
    name: str = Field(description="the schedule's name (unique); also the deployment unless `deployment` is set")
    deployment: str | None = Field(default=None, description="the deployment it retrains (default: name)")
    notebook: str = Field(description="absolute path of the notebook on the agent's host")
    cron: str = Field(description="cron expression, five fields (croniter), e.g. '0 3 * * *'")
    timezone: str = Field(default="UTC", description="IANA time zone the cron expression is read in")
    parameters: dict[str, Any] = Field(default_factory=dict, description="papermill parameters (JSON values)")
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, le=MAX_TIMEOUT,
                           description="seconds before a run is stopped (whole process tree) as timed_out")
    missed: Literal["skip", "run_once"] = Field(
        default="run_once", description="due times missed while the agent was down: run once, or skip")
    kernel: str | None = Field(
        default=None, max_length=200,
        description="Jupyter kernel the runs use (one the agent has); default: the notebook's own "
                    "(its kernelspec metadata), else python3")
    actor: str | None = Field(default=None, max_length=200)


class ScheduleOut(BaseModel):
    name: str
    deployment: str
    notebook: str
    cron: str
    timezone: str
    parameters: dict[str, Any]
    timeout_seconds: float
    missed: Literal["skip", "run_once"]
    paused: bool
    created_by: str | None
    created_at: str
    next_run_at: str | None = Field(description="next due time (UTC); ignored while paused")
    last_run_at: str | None
    kernel: str = Field(description="the Jupyter kernel its runs use")
    running_run: int | None = Field(description="id of the run in progress, if any")


class RunOut(BaseModel):
    id: int
    schedule: str
    deployment: str
    trigger: Literal["cron", "manual", "missed"]
    status: Literal["running", "succeeded", "failed", "timed_out", "skipped"]
    due_at: str | None = Field(description="the cron due time it ran for (null for manual runs)")
    started_at: str
    finished_at: str | None
    duration_seconds: float | None
    parameters: dict[str, Any]
    executed_notebook: str | None = Field(description="the notebook papermill executed (nbformat)")
    log_path: str | None = Field(description="papermill's log of the run")
    version: int | None = Field(description="the version of the deployment this run produced")
    reason: str | None = Field(description="why it produced no version, was skipped or stopped")
    error: str | None = Field(description="the notebook's error, e.g. 'ValueError: ...' (cell N)")
    actor: str | None


class ScheduleBrief(ScheduleOut):
    """A schedule with its newest run, as a list shows it."""

    last_run: RunOut | None


class ActorIn(BaseModel):
    actor: str | None = Field(default=None, max_length=200)


class TickIn(BaseModel):
    now: _dt.datetime | None = Field(
        default=None, description="the instant to fire at (ISO 8601; naive means UTC); default: the agent's clock")


# -- serialisation ------------------------------------------------------------------------


def schedule_out(scheduler: Scheduler, row: ScheduleRow) -> ScheduleOut:
    return ScheduleOut(**row.__dict__, running_run=scheduler.running(row.name))


def run_out(run: RunRow) -> RunOut:
    return RunOut(**run.__dict__)


# -- routes -------------------------------------------------------------------------------


def schedule_router(scheduler: Scheduler, *, view: Any, deploy: Any) -> APIRouter:
    """The ``/v1/schedules`` routes; ``view`` and ``deploy`` are the app's access dependencies
    (each resolves to the calling Principal)."""
    router = APIRouter(prefix="/v1/schedules", tags=["schedules"])

    @router.get("", response_model=list[ScheduleOut], dependencies=[view])
    async def list_schedules() -> list[ScheduleOut]:
        return [schedule_out(scheduler, s) for s in scheduler.schedules()]

    @router.post("", response_model=ScheduleOut, status_code=201)
    async def add_schedule(body: ScheduleIn, who: Principal = deploy) -> ScheduleOut:
        row = await scheduler.add(
            name=body.name, deployment=body.deployment, notebook=body.notebook, cron=body.cron,
            parameters=body.parameters, timezone=body.timezone, timeout=body.timeout, missed=body.missed,
            kernel=body.kernel, actor=who.actor(body.actor),
        )
        return schedule_out(scheduler, row)

    @router.post("/tick", response_model=list[RunOut], dependencies=[deploy])
    async def tick(body: TickIn | None = None) -> list[RunOut]:
        """Fire every schedule due at `now`, as if the clock said so (a testing and operations tool).

        Due schedules then count their next due time from `now`.
        """
        return [run_out(r) for r in await scheduler.tick(body.now if body else None)]

    @router.get("/{name}", response_model=ScheduleOut, dependencies=[view])
    async def get_schedule(name: str) -> ScheduleOut:
        return schedule_out(scheduler, scheduler.get(name))

    @router.delete("/{name}", response_model=ScheduleOut)
    async def remove_schedule(name: str, actor: str | None = Query(None, max_length=200),
                              who: Principal = deploy) -> ScheduleOut:
        """Remove it; a run in progress is stopped. Executed notebooks stay on disk."""
        row = await scheduler.remove(name, actor=who.actor(actor))
        return ScheduleOut(**row.__dict__, running_run=None)

    @router.post("/{name}/pause", response_model=ScheduleOut)
    async def pause(name: str, body: ActorIn | None = None, who: Principal = deploy) -> ScheduleOut:
        return schedule_out(scheduler, scheduler.pause(name, actor=who.actor(body.actor if body else None)))

    @router.post("/{name}/resume", response_model=ScheduleOut)
    async def resume(name: str, body: ActorIn | None = None, who: Principal = deploy) -> ScheduleOut:
        return schedule_out(scheduler, scheduler.resume(name, actor=who.actor(body.actor if body else None)))

    @router.post("/{name}/run", response_model=RunOut, status_code=202)
    async def run_now(name: str, body: ActorIn | None = None, who: Principal = deploy) -> RunOut:
        """Start a run now (`manual`); `skipped` when one is in progress."""
        return run_out(scheduler.run_now(name, actor=who.actor(body.actor if body else None)))

    @router.get("/{name}/runs", response_model=list[RunOut], dependencies=[view])
    async def runs(name: str, limit: int = Query(100, ge=1, le=10_000)) -> list[RunOut]:
        return [run_out(r) for r in scheduler.runs(name, limit=limit)]

    @router.get("/{name}/runs/{run_id}", response_model=RunOut, dependencies=[view])
    async def get_run(name: str, run_id: int) -> RunOut:
        return run_out(scheduler.get_run(name, run_id))

    return router
