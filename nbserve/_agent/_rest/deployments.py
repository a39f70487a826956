"""Deployments: list and read them, roll back, stop and start, name versions (aliases)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from .._access import Principal
from .._manager import Manager
from .auth import deploy, view
from .deps import get_manager
from .models import ActorRequest, AliasIn, DeploymentOut, RollbackRequest
from .serialise import deployment_out

router = APIRouter()


@router.get("/v1/deployments", response_model=list[DeploymentOut], tags=["deployments"])
async def list_deployments(who: Principal = view,
                           manager: Manager = Depends(get_manager)) -> list[DeploymentOut]:
    return [deployment_out(v) for v in manager.fleet.views() if who.sees(v.row.name)]


@router.get("/v1/deployments/{name}", response_model=DeploymentOut, dependencies=[view], tags=["deployments"])
async def get_deployment(name: str, manager: Manager = Depends(get_manager)) -> DeploymentOut:
    return deployment_out(manager.fleet.view(name))


@router.post("/v1/deployments/{name}/rollback", response_model=DeploymentOut, tags=["deployments"])
async def rollback(name: str, body: RollbackRequest, who: Principal = deploy,
                   manager: Manager = Depends(get_manager)) -> DeploymentOut:
    await manager.deployments.rollback(name, body.to, actor=who.actor(body.actor))
    return deployment_out(manager.fleet.view(name))


@router.post("/v1/deployments/{name}/stop", response_model=DeploymentOut,
             tags=["deployments"])
async def stop(name: str, body: ActorRequest | None = None, who: Principal = deploy,
               manager: Manager = Depends(get_manager)) -> DeploymentOut:
    await manager.deployments.stop(name, actor=who.actor(body.actor if body else None))
    return deployment_out(manager.fleet.view(name))


@router.post("/v1/deployments/{name}/start", response_model=DeploymentOut,
             tags=["deployments"])
async def start(name: str, body: ActorRequest | None = None, who: Principal = deploy,
                manager: Manager = Depends(get_manager)) -> DeploymentOut:
    await manager.deployments.start(name, actor=who.actor(body.actor if body else None))
    return deployment_out(manager.fleet.view(name))


@router.put("/v1/deployments/{name}/aliases/{alias}", response_model=dict[str, int], tags=["deployments"])
async def set_alias(name: str, alias: str, body: AliasIn, who: Principal = deploy,
                    manager: Manager = Depends(get_manager)) -> dict[str, int]:
    """Name a version: ``<stable URL>/v/<alias>/...`` calls it."""
    return manager.routes.set_alias(name, alias, body.version, actor=who.actor(body.actor))


@router.delete("/v1/deployments/{name}/aliases/{alias}", response_model=dict[str, int], tags=["deployments"])
async def remove_alias(name: str, alias: str, who: Principal = deploy,
                       manager: Manager = Depends(get_manager)) -> dict[str, int]:
    return manager.routes.set_alias(name, alias, None, actor=who.actor(None))
