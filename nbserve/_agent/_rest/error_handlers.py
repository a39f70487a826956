"""The API's one error mapping: every ``NbserveError`` becomes its own HTTP status with a
JSON body ``{"error": {"type", "message", "hint", "details"}}``, so user mistakes are 4xx
and only real faults are 5xx. Handlers raise ``nbserve.errors`` and nothing else."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ... import errors
from .._storage import insufficient, is_disk_full
from .models import ErrorResponse

log = logging.getLogger("nbserve.agent")

#: The error answers every route documents (the OpenAPI document's ``responses``).
DOCUMENTED_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 422, 500)
}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.NbserveError, _nbserve_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
    # A full disk is one 507 whichever write met it (a file, SQLite), never a 500 or a 400.
    app.add_exception_handler(sqlite3.Error, _storage_error)
    app.add_exception_handler(OSError, _storage_error)


async def _nbserve_error(_request: Request, exc: errors.NbserveError) -> JSONResponse:
    return JSONResponse(exc.to_payload(), status_code=exc.status)


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
    )
    err = errors.InvalidArgument(f"invalid request: {problems}", hint="see /docs for the schema")
    return JSONResponse(err.to_payload(), status_code=422)


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = str(exc.detail)
    err = errors.NotFound(detail) if exc.status_code == 404 else errors.InvalidArgument(detail)
    return JSONResponse(err.to_payload(), status_code=exc.status_code)


def _unexpected_answer(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=exc)
    err = errors.AgentError(
        f"internal error in the agent: {type(exc).__name__}: {exc}",
        hint=f"see the agent log at {request.app.state.manager.home.agent_log}",
    )
    return JSONResponse(err.to_payload(), status_code=500)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return _unexpected_answer(request, exc)


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_disk_full(exc):
        return _unexpected_answer(request, exc)
    filename = getattr(exc, "filename", None)
    err = insufficient(Path(filename).parent if filename else request.app.state.manager.home.root,
                       what=f"{request.method} {request.url.path}")
    log.warning("%s %s: %s", request.method, request.url.path, err.message)
    return JSONResponse(err.to_payload(), status_code=err.status)
