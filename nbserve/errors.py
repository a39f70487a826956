"""The one exception tree of nbserve.

Every error a user can meet is an :class:`NbserveError`. Each class knows the HTTP
status the agent answers with, so the agent maps errors to responses in one place and
the client maps them back to the same class: a ``DeploymentNotFound`` raised on a remote
host reaches the notebook as a ``DeploymentNotFound``.

Messages say what went wrong; ``hint`` says what to do about it.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "NbserveError",
    "InvalidArgument",
    "ModelNotServable",
    "SchemaMismatch",
    "NotFound",
    "DeploymentNotFound",
    "VersionNotFound",
    "ScheduleNotFound",
    "Conflict",
    "BundleError",
    "DeployFailed",
    "EnvironmentFailed",
    "AgentError",
    "AgentUnreachable",
    "AgentStartFailed",
    "AuthenticationFailed",
    "PermissionDenied",
    "PredictionFailed",
    "InvalidArchive",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "LengthRequired",
    "TokenNotFound",
    "TargetNotFound",
    "TLSVerificationFailed",
    "InsufficientStorage",
    "RegistryDamaged",
    "error_from_payload",
    "NbserveWarning",
]


class NbserveError(Exception):
    """Base class of every nbserve error."""

    status: ClassVar[int] = 500

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message

    def to_payload(self) -> dict[str, Any]:
        """The JSON body the agent answers with."""
        return {
            "error": {
                "type": type(self).__name__,
                "message": self.message,
                "hint": self.hint,
                "details": self.details,
            }
        }


# -- the caller's mistakes (4xx) -------------------------------------------------------


class InvalidArgument(NbserveError):
    """An argument has a wrong type or value."""

    status = 400


class ModelNotServable(InvalidArgument):
    """The object cannot be served: no ``predict``, or it cannot be saved."""

    status = 422


class SchemaMismatch(InvalidArgument):
    """Data does not match the input schema taken from the deploy-time sample."""

    status = 422


class InvalidArchive(InvalidArgument):
    """An uploaded Bento archive was refused: truncated, wrong digest, or unsafe members
    (paths out of the tree, links, devices, a decompression bomb). Nothing was imported."""

    status = 400


class PayloadTooLarge(InvalidArgument):
    """A request body or upload is larger than the agent accepts."""

    status = 413


class UnsupportedMediaType(InvalidArgument):
    """A request body of a content type the route does not take."""

    status = 415


class LengthRequired(InvalidArgument):
    """An upload without a Content-Length (its size is checked before it is read)."""

    status = 411


class NotFound(NbserveError):
    """Something named does not exist."""

    status = 404


class DeploymentNotFound(NotFound):
    """No deployment has that name."""


class VersionNotFound(NotFound):
    """The deployment has no such version, or none that can serve."""


class ScheduleNotFound(NotFound):
    """No schedule has that name, or it has no such run."""


class TokenNotFound(NotFound):
    """No access token of that name on the agent."""


class TargetNotFound(NotFound):
    """No target of that name is configured on this machine (`nbserve target list`)."""


class Conflict(NbserveError):
    """The request clashes with the current state (a port in use, a deploy under way)."""

    status = 409


class AuthenticationFailed(NbserveError):
    """The agent refused the token: missing, wrong, expired or revoked."""

    status = 401


class PermissionDenied(NbserveError):
    """The token is valid but its role does not allow this action."""

    status = 403


# -- things that failed while doing what was asked -------------------------------------


class BundleError(NbserveError):
    """Saving the model or building its Bento failed; nothing was deployed."""

    status = 500


class DeployFailed(NbserveError):
    """A new version did not become live; the previous version keeps serving."""

    status = 500


class EnvironmentFailed(DeployFailed):
    """The environment a version needs (its Python and pinned packages) could not be built:
    the installer's reason is in the message, its whole output in ``details["installer"]``."""

    status = 424  # the version depends on packages that could not be had


class InsufficientStorage(NbserveError):
    """A disk the agent writes to is full: nothing was half-written, nothing that serves
    changed. ``details`` say where (``path``) and, when known, how much was needed."""

    status = 507


class RegistryDamaged(NbserveError):
    """The registry file failed SQLite's integrity check: the agent refuses to start
    rather than lose or invent state. ``details["path"]`` names the file."""

    status = 500


class PredictionFailed(NbserveError):
    """The serving endpoint answered a prediction with an error."""

    status = 502


class AgentError(NbserveError):
    """The agent failed or could not be reached."""

    status = 500


class AgentUnreachable(AgentError):
    """No agent answers at the configured address."""

    status = 503


class TLSVerificationFailed(AgentUnreachable):
    """The agent's certificate did not match the pinned fingerprint or the trusted CA.

    Nothing was sent: a mismatch is never downgraded to an unverified connection."""

    status = 502


class AgentStartFailed(AgentError):
    """The local agent was started on demand but did not come up."""

    status = 503


def _all_subclasses(cls: type[NbserveError]) -> dict[str, type[NbserveError]]:
    found = {cls.__name__: cls}
    for sub in cls.__subclasses__():
        found.update(_all_subclasses(sub))
    return found


def error_from_payload(status: int, payload: Any) -> NbserveError:
    """Rebuild the typed error the agent sent; unknown shapes become an ``AgentError``."""
    body = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        cls = _all_subclasses(NbserveError).get(str(body.get("type")), None)
        if cls is None:
            cls = AgentError
        details = body.get("details") if isinstance(body.get("details"), dict) else {}
        return cls(body["message"], hint=body.get("hint"), **details)
    return AgentError(f"the agent answered HTTP {status}: {str(payload)[:300]}")


class NbserveWarning(UserWarning):
    """Something worked but deserves a look: e.g. a batching budget too small for the model."""
