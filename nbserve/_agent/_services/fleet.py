"""What every service shares: the registry's reads, each deployment's runtime state and
stable endpoint, and the moves that start, switch and retire a version on the engine.

The rule that makes deploys atomic lives here: the stable URL moves to a version only
in :meth:`Fleet.switch`, which the services call after its server answered ``/readyz``
(and passed its checks); until then the previous version serves.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..._config import Home
from ...errors import Conflict, DeploymentNotFound, InvalidArgument, VersionNotFound
from .._access import Tokens
from .._engine import ServedVersion
from .._engines import Engines
from .._envs import EnvSpec
from .._limits import Limits
from .._monitor import Monitor
from .._proxy import LocalAnswer, Router, StableEndpoint, Upstream
from .._registry import DeploymentRow, Registry, VersionRow
from .._rollout import ShadowStats
from .settings import DEFAULT_CONFIG, validate_config

log = logging.getLogger("nbserve.agent")

# A request that lost its worker is sent again once and waits this long for one to take it.
RETRY_WAIT = float(os.environ.get("NBSERVE_RETRY_WAIT", "5"))


@dataclass(eq=False)
class DeploymentState:
    """One deployment's runtime state: what the registry does not hold, rebuilt when the
    agent restarts. Changes to a deployment happen under its ``lock``, one at a time."""

    name: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    endpoint: StableEndpoint | None = None  # its stable URL's listener, once it has one
    cold: bool = False  # scaled to zero: no server; the next request wakes it
    active_since: float | None = None  # loop time it last started serving
    cold_start_seconds: float | None = None  # how long the last wake from zero took
    shadow: ShadowStats | None = None  # the shadow under way's comparisons
    drift_flag: tuple[float, dict[str, Any]] | None = None  # (monotonic time, the summary's drift flag)
    quality_flag: tuple[float, dict[str, Any]] | None = None
    # (monotonic time of the last batch_overloaded event, 503s per version not yet reported)
    overloads: tuple[float, dict[str, int]] | None = None
    restarts: dict[int, int] = field(default_factory=dict)  # crash restarts in a row, per version
    answers: dict[tuple[int, str], LocalAnswer] = field(default_factory=dict)  # /metadata, /schema


@dataclass
class DeploymentView:
    """A deployment as the API shows it: registry row plus live process state."""

    row: DeploymentRow
    status: str
    url: str | None
    versions: list[VersionRow]
    running: dict[int, ServedVersion]


def upstream_of(proc: ServedVersion) -> Upstream:
    # an engine that serves versions under a path (Ray Serve's route prefixes) says it as ``prefix``
    return Upstream("127.0.0.1", proc.port, str(proc.version), getattr(proc, "prefix", "").encode())


class Fleet:
    def __init__(self, home: Home, registry: Registry, engine: Engines, monitor: Monitor, *,
                 router_for: Callable[[str], Router], stable_host: str = "127.0.0.1",
                 public_host: str | None = None, tls: Any = None, tokens: Tokens | None = None,
                 predict_auth: str = "open") -> None:
        self.home = home
        self.registry = registry
        self.engine = engine
        self.monitor = monitor
        self.stable_host = stable_host
        self.public_host = public_host or stable_host  # the host name in stable URLs
        self.tls = tls  # an ssl.SSLContext: stable URLs are https
        self.tokens = tokens
        self.predict_auth = predict_auth  # the default of the predict_auth setting
        self._router_for = router_for  # what a stable URL answers itself (``routes``)
        self.states: dict[str, DeploymentState] = {}
        self.closing = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def state(self, name: str) -> DeploymentState:
        found = self.states.get(name)
        if found is None:
            found = self.states[name] = DeploymentState(name)
        return found

    def lock(self, name: str) -> asyncio.Lock:
        return self.state(name).lock

    def endpoint_of(self, name: str) -> StableEndpoint | None:
        found = self.states.get(name)
        return found.endpoint if found is not None else None

    def is_cold(self, name: str) -> bool:
        found = self.states.get(name)
        return found is not None and found.cold

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run in the background, tracked: ``close`` cancels what is left."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # -- reads ----------------------------------------------------------------------

    def get_row(self, name: str) -> DeploymentRow:
        row = self.registry.get_deployment(name)
        if row is None:
            known = [d.name for d in self.registry.list_deployments()]
            raise DeploymentNotFound(
                f"no deployment named {name!r}",
                hint=f"known deployments: {', '.join(known)}" if known else "nothing is deployed yet",
            )
        return row

    def get_version(self, name: str, number: int) -> VersionRow:
        self.get_row(name)
        found = self.registry.get_version(name, number)
        if found is None:
            raise VersionNotFound(
                f"{name} has no version {number}",
                hint=f"versions: {', '.join(str(v.number) for v in self.registry.list_versions(name))}",
            )
        return found

    def running(self, name: str) -> list[ServedVersion]:
        """Every server of a deployment the engine runs now (a scale under way may add one)."""
        return [p for (d, _), p in list(self.engine.processes.items()) if d == name]

    def process(self, name: str, number: int) -> ServedVersion | None:
        return self.engine.processes.get((name, number))

    def view(self, name: str) -> DeploymentView:
        row = self.get_row(name)
        versions = self.registry.list_versions(name)
        running = {
            v: p for (d, v), p in self.engine.processes.items() if d == name and p.alive()
        }
        ready = {v for v, p in running.items() if p.ready}
        status = "cold" if self.is_cold(name) and row.state == "serving" else _status(row, versions, ready)
        return DeploymentView(row, status, self.stable_url(row), versions, running)

    def views(self) -> list[DeploymentView]:
        return [self.view(row.name) for row in self.registry.list_deployments()]

    def stable_url(self, row: DeploymentRow) -> str | None:
        scheme = "https" if self.tls is not None else "http"
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return f"{scheme}://{host}:{row.stable_port}" if row.stable_port else None

    def reference_path(self, name: str, version: int | None = None) -> tuple[int, Path]:
        """The version (default: live) and the path of its Bento in the agent's store."""
        import bentoml

        row = self.get_row(name)
        number = version or row.live_version
        if number is None:
            raise VersionNotFound(f"{name} has no live version", hint="pass version=N")
        v = self.get_version(name, number)
        return number, Path(bentoml.get(v.bento_tag).path)

    # -- settings -------------------------------------------------------------------

    def config(self, name: str) -> dict[str, Any]:
        return {**DEFAULT_CONFIG, **self.get_row(name).config}

    def configure(self, name: str, changes: dict[str, Any], *, actor: str | None) -> dict[str, Any]:
        """Change a deployment's settings; validated before anything is stored."""
        unknown = set(changes) - set(DEFAULT_CONFIG)
        if unknown:
            raise InvalidArgument(
                f"unknown setting(s): {', '.join(sorted(unknown))}",
                hint=f"settings: {', '.join(DEFAULT_CONFIG)}",
            )
        current = self.config(name)
        for merged_knobs in ("batching", "autoscaling"):  # a mapping given changes the knobs it names
            if isinstance(changes.get(merged_knobs), dict) and current[merged_knobs]:
                changes = {**changes, merged_knobs: {**current[merged_knobs], **changes[merged_knobs]}}
        merged = {**current, **changes}
        validate_config(merged)
        before = self.get_row(name).config
        stored = {k: v for k, v in merged.items() if v != DEFAULT_CONFIG[k]}
        self.registry.update_deployment(name, config=stored)
        endpoint = self.endpoint_of(name)
        if endpoint is not None:
            self._apply_capture(endpoint, merged)
            self._apply_access(endpoint, merged)
        self.state(name).drift_flag = None
        self.registry.add_event(
            "configured", "settings changed: " + ", ".join(f"{k}={changes[k]!r}" for k in sorted(changes)),
            deployment=name, actor=actor, data={"before": before, "after": stored},
        )
        return merged

    def _apply_access(self, endpoint: StableEndpoint, config: dict[str, Any]) -> None:
        mode = config["predict_auth"] or self.predict_auth
        if mode == "token" and self.tokens is not None:
            check, name = self.tokens.check_header, endpoint.name
            endpoint.set_auth(lambda header: check(header, name))
        else:
            endpoint.set_auth(None)

    def _apply_capture(self, endpoint: StableEndpoint, config: dict[str, Any]) -> None:
        if config["capture"]:
            endpoint.set_monitoring(
                self.monitor.observer_for(endpoint.name),
                self.monitor.sampler_for(
                    endpoint.name, config["sample_rate"], config["sample_budget_per_minute"]
                ),
            )
        else:
            endpoint.set_monitoring(None, None)

    # -- moves ------------------------------------------------------------------------

    async def endpoint(self, row: DeploymentRow) -> StableEndpoint:
        """The deployment's stable URL listener, started the first time it is needed."""
        state = self.state(row.name)
        if state.endpoint is None:
            endpoint = StableEndpoint(row.name, retry_wait=RETRY_WAIT)
            config = self.config(row.name)
            self._apply_capture(endpoint, config)
            self._apply_access(endpoint, config)
            endpoint.set_router(self._router_for(row.name))
            try:
                await endpoint.start(self.stable_host, row.stable_port or 0, ssl=self.tls)
            except OSError as exc:
                raise Conflict(
                    f"cannot listen on the stable port {row.stable_port} of {row.name}: {exc.strerror}",
                    hint="another program holds the port; stop it, then run `nbserve agent stop` "
                    "and deploy again",
                ) from None
            state.endpoint = endpoint
        return state.endpoint

    def check_autoscaling(self, engine: str, subject: str) -> None:
        """Refuse autoscaling for ``subject`` (a version) on an engine that keeps a fixed count."""
        if not self.engine.get(engine).autoscales:
            raise InvalidArgument(
                f"autoscaling needs the Ray engine, and {subject} runs on the {engine} engine, which does not autoscale",
                hint="deploy with engine=\"ray\" (--engine ray), or set workers; idle_timeout scales a local "
                     "deployment to zero")

    def check_caps(self, engine: str, config: dict[str, Any], subject: str) -> None:
        """Refuse memory or CPU caps for ``subject`` on an engine whose servers hold many versions."""
        if (config.get("memory") or config.get("cpus")) and not self.engine.get(engine).caps:
            raise InvalidArgument(
                f"{subject} has memory or cpu caps, and the {engine} engine runs many versions in one server",
                hint="clear them (memory=\"none\", cpus=\"none\") or run it on a server of its own "
                     "(engine=\"dedicated\"); a shared server's models are bounded by the agent's --shared-memory")

    def engine_of(self, name: str, number: int) -> str:
        """The engine a version runs on: the one its deploy chose, else the agent's default."""
        return self.get_version(name, number).placed_on or self.engine.default

    async def start(self, name: str, number: int, bento_tag: str, *, replace: bool = False) -> ServedVersion:
        """Start a version's server on its engine, with the deployment's workers and caps."""
        config = self.config(name)
        batching = config["batching"]
        metadata = self.get_version(name, number).metadata
        if batching and "batching" not in metadata.get("service_features", ()):
            batching = None
            self.registry.add_event(
                "batching_unavailable", f"v{number} was built by an nbserve without batching; it serves unbatched",
                deployment=name, version=number)
        proc = await self.engine.start(
            name, number, bento_tag, engine=self.get_version(name, number).placed_on, workers=int(config["workers"]),
            limits=Limits(config["memory"], config["cpus"]), batching=batching, replace=replace,
            environment=EnvSpec.of_version(metadata), autoscaling=config["autoscaling"],
        )
        self.state(name).active_since = asyncio.get_running_loop().time()
        return proc

    def switch(self, endpoint: StableEndpoint, proc: ServedVersion) -> None:
        """Point the stable URL at a ready server; requests held for a wake go too."""
        endpoint.set_upstream(upstream_of(proc))
        state = self.state(endpoint.name)
        if state.cold:  # a deploy, rollback or start while cold: it is warm now
            state.cold = False
            endpoint.set_waker(None)

    def make_live(self, name: str, endpoint: StableEndpoint, proc: ServedVersion) -> int | None:
        """Switch to a ready server and record it; return the previous live version, which
        stays warm if its server is still running."""
        previous = self.get_row(name).live_version
        self.switch(endpoint, proc)
        self.registry.update_deployment(name, live_version=proc.version, state="serving")
        self.registry.set_version_status(name, proc.version, "live")
        if previous is not None and previous != proc.version:
            running = (name, previous) in self.engine.processes
            self.registry.set_version_status(name, previous, "warm" if running else "stopped")
        return previous

    async def drain_and_stop(self, endpoint: StableEndpoint | None, proc: ServedVersion) -> None:
        """Let a server's last requests finish, then stop it."""
        if endpoint is not None:
            upstream = upstream_of(proc)
            await endpoint.drain(upstream)
            endpoint.close_idle(upstream)
        await self.engine.stop(proc)

    async def retire(self, name: str, number: int, status: str) -> None:
        """Take a version's server out of service: mark it, drain it (30 s at most), stop it."""
        proc = self.process(name, number)
        if proc is None:
            return
        # Marked first: from now on it is no instant-rollback target. A rollback to it
        # waits for the deployment lock, which is held until it has stopped.
        self.registry.set_version_status(name, number, status)
        endpoint = self.endpoint_of(name)
        if endpoint is not None:
            upstream = upstream_of(proc)
            if not await endpoint.drain(upstream, timeout=30.0):  # let its last requests finish
                self.registry.add_event(
                    "drain_timeout",
                    f"v{number} still had {endpoint.inflight(upstream)} requests after 30 s; stopping it anyway",
                    deployment=name, version=number,
                )
            endpoint.close_idle(upstream)
        await self.engine.stop(proc)

    async def reap(self, name: str) -> None:
        """Keep the live version and the ``keep_warm`` most recent others; stop the rest."""
        row = self.get_row(name)
        protected = {row.live_version, row.rollout.get("version")}
        others = sorted(
            (v for (d, v) in self.engine.processes if d == name and v not in protected),
            reverse=True,
        )
        for number in others[row.keep_warm:]:
            await self.retire(name, number, "stopped")


def _status(row: DeploymentRow, versions: list[VersionRow], ready: set[int]) -> str:
    if row.state == "stopped":
        return "stopped"
    if row.live_version is not None and row.live_version in ready:
        return "serving"
    if any(v.status == "starting" for v in versions):
        return "starting"
    if row.live_version is not None:
        return "restarting"
    return "failed" if versions and versions[-1].status == "failed" else "starting"
