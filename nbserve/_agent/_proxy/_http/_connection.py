"""One client connection: parses requests within the limits, queues pipelined ones, carries
out the routing policy's decision for each in turn, relays the response, keeps the connection
alive or closes it.  Timeouts are a ``deadline`` the endpoint's one sweep checks; no task,
future or timer is made per request.  Public methods are what the upstream side and the
endpoint call; the rest is this connection's own.  One room at ~600 lines, on purpose: it is one
state machine on the hot path, and splitting it would put calls between its states."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from .._config import Refusal
from .._routing import ANSWER, AWAIT, FORWARD, HOLD
from .._types import LocalAnswer
from . import _answers as answers
from ._flow import FlowControl
from ._request import CONNECTION_OPTIONS, NOTED, Request

if TYPE_CHECKING:
    from .._state import EndpointState
    from .._upstream import UpstreamConnection, UpstreamPool

_MAX_PIPELINE = 16  # queued requests per client before we stop reading from it


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head over a limit (414 or 431)."""

    def __init__(self, answer: Refusal) -> None:
        super().__init__(answer[1])
        self.answer = answer


class _Discard:
    """Stands in for the parser after a refused head: what the client still sends is dropped."""

    __slots__ = ()

    def feed_data(self, data: bytes) -> None:
        pass


