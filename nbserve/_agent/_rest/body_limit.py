"""A size limit for API request bodies, before any handler reads one."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from ... import errors

MAX_JSON_BODY = 1 << 20  # API bodies are small JSON documents; archives go to /v1/uploads
MAX_FEEDBACK_BODY = 64 << 20  # labels come in batches


class BodyLimit:
    """ASGI middleware: a 413 JSON answer for an API body over ``MAX_JSON_BODY`` (announced
    or streamed), before a handler reads it. ``/v1/uploads`` has its own limits."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/v1/uploads":
            await self.app(scope, receive, send)
            return
        limit = MAX_FEEDBACK_BODY if scope["path"].endswith("/feedback") else MAX_JSON_BODY
        too_big = errors.PayloadTooLarge(f"request body over {limit} bytes",
                                         hint="API requests are small JSON documents; send labels in batches")
        for key, value in scope.get("headers", ()):
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                await JSONResponse(too_big.to_payload(), status_code=413)(scope, receive, send)
                return
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_big
            return message

        await self.app(scope, counted, send)
