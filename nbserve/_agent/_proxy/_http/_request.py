"""One request as parsed from a client: its parse state, then the head we forward.

Hop-by-hop headers (RFC 9110 7.6.1) are never forwarded.  content-length is recomputed
(bodies are de-chunked), expect is answered by the proxy itself, x-forwarded-for is re-emitted
with the client address appended.  host and x-forwarded-host are forwarded but noted, to derive
x-forwarded-host.  Authorization is checked by the endpoint and never forwarded.
"""

from __future__ import annotations

import os
import time

_now_ns = time.perf_counter_ns

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
NOTED = _HOP_BY_HOP | {
    b"content-length",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"host",
}
CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b""})  # other tokens name headers


class RequestIds:
    """An endpoint's request ids: a random prefix (unique across agent restarts), a counter."""

    __slots__ = ("count", "prefix")

    def __init__(self) -> None:
        self.prefix = os.urandom(4).hex().encode() + b"-"
        self.count = 0


class Request:
    """A request as parsed from the client: parse state, then what we forward; and, while it is
    forwarded, what came back (rows, the kept response) and whether it was sent again."""

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
        "retried",
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
        self.retried = False  # its upstream connection was lost with no answer; sent once more

    def finish(self, xff_line: bytes, peer: bytes, ids: RequestIds) -> None:
        """The message is complete: join the body and build the head we forward."""
        parts = self.body_parts
        body = self.body = parts[0] if len(parts) == 1 else b"".join(parts)
        self.body_parts = []
        hdrs = self.hdrs
        if self.drop:
            hdrs = [
                x
                for i in range(0, len(hdrs), 4)
                if hdrs[i].lower() not in self.drop
                for x in hdrs[i : i + 4]
            ]
        head = [self.method, b" ", self.url, b" HTTP/1.1\r\n", *hdrs]
        if self.xff is None:
            head.append(xff_line)
        else:
            head += (b"x-forwarded-for: ", self.xff, b", ", peer, b"\r\n")
        if self.host is not None and not self.has_xfh:
            head += (b"x-forwarded-host: ", self.host, b"\r\n")
        if self.rid is None:
            ids.count += 1  # inline, not a method: this runs for most requests
            self.rid = b"%s%x" % (ids.prefix, ids.count)
            head += (b"x-request-id: ", self.rid, b"\r\n")
        if body or self.framed:
            head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"\r\n")
        self.head = b"".join(head)
