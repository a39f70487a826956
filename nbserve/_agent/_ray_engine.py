"""The Ray engine: versions served by a Ray Serve cluster, behind the agent's stable URLs.

``nbserve agent run --engine ray --ray-address HOST:PORT`` hands every version to Ray Serve
instead of starting ``bentoml serve`` here. Each running server of a version is one Ray Serve
application (``nbserve-<deployment>-v<N>-<id>``, a new id for each start, so a scale can run
the new one beside the old) with one deployment whose replicas each run the version's own
BentoML service (``nbserve/_ray_replica.py``) and are spread over the cluster's nodes by Ray.
The agent keeps everything above the seam (registry, stable URL, parity, rollouts, capture):
its proxy forwards to Ray Serve's HTTP ingress under the application's route prefix.

Ray is imported only here, lazily: an agent on the local engine never loads it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import psutil

from .. import errors
from .._config import Home
from .._events import Event
from .._ray_config import MAX_ONGOING, actor_options, deployment_name, ray_autoscaling, replica_env
from ._engine import rss_of
from ._envs import EnvSpec, own_mismatches
from ._limits import Limits
from ._registry import Registry

log = logging.getLogger("nbserve.agent")

APP_PREFIX = "nbserve-"
READY_TIMEOUT = float(os.environ.get("NBSERVE_READY_TIMEOUT", "180"))
DEFAULT_HTTP_PORT = 8000  # Ray Serve's own default
STOP_TIMEOUT = 60.0  # how long the agent's shutdown waits for Serve to delete its applications


@dataclass
class RayVersion:
    """One running server of a version on Ray: a Serve application and its replicas."""

    engine: ClassVar[str] = "ray"
    deployment: str
    version: int
    bento_tag: str
    port: int  # Ray Serve's HTTP port on this host
    app: str  # the Serve application's name
    log_path: Path
    workers: int = 1  # replicas (with autoscaling: the ones running when last looked at)
    limits: Limits = field(default_factory=Limits)
    autoscaling: dict[str, Any] | None = None  # Ray Serve's autoscaler bounds, when it chooses the count
    batching: dict[str, Any] | None = None
    ready_seconds: float | None = None
    stopping: bool = False
    environment: str | None = None  # the cluster's own Python and packages
    started_at: float = field(default_factory=time.time)
    known: dict[int, psutil.Process] = field(default_factory=dict)  # replicas' processes on this host
    replicas: list[dict[str, Any]] = field(default_factory=list)  # state, node and pid of each, last seen
    running: bool = True  # the application was RUNNING when last looked at
    short_of: bool = False  # a replica was lost and not all are back yet

    @property
    def prefix(self) -> str:
        return "/" + self.app.replace("-", "/", 2)  # nbserve/<deployment>/v<N>-<id>

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def ready(self) -> bool:
        return self.ready_seconds is not None

    @property
    def exit_code(self) -> int | None:
        return None

    @property
    def process_count(self) -> int:
        return len(self.known)

    def alive(self) -> bool:
        return self.running

    def rss_bytes(self) -> int:
        return rss_of(self.known.values())


def app_name(deployment: str, version: int) -> str:
    return f"{APP_PREFIX}{deployment}-v{version}-{secrets.token_hex(3)}"


class RayEngine:
    """Starts, scales (by replacing) and stops versions as Ray Serve applications."""

    name = "ray"
    autoscales = True  # Ray Serve's autoscaler
    caps = True  # takes a version's memory and cpu caps
    enforcement = "ray"  # caps are Ray's scheduling reservations (num_cpus, memory), not kernel limits

    def __init__(self, home: Home, registry: Registry, *, address: str, http_port: int = DEFAULT_HTTP_PORT) -> None:
        self.home = home
        self.registry = registry
        self.address = address
        self.http_port = http_port
        self.processes: dict[tuple[str, int], RayVersion] = {}
        self.preparing: Mapping[tuple[str, int], dict[str, Any]] = {}
        self._connected = False
        self._lock = threading.Lock()  # one driver call at a time (Serve's client is not thread-safe)
        self._watcher: asyncio.Task[None] | None = None

    # -- the driver ----------------------------------------------------------------

    def _connect(self) -> None:
        """Join the cluster as a driver and make sure Serve's HTTP ingress runs on loopback."""
        if self._connected:
            return
        import ray
        from ray import serve

        try:
            ray.init(address=self.address, namespace="nbserve", log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=False, ignore_reinit_error=True)
        except Exception as exc:  # noqa: BLE001 - a cluster that is not there, or refuses our token
            raise errors.DeployFailed(
                f"the Ray cluster at {self.address} cannot be reached: {type(exc).__name__}: {exc}",
                hint="start it (ray start --head ...) or pass --ray-address; with token authentication "
                     "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) for the agent too",
            ) from None
        serve.start(http_options={"host": "127.0.0.1", "port": self.http_port})
        self._connected = True

    async def _driver(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            with self._lock:
                self._connect()
                return call(*args, **kwargs)

        return await asyncio.to_thread(run)

    # -- the engine seam --------------------------------------------------------------

    async def start(self, deployment: str, version: int, bento_tag: str, *, workers: int = 1,
                    limits: Limits | None = None, batching: dict[str, Any] | None = None,
                    replace: bool = False, environment: EnvSpec | None = None,
                    autoscaling: dict[str, Any] | None = None) -> RayVersion:
        key = (deployment, version)
        existing = self.processes.get(key)
        if existing is not None and existing.alive() and not replace:
            return existing
        limits = limits or Limits()
        log_path = self.home.version_log(deployment, version)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        proc = RayVersion(deployment, version, bento_tag, self.http_port, app_name(deployment, version), log_path,
                          workers=workers, limits=limits, batching=batching, autoscaling=autoscaling)
        count = (f"{autoscaling['min']} to {autoscaling['max']} replicas, autoscaled" if autoscaling
                 else f"{workers} replica(s)")
        with log_path.open("a") as handle:
            handle.write(f"\n--- nbserve: {bento_tag} as Ray Serve application {proc.app} ({count}) "
                         f"at {time.ctime()}; the replicas' logs are in the Ray session's logs/serve/\n")
        options = actor_options(limits.memory, limits.cpus,
                                replica_env(version, batching, str(self.home.bentoml_home)))
        packages = self._packages(version, environment)
        if packages:  # Ray installs them with uv on each node, over the cluster's own Python
            options["runtime_env"]["uv"] = {"packages": packages, "uv_pip_install_options": self._uv_options()}
            proc.environment = f"ray-uv:{environment.key}"  # type: ignore[union-attr]
        started = time.monotonic()
        self.registry.record_server(proc.app, deployment, version, self.http_port)
        try:
            await self._driver(self._deploy, proc, options)
            await self._wait_ready(proc, started)
        except BaseException:
            await self._delete(proc)  # it never served; the one that serves (if any) keeps serving
            raise
        self.processes[key] = proc
        proc.ready_seconds = time.monotonic() - started
        self._ensure_watching()
        return proc

    def _packages(self, version: int, environment: EnvSpec | None) -> list[str]:
        """The version's pins the cluster's Python lacks (the agent's environment stands for the
        cluster's, as the agent is one of its drivers); a Python of another minor is refused,
        since a runtime_env installs packages, not an interpreter."""
        if environment is None:
            return []
        missing = own_mismatches(environment)
        running = f"{sys.version_info.major}.{sys.version_info.minor}"
        if any(m.startswith("python ") for m in missing):
            raise errors.EnvironmentFailed(
                f"v{version} was built with Python {environment.python}, and the Ray cluster runs {running}",
                hint="deploy it with engine=\"local\" (which builds it an environment with that Python), "
                     "or from a kernel on the cluster's Python")
        differs = {m.split(" ", 1)[0] for m in missing}
        return [pin for pin in environment.packages if pin in differs]

    def _uv_options(self) -> list[str]:
        """Where uv finds the packages: what the agent's environments use (--find-links,
        --offline), with uv's cache on (Ray's default, --no-cache, would download each time)."""
        options: list[str] = []
        if os.environ.get("NBSERVE_FIND_LINKS"):
            options += ["--find-links", os.environ["NBSERVE_FIND_LINKS"]]
        if os.environ.get("NBSERVE_OFFLINE", "").lower() in ("1", "true", "yes"):
            options.append("--offline")
        return options

    def _deploy(self, proc: RayVersion, options: dict[str, Any]) -> None:
        import math

        import ray
        from ray import serve

        from .._ray_replica import version_deployment

        # Spread, not just preferred: at most ceil(replicas / nodes) on one node (nodes alive now),
        # so two replicas on a cluster of two or more nodes never share one (Ray's own spreading
        # is best effort, and a node lost would take both)
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        most = proc.autoscaling["max"] if proc.autoscaling else proc.workers
        per_node = max(1, math.ceil(most / max(nodes, 1)))
        count: dict[str, Any] = {"num_replicas": proc.workers}
        if proc.autoscaling:
            count = {"autoscaling_config": ray_autoscaling(proc.autoscaling)}
        deployment = version_deployment(proc.bento_tag, deployment_name(proc.version)).options(
            ray_actor_options=options, max_ongoing_requests=MAX_ONGOING, max_replicas_per_node=per_node, **count)
        serve.run(deployment.bind(), name=proc.app, route_prefix=proc.prefix, blocking=False)

    async def _wait_ready(self, proc: RayVersion, started: float) -> None:
        deadline = started + READY_TIMEOUT
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                status = await self._driver(_app_status, proc.app)
                if status == "DEPLOY_FAILED":
                    message = await self._driver(_app_message, proc.app)
                    raise errors.DeployFailed(f"Ray Serve could not start {proc.app}: {message[:500]}",
                                                   hint="the replicas' logs are in the Ray session's logs/serve/")
                if status == "RUNNING":
                    try:
                        if (await client.get(f"{proc.url}/readyz")).status_code == 200:
                            await self._refresh(proc)
                            return
                    except httpx.HTTPError:
                        pass
                await asyncio.sleep(0.5)
        raise errors.DeployFailed(f"{proc.app} was not ready on Ray within {READY_TIMEOUT:.0f} s",
                                       hint="raise NBSERVE_READY_TIMEOUT for slow models; see the Ray dashboard")

    async def stop(self, proc: Any, *, expected: bool = True, grace: float = 10.0) -> None:
        proc.stopping = True
        if self.processes.get((proc.deployment, proc.version)) is proc:
            self.processes.pop((proc.deployment, proc.version))
        await self._delete(proc)

    async def _delete(self, proc: RayVersion) -> None:
        from ray import serve

        try:
            await self._driver(serve.delete, proc.app)
        except errors.NbserveError:
            pass  # the cluster is gone: so is the application
        self.registry.forget_server(proc.app)

    async def stop_all(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        procs = list(self.processes.values())
        self.processes.clear()
        for proc in procs:
            proc.stopping = True
        if procs:
            try:  # all at once: one by one, Serve waits for each application's replicas in turn
                await self._driver(_delete_all, [p.app for p in procs], STOP_TIMEOUT)
            except errors.NbserveError:
                pass  # the cluster is gone: so are the applications
            for proc in procs:
                self.registry.forget_server(proc.app)
        if self._connected:
            import ray

            await asyncio.to_thread(ray.shutdown)
            self._connected = False

    async def adopt(self, rows: list[Any], bento_tag: str, *, deployment: str | None = None,
                    version: int | None = None) -> RayVersion | None:
        """After an agent restart: take over the version's running application (found by name:
        Serve applications outlive their driver), or None; any other of its applications is
        deleted (a scale that was under way leaves two)."""
        if deployment is None or version is None:
            return None
        try:
            found = await self._driver(_applications_of, f"{APP_PREFIX}{deployment}-v{version}-")
        except errors.NbserveError as exc:
            log.warning("could not look for %s v%s on Ray: %s", deployment, version, exc.message)
            return None
        adopted = None
        row = self.registry.get_deployment(deployment)
        autoscaling = (row.config if row is not None else {}).get("autoscaling")  # validated when stored
        for app, (status, replicas) in found.items():
            proc = RayVersion(deployment, version, bento_tag, self.http_port, app,
                              self.home.version_log(deployment, version), workers=max(replicas, 1),
                              autoscaling=autoscaling)
            if adopted is None and status == "RUNNING":
                try:
                    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
                        ready = (await client.get(f"{proc.url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    ready = False
                if ready:
                    proc.ready_seconds = 0.0
                    await self._refresh(proc)
                    self.processes[(deployment, version)] = adopted = proc
                    continue
            await self._delete(proc)
        if adopted is not None:
            self._ensure_watching()
        return adopted

    def kill_recorded(self, rows: list[Any]) -> int:
        return 0

    def sweep_servers(self) -> list[str]:
        """Delete the Serve applications of nbserve's that no version of this agent runs (a
        previous agent's, stopped without deleting them). Without a record of one, and not yet
        joined, the cluster is left alone: an agent that may serve on Ray but does not yet
        starts without waiting for it."""
        if not self._connected and not any(r.server_id.startswith(APP_PREFIX) for r in self.registry.servers()):
            return []
        try:
            with self._lock:
                self._connect()
                from ray import serve

                names = [n for n in serve.status().applications if n.startswith(APP_PREFIX)]
                ours = {p.app for p in self.processes.values()}
                stray = [n for n in names if n not in ours]
                for name in stray:
                    serve.delete(name)
        except errors.NbserveError as exc:
            log.warning("could not sweep Ray applications: %s", exc.message)
            return []
        for row in self.registry.servers():
            if row.server_id.startswith(APP_PREFIX) and row.server_id not in ours:
                self.registry.forget_server(row.server_id)
        return stray

    # -- watching ------------------------------------------------------------------------

    def _ensure_watching(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Every few seconds: each application's state and where its replicas run."""
        while self.processes:
            await asyncio.sleep(3.0)
            for proc in list(self.processes.values()):
                try:
                    await self._refresh(proc)
                except Exception as exc:  # noqa: BLE001 - the next round tries again
                    log.debug("Ray state of %s unavailable: %s", proc.app, exc)

    async def _refresh(self, proc: RayVersion) -> None:
        status = await self._driver(_app_status, proc.app)
        proc.running = status in ("RUNNING", "DEPLOYING")
        before = proc.replicas
        proc.replicas = await self._driver(_replicas, proc.app, self.address)
        if proc.ready and before:
            gone = _gone(proc, before)
            if gone and proc.autoscaling:  # the autoscaler removes replicas: lost only with their node
                nodes = await self._driver(_alive_nodes)
                gone = [r for r in gone if r["node"] not in nodes]
            self._say_replicas(proc, gone)
        if proc.autoscaling:
            proc.workers = sum(1 for r in proc.replicas if r["state"] == "ALIVE")
        known = {}
        for replica in proc.replicas:
            pid = replica.get("pid")
            if pid:
                known[pid] = proc.known.get(pid) or _process(pid)
            _measure(replica, known.get(pid))
        proc.known = {pid: p for pid, p in known.items() if p is not None}

    def _say_replicas(self, proc: RayVersion, lost: list[dict[str, Any]]) -> None:
        """A replica lost (its node gone, its process dead) or all of them back: an event each."""
        alive = [r for r in proc.replicas if r["state"] == "ALIVE"]
        wanted = max(proc.autoscaling["min"], 1) if proc.autoscaling else proc.workers
        for replica in lost:
            proc.short_of = True
            self.registry.add_event(
                Event.REPLICA_LOST, f"a replica of v{proc.version} on node {str(replica['node'])[:12]} is gone; "
                f"Ray Serve replaces it ({len(alive)} of {wanted} alive)",
                deployment=proc.deployment, version=proc.version, data={**replica, "alive": len(alive)})
        if proc.short_of and not lost and len(alive) >= wanted:
            proc.short_of = False
            nodes = sorted({str(r["node"])[:12] for r in alive})
            self.registry.add_event(
                Event.REPLICA_RESTORED, f"v{proc.version} has its {len(alive)} replica(s) again, on "
                f"{', '.join(nodes)}", deployment=proc.deployment, version=proc.version,
                data={"replicas": proc.replicas})


def _gone(proc: RayVersion, before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The replicas alive when last looked at and not now."""
    alive = {r["pid"] for r in proc.replicas if r["state"] == "ALIVE"}
    return [r for r in before if r["state"] == "ALIVE" and r["pid"] not in alive]


def _alive_nodes() -> set[str]:
    import ray

    return {node["NodeID"] for node in ray.nodes() if node.get("Alive")}


def _delete_all(names: list[str], timeout: float) -> None:
    """Ask Serve to delete every one of ``names``, then wait until none is listed."""
    from ray import serve

    for name in names:
        serve.delete(name, _blocking=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and set(names) & set(serve.status().applications):
        time.sleep(0.2)


def _app_status(name: str) -> str | None:
    from ray import serve

    app = serve.status().applications.get(name)
    return None if app is None else str(getattr(app.status, "value", app.status))


def _applications_of(prefix: str) -> dict[str, tuple[str, int]]:
    """The Serve applications named ``prefix...``: their status and running replicas."""
    from ray import serve

    found = {}
    for name, app in serve.status().applications.items():
        if name.startswith(prefix):
            replicas = sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())
            found[name] = (str(getattr(app.status, "value", app.status)), replicas)
    return found


def _app_message(name: str) -> str:
    from ray import serve

    app = serve.status().applications.get(name)
    if app is None:
        return "the application is gone"
    details = [app.message] + [d.message for d in app.deployments.values() if d.message]
    return "; ".join(m for m in details if m)


def _replicas(name: str, address: str) -> list[dict[str, Any]]:
    """Each replica's state, node and process (Ray's state API, which needs the dashboard).
    ``address``: the cluster's, always (unset, Ray guesses, and refuses when a host runs two)."""
    try:
        from ray.util.state import list_actors

        actors = list_actors(address=address,
                             filters=[("class_name", "=", f"ServeReplica:{name}:{name_part(name)}")],
                             detail=False, timeout=5)
    except Exception:  # noqa: BLE001 - no dashboard: the states stay unknown
        return []
    return [{"state": a.state, "node": a.node_id, "pid": a.pid} for a in actors if a.state != "DEAD"]


def name_part(app: str) -> str:
    """The Serve deployment's name inside an application: ``v<N>``."""
    return app.rsplit("-", 2)[-2]



def _measure(replica: dict[str, Any], process: psutil.Process | None) -> None:
    """A replica's memory and CPU (since the last look, 100 = one core), when it runs on this
    host; None for one elsewhere (Ray's state API gives no usage)."""
    replica["rss_bytes"] = replica["cpu_percent"] = None
    if process is None:
        return
    try:
        with process.oneshot():
            replica["rss_bytes"] = process.memory_info().rss
            replica["cpu_percent"] = process.cpu_percent(None)  # the first look says 0.0
    except psutil.Error:
        pass


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None  # on another host, or gone
