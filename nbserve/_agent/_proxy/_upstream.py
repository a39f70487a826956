"""The upstream side: keep-alive connections to the model servers, pooled per upstream.

A pool takes an idle connection (newest first) or opens one, counts the requests in flight to
its upstream (what drain() waits on), renews connections older than ``pool_max_age`` and, when
a connection is lost before any response byte, sends the request once more on a fresh one.
The client side is reached only through the methods ClientConnection names for it
(``attach``, ``response_done``, ``upstream_lost``, ``upstream_failed``, ...).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools

from ._types import Upstream, with_prefix

if TYPE_CHECKING:
    from ._http._connection import ClientConnection
    from ._http._request import Request

_MAX_IDLE_PER_UPSTREAM = 128
_MAX_RESPONSE_HEAD = 1 << 20  # bytes of response head buffered before giving up on the upstream
_SMALL_BODY = 16 * 1024  # below this, head and body are joined into one write
_MAX_CAPTURE_PARTS = 64  # response chunks kept for a sampled request (bounded memory)


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an upstream; carries one exchange at a time.

    The response parser is fed every byte only to learn the status and where
    the message ends; the bytes themselves go to the client untouched, except
    for the x-nbserve-version header spliced in after the status line.
    """

    __slots__ = (
        "capture",
        "client",
        "closed",
        "complete",
        "final",
        "head_sent",
        "idle_since",
        "opened_at",
        "interim",
        "is_head",
        "keep_alive",
        "parser",
        "pending",
        "pool",
        "reading_paused",
        "received",
        "req",
        "reused",
        "status",
        "transport",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.client: ClientConnection | None = None
        self.reused = False  # served a response before: a failure before any byte means "stale"
        self.closed = False
        self.idle_since = 0.0
        self.opened_at = pool.owner.loop.time()
        self.reading_paused = False
        self.is_head = False
        self.status = 0
        self.final = False  # the final (non-1xx) response head has been parsed
        self.complete = False
        self.keep_alive = True
        self.interim = 0  # 1xx responses seen before the final one
        self.head_sent = False  # bytes of this response have reached the client
        # Response head bytes held back until the head is complete.
        self.pending: list[bytes] | None = None
        self.received = False
        self.capture: list[bytes] | None = None  # where the response body goes, when sampled
        self.req: Request | None = None

    # -- exchange ------------------------------------------------------------

    def begin(self, client: ClientConnection, req: Request) -> None:
        self.client = client
        self.is_head = req.is_head
        self.status = 0
        self.final = self.complete = self.head_sent = self.received = False
        self.keep_alive = True
        self.interim = 0
        self.pending = None
        self.capture = req.response
        self.req = req
        if client.flow.write_paused:
            self.pause_reading()
        body = req.body
        head = req.head if not self.pool.upstream.prefix else with_prefix(req.head, self.pool.upstream.prefix)
        if not body:
            self.transport.write(head)
        elif len(body) < _SMALL_BODY:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))

    def pause_reading(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection mid-exchange; it can never be reused."""
        self.client = None
        self.req = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def discard(self) -> None:
        """Close a connection nobody will use (not pooled)."""
        self.closed = True
        self.transport.close()

    # -- httptools callbacks ---------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        # The rows the server answered, so the monitor need not parse the request body to
        # count them (json.loads of a large body cost more than the proxying itself).
        if name == b"x-nbserve-rows" and self.req is not None and value.isdigit():
            self.req.rows = int(value)

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim += 1  # e.g. 103 Early Hints: forwarded, but the final response follows
            return
        self.status = status
        self.final = True
        if self.is_head:
            # llhttp cannot be told the request was HEAD and would wait for a
            # body; the message ends here (the parser is replaced on release).
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        capture = self.capture
        if capture is not None and self.final and len(capture) < _MAX_CAPTURE_PARTS:
            capture.append(body)

    def on_message_complete(self) -> None:
        if self.final and not self.complete:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()

    # -- asyncio callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pool.conns.add(self)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            # Bytes on an idle connection: it is out of step with us, discard it.
            self.discard()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            # Malformed, or a 101 we never asked for (Upgrade is not forwarded).
            self.abort()
            client.upstream_failed(self, f"sent an invalid HTTP response ({exc!r})")
            return
        if self.head_sent:
            client.transport.write(data)
        elif self.final:
            self._send_head(client, data)
        else:
            pending = self.pending
            if pending is None:
                pending = self.pending = []
            pending.append(data)
            if sum(map(len, pending)) > _MAX_RESPONSE_HEAD:
                self.abort()
                client.upstream_failed(self, "sent an oversized response head")
                return
        if self.complete:
            client.response_done(self)
        else:
            client.upstream_progress()

    def _send_head(self, client: ClientConnection, data: bytes) -> None:
        """Forward the first response bytes; x-nbserve-version goes after the final status line."""
        buf = data if self.pending is None else b"".join(self.pending) + data
        self.pending = None
        self.head_sent = True
        pos = 0
        for _ in range(self.interim):  # skip 1xx heads, each ends with an empty line
            pos = buf.find(b"\r\n\r\n", pos) + 4
        eol = buf.find(b"\n", pos) + 1
        if pos < 4 * self.interim or eol == 0:  # not CRLF-framed as expected: forward unchanged
            client.transport.write(buf)
            return
        view = memoryview(buf)  # slices without copying the body that follows the head
        rid = self.req.rid
        extra = (b"x-request-id: " + rid + b"\r\n") if rid else b""
        client.transport.writelines((view[:eol], self.pool.version_header, extra, view[eol:]))

    def pause_writing(self) -> None:
        # The upstream is not reading the request fast enough: stop reading the client.
        client = self.client
        if client is not None:
            client.pause_for_upstream(True)

    def resume_writing(self) -> None:
        client = self.client
        if client is not None:
            client.pause_for_upstream(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        client = self.client
        if client is None:
            return
        self.client = None
        req = self.req
        if not self.received and not req.retried:
            # No response byte came back: a pooled connection the upstream had closed while
            # idle (keep-alive expiry, restart), or a worker that died with the request. A
            # prediction is safe to send again: retry once on a fresh connection, which another
            # worker takes; with none left the kernel holds it until one is up, so the wait
            # is bounded by retry_wait (then 503 with Retry-After).
            req.retried = True
            client.retrying()
            self.pool.open_for(client, req)
            return
        client.upstream_lost(self)


class UpstreamPool:
    """Idle keep-alive connections to one upstream, plus its in-flight count."""

    __slots__ = (
        "conns",
        "idle",
        "inflight",
        "owner",
        "retired",
        "upstream",
        "version_header",
        "waiters",
    )

    def __init__(self, owner: UpstreamPools, upstream: Upstream) -> None:
        self.owner = owner
        self.upstream = upstream
        self.version_header = b"x-nbserve-version: " + upstream.label.encode("latin-1") + b"\r\n"
        # LIFO: the most recently used connection is the least likely to be stale.
        self.idle: list[UpstreamConnection] = []
        self.conns: set[UpstreamConnection] = set()
        self.inflight = 0
        self.retired = False  # close_idle() was called: stop pooling, the upstream is going away
        self.waiters: list[asyncio.Future[None]] = []  # drain() calls

    # -- exchanges -------------------------------------------------------------

    def exchange_started(self) -> None:
        self.inflight += 1
        self.owner.inflight += 1

    def exchange_done(self) -> None:
        self.owner.inflight -= 1
        self.inflight -= 1
        if self.inflight == 0 and self.waiters:
            waiters, self.waiters = self.waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def take_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed and not conn.transport.is_closing():
                return conn
        return None

    def open_for(self, client: ClientConnection, req: Request) -> None:
        """Open a connection for ``req`` and send it there (one task; off the keep-alive path)."""
        task = self.owner.loop.create_task(self._open_and_send(client, req))
        tasks = self.owner.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _open_and_send(self, client: ClientConnection, req: Request) -> None:
        try:
            conn = await self.connect()
        except OSError as exc:
            client.upstream_refused(req, self, exc)
            return
        if not client.attach(conn, req):
            conn.discard()  # the request went away (timeout, client left) and so may the pool

    async def connect(self) -> UpstreamConnection:
        up = self.upstream
        _, conn = await self.owner.loop.create_connection(
            lambda: UpstreamConnection(self), up.host, up.port
        )
        return conn  # type: ignore[return-value]

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        conn.client = None
        conn.req = None
        now = self.owner.loop.time()
        if (
            not reusable
            or conn.closed
            or self.retired
            or len(self.idle) >= _MAX_IDLE_PER_UPSTREAM
            or now - conn.opened_at > self.owner.max_age
            or conn.transport.is_closing()
        ):
            conn.discard()
            return
        if conn.is_head:
            # The old parser is still waiting for the "body" of a HEAD response.
            conn.parser = httptools.HttpResponseParser(conn)
        conn.resume_reading()
        conn.reused = True
        conn.idle_since = now
        self.idle.append(conn)

    # -- upkeep ------------------------------------------------------------------

    def forget(self, conn: UpstreamConnection) -> None:
        self.conns.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.discard()

    def expire_idle(self, before: float) -> None:
        idle = self.idle
        n = 0
        while n < len(idle) and idle[n].idle_since < before:  # oldest first
            n += 1
        if n:
            expired, self.idle = idle[:n], idle[n:]
            for conn in expired:
                conn.discard()


class UpstreamPools:
    """One endpoint's pools, one per upstream, and its total of requests in flight."""

    __slots__ = ("by_upstream", "idle_timeout", "inflight", "loop", "max_age", "tasks")

    def __init__(self, idle_timeout: float, max_age: float, tasks: set[asyncio.Task[None]]) -> None:
        self.by_upstream: dict[Upstream, UpstreamPool] = {}
        self.idle_timeout = idle_timeout  # pool_idle_timeout
        self.max_age = max_age  # pool_max_age: renewal, so late or restarted workers get a share
        self.tasks = tasks  # the endpoint's: cancelled when it closes
        self.inflight = 0
        self.loop: asyncio.AbstractEventLoop | None = None  # set when the endpoint starts

    def get(self, upstream: Upstream) -> UpstreamPool | None:
        return self.by_upstream.get(upstream)

    def of(self, upstream: Upstream) -> UpstreamPool:
        """The pool of ``upstream``, made on first use."""
        pool = self.by_upstream.get(upstream)
        if pool is None:
            pool = self.by_upstream[upstream] = UpstreamPool(self, upstream)
        return pool

    def take(self, upstream: Upstream) -> UpstreamPool:
        """The pool of an upstream that is (again) to get traffic: live, canary or shadow."""
        pool = self.of(upstream)
        pool.retired = False
        return pool

    def sweep(self, now: float, live: UpstreamPool | None) -> None:
        """Close connections idle past pool_idle_timeout; forget pools nothing uses."""
        expire_before = now - self.idle_timeout
        for upstream, pool in list(self.by_upstream.items()):
            pool.expire_idle(expire_before)
            if pool is not live and not pool.conns and not pool.inflight and not pool.waiters:
                del self.by_upstream[upstream]

    def close(self) -> None:
        """Close every connection (busy ones too) and pool no more."""
        for pool in self.by_upstream.values():
            pool.retired = True
            pool.close_idle()
            for conn in list(pool.conns):
                conn.transport.close()
