"""Thin handlers: read the request, call the public nbserve API off the IOLoop, serialise.

Every route needs Jupyter's own authentication (token or cookie + XSRF); the browser never
sees the agent's token. Errors are mapped in one place, :meth:`_Handler._fail`: an
``NbserveError`` answers its own ``status`` with ``{"error": {"type", "message", "hint"}}``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, NoReturn

import tornado.web
from jupyter_server.base.handlers import APIHandler

import nbserve
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


def _state(dep: nbserve.Deployment) -> dict[str, Any]:
    return {
        "name": dep.name,
        "status": dep.status,
        "version": dep.version,
        "url": dep.url,
        "versions": [{"number": v["number"], "status": v["status"]} for v in dep.versions],
    }


def _summary(dep: nbserve.Deployment, window: str = "5m") -> dict[str, Any] | None:
    """The deployment's traffic summary, or ``None`` where the client has no monitoring."""
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
    return [{**_state(dep), "summary": _summary(dep)} for dep in deps]


def deployment_detail(name: str, events: int) -> dict[str, Any]:
    dep = nbserve.get(name)
    history = _records(dep.history(), index="version")  # history() refreshes the snapshot
    return {**_state(dep), "history": history, "events": _records(dep.events(limit=events))}


def deployment_history(name: str) -> list[dict[str, Any]]:
    return _records(nbserve.get(name).history(), index="version")


def deployment_events(name: str, limit: int) -> list[dict[str, Any]]:
    return _records(nbserve.get(name).events(limit=limit))


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


def routes() -> list[tuple[str, type[_Handler]]]:
    base = f"{PREFIX}/deployments"
    return [
        (base, DeploymentsHandler),
        (f"{base}/{_NAME}", DeploymentHandler),
        (f"{base}/{_NAME}/history", HistoryHandler),
        (f"{base}/{_NAME}/events", EventsHandler),
        (f"{base}/{_NAME}/logs", LogsHandler),
        (f"{base}/{_NAME}/metrics", MetricsHandler),
        (f"{base}/{_NAME}/rollback", RollbackHandler),
        (f"{base}/{_NAME}/stop", StopHandler),
        (f"{base}/{_NAME}/start", StartHandler),
    ]
