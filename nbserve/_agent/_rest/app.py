"""The agent's FastAPI app: the routers of every resource, the body limit, the error mapping,
and the collaborators handlers reach through ``app.state`` (see ``deps``)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from ..._version import __version__
from .._access import Tokens
from .._manager import Manager
from .._scheduler import Scheduler
from .._uploads import Uploads
from . import (access, agent, capacity, deployments, environments, events, monitoring, quality, rollouts, schedules,
               versions)
from . import uploads as upload_routes  # its name is create_app's parameter
from .body_limit import BodyLimit
from .error_handlers import DOCUMENTED_ERRORS, install_error_handlers

# In this order the served document lists its tags as it always has (schedules, agent,
# deployments, rollouts, resources, quality, access, monitoring): versions holds two "quality"
# routes. No two routes overlap, so the order decides nothing else.
ROUTERS = (agent, deployments, events, upload_routes, rollouts, capacity, environments, quality, versions, access,
           monitoring)


def create_app(manager: Manager, tokens: Tokens, *, on_shutdown: Callable[[], None] | None = None,
               scheduler: Scheduler | None = None, uploads: Uploads | None = None) -> FastAPI:
    """The FastAPI app for one agent. ``tokens`` guard every route but ``/v1/health``; the
    schedule routes exist only with a ``scheduler``."""
    if uploads is None:
        uploads = Uploads(manager.home.staging)
        uploads.clear()  # nothing is pending when an agent starts: staged files are leftovers

    app = FastAPI(
        title="nbserve agent",
        version=__version__,
        description="Deployments, immutable numbered versions, events, tokens and the audit log of one "
        "nbserve host. Every route except /v1/health needs `Authorization: Bearer <token>`; the token's "
        "role (admin, deployer, viewer, predict) decides what it may do (403 otherwise).",
        responses=DOCUMENTED_ERRORS,
    )
    app.state.manager = manager
    app.state.tokens = tokens
    app.state.scheduler = scheduler
    app.state.uploads = uploads
    app.state.on_shutdown = on_shutdown
    app.add_middleware(BodyLimit)
    install_error_handlers(app)
    if scheduler is not None:
        app.include_router(schedules.router)
    for module in ROUTERS:
        app.include_router(module.router)
    return app
