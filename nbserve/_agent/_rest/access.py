"""Tokens and the audit log: who the caller is, the token table, who changed what."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query

from .._access import Principal, Tokens
from .._manager import Manager
from .auth import admin, caller, view, view_all
from .deps import get_manager, get_tokens
from .models import (
    MAX_INT,
    AuditCheck,
    AuditOut,
    NewTokenOut,
    TokenCreate,
    TokenOut,
    TokenRotate,
    WhoAmI,
)

router = APIRouter()


@router.get("/v1/whoami", response_model=WhoAmI, tags=["access"])
async def whoami(who: Principal = Depends(caller)) -> WhoAmI:
    """The caller's token name, role and deployment scope (any valid token)."""
    return WhoAmI(name=who.name, role=who.role,  # type: ignore[arg-type]
                  deployments=list(who.deployments) if who.deployments is not None else None)


@router.get("/v1/tokens", response_model=list[TokenOut], dependencies=[admin], tags=["access"])
async def list_tokens(all: bool = False,  # noqa: A002 - the query flag's name
                      tokens: Tokens = Depends(get_tokens)) -> list[TokenOut]:
    """Tokens without their secrets (``all``: include revoked and expired ones)."""
    return [TokenOut(**t) for t in tokens.list(include_inactive=all)]


@router.post("/v1/tokens", response_model=NewTokenOut, status_code=201, tags=["access"])
async def create_token(body: TokenCreate, who: Principal = admin,
                       tokens: Tokens = Depends(get_tokens)) -> NewTokenOut:
    secret, row = tokens.create(body.name, body.role, deployments=body.deployments,
                                expires_in=body.expires_in, created_by=who.actor(None))
    return NewTokenOut(token=secret, **row.public())


@router.delete("/v1/tokens/{token}", response_model=list[TokenOut], dependencies=[admin], tags=["access"])
async def revoke_token(token: str, tokens: Tokens = Depends(get_tokens)) -> list[TokenOut]:
    """Revoke the active token(s) of that name or id; requests with them get 401 at once."""
    return [TokenOut(**t) for t in tokens.revoke(token)]


@router.post("/v1/tokens/{token}/rotate", response_model=NewTokenOut, tags=["access"])
async def rotate_token(token: str, body: TokenRotate | None = None, who: Principal = admin,
                       tokens: Tokens = Depends(get_tokens)) -> NewTokenOut:
    secret, row = tokens.rotate(token, grace=body.grace if body else 0.0, created_by=who.actor(None))
    return NewTokenOut(token=secret, **row.public())


@router.get("/v1/audit", response_model=list[AuditOut], tags=["access"])
async def audit(deployment: str | None = None, limit: int = Query(200, ge=1, le=10_000),
                after: int = Query(0, ge=0, le=MAX_INT),
                who: Principal = view, manager: Manager = Depends(get_manager),
                tokens: Tokens = Depends(get_tokens)) -> list[AuditOut]:
    """Who changed what, when, from where: oldest first, the newest ``limit`` after ``after``."""
    if deployment is not None:
        tokens.authorize(who, "view", deployment)
    rows = manager.registry.audit(deployment, limit=limit, after_seq=after)
    return [AuditOut(**r.__dict__) for r in rows if who.sees(r.deployment)]


@router.get("/v1/audit/verify", response_model=AuditCheck, dependencies=[view_all], tags=["access"])
async def verify_audit(manager: Manager = Depends(get_manager)) -> AuditCheck:
    """Recompute the hash chain: an edited, deleted or reordered record is reported."""
    return AuditCheck(**await asyncio.to_thread(manager.registry.verify_audit))
