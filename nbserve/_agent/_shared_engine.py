"""The shared engine: versions served by shared model servers, many to a process.

``deploy(engine="shared")`` runs a version inside a shared model server
(``nbserve/_shared_server.py``) with the other shared versions of the same environment and
worker count, instead of a ``bentoml serve`` tree of its own: the server loads each model on
its first request and keeps an LRU of them within a memory budget (``--shared-memory``) and a
count (``--shared-models``). Each start of a version is a slot in its server
(``/m/<deployment>/<N>-<id>``, a new id for each start, so a scale runs the new one beside the
old); the agent's proxy forwards to it under that prefix, as it does to Ray Serve.

What the engine keeps on disk, under ``NBSERVE_HOME/shared/<server>/``: ``versions.json`` (the
slots the server may load, written atomically; the server reads it again on a miss),
``server.json`` (its pid, start time and port, to adopt it after an agent restart) and its log.
A server that dies (a model that crashed it) is started again on its port; its versions load
again on their next request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import psutil

from .._config import Home, private_env
from .._events import Event
from ..errors import DeployFailed, InvalidArgument
from ._envs import EnvSpec, Prepared
from ._limits import Limits
from ._registry import Registry
from ._supervisor import (READY_TIMEOUT, Supervisor, answers_ready, free_port, kill_tree, log_tail,
                          summarize_failure)

log = logging.getLogger("nbserve.agent")

SERVER_FILE = Path(__file__).resolve().parent.parent / "_shared_server.py"
SERVER_SCRIPT = "nbserve_shared_server.py"  # its copy, run by each environment's Python
SHARED_ENV = "NBSERVE_SHARED_SERVER"  # the server's name, in the environment of its processes
STATUS_SECONDS = 2.0  # how often the servers are asked what they hold
RESTART_BACKOFF = (0.0, 1.0, 5.0, 15.0)  # a server that keeps dying is started again more slowly
QUARANTINE_AFTER = 2  # a version at work at this many deaths in a row of its server gets a server of its own


@dataclass
class SharedServerProcess:
    """One shared model server: a uvicorn process (and its workers) on a port of its own."""

    name: str  # "<environment>-w<workers>": versions of one environment and worker count share it
    python: str
    environment: str | None
    workers: int
    port: int
    directory: Path
    root: psutil.Process | None = None
    popen: subprocess.Popen[bytes] | None = None
    known: dict[int, psutil.Process] = field(default_factory=dict)
    slots: dict[str, dict[str, Any]] = field(default_factory=dict)  # what versions.json says
    status: dict[str, Any] = field(default_factory=dict)  # what it answered last, by slot
    deaths: int = 0  # exits in a row without a quiet minute between
    suspects: dict[str, int] = field(default_factory=dict)  # slots at work at each of those exits, counted
    last_death: float = 0.0
    stopping: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def alive(self) -> bool:
        try:
            return self.root is not None and self.root.is_running() and self.root.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def refresh_tree(self) -> None:
        if self.root is None:
            return
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            self.known.setdefault(proc.pid, proc)

    def write_slots(self) -> None:
        """versions.json, atomically: the server may read it at any moment."""
        path = self.directory / "versions.json"
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(self.slots, indent=1, sort_keys=True))
        os.replace(partial, path)


@dataclass
class SharedVersion:
    """One start of a version in a shared server: a slot it is loaded into on demand."""

    engine: ClassVar[str] = "shared"
    deployment: str
    version: int
    bento_tag: str
    server: SharedServerProcess
    slot: str  # "<deployment>/<N>-<id>"
    batching: dict[str, Any] | None = None
    ready_seconds: float | None = None
    stopping: bool = False
    limits: Limits = field(default_factory=Limits)  # caps belong to a dedicated server

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def workers(self) -> int:
        return self.server.workers

    @property
    def environment(self) -> str | None:
        return self.server.environment

    @property
    def log_path(self) -> Path:
        return self.server.log_path

    @property
    def prefix(self) -> str:
        return f"/m/{self.slot}"

    @property
    def url(self) -> str:
        return f"{self.server.url}{self.prefix}"

    @property
    def ready(self) -> bool:
        return self.ready_seconds is not None

    @property
    def exit_code(self) -> int | None:
        return self.server.popen.returncode if self.server.popen is not None else None

    @property
    def process_count(self) -> int:
        return len(self.server.known)

    @property
    def known(self) -> dict[int, psutil.Process]:
        """Processes of its own, measured for CPU: none (its server's are shared by all its versions)."""
        return {}

    @property
    def model(self) -> dict[str, Any]:
        """What its server said of it last: loaded, memory_bytes, requests, loads, evictions."""
        return self.server.status.get(self.slot) or {}

    def alive(self) -> bool:
        return self.server.alive() and self.slot in self.server.slots

    def rss_bytes(self) -> int:
        """The memory its model added to the server when it loaded (0 while not loaded)."""
        return int(self.model.get("memory_bytes") or 0)


class SharedEngine:
    """Starts versions as slots of shared model servers, and supervises those servers."""

    name = "shared"
    autoscales = False
    caps = False  # one process holds many versions: no cap is a version's own
    enforcement = "shared"  # no per-version caps: the server's LRU bounds its models' memory

    def __init__(self, home: Home, registry: Registry, local: Supervisor, *, memory: int | None = None,
                 max_models: int | None = None, on_exit: Callable[[SharedVersion], None] | None = None) -> None:
        self.home = home
        self.registry = registry
        self.on_exit = on_exit  # a version taken out of its server (quarantined): the services restart it
        # versions that crashed their server again and again: each runs in a server of its own
        self.quarantined: set[tuple[str, int]] = set()
        self.local = local  # builds the environments (and says so while it does)
        self.memory = memory
        self.max_models = max_models
        self.root = home.root / "shared"
        self.servers: dict[str, SharedServerProcess] = {}
        self.processes: dict[tuple[str, int], SharedVersion] = {}
        self._starting: dict[str, asyncio.Lock] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._found: dict[str, SharedServerProcess] | None = None  # servers a previous agent left, until swept

    @property
    def preparing(self) -> dict[tuple[str, int], dict[str, Any]]:
        return self.local.preparing

    # -- start ------------------------------------------------------------------------------

    async def start(self, deployment: str, version: int, bento_tag: str, *, workers: int = 1,
                    limits: Limits | None = None, batching: dict[str, Any] | None = None,
                    replace: bool = False, environment: EnvSpec | None = None,
                    autoscaling: dict[str, Any] | None = None) -> SharedVersion:
        if autoscaling:
            raise InvalidArgument("the shared engine does not autoscale",
                                  hint="deploy with engine=\"ray\" to let Ray Serve choose the count")
        if limits:
            raise InvalidArgument(
                "memory and cpu caps need a server of the version's own: a shared server holds many models",
                hint="deploy it with engine=\"local\", or clear the caps (dep.scale(memory=None, cpus=None)); "
                     "the shared servers' models are bounded by --shared-memory")
        existing = self.processes.get((deployment, version))
        if existing is not None and existing.alive() and not replace:
            return existing
        prepared = await self.local.prepare_environment(deployment, version, environment)
        alone = f"-{deployment}-v{version}" if (deployment, version) in self.quarantined else ""
        server = await self._server_for(prepared, workers, alone)
        proc = SharedVersion(deployment, version, bento_tag, server, f"{deployment}/{version}-{secrets.token_hex(3)}",
                             batching=batching)
        server.slots[proc.slot] = {"bento_tag": bento_tag, "batching": batching}
        server.write_slots()
        started = time.monotonic()
        try:
            await self._wait_loaded(proc)
        except BaseException:
            await self._remove(proc)  # the one that serves (if any) keeps serving
            raise
        proc.ready_seconds = time.monotonic() - started
        self.processes[(deployment, version)] = proc
        self._ensure_watching()
        return proc

    async def _wait_loaded(self, proc: SharedVersion) -> None:
        """Ask the version's ``/readyz`` through its server: the first request loads its model."""
        deadline = time.monotonic() + READY_TIMEOUT
        async with httpx.AsyncClient(timeout=READY_TIMEOUT, trust_env=False) as client:
            while time.monotonic() < deadline:
                if not proc.server.alive():
                    raise DeployFailed(
                        f"the shared server {proc.server.name} exited while loading {proc.deployment} "
                        f"v{proc.version}: {summarize_failure(log_tail(proc.log_path))}",
                        hint=f"full log: {proc.log_path}; a model that crashes its process is better on "
                             "engine=\"local\"", log_path=str(proc.log_path))
                try:
                    response = await client.get(f"{proc.url}/readyz")
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
                    continue
                if response.status_code == 200:
                    return
                if response.headers.get("content-type", "").startswith("application/json"):
                    message = response.json().get("error") or response.text
                    raise DeployFailed(message, hint=f"the shared server's log: {proc.log_path}",
                                       log_path=str(proc.log_path))
                await asyncio.sleep(0.1)  # its service is up and not ready yet
        raise DeployFailed(f"{proc.deployment} v{proc.version} was not ready in its shared server after "
                           f"{READY_TIMEOUT:.0f} s", hint="raise NBSERVE_READY_TIMEOUT for slow models")

    async def _server_for(self, prepared: Prepared, workers: int, alone: str = "") -> SharedServerProcess:
        name = f"{prepared.key or 'agent'}-w{workers}{alone}"
        lock = self._starting.setdefault(name, asyncio.Lock())
        async with lock:
            server = self.servers.get(name)
            if server is not None and server.alive():
                return server
            if server is None:
                directory = self.root / name
                server = SharedServerProcess(name, prepared.python, prepared.key, workers, free_port(), directory)
                self.servers[name] = server
            await self._spawn(server)
            return server

    async def _spawn(self, server: SharedServerProcess) -> None:
        """Start (or start again) a server on its port and wait until it answers."""
        server.directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SERVER_FILE, server.directory / SERVER_SCRIPT)
        server.write_slots()
        env = {
            "BENTOML_HOME": str(self.home.bentoml_home), "PYTHONUNBUFFERED": "1", SHARED_ENV: server.name,
            "NBSERVE_SHARED_MANIFEST": str(server.directory / "versions.json"),
            "NBSERVE_SHARED_MEMORY": str(self.memory or 0), "NBSERVE_SHARED_MAX_MODELS": str(self.max_models or 0),
        }
        with server.log_path.open("ab") as log_file:
            log_file.write(f"\n--- nbserve: shared server {server.name} on port {server.port} at {time.ctime()}\n"
                           .encode())
            log_file.flush()
            # plain Popen, as the local engine's: psutil reaps these when it stops them
            server.popen = subprocess.Popen(
                [server.python, str(server.directory / SERVER_SCRIPT), "--port", str(server.port),
                 "--workers", str(server.workers)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=private_env(env),
                cwd=str(server.directory), start_new_session=True)
        server.root = psutil.Process(server.popen.pid)
        server.known = {server.root.pid: server.root}
        server.stopping = False
        deadline = time.monotonic() + READY_TIMEOUT
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if not server.alive():
                    raise DeployFailed(f"the shared server {server.name} exited as it started: "
                                       f"{summarize_failure(log_tail(server.log_path))}",
                                       hint=f"full log: {server.log_path}", log_path=str(server.log_path))
                try:
                    if (await client.get(f"{server.url}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            else:
                await self._kill(server)
                raise DeployFailed(f"the shared server {server.name} did not answer within {READY_TIMEOUT:.0f} s",
                                   hint=f"its log: {server.log_path}")
        server.refresh_tree()
        (server.directory / "server.json").write_text(json.dumps(
            {"pid": server.root.pid, "create_time": server.root.create_time(), "port": server.port,
             "python": server.python, "environment": server.environment, "workers": server.workers}))
        self._ensure_watching()

    # -- stop -------------------------------------------------------------------------------

    async def stop(self, proc: Any, *, expected: bool = True, grace: float = 10.0) -> None:
        proc.stopping = True
        if self.processes.get((proc.deployment, proc.version)) is proc:
            del self.processes[(proc.deployment, proc.version)]
        await self._remove(proc)

    async def _remove(self, proc: SharedVersion) -> None:
        """Take a slot out of its server (unloading its model); a server left empty stops."""
        server = proc.server
        if server.slots.pop(proc.slot, None) is not None:
            server.write_slots()
        if not server.slots:
            await self._stop_server(server)
            return
        try:
            async with httpx.AsyncClient(timeout=30.0, trust_env=False) as client:
                await client.post(f"{server.url}/_nbserve/unload/{proc.slot}")
        except httpx.HTTPError:
            pass  # a dead server holds nothing; its next start reads versions.json without the slot

    async def _stop_server(self, server: SharedServerProcess) -> None:
        server.stopping = True
        await self._kill(server)
        if self.servers.get(server.name) is server:
            del self.servers[server.name]
        shutil.rmtree(server.directory, ignore_errors=True)

    async def _kill(self, server: SharedServerProcess) -> None:
        server.refresh_tree()
        leftover = await asyncio.to_thread(kill_tree, list(server.known.values()), 10.0)
        if leftover:
            log.error("processes %s of shared server %s survived SIGKILL", leftover, server.name)

    async def stop_all(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        for proc in list(self.processes.values()):
            proc.stopping = True
        self.processes.clear()
        await asyncio.gather(*(self._stop_server(s) for s in list(self.servers.values())))

    # -- after an agent restart ---------------------------------------------------------------

    def _previous(self) -> dict[str, SharedServerProcess]:
        """The servers a previous agent left running (from their server.json), by name."""
        if self._found is not None:
            return self._found
        self._found = {}
        for info_path in sorted(self.root.glob("*/server.json")):
            try:
                info = json.loads(info_path.read_text())
                slots = json.loads((info_path.parent / "versions.json").read_text())
                root = psutil.Process(int(info["pid"]))
                if abs(root.create_time() - float(info["create_time"])) > 0.01:
                    continue
            except (OSError, ValueError, KeyError, psutil.Error):
                continue
            name = info_path.parent.name
            server = SharedServerProcess(name, info["python"], info.get("environment"), int(info["workers"]),
                                         int(info["port"]), info_path.parent, root=root, slots=slots)
            server.refresh_tree()
            self._found[name] = server
        return self._found

    async def adopt(self, rows: list[Any], bento_tag: str, *, deployment: str | None = None,
                    version: int | None = None) -> SharedVersion | None:
        """Take over the version's slot in a server a previous agent left running, if it answers."""
        for server in self._previous().values():
            for slot, entry in server.slots.items():
                if slot.rsplit("-", 1)[0] != f"{deployment}/{version}" or entry.get("bento_tag") != bento_tag:
                    continue
                if not await answers_ready(server.url, timeout=5.0):
                    return None
                self.servers.setdefault(server.name, server)
                proc = SharedVersion(deployment or "", version or 0, bento_tag, server, slot,
                                     batching=entry.get("batching"), ready_seconds=0.0)
                self.processes[(proc.deployment, proc.version)] = proc
                self._ensure_watching()
                return proc
        return None

    def kill_recorded(self, rows: list[Any]) -> int:
        return 0  # the registry records no process of theirs: server.json does

    def sweep_servers(self) -> list[str]:
        """Stop the shared servers of this home no version was adopted into, and take the slots
        no one adopted out of the others."""
        kept = {p.server.name: p.server for p in self.processes.values()}
        adopted_slots = {p.slot for p in self.processes.values()}
        ours = str(self.home.bentoml_home)
        strays = []
        for candidate in psutil.process_iter():
            try:
                env = candidate.environ()
            except psutil.Error:
                continue
            if env.get(SHARED_ENV) and env.get(SHARED_ENV) not in kept and env.get("BENTOML_HOME") == ours:
                strays.append(candidate)
        if strays:
            kill_tree(strays, grace=3.0)
        stopped = []
        for directory in sorted(self.root.glob("*")) if self.root.is_dir() else []:
            if directory.name not in kept:
                shutil.rmtree(directory, ignore_errors=True)
                stopped.append(directory.name)
        for server in kept.values():
            unowned = [slot for slot in server.slots if slot not in adopted_slots]
            for slot in unowned:
                server.slots.pop(slot)
            if unowned:
                server.write_slots()
        self._found = {}
        return stopped

    # -- watching -----------------------------------------------------------------------------

    def _ensure_watching(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """Start again a server that died, and read what each holds (for events and top)."""
        last_status = 0.0
        while self.servers:
            await asyncio.sleep(0.5)
            for server in list(self.servers.values()):
                if server.stopping:
                    continue
                if not server.alive():
                    await self._revive(server)
                    continue
                server.refresh_tree()
            if time.monotonic() - last_status >= STATUS_SECONDS:
                last_status = time.monotonic()
                for server in list(self.servers.values()):
                    await self._read_status(server)

    @staticmethod
    async def _exit_code(server: SharedServerProcess) -> int | None:
        """The code it exited with; None for a server adopted from an earlier agent. A process
        seen gone may not be reapable yet (its threads still exiting), so wait a moment."""
        if server.popen is None:
            return None
        for _ in range(40):
            if server.popen.poll() is not None:
                break
            await asyncio.sleep(0.05)
        return server.popen.returncode

    async def _revive(self, server: SharedServerProcess) -> None:
        """A server that exited on its own (a model crashed it): say so for each of its
        versions and start it again on its port; its models load again on demand."""
        code = await self._exit_code(server)
        now = time.monotonic()
        server.deaths = server.deaths + 1 if now - server.last_death < 60 else 1
        server.last_death = now
        await self._kill(server)  # its workers may outlive it
        culprits = self._culprits(server)
        versions = [p for p in self.processes.values() if p.server is server and p not in culprits]
        for proc in culprits:
            self._quarantine(proc, code)
        for proc in versions:
            self.registry.add_event(
                Event.PROCESS_EXITED, f"the shared server {server.name} exited (code {code}); starting it again "
                f"(its {len(versions)} version(s) load again on their next request)",
                deployment=proc.deployment, version=proc.version,
                data={"returncode": code, "server": server.name, "log": str(server.log_path)})
        if culprits and not server.slots:
            await self._stop_server(server)
        else:
            await asyncio.sleep(RESTART_BACKOFF[min(server.deaths - 1, len(RESTART_BACKOFF) - 1)])
        for proc in culprits:  # after the server is back or gone: the services start it elsewhere
            if self.on_exit is not None:
                try:
                    self.on_exit(proc)
                except Exception:  # noqa: BLE001
                    log.exception("exit handler failed")
        if server.stopping or self.servers.get(server.name) is not server:
            return
        try:
            await self._spawn(server)
        except DeployFailed as exc:
            log.error("shared server %s did not start again: %s", server.name, exc.message)
            return
        for proc in versions:
            self.registry.add_event(Event.RESTARTED, f"v{proc.version} restarted (its shared server {server.name} "
                                    f"exited with code {code})", deployment=proc.deployment, version=proc.version,
                                    data={"server": server.name})

    def _culprits(self, server: SharedServerProcess) -> list[SharedVersion]:
        """The versions of a dead server that were at work (a request or a load in flight) when
        it died, this time and the time before (within a minute): those take it down. Read from
        the busy-<pid>.json files its processes keep (nbserve/_shared_server.py)."""
        busy: set[str] = set()
        for path in server.directory.glob("busy-*.json"):
            try:
                busy.update(json.loads(path.read_text() or "[]"))
            except (OSError, ValueError):
                pass
            path.unlink(missing_ok=True)
        if server.deaths == 1:
            server.suspects = {}
        for slot in busy:
            server.suspects[slot] = server.suspects.get(slot, 0) + 1
        return [p for p in self.processes.values()
                if p.server is server and server.suspects.get(p.slot, 0) >= QUARANTINE_AFTER]

    def _quarantine(self, proc: SharedVersion, code: int | None) -> None:
        """Take a version that keeps crashing its server out of it: it will run in a server of its own."""
        server = proc.server
        server.slots.pop(proc.slot, None)
        server.write_slots()
        server.suspects.pop(proc.slot, None)
        self.quarantined.add((proc.deployment, proc.version))
        if self.processes.get((proc.deployment, proc.version)) is proc:
            del self.processes[(proc.deployment, proc.version)]
        self.registry.add_event(
            Event.QUARANTINED, f"v{proc.version} was at work each time the shared server {server.name} died "
            f"({server.deaths} times in a row, the last with code {code}): it now runs in a shared server of its own, "
            "and the others are safe from it", deployment=proc.deployment, version=proc.version,
            data={"server": server.name, "returncode": code})

    async def _read_status(self, server: SharedServerProcess) -> None:
        try:
            async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
                answer = (await client.get(f"{server.url}/_nbserve/models")).json()
        except (httpx.HTTPError, ValueError):
            return
        before, server.status = server.status, answer.get("models", {})
        for proc in [p for p in self.processes.values() if p.server is server]:
            self._say_changes(proc, before.get(proc.slot) or {}, server.status.get(proc.slot) or {})

    def _say_changes(self, proc: SharedVersion, before: dict[str, Any], now: dict[str, Any]) -> None:
        """An event when the LRU evicted a version's model, and when a request loaded it again."""
        if not before:
            return  # the first look: its start said it
        if now.get("evictions", 0) > before.get("evictions", 0):
            self.registry.add_event(
                Event.MODEL_EVICTED, f"v{proc.version}'s model was unloaded from the shared server {proc.server.name} "
                "to make room (least recently used); its next request loads it again",
                deployment=proc.deployment, version=proc.version, data={"server": proc.server.name})
        if now.get("loads", 0) > before.get("loads", 0):
            self.registry.add_event(
                Event.MODEL_LOADED, f"v{proc.version}'s model was loaded again in {now.get('load_seconds')} s "
                f"({(now.get('memory_bytes') or 0) // 2**20} MiB)", deployment=proc.deployment, version=proc.version,
                data={"server": proc.server.name, "load_seconds": now.get("load_seconds"),
                      "memory_bytes": now.get("memory_bytes")})

