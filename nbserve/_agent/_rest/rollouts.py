"""Canary and shadow roll-outs: their gates and figures, promote, abort, the canary's share."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from .._access import Principal
from .._manager import Manager
from .auth import deploy, view
from .deps import get_manager
from .models import ActorRequest, CanaryRequest, DeploymentOut, RolloutOut
from .serialise import deployment_out

router = APIRouter()


@router.get("/v1/deployments/{name}/rollout", response_model=RolloutOut | None, dependencies=[view],
            tags=["rollouts"])
async def rollout(name: str, manager: Manager = Depends(get_manager)) -> RolloutOut | None:
    """The canary or shadow under way with its gates, figures and verdict (null: none)."""
    found = await asyncio.to_thread(manager.rollouts.rollout, name)
    return RolloutOut(**found) if found else None


@router.post("/v1/deployments/{name}/promote", response_model=DeploymentOut,
             tags=["rollouts"])
async def promote(name: str, body: ActorRequest | None = None, who: Principal = deploy,
                  manager: Manager = Depends(get_manager)) -> DeploymentOut:
    await manager.rollouts.promote(name, actor=who.actor(body.actor if body else None))
    return deployment_out(manager.fleet.view(name))


@router.post("/v1/deployments/{name}/abort", response_model=DeploymentOut,
             tags=["rollouts"])
async def abort(name: str, body: ActorRequest | None = None, who: Principal = deploy,
                manager: Manager = Depends(get_manager)) -> DeploymentOut:
    await manager.rollouts.abort(name, actor=who.actor(body.actor if body else None))
    return deployment_out(manager.fleet.view(name))


@router.post("/v1/deployments/{name}/canary", response_model=DeploymentOut, tags=["rollouts"])
async def set_canary(name: str, body: CanaryRequest, who: Principal = deploy,
                     manager: Manager = Depends(get_manager)) -> DeploymentOut:
    await manager.rollouts.set_canary(name, body.percent, actor=who.actor(body.actor))
    return deployment_out(manager.fleet.view(name))
