"""What a panel's periodic poll needs, in one answer (``GET /v1/state``): every deployment the
caller sees, compact (status, live version, stable URL, version statuses, the rollout under
way, aliases, the 5-minute summary, its newest event id, its resources now), and every
schedule with its last run. One request instead of one or two per deployment.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import NbserveError
from ._manager import DeploymentView, Manager
from ._principal import Principal

SUMMARY_WINDOW = "5m"
#: The rollout as the deployment's row has it; the figures and gates' verdict are the
#: detail route's (``GET /v1/deployments/{name}/rollout``).
ROLLOUT_BRIEF = ("mode", "version", "percent", "started_at", "auto_promote", "sticky_header")


async def panel_state(manager: Manager, scheduler: Any, who: Principal) -> dict[str, Any]:
    """Deployments (only those ``who`` sees) and schedules (only for a caller that may list
    them: ``GET /v1/schedules`` needs every deployment) as plain JSON-ready dicts."""
    # views and resources read the supervisor's processes and the loop's clock: in the loop
    views = [v for v in manager.fleet.views() if who.sees(v.row.name)]
    resources = {r["deployment"]: r for r in manager.capacity.host_resources()}
    latest = manager.registry.latest_event_ids()
    # the summaries read the monitor's panes from disk: off the loop, as their own route does
    summaries = await asyncio.to_thread(_summaries, manager, [v.row.name for v in views])
    deployments = [
        {**_brief(v), "summary": summaries.get(v.row.name), "latest_event_id": latest.get(v.row.name),
         "resources": resources.get(v.row.name)}
        for v in views
    ]
    schedules = _schedules(scheduler) if scheduler is not None and who.deployments is None else []
    return {"deployments": deployments, "schedules": schedules}


def _brief(view: DeploymentView) -> dict[str, Any]:
    rollout = view.row.rollout or None
    return {
        "name": view.row.name,
        "status": view.status,
        "live_version": view.row.live_version,
        "url": view.url,
        "versions": [{"number": v.number, "status": _version_status(view, v.number, v.status)}
                     for v in view.versions],
        "rollout": {key: rollout.get(key) for key in ROLLOUT_BRIEF} if rollout else None,
        "aliases": dict(view.row.aliases),
    }


def _version_status(view: DeploymentView, number: int, status: str) -> str:
    """A version under a canary or shadow shows that mode, as ``VersionOut`` does."""
    rollout = view.row.rollout
    return rollout["mode"] if rollout and rollout.get("version") == number else status


def _summaries(manager: Manager, names: list[str]) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {}
    for name in names:
        try:
            out[name] = manager.readings.summary(name, SUMMARY_WINDOW)
        except NbserveError:  # removed meanwhile, or its monitoring could not answer
            out[name] = None
    return out


def _schedules(scheduler: Any) -> list[dict[str, Any]]:
    out = []
    for row in scheduler.schedules():
        runs = scheduler.runs(row.name, limit=1)
        out.append({**row.__dict__, "running_run": scheduler.running(row.name),
                    "last_run": runs[-1].__dict__ if runs else None})
    return out
