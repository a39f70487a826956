"""What an endpoint shares with its connections (like uvicorn's ServerState): its configuration,
routing policy, pools and shadow, the request ids it makes, its live client connections and
tasks, the observer that sees each finished request, and the counters the agent reads."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._config import EndpointConfig
from ._http._request import RequestIds
from ._routing import RoutingPolicy
from ._shadow import ShadowMirror
from ._types import RequestRecord
from ._upstream import UpstreamPools

if TYPE_CHECKING:
    from ._http._connection import ClientConnection
    from ._http._request import Request

log = logging.getLogger(__name__)

_now_ns = time.perf_counter_ns


class EndpointState:
    __slots__ = (
        "clients",
        "config",
        "ids",
        "last_request",
        "loop",
        "observer",
        "observer_failures",
        "observer_logged_at",
        "pools",
        "refused",
        "routing",
        "shadow",
        "tasks",
    )

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.tasks: set[asyncio.Task[None]] = set()
        self.pools = UpstreamPools(config.pool_idle_timeout, config.pool_max_age, self.tasks)
        self.shadow = ShadowMirror(config.name, config.upstream_timeout, self.tasks)
        self.routing = RoutingPolicy(config.name, self.pools, self.shadow)
        self.ids = RequestIds()
        self.clients: set[ClientConnection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None  # set when the endpoint starts
        self.observer: Callable[[RequestRecord], None] | None = None
        self.observer_failures = 0
        self.observer_logged_at = float("-inf")
        self.last_request = 0.0  # loop.time() of the newest request: idle time is measured from it
        # 503s answered by a version's own server, by version label (a batching server sheds
        # load this way); the agent reads and resets it.
        self.refused: dict[str, int] = {}

    def started(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = self.pools.loop = self.routing.loop = loop

    def observe(self, req: Request, label: str | None, status: int) -> None:
        """Hand the observer the record of a finished request; its failures never reach serving."""
        try:
            record = RequestRecord(
                label,
                req.method.decode("latin-1"),
                req.url.partition(b"?")[0].decode("latin-1"),
                status,
                req.started_ns,
                _now_ns() - req.started_ns,
                req.body_len,
                req.body,
                b"".join(req.response) if req.sampled else None,
                req.rid.decode("latin-1") if req.rid else "",
                req.rows,
            )
            self.observer(record)
        except Exception:
            # Never let metrics break serving; log at most once a minute.
            self.observer_failures += 1
            now = time.monotonic()
            if now - self.observer_logged_at >= 60.0:
                self.observer_logged_at = now
                log.exception(
                    "request observer of endpoint %r failed (%d failure(s) so far)",
                    self.config.name,
                    self.observer_failures,
                )
