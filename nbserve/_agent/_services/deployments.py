"""A deployment's life: deploy a version (import, start, check, go live or begin a
canary), roll back, stop, start, revert a scheduled run's version, and after the agent
(re)starts, adopt or restart what was serving. Crashes of a server are restarted here.

Every change to a deployment happens under its lock, one at a time. A failure at any
step before the switch leaves the previous version serving."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from ..._config import Home
from ..._names import check_name
from ...errors import Conflict, DeployFailed, InvalidArgument, NbserveError, VersionNotFound
from .._engine import ServedVersion
from .._registry import DeploymentRow, VersionRow
from ..._settings import ReleasePlan
from .._supervisor import free_port
from .capacity import Capacity
from .checks import ReleaseChecks
from .fleet import RETRY_WAIT, Fleet
from .rollouts import Rollouts
from .settings import check_serving

log = logging.getLogger("nbserve.agent")

RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


class Deployments:
    def __init__(self, fleet: Fleet, checks: ReleaseChecks, rollouts: Rollouts, capacity: Capacity) -> None:
        self.fleet = fleet
        self.registry = fleet.registry
        self.checks = checks
        self.rollouts = rollouts
        self.capacity = capacity

    # -- deploy ---------------------------------------------------------------------

    async def deploy(
        self,
        name: str,
        archive: Path,
        *,
        actor: str | None,
        stable_port: int | None = None,
        remove_archive: bool = False,
        release: ReleasePlan | None = None,
        serving: dict[str, Any] | None = None,
    ) -> VersionRow:
        """Import a Bento archive and register it as the next version; roll it out in the
        background. Bad archives fail here, before any version exists."""
        check_name(name)
        if self.fleet.closing:
            raise Conflict("the agent is shutting down", hint="try again in a moment")
        if serving:
            check_serving(serving)  # a wrong one fails before anything exists
        engine = self._engine_for(name, serving or {})
        bento_tag, metadata = await asyncio.to_thread(_import_bento, archive, self.fleet.home)
        metadata["release"] = (release or ReleasePlan()).to_dict()  # part of the immutable record
        metadata["engine"] = engine  # where it was deployed to run (a canary may run elsewhere); scale(engine=...) may move it
        if remove_archive:
            archive.unlink(missing_ok=True)
        row = self.registry.get_deployment(name)
        if row is None:
            row = self._create(name, stable_port, actor)
        elif stable_port and stable_port != row.stable_port:
            raise Conflict(
                f"{name} already serves on port {row.stable_port}",
                hint="leave out --port, or stop and delete the deployment first",
            )
        if serving:
            self.fleet.configure(name, serving, actor=actor)  # before the version starts, so it starts with them
        version = self.registry.add_version(name, bento_tag, metadata, actor)
        self.registry.add_event(
            "version_registered", f"v{version.number} registered from {bento_tag}",
            deployment=name, version=version.number, actor=actor,
        )
        runtime = (metadata.get("model") or {}).get("runtime") or {}
        if runtime.get("fallback"):  # the kernel tried to compile it and serves the native model instead
            self.registry.add_event(
                "runtime_fallback", f"v{version.number} serves the native model: {runtime['fallback']}",
                deployment=name, version=version.number, actor=actor, data=runtime,
            )
        self.fleet.spawn(self._roll_out(name, version.number, actor))
        return version

    def _engine_for(self, name: str, serving: dict[str, Any]) -> str:
        """The engine a new version runs on: the deploy's choice, else the deployment's last,
        else the agent's default; one the agent lacks, or autoscaling off Ray, is a 400."""
        row = self.registry.get_deployment(name)
        config = {**(row.config if row is not None else {}), **serving}
        engine = config.get("engine") or self.fleet.engine.default
        self.fleet.engine.get(engine)
        if config.get("autoscaling"):
            self.fleet.check_autoscaling(engine, "this version")
        self.fleet.check_caps(engine, config, "this version")
        return engine

    def _create(self, name: str, stable_port: int | None, actor: str | None) -> DeploymentRow:
        port = stable_port or free_port(self.fleet.stable_host)
        taken = {d.stable_port for d in self.registry.list_deployments()}
        if port in taken:
            raise Conflict(f"port {port} is already the stable port of another deployment")
        row = self.registry.create_deployment(name, port)
        self.registry.add_event("deployment_created", f"stable URL {self.fleet.stable_url(row)}", deployment=name,
                                actor=actor)
        return row

    async def _roll_out(self, name: str, number: int, actor: str | None) -> None:
        fleet = self.fleet
        async with fleet.lock(name):
            version = fleet.get_version(name, number)
            plan = ReleasePlan(**version.metadata.get("release", {}))
            try:
                endpoint = await fleet.endpoint(fleet.get_row(name))
                proc = await fleet.start(name, number, version.bento_tag)
                await self.checks.parity(name, number, proc, plan, actor)
                if proc.batching:
                    await self.checks.batching(name, number, proc, actor)
            except NbserveError as exc:
                self._fail(name, number, exc, actor)
                return
            except Exception as exc:  # noqa: BLE001 - anything else is still a failed deploy
                log.exception("roll-out of %s v%s failed", name, number)
                self._fail(name, number, DeployFailed(f"{type(exc).__name__}: {exc}"), actor)
                return
            row = fleet.get_row(name)
            live = fleet.process(name, row.live_version) if row.live_version else None
            if plan.gradual and row.state == "serving" and live is not None and live.ready:
                if row.rollout:
                    await self.rollouts.abort_locked(name, f"superseded by v{number}", actor=actor)
                self.rollouts.begin_locked(name, endpoint, proc, plan, actor)
                return
            if plan.gradual:
                self.registry.add_event(
                    "rollout_skipped", f"v{number} goes live directly: no version serves to compare it with",
                    deployment=name, version=number, actor=actor,
                )
            if row.rollout:
                await self.rollouts.abort_locked(name, f"superseded by v{number}", actor=actor)
            previous = fleet.make_live(name, endpoint, proc)
            self.registry.add_event(
                "deployed",
                f"v{number} is live" + (f" (was v{previous})" if previous else ""),
                deployment=name, version=number, actor=actor,
                data={"previous": previous, "ready_seconds": proc.ready_seconds},
            )
            await fleet.reap(name)

    def _fail(self, name: str, number: int, exc: NbserveError, actor: str | None) -> None:
        self.registry.set_version_status(name, number, "failed", error=str(exc))
        live = self.fleet.get_row(name).live_version
        self.registry.add_event(
            "deploy_failed",
            f"v{number} did not go live: {exc.message}"
            + (f"; v{live} keeps serving" if live else ""),
            deployment=name, version=number, actor=actor, data=exc.details,
        )

    # -- rollback / stop / start / revert ---------------------------------------------

    async def rollback(self, name: str, to: int | None, *, actor: str | None) -> VersionRow:
        fleet = self.fleet
        async with fleet.lock(name):
            if fleet.get_row(name).rollout:
                await self.rollouts.abort_locked(name, "rollback requested", actor=actor)
            row = fleet.get_row(name)
            target = self._rollback_target(name, row, to)
            endpoint = await fleet.endpoint(row)
            proc = fleet.process(name, target.number)
            cold = proc is None or not proc.alive()
            if proc is None or cold:
                self.registry.add_event(
                    "restarting", f"v{target.number} is not running; starting it from its Bento",
                    deployment=name, version=target.number, actor=actor,
                )
                proc = await fleet.start(name, target.number, target.bento_tag)
            previous = fleet.make_live(name, endpoint, proc)
            self.registry.add_event(
                "rollback",
                f"rolled back from v{previous} to v{target.number}" + (" (cold start)" if cold else ""),
                deployment=name, version=target.number, actor=actor,
                data={"previous": previous, "cold": cold},
            )
            await fleet.reap(name)
            return fleet.get_version(name, target.number)

    def _rollback_target(self, name: str, row: DeploymentRow, to: int | None) -> VersionRow:
        versions = self.registry.list_versions(name)
        if to is not None:
            target = next((v for v in versions if v.number == to), None)
            if target is None:
                raise VersionNotFound(
                    f"{name} has no version {to}",
                    hint=f"versions: {', '.join(str(v.number) for v in versions)}",
                )
            if target.status in ("failed", "starting"):
                raise VersionNotFound(
                    f"v{to} of {name} never went live ({target.status}), so it cannot take traffic",
                    hint="roll back to a version that served before; see `nbserve history " + name + "`",
                )
            return target
        live = row.live_version or 0
        candidates = [v for v in versions if v.number < live and v.status not in ("failed", "starting")]
        if not candidates:
            raise VersionNotFound(
                f"{name} has no earlier version to roll back to (live: v{live})",
                hint="pass --to N to pick a version; see `nbserve history " + name + "`",
            )
        return candidates[-1]

    async def stop(self, name: str, *, actor: str | None) -> None:
        fleet = self.fleet
        async with fleet.lock(name):
            if fleet.get_row(name).rollout:
                await self.rollouts.abort_locked(name, "deployment stopped", actor=actor)
            row = fleet.get_row(name)
            state = fleet.state(name)
            state.cold = False
            if state.endpoint is not None:
                state.endpoint.set_upstream(None)
                state.endpoint.set_waker(None)  # stopped means 503, not "start on the next request"
            for proc in fleet.running(name):
                await fleet.retire(name, proc.version, "stopped")
            for version in self.registry.list_versions(name):
                if version.status in ("live", "warm"):
                    self.registry.set_version_status(name, version.number, "stopped")
            self.registry.update_deployment(name, state="stopped")
            self.registry.add_event(
                "stopped", "all serving processes stopped; the stable URL answers 503",
                deployment=name, version=row.live_version, actor=actor,
            )

    async def start(self, name: str, *, actor: str | None) -> None:
        fleet = self.fleet
        async with fleet.lock(name):
            row = fleet.get_row(name)
            if row.live_version is None:
                raise VersionNotFound(f"{name} has no version that served", hint="deploy a model first")
            version = fleet.get_version(name, row.live_version)
            endpoint = await fleet.endpoint(row)
            proc = await fleet.start(name, version.number, version.bento_tag)
            fleet.make_live(name, endpoint, proc)
            self.registry.add_event(
                "started", f"v{version.number} is serving again",
                deployment=name, version=version.number, actor=actor,
            )

    async def revert(self, name: str, number: int, previous: int | None, reason: str) -> str:
        """Take a version back out of traffic (a scheduled run that deployed it failed):
        end its canary or shadow, or roll back to ``previous`` if it went live."""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # let its roll-out (parity, health) finish first
            if self.fleet.closing:
                return "not needed: the agent is stopping every server"
            version = self.registry.get_version(name, number)
            if version is None or version.status != "starting":
                break
            await asyncio.sleep(0.2)
        row = self.fleet.get_row(name)
        if row.rollout.get("version") == number:
            await self.rollouts.abort(name, actor="nbserve-scheduler", reason=reason)
            return f"its {row.rollout['mode']} was ended"
        if row.live_version == number and previous is not None and previous != number:
            await self.rollback(name, previous, actor="nbserve-scheduler")
            return f"rolled back to v{previous}"
        if row.live_version == number:
            await self.stop(name, actor="nbserve-scheduler")
            return "stopped (no earlier version had served)"
        return "it was not serving"

    # -- restore and crash handling -------------------------------------------------

    async def restore(self) -> None:
        """After the agent (re)starts: adopt or restart what was serving, fail what was
        starting, and stop every process no one adopted."""
        fleet = self.fleet
        rows_by_root: dict[tuple[str, int], list[Any]] = {}
        for proc_row in self.registry.processes():
            rows_by_root.setdefault((proc_row.deployment, proc_row.version), []).append(proc_row)
        restarts: list[tuple[str, int]] = []
        for row in self.registry.list_deployments():
            self._fail_interrupted_starts(row.name)
            wanted = {v.number: v for v in self.registry.list_versions(row.name) if v.status in ("live", "warm")}
            if row.state == "serving" and row.live_version is not None:
                wanted.setdefault(row.live_version, fleet.get_version(row.name, row.live_version))
            else:
                wanted = {}
            for number, version in wanted.items():
                proc = await self._adopt(rows_by_root.pop((row.name, number), []), version.bento_tag,
                                         row.name, number)
                if proc is not None:
                    self.registry.add_event("adopted", f"v{number} was still serving; adopted it",
                                            deployment=row.name, version=number)
                    if number == row.live_version:
                        fleet.switch(await fleet.endpoint(row), proc)
                elif number == row.live_version and fleet.config(row.name)["idle_timeout"]:
                    self.capacity.make_cold(await fleet.endpoint(row))  # woken by traffic
                elif number == row.live_version:
                    restarts.append((row.name, number))
                else:
                    self.registry.set_version_status(row.name, number, "stopped")
            if row.state == "stopped" or row.live_version is None:
                await fleet.endpoint(row)  # the URL answers 503 with a reason, not "refused"
            if row.rollout:
                self.rollouts.resume(row)
        for stray in rows_by_root.values():
            fleet.engine.kill_recorded(stray)
        swept = await asyncio.to_thread(fleet.engine.sweep_servers)  # before anything new starts
        if swept:
            log.info("stopped %d server(s) a previous agent left half-started or unowned", len(swept))
        for name, number in restarts:
            fleet.spawn(self._restart(name, number, reason="agent restarted"))

    async def _adopt(self, recorded: list[Any], bento_tag: str, name: str, number: int) -> ServedVersion | None:
        """Adopt one whole, ready server of a version's recorded trees (a scale that was under
        way leaves two); stop the others. An engine that records no processes here (Ray)
        finds the version's servers itself, by name."""
        if not recorded:
            return await self.fleet.engine.adopt([], bento_tag, deployment=name, version=number,
                                                 engine=self.fleet.engine_of(name, number))
        trees: dict[int, list[Any]] = {}
        for proc_row in recorded:
            trees.setdefault(proc_row.root_pid, []).append(proc_row)
        adopted = None
        for tree in trees.values():
            if adopted is None:
                adopted = await self.fleet.engine.adopt(tree, bento_tag)
                if adopted is not None:
                    continue
            self.fleet.engine.kill_recorded(tree)
        return adopted

    def _fail_interrupted_starts(self, name: str) -> None:
        """A version still ``starting`` when the agent starts never finished its start: the
        previous agent stopped during it. Its processes go with the sweep in ``restore``."""
        for version in self.registry.list_versions(name):
            if version.status != "starting":
                continue
            self.registry.set_version_status(name, version.number, "failed",
                                             error="the agent stopped during its start")
            self.registry.add_event(
                "start_interrupted",
                f"v{version.number} did not finish starting: the agent stopped during its start; deploy it again",
                deployment=name, version=version.number,
            )

    async def _restart(self, name: str, number: int, *, reason: str) -> None:
        fleet = self.fleet
        async with fleet.lock(name):
            row = fleet.get_row(name)
            if row.state != "serving" or fleet.closing:
                return
            version = fleet.get_version(name, number)
            endpoint = await fleet.endpoint(row)
            try:
                proc = await fleet.start(name, number, version.bento_tag)
            except NbserveError as exc:
                self.registry.add_event("restart_failed", f"v{number} did not restart: {exc.message}",
                                        deployment=name, version=number, data=exc.details)
                raise
            if fleet.get_row(name).live_version == number:
                fleet.switch(endpoint, proc)
            self.registry.add_event("restarted", f"v{number} restarted ({reason})",
                                    deployment=name, version=number,
                                    data={"ready_seconds": proc.ready_seconds})

    def on_process_exit(self, proc: ServedVersion) -> None:
        """The engine saw a server exit that no one stopped: restart it, backing off."""
        if self.fleet.closing or proc.stopping:
            return
        name, number = proc.deployment, proc.version
        code = proc.exit_code
        self.registry.add_event(
            "process_exited", f"the server of v{number} exited (code {code}); restarting it",
            deployment=name, version=number, data={"returncode": code, "log": str(proc.log_path)},
        )
        row = self.registry.get_deployment(name)
        if row is None or row.state != "serving":
            return
        if row.live_version != number:
            self.registry.set_version_status(name, number, "stopped")
            return
        restarts = self.fleet.state(name).restarts
        attempt = restarts.get(number, 0)
        restarts[number] = attempt + 1
        delay = RESTART_BACKOFF[min(attempt, len(RESTART_BACKOFF) - 1)]

        async def later() -> None:
            await asyncio.sleep(delay)
            try:
                await self._restart(name, number, reason=f"exited with code {code}")
                restarts.pop(number, None)
            except NbserveError:
                pass  # the next exit report (or none) decides; the event says why

        self.fleet.spawn(later())

    def on_worker(self, proc: ServedVersion, what: str, data: dict[str, Any]) -> None:
        """A worker of a running server died, or the server has all its workers again."""
        if self.fleet.closing or proc.stopping:
            return
        name, number = proc.deployment, proc.version
        if what == "lost":
            others = proc.workers - 1
            self.registry.add_event(
                "worker_exited",
                f"a worker of v{number} died (PID {', '.join(map(str, data['pids']))}); its server starts another"
                + (f"; the other {others} answer meanwhile" if others > 0 else
                   f"; requests wait up to {RETRY_WAIT:g} s for it, then get 503 with Retry-After"),
                deployment=name, version=number, data=data)
        else:
            self.registry.add_event(
                "worker_restarted", f"v{number} has its {proc.workers} worker(s) again after {data['seconds']:g} s",
                deployment=name, version=number, data=data)

    def on_environment(self, name: str, number: int, what: str, data: dict[str, Any]) -> None:
        """The engine builds (or has built) the environment a version needs; the deploy's
        progress in the notebook, the CLI and the panel reads these events."""
        if what == "environment_preparing":
            differs = data.get("differs") or []
            message = (f"preparing an environment for v{number}: Python {data['python']}, "
                       f"{len(data['packages'])} package(s); the agent's own differs in "
                       + ", ".join(differs[:4]) + (" ..." if len(differs) > 4 else ""))
        else:
            installed = data.get("installed") or []
            message = (f"v{number}'s environment {data['environment']} is ready in {data['seconds']:g} s"
                       + (f" (installed {', '.join(installed[:4])}{' ...' if len(installed) > 4 else ''})"
                          if installed else ""))
        self.registry.add_event(what, message, deployment=name, version=number, data=data)


def _import_bento(archive: Path, home: Home) -> tuple[str, dict[str, Any]]:
    """Import into the agent's store; return the tag and the bundle's metadata. A full disk
    is ``InsufficientStorage`` with nothing half-written (see ``import_into_store``)."""
    from ..._service_template import BUNDLE_FILE
    from .._archive import import_into_store

    if not archive.is_file():
        raise InvalidArgument(f"no Bento archive at {archive}")
    # A staged upload is deployed once: if it does not import, nothing else can use it.
    staged = archive.parent == home.staging / "uploads"
    bento = import_into_store(archive, home.bentoml_home, discard=staged)
    bundle_path = Path(bento.path) / "src" / BUNDLE_FILE
    if not bundle_path.is_file():
        if staged:
            archive.unlink(missing_ok=True)
        raise InvalidArgument(
            f"{bento.tag} is not an nbserve bundle (no {BUNDLE_FILE})",
            hint="deploy models with nbserve.deploy() or %deploy",
        )
    metadata = json.loads(bundle_path.read_text())
    return str(bento.tag), metadata
