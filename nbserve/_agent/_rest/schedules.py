"""The ``/v1/schedules`` routes: notebooks run on a cron schedule to retrain a deployment (the
logic is in ``_agent/_scheduler.py``). Listing and changing schedules needs a token for every
deployment (``view_all``, ``deploy_all``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from .._access import Principal
from .._schedule_store import RunRow, ScheduleRow
from .._scheduler import Scheduler
from .auth import deploy_all, view_all
from .deps import get_scheduler
from .models import ActorIn, RunOut, ScheduleIn, ScheduleOut, TickIn

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])


def schedule_out(scheduler: Scheduler, row: ScheduleRow) -> ScheduleOut:
    return ScheduleOut(**row.__dict__, running_run=scheduler.running(row.name))


def run_out(run: RunRow) -> RunOut:
    return RunOut(**run.__dict__)


@router.get("", response_model=list[ScheduleOut], dependencies=[view_all])
async def list_schedules(scheduler: Scheduler = Depends(get_scheduler)) -> list[ScheduleOut]:
    return [schedule_out(scheduler, s) for s in scheduler.schedules()]


@router.post("", response_model=ScheduleOut, status_code=201)
async def add_schedule(body: ScheduleIn, who: Principal = deploy_all,
                       scheduler: Scheduler = Depends(get_scheduler)) -> ScheduleOut:
    row = await scheduler.add(
        name=body.name, deployment=body.deployment, notebook=body.notebook, cron=body.cron,
        parameters=body.parameters, timezone=body.timezone, timeout=body.timeout, missed=body.missed,
        kernel=body.kernel, actor=who.actor(body.actor),
    )
    return schedule_out(scheduler, row)


@router.post("/tick", response_model=list[RunOut], dependencies=[deploy_all])
async def tick(body: TickIn | None = None, scheduler: Scheduler = Depends(get_scheduler)) -> list[RunOut]:
    """Fire every schedule due at `now`, as if the clock said so (a testing and operations tool).

    Due schedules then count their next due time from `now`.
    """
    return [run_out(r) for r in await scheduler.tick(body.now if body else None)]


@router.get("/{name}", response_model=ScheduleOut, dependencies=[view_all])
async def get_schedule(name: str, scheduler: Scheduler = Depends(get_scheduler)) -> ScheduleOut:
    return schedule_out(scheduler, scheduler.get(name))


@router.delete("/{name}", response_model=ScheduleOut)
async def remove_schedule(name: str, actor: str | None = Query(None, max_length=200),
                          who: Principal = deploy_all,
                          scheduler: Scheduler = Depends(get_scheduler)) -> ScheduleOut:
    """Remove it; a run in progress is stopped. Executed notebooks stay on disk."""
    row = await scheduler.remove(name, actor=who.actor(actor))
    return ScheduleOut(**row.__dict__, running_run=None)


@router.post("/{name}/pause", response_model=ScheduleOut)
async def pause(name: str, body: ActorIn | None = None, who: Principal = deploy_all,
                scheduler: Scheduler = Depends(get_scheduler)) -> ScheduleOut:
    return schedule_out(scheduler, scheduler.pause(name, actor=who.actor(body.actor if body else None)))


@router.post("/{name}/resume", response_model=ScheduleOut)
async def resume(name: str, body: ActorIn | None = None, who: Principal = deploy_all,
                 scheduler: Scheduler = Depends(get_scheduler)) -> ScheduleOut:
    return schedule_out(scheduler, scheduler.resume(name, actor=who.actor(body.actor if body else None)))


@router.post("/{name}/run", response_model=RunOut, status_code=202)
async def run_now(name: str, body: ActorIn | None = None, who: Principal = deploy_all,
                  scheduler: Scheduler = Depends(get_scheduler)) -> RunOut:
    """Start a run now (`manual`); `skipped` when one is in progress."""
    return run_out(scheduler.run_now(name, actor=who.actor(body.actor if body else None)))


@router.get("/{name}/runs", response_model=list[RunOut], dependencies=[view_all])
async def runs(name: str, limit: int = Query(100, ge=1, le=10_000),
               scheduler: Scheduler = Depends(get_scheduler)) -> list[RunOut]:
    return [run_out(r) for r in scheduler.runs(name, limit=limit)]


@router.get("/{name}/runs/{run_id}", response_model=RunOut, dependencies=[view_all])
async def get_run(name: str, run_id: int, scheduler: Scheduler = Depends(get_scheduler)) -> RunOut:
    return run_out(scheduler.get_run(name, run_id))
