"""Who is calling and what it may do, as FastAPI dependencies: the bearer token becomes a
:class:`Principal` (401 without a valid one), and each permission dependency lets the call
through only if the caller's role allows it (403 otherwise).

Routes name them, ``dependencies=[view]`` or ``who: Principal = deploy``: ``view``,
``deploy`` and ``predict`` check the ``{name}`` deployment of the path (a token may be
limited to some deployments); ``admin``, ``view_all`` and ``deploy_all`` need a token for
every deployment.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ... import errors
from .. import _access
from .._access import Principal, Tokens
from .deps import get_tokens

_bearer = HTTPBearer(auto_error=False)


async def caller(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer),
                 tokens: Tokens = Depends(get_tokens)) -> Principal:
    """The caller the request's token stands for (any valid token)."""
    principal = tokens.authenticate(creds.credentials if creds else None,
                                    source=request.client.host if request.client else None)
    _access.current.set(principal)  # the audit log reads it, in this task and those it starts
    return principal


def allowed(permission: str, *, per_deployment: bool = True) -> Any:
    """A dependency: the caller, if its role allows ``permission`` (on the ``{name}``
    deployment of the path, for per-deployment routes); else 403."""

    async def check(request: Request, principal: Principal = Depends(caller),
                    tokens: Tokens = Depends(get_tokens)) -> Principal:
        name = request.path_params.get("name") if per_deployment else None
        if not per_deployment and principal.deployments is not None:
            raise errors.PermissionDenied(f"the token {principal.name!r} is limited to some deployments",
                                          hint="this action needs a token for every deployment")
        tokens.authorize(principal, permission, name)
        return principal

    return Depends(check)


view, deploy, predict = allowed("view"), allowed("deploy"), allowed("predict")
admin = allowed("admin", per_deployment=False)
view_all, deploy_all = allowed("view", per_deployment=False), allowed("deploy", per_deployment=False)
