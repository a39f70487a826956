"""Access and governance from Python: tokens, the audit log, targets.

Thin calls to an agent (``target=None`` is the local one); the CLI's ``token``, ``audit``
and ``target`` commands are these functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._connection import connect
from ._targets import Target, add_target, list_targets, remove_target
from ._windows import parse_window

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["audit", "create_token", "list_tokens", "revoke_token", "rotate_token", "verify_audit",
           "add_target", "list_targets", "remove_target", "Target"]


def _expiry_seconds(expires: str | float | None) -> float | None:
    if expires is None or expires == "never":
        return None
    if isinstance(expires, (int, float)):
        return float(expires)
    return parse_window(expires)


def create_token(name: str, role: str, *, deployments: list[str] | None = None,
                 expires: str | float | None = "90d", target: str | None = None) -> dict[str, Any]:
    """A new access token (``role``: admin, deployer, viewer or predict), optionally limited to
    ``deployments``; ``expires`` like "30d", seconds, or "never". The secret is in ``["token"]``,
    shown this once."""
    body = {"name": name, "role": role, "deployments": deployments, "expires_in": _expiry_seconds(expires)}
    return connect(target).post("/v1/tokens", json=body)


def list_tokens(*, all: bool = False, target: str | None = None) -> list[dict[str, Any]]:  # noqa: A002
    """Tokens without secrets; ``all`` includes revoked and expired ones."""
    return connect(target).get("/v1/tokens", params={"all": str(all).lower()})


def revoke_token(name: str, *, target: str | None = None) -> list[dict[str, Any]]:
    """Revoke the token(s) called ``name`` (or with that id) at once."""
    return connect(target).request("DELETE", f"/v1/tokens/{name}")


def rotate_token(name: str, *, grace: str | float = 0, target: str | None = None) -> dict[str, Any]:
    """A new secret for ``name``; the old one stops now, or after ``grace`` ("10m", seconds)."""
    seconds = parse_window(grace) if isinstance(grace, str) else float(grace)
    return connect(target).post(f"/v1/tokens/{name}/rotate", json={"grace": seconds})


def audit(deployment: str | None = None, *, limit: int = 200, target: str | None = None) -> "pd.DataFrame":
    """Who changed what, when and from where, with the live version before and after."""
    params: dict[str, Any] = {"limit": limit}
    if deployment is not None:
        params["deployment"] = deployment
    return audit_frame(connect(target).get("/v1/audit", params=params))


def audit_frame(records: list[dict[str, Any]]) -> "pd.DataFrame":
    import pandas as pd

    frame = pd.DataFrame(records)
    if not frame.empty:
        frame["ts"] = pd.to_datetime(frame["ts"])
        for column in ("version", "before", "after"):
            frame[column] = frame[column].astype("Int64")
        frame = frame.set_index("seq")
    return frame


def verify_audit(*, target: str | None = None) -> dict[str, Any]:
    """Recompute the audit log's hash chain: ``ok``, ``records``, ``head``, ``broken_at``."""
    return connect(target).get("/v1/audit/verify")


def environments(*, target: str | None = None) -> list[dict[str, Any]]:
    """The environments versions run in where the agent's own differs from their pins: key, Python,
    pins, disk used of its own, and the versions that need each (``nbserve envs list``)."""
    return connect(target).get("/v1/environments")


def prune_environments(*, target: str | None = None) -> dict[str, Any]:
    """Remove every environment no version needs; ``kept`` lists the ones versions need, with them."""
    return connect(target).post("/v1/environments/prune", timeout=300)

