"""The agent's REST API: typed models, thin handlers, one error mapping.

Handlers read the request, call the :class:`Manager`, and serialise; no logic lives
here. Every ``NbserveError`` becomes its own HTTP status with a JSON body
``{"error": {"type", "message", "hint", "details"}}``, in one place (the exception
handlers below), so user mistakes are 4xx and only real faults are 5xx.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors
from .._events import severity_of
from .._names import check_name
from .._windows import parse_window
from . import _access
from ._access import Principal, Tokens
from ._insights import report_payload
from ._manager import DeploymentView, Manager
from ._registry import EventRow, VersionRow
from ._rest.models import (
    MAX_INT, ActorRequest, AliasIn, AuditCheck, AuditOut, CanaryRequest, ConfigUpdate,
    DeploymentOut, DeployRequest, DriftOut, ErrorResponse, EventOut, FeedbackIn, FeedbackOut,
    Health, LatencyRow, LogsOut, NewTokenOut, QualityOut, ReportRequest, ResourceRow,
    RollbackRequest, RolloutOut, ScaleRequest, StateOut, SummaryOut, TableOut, TokenCreate,
    TokenOut, TokenRotate, UploadOut, VersionOut, WhoAmI,
)
from ._rollout import ReleasePlan
from ._state import panel_state
from ._storage import insufficient, is_disk_full
from ._supervisor import log_tail
from ._uploads import Uploads

log = logging.getLogger("nbserve.agent")


# -- serialisation --------------------------------------------------------------------


def version_out(view_or_none: DeploymentView | None, v: VersionRow) -> VersionOut:
    proc = view_or_none.running.get(v.number) if view_or_none else None
    rollout = view_or_none.row.rollout if view_or_none else {}
    status = rollout["mode"] if rollout and rollout.get("version") == v.number else v.status
    return VersionOut(
        deployment=v.deployment, number=v.number, created_at=v.created_at, created_by=v.created_by,
        bento_tag=v.bento_tag, status=status, error=v.error,  # type: ignore[arg-type]
        running=proc is not None, ready=bool(proc and proc.ready),
        upstream_url=proc.url if proc else None, metadata=v.metadata,
    )


def deployment_out(view: DeploymentView) -> DeploymentOut:
    return DeploymentOut(
        name=view.row.name, url=view.url, status=view.status,  # type: ignore[arg-type]
        live_version=view.row.live_version,
        latest_version=view.versions[-1].number if view.versions else None,
        created_at=view.row.created_at, keep_warm=view.row.keep_warm,
        rollout=view.row.rollout or None, aliases=view.row.aliases,
        versions=[version_out(view, v) for v in view.versions],
    )


def event_out(e: EventRow) -> EventOut:
    return EventOut(**e.__dict__, severity=severity_of(e.kind))


# -- the app --------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False)
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 422, 500)
}


MAX_JSON_BODY = 1 << 20  # API bodies are small JSON documents; archives go to /v1/uploads
MAX_FEEDBACK_BODY = 64 << 20  # labels come in batches


class _BodyLimit:
    """ASGI middleware: a 413 JSON answer for an API body over ``MAX_JSON_BODY`` (announced
    or streamed), before a handler reads it. ``/v1/uploads`` has its own limits."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/v1/uploads":
            await self.app(scope, receive, send)
            return
        limit = MAX_FEEDBACK_BODY if scope["path"].endswith("/feedback") else MAX_JSON_BODY
        too_big = errors.PayloadTooLarge(f"request body over {limit} bytes",
                                         hint="API requests are small JSON documents; send labels in batches")
        for key, value in scope.get("headers", ()):
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                await JSONResponse(too_big.to_payload(), status_code=413)(scope, receive, send)
                return
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_big
            return message

        await self.app(scope, counted, send)


