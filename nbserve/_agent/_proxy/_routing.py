"""Routing policy: where each request goes, decided by one call per request.

:meth:`RoutingPolicy.decide` looks at a parsed request and says what to do with it: forward it
(to the live version, the canary's share, or the version a ``/v/N/`` URL pins), answer it
locally (what the router answers itself, the endpoint's own JSON errors), await the router's
coroutine, or hold it until a scaled-to-zero deployment is started again.  It also marks what
of the answer is kept (the sampler's pick for monitoring, or the live answer a shadow is
compared with).  The connection that asked carries the decision out; nothing here does I/O.
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._config import Refusal
from ._types import LocalAnswer, Router, Upstream

if TYPE_CHECKING:
    import asyncio

    from ._http._connection import ClientConnection
    from ._http._request import Request
    from ._shadow import ShadowMirror
    from ._upstream import UpstreamPool, UpstreamPools

log = logging.getLogger(__name__)

# Paths the router looks at (per-version URLs, Open Inference V2's versions, and what the
# endpoint answers itself); any
# other path goes straight to the live version without a call.
_ROUTED = (b"/v/", b"/metadata", b"/schema", b"/feedback", b"/v2/models/")

# What a Decision says to do.
FORWARD = 0  # send to decision.pool
ANSWER = 1  # answer decision.answer, a LocalAnswer
AWAIT = 2  # decision.answer is the router's coroutine: answer with what it returns
HOLD = 3  # no version is running: wait for the one being started (hold() was called)
REFUSE = 4  # answer decision.refusal, (status, error, hint), as a JSON error


class Decision:
    """What to do with one request.  An endpoint has one, rewritten by each decide() and read at
    once by the connection that asked (the event loop runs one decide() at a time): the fast
    path allocates nothing for it.  Only the fields of its ``action`` are meaningful."""

    __slots__ = ("action", "answer", "pool", "refusal")

    def __init__(self) -> None:
        self.action = FORWARD
        self.pool: UpstreamPool | None = None
        self.answer: Any = None
        self.refusal: Refusal | None = None


class RoutingPolicy:
    """One endpoint's routing state: live, canary, router, waker; and its decision per request."""

    __slots__ = (
        "auth",
        "canary",
        "canary_cut",
        "decision",
        "live",
        "loop",
        "name",
        "no_version",
        "no_wake_until",
        "pools",
        "router",
        "router_failures",
        "router_logged_at",
        "sampler",
        "shadow",
        "sticky_header",
        "wake_timeout",
        "waker",
        "waiting",
        "waking",
    )

    def __init__(self, name: str, pools: UpstreamPools, shadow: ShadowMirror) -> None:
        self.name = name
        self.pools = pools
        self.shadow = shadow
        self.loop: asyncio.AbstractEventLoop | None = None  # set when the endpoint starts
        self.decision = Decision()
        # The current upstream's pool: one attribute, so switching is atomic.
        self.live: UpstreamPool | None = None
        self.canary: UpstreamPool | None = None  # gets a share of new requests
        self.canary_cut = 0.0  # share of 10,000
        self.sticky_header: bytes | None = None  # the connection notes its value as client_key
        self.router: Router | None = None
        self.router_failures = 0
        self.router_logged_at = float("-inf")
        self.sampler: Callable[[], bool] | None = None
        # Checks a request's Authorization header: None lets it through, else (status, error, hint).
        # The connection calls it when a head is complete, before the body is read.
        self.auth: Callable[[bytes | None], Refusal | None] | None = None
        # Scale to zero: with no upstream, a waker starts the version and requests wait for it.
        self.waker: Callable[[], None] | None = None
        self.waiting: set[ClientConnection] = set()
        self.waking = False
        self.wake_timeout = 120.0
        self.no_wake_until = 0.0  # after a failed start, answer 503 at once for a while
        self.no_version: Refusal = (
            503,
            f"deployment {name!r} has no serving version",
            "Deploy a version of it, or roll back to a previous one, then retry.",
        )

    # -- the decision ---------------------------------------------------------------

    def decide(self, req: Request) -> Decision:
        decision = self.decision
        pinned = None
        router = self.router
        if router is not None and req.url.startswith(_ROUTED):
            try:
                route = router(req.method, req.url, req.body)
                if isinstance(route, tuple):
                    upstream, path = route
                    pinned = self._pinned(upstream)
                    rest = req.head[len(req.method) + 1 + len(req.url):]
                    req.head = req.method + b" " + path + rest
            except Exception as exc:  # noqa: BLE001 - a router bug: 500, the connection lives on
                decision.action = REFUSE
                decision.refusal = (500, *self.router_failed(req, exc))
                return decision
            if isinstance(route, LocalAnswer):
                decision.action = ANSWER
                decision.answer = route
                return decision
            if route is not None and pinned is None:  # a coroutine: answered when it finishes
                decision.action = AWAIT
                decision.answer = route
                return decision
        pool = pinned or self.live
        if pool is None:
            if self.waker is not None and self.loop.time() >= self.no_wake_until:
                decision.action = HOLD
            else:
                decision.action = REFUSE
                decision.refusal = self.no_version
            return decision
        canary = self.canary
        if canary is not None and pinned is None:
            key = req.client_key
            cut = zlib.crc32(key) % 10_000 if key is not None else random.random() * 10_000
            if cut < self.canary_cut:
                pool = canary
        if self.sampler is not None and self.sampler():
            req.sampled = True
            req.response = []
        elif self.shadow.pool is not None:
            req.response = []  # the live answer is compared with the shadow's
        decision.action = FORWARD
        decision.pool = pool
        return decision

    def _pinned(self, upstream: Upstream) -> UpstreamPool:
        """The one pool of ``upstream`` (the live, canary or shadow one if it is that), so
        in-flight counts and drains see every request sent to it."""
        for pool in (self.live, self.canary, self.shadow.pool):
            if pool is not None and pool.upstream == upstream:
                return pool
        return self.pools.of(upstream)

    def router_failed(self, req: Request, exc: BaseException) -> tuple[str, str]:
        """A bug in the router: logged in one line (at most once a minute), answered 500."""
        self.router_failures += 1
        path = req.url.partition(b"?")[0][:200].decode("latin-1")
        now = time.monotonic()
        if now - self.router_logged_at >= 60.0:
            self.router_logged_at = now
            log.error("endpoint %r: answering %s %s failed: %s: %.200s (%d failure(s) so far)",
                      self.name, req.method.decode("latin-1"), path, type(exc).__name__, exc,
                      self.router_failures)
        return (f"the endpoint failed to answer {path}: {type(exc).__name__}",
                "This is a bug in nbserve; the agent's log has the details. "
                "Other paths still work.")

    # -- canary ------------------------------------------------------------------------

    def set_canary(self, pool: UpstreamPool | None, percent: float,
                   sticky_header: str | None) -> None:
        if pool is None:
            self.canary = None
            self.canary_cut = 0.0
            self.sticky_header = None
            return
        self.sticky_header = sticky_header.lower().encode("latin-1") if sticky_header else None
        self.canary_cut = max(0.0, min(100.0, percent)) * 100
        self.canary = pool

    # -- hold for wake -------------------------------------------------------------------

    def hold(self, client: ClientConnection) -> None:
        """``client`` waits (a HOLD decision); the first one held calls the waker."""
        self.waiting.add(client)
        if not self.waking and self.waker is not None:
            self.waking = True
            self.waker()

    def set_live(self, pool: UpstreamPool | None) -> None:
        self.live = pool
        if pool is not None and self.waiting:  # a scaled-to-zero deployment is back: let them go
            self.waking = False
            waiting, self.waiting = self.waiting, set()
            for client in waiting:
                client.resume_held()

    def wake_failed(self, error: str, hint: str, retry_after: float) -> None:
        self.waking = False
        self.no_wake_until = self.loop.time() + retry_after if self.loop is not None else 0.0
        waiting, self.waiting = self.waiting, set()
        for client in waiting:
            if not client.closed:
                client.release_held(error, hint)
