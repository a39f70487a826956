"""The event log: a deployment's events, a failure the client reports, and every event the
caller may see."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from ..._names import check_name
from .._access import Principal
from .._manager import Manager
from .auth import deploy, view
from .deps import get_manager
from .models import MAX_INT, EventOut, ReportRequest
from .serialise import event_out

router = APIRouter()


@router.get("/v1/deployments/{name}/events", response_model=list[EventOut], dependencies=[view],
            tags=["deployments"])
async def deployment_events(name: str, limit: int = Query(200, ge=1, le=10_000),
                            after: int = Query(0, ge=0, le=MAX_INT),
                            manager: Manager = Depends(get_manager)) -> list[EventOut]:
    manager.fleet.get_row(name)
    return [event_out(e) for e in manager.registry.events(name, limit=limit, after_id=after)]


@router.post("/v1/deployments/{name}/events", response_model=EventOut, status_code=201, tags=["deployments"])
async def report_event(name: str, body: ReportRequest, who: Principal = deploy,
                       manager: Manager = Depends(get_manager)) -> EventOut:
    check_name(name)
    return event_out(manager.registry.add_event(body.kind, body.message, deployment=name,
                                                actor=who.actor(body.actor)))


@router.get("/v1/events", response_model=list[EventOut], tags=["agent"])
async def all_events(limit: int = Query(200, ge=1, le=10_000),
                     after: int = Query(0, ge=0, le=MAX_INT),
                     who: Principal = view, manager: Manager = Depends(get_manager)) -> list[EventOut]:
    return [event_out(e) for e in manager.registry.events(None, limit=limit, after_id=after)
            if who.sees(e.deployment)]
