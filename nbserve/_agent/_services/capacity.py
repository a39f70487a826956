"""How much a deployment runs with: workers and caps (scale), scale to zero and waking on
the next request, the host's memory budget, a server over its memory cap, and a batching
server's overload reports."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..._windows import parse_window
from ...errors import NbserveError
from .._engine import ServedVersion
from .._limits import Limits
from .._proxy import StableEndpoint
from .checks import ReleaseChecks
from .fleet import Fleet
from .settings import RESTARTING_SETTINGS, serving_text

OVERLOAD_REPORT_SECONDS = 60.0  # a batching server's 503s are reported at most this often


class Capacity:
    def __init__(self, fleet: Fleet, checks: ReleaseChecks) -> None:
        self.fleet = fleet
        self.registry = fleet.registry
        self.checks = checks
        self.memory_budget: int | None = None  # bytes for every server together (nbserve agent --memory-budget)

    async def scale(self, name: str, changes: dict[str, Any], *, actor: str | None) -> None:
        """Change workers or caps and restart the live version's server with them: the new
        server starts beside the old, takes the traffic once ready, then the old one drains.
        ``engine`` moves the live version to another engine the same way (and the next
        versions go there too)."""
        fleet = self.fleet
        row = fleet.get_row(name)
        live = row.live_version
        was_on = fleet.engine_of(name, live) if live is not None else None
        engine = changes.get("engine") or was_on
        if engine is not None:
            fleet.engine.get(engine)  # one this agent lacks is a 400 before anything changes
        if live is not None and (changes.get("autoscaling") or (fleet.config(name)["autoscaling"]
                                                                and engine != was_on)):
            fleet.check_autoscaling(engine, f"v{live} of {name}")
        if engine is not None:
            fleet.check_caps(engine, {**fleet.config(name), **changes}, f"v{live} of {name}")
        before = row.config
        old = fleet.config(name)
        new = fleet.configure(name, changes, actor=actor)
        moving = live is not None and engine != was_on
        if all(old[key] == new[key] for key in RESTARTING_SETTINGS) and not moving:
            return  # only the idle timeout (or the next versions' engine) changed: the running server stays
        async with fleet.lock(name):
            row = fleet.get_row(name)
            if moving and row.live_version == live:
                self.registry.set_version_engine(name, live, engine)  # a cold one starts there when woken
            if row.state != "serving" or fleet.is_cold(name) or row.live_version is None:
                return  # applied at the next start
            try:
                proc = await self.replace_live_locked(name, row.live_version, reason="scaled")
            except NbserveError:
                # the old server keeps serving; so must its settings, or the next start fails too
                self.registry.update_deployment(name, config=before)
                if moving and was_on is not None:
                    self.registry.set_version_engine(name, live, was_on)
                raise
            if moving:
                self.registry.add_event(
                    "moved", f"v{proc.version} moved from the {was_on} engine to the {engine} engine "
                    "(the new server took the traffic, the old one drained)", deployment=name,
                    version=proc.version, actor=actor, data={"from": was_on, "to": engine})
            if proc.batching and proc.batching != old["batching"]:
                await self.checks.batching(name, proc.version, proc, actor)  # as a deploy does

    async def replace_live_locked(self, name: str, number: int, *, reason: str) -> ServedVersion:
        """Start a second server of a version with today's settings, switch to it, drain the first."""
        fleet = self.fleet
        version = fleet.get_version(name, number)
        endpoint = await fleet.endpoint(fleet.get_row(name))
        old = fleet.process(name, number)
        proc = await fleet.start(name, number, version.bento_tag, replace=True)
        fleet.switch(endpoint, proc)
        if old is not None and old is not proc:
            await fleet.drain_and_stop(endpoint, old)
        self.registry.add_event(
            "scaled" if reason == "scaled" else "restarted",
            f"v{number} now runs {proc.workers} worker(s)" + serving_text(proc.limits, proc.batching)
            + f" ({reason})",
            deployment=name, version=number,
            data={"workers": proc.workers, "memory": proc.limits.memory, "cpus": proc.limits.cpus,
                  "batching": proc.batching,
                  "enforcement": fleet.engine.enforcement_of(proc), "ready_seconds": proc.ready_seconds},
        )
        return proc

    def report_overloads(self) -> None:
        """Turn the 503s a batching server answers (its latency budget ran out) into a
        ``batch_overloaded`` event saying what to change: at once, then at most once a minute."""
        now = time.monotonic()
        for name, state in list(self.fleet.states.items()):
            endpoint = state.endpoint
            if endpoint is None:
                continue
            counts, endpoint.refused = endpoint.refused, {}
            last, pending = state.overloads or (float("-inf"), {})
            if not counts and not pending:
                continue
            batching = self.fleet.config(name)["batching"]
            if not batching:  # another server's 503s (the monitor counts them as errors), or batching is off now
                state.overloads = None
                continue
            for label, n in counts.items():
                pending[label] = pending.get(label, 0) + n
            if now - last < OVERLOAD_REPORT_SECONDS:  # reported later, with what follows
                state.overloads = (last, pending)
                continue
            state.overloads = (now, {})
            for label, refused in sorted(pending.items()):
                self.registry.add_event(
                    "batch_overloaded",
                    f"v{label} answered {refused} request(s) 503: its batches did not finish within "
                    f"max_latency_ms={batching['max_latency_ms']:g} under this load; raise it "
                    f"(dep.scale(max_latency_ms=...)), lower max_batch_size or add workers",
                    deployment=name, version=int(label), data={"refused": refused, **batching},
                )

    def on_memory_limit(self, proc: ServedVersion, what: str) -> None:
        """The engine saw a server over its memory cap: record it, then restart (or stop) it."""
        name, number = proc.deployment, proc.version
        self.registry.add_event("memory_exceeded", f"v{number}: {what}; restarting it",
                                deployment=name, version=number,
                                data={"memory": proc.limits.memory, "enforcement": self.fleet.engine.enforcement})
        proc.limits = Limits(None, proc.limits.cpus)  # report once; the replacement has its own cap

        async def restart() -> None:
            async with self.fleet.lock(name):
                row = self.fleet.get_row(name)
                if row.state != "serving" or self.fleet.closing:
                    return
                if row.live_version == number or row.rollout.get("version") == number:
                    try:
                        await self.replace_live_locked(name, number, reason="over its memory cap")
                    except NbserveError as exc:
                        self.registry.add_event("restart_failed", f"v{number} did not restart: {exc.message}",
                                                deployment=name, version=number)
                else:
                    await self.fleet.engine.stop(proc)
                    self.registry.set_version_status(name, number, "stopped")

        self.fleet.spawn(restart())

    async def scale_down(self) -> None:
        """Cool idle deployments (``idle_timeout``) and, over the host's memory budget, the
        least recently used ones (never the most recent)."""
        fleet = self.fleet
        now = asyncio.get_running_loop().time()
        warm = []
        for row in self.registry.list_deployments():
            endpoint = fleet.endpoint_of(row.name)
            if (row.state != "serving" or row.rollout or fleet.is_cold(row.name) or endpoint is None
                    or endpoint.upstream is None):
                continue
            active_since = fleet.state(row.name).active_since
            last = max(endpoint.last_request, now if active_since is None else active_since)
            warm.append((last, row.name))
            timeout = fleet.config(row.name)["idle_timeout"]
            if timeout and now - last >= parse_window(timeout) and endpoint.inflight() == 0:
                await self.cool(row.name, f"no requests for {timeout}")
        if self.memory_budget is None:
            return
        warm = [(last, name) for last, name in sorted(warm) if not fleet.is_cold(name)]
        used = sum(p.rss_bytes() for p in fleet.engine.processes.values())
        for _last, name in warm[:-1]:  # the most recently used stays warm
            if used <= self.memory_budget:
                break
            freed = sum(p.rss_bytes() for p in fleet.running(name))
            await self.cool(name, f"the host's memory budget ({self.memory_budget // 2**20} MiB) was exceeded")
            used -= freed

    async def cool(self, name: str, reason: str) -> None:
        """Scale to zero: stop every server of the deployment; its stable URL holds the next
        request, starts the live version again and then answers it."""
        fleet = self.fleet
        async with fleet.lock(name):
            row = fleet.get_row(name)
            endpoint = fleet.endpoint_of(name)
            if row.state != "serving" or row.rollout or fleet.is_cold(name) or endpoint is None:
                return
            self.make_cold(endpoint)
            for proc in fleet.running(name):
                await fleet.drain_and_stop(endpoint, proc)
                if proc.version != row.live_version:
                    self.registry.set_version_status(name, proc.version, "stopped")
            self.registry.add_event("scaled_to_zero", f"every server stopped: {reason}; the next request "
                                    f"starts v{row.live_version} again", deployment=name,
                                    version=row.live_version, data={"reason": reason})

    def make_cold(self, endpoint: StableEndpoint) -> None:
        """No server behind the stable URL; the next request starts the live version."""
        name = endpoint.name
        self.fleet.state(name).cold = True
        endpoint.set_upstream(None)
        endpoint.set_waker(lambda: self.fleet.spawn(self._wake(name)))

    async def _wake(self, name: str) -> None:
        fleet = self.fleet
        loop = asyncio.get_running_loop()
        started = loop.time()
        endpoint = fleet.endpoint_of(name)
        assert endpoint is not None
        async with fleet.lock(name):
            row = fleet.get_row(name)
            if not fleet.is_cold(name):
                return
            try:
                version = fleet.get_version(name, row.live_version)  # type: ignore[arg-type]
                proc = await fleet.start(name, version.number, version.bento_tag)
            except NbserveError as exc:
                endpoint.wake_failed(f"{name} could not be started: {exc.message}", exc.hint or "see its log")
                self.registry.add_event("wake_failed", f"v{row.live_version} did not start: {exc.message}",
                                        deployment=name, version=row.live_version)
                return
            held = endpoint.held()
            fleet.switch(endpoint, proc)  # held requests go now; no longer cold
            seconds = fleet.state(name).cold_start_seconds = loop.time() - started
            self.registry.add_event(
                "woken", f"v{version.number} started again in {seconds:.1f} s for {held} waiting connection(s)",
                deployment=name, version=version.number,
                data={"cold_start_seconds": seconds, "held": held, "ready_seconds": proc.ready_seconds},
            )

    def host_resources(self) -> list[dict[str, Any]]:
        """Per deployment, now: state, workers, caps, CPU, RSS, processes, idle seconds."""
        fleet = self.fleet
        now = asyncio.get_running_loop().time() if any(s.endpoint for s in fleet.states.values()) else 0.0
        out = []
        for row in self.registry.list_deployments():
            config = fleet.config(row.name)
            procs = fleet.running(row.name)
            state = fleet.state(row.name)
            endpoint = state.endpoint
            status = ("stopped" if row.state == "stopped" else "cold" if state.cold
                      else "warm" if procs else "starting")
            current = [fleet.monitor.resources_now.get((row.name, p.version), {}) for p in procs]
            last = endpoint.last_request if endpoint is not None and endpoint.last_request else None
            out.append({
                "deployment": row.name, "state": status, "live_version": row.live_version,
                "servers": len(procs), "workers": int(config["workers"]),
                "cpu_percent": sum(c.get("cpu_percent", 0.0) for c in current),
                "rss_bytes": sum(p.rss_bytes() for p in procs),
                "processes": sum(p.process_count for p in procs),
                "memory_cap": config["memory"], "cpus_cap": config["cpus"],
                "enforcement": ", ".join(sorted({fleet.engine.enforcement_of(p) for p in procs}))
                               or fleet.engine.enforcement if (config["memory"] or config["cpus"]) else None,
                "idle_timeout": config["idle_timeout"],
                "batching": config["batching"],
                "idle_seconds": (now - last) if last is not None else None,
                "held": endpoint.held() if endpoint is not None else 0,
                "last_cold_start_seconds": state.cold_start_seconds,
                "environments": sorted({p.environment or "agent" for p in procs}),
                "engine": "+".join(sorted({p.engine for p in procs})) or (
                    fleet.engine_of(row.name, row.live_version) if row.live_version else
                    config["engine"] or fleet.engine.default),
                "autoscaling": config["autoscaling"],
                "replicas": [{"version": p.version, **r} for p in procs for r in getattr(p, "replicas", [])],
                "models": [{"version": p.version, "server": p.server.name, **_model_fields(p.model)}
                           for p in procs if hasattr(p, "model")],
            })
        return out


def _model_fields(model: dict[str, Any]) -> dict[str, Any]:
    """What a shared server says of a model, as ``SharedModelOut`` has it (unknown before its first look)."""
    return {"loaded": bool(model.get("loaded")), "memory_bytes": model.get("memory_bytes"),
            "requests": int(model.get("requests") or 0), "loads": int(model.get("loads") or 0),
            "evictions": int(model.get("evictions") or 0), "load_seconds": model.get("load_seconds")}
