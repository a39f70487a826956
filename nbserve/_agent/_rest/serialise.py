"""What the services return, as the API's response models (shared by several routers)."""

from __future__ import annotations

from typing import Any

from ..._events import severity_of
from .._manager import DeploymentView
from .._registry import EventRow, VersionRow
from .models import DeploymentOut, EventOut, VersionOut


def version_out(view_or_none: DeploymentView | None, v: VersionRow,
                preparing: dict[str, Any] | None = None) -> VersionOut:
    proc = view_or_none.running.get(v.number) if view_or_none else None
    rollout = view_or_none.row.rollout if view_or_none else {}
    status = rollout["mode"] if rollout and rollout.get("version") == v.number else v.status
    return VersionOut(
        deployment=v.deployment, number=v.number, created_at=v.created_at, created_by=v.created_by,
        bento_tag=v.bento_tag, status=status, error=v.error,  # type: ignore[arg-type]
        running=proc is not None, ready=bool(proc and proc.ready),
        upstream_url=proc.url if proc else None, metadata=v.metadata,
        environment=(proc.environment or "agent") if proc else None, preparing=preparing,
        engine=proc.engine if proc else v.placed_on,
    )


def deployment_out(view: DeploymentView) -> DeploymentOut:
    return DeploymentOut(
        name=view.row.name, url=view.url, status=view.status,  # type: ignore[arg-type]
        live_version=view.row.live_version,
        latest_version=view.versions[-1].number if view.versions else None,
        created_at=view.row.created_at, keep_warm=view.row.keep_warm,
        rollout=view.row.rollout or None, aliases=view.row.aliases,
        versions=[version_out(view, v) for v in view.versions],
    )


def event_out(e: EventRow) -> EventOut:
    return EventOut(**e.__dict__, severity=severity_of(e.kind))
