"""REST routes of the scheduler: typed models, thin handlers (the logic is in ``_scheduler``).

Handlers raise ``nbserve.errors`` only; the app maps them to HTTP statuses in one place.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from ._access import Principal
from ._rest.models import ActorIn, RunOut, ScheduleIn, ScheduleOut, TickIn
from ._scheduler import RunRow, Scheduler, ScheduleRow

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
