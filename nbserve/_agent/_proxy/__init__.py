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

The package by layer (each module says what it owns):

- ``_http/``: the client side: ``_connection`` (parsing within the limits,
  keep-alive, the request/response cycle, timeouts), ``_request`` (one request's
  state and the head we forward), ``_flow`` (when to read), ``_answers`` (what the
  proxy answers itself);
- ``_upstream``: pooled keep-alive connections to each upstream, renewal, the retry;
- ``_routing``: one policy call per request (pinned version, canary cut or sticky
  hash, hold for wake, local answers) returning a decision;
- ``_shadow``: mirroring live requests to a shadow version;
- ``_config`` (limits and timeouts), ``_state`` (what an endpoint shares with its
  connections), ``_types`` (the value types importers use);
- ``_endpoint``: :class:`StableEndpoint`, tying them together.
"""

from ._endpoint import StableEndpoint
from ._types import LocalAnswer, RequestRecord, Router, ShadowResult, Upstream

__all__ = ["LocalAnswer", "RequestRecord", "Router", "ShadowResult", "StableEndpoint", "Upstream"]
