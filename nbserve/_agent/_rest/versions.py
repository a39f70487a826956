"""A deployment's numbered versions: deploy the next one, read one, its server's log, its
metadata and input schema."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam

from ... import errors
from ..._settings import ReleasePlan
from .._access import Principal
from .._manager import Manager
from .._supervisor import log_tail
from .._uploads import Uploads
from .auth import deploy, view
from .deps import get_manager, get_uploads
from .models import MAX_INT, DeployRequest, LogsOut, VersionOut
from .serialise import version_out

router = APIRouter()


@router.post("/v1/deployments/{name}/versions", response_model=VersionOut, status_code=202,
             tags=["deployments"])
async def create_version(name: str, body: DeployRequest, who: Principal = deploy,
                         manager: Manager = Depends(get_manager),
                         uploads: Uploads = Depends(get_uploads)) -> VersionOut:
    """Register the next version from an upload (``upload_id``, see ``POST /v1/uploads``) or, for
    the host's owner token only, an archive already on the agent's disk (``archive_path``)."""
    release = ReleasePlan(canary=body.canary, shadow=body.shadow, auto_promote=body.auto_promote,
                          skip_parity=body.skip_parity, sticky_header=body.sticky_header)
    archive, remove = uploads.archive_for(body.upload_id, body.archive_path, who, body.remove_archive)
    version = await manager.deployments.deploy(
        name, archive, actor=who.actor(body.actor), stable_port=body.stable_port,
        remove_archive=remove, release=release, serving=body.serving,
    )
    return version_out(manager.fleet.view(name), version)


@router.get("/v1/deployments/{name}/versions/{number}", response_model=VersionOut,
            dependencies=[view], tags=["deployments"])
async def get_version(name: str, number: int = PathParam(ge=1, le=MAX_INT),
                      manager: Manager = Depends(get_manager)) -> VersionOut:
    return version_out(manager.fleet.view(name), manager.fleet.get_version(name, number),
                       preparing=manager.engine.preparing.get((name, number)))


@router.get("/v1/deployments/{name}/logs", response_model=LogsOut, dependencies=[view],
            tags=["deployments"])
async def logs(name: str, version: int | None = Query(None, ge=1, le=MAX_INT),
               lines: int = Query(200, ge=1, le=10_000),
               manager: Manager = Depends(get_manager)) -> LogsOut:
    row = manager.fleet.get_row(name)
    versions = manager.registry.list_versions(name)
    number = version or row.live_version or (versions[-1].number if versions else None)
    if number is None:
        raise errors.VersionNotFound(f"{name} has no versions yet")
    v = manager.fleet.get_version(name, number)
    path = manager.home.version_log(name, v.number)
    return LogsOut(deployment=name, version=v.number, path=str(path), text=log_tail(path, lines))


@router.get("/v1/deployments/{name}/versions/{number}/metadata", dependencies=[view], tags=["quality"])
async def version_metadata(name: str,
                           number: int = PathParam(ge=1, le=MAX_INT),
                           manager: Manager = Depends(get_manager)) -> dict[str, Any]:
    """What the version is (also ``GET <stable URL>/v/N/metadata``)."""
    return await asyncio.to_thread(manager.routes.metadata, name, number)


@router.get("/v1/deployments/{name}/versions/{number}/schema", dependencies=[view], tags=["quality"])
async def version_schema(name: str,
                         number: int = PathParam(ge=1, le=MAX_INT),
                         manager: Manager = Depends(get_manager)) -> dict[str, Any]:
    """The input schema and an example row (also ``GET <stable URL>/v/N/schema``)."""
    return await asyncio.to_thread(manager.routes.schema, name, number)
