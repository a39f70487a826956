"""The proxy's value types: where a version is served, what the endpoint answers itself, what
the router may say, and the records it hands on (per request, per shadowed request)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Upstream:
    """Where a deployment version is served.  Equal upstreams share a connection pool."""

    host: str
    port: int
    label: str  # e.g. the version number "3"; echoed as response header x-nbserve-version
    prefix: bytes = b""  # put before each request's path (a Ray Serve application's route prefix)


def with_prefix(head: bytes, prefix: bytes) -> bytes:
    """A request head (``METHOD /path HTTP/1.1...``) with ``prefix`` before its path."""
    method, _, rest = head.partition(b" ")
    return method + b" " + prefix + rest


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """What the endpoint answers itself instead of forwarding (a JSON body)."""

    status: int
    body: bytes


# (method, url, body) -> None: forward to the live version as usual; a LocalAnswer; or
# (upstream, path): forward to that upstream with the URL rewritten to path.
Router = Callable[[bytes, bytes, bytes], "LocalAnswer | tuple[Upstream, bytes] | None"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One proxied request, handed to the endpoint's observer when it completes or fails."""

    label: str | None  # the upstream that answered; None if the proxy answered itself (or 499)
    method: str
    path: str  # URL path without the query string
    status: int  # 499 when the client went away first
    started_ns: int  # time.perf_counter_ns() when the request head was parsed
    elapsed_ns: int  # until the last response byte was handed to the client transport
    request_bytes: int  # request body bytes (after de-chunking)
    body: bytes  # the request body (a reference, not a copy)
    response: bytes | None  # the response body, only for requests the sampler picked
    request_id: str = ""  # the client's X-Request-Id, or the one the endpoint made
    rows: int = -1  # inputs the model server says it answered (x-nbserve-rows); -1: not said


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """A live request's answer beside the shadow version's answer to the same request."""

    label: str  # the shadow version
    live_status: int
    live_body: bytes
    status: int  # 0 when the shadow could not be reached
    body: bytes
    elapsed_ns: int
    error: str | None