_DISCARD = _Discard()


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, forwards them in order, relays responses."""

    __slots__ = (
        "_busy",
        "_cfg",
        "_closing",
        "_conn",
        "_cur",
                "_head_armed",
        "_held",
        "_linger",
        "_local",
        "_loop",
        "_parser",
        "_peer",
        "_pool",
        "_queue",
        "_req",
        "_routing",
        "_state",
        "_xff_line",
        "closed",
        "deadline",
        "flow",
        "transport",
    )

    def __init__(self, state: EndpointState) -> None:
        self._state = state
        self._cfg = state.config
        self._routing = state.routing
        self._loop = state.loop
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._xff_line = b""
        self._peer = b""
        self._cur: Request | None = None  # request being parsed
        self._head_armed = False  # the partial-request deadline is running for _cur's head
        # Parsed requests waiting for the exchange ahead of them (pipelining).
        self._queue: deque[Request] = deque()
        self._busy = False  # an exchange is in progress
        self._req: Request | None = None
        self._pool: UpstreamPool | None = None
        self._conn: UpstreamConnection | None = None
        self.deadline = 0.0  # loop.time() after which the endpoint's sweep acts; 0 = none
        self._closing = False  # no further requests will be parsed
        self.closed = False
        self._linger = False  # answered 413 early; reading the rest of the body before closing
        self._local: asyncio.Task[Any] | None = None  # a local route's coroutine being awaited
        self._held = False  # waiting for a scaled-to-zero deployment to start

    # -- asyncio callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flow = FlowControl(self.transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._peer = str(peer[0]).encode("latin-1")
            self._xff_line = b"x-forwarded-for: " + self._peer + b"\r\n"
        self._state.clients.add(self)
        self.deadline = self._loop.time() + self._cfg.idle_timeout

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
                    self._linger = False  # garbage while dropping a refused body: answered already
                    if req is not None and req.responded:
                        self._close()
                    return
                req = req or Request()
                req.keep_alive = False
                req.error = (400, f"malformed HTTP request: {exc}",
                             "Send a valid HTTP/1.1 request.")
                self._queue.append(req)
        else:
            if cur is not None and cur is self._cur and not cur.head_done:
                # All of it belongs to a head still arriving, part of which httptools holds
                # (a header is handed over only when its line ends): bound that too.
                cur.head_raw += len(data)
                if cur.head_raw > self._cfg.max_head_bytes:
                    self._cur = None
                    self._refuse_head(cur, self._cfg.head_too_large())
        if self._busy:
            if len(self._queue) >= _MAX_PIPELINE and not self.flow.queue_full:
                self.flow.queue_full = True
                self.update_reading()
        elif self._queue:
            self._next()
        elif self._cur is not None and not self._linger:
            self._arm_read_deadline()

    def pause_writing(self) -> None:
        # The client reads slower than the upstream sends: stop reading the upstream.
        self.flow.write_paused = True
        if self._conn is not None:
            self._conn.pause_reading()
        if self._busy:
            self.deadline = self._loop.time() + self._cfg.idle_timeout  # slow-client limit

    def resume_writing(self) -> None:
        self.flow.write_paused = False
        if self._conn is not None:
            self._conn.resume_reading()
        if self._busy:
            self.deadline = self._loop.time() + self._cfg.upstream_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._closing = True
        self._state.clients.discard(self)
        self._queue.clear()
        if self._held:
            self._held = False
            self._routing.waiting.discard(self)
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

    # -- httptools callbacks: parsing within the limits -----------------------------

    def on_message_begin(self) -> None:
        self._cur = Request()
        self._head_armed = False

    def on_url(self, url: bytes) -> None:
        req = self._cur
        req.url += url  # called once per chunk of a long target: the check bounds what we keep
        req.head_len += len(url)
        if len(req.url) > self._cfg.max_request_line:
            raise _HeadRefused(self._cfg.target_too_long())

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._cur
        cfg = self._cfg
        size = len(name) + len(value)
        count = req.nhdrs = req.nhdrs + 1
        total = req.head_len = req.head_len + size
        if size > cfg.max_header_bytes or count > cfg.max_headers or total > cfg.max_head_bytes:
            raise _HeadRefused(cfg.header_refusal(count, name, size))
        lname = name.lower()
        if lname == self._routing.sticky_header:
            req.client_key = value
        if lname == b"x-request-id":
            req.rid = value[:128]  # forwarded as sent (below), echoed in the response
        if lname == b"authorization":
            # Checked here (when the endpoint wants a token), never forwarded: the model
            # server has no use for a credential and should not see one in its logs.
            req.authz = value
            return
        if lname in NOTED:
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
                    tokens = {t.strip().lower() for t in value.split(b",")} - CONNECTION_OPTIONS
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
        if req.method == b"CONNECT":  # we tunnel nothing, and a model server has no use for it
            self._reject(req, answers.CONNECT_REFUSED)
            return
        if req.clen is not None:
            try:
                too_big = int(req.clen) > self._cfg.max_body_bytes
            except ValueError:
                too_big = False  # llhttp has validated it already
            if too_big:
                self._reject(req, self._cfg.body_too_large())
                return
        auth = self._routing.auth
        if auth is not None:
            denied = auth(req.authz)
            if denied is not None:  # answered before the body is read: it is dropped unread
                self._reject(req, denied)
                return
        if req.expect and not self._busy and not self._queue:
            self.transport.write(answers.CONTINUE)  # we buffer the body, so we ask for it ourselves

    def on_body(self, body: bytes) -> None:
        req = self._cur
        if req.error is not None:
            return  # discarding the body of a rejected request
        req.body_len += len(body)
        if req.body_len > self._cfg.max_body_bytes:
            self._reject(req, self._cfg.body_too_large())
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
        req.finish(self._xff_line, self._peer, self._state.ids)
        if not req.keep_alive:
            self._stop_parsing()  # Connection: close: nothing after this request is read
        self._queue.append(req)

    # -- the request/response cycle ----------------------------------------------------

    def _next(self) -> None:
        """Start the next queued request, answering locally-failed ones on the way."""
        queue = self._queue
        routing = self._routing
        while queue and not self._busy and not self.closed and not self._linger:
            req = queue.popleft()
            if req.error is not None:
                self._respond_error(req, *req.error)
                continue
            decision = routing.decide(req)  # (not a bound method kept in a local: no allocation)
            action = decision.action
            if action != FORWARD:
                if action == ANSWER:
                    self._respond_local(req, decision.answer)
                elif action == AWAIT:
                    self._await_local(req, decision.answer)
                elif action == HOLD:
                    self._hold(req)
                    return
                else:  # REFUSE
                    self._respond_error(req, *decision.refusal)
                continue
            pool = decision.pool
            self._busy = True
            self._req = req
            self._pool = pool
            pool.exchange_started()
            self._state.last_request = now = self._loop.time()
            self.deadline = now + self._cfg.upstream_timeout
            conn = pool.take_idle()
            if conn is not None:
                self._conn = conn
                conn.begin(self, req)
            else:
                pool.open_for(self, req)
        if self._busy or self.closed:
            return
        if self.flow.queue_full:
            self.flow.queue_full = False
            self.update_reading()
        if self._linger:
            return
        if self._cur is not None:
            self._head_armed = False
            self._arm_read_deadline()
        else:
            self.deadline = self._loop.time() + self._cfg.idle_timeout

    def _complete(self, status: int, label: str | None, close: bool) -> None:
        req = self._req
        pool = self._pool
        self._req = None
        self._pool = None
        self._busy = False
        state = self._state
        pool.exchange_done()
        if status == 503 and label is not None:
            state.refused[label] = state.refused.get(label, 0) + 1
        if state.observer is not None:
            state.observe(req, label, status)
        shadow = state.shadow
        if (shadow.pool is not None and pool is self._routing.live and req.response is not None
                and req.method == b"POST"):
            shadow.mirror(req, status)
        if self.closed:
            return
        if close or not req.keep_alive:
            self._close()
            return
        self._next()

    # -- hold for wake ------------------------------------------------------------------

    def _hold(self, req: Request) -> None:
        # Scaled to zero: hold the request (and this connection's queue) until the version is
        # started again; the endpoint's set_upstream() resumes us, wake_failed() answers.
        self._queue.appendleft(req)
        self._held = True
        self.deadline = self._loop.time() + self._routing.wake_timeout
        self._routing.hold(self)

    def resume_held(self) -> None:
        """A version serves again: go on with the held request."""
        self._held = False
        if not self.closed:
            self._next()

    def release_held(self, error: str, hint: str) -> None:
        """Answer the held request with a 503 (waking failed or took too long); go on."""
        self._held = False
        if self._queue:
            self._respond_error(self._queue.popleft(), 503, error, hint)
        if not self.closed:
            self._next()

    # -- what the upstream side calls -----------------------------------------------------

    def attach(self, conn: UpstreamConnection, req: Request) -> bool:
        """A new upstream connection for ``req``: send it, unless the request went away."""
        if self._req is not req or self.closed:
            return False
        self._conn = conn
        conn.begin(self, req)
        return True

    def upstream_progress(self) -> None:
        """Response bytes came: the upstream timeout restarts (not while the client is slow)."""
        if not self.flow.write_paused:
            self.deadline = self._loop.time() + self._cfg.upstream_timeout

    def pause_for_upstream(self, paused: bool) -> None:
        self.flow.upstream_full = paused
        self.update_reading()

    def retrying(self) -> None:
        """The request's connection was lost with no answer and it is sent again: that wait is
        bounded by retry_wait."""
        self._conn = None
        self.deadline = min(self.deadline, self._loop.time() + self._cfg.retry_wait)

    def response_done(self, conn: UpstreamConnection) -> None:
        self._conn = None
        pool = self._pool
        # A non-keep-alive response was framed by EOF or said Connection: close
        # to the client, which then expects us to close too (HEAD is framed by its head).
        close = not conn.keep_alive and not conn.is_head
        pool.release(conn, conn.keep_alive)
        self._complete(conn.status, pool.upstream.label, close)

    def upstream_refused(self, req: Request, pool: UpstreamPool, exc: OSError) -> None:
        if self._req is req:
            self._fail(*answers.connection_refused(self._cfg.name, pool.upstream, exc))

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        """The upstream connection closed before its response was complete (and no retry)."""
        self._conn = None
        if conn.head_sent:
            # Either an EOF-delimited body that has ended, or a truncated one;
            # the client can only learn where it ends from the close.
            self._complete(conn.status, self._pool.upstream.label, close=True)
            return
        self.upstream_failed(conn, "closed the connection without a complete response")

    def upstream_failed(self, conn: UpstreamConnection, what: str) -> None:
        self._conn = None
        if conn.head_sent:
            self._complete(conn.status, self._pool.upstream.label, close=True)
            return
        self._fail(*answers.upstream_broke(self._cfg.name, self._pool.upstream, what))

    def _fail(self, status: int, error: str, hint: str, *, retry_after: int | None = None) -> None:
        """The exchange failed before any response byte reached the client: answer with an error."""
        req = self._req
        answers.write_error(self.transport, req, status, error, hint, not req.keep_alive,
                            retry_after=retry_after)
        self._complete(status, None, close=not req.keep_alive)

    # -- what the endpoint calls -------------------------------------------------------

    def timed_out(self) -> None:
        """Called by the endpoint's sweep when the deadline has passed."""
        if self.closed:
            return
        cfg = self._cfg
        if self._held:
            self._routing.waiting.discard(self)
            self.release_held(*answers.not_started(cfg.name, self._routing.wake_timeout))
            return
        if not self._busy:
            # Idle keep-alive, a request arriving too slowly, or the end of a 413 linger.
            self._closing = True
            self._linger = False
            self.transport.close()
            return
        if self.flow.write_paused:
            self.transport.abort()  # a client that stopped reading its response
            return
        conn = self._conn
        self._conn = None
        if conn is not None:
            conn.abort()
        if conn is not None and conn.head_sent:
            self._complete(conn.status, self._pool.upstream.label, close=True)
            return
        if self._req.retried and cfg.retry_wait < cfg.upstream_timeout:
            lost = answers.request_lost(cfg.name, self._pool.upstream, cfg.retry_wait)
            self._fail(*lost, retry_after=1)
        else:
            self._fail(*answers.no_response(cfg.name, self._pool.upstream, cfg.upstream_timeout))

    def close_now(self) -> None:
        """The endpoint closes: no further request; the transport closes (aborting an exchange)."""
        self._closing = True
        self.transport.close()

    # -- local responses -------------------------------------------------------------

    def _respond_error(self, req: Request, status: int, error: str, hint: str) -> None:
        """Answer a request that was never forwarded (503, 500, 400, 413, 414, 431)."""
        close = not req.keep_alive or status in (400, 413)
        answers.write_error(self.transport, req, status, error, hint, close)
        req.responded = True
        state = self._state
        if state.observer is not None:
            state.observe(req, None, status)
        if close:
            if req is self._cur:
                # 413 sent before the body ended: read (and drop) the rest
                # briefly so the client sees the answer rather than a reset.
                self._linger = True
                self.deadline = self._loop.time() + min(5.0, self._cfg.header_timeout)
            elif self._parser is _DISCARD:
                self._drop_rest_and_close()
            else:
                self._close()

    def _await_local(self, req: Request, coro: Any) -> None:
        self._busy = True
        self.deadline = 0.0  # the coroutine bounds itself; no upstream timeout applies
        task = self._local = self._loop.create_task(coro)
        self._state.tasks.add(task)
        task.add_done_callback(lambda t: self._local_done(req, t))

    def _local_done(self, req: Request, task: asyncio.Task[Any]) -> None:
        self._state.tasks.discard(task)
        if self._local is not task:
            return  # the client went away (connection_lost cancelled it)
        self._local = None
        self._busy = False
        if task.cancelled() or self.closed:
            return
        exc = task.exception()
        if exc is not None:
            self._respond_error(req, 500, *self._routing.router_failed(req, exc))
        else:
            self._respond_local(req, task.result())
        if not self.closed:
            self._next()

    def _respond_local(self, req: Request, answer: LocalAnswer) -> None:
        """Answer a request the endpoint serves itself (metadata, schema, feedback)."""
        answers.write_answer(self.transport, req, answer.status, answer.body, not req.keep_alive)
        req.responded = True
        state = self._state
        if state.observer is not None:
            state.observe(req, None, answer.status)
        if not req.keep_alive:
            self._close()

    def _reject(self, req: Request, error: Refusal) -> None:
        """Answer ``req`` with ``error`` once its turn comes, dropping its body, then close."""
        req.error = error
        req.keep_alive = False
        req.body_parts = []
        self._queue.append(req)

    def _refuse_head(self, req: Request, error: Refusal) -> None:
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
        self.deadline = self._loop.time() + min(5.0, self._cfg.header_timeout)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.update_reading()

    # -- connection state -------------------------------------------------------------

    def _arm_read_deadline(self) -> None:
        # A partial head must complete within header_timeout of its first
        # bytes (slowloris); a body only needs to keep making progress.
        if self._cur.head_done:
            self.deadline = self._loop.time() + self._cfg.header_timeout
        elif not self._head_armed:
            self._head_armed = True
            self.deadline = self._loop.time() + self._cfg.header_timeout

    def _stop_parsing(self) -> None:
        self._closing = True
        self.update_reading()

    def _close(self) -> None:
        self._closing = True
        self._linger = False
        if not self.closed:
            self.transport.close()  # flushes what is buffered first

    def update_reading(self) -> None:
        if not self.closed:
            self.flow.update_reading(self._closing and not self._linger)
