"""The environments versions run in where the agent's own differs from their pins
(``nbserve envs list|prune``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from .._manager import Manager
from .auth import admin, view_all
from .deps import get_manager
from .models import EnvironmentOut, PruneOut

router = APIRouter()


@router.get("/v1/environments", response_model=list[EnvironmentOut], dependencies=[view_all], tags=["resources"])
async def list_environments(manager: Manager = Depends(get_manager)) -> list[EnvironmentOut]:
    """The environments versions run in when the agent's own differs from their pins: what each
    holds, its own disk use (files hard-linked from uv's cache are not counted), the versions it serves."""
    return [EnvironmentOut(**e) for e in await asyncio.to_thread(manager.environments.list)]


@router.post("/v1/environments/prune", response_model=PruneOut, dependencies=[admin], tags=["resources"])
async def prune_environments(manager: Manager = Depends(get_manager)) -> PruneOut:
    """Remove every environment no version needs (any version could be rolled back to, so one a
    version needs is kept and listed)."""
    return PruneOut(**await asyncio.to_thread(manager.environments.prune))
