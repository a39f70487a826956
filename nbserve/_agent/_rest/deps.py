"""What a handler is handed: the agent's collaborators, which :func:`~.app.create_app` keeps
on ``app.state`` and these dependencies read per request, so a router holds no closure over
them (``manager: Manager = Depends(get_manager)``)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from .._access import Tokens
from .._manager import Manager
from .._scheduler import Scheduler
from .._uploads import Uploads


def get_manager(request: Request) -> Manager:
    """The composition root: handlers call the service whose job the route is
    (``manager.deployments``, ``.rollouts``, ``.capacity``, ``.readings``, ``.routes``, ``.fleet``)."""
    return request.app.state.manager


def get_tokens(request: Request) -> Tokens:
    return request.app.state.tokens


def get_uploads(request: Request) -> Uploads:
    return request.app.state.uploads


def get_scheduler(request: Request) -> Scheduler:
    """Asked for by the schedule routes only, which an app has only when it has a scheduler."""
    return request.app.state.scheduler


def find_scheduler(request: Request) -> Scheduler | None:
    """The scheduler, or None for an app built without one."""
    return request.app.state.scheduler


def get_on_shutdown(request: Request) -> Callable[[], None] | None:
    """What ``POST /v1/agent/shutdown`` calls (the agent's stop event), if anything."""
    return request.app.state.on_shutdown
