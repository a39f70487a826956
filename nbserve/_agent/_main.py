"""Run the agent: one process per ``NBSERVE_HOME``, holding its lock for life.

Start-up order matters: take the lock (a second agent exits at once), make the token,
open the registry, restore what was serving, then listen and write ``agent.json`` last,
so a client that sees ``agent.json`` finds an agent ready to answer. On SIGTERM/SIGINT or
``POST /v1/agent/shutdown`` every serving process is stopped before the agent exits.

An agent that cannot start (TLS needed, a bad certificate, its port taken, a damaged
registry, a full disk) says why on stderr and, as one JSON line, in ``logs/agent-refusal.json``:
the client that started it in the background (``_local.start_agent``) raises that error.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .. import errors
from .._config import Home

if TYPE_CHECKING:
    from ._monitor import MonitorSettings
    from ._registry import Registry

log = logging.getLogger("nbserve.agent")

EXIT_REFUSED = 2  # the agent could not start; its reason is in the refusal file
EXIT_ALREADY_RUNNING = 3  # another agent holds the lock: a starter waits for that one


class AgentAlreadyRunning(errors.Conflict):
    """Another agent holds this home's lock. Only the agent process meets it (it exits with
    EXIT_ALREADY_RUNNING and the starter waits for the winner), so it is not in errors.__all__."""


class StartRefused(Exception):
    """Start-up stopped before the agent was ready, for ``error``'s reason."""

    def __init__(self, error: errors.NbserveError) -> None:
        super().__init__(error.message)
        self.error = error


def refusal_file(home: Home) -> Path:
    return home.logs / "agent-refusal.json"


def write_refusal(home: Home, error: errors.NbserveError) -> None:
    """One JSON line for the client that started this agent; best effort (the disk may be full)."""
    line = json.dumps({"pid": os.getpid(), "at": time.time(), **error.to_payload()["error"]}, default=str)
    try:
        home.logs.mkdir(parents=True, exist_ok=True)
        tmp = refusal_file(home).with_name(f"agent-refusal.{os.getpid()}.tmp")
        tmp.write_text(line + "\n")
        os.replace(tmp, refusal_file(home))
    except OSError:
        pass


def read_refusal(home: Home) -> dict[str, Any] | None:
    """The last refusal an agent of this home wrote (``pid``, ``at``, ``type``, ``message``...)."""
    try:
        found = json.loads(refusal_file(home).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and isinstance(found.get("message"), str) else None


@dataclass(frozen=True)
class Exposure:
    """How the agent faces the network: TLS files, the stable URLs' host name, and whether
    stable URLs need a predict token by default."""

    tls_cert: str | None = None
    tls_key: str | None = None
    insecure: bool = False  # listen beyond loopback without TLS: only when asked for by name
    predict_auth: str | None = None  # "token" | "open"; None: token unless loopback without TLS
    public_host: str | None = None  # the host name clients use, for stable URLs

    def refusal(self, host: str) -> errors.AgentStartFailed | None:
        """Why the agent must not listen on ``host`` with these settings (None: it may)."""
        if bool(self.tls_cert) != bool(self.tls_key):
            return errors.AgentStartFailed("give both --tls-cert and --tls-key",
                                           hint="make a pair with `nbserve agent init-tls`")
        if _is_loopback(host) or self.tls_cert or self.insecure:
            return None
        return errors.AgentStartFailed(
            f"refusing to listen on {host} without TLS: tokens and data would cross the network in clear text",
            hint="make a certificate with `nbserve agent init-tls --tls-host <name>` and pass --tls-cert/--tls-key, "
                 "or pass --insecure to accept the risk (e.g. behind a TLS proxy)",
        )

    def default_predict_auth(self, host: str) -> str:
        if self.predict_auth:
            return self.predict_auth
        return "open" if _is_loopback(host) and not self.tls_cert else "token"


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_or_create_token(home: Home) -> str:
    path = home.token_file
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return token


def take_lock(home: Home) -> IO[str]:
    handle = home.lock_file.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise AgentAlreadyRunning(f"another agent holds {home.lock_file}",
                                  hint="`nbserve agent status` shows it; `nbserve agent stop` stops it") from None
    return handle


def write_agent_file(home: Home, host: str, port: int, exposure: Exposure | None = None) -> None:
    exposure = exposure or Exposure()
    # Clients on this host reach an agent that listens on every address through loopback.
    reach = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    reach = f"[{reach}]" if ":" in reach else reach
    scheme = "https" if exposure.tls_cert else "http"
    info = {
        "pid": os.getpid(),
        "host": host,
        "port": port,
        "url": f"{scheme}://{reach}:{port}",
        "tls_cert": str(Path(exposure.tls_cert).resolve()) if exposure.tls_cert else None,
        "started_at": time.time(),
    }
    tmp = home.agent_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, home.agent_file)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise errors.AgentStartFailed(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pick another --port (or leave it out for a free one), or stop what holds it"
            if port else "check --host: it must be an address of this machine",
        ) from None
    sock.setblocking(False)
    return sock


