"""Who is calling: the roles, the caller a token stands for, and the caller of the request
being handled (read by the registry when it writes an audit record). Apart from the tokens
themselves (``_access``) so the registry can attribute changes without importing them."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

# What each role may do. ``deploy`` covers every change to a deployment (deploy, promote,
# rollback, stop, start, canary, config, schedules); ``admin`` adds tokens and the agent.
ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset({"admin", "deploy", "view", "predict"}),
    "deployer": frozenset({"deploy", "view", "predict"}),
    "viewer": frozenset({"view"}),
    "predict": frozenset({"predict"}),
}


@dataclass(frozen=True)
class Principal:
    """The caller a token stands for."""

    name: str
    role: str
    deployments: tuple[str, ...] | None = None  # None: every deployment
    token_id: str | None = None  # None: the owner token
    source: str | None = None  # the client's address

    def can(self, permission: str, deployment: str | None = None) -> bool:
        if permission not in ROLES[self.role]:
            return False
        return deployment is None or self.deployments is None or deployment in self.deployments

    def sees(self, deployment: str | None) -> bool:
        """Whether rows about ``deployment`` may be shown to this caller at all."""
        return self.deployments is None or (deployment is not None and deployment in self.deployments)

    def actor(self, claimed: str | None) -> str:
        """The name history records. Only the owner token may name its user; a named token
        is recorded as itself, whatever the client claims."""
        if self.token_id is None:
            return claimed or self.name
        return self.name


# The caller of the request being handled; read by the registry when it writes an audit
# record, so changes made in background tasks a request started are still attributed.
current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("nbserve_principal", default=None)
