"""What the proxy answers itself: a JSON error naming what was wrong and what to do
(``{"error", "hint"}``, plus the nbserve error ``type`` clients map), or a router's body."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from .._config import Refusal

if TYPE_CHECKING:
    from .._types import Upstream
    from ._request import Request

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

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

CONNECT_REFUSED: Refusal = (405, "CONNECT is not supported: a stable URL is not a forward proxy",
                            "Send the request itself (e.g. POST /predict) to the stable URL.")


def connection_refused(name: str, up: Upstream, exc: OSError) -> Refusal:
    return (502, f"upstream version {up.label} of {name!r} at {up.host}:{up.port} "
                 f"refused the connection ({exc.strerror or exc})",
            "Its serving process may have exited or still be starting: check its logs, "
            "or roll back to a version that is running.")


def upstream_broke(name: str, up: Upstream, what: str) -> Refusal:
    return (502, f"upstream version {up.label} of {name!r} at {up.host}:{up.port} {what}",
            "The model server may have crashed while handling the request: check its logs.")


def request_lost(name: str, up: Upstream, retry_wait: float) -> Refusal:
    return (503, f"upstream version {up.label} of {name!r} lost the request (its worker may have "
                 f"died) and no worker took it again within {retry_wait:g} s",
            "The model server is restarting a worker: retry after a moment; more workers "
            "(dep.scale(workers=2)) let the others answer meanwhile.")


def no_response(name: str, up: Upstream, upstream_timeout: float) -> Refusal:
    return (504, f"upstream version {up.label} of {name!r} did not respond within "
                 f"{upstream_timeout:g} s",
            "The model may be overloaded or stuck: check its logs, or raise upstream_timeout.")


def not_started(name: str, wake_timeout: float) -> tuple[str, str]:
    return (f"deployment {name!r} did not start within {wake_timeout:g} s",
            "It was scaled to zero and is still starting: retry shortly, or check its logs.")


def write_error(transport: asyncio.Transport, req: Request, status: int, error: str, hint: str,
                close: bool, *, retry_after: int | None = None) -> None:
    payload = {"error": error, "hint": hint}
    if status in _ERROR_TYPES:
        payload["type"] = _ERROR_TYPES[status]
    body = json.dumps(payload).encode()
    write_answer(transport, req, status, body, close, retry_after=retry_after)


def write_answer(transport: asyncio.Transport, req: Request, status: int, body: bytes,
                 close: bool, *, retry_after: int | None = None) -> None:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        + (f"retry-after: {retry_after}\r\n" if retry_after is not None else "")
        + (f"x-request-id: {req.rid.decode('latin-1')}\r\n" if req.rid else "")
        + ("connection: close\r\n" if close else "")
        + "\r\n"
    ).encode("latin-1")
    transport.write(head if req.is_head else head + body)
