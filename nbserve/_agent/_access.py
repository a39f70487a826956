"""Who may do what: access tokens with roles, checked on every API call and stable URL.

A token reads ``nbs_<id>_<secret>``. The agent keeps only a per-token random salt and
HMAC-SHA256(salt, secret): the secret is 256 random bits, so a slow password hash would
add latency to every prediction and no safety. Lookup is by the public ``id``; the digest
is compared in constant time. Revocation and expiry take effect on the next request: the
agent is the only writer of the token table and keeps it in memory.

The owner token (``NBSERVE_HOME/token``, readable only by the agent's user) is the host's
``admin``: it creates the named tokens others use.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import errors
from ._principal import ROLES, Principal, current  # noqa: F401  (current: read here by the app)

if TYPE_CHECKING:
    from ._registry import Registry

_DOING = {"admin": "manage tokens or the agent", "deploy": "change deployments",
          "view": "read deployments", "predict": "call prediction endpoints"}
DEFAULT_EXPIRY_SECONDS = 90 * 86400
TOKEN_PREFIX = "nbs"


@dataclass
class TokenRow:
    id: str
    name: str
    role: str
    deployments: tuple[str, ...] | None
    created_at: float
    created_by: str | None
    expires_at: float | None
    revoked_at: float | None
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)

    def public(self) -> dict[str, Any]:
        now = time.time()
        state = ("revoked" if self.revoked_at is not None
                 else "expired" if self.expires_at is not None and self.expires_at <= now else "active")
        return {"id": self.id, "name": self.name, "role": self.role,
                "deployments": list(self.deployments) if self.deployments is not None else None,
                "created_at": self.created_at, "created_by": self.created_by,
                "expires_at": self.expires_at, "revoked_at": self.revoked_at, "state": state}


def _token_row(stored: dict[str, Any]) -> TokenRow:
    deployments = stored["deployments"]
    return TokenRow(**{**stored, "deployments": tuple(json.loads(deployments)) if deployments is not None else None})


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()


def _parse(raw: str) -> tuple[str, str] | None:
    prefix, _, rest = raw.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not token_id or not secret:
        return None
    return token_id, secret


def check_role(role: str) -> str:
    if role not in ROLES:
        raise errors.InvalidArgument(f"unknown role {role!r}", hint=f"roles: {', '.join(ROLES)}")
    return role


class Tokens:
    """The token table: create, verify, revoke, rotate. Thread-safe."""

    def __init__(self, registry: "Registry", owner_token: str) -> None:
        self._registry = registry
        self._owner = owner_token.encode()
        self._lock = threading.Lock()
        self._rows: dict[str, TokenRow] = {row.id: row for row in map(_token_row, registry.load_tokens())}

    # -- checking -------------------------------------------------------------------

    def authenticate(self, raw: str | None, *, source: str | None = None) -> Principal:
        """The principal for a bearer token, or ``AuthenticationFailed`` (401)."""
        if not raw:
            raise errors.AuthenticationFailed(
                "no access token was sent",
                hint="send `Authorization: Bearer <token>`; ask the host's admin for one "
                     "(`nbserve token create`)",
            )
        parsed = _parse(raw)
        if parsed is None:
            if hmac.compare_digest(raw.encode(), self._owner):
                return Principal("owner", "admin", source=source)
            raise errors.AuthenticationFailed("the access token is wrong",
                                              hint="check the token file the target uses")
        token_id, secret = parsed
        row = self._rows.get(token_id)
        if row is None or not hmac.compare_digest(_digest(row.salt, secret), row.digest):
            raise errors.AuthenticationFailed("the access token is wrong",
                                              hint="check the token file the target uses")
        if row.revoked_at is not None:
            raise errors.AuthenticationFailed(f"the access token {row.name!r} was revoked",
                                              hint="ask the host's admin for a new one")
        if row.expires_at is not None and row.expires_at <= time.time():
            raise errors.AuthenticationFailed(f"the access token {row.name!r} expired",
                                              hint="ask the host's admin to rotate it")
        return Principal(row.name, row.role, row.deployments, row.id, source)

    def authorize(self, principal: Principal, permission: str, deployment: str | None = None) -> None:
        """``PermissionDenied`` (403) unless ``principal`` may do ``permission``. The message
        names neither other deployments nor whether ``deployment`` exists."""
        if permission not in ROLES[principal.role]:
            raise errors.PermissionDenied(
                f"the token {principal.name!r} (role {principal.role}) may not {_DOING[permission]}",
                hint="ask the host's admin for a token with a role that may",
            )
        if not principal.can(permission, deployment):
            raise errors.PermissionDenied(f"the token {principal.name!r} may not act on {deployment!r}",
                                          hint="it is limited to other deployments")

    def check_header(self, header: bytes | None, deployment: str) -> tuple[int, str, str] | None:
        """For the stable URL's hot path: None if ``Authorization: Bearer`` allows predicting
        on ``deployment``, else (status, message, hint)."""
        raw = None
        if header is not None:
            scheme, _, value = header.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer":
                raw = value.strip()
        try:
            principal = self.authenticate(raw)
            self.authorize(principal, "predict", deployment)
        except errors.NbserveError as exc:
            return exc.status, exc.message, exc.hint or ""
        return None

    # -- managing -------------------------------------------------------------------

    def create(self, name: str, role: str, *, deployments: Iterable[str] | None = None,
               expires_in: float | None = DEFAULT_EXPIRY_SECONDS, created_by: str | None = None) -> tuple[str, TokenRow]:
        """A new token; its secret is returned once and never stored."""
        check_role(role)
        if not name or len(name) > 100 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise errors.InvalidArgument(f"invalid token name {name!r}",
                                         hint="letters, digits, '-', '_' and '.', up to 100 characters")
        if expires_in is not None and expires_in <= 0:
            raise errors.InvalidArgument("a token's expiry must be in the future")
        scope = tuple(sorted(set(deployments))) if deployments is not None else None
        with self._lock:
            if any(r.name == name and r.public()["state"] == "active" for r in self._rows.values()):
                raise errors.Conflict(f"an active token is already called {name!r}",
                                      hint=f"rotate it (`nbserve token rotate {name}`) or revoke it first")
            token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
            salt = secrets.token_bytes(16)
            now = time.time()
            row = TokenRow(token_id, name, role, scope, now, created_by,
                           now + expires_in if expires_in is not None else None, None, salt, _digest(salt, secret))
            self._registry.add_token(row, audit={"role": role, "deployments": list(scope) if scope else None,
                                                 "expires_at": row.expires_at})
            self._rows[token_id] = row
        return f"{TOKEN_PREFIX}_{token_id}_{secret}", row

    def list(self, *, include_inactive: bool = False) -> list[dict[str, Any]]:
        rows = [r.public() for r in sorted(self._rows.values(), key=lambda r: r.created_at)]
        return rows if include_inactive else [r for r in rows if r["state"] == "active"]

    def _active(self, name: str) -> list[TokenRow]:
        """Active tokens called ``name`` (or with that id), newest first: during a rotation's
        grace period the old one is still active."""
        rows = [r for r in self._rows.values() if name in (r.name, r.id) and r.public()["state"] == "active"]
        if not rows:
            raise errors.TokenNotFound(f"no active token is called {name!r}", hint="see `nbserve token list`")
        return sorted(rows, key=lambda r: r.created_at, reverse=True)

    def revoke(self, name: str) -> list[dict[str, Any]]:
        """Revoke every active token of that name (or id) at once: the next request gets 401."""
        with self._lock:
            rows = self._active(name)
            for row in rows:
                row.revoked_at = time.time()
                self._registry.set_token_revoked(row.id, row.revoked_at, action="token_revoked",
                                                 detail={"token": row.name, "id": row.id})
        return [row.public() for row in rows]

    def rotate(self, name: str, *, grace: float = 0.0, created_by: str | None = None) -> tuple[str, TokenRow]:
        """A new secret for ``name`` with the same role and scope; the old one stops working
        now, or after ``grace`` seconds so running clients can switch."""
        with self._lock:
            old = self._active(name)[0]
            lifetime = (old.expires_at - old.created_at) if old.expires_at is not None else None
            if grace > 0:
                old.expires_at = min(old.expires_at or float("inf"), time.time() + grace)
                self._registry.set_token_expiry(old.id, old.expires_at)
                old_state = {"expires_at": old.expires_at}
            else:
                old.revoked_at = time.time()
                self._registry.set_token_revoked(old.id, old.revoked_at, action=None, detail=None)
                old_state = {"revoked_at": old.revoked_at}
            token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
            salt = secrets.token_bytes(16)
            now = time.time()
            row = TokenRow(token_id, name, old.role, old.deployments, now, created_by,
                           now + lifetime if lifetime is not None else None, None, salt, _digest(salt, secret))
            self._registry.add_token(row, action="token_rotated",
                                     audit={"token": name, "old_id": old.id, "new_id": token_id, **old_state})
            self._rows[token_id] = row
        return f"{TOKEN_PREFIX}_{token_id}_{secret}", row