def create_app(manager: Manager, tokens: Tokens, *, on_shutdown: Any = None, scheduler: Any = None,
               uploads: Uploads | None = None) -> FastAPI:
    """The FastAPI app for one agent. ``tokens`` guard every route but ``/v1/health``."""
    from .._version import __version__

    if uploads is None:
        uploads = Uploads(manager.home.staging)
        uploads.clear()  # nothing is pending when an agent starts: staged files are leftovers

    app = FastAPI(
        title="nbserve agent",
        version=__version__,
        description="Deployments, immutable numbered versions, events, tokens and the audit log of one "
        "nbserve host. Every route except /v1/health needs `Authorization: Bearer <token>`; the token's "
        "role (admin, deployer, viewer, predict) decides what it may do (403 otherwise).",
        responses=_ERRORS,
    )
    app.add_middleware(_BodyLimit)

    async def caller(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
        principal = tokens.authenticate(creds.credentials if creds else None,
                                        source=request.client.host if request.client else None)
        _access.current.set(principal)  # the audit log reads it, in this task and those it starts
        return principal

    def allowed(permission: str, *, per_deployment: bool = True) -> Any:
        """A dependency: the caller, if its role allows ``permission`` (on the ``{name}``
        deployment of the path, for per-deployment routes); else 403."""

        async def check(request: Request, principal: Principal = Depends(caller)) -> Principal:
            name = request.path_params.get("name") if per_deployment else None
            if not per_deployment and principal.deployments is not None:
                raise errors.PermissionDenied(f"the token {principal.name!r} is limited to some deployments",
                                              hint="this action needs a token for every deployment")
            tokens.authorize(principal, permission, name)
            return principal

        return Depends(check)

    view, deploy, admin = allowed("view"), allowed("deploy"), allowed("admin", per_deployment=False)
    view_all, deploy_all = allowed("view", per_deployment=False), allowed("deploy", per_deployment=False)

    @app.exception_handler(errors.NbserveError)
    async def _nbserve_error(_request: Request, exc: errors.NbserveError) -> JSONResponse:
        return JSONResponse(exc.to_payload(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        err = errors.InvalidArgument(f"invalid request: {problems}", hint="see /docs for the schema")
        return JSONResponse(err.to_payload(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = errors.NotFound(str(exc.detail)) if exc.status_code == 404 else errors.InvalidArgument(str(exc.detail))
        return JSONResponse(err.to_payload(), status_code=exc.status_code)

    def unexpected(exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        err = errors.AgentError(
            f"internal error in the agent: {type(exc).__name__}: {exc}",
            hint=f"see the agent log at {manager.home.agent_log}",
        )
        return JSONResponse(err.to_payload(), status_code=500)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return unexpected(exc)

    # A full disk is one 507 whichever write met it (a file, SQLite), never a 500 or a 400.
    @app.exception_handler(OSError)
    @app.exception_handler(sqlite3.Error)
    async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
        if not is_disk_full(exc):
            return unexpected(exc)
        filename = getattr(exc, "filename", None)
        err = insufficient(Path(filename).parent if filename else manager.home.root,
                           what=f"{request.method} {request.url.path}")
        log.warning("%s %s: %s", request.method, request.url.path, err.message)
        return JSONResponse(err.to_payload(), status_code=err.status)

    if scheduler is not None:
        from ._schedule_routes import schedule_router

        app.include_router(schedule_router(scheduler, view=view_all, deploy=deploy_all))

    @app.get("/v1/health", response_model=Health, tags=["agent"])
    async def health() -> Health:
        return Health(status="ok", version=__version__, pid=os.getpid(), home=str(manager.home.root),
                      deployments=len(manager.registry.list_deployments()))

    @app.post("/v1/agent/shutdown", status_code=202, dependencies=[admin], tags=["agent"])
    async def shutdown() -> dict[str, str]:
        if on_shutdown is not None:
            on_shutdown()
        return {"status": "stopping"}

    @app.get("/v1/deployments", response_model=list[DeploymentOut], tags=["deployments"])
    async def list_deployments(who: Principal = view) -> list[DeploymentOut]:
        return [deployment_out(v) for v in manager.fleet.views() if who.sees(v.row.name)]

    @app.get("/v1/state", response_model=StateOut, tags=["deployments"])
    async def state(who: Principal = view) -> StateOut:
        """Every deployment the token sees (compact, with its summary, newest event id and
        resources) and every schedule with its last run: a panel's whole poll in one request."""
        return StateOut(**await panel_state(manager, scheduler, who))

    @app.get("/v1/deployments/{name}", response_model=DeploymentOut, dependencies=[view], tags=["deployments"])
    async def get_deployment(name: str) -> DeploymentOut:
        return deployment_out(manager.fleet.view(name))

    @app.post("/v1/deployments/{name}/versions", response_model=VersionOut, status_code=202,
              tags=["deployments"])
    async def create_version(name: str, body: DeployRequest, who: Principal = deploy) -> VersionOut:
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

    @app.get("/v1/deployments/{name}/versions/{number}", response_model=VersionOut,
             dependencies=[view], tags=["deployments"])
    async def get_version(name: str, number: int = PathParam(ge=1, le=MAX_INT)) -> VersionOut:
        return version_out(manager.fleet.view(name), manager.fleet.get_version(name, number))

    @app.post("/v1/deployments/{name}/rollback", response_model=DeploymentOut, tags=["deployments"])
    async def rollback(name: str, body: RollbackRequest, who: Principal = deploy) -> DeploymentOut:
        await manager.deployments.rollback(name, body.to, actor=who.actor(body.actor))
        return deployment_out(manager.fleet.view(name))

    @app.get("/v1/deployments/{name}/rollout", response_model=RolloutOut | None, dependencies=[view],
             tags=["rollouts"])
    async def rollout(name: str) -> RolloutOut | None:
        """The canary or shadow under way with its gates, figures and verdict (null: none)."""
        found = await asyncio.to_thread(manager.rollouts.rollout, name)
        return RolloutOut(**found) if found else None

    @app.post("/v1/deployments/{name}/promote", response_model=DeploymentOut,
              tags=["rollouts"])
    async def promote(name: str, body: ActorRequest | None = None, who: Principal = deploy) -> DeploymentOut:
        await manager.rollouts.promote(name, actor=who.actor(body.actor if body else None))
        return deployment_out(manager.fleet.view(name))

    @app.post("/v1/deployments/{name}/abort", response_model=DeploymentOut,
              tags=["rollouts"])
    async def abort(name: str, body: ActorRequest | None = None, who: Principal = deploy) -> DeploymentOut:
        await manager.rollouts.abort(name, actor=who.actor(body.actor if body else None))
        return deployment_out(manager.fleet.view(name))

    @app.post("/v1/deployments/{name}/canary", response_model=DeploymentOut, tags=["rollouts"])
    async def set_canary(name: str, body: CanaryRequest, who: Principal = deploy) -> DeploymentOut:
        await manager.rollouts.set_canary(name, body.percent, actor=who.actor(body.actor))
        return deployment_out(manager.fleet.view(name))

    @app.post("/v1/deployments/{name}/stop", response_model=DeploymentOut,
              tags=["deployments"])
    async def stop(name: str, body: ActorRequest | None = None, who: Principal = deploy) -> DeploymentOut:
        await manager.deployments.stop(name, actor=who.actor(body.actor if body else None))
        return deployment_out(manager.fleet.view(name))

    @app.post("/v1/deployments/{name}/start", response_model=DeploymentOut,
              tags=["deployments"])
    async def start(name: str, body: ActorRequest | None = None, who: Principal = deploy) -> DeploymentOut:
        await manager.deployments.start(name, actor=who.actor(body.actor if body else None))
        return deployment_out(manager.fleet.view(name))

    @app.get("/v1/deployments/{name}/events", response_model=list[EventOut], dependencies=[view],
             tags=["deployments"])
    async def deployment_events(name: str, limit: int = Query(200, ge=1, le=10_000),
                                after: int = Query(0, ge=0, le=MAX_INT)) -> list[EventOut]:
        manager.fleet.get_row(name)
        return [event_out(e) for e in manager.registry.events(name, limit=limit, after_id=after)]

    @app.post("/v1/deployments/{name}/events", response_model=EventOut, status_code=201, tags=["deployments"])
    async def report_event(name: str, body: ReportRequest, who: Principal = deploy) -> EventOut:
        check_name(name)
        return event_out(manager.registry.add_event(body.kind, body.message, deployment=name,
                                                    actor=who.actor(body.actor)))

    @app.get("/v1/events", response_model=list[EventOut], tags=["agent"])
    async def all_events(limit: int = Query(200, ge=1, le=10_000),
                         after: int = Query(0, ge=0, le=MAX_INT),
                         who: Principal = view) -> list[EventOut]:
        return [event_out(e) for e in manager.registry.events(None, limit=limit, after_id=after)
                if who.sees(e.deployment)]

    @app.get("/v1/deployments/{name}/logs", response_model=LogsOut, dependencies=[view],
             tags=["deployments"])
    async def logs(name: str, version: int | None = Query(None, ge=1, le=MAX_INT),
                   lines: int = Query(200, ge=1, le=10_000)) -> LogsOut:
        row = manager.fleet.get_row(name)
        versions = manager.registry.list_versions(name)
        number = version or row.live_version or (versions[-1].number if versions else None)
        if number is None:
            raise errors.VersionNotFound(f"{name} has no versions yet")
        v = manager.fleet.get_version(name, number)
        path = manager.home.version_log(name, v.number)
        return LogsOut(deployment=name, version=v.number, path=str(path), text=log_tail(path, lines))

    # -- resources ---------------------------------------------------------------------------

    @app.post("/v1/deployments/{name}/scale", response_model=DeploymentOut, tags=["resources"])
    async def scale(name: str, body: ScaleRequest, who: Principal = deploy) -> DeploymentOut:
        """Change workers, caps or the idle timeout; the live server is replaced without
        dropping a request (a new one starts, takes the traffic, the old one drains)."""
        changes = {k: (None if v == "none" else v) for k, v in body.model_dump(exclude={"actor"}).items()
                   if v is not None}
        if isinstance(changes.get("batching"), dict):
            changes["batching"] = {k: v for k, v in changes["batching"].items() if v is not None}
        if not changes:
            raise errors.InvalidArgument("nothing to change",
                                         hint="give workers, memory, cpus, idle_timeout or batching")
        await manager.capacity.scale(name, changes, actor=who.actor(body.actor))
        return deployment_out(manager.fleet.view(name))

    @app.get("/v1/resources", response_model=list[ResourceRow], tags=["resources"])
    async def host_resources(who: Principal = view) -> list[ResourceRow]:
        """Every deployment now: warm or cold, servers and workers, CPU, memory and caps."""
        return [ResourceRow(**r) for r in manager.capacity.host_resources() if who.sees(r["deployment"])]

    # -- quality, aliases, metadata --------------------------------------------------------

    @app.post("/v1/deployments/{name}/feedback", response_model=FeedbackOut, tags=["quality"])
    async def feedback(name: str, body: FeedbackIn, who: Principal = allowed("predict")) -> FeedbackOut:
        """Real outcomes for served predictions (also ``POST <stable URL>/feedback``)."""
        return FeedbackOut(**await asyncio.to_thread(manager.readings.feedback, name, body.ids, body.y_true))

    @app.get("/v1/deployments/{name}/quality", response_model=QualityOut, dependencies=[view], tags=["quality"])
    async def quality(name: str, window: str = "1d", bucket: str = "1h", metrics: str | None = None,
                      version: int | None = Query(None, ge=1, le=MAX_INT)) -> QualityOut:
        """Metrics (scikit-learn) per time bucket and version over labelled predictions."""
        chosen = metrics.split(",") if metrics else None
        return QualityOut(**await asyncio.to_thread(manager.readings.quality, name, window, bucket=bucket,
                                                    metrics=chosen, version=version))

    @app.put("/v1/deployments/{name}/aliases/{alias}", response_model=dict[str, int], tags=["deployments"])
    async def set_alias(name: str, alias: str, body: AliasIn, who: Principal = deploy) -> dict[str, int]:
        """Name a version: ``<stable URL>/v/<alias>/...`` calls it."""
        return manager.routes.set_alias(name, alias, body.version, actor=who.actor(body.actor))

    @app.delete("/v1/deployments/{name}/aliases/{alias}", response_model=dict[str, int], tags=["deployments"])
    async def remove_alias(name: str, alias: str, who: Principal = deploy) -> dict[str, int]:
        return manager.routes.set_alias(name, alias, None, actor=who.actor(None))

    @app.get("/v1/deployments/{name}/versions/{number}/metadata", dependencies=[view], tags=["quality"])
    async def version_metadata(name: str,
                               number: int = PathParam(ge=1, le=MAX_INT)) -> dict[str, Any]:
        """What the version is (also ``GET <stable URL>/v/N/metadata``)."""
        return await asyncio.to_thread(manager.routes.metadata, name, number)

    @app.get("/v1/deployments/{name}/versions/{number}/schema", dependencies=[view], tags=["quality"])
    async def version_schema(name: str,
                             number: int = PathParam(ge=1, le=MAX_INT)) -> dict[str, Any]:
        """The input schema and an example row (also ``GET <stable URL>/v/N/schema``)."""
        return await asyncio.to_thread(manager.routes.schema, name, number)

    # -- uploads, tokens, audit ----------------------------------------------------------

    @app.post("/v1/uploads", response_model=UploadOut, status_code=201, tags=["deployments"],
              responses={code: {"model": ErrorResponse} for code in (411, 415)},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload(request: Request, who: Principal = deploy) -> UploadOut:
        """Stream a Bento archive (``application/octet-stream``, with ``Content-Length`` and
        ``X-Nbserve-Sha256``); deploy it with its ``upload_id``. Checked before it is kept:
        size, digest, and every member (no paths out of the tree, links, devices or bombs)."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/octet-stream":
            raise errors.UnsupportedMediaType(
                f"an upload is application/octet-stream, not {content_type or 'unspecified'}",
                hint="send the archive's bytes as the body")
        try:
            size = int(request.headers["content-length"])
        except (KeyError, ValueError):
            raise errors.LengthRequired("an upload needs a Content-Length header",
                                        hint="send the archive's size; chunked uploads are refused") from None
        digest = request.headers.get("x-nbserve-sha256", "")
        found = await uploads.receive(request.stream(), size=size, sha256=digest, owner=who)
        return UploadOut(upload_id=found.id, size=found.size, sha256=found.sha256)

    @app.get("/v1/whoami", response_model=WhoAmI, tags=["access"])
    async def whoami(who: Principal = Depends(caller)) -> WhoAmI:
        """The caller's token name, role and deployment scope (any valid token)."""
        return WhoAmI(name=who.name, role=who.role,  # type: ignore[arg-type]
                      deployments=list(who.deployments) if who.deployments is not None else None)

    @app.get("/v1/tokens", response_model=list[TokenOut], dependencies=[admin], tags=["access"])
    async def list_tokens(all: bool = False) -> list[TokenOut]:  # noqa: A002 - the query flag's name
        """Tokens without their secrets (``all``: include revoked and expired ones)."""
        return [TokenOut(**t) for t in tokens.list(include_inactive=all)]

    @app.post("/v1/tokens", response_model=NewTokenOut, status_code=201, tags=["access"])
    async def create_token(body: TokenCreate, who: Principal = admin) -> NewTokenOut:
        secret, row = tokens.create(body.name, body.role, deployments=body.deployments,
                                    expires_in=body.expires_in, created_by=who.actor(None))
        return NewTokenOut(token=secret, **row.public())

    @app.delete("/v1/tokens/{token}", response_model=list[TokenOut], dependencies=[admin], tags=["access"])
    async def revoke_token(token: str) -> list[TokenOut]:
        """Revoke the active token(s) of that name or id; requests with them get 401 at once."""
        return [TokenOut(**t) for t in tokens.revoke(token)]

    @app.post("/v1/tokens/{token}/rotate", response_model=NewTokenOut, tags=["access"])
    async def rotate_token(token: str, body: TokenRotate | None = None, who: Principal = admin) -> NewTokenOut:
        secret, row = tokens.rotate(token, grace=body.grace if body else 0.0, created_by=who.actor(None))
        return NewTokenOut(token=secret, **row.public())

    @app.get("/v1/audit", response_model=list[AuditOut], tags=["access"])
    async def audit(deployment: str | None = None, limit: int = Query(200, ge=1, le=10_000),
                    after: int = Query(0, ge=0, le=MAX_INT),
                    who: Principal = view) -> list[AuditOut]:
        """Who changed what, when, from where: oldest first, the newest ``limit`` after ``after``."""
        if deployment is not None:
            tokens.authorize(who, "view", deployment)
        rows = manager.registry.audit(deployment, limit=limit, after_seq=after)
        return [AuditOut(**r.__dict__) for r in rows if who.sees(r.deployment)]

    @app.get("/v1/audit/verify", response_model=AuditCheck, dependencies=[view_all], tags=["access"])
    async def verify_audit() -> AuditCheck:
        """Recompute the hash chain: an edited, deleted or reordered record is reported."""
        return AuditCheck(**await asyncio.to_thread(manager.registry.verify_audit))

    # -- monitoring ---------------------------------------------------------------------

    @app.get("/v1/deployments/{name}/latency", response_model=list[LatencyRow], dependencies=[view],
             tags=["monitoring"])
    async def latency(name: str, window: str = "1h", by_version: bool = False,
                      since_version: int | None = Query(None, ge=1, le=MAX_INT),
                      version: int | None = Query(None, ge=0, le=MAX_INT)) -> list[LatencyRow]:
        rows = await asyncio.to_thread(manager.readings.latency, name, window, by_version=by_version,
                                       since_version=since_version, version=version)
        return [LatencyRow(**r) for r in rows]

    @app.get("/v1/deployments/{name}/summary", response_model=SummaryOut, dependencies=[view],
             tags=["monitoring"])
    async def deployment_summary(name: str, window: str = "5m") -> SummaryOut:
        return SummaryOut(**await asyncio.to_thread(manager.readings.summary, name, window))

    @app.get("/v1/deployments/{name}/traffic", response_model=TableOut, dependencies=[view],
             tags=["monitoring"])
    async def traffic(name: str, window: str = "1h",
                      version: int | None = Query(None, ge=0, le=MAX_INT),
                      limit: int = Query(10_000, ge=1, le=1_000_000)) -> Response:
        frame = await asyncio.to_thread(manager.readings.traffic, name, window, version=version, limit=limit)
        return _frame_response(frame)

    @app.get("/v1/deployments/{name}/drift", response_model=DriftOut, dependencies=[view],
             tags=["monitoring"])
    async def drift(name: str, window: str = "1h",
                    version: int | None = Query(None, ge=1, le=MAX_INT)) -> DriftOut:
        report = await asyncio.to_thread(manager.readings.drift, name, window, version=version)
        return DriftOut(version=version or manager.fleet.get_row(name).live_version, **report_payload(report))

    @app.get("/v1/deployments/{name}/reference", dependencies=[view], tags=["monitoring"],
             responses={200: {"content": {"application/vnd.apache.parquet": {}}}})
    async def reference(name: str, version: int | None = Query(None, ge=1, le=MAX_INT)) -> Response:
        """The version's reference sample (inputs and the model's predictions) as Parquet."""
        number, bento_path = await asyncio.to_thread(manager.fleet.reference_path, name, version)
        from .._service_template import REFERENCE_FILE

        data = (bento_path / "src" / REFERENCE_FILE).read_bytes()
        return Response(data, media_type="application/vnd.apache.parquet",
                        headers={"x-nbserve-version": str(number)})

    @app.get("/v1/deployments/{name}/resources", response_model=TableOut, dependencies=[view],
             tags=["monitoring"])
    async def resources(name: str, window: str = "1h") -> TableOut:
        manager.fleet.get_row(name)
        since = time.time() - parse_window(window)
        rows = await asyncio.to_thread(manager.monitor.resources, name, since)
        return TableOut(columns=["ts", "version", "cpu_percent", "rss_bytes", "processes"],
                        data=[list(r) for r in rows])

    @app.get("/v1/deployments/{name}/config", dependencies=[view], tags=["monitoring"])
    async def get_config(name: str) -> dict[str, Any]:
        return manager.fleet.config(name)

    @app.patch("/v1/deployments/{name}/config", tags=["monitoring"])
    async def set_config(name: str, body: ConfigUpdate, who: Principal = deploy) -> dict[str, Any]:
        return manager.fleet.configure(name, body.settings, actor=who.actor(body.actor))

    @app.get("/v1/monitor", dependencies=[view_all], tags=["monitoring"])
    async def monitor_state() -> dict[str, Any]:
        """Rows and bytes the monitor keeps, requests waiting for capture, and dropped ones."""
        return await asyncio.to_thread(manager.monitor.storage)

    @app.get("/metrics", dependencies=[view_all], tags=["monitoring"],
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        """Prometheus text format: requests, latency histograms, rows, process resources."""
        from ._prometheus import render

        body, content_type = render(manager)
        return Response(body, media_type=content_type)

    return app


def _frame_response(frame: Any) -> Response:
    body = frame.to_json(orient="split", index=False, date_format="iso", date_unit="ms")
    return Response(body, media_type="application/json")


def openapi_document() -> dict[str, Any]:
    """The agent's OpenAPI document, without running an agent (for docs/openapi.json)."""
    import tempfile

    from .._config import Home
    from ._registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp))
        registry = Registry(home.root / "registry.sqlite")
        try:
            manager = Manager(home, registry)
            try:
                from ._scheduler import Scheduler

                tokens = Tokens(registry, "unused")
                return create_app(manager, tokens, scheduler=Scheduler(home, registry)).openapi()
            finally:
                manager.monitor.close()
        finally:
            registry.close()
