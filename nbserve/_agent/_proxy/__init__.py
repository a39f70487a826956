"""Stable endpoints: the HTTP/1.1 reverse proxy behind nbserve's stable URLs.

The agent owns one :class:`StableEndpoint` per deployment: a TCP listener on
loopback whose requests are forwarded to the deployment's *current upstream*
(a ``bentoml serve`` process on another loopback port).  Going live with a new
version or rolling back is :meth:`StableEndpoint.set_upstream`, an atomic
switch: requests already in flight finish on the old upstream (which the agent
keeps alive until :meth:`StableEndpoint.drain` says it is idle), new ones go to
the new upstream, and none is dropped.

Why it is hand-written on raw ``asyncio.Protocol`` + ``httptools`` rather than
httpx/aiohttp/Starlette: the proxy sits on the data path of every request, on
machines with two cores where the model server already needs ~3 ms of CPU per
request.  To stay within 15 % of direct throughput and add < 1 ms p50, the
proxy must cost well under 300 us of CPU per request; a general-purpose
client + server stack costs several times that.  Here the fast path of a
keep-alive request is: one C parse of the request, one ``write`` to a pooled
upstream connection, one C parse of the response (used only to find its
status and its end) and one ``writelines`` back, with no task, future or
timer created per request.  Timeouts are enforced by one periodic sweep per
endpoint instead of per-request timers.

Request bodies are buffered (bounded by ``max_body_bytes``; traffic sampling
and mirroring need them, and it lets a stale pooled connection be retried);
response bodies are streamed as they arrive, with flow control both ways.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools

from ._config import HEADER_TIMEOUT, MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_HEADER_BYTES, MAX_HEADERS, \
    MAX_REQUEST_LINE
from ._shadow import ShadowMirror
from ._types import LocalAnswer, RequestRecord, Router, ShadowResult, Upstream

__all__ = ["LocalAnswer", "RequestRecord", "Router", "ShadowResult", "StableEndpoint", "Upstream"]

log = logging.getLogger(__name__)

_now_ns = time.perf_counter_ns

# Hop-by-hop headers (RFC 9110 7.6.1) are never forwarded.  content-length is
# recomputed (bodies are de-chunked), expect is answered by the proxy itself,
# x-forwarded-for is re-emitted with the client address appended.  host and
# x-forwarded-host are forwarded but noted, to derive x-forwarded-host.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOTED = _HOP_BY_HOP | {
    b"content-length",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"host",
}

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    422: "Unprocessable Content",
    401: "Unauthorized",
    403: "Forbidden",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    499: "Client Closed Request",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# The nbserve error a local answer stands for (nbserve.errors), for clients that map them.
_ERROR_TYPES = {401: "AuthenticationFailed", 403: "PermissionDenied", 413: "PayloadTooLarge"}
# Paths the router looks at (per-version URLs and what the endpoint answers itself); any
# other path goes straight to the live version without a call.
_ROUTED = (b"/v/", b"/metadata", b"/schema", b"/feedback")
_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b""})  # other tokens name headers
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"



_MAX_PIPELINE = 16  # queued requests per client before we stop reading from it
_MAX_IDLE_PER_UPSTREAM = 128
_MAX_RESPONSE_HEAD = 1 << 20  # bytes of response head buffered before giving up on the upstream
_SMALL_BODY = 16 * 1024  # below this, head and body are joined into one write
_MAX_CAPTURE_PARTS = 64  # response chunks kept for a sampled request (bounded memory)


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head over a limit (414 or 431)."""

    def __init__(self, status: int, error: str, hint: str) -> None:
        super().__init__(error)
        self.answer = (status, error, hint)


class _Discard:
    """Stands in for the parser after a refused head: what the client still sends is dropped."""

    __slots__ = ()

    def feed_data(self, data: bytes) -> None:
        pass


_DISCARD = _Discard()


class _Request:
    """A request as parsed from the client: parse state, then what we forward."""

    __slots__ = (
        "authz",
        "rid",
        "body",
        "body_len",
        "body_parts",
        "clen",
        "client_key",
        "drop",
        "error",
        "expect",
        "framed",
        "has_xfh",
        "hdrs",
        "head",
        "head_done",
        "head_len",
        "head_raw",
        "host",
        "is_head",
        "keep_alive",
        "method",
        "nhdrs",
        "responded",
        "response",
        "rows",
        "sampled",
        "started_ns",
        "url",
        "xff",
    )

    def __init__(self) -> None:
        self.started_ns = _now_ns()
        self.url = b""
        self.method = b""
        self.hdrs: list[bytes] = []  # forwarded header lines, flattened: name, ": ", value, "\r\n"
        self.nhdrs = 0
        self.head_len = 0  # bytes of the target and headers parsed so far
        self.head_raw = 0  # bytes received while the head was incomplete (what httptools buffers)
        self.host: bytes | None = None
        self.xff: bytes | None = None
        self.has_xfh = False
        self.clen: bytes | None = None
        self.framed = False  # the client sent content-length or transfer-encoding
        self.expect = False
        self.drop: set[bytes] | None = None  # extra hop-by-hop headers named in Connection
        self.body_parts: list[bytes] = []
        self.body_len = 0
        self.head_done = False
        self.keep_alive = True
        self.is_head = False
        self.head = b""
        self.body = b""
        self.error: tuple[int, str, str] | None = None
        self.responded = False
        self.response: list[bytes] | None = None  # response body parts, when sampled or shadowed
        self.sampled = False  # the sampler picked it: its response goes to the observer
        self.rows = -1  # what the model server's x-nbserve-rows said; -1 until it says
        self.client_key: bytes | None = None  # the sticky-canary header's value, if configured
        self.authz: bytes | None = None  # the Authorization header, when the endpoint checks tokens
        self.rid: bytes | None = None  # the request id: the client's X-Request-Id, else one we make


