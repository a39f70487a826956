"""Shadow mirroring: after a live POST was answered, the same request goes to the shadow version
on a connection of its own, and both answers go to a callback for comparison.  Off the hot path
(one task per mirrored request), bounded in how many run at once; never seen by the client."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

from ._types import ShadowResult, Upstream, with_prefix

if TYPE_CHECKING:
    from ._http._request import Request
    from ._upstream import UpstreamPool

log = logging.getLogger(__name__)

_now_ns = time.perf_counter_ns


class _OneResponse:
    """httptools callbacks collecting one response (for mirrored requests)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.done = False

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        self.done = True


async def _exchange_once(upstream: Upstream, head: bytes, body: bytes) -> tuple[int, bytes]:
    """One request on a fresh connection; (status, body). Off the hot path: shadows only."""
    reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
    try:
        writer.write((with_prefix(head, upstream.prefix) if upstream.prefix else head) + body)
        await writer.drain()
        collector = _OneResponse()
        parser = httptools.HttpResponseParser(collector)
        while not collector.done:
            data = await reader.read(65536)
            if not data:
                break
            parser.feed_data(data)
        return parser.get_status_code(), b"".join(collector.parts)
    finally:
        writer.close()


class ShadowMirror:
    """The shadow version of one endpoint (if any) and the mirrors sent to it."""

    __slots__ = ("dropped", "inflight", "max_inflight", "name", "on_result", "pool", "tasks",
                 "timeout")

    def __init__(self, name: str, timeout: float, tasks: set[asyncio.Task[None]]) -> None:
        self.name = name
        self.timeout = timeout  # the endpoint's upstream_timeout
        self.tasks = tasks  # the endpoint's: cancelled when it closes
        self.pool: UpstreamPool | None = None  # gets a copy of live requests, answers compared
        self.on_result: Callable[[ShadowResult], None] | None = None
        self.inflight = 0
        self.max_inflight = 8
        self.dropped = 0

    def set(self, pool: UpstreamPool | None, on_result: Callable[[ShadowResult], None] | None,
            max_inflight: int) -> None:
        if pool is None:
            self.pool = None
            self.on_result = None
            return
        self.max_inflight = max_inflight
        self.on_result = on_result
        self.dropped = 0  # counted per shadow
        self.pool = pool

    def mirror(self, req: Request, live_status: int) -> None:
        """Send ``req`` (answered by the live version with ``live_status``) to the shadow."""
        if self.inflight >= self.max_inflight:
            self.dropped += 1
            return
        pool = self.pool
        self.inflight += 1
        live = b"".join(req.response or ())
        task = asyncio.get_running_loop().create_task(
            self._mirror_one(pool, req.head, req.body, live_status, live))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _mirror_one(self, pool: UpstreamPool, head: bytes, body: bytes, live_status: int,
                          live: bytes) -> None:
        started = _now_ns()
        try:
            status, answer = await asyncio.wait_for(
                _exchange_once(pool.upstream, head, body), timeout=self.timeout
            )
            error = None
        except Exception as exc:  # noqa: BLE001 - a failing shadow is a finding, not a fault
            status, answer, error = 0, b"", f"{type(exc).__name__}: {exc}"
        finally:
            self.inflight -= 1
        callback = self.on_result
        if callback is not None:
            try:
                callback(ShadowResult(pool.upstream.label, live_status, live, status, answer,
                                      _now_ns() - started, error))
            except Exception:  # noqa: BLE001
                log.exception("shadow comparison of %r failed", self.name)
