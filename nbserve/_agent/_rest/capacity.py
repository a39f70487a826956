"""Workers, memory and CPU caps, scale to zero and batching: change them (``scale``), and
what every deployment holds now (``GET /v1/resources``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from ... import errors
from .._access import Principal
from .._manager import Manager
from .auth import deploy, view
from .deps import get_manager
from .models import DeploymentOut, ResourceRow, ScaleRequest
from .serialise import deployment_out

router = APIRouter()


@router.post("/v1/deployments/{name}/scale", response_model=DeploymentOut, tags=["resources"])
async def scale(name: str, body: ScaleRequest, who: Principal = deploy,
                manager: Manager = Depends(get_manager)) -> DeploymentOut:
    """Change workers, caps or the idle timeout; the live server is replaced without
    dropping a request (a new one starts, takes the traffic, the old one drains)."""
    changes = {k: (None if v == "none" else v) for k, v in body.model_dump(exclude={"actor"}).items()
               if v is not None}
    for knobs in ("batching", "autoscaling"):
        if isinstance(changes.get(knobs), dict):
            changes[knobs] = {k: v for k, v in changes[knobs].items() if v is not None}
    if not changes:
        raise errors.InvalidArgument("nothing to change",
                                     hint="give workers, memory, cpus, idle_timeout, batching, autoscaling or engine")
    await manager.capacity.scale(name, changes, actor=who.actor(body.actor))
    return deployment_out(manager.fleet.view(name))


@router.get("/v1/resources", response_model=list[ResourceRow], tags=["resources"])
async def host_resources(who: Principal = view, manager: Manager = Depends(get_manager)) -> list[ResourceRow]:
    """Every deployment now: warm or cold, servers and workers, CPU, memory and caps."""
    return [ResourceRow(**r) for r in manager.capacity.host_resources() if who.sees(r["deployment"])]
