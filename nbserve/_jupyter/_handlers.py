"""Thin handlers: read the request, call the public nbserve API off the IOLoop, serialise.
The panel's poll (``GET .../state``) passes the agent's own JSON through instead.

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

import nbserve
from nbserve._connection import connect
from nbserve._settings import check_serving_json
from nbserve.errors import AgentUnreachable, InvalidArgument, NbserveError

PREFIX = "/nbserve/api"
_NAME = r"(?P<name>[^/]+)"


class _Handler(APIHandler):
    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking client call in a thread; an nbserve error ends the request."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except NbserveError as exc:
            self._fail(exc)

    def reply(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

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


# -- serialisation of the client API's return values -------------------------------------


def _records(frame: Any, index: str | None = None) -> list[dict[str, Any]]:
    """A DataFrame as JSON records (NaN -> null, timestamps -> ISO 8601)."""
    if frame is None or len(frame) == 0:
        return []
    if index is not None and frame.index.name == index:
        frame = frame.reset_index()
    return json.loads(frame.to_json(orient="records", date_format="iso", date_unit="s"))


ROLLOUT_BRIEF = ("mode", "version", "percent", "started_at", "auto_promote", "sticky_header")


def _rollout_brief(dep: nbserve.Deployment) -> dict[str, Any] | None:
    """The canary or shadow under way as the deployment's snapshot has it (no figures), or None."""
    rollout = getattr(dep, "_data", {}).get("rollout") or None
    if not rollout:
        return None
    return {key: _plain(rollout.get(key)) for key in ROLLOUT_BRIEF}


def _state(dep: nbserve.Deployment) -> dict[str, Any]:
    return {
        "name": dep.name,
        "status": dep.status,
        "version": dep.version,
        "url": dep.url,
        "versions": [{"number": v["number"], "status": v["status"]} for v in dep.versions],
        "rollout": _rollout_brief(dep),
        "aliases": _aliases(dep),
    }


def _aliases(dep: nbserve.Deployment) -> dict[str, int]:
    """Named versions (alias -> number), each answering at ``<url>/v/<alias>/...``."""
    return {str(alias): int(number) for alias, number in getattr(dep, "aliases", {}).items()}


def _latest_event_id(dep: nbserve.Deployment) -> int | None:
    """The id of the deployment's newest event: the panel fetches events only when it moves."""
    try:
        frame = dep.events(limit=1)
    except NbserveError:
        return None
    if frame is None or len(frame) == 0 or "id" not in frame:
        return None
    return int(frame["id"].iloc[-1])


def _summary(dep: nbserve.Deployment, window: str = "5m") -> dict[str, Any] | None:
    """The deployment's traffic summary as the agent answers it (rps, latency, error rate,
    sparkline, the drift flag and the live version's ``quality`` figure with its trend), or
    ``None`` where the client has no monitoring."""
    if not hasattr(dep, "summary"):
        return None
    try:
        return json.loads(json.dumps(dep.summary(window=window), default=_plain))
    except NbserveError:
        return None


def _plain(value: Any) -> Any:
    """A JSON-ready value: plain Python as is, numpy scalars as Python, the rest as text."""
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) else str(value)


# -- what each route does ------------------------------------------------------------------


def list_deployments() -> list[dict[str, Any]]:
    # An open panel must not bring back an agent the user stopped: no agent, nothing serves.
    try:
        deps = nbserve.deployments(start=False)
    except AgentUnreachable:
        return []
    resources = _resources() if deps else {}
    return [_brief(dep, resources) for dep in deps]


