"""Thin handlers: read the request, call the agent off the IOLoop through the one cached
``AgentClient`` (``nbserve._connection.connect``), and answer the agent's own JSON.

Reshaped only where the panel reads another shape, each in one named place: every deployment
it answers carries ``version`` (the live one) beside the agent's ``live_version``
(:func:`with_version`); a deployment's history is rows from its versions' metadata
(``nbserve._history``); a schedule run gains ``executed_notebook_lab_path`` (Jupyter's root is
the server's, :func:`with_lab_path`); and the detail, metrics and audit routes put a few agent
answers together in one. The panel's TypeScript lists the same (labextension/src/api.ts).

Every route needs Jupyter's own authentication (token or cookie + XSRF); the browser never
sees the agent's token. Errors are mapped in one place, :meth:`_Handler._fail`: an
``NbserveError`` answers its own ``status`` with ``{"error": {"type", "message", "hint"}}``.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Callable, NoReturn

import tornado.web
from jupyter_server.base.handlers import APIHandler

from nbserve._connection import actor, connect
from nbserve._history import version_rows
from nbserve._settings import check_serving_json, serving_body
from nbserve._transport import AgentClient
from nbserve.errors import AgentUnreachable, InvalidArgument, NbserveError

PREFIX = "/nbserve/api"
_NAME = r"(?P<name>[^/]+)"
#: A rollback or start may cold-start a server from its Bento; a stop drains in-flight
#: requests; a scale starts the replacement server beside the old one.
CHANGE_TIMEOUT = 300.0
SCALE_TIMEOUT = 600.0
SUMMARY_WINDOW = "5m"  # the list's figures, as the agent's /v1/state has them


class _Handler(APIHandler):
    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking client call in a thread; an nbserve error ends the request."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except NbserveError as exc:
            self._fail(exc)

    def reply(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            self._fail(InvalidArgument("the request body must be a JSON object"))
        return data

    def int_argument(self, key: str, default: int | None = None) -> int | None:
        value = self.get_query_argument(key, None)
        if value in (None, ""):
            return default
        try:
            return int(value)
        except ValueError:
            self._fail(InvalidArgument(f"{key} must be an integer, not {value!r}"))

    def _fail(self, exc: NbserveError) -> NoReturn:
        """The one place an nbserve error becomes a response: its status, its payload."""
        self.set_status(exc.status)
        self.set_header("Content-Type", "application/json")
        raise tornado.web.Finish(json.dumps(exc.to_payload(), default=str))


# -- the reshaping the panel needs ----------------------------------------------------------


def with_version(dep: dict[str, Any]) -> dict[str, Any]:
    """A deployment as the agent answers it, plus ``version``: the live one, as the panel's
    views (and this extension's answers since the start) call it."""
    return {**dep, "version": dep.get("live_version")}


def with_lab_path(run: dict[str, Any] | None, root: str | None) -> dict[str, Any] | None:
    """A schedule run plus its executed notebook's path under Jupyter's root (or None)."""
    if run is None:
        return None
    return {**run, "executed_notebook_lab_path": notebook_path_under(run.get("executed_notebook"), root)}


def notebook_path_under(path: str | None, root: str | None) -> str | None:
    """``path`` relative to the Jupyter server's root (posix, for the contents API), or None
    when it is not under it (JupyterLab cannot open it then)."""
    if not path or not root:
        return None
    try:
        full = os.path.realpath(path)
        base = os.path.realpath(os.path.expanduser(root))
        relative = os.path.relpath(full, base)
    except ValueError:  # another drive
        return None
    if relative == os.curdir or relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return None
    return relative.replace(os.sep, "/")


def _or_none(fetch: Callable[[], Any]) -> Any:
    """An agent answer that the rest of a reply does without when it fails (None)."""
    try:
        return fetch()
    except NbserveError:
        return None


def _resources_of(client: AgentClient, name: str) -> dict[str, Any] | None:
    """The deployment's row of ``GET /v1/resources`` (None when the agent cannot say)."""
    rows = _or_none(lambda: client.get("/v1/resources")) or []
    return next((row for row in rows if row.get("deployment") == name), None)


# -- what each route does ------------------------------------------------------------------


def panel_state(root: str | None) -> dict[str, Any]:
    """What the panel polls every 2 s: the agent's ``GET /v1/state`` as it answers it (one
    request, whatever the number of deployments). Only a schedule's last run gains its path
    under Jupyter's root."""
    try:
        client = connect(start=False)  # an open panel never brings back an agent the user stopped
    except AgentUnreachable:
        return {"deployments": [], "schedules": []}
    state = client.get("/v1/state")
    for sched in state.get("schedules", []):
        sched["last_run"] = with_lab_path(sched.get("last_run"), root)
    return state


def list_deployments() -> list[dict[str, Any]]:
    """The deployments of the poll, each with ``version``: one agent request."""
    return [with_version(dep) for dep in panel_state(None)["deployments"]]


def deployment_detail(name: str, events: int) -> dict[str, Any]:
    """The deployment (``DeploymentOut``) with its rollout's gates, figures and verdict, its
    history rows, newest events, 5-minute summary and resources, in one answer."""
    client = connect()
    dep = client.get(f"/v1/deployments/{name}")
    rollout = dep.get("rollout")
    if rollout:
        rollout = _or_none(lambda: client.get(f"/v1/deployments/{name}/rollout")) or rollout
    return {
        **with_version(dep),
        "rollout": rollout or None,
        "history": version_rows(dep["versions"], dep["live_version"]),
        "events": client.get(f"/v1/deployments/{name}/events", params={"limit": events}),
        "summary": _or_none(lambda: client.get(f"/v1/deployments/{name}/summary",
                                               params={"window": SUMMARY_WINDOW})),
        "resources": _resources_of(client, name),
    }


def deployment_history(name: str) -> list[dict[str, Any]]:
    dep = connect().get(f"/v1/deployments/{name}")
    return version_rows(dep["versions"], dep["live_version"])


def deployment_events(name: str, limit: int) -> list[dict[str, Any]]:
    return connect().get(f"/v1/deployments/{name}/events", params={"limit": limit})


def deployment_audit(name: str, limit: int) -> dict[str, Any]:
    """The deployment's audit records (oldest first) and the check of the whole log's hash chain."""
    client = connect()
    client.get(f"/v1/deployments/{name}")  # an unknown deployment is a 404, as on the other routes
    records = client.get("/v1/audit", params={"deployment": name, "limit": limit})
    try:
        chain = client.get("/v1/audit/verify")
    except NbserveError as exc:  # e.g. a token scoped to some deployments may not check the whole log
        chain = {"ok": None, "records": None, "broken_at": None, "problem": None, "head": None,
                 "unavailable": exc.to_payload()["error"]}
    return {"records": records, "chain": chain}


def model_card(name: str, version: int | None) -> dict[str, Any]:
    """A version's model card (default: the live one) as sanitisable HTML and as Markdown."""
    from nbserve._card import build_card
    from nbserve._deployment import Deployment

    client = connect()
    dep = Deployment(client, client.get(f"/v1/deployments/{name}"))
    if version is not None and version < 1:
        raise InvalidArgument(f"version must be a version number (1, 2, ...), not {version}")
    number = version if version is not None else dep.version
    card = build_card(dep, number)
    return {"html": card.to_html(), "markdown": card.to_markdown(), "version": number}


def deployment_logs(name: str, version: int | None, lines: int) -> dict[str, Any]:
    params: dict[str, Any] = {"lines": lines}
    if version is not None:
        params["version"] = version
    return connect().get(f"/v1/deployments/{name}/logs", params=params)


def deployment_metrics(name: str, window: str) -> dict[str, Any]:
    """The window's summary and per-minute latency as the agent answers them, and its drift
    report: the per-feature rows as ``features``, or why there is none yet (``unavailable``)."""
    client = connect()
    base = f"/v1/deployments/{name}"
    summary = _or_none(lambda: client.get(f"{base}/summary", params={"window": window}))
    latency = client.get(f"{base}/latency", params={"window": window})
    try:
        report = client.get(f"{base}/drift", params={"window": window})
    except NbserveError as exc:  # e.g. too little traffic yet: the panel says why
        drift = {"features": [], "dataset_drift": None, "drift_share": None,
                 "unavailable": exc.to_payload()["error"]}
    else:
        drift = {"features": report["report"], "dataset_drift": report["dataset_drift"],
                 "drift_share": report["drift_share"], "unavailable": None}
    return {"window": window, "summary": summary, "latency": latency, "drift": drift}


def change(name: str, action: str, body: dict[str, Any] | None = None,
           timeout: float = CHANGE_TIMEOUT) -> dict[str, Any]:
    """``POST /v1/deployments/{name}/{action}`` as this user; the deployment it answers."""
    answer = connect().post(f"/v1/deployments/{name}/{action}", json={**(body or {}), "actor": actor()},
                            timeout=timeout)
    return with_version(answer)


# -- schedules -------------------------------------------------------------------------------


def list_schedules(root: str | None) -> list[dict[str, Any]]:
    """Every schedule with its last run: the poll's, one agent request (none without an agent)."""
    return panel_state(root)["schedules"]


def schedule_detail(name: str, root: str | None, limit: int) -> dict[str, Any]:
    client = connect()
    sched = client.get(f"/v1/schedules/{name}")
    runs = [with_lab_path(run, root) for run in
            client.get(f"/v1/schedules/{name}/runs", params={"limit": limit})]  # oldest first
    return {**sched, "last_run": runs[-1] if runs else None, "runs": runs}


def schedule_change(name: str, action: str) -> dict[str, Any]:
    """``POST /v1/schedules/{name}/{action}`` (pause, resume, run) as this user."""
    return connect().post(f"/v1/schedules/{name}/{action}", json={"actor": actor()})


# -- handlers --------------------------------------------------------------------------------


class DeploymentsHandler(_Handler):
    @tornado.web.authenticated
    async def get(self) -> None:
        self.reply(await self.call(list_deployments))


class DeploymentHandler(_Handler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        events = self.int_argument("events", 50)
        self.reply(await self.call(deployment_detail, name, events))


class HistoryHandler(_Handler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        self.reply(await self.call(deployment_history, name))


class EventsHandler(_Handler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        limit = self.int_argument("limit", 200)
        self.reply(await self.call(deployment_events, name, limit))


class AuditHandler(_Handler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        limit = self.int_argument("limit", 200)
        self.reply(await self.call(deployment_audit, name, limit))


class CardHandler(_Handler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        version = self.int_argument("version")
        self.reply(await self.call(model_card, name, version))


class LogsHandler(_Handler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        version = self.int_argument("version")
        lines = self.int_argument("lines", 200)
        self.reply(await self.call(deployment_logs, name, version, lines))


class MetricsHandler(_Handler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        window = self.get_query_argument("window", "1h")
        self.reply(await self.call(deployment_metrics, name, window))


class RollbackHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        to = self.body().get("to")
        if to is not None and (isinstance(to, bool) or not isinstance(to, int)):
            self._fail(InvalidArgument(f"`to` must be a version number, not {to!r}"))
        self.reply(await self.call(change, name, "rollback", {"to": to}))


class StopHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.reply(await self.call(change, name, "stop"))


class StartHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.reply(await self.call(change, name, "start"))


class PromoteHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.reply(await self.call(change, name, "promote"))


class AbortHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.reply(await self.call(change, name, "abort"))


class CanaryHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        percent = self.body().get("percent")
        if isinstance(percent, bool) or not isinstance(percent, (int, float)):
            self._fail(InvalidArgument(f"`percent` must be a number, not {percent!r}"))
        self.reply(await self.call(change, name, "canary", {"percent": percent}))


class ScaleHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        try:
            changes = check_serving_json(self.body())
        except InvalidArgument as exc:
            self._fail(exc)
        self.reply(await self.call(change, name, "scale", serving_body(**changes), SCALE_TIMEOUT))


class _ScheduleHandler(_Handler):
    @property
    def root(self) -> str | None:
        """The server's root folder: executed notebooks under it open in JupyterLab."""
        manager = self.settings.get("contents_manager")
        root = getattr(manager, "root_dir", None) or self.settings.get("server_root_dir")
        return str(root) if root else None


class StateHandler(_ScheduleHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        self.reply(await self.call(panel_state, self.root))


class SchedulesHandler(_ScheduleHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        self.reply(await self.call(list_schedules, self.root))


class ScheduleHandler(_ScheduleHandler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        limit = self.int_argument("runs", 50)
        self.reply(await self.call(schedule_detail, name, self.root, limit))


class ScheduleRunHandler(_ScheduleHandler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.set_status(202)
        self.reply(with_lab_path(await self.call(schedule_change, name, "run"), self.root))


class SchedulePauseHandler(_ScheduleHandler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.reply(await self.call(schedule_change, name, "pause"))


class ScheduleResumeHandler(_ScheduleHandler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.reply(await self.call(schedule_change, name, "resume"))


def routes() -> list[tuple[str, type[_Handler]]]:
    base = f"{PREFIX}/deployments"
    schedules = f"{PREFIX}/schedules"
    return [
        (f"{PREFIX}/state", StateHandler),
        (schedules, SchedulesHandler),
        (f"{schedules}/{_NAME}", ScheduleHandler),
        (f"{schedules}/{_NAME}/run", ScheduleRunHandler),
        (f"{schedules}/{_NAME}/pause", SchedulePauseHandler),
        (f"{schedules}/{_NAME}/resume", ScheduleResumeHandler),
        (f"{base}/{_NAME}/promote", PromoteHandler),
        (f"{base}/{_NAME}/abort", AbortHandler),
        (f"{base}/{_NAME}/canary", CanaryHandler),
        (base, DeploymentsHandler),
        (f"{base}/{_NAME}", DeploymentHandler),
        (f"{base}/{_NAME}/history", HistoryHandler),
        (f"{base}/{_NAME}/events", EventsHandler),
        (f"{base}/{_NAME}/audit", AuditHandler),
        (f"{base}/{_NAME}/card", CardHandler),
        (f"{base}/{_NAME}/logs", LogsHandler),
        (f"{base}/{_NAME}/metrics", MetricsHandler),
        (f"{base}/{_NAME}/rollback", RollbackHandler),
        (f"{base}/{_NAME}/stop", StopHandler),
        (f"{base}/{_NAME}/start", StartHandler),
        (f"{base}/{_NAME}/scale", ScaleHandler),
    ]