def _start_error(exc: Exception, home: Home) -> errors.NbserveError:
    """What a start-up failure tells the person who started the agent."""
    from ._storage import insufficient, is_disk_full

    if isinstance(exc, errors.NbserveError):
        return exc
    if is_disk_full(exc):
        return insufficient(home.root, what="the agent cannot start")
    log.error("start-up failed", exc_info=exc)  # the traceback stays in the log
    return errors.AgentStartFailed(f"the agent failed while starting: {type(exc).__name__}: {exc}",
                                   hint=f"see {home.agent_log}")


def _set_aside_damaged_metrics(home: Home, registry: "Registry") -> None:
    """A metrics file SQLite cannot read is moved aside (kept, never deleted) and a new one
    started: measurements are not worth refusing to serve for, but they are not dropped
    silently either (a ``metrics_damaged`` event, a warning in the log, ``nbserve doctor``)."""
    import sqlite3

    from ._registry import is_damage

    path = home.metrics
    if not path.exists():
        return
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the header and schema
        finally:
            db.close()
        return
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        found = str(exc)
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):  # the WAL keeps its name's pairing: sqlite3 opens it with the file
        part = Path(f"{path}{suffix}")
        if part.exists():
            os.replace(part, f"{aside}{suffix}")
    message = (f"metrics.sqlite was damaged ({found}): moved to {aside.name} and a new one started; "
               f"latency and sample history before now is in that file (recover it with sqlite3 .recover)")
    log.warning(message)
    registry.add_event("metrics_damaged", message, data={"path": str(aside), "found": found})


