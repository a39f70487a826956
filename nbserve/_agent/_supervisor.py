"""Start, watch and stop ``bentoml serve`` processes, leaving no orphan behind.

BentoML's server is a process manager (circus) whose workers run in sessions of their
own: killing the parent alone leaves workers holding the port. So each server starts in
a new session, every PID of its tree (children of children too) is recorded in the
registry with its creation time, and stopping means stopping that whole recorded tree,
then checking. The creation time guards against killing a recycled PID.

A server is written to the registry (``servers``) *before* it is spawned, and each of its
processes carries that record's id in its environment: an agent killed at any instant of a
start leaves a record, and its successor finds every process of it, recorded PID or not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any, ClassVar
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from .._config import Home, private_env
from .._service_template import BATCHING_ENV, VERSION_ENV
from .._settings import workers_option
from ..errors import DeployFailed, InvalidArgument
from ._engine import rss_of
from ._envs import Environments, EnvSpec, Prepared
from ._limits import Group, Limits, affinity, enforcement
from ._registry import ProcessRow, Registry

log = logging.getLogger("nbserve.agent")

READY_TIMEOUT = float(os.environ.get("NBSERVE_READY_TIMEOUT", "180"))
PORT_ATTEMPTS = 3  # a server whose port another process took first is started again on a new one
PORT_TAKEN = "Address already in use"
STOP_GRACE = 10.0
SERVER_ID_ENV = "NBSERVE_SERVER_ID"  # inherited by every process of a server's tree
ENVIRONMENT_ENV = "NBSERVE_ENVIRONMENT"  # the environment a server runs in (unset: the agent's own)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ServingProcess:
    """One running ``bentoml serve`` of one version."""

    engine: ClassVar[str] = "local"

    deployment: str
    version: int
    bento_tag: str
    port: int
    root: psutil.Process
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = field(default_factory=time.time)
    ready_seconds: float | None = None
    stopping: bool = False
    known: dict[int, psutil.Process] = field(default_factory=dict)
    workers: int = 1
    limits: Limits = field(default_factory=Limits)
    batching: dict[str, Any] | None = None  # {"max_batch_size", "max_latency_ms"} when on
    group: Group | None = None
    oom_kills: int = 0  # the group's count when last looked at
    server_id: str | None = None  # its row in the registry's servers table
    worker_lost_at: float | None = None  # monotonic time a worker died, until the server has them all again
    environment: str | None = None  # the key of its environment under NBSERVE_HOME/envs (None: the agent's own)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.root.pid

    @property
    def ready(self) -> bool:
        """It answered /readyz (or was adopted ready) and may take traffic."""
        return self.ready_seconds is not None

    def alive(self) -> bool:
        try:
            return self.root.is_running() and self.root.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def refresh_tree(self) -> list[psutil.Process]:
        """Add any new descendants to the known set; return the ones not seen before."""
        new = []
        procs = [self.root]
        try:
            procs += self.root.children(recursive=True)
        except psutil.Error:
            pass
        for proc in procs:
            if proc.pid not in self.known:
                self.known[proc.pid] = proc
                new.append(proc)
        return new

    @property
    def exit_code(self) -> int | None:
        return self.popen.returncode if self.popen is not None else None

    @property
    def process_count(self) -> int:
        return len(self.known)

    def rss_bytes(self) -> int:
        return rss_of(self.known.values())


def _ctime(proc: psutil.Process) -> float:
    try:
        return proc.create_time()
    except psutil.Error:
        return 0.0


async def answers_ready(url: str, *, timeout: float) -> bool:
    """Whether a server found running (after an agent restart) answers ``/readyz`` now."""
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            return (await client.get(f"{url}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


def kill_tree(procs: list[psutil.Process], grace: float = STOP_GRACE) -> list[int]:
    """SIGTERM every process (and its process group), wait, then SIGKILL what is left.

    Returns the PIDs that were still alive after SIGKILL (should be none).
    """
    live = [p for p in procs if _is_running(p)]
    for proc in live:
        _signal(proc, signal.SIGTERM)
    _gone, alive = psutil.wait_procs(live, timeout=grace)
    for proc in alive:
        _signal(proc, signal.SIGKILL)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # workers lead their own sessions
        except (ProcessLookupError, PermissionError):
            pass
    _gone, alive = psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in alive]


def _is_running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.Error:
        pass


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def summarize_failure(tail: str) -> str:
    """The lines of a server log that say what went wrong, without the traceback frames."""
    lines = [line for line in tail.splitlines() if line.strip()]
    interesting = [
        line.strip()
        for line in lines
        if any(key in line for key in ("Error", "Exception", "error:", "Traceback", "No module"))
        and not line.lstrip().startswith("File ")
        and "Traceback" not in line
    ]
    picked = list(dict.fromkeys(interesting[-6:] or lines[-3:]))[-3:]  # crash loops repeat
    return " | ".join(picked)[:800]


class Supervisor:
    """Owns every serving process the agent starts."""

    name = "local"  # the engine's name in the API (GET /v1/resources)
    autoscales = False  # a fixed count of workers; idle_timeout scales to zero
    caps = True  # takes a version's memory and cpu caps

    def __init__(
        self,
        home: Home,
        registry: Registry,
        on_exit: Callable[[ServingProcess], None] | None = None,
        on_limit: Callable[[ServingProcess, str], None] | None = None,
        on_worker: Callable[[ServingProcess, str, dict[str, Any]], None] | None = None,
        environments: Environments | None = None,
        on_environment: Callable[[str, int, str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.home = home
        self.registry = registry
        self.on_exit = on_exit
        self.on_limit = on_limit  # (process, what happened) when it broke its memory cap
        self.on_worker = on_worker  # (process, "lost" | "back", data) as its workers die and come back
        self.environments = environments or Environments(home)
        # (deployment, version, "environment_preparing" | "environment_ready", data) while one is built
        self.on_environment = on_environment
        self.preparing: dict[tuple[str, int], dict[str, Any]] = {}  # versions whose environment is being built
        self.enforcement = enforcement()
        self.processes: dict[tuple[str, int], ServingProcess] = {}
        self._watch_task: asyncio.Task[None] | None = None

    # -- start ----------------------------------------------------------------------

    async def start(self, deployment: str, version: int, bento_tag: str, *, workers: int = 1,
                    limits: Limits | None = None, batching: dict[str, Any] | None = None,
                    replace: bool = False, environment: EnvSpec | None = None,
                    autoscaling: dict[str, Any] | None = None) -> ServingProcess:
        """Start a server for one version and wait for ``/readyz``; raise ``DeployFailed``.

        ``replace``: start a second server of the version even if one runs (to change its
        workers or caps); the caller switches traffic and stops the old one."""
        if autoscaling:
            raise InvalidArgument(
                "the local engine does not autoscale", hint="set workers (and idle_timeout to scale to zero), "
                "or deploy the version with engine=\"ray\" to let Ray Serve's autoscaler choose the count")
        existing = self.processes.get((deployment, version))
        if existing and existing.alive() and not replace:
            return existing
        prepared = await self.prepare_environment(deployment, version, environment)

        def attempt() -> Any:
            return self._start_on(free_port(), deployment, version, bento_tag, workers=workers,
                                  limits=limits or Limits(), batching=batching, replace=replace, prepared=prepared)

        for _ in range(PORT_ATTEMPTS - 1):
            try:
                return await attempt()
            except DeployFailed as exc:
                # free_port() only found a port free a moment ago; another process on the host
                # may bind it before the server does. That is ours to retry, not the model's fault.
                if PORT_TAKEN not in exc.message:
                    raise
                log.warning("%s v%s: its port was taken before the server bound it; trying another",
                            deployment, version)
        return await attempt()

    async def prepare_environment(self, deployment: str, version: int, spec: EnvSpec | None) -> Prepared:
        """Where the version runs: the agent's own Python, or its own environment (built now if new)."""
        def step(kind: str, data: dict[str, Any]) -> None:
            if kind == "environment_preparing":
                self.preparing[(deployment, version)] = data
            if self.on_environment is not None:
                self.on_environment(deployment, version, kind, data)

        try:
            prepared = await self.environments.prepare(spec, on_step=step)
        finally:
            self.preparing.pop((deployment, version), None)
        if not prepared.cached:
            step("environment_ready", prepared.describe())
        return prepared

    async def _start_on(self, port: int, deployment: str, version: int, bento_tag: str, *, workers: int,
                        limits: Limits, batching: dict[str, Any] | None, replace: bool,
                        prepared: Prepared) -> ServingProcess:
        key = (deployment, version)
        log_path = self.home.version_log(deployment, version)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as handle:
            handle.write(f"\n--- nbserve: starting {bento_tag} on port {port} at {time.ctime()}\n".encode())
        group = Group(f"{deployment}-v{version}-{port}", limits, self.enforcement)
        command = group.wrap([prepared.python, "-m", "bentoml", "serve", bento_tag,
                              "--host", "127.0.0.1", "--port", str(port)])
        server_id = f"{deployment}-v{version}-{secrets.token_hex(6)}"
        env = {"BENTOML_HOME": str(self.home.bentoml_home), "PYTHONUNBUFFERED": "1", SERVER_ID_ENV: server_id,
               VERSION_ENV: str(version)}
        if prepared.key is not None:
            env[ENVIRONMENT_ENV] = prepared.key
        if workers != 1:
            # the service is named after the deployment (see _service_template.py)
            env["BENTOML_CONFIG_OPTIONS"] = workers_option(deployment, workers)
        if batching:
            env[BATCHING_ENV] = json.dumps(batching)  # read by the generated service at import
        self.registry.record_server(server_id, deployment, version, port)  # before it can exist
        try:
            with log_path.open("ab") as log_file:
                # Plain Popen, not asyncio's: psutil reaps these processes when stopping them,
                # and asyncio's child watcher would then wait for an exit it never sees.
                spawn_env = private_env(env)
                if prepared.key is not None:
                    # its own environment: let its first start write bytecode so later starts skip compiling
                    spawn_env.pop("PYTHONDONTWRITEBYTECODE", None)
                popen = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=spawn_env,
                    cwd=str(self.home.root),
                    start_new_session=True,
                )
        except BaseException:
            self.registry.forget_server(server_id)
            raise
        proc = ServingProcess(
            deployment, version, bento_tag, port, psutil.Process(popen.pid), log_path, popen=popen,
            workers=workers, limits=limits, group=group, batching=batching, server_id=server_id,
            environment=prepared.key,
        )
        pinned = affinity(limits.cpus) if self.enforcement == "watchdog" else None
        if pinned is not None:
            try:
                proc.root.cpu_affinity(pinned)  # inherited by every worker it forks
            except psutil.Error:
                pass
        old = self.processes.get(key)
        self.processes[key] = proc
        self._record(proc)
        try:
            await self._wait_ready(proc)
        except BaseException:
            await self.stop(proc, grace=1.0)  # it never served: nothing to drain
            if old is not None and replace:
                self.processes[key] = old  # the one that serves keeps serving
            raise
        self._record(proc)
        self._ensure_watching()
        return proc

    async def _wait_ready(self, proc: ServingProcess) -> None:
        """Poll ``/readyz``. Fail fast when the server, or any of its workers, dies first:
        circus respawns a worker that cannot load its model forever, so waiting for the
        parent to exit would wait out the whole timeout."""
        deadline = time.monotonic() + READY_TIMEOUT
        started = time.monotonic()
        # /readyz hangs while no worker is up (circus holds the socket): short probes.
        async with httpx.AsyncClient(timeout=0.5, trust_env=False) as client:
            while time.monotonic() < deadline:
                died = [p for p in proc.known.values() if p.pid != proc.pid and not _is_running(p)]
                if not proc.alive() or died:
                    what = "server" if not proc.alive() else "worker"
                    raise DeployFailed(
                        f"the {what} for {proc.deployment} v{proc.version} exited before it was "
                        f"ready: {summarize_failure(log_tail(proc.log_path))}",
                        hint=f"full log: {proc.log_path}",
                        log_path=str(proc.log_path),
                    )
                self._record(proc)
                try:
                    response = await client.get(f"{proc.url}/readyz")
                    if response.status_code == 200:
                        proc.ready_seconds = time.monotonic() - started
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise DeployFailed(
            f"the server for {proc.deployment} v{proc.version} was not ready after "
            f"{READY_TIMEOUT:.0f} s: {summarize_failure(log_tail(proc.log_path))}",
            hint=f"full log: {proc.log_path}; raise NBSERVE_READY_TIMEOUT for slow models",
            log_path=str(proc.log_path),
        )

    def _record(self, proc: ServingProcess) -> None:
        new = proc.refresh_tree()
        if new:
            self.registry.record_processes(
                proc.deployment, proc.version, proc.port, proc.pid, [(p.pid, _ctime(p)) for p in new]
            )

    # -- adopt (after an agent restart) ----------------------------------------------

    async def adopt(self, rows: list[ProcessRow], bento_tag: str, *, deployment: str | None = None,
                    version: int | None = None) -> ServingProcess | None:
        """Take over a server a previous agent left running, if it is whole and ready."""
        roots = [r for r in rows if r.pid == r.root_pid]
        if not roots:
            return None
        root_row = roots[0]
        try:
            root = psutil.Process(root_row.pid)
            if abs(root.create_time() - root_row.create_time) > 0.01:
                return None
        except psutil.Error:
            return None
        environ = _environ_of(root)  # one read of /proc: its server id and environment
        proc = ServingProcess(
            root_row.deployment, root_row.version, bento_tag, root_row.port, root,
            self.home.version_log(root_row.deployment, root_row.version), server_id=environ.get(SERVER_ID_ENV),
            environment=environ.get(ENVIRONMENT_ENV),
        )
        for row in rows:
            found = _matching(row)
            if found is not None:
                proc.known[row.pid] = found
        proc.refresh_tree()
        if not await answers_ready(proc.url, timeout=2.0):
            return None
        proc.ready_seconds = 0.0
        self.processes[(proc.deployment, proc.version)] = proc
        self._record(proc)
        self._ensure_watching()
        return proc

    def kill_recorded(self, rows: list[ProcessRow]) -> int:
        """Stop recorded processes nobody owns any more (a crashed agent's)."""
        procs = [p for p in (_matching(r) for r in rows) if p is not None]
        kill_tree(procs, grace=3.0)
        for root in {r.root_pid for r in rows}:
            self.registry.forget_processes(root)
        return len(procs)

    def sweep_servers(self) -> list[str]:
        """After a restart, before anything new is started: stop every process of this home's
        servers that no one adopted, whether or not its PID was recorded (an agent killed
        mid-start may not have seen its workers yet), and forget their records."""
        keep = {p.server_id for p in self.processes.values() if p.server_id}
        ours = str(self.home.bentoml_home)
        strays: list[psutil.Process] = []
        for candidate in psutil.process_iter():
            try:
                env = candidate.environ()
            except psutil.Error:
                continue
            server_id = env.get(SERVER_ID_ENV)
            if server_id and server_id not in keep and env.get("BENTOML_HOME") == ours:
                strays.append(candidate)
        if strays:
            kill_tree(strays, grace=3.0)
        gone = [row.server_id for row in self.registry.servers() if row.server_id not in keep]
        for server_id in gone:
            self.registry.forget_server(server_id)
        return gone

    # -- stop -----------------------------------------------------------------------

    async def stop(self, proc: ServingProcess, *, expected: bool = True, grace: float = STOP_GRACE) -> None:
        """Stop the whole recorded tree. ``expected=False``: cleaning up after a crash."""
        proc.stopping = proc.stopping or expected
        proc.refresh_tree()
        procs = list(proc.known.values())
        leftover = await asyncio.to_thread(kill_tree, procs, grace)
        if leftover:
            log.error("processes %s of %s v%s survived SIGKILL", leftover, proc.deployment, proc.version)
        self.registry.forget_processes(proc.pid)
        if proc.server_id is not None:
            self.registry.forget_server(proc.server_id)
        if proc.group is not None:
            proc.group.remove()
        if self.processes.get((proc.deployment, proc.version)) is proc:
            del self.processes[(proc.deployment, proc.version)]

    async def stop_all(self) -> None:
        self.environments.stop_installs()
        await asyncio.gather(*(self.stop(p) for p in list(self.processes.values())))
        if self._watch_task is not None:
            self._watch_task.cancel()

    # -- watch ----------------------------------------------------------------------

    def _check_memory(self, proc: ServingProcess) -> None:
        """Report a server that broke its memory cap: the kernel killed one of its processes
        (cgroups), or the tree's RSS is over it (watchdog)."""
        cap = proc.limits.memory
        if cap is None or self.on_limit is None:
            return
        what = None
        if proc.group is not None and proc.group.dirs:
            kills = proc.group.oom_kills()
            if kills > proc.oom_kills:
                proc.oom_kills = kills
                what = f"the kernel killed a process of it for going over its {cap // 2**20} MiB cap"
        else:
            rss = proc.rss_bytes()
            if rss > cap:
                what = f"its processes used {rss // 2**20} MiB, over the {cap // 2**20} MiB cap"
        if what is not None:
            try:
                self.on_limit(proc, what)
            except Exception:  # noqa: BLE001
                log.exception("memory limit handler failed")

    async def _check_workers(self, proc: ServingProcess) -> None:
        """Report a worker that died (circus starts another) and, once the server has as many
        workers as it should and answers ``/readyz`` again, how long that took."""
        dead = [pid for pid, p in proc.known.items() if pid != proc.pid and not _is_running(p)]
        for pid in dead:
            del proc.known[pid]
        if dead and proc.worker_lost_at is None:
            proc.worker_lost_at = time.monotonic()
            self._report_worker(proc, "lost", {"pids": dead, "workers": proc.workers})
            return
        if proc.worker_lost_at is None or _worker_count(proc) < proc.workers:
            return
        try:
            async with httpx.AsyncClient(timeout=0.5, trust_env=False) as client:
                if (await client.get(f"{proc.url}/readyz")).status_code != 200:
                    return
        except httpx.HTTPError:
            return  # /readyz waits while no worker is up: not back yet
        seconds = time.monotonic() - proc.worker_lost_at
        proc.worker_lost_at = None
        self._report_worker(proc, "back", {"seconds": round(seconds, 2), "workers": proc.workers})

    def _report_worker(self, proc: ServingProcess, what: str, data: dict[str, Any]) -> None:
        if self.on_worker is None:
            return
        try:
            self.on_worker(proc, what, data)
        except Exception:  # noqa: BLE001
            log.exception("worker handler failed")

    def _ensure_watching(self) -> None:
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Record new worker PIDs and report servers that died on their own."""
        while True:
            await asyncio.sleep(1.0)
            for proc in list(self.processes.values()):
                if proc.stopping:
                    continue
                if proc.alive():
                    self._record(proc)
                    if proc.ready:  # a start watches its own workers (_wait_ready)
                        await self._check_workers(proc)
                        self._check_memory(proc)
                    continue
                if proc.popen is not None:
                    proc.popen.poll()  # reap it and keep its exit code
                await self.stop(proc, expected=False, grace=1.0)  # workers may outlive the parent
                if self.on_exit is not None:
                    try:
                        self.on_exit(proc)
                    except Exception:  # noqa: BLE001
                        log.exception("exit handler failed")


def _worker_count(proc: ServingProcess) -> int:
    """BentoML's worker processes in the tree (each started with ``--worker-id``)."""
    count = 0
    for p in list(proc.known.values()):
        try:
            if p.pid != proc.pid and _is_running(p) and "--worker-id" in p.cmdline():
                count += 1
        except psutil.Error:
            continue
    return count


def _environ_of(proc: psutil.Process) -> dict[str, str]:
    try:
        return proc.environ()
    except psutil.Error:
        return {}



def _matching(row: ProcessRow) -> psutil.Process | None:
    try:
        proc = psutil.Process(row.pid)
        if abs(proc.create_time() - row.create_time) > 0.01:
            return None
        return proc
    except psutil.Error:
        return None