def _brief(dep: nbserve.Deployment, resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The compact entry; ``resources`` is every deployment's row from one ``_resources()``."""
    return {**_state(dep), "summary": _summary(dep), "latest_event_id": _latest_event_id(dep),
            "resources": resources.get(dep.name)}


def _resources() -> dict[str, dict[str, Any]]:
    """Every deployment's resources now (state, workers x servers, CPU %, RSS, caps and their
    enforcement, idle seconds), by name, from ONE ``nbserve.top()`` call; ``{}`` when the agent
    cannot answer it (e.g. an agent older than scaling): the rest of the answer stands."""
    try:
        frame = nbserve.top(start=False)  # a poll never starts an agent the user stopped
    except NbserveError:
        return {}
    return {row.pop("deployment"): row for row in _records(frame, index="deployment")}


def panel_state(root: str | None) -> dict[str, Any]:
    """What the panel polls every 2 s: the agent's ``GET /v1/state`` as it answers it (one
    request, whatever the number of deployments), through the one cached client. Only a
    schedule's last run gains ``executed_notebook_lab_path``: the server's root is Jupyter's."""
    try:
        client = connect(start=False)  # an open panel never brings back an agent the user stopped
    except AgentUnreachable:
        return {"deployments": [], "schedules": []}
    state = client.get("/v1/state")
    for sched in state.get("schedules", []):
        run = sched.get("last_run")
        if run:
            run["executed_notebook_lab_path"] = notebook_path_under(run.get("executed_notebook"), root)
    return state


def _rollout_detail(dep: nbserve.Deployment) -> dict[str, Any] | None:
    if not hasattr(dep, "rollout"):
        return None
    try:
        rollout = dep.rollout()
    except NbserveError:
        return _rollout_brief(dep)
    return json.loads(json.dumps(rollout, default=_plain)) if rollout else None


def deployment_detail(name: str, events: int) -> dict[str, Any]:
    dep = nbserve.get(name)
    history = _records(dep.history(), index="version")  # history() refreshes the snapshot
    # the rollout with its gates, figures so far and verdict (None: none under way)
    return {**_state(dep), "rollout": _rollout_detail(dep), "history": history,
            "events": _records(dep.events(limit=events)), "summary": _summary(dep),
            "resources": _resources().get(dep.name)}


def deployment_history(name: str) -> list[dict[str, Any]]:
    return _records(nbserve.get(name).history(), index="version")


def deployment_events(name: str, limit: int) -> list[dict[str, Any]]:
    return _records(nbserve.get(name).events(limit=limit))


def deployment_audit(name: str, limit: int) -> dict[str, Any]:
    """The deployment's audit records (oldest first) and the check of the whole log's hash chain."""
    nbserve.get(name)  # an unknown deployment is a 404, as on the other routes
    records = _records(nbserve.admin.audit(name, limit=limit), index="seq")
    try:
        chain = {key: _plain(value) for key, value in nbserve.admin.verify_audit().items()}
    except NbserveError as exc:  # e.g. a token scoped to some deployments may not check the whole log
        chain = {"ok": None, "records": None, "broken_at": None, "problem": None, "head": None,
                 "unavailable": exc.to_payload()["error"]}
    return {"records": records, "chain": chain}


def model_card(name: str, version: int | None) -> dict[str, Any]:
    """A version's model card (default: the live one) as sanitisable HTML and as Markdown."""
    dep = nbserve.get(name)
    if version is not None and version < 1:
        raise InvalidArgument(f"version must be a version number (1, 2, ...), not {version}")
    number = version if version is not None else dep.version
    card = dep.model_card(number)
    return {"html": card.to_html(), "markdown": card.to_markdown(), "version": number}


def deployment_logs(name: str, version: int | None, lines: int) -> dict[str, Any]:
    dep = nbserve.get(name)
    return {"version": version if version is not None else dep.version,
            "text": dep.logs(version=version, lines=lines)}


def deployment_metrics(name: str, window: str) -> dict[str, Any]:
    dep = nbserve.get(name)
    latency = drift = None
    if hasattr(dep, "latency"):
        latency = _records(dep.latency(window=window))
    if hasattr(dep, "drift"):
        try:
            frame = dep.drift(window=window)
        except NbserveError as exc:  # e.g. too little traffic yet: the panel says why
            drift = {"features": [], "dataset_drift": None, "drift_share": None,
                     "unavailable": exc.to_payload()["error"]}
        else:
            drift = {
                "features": _records(frame),
                "dataset_drift": _plain(frame.attrs.get("dataset_drift")),
                "drift_share": _plain(frame.attrs.get("drift_share")),
                "unavailable": None,
            }
    return {"window": window, "summary": _summary(dep, window), "latency": latency, "drift": drift}


def rollback(name: str, to: int | None) -> dict[str, Any]:
    return _state(nbserve.get(name).rollback(to=to))


def stop(name: str) -> dict[str, Any]:
    return _state(nbserve.get(name).stop())


def start(name: str) -> dict[str, Any]:
    return _state(nbserve.get(name).start())


def promote(name: str) -> dict[str, Any]:
    return _state(nbserve.get(name).promote())


def abort(name: str) -> dict[str, Any]:
    return _state(nbserve.get(name).abort())


def set_canary(name: str, percent: float) -> dict[str, Any]:
    return _state(nbserve.get(name).set_canary(percent))


def scale(name: str, changes: dict[str, Any]) -> dict[str, Any]:
    return _state(nbserve.get(name).scale(**changes))


# -- schedules -------------------------------------------------------------------------------


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


def _run_record(run: dict[str, Any], root: str | None) -> dict[str, Any]:
    out = {key: _plain(value) for key, value in run.items()}
    if isinstance(out.get("parameters"), str):
        try:
            out["parameters"] = json.loads(out["parameters"])
        except ValueError:
            pass
    out["executed_notebook_lab_path"] = notebook_path_under(out.get("executed_notebook"), root)
    return out


def _runs(sched: Any, root: str | None, limit: int) -> list[dict[str, Any]]:
    return [_run_record(r, root) for r in _records(sched.runs(limit=limit), index="id")]


def _schedule_brief(sched: Any, root: str | None) -> dict[str, Any]:
    data = json.loads(json.dumps(sched.data, default=_plain))
    try:
        last = _runs(sched, root, 1)
    except NbserveError:  # removed meanwhile
        last = []
    data["last_run"] = last[-1] if last else None
    return data


def _schedule_briefs(root: str | None) -> list[dict[str, Any]]:
    from nbserve.errors import NotFound

    out = []
    for sched in nbserve.schedules():
        try:
            out.append(_schedule_brief(sched, root))
        except NotFound:
            continue
    return out


def list_schedules(root: str | None) -> list[dict[str, Any]]:
    # as for deployments: reading the list never starts a stopped agent
    try:
        nbserve.connect(start=False)
    except AgentUnreachable:
        return []
    return _schedule_briefs(root)


def schedule_detail(name: str, root: str | None, limit: int) -> dict[str, Any]:
    sched = nbserve.get_schedule(name)
    data = json.loads(json.dumps(sched.data, default=_plain))
    runs = _runs(sched, root, limit)
    return {**data, "last_run": runs[-1] if runs else None, "runs": runs}


def schedule_run_now(name: str, root: str | None) -> dict[str, Any]:
    return _run_record(nbserve.get_schedule(name).run_now(wait=False), root)


def schedule_pause(name: str, root: str | None) -> dict[str, Any]:
    return _schedule_brief(nbserve.get_schedule(name).pause(), root)


def schedule_resume(name: str, root: str | None) -> dict[str, Any]:
    return _schedule_brief(nbserve.get_schedule(name).resume(), root)


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
        self.reply(await self.call(rollback, name, to))


class StopHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.reply(await self.call(stop, name))


class StartHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.reply(await self.call(start, name))


class PromoteHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.reply(await self.call(promote, name))


class AbortHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.reply(await self.call(abort, name))


class CanaryHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        percent = self.body().get("percent")
        if isinstance(percent, bool) or not isinstance(percent, (int, float)):
            self._fail(InvalidArgument(f"`percent` must be a number, not {percent!r}"))
        self.reply(await self.call(set_canary, name, percent))


class ScaleHandler(_Handler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        try:
            changes = check_serving_json(self.body())
        except InvalidArgument as exc:
            self._fail(exc)
        self.reply(await self.call(scale, name, changes))


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
        self.reply(await self.call(schedule_run_now, name, self.root))


class SchedulePauseHandler(_ScheduleHandler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.reply(await self.call(schedule_pause, name, self.root))


class ScheduleResumeHandler(_ScheduleHandler):
    @tornado.web.authenticated
    async def post(self, name: str) -> None:
        self.reply(await self.call(schedule_resume, name, self.root))


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