async def serve(home: Home, host: str = "127.0.0.1", port: int = 0, *, monitor: "MonitorSettings | None" = None,
                lock: IO[str] | None = None, exposure: Exposure | None = None,
                memory_budget: int | None = None, ray: "RayTarget | None" = None,
                shared: "SharedTarget | None" = None) -> None:
    import uvicorn

    from .._tls import server_context
    from ._access import Tokens
    from ._manager import Manager
    from ._registry import Registry
    from ._rest.app import create_app
    from ._scheduler import Scheduler

    lock = lock or take_lock(home)
    ready = False
    try:
        exposure = exposure or Exposure()
        token = read_or_create_token(home)
        registry = Registry(home.registry)
        _set_aside_damaged_metrics(home, registry)
        tokens = Tokens(registry, token)
        tls: Any = server_context(exposure.tls_cert, exposure.tls_key) if exposure.tls_cert else None
        others = {}
        if ray is not None:  # versions deployed with engine="ray" (all, if it is the default) go to Ray Serve
            from ._ray_engine import RayEngine

            others["ray"] = RayEngine(home, registry, address=ray.address, http_port=ray.http_port)
        manager = Manager(home, registry, monitor_settings=monitor, stable_host=host, tls=tls, tokens=tokens,
                          predict_auth=exposure.default_predict_auth(host),
                          public_host=exposure.public_host or _public_host(host), others=others,
                          default_engine="ray" if ray is not None and ray.default else
                          "shared" if shared is not None and shared.default else "local",
                          shared_memory=shared.memory if shared else None,
                          shared_models=shared.max_models if shared else None)
        manager.capacity.memory_budget = memory_budget
        scheduler = Scheduler(home, registry, revert=manager.deployments.revert)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        sock = _bind(host, port)
        bound_port = sock.getsockname()[1]
        app = create_app(manager, tokens, on_shutdown=stop.set, scheduler=scheduler)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                ssl_certfile=exposure.tls_cert, ssl_keyfile=exposure.tls_key,
                                timeout_keep_alive=30)
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        registry.add_event("agent_started", f"agent pid {os.getpid()} on {host}:{bound_port}"
                           + (" (TLS)" if tls else ""))
        chain = registry.verify_audit()
        if chain["ok"]:
            log.info("audit log: %d records, head %s", chain["records"], chain["head"])
        else:
            log.error("audit log is broken: %s", chain["problem"])
        manager.start_background()
        await manager.deployments.restore()
        server_task = loop.create_task(server.serve(sockets=[sock]))
        while not server.started and not server_task.done():
            await asyncio.sleep(0.01)
        if not server.started:
            raise errors.AgentStartFailed(f"the API server did not start: {server_task.exception()!r}",
                                          hint=f"see {home.agent_log}")
        write_agent_file(home, host, bound_port, exposure)
        ready = True
        refusal_file(home).unlink(missing_ok=True)  # an earlier start's reason no longer holds
        # What start-up loaded (FastAPI, BentoML, pandas...) lives as long as the agent: keep it
        # out of the collector, so a full collection does not pause the stable URLs for tens of ms.
        gc.collect()
        gc.freeze()
        log.info("agent listening on %s:%s (home %s)", host, bound_port, home.root)
        await scheduler.start()  # after agent.json: a run's deploy must find this agent

        stop_task = loop.create_task(stop.wait())
        await asyncio.wait({server_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        log.info("agent stopping")
        home.agent_file.unlink(missing_ok=True)
        manager.closing = True  # from now on nothing new starts (a failed run's revert included)
        await scheduler.close()  # stop running notebooks before the servers they deploy to
        await manager.close()
        registry.add_event("agent_stopped", f"agent pid {os.getpid()} stopped")
        server.should_exit = True
        await asyncio.wait({server_task}, timeout=5)
        registry.close()
    except Exception as exc:
        if ready:
            raise
        raise StartRefused(_start_error(exc, home)) from None
    finally:
        if _owns_agent_file(home):
            home.agent_file.unlink(missing_ok=True)
        lock.close()


def _owns_agent_file(home: Home) -> bool:
    try:
        return json.loads(home.agent_file.read_text()).get("pid") == os.getpid()
    except (OSError, ValueError):
        return False


def _public_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return socket.getfqdn()
    return host


@dataclass(frozen=True)
class RayTarget:
    """The Ray cluster an agent hands its Ray versions to."""

    address: str  # the cluster's GCS address, HOST:PORT (what `ray start --head` printed)
    http_port: int = 8000  # Ray Serve's HTTP ingress on this host (bound to 127.0.0.1)
    default: bool = True  # every version runs there unless its deploy says engine="local"


@dataclass(frozen=True)
class SharedTarget:
    """The bounds of the shared model servers' LRU (``engine="shared"``)."""

    memory: int | None = None  # bytes the loaded models of one server may take together
    max_models: int | None = None  # models one server keeps loaded at once
    default: bool = False  # every version runs in one unless its deploy names another engine


def run(home: Home, host: str = "127.0.0.1", port: int = 0, *, monitor: "MonitorSettings | None" = None,
        exposure: Exposure | None = None, memory_budget: str | int | None = None,
        ray: RayTarget | None = None, shared: SharedTarget | None = None) -> int:
    """Blocking entry point of ``nbserve agent run``; returns the exit code."""
    exposure = exposure or Exposure()
    from ._limits import parse_memory

    try:
        budget = parse_memory(memory_budget or os.environ.get("NBSERVE_MEMORY_BUDGET") or None)
    except errors.InvalidArgument as exc:
        return _refuse(home, exc)
    refusal = exposure.refusal(host)
    if refusal:
        return _refuse(home, refusal)
    try:
        home.ensure()
    except OSError as exc:
        return _refuse(home, _start_error(exc, home))
    # The lock first, before any heavy import: a second agent (two kernels racing to start
    # one) exits in milliseconds instead of lingering through start-up.
    try:
        lock = take_lock(home)
    except AgentAlreadyRunning as exc:
        _say(exc)
        return EXIT_ALREADY_RUNNING
    os.environ["BENTOML_HOME"] = str(home.bentoml_home)  # before bentoml is imported
    logging.basicConfig(
        level=os.environ.get("NBSERVE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health probe is noise
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        runner = asyncio.run
    try:
        runner(serve(home, host, port, monitor=monitor, lock=lock, exposure=exposure, memory_budget=budget,
                     ray=ray, shared=shared))
    except StartRefused as refused:
        return _refuse(home, refused.error)
    return 0


def _say(error: errors.NbserveError) -> None:
    print(f"nbserve agent: {error.message}", file=sys.stderr)
    if error.hint:
        print(f"  hint: {error.hint}", file=sys.stderr)


# Start-up failures keep these classes (the starter raises them too); any other becomes
# AgentStartFailed with its message and hint.
START_ERRORS = (errors.AgentStartFailed, errors.RegistryDamaged, errors.InsufficientStorage)


def _refuse(home: Home, error: errors.NbserveError) -> int:
    """Say why the agent does not start (stderr: the terminal of `agent run`, or agent.log)
    and leave the reason for the client that started it in the background."""
    if not isinstance(error, START_ERRORS):
        error = errors.AgentStartFailed(error.message, hint=error.hint, **error.details)
    _say(error)
    if home.root.is_dir():
        write_refusal(home, error)
    return EXIT_REFUSED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(Home.resolve(Path(sys.argv[1]) if len(sys.argv) > 1 else None)))
