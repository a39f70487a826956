"""StableEndpoint: the public face of the proxy, one per deployment.  It makes the endpoint's
shared state, listens, runs the one timeout sweep, and maps the agent's calls (switch, canary,
shadow, waker, router, auth, monitoring, drain) onto the layers that carry them out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ._config import (
    HEADER_TIMEOUT,
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    EndpointConfig,
)
from ._http._connection import ClientConnection
from ._state import EndpointState
from ._types import RequestRecord, Router, ShadowResult, Upstream

log = logging.getLogger(__name__)


class StableEndpoint:
    """A loopback HTTP/1.1 listener that forwards to a switchable upstream.

    All methods must be called from the event loop thread that ran start().
    """

    def __init__(
        self,
        name: str,
        upstream: Upstream | None = None,
        *,
        observer: Callable[[RequestRecord], None] | None = None,
        sampler: Callable[[], bool] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        upstream_timeout: float = 300.0,
        idle_timeout: float = 60.0,
        header_timeout: float = HEADER_TIMEOUT,
        pool_idle_timeout: float = 3.0,
        pool_max_age: float = 10.0,
        retry_wait: float = 5.0,
        max_request_line: int = MAX_REQUEST_LINE,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_headers: int = MAX_HEADERS,
        max_head_bytes: int = MAX_HEAD_BYTES,
    ) -> None:
        """
        upstream_timeout: longest wait for the upstream's response head, and
            longest silence while its body streams (504 if nothing was sent yet).
        idle_timeout: keep-alive client connections idle this long are closed;
            also how long a client may stall reading a response.
        header_timeout: a started request must have its head within this long,
            and its body must not stall longer than this.
        pool_idle_timeout: pooled upstream connections idle this long are closed
            by us, well below uvicorn's (and so BentoML's) 5 s keep-alive, so the
            upstream rarely closes one as we reuse it (that race is retried anyway).
        pool_max_age: a pooled upstream connection this old is closed once its exchange
            ends.  Several workers share one port and the kernel hands each new connection
            to one of them: under steady traffic a pool that never renews its connections
            stays with the workers that were up when it filled (a worker that loaded late,
            or was restarted, would get nothing).  Renewing them spreads the load again.
        retry_wait: a request whose connection was lost with no response (a worker that
            died) is sent once more; this bounds the wait for a worker to take it (503 after).
        max_request_line, max_header_bytes, max_headers, max_head_bytes: the most a
            request target, one header (name + value), the header count and the
            whole head may be; beyond them the client gets 414 or 431 and the
            connection closes.  Defaults: the NBSERVE_PROXY_* environment variables.
        """
        self.name = name
        config = EndpointConfig(
            name=name,
            max_body_bytes=max_body_bytes,
            max_request_line=max_request_line,
            max_header_bytes=max_header_bytes,
            max_headers=max_headers,
            max_head_bytes=max_head_bytes,
            upstream_timeout=upstream_timeout,
            idle_timeout=idle_timeout,
            header_timeout=header_timeout,
            pool_idle_timeout=pool_idle_timeout,
            pool_max_age=pool_max_age,
            retry_wait=retry_wait,
        )
        state = self._state = EndpointState(config)
        self._pools = state.pools
        self._routing = state.routing
        self._shadow = state.shadow
        self._server: asyncio.AbstractServer | None = None
        self._port: int | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_every = config.sweep_every
        self.set_monitoring(observer, sampler)
        self.set_upstream(upstream)

    # -- what the agent reads ------------------------------------------------------------

    @property
    def last_request(self) -> float:
        """loop.time() of the newest request: what idle time is measured from."""
        return self._state.last_request

    @last_request.setter
    def last_request(self, value: float) -> None:
        self._state.last_request = value

    @property
    def refused(self) -> dict[str, int]:
        """503s answered by a version's own server, by version label (the agent resets it)."""
        return self._state.refused

    @refused.setter
    def refused(self, value: dict[str, int]) -> None:
        self._state.refused = value

    @property
    def shadow_dropped(self) -> int:
        """Mirrors not sent to the current shadow because max_inflight were running."""
        return self._shadow.dropped

    @shadow_dropped.setter
    def shadow_dropped(self, value: int) -> None:
        self._shadow.dropped = value

    @property
    def upstream(self) -> Upstream | None:
        pool = self._routing.live
        return None if pool is None else pool.upstream

    @property
    def canary(self) -> Upstream | None:
        pool = self._routing.canary
        return None if pool is None else pool.upstream

    @property
    def shadow(self) -> Upstream | None:
        pool = self._shadow.pool
        return None if pool is None else pool.upstream

    @property
    def port(self) -> int | None:
        return self._port

    # -- routing -----------------------------------------------------------------------

    def set_upstream(self, upstream: Upstream | None) -> None:
        """Send requests that start from now on to `upstream` (None: answer 503).

        In-flight requests finish where they are; keep the old upstream running
        until drain(old) returns, then close_idle(old) and stop it.
        """
        self._routing.set_live(None if upstream is None else self._pools.take(upstream))

    def set_canary(self, upstream: Upstream | None, percent: float = 0.0, *,
                   sticky_header: str | None = None) -> None:
        """Send ``percent`` of new requests to ``upstream`` (None: none). With a sticky header,
        requests carrying it are routed by a hash of its value, so one client stays on one side."""
        pool = None if upstream is None else self._pools.take(upstream)
        self._routing.set_canary(pool, percent, sticky_header)

    def set_shadow(self, upstream: Upstream | None,
                   on_result: Callable[[ShadowResult], None] | None = None, *,
                   max_inflight: int = 8) -> None:
        """Mirror each live POST to ``upstream`` after it was answered; never returns its answers.
        At most ``max_inflight`` mirrors run at once: beyond that they are counted, not sent."""
        pool = None if upstream is None else self._pools.take(upstream)
        self._shadow.set(pool, on_result, max_inflight)

    def set_router(self, router: Router | None) -> None:
        """Who decides about per-version URLs (``/v/...``) and the endpoint's own routes."""
        self._routing.router = router

    def set_auth(self, check: Callable[[bytes | None], tuple[int, str, str] | None] | None) -> None:
        """Require what ``check`` accepts in each request's Authorization header (None: open)."""
        self._routing.auth = check

    def set_monitoring(
        self, observer: Callable[[RequestRecord], None] | None, sampler: Callable[[], bool] | None
    ) -> None:
        """Who sees each finished request, and who picks the ones whose bodies are kept."""
        self._state.observer = observer
        self._routing.sampler = sampler

    # -- scale to zero --------------------------------------------------------------------

    def set_waker(self, waker: Callable[[], None] | None, timeout: float = 120.0) -> None:
        """While no upstream is set, hold requests and call ``waker`` (once) to start one;
        ``None``: answer 503 instead (stopped deployments)."""
        routing = self._routing
        routing.waker = waker
        routing.wake_timeout = timeout
        if waker is None and routing.waiting:
            self.wake_failed("the deployment was stopped", "Start it, then retry.", retry_after=0.0)

    def held(self) -> int:
        """Connections waiting for the deployment to start."""
        return len(self._routing.waiting)

    def wake_failed(self, error: str, hint: str, *, retry_after: float = 10.0) -> None:
        """Starting failed: answer every held request with a 503, and for ``retry_after``
        seconds answer new ones at once instead of starting again."""
        self._routing.wake_failed(error, hint, retry_after)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl: Any = None) -> int:
        """Listen on host:port (0 picks a free port), over TLS with an ``ssl.SSLContext``;
        returns the bound port."""
        if self._server is not None:
            raise RuntimeError(f"endpoint {self.name!r} already started")
        loop = asyncio.get_running_loop()
        state = self._state
        state.started(loop)
        self._server = await loop.create_server(
            lambda: ClientConnection(state), host, port, backlog=1024, ssl=ssl,
            ssl_handshake_timeout=state.config.header_timeout if ssl is not None else None,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)
        return self._port

    def inflight(self, upstream: Upstream | None = None) -> int:
        """Requests being served now: in total, or forwarded to `upstream`."""
        if upstream is None:
            return self._pools.inflight
        pool = self._pools.get(upstream)
        return 0 if pool is None else pool.inflight

    async def drain(self, upstream: Upstream, timeout: float = 30.0) -> bool:
        """Wait until no request is in flight to `upstream`; False on timeout.

        Call it after set_upstream() moved traffic elsewhere, otherwise new
        requests keep arriving and "drained" is only momentary.
        """
        pool = self._pools.get(upstream)
        if pool is None or pool.inflight == 0:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pool.waiters.append(fut)
        try:
            done, _ = await asyncio.wait((fut,), timeout=timeout)
            return bool(done)
        finally:
            if not fut.done():
                fut.cancel()
            if fut in pool.waiters:
                pool.waiters.remove(fut)

    def close_idle(self, upstream: Upstream) -> None:
        """Close pooled idle connections to an upstream that is being stopped.

        Unless it is the current upstream, connections to it that are still
        busy are closed (not pooled) when their request finishes.
        """
        pool = self._pools.get(upstream)
        if pool is None:
            return
        if pool is not self._routing.live:
            pool.retired = True
        pool.close_idle()

    async def close(self) -> None:
        """Stop listening; close client connections (aborting their requests) and pooled ones."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        server, self._server = self._server, None
        if server is not None:
            server.close()
        state = self._state
        for client in list(state.clients):
            client.close_now()
        for task in list(state.tasks):
            task.cancel()
        self._pools.close()
        if server is not None:
            await server.wait_closed()
        # Let connection_lost callbacks run so in-flight counts settle.
        for _ in range(3):
            await asyncio.sleep(0)

    def _sweep(self) -> None:
        """Periodic: enforce timeouts, expire idle pooled connections, forget unused pools."""
        loop = self._state.loop
        now = loop.time()
        for client in [c for c in self._state.clients if c.deadline and c.deadline < now]:
            try:
                client.timed_out()
            except Exception:
                log.exception("endpoint %r: timeout handling failed", self.name)
        self._pools.sweep(now, self._routing.live)
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)