class _UpstreamConnection(asyncio.Protocol):
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

    def __init__(self, pool: _UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.client: _ClientConnection | None = None
        self.reused = False  # served a response before: a failure before any byte means "stale"
        self.closed = False
        self.idle_since = 0.0
        self.opened_at = pool.ep._loop.time()
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
        self.req: _Request | None = None

    # -- exchange ------------------------------------------------------------

    def begin(self, client: _ClientConnection, req: _Request) -> None:
        self.client = client
        self.is_head = req.is_head
        self.status = 0
        self.final = self.complete = self.head_sent = self.received = False
        self.keep_alive = True
        self.interim = 0
        self.pending = None
        self.capture = req.response
        self.req = req
        if client._write_paused:
            self.pause_reading()
        body = req.body
        if not body:
            self.transport.write(req.head)
        elif len(body) < _SMALL_BODY:
            self.transport.write(req.head + body)
        else:
            self.transport.writelines((req.head, body))

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
            self.closed = True
            self.transport.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            # Malformed, or a 101 we never asked for (Upgrade is not forwarded).
            self.abort()
            client._upstream_failed(self, f"sent an invalid HTTP response ({exc!r})")
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
                client._upstream_failed(self, "sent an oversized response head")
                return
        if self.complete:
            client._response_done(self)
        elif not client._write_paused:
            client._deadline = client._loop.time() + client._ep._upstream_timeout

    def _send_head(self, client: _ClientConnection, data: bytes) -> None:
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
        rid = client._req.rid if client._req is not None else None
        extra = (b"x-request-id: " + rid + b"\r\n") if rid else b""
        client.transport.writelines((view[:eol], self.pool.version_header, extra, view[eol:]))

    def pause_writing(self) -> None:
        # The upstream is not reading the request fast enough: stop reading the client.
        client = self.client
        if client is not None:
            client._set_reading_paused_by_upstream(True)

    def resume_writing(self) -> None:
        client = self.client
        if client is not None:
            client._set_reading_paused_by_upstream(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        client = self.client
        if client is not None:
            self.client = None
            client._upstream_lost(self)


class _UpstreamPool:
    """Idle keep-alive connections to one upstream, plus its in-flight count."""

    __slots__ = (
        "conns",
        "ep",
        "idle",
        "inflight",
        "retired",
        "upstream",
        "version_header",
        "waiters",
    )

    def __init__(self, ep: StableEndpoint, upstream: Upstream) -> None:
        self.ep = ep
        self.upstream = upstream
        self.version_header = b"x-nbserve-version: " + upstream.label.encode("latin-1") + b"\r\n"
        # LIFO: the most recently used connection is the least likely to be stale.
        self.idle: list[_UpstreamConnection] = []
        self.conns: set[_UpstreamConnection] = set()
        self.inflight = 0
        self.retired = False  # close_idle() was called: stop pooling, the upstream is going away
        self.waiters: list[asyncio.Future[None]] = []  # drain() calls

    def take_idle(self) -> _UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed and not conn.transport.is_closing():
                return conn
        return None

    async def connect(self) -> _UpstreamConnection:
        up = self.upstream
        _, conn = await asyncio.get_running_loop().create_connection(
            lambda: _UpstreamConnection(self), up.host, up.port
        )
        return conn  # type: ignore[return-value]

    def release(self, conn: _UpstreamConnection, reusable: bool) -> None:
        conn.client = None
        conn.req = None
        now = self.ep._loop.time()
        if (
            not reusable
            or conn.closed
            or self.retired
            or len(self.idle) >= _MAX_IDLE_PER_UPSTREAM
            or now - conn.opened_at > self.ep._pool_max_age
            or conn.transport.is_closing()
        ):
            conn.closed = True
            conn.transport.close()
            return
        if conn.is_head:
            # The old parser is still waiting for the "body" of a HEAD response.
            conn.parser = httptools.HttpResponseParser(conn)
        conn.resume_reading()
        conn.reused = True
        conn.idle_since = now
        self.idle.append(conn)

    def forget(self, conn: _UpstreamConnection) -> None:
        self.conns.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.closed = True
            conn.transport.close()

    def expire_idle(self, before: float) -> None:
        idle = self.idle
        n = 0
        while n < len(idle) and idle[n].idle_since < before:  # oldest first
            n += 1
        if n:
            expired, self.idle = idle[:n], idle[n:]
            for conn in expired:
                conn.closed = True
                conn.transport.close()


class _ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, forwards them in order, relays responses."""

    __slots__ = (
        "_busy",
        "_closed",
        "_closing",
        "_conn",
        "_cur",
        "_deadline",
        "_ep",
        "_head_armed",
        "_held",
        "_linger",
        "_local",
        "_loop",
        "_parser",
        "_paused_queue",
        "_paused_upstream",
        "_peer",
        "_pool",
        "_queue",
        "_reading",
        "_req",
        "_retried",
        "_write_paused",
        "_xff_line",
        "transport",
    )

    def __init__(self, ep: StableEndpoint) -> None:
        self._ep = ep
        self._loop = ep._loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._xff_line = b""
        self._peer = b""
        self._cur: _Request | None = None  # request being parsed
        self._head_armed = False  # the partial-request deadline is running for _cur's head
        # Parsed requests waiting for the exchange ahead of them (pipelining).
        self._queue: deque[_Request] = deque()
        self._busy = False  # an exchange is in progress
        self._req: _Request | None = None
        self._pool: _UpstreamPool | None = None
        self._conn: _UpstreamConnection | None = None
        self._retried = False
        self._deadline = 0.0  # loop.time() after which the sweep acts; 0 = none
        self._closing = False  # no further requests will be parsed
        self._closed = False
        self._linger = False  # answered 413 early; reading the rest of the body before closing
        self._local: asyncio.Task[Any] | None = None  # a local route's coroutine being awaited
        self._held = False  # waiting for a scaled-to-zero deployment to start
        self._write_paused = False
        self._paused_queue = False
        self._paused_upstream = False
        self._reading = True

    # -- asyncio callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._peer = str(peer[0]).encode("latin-1")
            self._xff_line = b"x-forwarded-for: " + self._peer + b"\r\n"
        self._ep._clients.add(self)
        self._deadline = self._loop.time() + self._ep._idle_timeout

    def data_received(self, data: bytes) -> None:
        if self._closing and not self._linger:
            return  # after Connection: close, a parse error, an upgrade, a refused head: ignored
        cur = self._cur
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request is complete and queued; we do not tunnel upgrades
            # (the Upgrade header is not forwarded), so answer it and close.
            if self._queue:
                self._queue[-1].keep_alive = False
            self._stop_parsing()
        except httptools.HttpParserError as exc:
            req = self._cur
            self._cur = None
            if isinstance(exc.__context__, _HeadRefused) and req is not None:
                self._refuse_head(req, exc.__context__.answer)
            else:
                self._stop_parsing()
                if self._linger or (req is not None and req.error is not None):
                    self._linger = False  # garbage while dropping a rejected body: it has its answer
                    if req is not None and req.responded:
                        self._close()
                    return
                req = req or _Request()
                req.keep_alive = False
                req.error = (400, f"malformed HTTP request: {exc}", "Send a valid HTTP/1.1 request.")
                self._queue.append(req)
        else:
            if cur is not None and cur is self._cur and not cur.head_done:
                # All of it belongs to a head still arriving, part of which httptools holds
                # (a header is handed over only when its line ends): bound that too.
                cur.head_raw += len(data)
                if cur.head_raw > self._ep._max_head_bytes:
                    self._cur = None
                    self._refuse_head(cur, self._ep._head_too_large())
        if self._busy:
            if len(self._queue) >= _MAX_PIPELINE and not self._paused_queue:
                self._paused_queue = True
                self._update_reading()
        elif self._queue:
            self._next()
        elif self._cur is not None and not self._linger:
            self._arm_read_deadline()

    def pause_writing(self) -> None:
        # The client reads slower than the upstream sends: stop reading the upstream.
        self._write_paused = True
        if self._conn is not None:
            self._conn.pause_reading()
        if self._busy:
            self._deadline = self._loop.time() + self._ep._idle_timeout  # slow-client limit

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._conn is not None:
            self._conn.resume_reading()
        if self._busy:
            self._deadline = self._loop.time() + self._ep._upstream_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._closing = True
        self._ep._clients.discard(self)
        self._queue.clear()
        if self._held:
            self._held = False
            self._ep._waiting.discard(self)
        if self._local is not None:  # a local route still working: nobody to answer
            self._local.cancel()
            self._local = None
            self._busy = False
        if self._busy:
            conn = self._conn
            if conn is not None:
                self._conn = None
                conn.abort()
            self._complete(499, None, close=True)

    # -- httptools callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        self._cur = _Request()
        self._head_armed = False

    def on_url(self, url: bytes) -> None:
        req = self._cur
        req.url += url  # called once per chunk of a long target: the check bounds what we keep
        req.head_len += len(url)
        if len(req.url) > self._ep._max_request_line:
            ep = self._ep
            raise _HeadRefused(
                414,
                f"request target exceeds {ep._max_request_line} bytes",
                "Send the data in the request body, not the URL "
                "(the agent's NBSERVE_PROXY_MAX_REQUEST_LINE sets the limit).",
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._cur
        ep = self._ep
        size = len(name) + len(value)
        count = req.nhdrs = req.nhdrs + 1
        total = req.head_len = req.head_len + size
        if size > ep._max_header_bytes or count > ep._max_headers or total > ep._max_head_bytes:
            raise _HeadRefused(*ep._header_refusal(req, name, size))
        lname = name.lower()
        if lname == ep._sticky_header:
            req.client_key = value
        if lname == b"x-request-id":
            req.rid = value[:128]  # forwarded as sent (below), echoed in the response
        if lname == b"authorization":
            # Checked here (when the endpoint wants a token), never forwarded: the model
            # server has no use for a credential and should not see one in its logs.
            req.authz = value
            return
        if lname in _NOTED:
            if lname == b"host":
                req.host = value
            elif lname == b"x-forwarded-host":
                req.has_xfh = True
            elif lname == b"x-forwarded-for":
                req.xff = value
                return
            elif lname == b"content-length":
                req.clen = value
                req.framed = True
                return
            elif lname == b"expect":
                req.expect = value.strip().lower() == b"100-continue"
                return
            else:
                if lname == b"transfer-encoding":
                    req.framed = True
                elif lname == b"connection":
                    tokens = {t.strip().lower() for t in value.split(b",")} - _CONNECTION_OPTIONS
                    if tokens:
                        req.drop = (req.drop or set()) | tokens
                return
        req.hdrs += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        req = self._cur
        parser = self._parser
        req.head_done = True
        req.method = parser.get_method()
        req.is_head = req.method == b"HEAD"
        req.keep_alive = parser.should_keep_alive()
        ep = self._ep
        if req.method == b"CONNECT":  # we tunnel nothing, and a model server has no use for it
            self._reject(req, (405, "CONNECT is not supported: a stable URL is not a forward proxy",
                               "Send the request itself (e.g. POST /predict) to the stable URL."))
            return
        if req.clen is not None:
            try:
                too_big = int(req.clen) > ep._max_body_bytes
            except ValueError:
                too_big = False  # llhttp has validated it already
            if too_big:
                self._reject_too_large(req)
                return
        if ep._auth is not None:
            denied = ep._auth(req.authz)
            if denied is not None:  # answered before the body is read: it is dropped unread
                self._reject(req, denied)
                return
        if req.expect and not self._busy and not self._queue:
            self.transport.write(_CONTINUE)  # we buffer the body, so we ask for it ourselves

    def on_body(self, body: bytes) -> None:
        req = self._cur
        if req.error is not None:
            return  # discarding the body of a rejected request
        req.body_len += len(body)
        if req.body_len > self._ep._max_body_bytes:
            self._reject_too_large(req)
            return
        req.body_parts.append(body)

    def on_message_complete(self) -> None:
        req = self._cur
        self._cur = None
        if req.error is not None:  # 413: already queued (or answered); close once it is answered
            self._stop_parsing()
            if req.responded:
                self._linger = False
                self._close()
            return
        parts = req.body_parts
        body = req.body = parts[0] if len(parts) == 1 else b"".join(parts)
        req.body_parts = []
        hdrs = req.hdrs
        if req.drop:
            hdrs = [
                x
                for i in range(0, len(hdrs), 4)
                if hdrs[i].lower() not in req.drop
                for x in hdrs[i : i + 4]
            ]
        head = [req.method, b" ", req.url, b" HTTP/1.1\r\n", *hdrs]
        if req.xff is None:
            head.append(self._xff_line)
        else:
            head += (b"x-forwarded-for: ", req.xff, b", ", self._peer, b"\r\n")
        if req.host is not None and not req.has_xfh:
            head += (b"x-forwarded-host: ", req.host, b"\r\n")
        if req.rid is None:
            ep = self._ep
            ep._rid_counter += 1
            req.rid = b"%s%x" % (ep._rid_prefix, ep._rid_counter)
            head += (b"x-request-id: ", req.rid, b"\r\n")
        if body or req.framed:
            head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"\r\n")
        req.head = b"".join(head)
        if not req.keep_alive:
            self._stop_parsing()  # Connection: close: nothing after this request is read
        self._queue.append(req)

    # -- request dispatch ------------------------------------------------------------

    def _next(self) -> None:
        """Start the next queued request, answering locally-failed ones on the way."""
        queue = self._queue
        ep = self._ep
        while queue and not self._busy and not self._closed and not self._linger:
            req = queue.popleft()
            if req.error is not None:
                self._respond_error(req, *req.error)
                continue
            pinned = None
            if ep._router is not None and req.url.startswith(_ROUTED):
                try:
                    route = ep._router(req.method, req.url, req.body)
                    if isinstance(route, tuple):
                        upstream, path = route
                        pinned = ep._pool_for(upstream)
                        req.head = req.method + b" " + path + req.head[len(req.method) + 1 + len(req.url):]
                except Exception as exc:  # noqa: BLE001 - a router bug: 500, the connection lives on
                    self._respond_error(req, 500, *ep._router_failed(req, exc))
                    continue
                if isinstance(route, LocalAnswer):
                    self._respond_local(req, route)
                    continue
                if route is not None and pinned is None:  # a coroutine: answered when it finishes
                    self._await_local(req, route)
                    continue
            pool = pinned or ep._pool
            if pool is None and ep._waker is not None and self._loop.time() >= ep._no_wake_until:
                # Scaled to zero: hold the request (and this connection's queue) until the
                # version is started again; set_upstream() resumes us, wake_failed() answers.
                queue.appendleft(req)
                self._held = True
                self._deadline = self._loop.time() + ep._wake_timeout
                ep._hold(self)
                return
            if pool is None:
                self._respond_error(
                    req,
                    503,
                    f"deployment {ep.name!r} has no serving version",
                    "Deploy a version of it, or roll back to a previous one, then retry.",
                )
                continue
            canary = ep._canary
            if canary is not None and pinned is None:
                key = req.client_key
                if (zlib.crc32(key) % 10_000 if key is not None else random.random() * 10_000) < ep._canary_cut:
                    pool = canary
            if ep._sampler is not None and ep._sampler():
                req.sampled = True
                req.response = []
            elif ep._shadow is not None:
                req.response = []  # the live answer is compared with the shadow's
            self._busy = True
            self._req = req
            self._pool = pool
            self._retried = False
            pool.inflight += 1
            ep._inflight += 1
            ep.last_request = now = self._loop.time()
            self._deadline = now + ep._upstream_timeout
            conn = pool.take_idle()
            if conn is not None:
                self._conn = conn
                conn.begin(self, req)
            else:
                self._connect()
        if self._busy or self._closed:
            return
        if self._paused_queue:
            self._paused_queue = False
            self._update_reading()
        if self._linger:
            return
        if self._cur is not None:
            self._head_armed = False
            self._arm_read_deadline()
        else:
            self._deadline = self._loop.time() + ep._idle_timeout

    def _release_held(self, error: str, hint: str) -> None:
        """Answer the held request with a 503 (waking failed or took too long); go on."""
        self._held = False
        if self._queue:
            self._respond_error(self._queue.popleft(), 503, error, hint)
        if not self._closed:
            self._next()

    def _connect(self) -> None:
        task = self._loop.create_task(self._connect_and_send(self._req, self._pool))
        tasks = self._ep._tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _connect_and_send(self, req: _Request, pool: _UpstreamPool) -> None:
        try:
            conn = await pool.connect()
        except OSError as exc:
            if self._req is req:
                up = pool.upstream
                self._fail(
                    502,
                    f"upstream version {up.label} of {self._ep.name!r} at {up.host}:{up.port} "
                    f"refused the connection ({exc.strerror or exc})",
                    "Its serving process may have exited or still be starting: check its logs, "
                    "or roll back to a version that is running.",
                )
            return
        if self._req is not req or self._closed:
            conn.closed = True  # the request went away (timeout, client left) and so may the pool
            conn.transport.close()
            return
        self._conn = conn
        conn.begin(self, req)

    def _response_done(self, conn: _UpstreamConnection) -> None:
        self._conn = None
        pool = self._pool
        # A non-keep-alive response was framed by EOF or said Connection: close
        # to the client, which then expects us to close too (HEAD is framed by its head).
        close = not conn.keep_alive and not conn.is_head
        pool.release(conn, conn.keep_alive)
        self._complete(conn.status, pool.upstream.label, close)

    def _upstream_lost(self, conn: _UpstreamConnection) -> None:
        """The upstream connection closed before its response was complete."""
        self._conn = None
        if not conn.received and not self._retried:
            # No response byte came back: a pooled connection the upstream had closed while
            # idle (keep-alive expiry, restart), or a worker that died with the request. A
            # prediction is safe to send again: retry once on a fresh connection, which another
            # worker takes; with none left the kernel holds it until one is up, so the wait
            # is bounded by retry_wait (then 503 with Retry-After).
            self._retried = True
            self._deadline = min(self._deadline, self._loop.time() + self._ep._retry_wait)
            self._connect()
            return
        if conn.head_sent:
            # Either an EOF-delimited body that has ended, or a truncated one;
            # the client can only learn where it ends from the close.
            self._complete(conn.status, self._pool.upstream.label, close=True)
            return
        self._upstream_failed(conn, "closed the connection without a complete response")

    def _upstream_failed(self, conn: _UpstreamConnection, what: str) -> None:
        self._conn = None
        if conn.head_sent:
            self._complete(conn.status, self._pool.upstream.label, close=True)
            return
        up = self._pool.upstream
        self._fail(
            502,
            f"upstream version {up.label} of {self._ep.name!r} at {up.host}:{up.port} {what}",
            "The model server may have crashed while handling the request: check its logs.",
        )

    def _fail(self, status: int, error: str, hint: str, *, retry_after: int | None = None) -> None:
        """The exchange failed before any response byte reached the client: answer with an error."""
        req = self._req
        self._write_error(req, status, error, hint, close=not req.keep_alive, retry_after=retry_after)
        self._complete(status, None, close=not req.keep_alive)

    def _timed_out(self) -> None:
        """Called by the endpoint's sweep when _deadline has passed."""
        if self._closed:
            return
        if self._held:
            self._ep._waiting.discard(self)
            self._release_held(f"deployment {self._ep.name!r} did not start within {self._ep._wake_timeout:g} s",
                               "It was scaled to zero and is still starting: retry shortly, or check its logs.")
            return
        if not self._busy:
            # Idle keep-alive, a request arriving too slowly, or the end of a 413 linger.
            self._closing = True
            self._linger = False
            self.transport.close()
            return
        if self._write_paused:
            self.transport.abort()  # a client that stopped reading its response
            return
        conn = self._conn
        self._conn = None
        if conn is not None:
            conn.abort()
        if conn is not None and conn.head_sent:
            self._complete(conn.status, self._pool.upstream.label, close=True)
            return
        up = self._pool.upstream
        if self._retried and self._ep._retry_wait < self._ep._upstream_timeout:
            self._fail(
                503,
                f"upstream version {up.label} of {self._ep.name!r} lost the request (its worker may have "
                f"died) and no worker took it again within {self._ep._retry_wait:g} s",
                "The model server is restarting a worker: retry after a moment; more workers "
                "(dep.scale(workers=2)) let the others answer meanwhile.",
                retry_after=1,
            )
            return
        self._fail(
            504,
            f"upstream version {up.label} of {self._ep.name!r} did not respond within "
            f"{self._ep._upstream_timeout:g} s",
            "The model may be overloaded or stuck: check its logs, or raise upstream_timeout.",
        )

    def _complete(self, status: int, label: str | None, close: bool) -> None:
        req = self._req
        pool = self._pool
        self._req = None
        self._pool = None
        self._busy = False
        ep = self._ep
        ep._exchange_done(pool)
        if status == 503 and label is not None:
            ep.refused[label] = ep.refused.get(label, 0) + 1
        if ep._observer is not None:
            ep._observe(req, label, status)
        if ep._shadow is not None and pool is ep._pool and req.response is not None and req.method == b"POST":
            ep._mirror.mirror(req, status)
        if self._closed:
            return
        if close or not req.keep_alive:
            self._close()
            return
        self._next()

    # -- local responses -------------------------------------------------------------

    def _respond_error(self, req: _Request, status: int, error: str, hint: str) -> None:
        """Answer a request that was never forwarded (503, 500, 400, 413, 414, 431)."""
        close = not req.keep_alive or status in (400, 413)
        self._write_error(req, status, error, hint, close)
        req.responded = True
        ep = self._ep
        if ep._observer is not None:
            ep._observe(req, None, status)
        if close:
            if req is self._cur:
                # 413 sent before the body ended: read (and drop) the rest
                # briefly so the client sees the answer rather than a reset.
                self._linger = True
                self._deadline = self._loop.time() + min(5.0, ep._header_timeout)
            elif self._parser is _DISCARD:
                self._drop_rest_and_close()
            else:
                self._close()

    def _await_local(self, req: _Request, coro: Any) -> None:
        self._busy = True
        self._deadline = 0.0  # the coroutine bounds itself; no upstream timeout applies
        task = self._local = self._loop.create_task(coro)
        self._ep._tasks.add(task)
        task.add_done_callback(lambda t: self._local_done(req, t))

    def _local_done(self, req: _Request, task: "asyncio.Task[Any]") -> None:
        self._ep._tasks.discard(task)
        if self._local is not task:
            return  # the client went away (connection_lost cancelled it)
        self._local = None
        self._busy = False
        if task.cancelled() or self._closed:
            return
        exc = task.exception()
        if exc is not None:
            self._respond_error(req, 500, *self._ep._router_failed(req, exc))
        else:
            self._respond_local(req, task.result())
        if not self._closed:
            self._next()

    def _respond_local(self, req: _Request, answer: LocalAnswer) -> None:
        """Answer a request the endpoint serves itself (metadata, schema, feedback)."""
        self._write(req, answer.status, answer.body, not req.keep_alive)
        req.responded = True
        ep = self._ep
        if ep._observer is not None:
            ep._observe(req, None, answer.status)
        if not req.keep_alive:
            self._close()

    def _write_error(self, req: _Request, status: int, error: str, hint: str, close: bool, *,
                     retry_after: int | None = None) -> None:
        payload = {"error": error, "hint": hint}
        if status in _ERROR_TYPES:
            payload["type"] = _ERROR_TYPES[status]
        self._write(req, status, json.dumps(payload).encode(), close, retry_after=retry_after)

    def _write(self, req: _Request, status: int, body: bytes, close: bool, *,
               retry_after: int | None = None) -> None:
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            + (f"retry-after: {retry_after}\r\n" if retry_after is not None else "")
            + (f"x-request-id: {req.rid.decode('latin-1')}\r\n" if req.rid else "")
            + ("connection: close\r\n" if close else "")
            + "\r\n"
        ).encode("latin-1")
        self.transport.write(head if req.is_head else head + body)

    def _reject_too_large(self, req: _Request) -> None:
        self._reject(req, (
            413,
            f"request body exceeds {self._ep._max_body_bytes} bytes",
            "Send a smaller payload, or raise the endpoint's max_body_bytes.",
        ))

    def _reject(self, req: _Request, error: tuple[int, str, str]) -> None:
        """Answer ``req`` with ``error`` once its turn comes, dropping its body, then close."""
        req.error = error
        req.keep_alive = False
        req.body_parts = []
        self._queue.append(req)

    def _refuse_head(self, req: _Request, error: tuple[int, str, str]) -> None:
        """A head over a limit (414/431): answered in its turn, then the connection closes;
        nothing more is parsed, and what the client still sends is dropped unread."""
        self._parser = _DISCARD
        self._closing = True
        req.url = req.url[:256]  # for the observer's record; the rest was never forwarded
        req.hdrs = []
        self._reject(req, error)

    def _drop_rest_and_close(self) -> None:
        # After a refused head the client may still be sending it: half-close (the answer is
        # complete), drop what arrives for a few seconds, then close, so the client reads the
        # answer instead of a reset for data we left unread.
        self._linger = True
        self._deadline = self._loop.time() + min(5.0, self._ep._header_timeout)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._update_reading()

    # -- connection state -------------------------------------------------------------

    def _arm_read_deadline(self) -> None:
        # A partial head must complete within header_timeout of its first
        # bytes (slowloris); a body only needs to keep making progress.
        if self._cur.head_done:
            self._deadline = self._loop.time() + self._ep._header_timeout
        elif not self._head_armed:
            self._head_armed = True
            self._deadline = self._loop.time() + self._ep._header_timeout

    def _stop_parsing(self) -> None:
        self._closing = True
        self._update_reading()

    def _close(self) -> None:
        self._closing = True
        self._linger = False
        if not self._closed:
            self.transport.close()  # flushes what is buffered first

    def _set_reading_paused_by_upstream(self, paused: bool) -> None:
        self._paused_upstream = paused
        self._update_reading()

    def _update_reading(self) -> None:
        want = not (
            self._paused_queue or self._paused_upstream or (self._closing and not self._linger)
        )
        if want != self._reading and not self._closed and not self.transport.is_closing():
            self._reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()


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
        self._observer = observer
        self._sampler = sampler
        self._canary: _UpstreamPool | None = None  # gets a share of new requests
        self._canary_cut = 0.0  # share of 10,000
        self._sticky_header: bytes | None = None
        # Checks a request's Authorization header: None lets it through, else (status, error, hint).
        self._auth: Callable[[bytes | None], tuple[int, str, str] | None] | None = None
        self._router: Router | None = None
        # Scale to zero: with no upstream, a waker starts the version and requests wait for it.
        self._waker: Callable[[], None] | None = None
        self._waiting: set[_ClientConnection] = set()
        self._waking = False
        self._wake_timeout = 120.0
        self._no_wake_until = 0.0  # after a failed start, answer 503 at once for a while
        self.last_request = 0.0  # loop.time() of the newest request: what idle time is measured from
        # 503s answered by a version's own server, by version label (a batching server sheds
        # load this way); the agent reads and resets it.
        self.refused: dict[str, int] = {}
        # Request ids: a per-endpoint random prefix and a counter (unique across agent restarts).
        self._rid_prefix = os.urandom(4).hex().encode() + b"-"
        self._rid_counter = 0
        self._max_body_bytes = max_body_bytes
        self._max_request_line = max_request_line
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._max_head_bytes = max_head_bytes
        self._router_failures = 0
        self._router_logged_at = float("-inf")
        self._upstream_timeout = upstream_timeout
        self._idle_timeout = idle_timeout
        self._header_timeout = header_timeout
        self._pool_idle_timeout = pool_idle_timeout
        self._pool_max_age = pool_max_age
        self._retry_wait = retry_wait
        self._pools: dict[Upstream, _UpstreamPool] = {}
        self._pool: _UpstreamPool | None = (
            None  # the current upstream's pool; one attribute, so switching is atomic
        )
        self._inflight = 0
        self._clients: set[_ClientConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._mirror = ShadowMirror(name, upstream_timeout, self._tasks)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._port: int | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_every = max(
            0.05,
            min(
                0.5,
                upstream_timeout / 4,
                idle_timeout / 4,
                header_timeout / 4,
                pool_idle_timeout / 4,
            ),
        )
        self._observer_failures = 0
        self._observer_logged_at = float("-inf")
        self.set_upstream(upstream)

    # -- public interface ----------------------------------------------------------------

    def set_monitoring(
        self, observer: Callable[[RequestRecord], None] | None, sampler: Callable[[], bool] | None
    ) -> None:
        """Who sees each finished request, and who picks the ones whose bodies are kept."""
        self._observer = observer
        self._sampler = sampler

    def set_waker(self, waker: Callable[[], None] | None, timeout: float = 120.0) -> None:
        """While no upstream is set, hold requests and call ``waker`` (once) to start one;
        ``None``: answer 503 instead (stopped deployments)."""
        self._waker = waker
        self._wake_timeout = timeout
        if waker is None and self._waiting:
            self.wake_failed("the deployment was stopped", "Start it, then retry.", retry_after=0.0)

    def _hold(self, client: "_ClientConnection") -> None:
        self._waiting.add(client)
        if not self._waking and self._waker is not None:
            self._waking = True
            self._waker()

    def held(self) -> int:
        """Connections waiting for the deployment to start."""
        return len(self._waiting)

    def wake_failed(self, error: str, hint: str, *, retry_after: float = 10.0) -> None:
        """Starting failed: answer every held request with a 503, and for ``retry_after``
        seconds answer new ones at once instead of starting again."""
        self._waking = False
        self._no_wake_until = self._loop.time() + retry_after if self._loop is not None else 0.0
        waiting, self._waiting = self._waiting, set()
        for client in waiting:
            if not client._closed:
                client._release_held(error, hint)

    def set_router(self, router: Router | None) -> None:
        """Who decides about per-version URLs (``/v/...``) and the endpoint's own routes."""
        self._router = router

    def _pool_for(self, upstream: Upstream) -> _UpstreamPool:
        """The one pool of ``upstream`` (the live, canary or shadow one if it is that), so
        in-flight counts and drains see every request sent to it."""
        for pool in (self._pool, self._canary, self._shadow):
            if pool is not None and pool.upstream == upstream:
                return pool
        pool = self._pools.get(upstream)
        if pool is None:
            pool = self._pools[upstream] = _UpstreamPool(self, upstream)
        return pool

    def set_auth(self, check: Callable[[bytes | None], tuple[int, str, str] | None] | None) -> None:
        """Require what ``check`` accepts in each request's Authorization header (None: open)."""
        self._auth = check

    def set_canary(self, upstream: Upstream | None, percent: float = 0.0, *,
                   sticky_header: str | None = None) -> None:
        """Send ``percent`` of new requests to ``upstream`` (None: none). With a sticky header,
        requests carrying it are routed by a hash of its value, so one client stays on one side."""
        if upstream is None:
            self._canary = None
            self._canary_cut = 0.0
            self._sticky_header = None
            return
        pool = self._pools.get(upstream)
        if pool is None:
            pool = self._pools[upstream] = _UpstreamPool(self, upstream)
        pool.retired = False
        self._sticky_header = sticky_header.lower().encode("latin-1") if sticky_header else None
        self._canary_cut = max(0.0, min(100.0, percent)) * 100
        self._canary = pool

    def set_shadow(self, upstream: Upstream | None, on_result: Callable[[ShadowResult], None] | None = None,
                   *, max_inflight: int = 8) -> None:
        """Mirror each live POST to ``upstream`` after it was answered; never returns its answers.
        At most ``max_inflight`` mirrors run at once: beyond that they are counted, not sent."""
        if upstream is None:
            self._mirror.set(None, None, max_inflight)
            return
        pool = self._pools.get(upstream)
        if pool is None:
            pool = self._pools[upstream] = _UpstreamPool(self, upstream)
        pool.retired = False
        self._mirror.set(pool, on_result, max_inflight)

    @property
    def _shadow(self) -> _UpstreamPool | None:
        return self._mirror.pool

    @property
    def shadow_dropped(self) -> int:
        """Mirrors not sent to the current shadow because max_inflight were running."""
        return self._mirror.dropped

    @property
    def canary(self) -> Upstream | None:
        pool = self._canary
        return None if pool is None else pool.upstream

    @property
    def shadow(self) -> Upstream | None:
        pool = self._shadow
        return None if pool is None else pool.upstream

    @property
    def upstream(self) -> Upstream | None:
        pool = self._pool
        return None if pool is None else pool.upstream

    def set_upstream(self, upstream: Upstream | None) -> None:
        """Send requests that start from now on to `upstream` (None: answer 503).

        In-flight requests finish where they are; keep the old upstream running
        until drain(old) returns, then close_idle(old) and stop it.
        """
        if upstream is None:
            self._pool = None
            return
        pool = self._pools.get(upstream)
        if pool is None:
            pool = self._pools[upstream] = _UpstreamPool(self, upstream)
        pool.retired = False
        self._pool = pool
        if self._waiting:  # a scaled-to-zero deployment is back: let the held requests go
            self._waking = False
            waiting, self._waiting = self._waiting, set()
            for client in waiting:
                client._held = False
                if not client._closed:
                    client._next()

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl: Any = None) -> int:
        """Listen on host:port (0 picks a free port), over TLS with an ``ssl.SSLContext``;
        returns the bound port."""
        if self._server is not None:
            raise RuntimeError(f"endpoint {self.name!r} already started")
        loop = self._loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ClientConnection(self), host, port, backlog=1024, ssl=ssl,
            ssl_handshake_timeout=self._header_timeout if ssl is not None else None,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)
        return self._port

    @property
    def port(self) -> int | None:
        return self._port

    def inflight(self, upstream: Upstream | None = None) -> int:
        """Requests being served now: in total, or forwarded to `upstream`."""
        if upstream is None:
            return self._inflight
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
        if pool is not self._pool:
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
        for client in list(self._clients):
            client._closing = True
            client.transport.close()
        for task in list(self._tasks):
            task.cancel()
        for pool in self._pools.values():
            pool.retired = True
            pool.close_idle()
            for conn in list(pool.conns):
                conn.transport.close()
        if server is not None:
            await server.wait_closed()
        # Let connection_lost callbacks run so in-flight counts settle.
        for _ in range(3):
            await asyncio.sleep(0)

    # -- internals ---------------------------------------------------------------------

    def _exchange_done(self, pool: _UpstreamPool) -> None:
        self._inflight -= 1
        pool.inflight -= 1
        if pool.inflight == 0 and pool.waiters:
            waiters, pool.waiters = pool.waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def _observe(self, req: _Request, label: str | None, status: int) -> None:
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
            self._observer(record)
        except Exception:
            # Never let metrics break serving; log at most once a minute.
            self._observer_failures += 1
            now = time.monotonic()
            if now - self._observer_logged_at >= 60.0:
                self._observer_logged_at = now
                log.exception(
                    "request observer of endpoint %r failed (%d failure(s) so far)",
                    self.name,
                    self._observer_failures,
                )

    def _head_too_large(self) -> tuple[int, str, str]:
        return (431, f"request head exceeds {self._max_head_bytes} bytes",
                "Send fewer or smaller headers "
                "(the agent's NBSERVE_PROXY_MAX_HEAD_BYTES sets the limit).")

    def _header_refusal(self, req: _Request, name: bytes, size: int) -> tuple[int, str, str]:
        """Which head limit ``req`` broke with header ``name`` (of ``size`` bytes)."""
        if size > self._max_header_bytes:
            shown = name[:64].decode("latin-1")
            return (431, f"request header {shown!r} exceeds {self._max_header_bytes} bytes",
                    "Send a smaller header "
                    "(the agent's NBSERVE_PROXY_MAX_HEADER_BYTES sets the limit).")
        if req.nhdrs > self._max_headers:
            return (431, f"more than {self._max_headers} request headers",
                    "Send fewer headers (the agent's NBSERVE_PROXY_MAX_HEADERS sets the limit).")
        return self._head_too_large()

    def _router_failed(self, req: _Request, exc: BaseException) -> tuple[str, str]:
        """A bug in the router: logged in one line (at most once a minute), answered 500."""
        self._router_failures += 1
        path = req.url.partition(b"?")[0][:200].decode("latin-1")
        now = time.monotonic()
        if now - self._router_logged_at >= 60.0:
            self._router_logged_at = now
            log.error("endpoint %r: answering %s %s failed: %s: %.200s (%d failure(s) so far)",
                      self.name, req.method.decode("latin-1"), path, type(exc).__name__, exc,
                      self._router_failures)
        return (f"the endpoint failed to answer {path}: {type(exc).__name__}",
                "This is a bug in nbserve; the agent's log has the details. Other paths still work.")

    def _sweep(self) -> None:
        """Periodic: enforce timeouts, expire idle pooled connections, forget unused pools."""
        loop = self._loop
        now = loop.time()
        for client in [c for c in self._clients if c._deadline and c._deadline < now]:
            try:
                client._timed_out()
            except Exception:
                log.exception("endpoint %r: timeout handling failed", self.name)
        expire_before = now - self._pool_idle_timeout
        for upstream, pool in list(self._pools.items()):
            pool.expire_idle(expire_before)
            if pool is not self._pool and not pool.conns and not pool.inflight and not pool.waiters:
                del self._pools[upstream]
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)
