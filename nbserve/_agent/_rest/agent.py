"""The agent as a whole: its health, its shutdown, and the panel's poll (``GET /v1/state``:
every deployment the caller sees and every schedule, in one answer)."""

from __future__ import annotations

import os
from collections.abc import Callable

from fastapi import APIRouter, Depends

from ..._version import __version__
from .._access import Principal
from .._manager import Manager
from .._scheduler import Scheduler
from .._state import panel_state
from .auth import admin, view
from .deps import find_scheduler, get_manager, get_on_shutdown
from .models import Health, StateOut

router = APIRouter()


@router.get("/v1/health", response_model=Health, tags=["agent"])
async def health(manager: Manager = Depends(get_manager)) -> Health:
    return Health(status="ok", version=__version__, pid=os.getpid(), home=str(manager.home.root),
                  deployments=len(manager.registry.list_deployments()))


@router.post("/v1/agent/shutdown", status_code=202, dependencies=[admin], tags=["agent"])
async def shutdown(on_shutdown: Callable[[], None] | None = Depends(get_on_shutdown)) -> dict[str, str]:
    if on_shutdown is not None:
        on_shutdown()
    return {"status": "stopping"}


@router.get("/v1/state", response_model=StateOut, tags=["deployments"])
async def state(who: Principal = view, manager: Manager = Depends(get_manager),
                scheduler: Scheduler | None = Depends(find_scheduler)) -> StateOut:
    """Every deployment the token sees (compact, with its summary, newest event id and
    resources) and every schedule with its last run: a panel's whole poll in one request."""
    return StateOut(**await panel_state(manager, scheduler, who))
