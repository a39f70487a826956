"""Canaries and shadows: start one beside the live version, judge it against its gates,
promote it or take it out of traffic. The rules (gates, shadow comparison) are pure
functions in ``_agent/_rollout.py``; this room applies them to running versions.

Methods named ``*_locked`` expect the caller to hold the deployment's lock."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..._settings import ReleasePlan
from ..._windows import parse_window
from ...errors import Conflict, DeployFailed, NbserveError
from .._engine import ServedVersion
from .._insights import summary
from .._proxy import StableEndpoint
from .._quality import quality_rows
from .._registry import DeploymentRow, VersionRow
from .._rollout import ShadowStats, check_gates, evaluate_gates
from .fleet import Fleet, upstream_of
from .readings import Readings

log = logging.getLogger("nbserve.agent")


class Rollouts:
    def __init__(self, fleet: Fleet, readings: Readings) -> None:
        self.fleet = fleet
        self.registry = fleet.registry
        self.readings = readings

    def begin_locked(self, name: str, endpoint: StableEndpoint, proc: ServedVersion, plan: ReleasePlan,
                     actor: str | None) -> None:
        """Give a ready new version its share of traffic (canary) or a copy of it (shadow)."""
        mode = "shadow" if plan.shadow else "canary"
        if mode == "canary":
            endpoint.set_canary(upstream_of(proc), plan.canary or 0.0, sticky_header=plan.sticky_header)
        else:
            stats = self.fleet.state(name).shadow = ShadowStats(proc.version)
            endpoint.set_shadow(upstream_of(proc), stats.record)
        self.registry.set_version_status(name, proc.version, "warm")  # running, not (yet) live
        rollout = {"mode": mode, "version": proc.version, "percent": plan.canary,
                   "sticky_header": plan.sticky_header, "auto_promote": plan.auto_promote,
                   "started_at": time.time(), "started_by": actor}
        self.registry.update_deployment(name, rollout=rollout)
        live = self.fleet.get_row(name).live_version
        what = f"{plan.canary:g}% of requests" if mode == "canary" else "a copy of live traffic"
        self.registry.add_event(
            f"{mode}_started", f"v{proc.version} gets {what}; v{live} stays live"
            + (" (promoted automatically when the gates pass)" if plan.auto_promote else ""),
            deployment=name, version=proc.version, actor=actor, data=rollout,
        )

    def rollout(self, name: str) -> dict[str, Any] | None:
        """The canary or shadow under way, its gates and its figures so far; None if none."""
        row = self.fleet.get_row(name)
        if not row.rollout:
            return None
        gates = check_gates(self.fleet.config(name)["gates"])
        figures = self._figures(name, row, gates)
        verdict, reasons = evaluate_gates(gates, figures)
        return {**row.rollout, "gates": gates, "figures": figures, "verdict": verdict, "reasons": reasons}

    def _figures(self, name: str, row: DeploymentRow, gates: dict[str, Any]) -> dict[str, Any]:
        rollout = row.rollout
        started = float(rollout["started_at"])
        age = time.time() - started
        since = max(started, time.time() - parse_window(gates["window"]))
        if rollout["mode"] == "shadow":
            stats = self.fleet.state(name).shadow
            shadow = stats.to_dict() if stats else {}
            endpoint = self.fleet.endpoint_of(name)
            shadow["dropped"] = endpoint.shadow_dropped if endpoint is not None else 0
            return {"requests": shadow.get("compared", 0), "p99_ms": shadow.get("p99_ms"),
                    "error_rate": shadow.get("error_rate"), "drift_share": None, "age_seconds": age,
                    "shadow": shadow}
        monitor = self.fleet.monitor
        panes = monitor.panes(name, since, version=rollout["version"])
        out = summary(panes, window=time.time() - since)  # counts only the panes inside the window
        figures = {"requests": out["requests"], "p99_ms": out["p99_ms"], "p50_ms": out["p50_ms"],
                   "error_rate": out["error_rate"], "drift_share": None, "age_seconds": age}
        if gates.get("drift_share") is not None:
            try:
                report = self.readings.drift(name, time.time() - since, version=rollout["version"])
                figures["drift_share"] = report.attrs.get("drift_share")
            except NbserveError:
                pass  # too few sampled rows yet: the gate waits
        if gates.get("quality"):
            labelled = monitor.labelled(name, since, version=rollout["version"])
            _, rows = quality_rows(labelled, bucket_seconds=1e12,
                                   task=self.readings.task(name, rollout["version"]),
                                   metrics=list(gates["quality"]))
            figures["labelled"] = rows[0]["labelled"] if rows else 0
            figures["quality"] = {k: v for k, v in (rows[0] if rows else {}).items()
                                  if k not in ("time", "version", "labelled")}
        return figures

    async def promote(self, name: str, *, actor: str | None, reason: str = "promoted") -> VersionRow:
        async with self.fleet.lock(name):
            return await self.promote_locked(name, actor=actor, reason=reason)

    async def promote_locked(self, name: str, *, actor: str | None, reason: str,
                             figures: dict[str, Any] | None = None) -> VersionRow:
        row = self.fleet.get_row(name)
        if not row.rollout:
            raise Conflict(f"{name} has no canary or shadow to promote",
                           hint="deploy with canary=N or shadow=True first")
        number = row.rollout["version"]
        proc = self.fleet.process(name, number)
        if proc is None or not proc.alive():
            await self.abort_locked(name, "its server is not running", actor=actor)
            raise DeployFailed(f"v{number} cannot be promoted: its server is not running",
                               hint=f"see `nbserve logs {name} --version {number}`")
        if figures is None:  # the gate watcher passes the figures it judged by
            gates = check_gates(self.fleet.config(name)["gates"])
            figures = await asyncio.to_thread(self._figures, name, row, gates)
        endpoint = await self.fleet.endpoint(row)
        endpoint.set_canary(None)
        endpoint.set_shadow(None)
        self.fleet.state(name).shadow = None
        previous = self.fleet.make_live(name, endpoint, proc)
        self.registry.update_deployment(name, rollout={})
        self.registry.add_event(
            "promoted", f"v{number} promoted ({reason}); was v{previous}",
            deployment=name, version=number, actor=actor,
            data={"previous": previous, "reason": reason, "figures": figures, "mode": row.rollout["mode"]},
        )
        await self.fleet.reap(name)
        return self.fleet.get_version(name, number)

    async def abort(self, name: str, *, actor: str | None, reason: str = "aborted") -> None:
        async with self.fleet.lock(name):
            if not self.fleet.get_row(name).rollout:
                raise Conflict(f"{name} has no canary or shadow to abort")
            await self.abort_locked(name, reason, actor=actor)

    async def abort_locked(self, name: str, reason: str, *, actor: str | None, kind: str = "aborted",
                           figures: dict[str, Any] | None = None) -> None:
        """Take the new version out of the traffic path at once, then drain and stop it."""
        row = self.fleet.get_row(name)
        rollout = row.rollout
        endpoint = self.fleet.endpoint_of(name)
        if endpoint is not None:
            endpoint.set_canary(None)
            endpoint.set_shadow(None)
        self.fleet.state(name).shadow = None
        self.registry.update_deployment(name, rollout={})
        number = rollout["version"]
        self.registry.set_version_status(name, number, "stopped", error=f"{kind}: {reason}")
        self.registry.add_event(
            kind, f"v{number} {rollout['mode']} ended: {reason}; v{row.live_version} keeps serving",
            deployment=name, version=number, actor=actor,
            data={"reason": reason, "figures": figures or {}, "mode": rollout["mode"]},
        )
        await self.fleet.retire(name, number, "stopped")

    async def set_canary(self, name: str, percent: float, *, actor: str | None) -> None:
        async with self.fleet.lock(name):
            row = self.fleet.get_row(name)
            if row.rollout.get("mode") != "canary":
                raise Conflict(f"{name} has no canary under way", hint="deploy with canary=N first")
            ReleasePlan(canary=percent)  # validates
            number = row.rollout["version"]
            proc = self.fleet.process(name, number)
            endpoint = await self.fleet.endpoint(row)
            if proc is not None:
                endpoint.set_canary(upstream_of(proc), float(percent), sticky_header=row.rollout.get("sticky_header"))
            self.registry.update_deployment(name, rollout={**row.rollout, "percent": float(percent)})
            self.registry.add_event("canary_changed", f"v{number} now gets {float(percent):g}% of requests",
                                    deployment=name, version=number, actor=actor,
                                    data={"before": row.rollout.get("percent"), "after": float(percent)})

    async def judge_all(self) -> None:
        """Judge every canary and shadow against its gates; roll back or promote on its own."""
        for row in self.registry.list_deployments():
            if not row.rollout or row.state != "serving":
                continue
            try:
                await self._judge(row.name)
            except Exception:  # noqa: BLE001 - one deployment's failure must not stop the others
                log.exception("gate check of %s failed", row.name)

    async def _judge(self, name: str) -> None:
        async with self.fleet.lock(name):
            row = self.fleet.get_row(name)
            if not row.rollout:
                return
            gates = check_gates(self.fleet.config(name)["gates"])
            figures = await asyncio.to_thread(self._figures, name, row, gates)
            verdict, reasons = evaluate_gates(gates, figures)
            if verdict == "breach":
                await self.abort_locked(name, "; ".join(reasons), actor="nbserve-gates", kind="gate_breached",
                                        figures=figures)
            elif verdict == "pass" and row.rollout.get("auto_promote"):
                await self.promote_locked(name, actor="nbserve-gates",
                                          reason=f"gates passed for {gates['window']}", figures=figures)

    def resume(self, row: DeploymentRow) -> None:
        """After an agent restart: keep the canary (or shadow) going if its server was adopted."""
        number = row.rollout["version"]
        proc = self.fleet.process(row.name, number)
        endpoint = self.fleet.endpoint_of(row.name)
        if proc is None or endpoint is None or row.state != "serving":
            self.registry.update_deployment(row.name, rollout={})
            self.registry.set_version_status(row.name, number, "stopped", error="aborted: agent restarted")
            self.registry.add_event("aborted", f"v{number} {row.rollout['mode']} ended: the agent restarted "
                                    "and its server was gone", deployment=row.name, version=number)
            return
        if row.rollout["mode"] == "canary":
            endpoint.set_canary(upstream_of(proc), float(row.rollout.get("percent") or 0.0),
                                sticky_header=row.rollout.get("sticky_header"))
        else:
            stats = self.fleet.state(row.name).shadow = ShadowStats(number)  # comparisons restart from zero
            endpoint.set_shadow(upstream_of(proc), stats.record)
        self.registry.add_event(f"{row.rollout['mode']}_resumed", f"v{number} {row.rollout['mode']} resumed "
                                "after an agent restart", deployment=row.name, version=number)
