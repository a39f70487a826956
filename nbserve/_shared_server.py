"""A shared model server: many versions' BentoML services in one process, loaded on demand.

Each version is its own BentoML ASGI app (its routes, checks, batching and wire formats, as
``bentoml serve`` would serve them), mounted under ``/m/<deployment>/<N>-<start>`` (a slot: each
start of a version has its own, so a restart with new settings runs beside the old one). A model is loaded
on its first request (held meanwhile, like a cold start) and kept in an LRU bounded by a
memory budget and a count; the least recently used idle model is unloaded when a new one
does not fit. Which versions the server may load is a manifest the agent writes
(``versions.json``: ``"<deployment>/<N>-<start>" -> {"bento_tag", "batching"}``), read again when a
request names one it does not know, so every worker of the server sees the same set.

Run by path, with the version's own Python (``python nbserve_shared_server.py``), so it
imports nothing of nbserve's: bentoml, starlette, uvicorn and psutil, which every Bento's
environment has. Settings come from the environment (``NBSERVE_SHARED_*``), so uvicorn's
worker processes read the same ones.

Several Bentos in one interpreter need care where BentoML assumes one per process:
- each Bento ships modules of the same names (``nbserve_service``, ``nbserve_serving``...),
  so a load swaps them into ``sys.modules`` under a lock and takes them out after, leaving
  each service holding its own;
- the version's settings that its modules read at import (``NBSERVE_VERSION``,
  ``NBSERVE_BATCHING``) are set in ``os.environ`` for that import;
- BentoML's per-service Prometheus collectors share one registry and would collide, so
  the apps are built without them (nbserve's agent measures every request itself).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import importlib
import json
import logging
import os
import sys
import time
import typing as t
from dataclasses import dataclass, field

log = logging.getLogger("nbserve.shared")

MANIFEST_ENV = "NBSERVE_SHARED_MANIFEST"  # the path of versions.json
MEMORY_ENV = "NBSERVE_SHARED_MEMORY"  # bytes the loaded models may take together (0: no bound)
MAX_MODELS_ENV = "NBSERVE_SHARED_MAX_MODELS"  # how many may be loaded at once (0: no bound)
VERSION_ENV = "NBSERVE_VERSION"  # read by each Bento's nbserve_serving at import
BATCHING_ENV = "NBSERVE_BATCHING"
PREFIX = "/m/"
BUSY_PREFIX = "busy-"  # busy-<pid>.json: the slots with requests in flight in that process
CONTROL = "/_nbserve/"
# The modules every nbserve Bento carries under the same names (nbserve/_bundle.py copies them).
BENTO_MODULES = ("nbserve_service", "nbserve_serving", "nbserve_kinds", "nbserve_flavor_calls",
                 "nbserve_protocols", "nbserve_protocol_base", "nbserve_protocol_v2", "nbserve_protocol_mlflow",
                 "nbserve_protocol_openai", "nbserve_onnx")

Scope = t.MutableMapping[str, t.Any]
Receive = t.Callable[[], t.Awaitable[t.MutableMapping[str, t.Any]]]
Send = t.Callable[[t.MutableMapping[str, t.Any]], t.Awaitable[None]]


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def release_memory() -> None:
    """Give freed memory back to the system, so an unload shows in RSS (glibc keeps it otherwise)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@dataclass
class Loaded:
    """One version's app in this process, and what it costs."""

    key: str  # "<deployment>/<N>"
    bento_tag: str
    app: t.Any
    lifespan: asyncio.Task[None]
    inbox: asyncio.Queue[dict[str, t.Any]]
    outbox: asyncio.Queue[dict[str, t.Any]]
    memory: int  # RSS the load added, measured
    load_seconds: float
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    requests: int = 0


class ModelUnavailable(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SharedServer:
    """The ASGI app of a shared server: routes ``/m/<deployment>/<N>-<start>/...`` to that start's app."""

    def __init__(self, manifest: str, *, memory: int = 0, max_models: int = 0) -> None:
        self.manifest_path = manifest
        self.memory_budget = memory
        self.max_models = max_models
        self.manifest: dict[str, dict[str, t.Any]] = {}
        self._manifest_mtime: float | None = None
        self.loaded: dict[str, Loaded] = {}
        self.failed: dict[str, str] = {}  # the last load error of each version that failed
        self.loads: dict[str, int] = {}  # how often each version was loaded (an eviction makes it 2)
        self.evictions: dict[str, int] = {}
        self._lock = asyncio.Lock()  # one load or unload at a time (sys.modules is shared)
        self.busy: dict[str, int] = {}  # requests in flight by slot
        # BUSY_PREFIX<pid>.json beside the manifest: the slots at work now (read by the agent after a crash)
        self._busy_fd = os.open(os.path.join(os.path.dirname(os.path.abspath(manifest)), f"{BUSY_PREFIX}{os.getpid()}.json"),
                                os.O_RDWR | os.O_CREAT, 0o600)
        self.started = time.time()

    # -- the manifest ------------------------------------------------------------------------

    def read_manifest(self) -> None:
        try:
            mtime = os.stat(self.manifest_path).st_mtime_ns
        except OSError:
            self.manifest = {}
            return
        if mtime == self._manifest_mtime:
            return
        try:
            with open(self.manifest_path) as handle:
                self.manifest = json.load(handle)
            self._manifest_mtime = mtime
        except (OSError, ValueError) as exc:  # written atomically; a bad one is kept out
            log.error("cannot read %s: %s", self.manifest_path, exc)

    # -- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope.get("path", "")
        if scope["type"] not in ("http", "websocket"):
            return
        if path.startswith(PREFIX):
            await self._to_model(path, scope, receive, send)
        elif path in ("/livez", "/readyz", "/healthz"):
            await _json(send, 200, {"status": "ok"})
        elif path.startswith(CONTROL):
            await self._control(path[len(CONTROL):], scope, receive, send)
        else:
            await _json(send, 404, {"error": f"no route {path}: a shared server answers under /m/<deployment>/<N>/"})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # what every model needs, loaded once before any: a model's measured memory is its own
                for name in ("bentoml", "pandas", "_bentoml_impl.server.app"):
                    importlib.import_module(name)

                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for key in list(self.loaded):
                    await self._unload(key)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _to_model(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        parts = path[len(PREFIX):].split("/", 2)
        if len(parts) < 2 or not parts[1].split("-", 1)[0].isdigit():
            await _json(send, 404, {"error": f"no version in {path}: expected /m/<deployment>/<N>[-<start>]/..."})
            return
        key = f"{parts[0]}/{parts[1]}"
        self._busy(key, +1)
        try:
            try:
                model = await self.get(key)
            except ModelUnavailable as exc:
                await _json(send, exc.status, {"error": exc.message})
                return
            model.in_flight += 1
            model.requests += 1
            model.last_used = time.monotonic()
            # as Ray Serve does with a route prefix: the path keeps the prefix, root_path names it
            inner = dict(scope, root_path=scope.get("root_path", "") + f"{PREFIX}{key}")
            try:
                await model.app(inner, receive, send)
            finally:
                model.in_flight -= 1
                model.last_used = time.monotonic()
        finally:
            self._busy(key, -1)

    def _busy(self, key: str, change: int) -> None:
        """Count a slot's requests (a load included); when the set of busy slots changes, write
        it down, so that if this process dies the agent knows which models were at work."""
        count = self.busy.get(key, 0) + change
        if count > 0:
            self.busy[key] = count
        else:
            self.busy.pop(key, None)
        if (count == 1 and change > 0) or count == 0:
            data = json.dumps(sorted(self.busy)).encode()
            os.pwrite(self._busy_fd, data, 0)  # two syscalls, only when a slot starts or stops being busy
            os.ftruncate(self._busy_fd, len(data))

    # -- loading -------------------------------------------------------------------------------

    async def get(self, key: str) -> Loaded:
        model = self.loaded.get(key)
        if model is not None:
            return model
        async with self._lock:
            model = self.loaded.get(key)
            if model is not None:  # another request loaded it while this one waited
                return model
            self.read_manifest()
            entry = self.manifest.get(key)
            if entry is None:
                raise ModelUnavailable(404, f"this shared server does not serve {key}")
            await self._make_room()
            model = await self._load(key, entry)
            await self._make_room(keep=key)
            return model

    async def _load(self, key: str, entry: dict[str, t.Any]) -> Loaded:
        import bentoml

        started = time.monotonic()
        before = rss()
        tag = str(entry["bento_tag"])
        number = key.rsplit("/", 1)[1].split("-", 1)[0]  # a slot: "<deployment>/<N>-<start>"
        saved_env = {name: os.environ.get(name) for name in (VERSION_ENV, BATCHING_ENV)}
        os.environ[VERSION_ENV] = number
        if entry.get("batching"):
            os.environ[BATCHING_ENV] = json.dumps(entry["batching"])
        else:
            os.environ.pop(BATCHING_ENV, None)
        for name in BENTO_MODULES:  # the previous load's: this Bento imports its own
            sys.modules.pop(name, None)
        src = None
        try:
            service = bentoml.load(tag)
            src = bentoml.get(tag).path_of("src")
            sys.path.insert(0, src)  # the service's __init__ may import more of the Bento's modules
            app = _service_app(service)
            inbox: asyncio.Queue[dict[str, t.Any]] = asyncio.Queue()
            outbox: asyncio.Queue[dict[str, t.Any]] = asyncio.Queue()
            lifespan = asyncio.get_running_loop().create_task(
                app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put))
            await inbox.put({"type": "lifespan.startup"})
            answer = await _next_message(outbox, lifespan)
            if answer.get("type") != "lifespan.startup.complete":
                raise RuntimeError(answer.get("message") or "its service did not start")
        except Exception as exc:  # noqa: BLE001 - a model that cannot load must not take the others down
            message = f"{type(exc).__name__}: {exc}"[:800]
            self.failed[key] = message
            log.error("could not load %s (%s): %s", key, tag, message)
            raise ModelUnavailable(503, f"v{number} could not be loaded in the shared server: {message}") from None
        finally:
            if src is not None and src in sys.path:
                sys.path.remove(src)
            # the service holds its own modules; the next load must not find them (those named, and
            # any other the Bento's source directory holds, whatever nbserve wrote it with)
            here = os.path.realpath(src) + os.sep if src else None  # bentoml imports from the real path
            for name in [n for n, m in list(sys.modules.items())
                         if n in BENTO_MODULES or (here and str(getattr(m, "__file__", "") or "").startswith(here))]:
                sys.modules.pop(name, None)
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        seconds = time.monotonic() - started
        model = Loaded(key, tag, app, lifespan, inbox, outbox, memory=max(rss() - before, 0), load_seconds=seconds)
        self.loaded[key] = model
        self.failed.pop(key, None)
        self.loads[key] = self.loads.get(key, 0) + 1
        log.info("loaded %s (%s) in %.2f s, %d MiB", key, tag, seconds, model.memory // 2**20)
        return model

    async def _make_room(self, keep: str | None = None) -> None:
        """Unload the least recently used idle models while over the count or memory budget."""
        while True:
            used = sum(m.memory for m in self.loaded.values())
            over_count = self.max_models and len(self.loaded) + (0 if keep else 1) > self.max_models
            over_memory = self.memory_budget and used > self.memory_budget
            if not (over_count or over_memory):
                return
            idle = sorted((m for m in self.loaded.values() if m.key != keep and m.in_flight == 0),
                          key=lambda m: m.last_used)
            if not idle:
                return  # every other model is answering now: over the budget until one is idle
            await self._unload(idle[0].key, evicted=True)

    async def _unload(self, key: str, *, evicted: bool = False) -> None:
        model = self.loaded.pop(key, None)
        if model is None:
            return
        await model.inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(_next_message(model.outbox, model.lifespan), timeout=30)
        except Exception as exc:  # noqa: BLE001 - it is gone either way
            log.warning("%s did not shut down cleanly: %s", key, exc)
        model.lifespan.cancel()
        del model
        release_memory()
        if evicted:
            self.evictions[key] = self.evictions.get(key, 0) + 1
        log.info("unloaded %s%s", key, " (least recently used)" if evicted else "")

    # -- control ---------------------------------------------------------------------------------

    async def _control(self, what: str, scope: Scope, receive: Receive, send: Send) -> None:
        if what == "models" and scope.get("method") == "GET":
            await _json(send, 200, self.status())
        elif what.startswith("unload/") and scope.get("method") == "POST":
            key = what[len("unload/"):]
            async with self._lock:
                await self._unload(key)
            await _json(send, 200, self.status())
        else:
            await _json(send, 404, {"error": f"no control route {what!r}"})

    def status(self) -> dict[str, t.Any]:
        """What is loaded (and what it costs), what failed, and the budget."""
        self.read_manifest()
        now = time.monotonic()
        return {
            "pid": os.getpid(),
            "rss_bytes": rss(),
            "memory_budget": self.memory_budget or None,
            "max_models": self.max_models or None,
            "models": {
                key: {
                    "bento_tag": entry.get("bento_tag"),
                    "loaded": key in self.loaded,
                    "memory_bytes": self.loaded[key].memory if key in self.loaded else None,
                    "load_seconds": round(self.loaded[key].load_seconds, 3) if key in self.loaded else None,
                    "idle_seconds": round(now - self.loaded[key].last_used, 1) if key in self.loaded else None,
                    "requests": self.loaded[key].requests if key in self.loaded else 0,
                    "loads": self.loads.get(key, 0),
                    "evictions": self.evictions.get(key, 0),
                    "error": self.failed.get(key),
                }
                for key, entry in self.manifest.items()
            },
        }


def _service_app(service: t.Any) -> t.Any:
    """The service's ASGI app as ``to_asgi(is_main=True)`` builds it, without BentoML's own
    Prometheus collectors (one registry per process: a second service's would collide)."""
    from _bentoml_impl.server.app import ServiceAppFactory

    service.inject_config()
    return ServiceAppFactory(service, is_main=True, enable_metrics=False)()


async def _next_message(outbox: asyncio.Queue[dict[str, t.Any]], lifespan: asyncio.Task[None]) -> dict[str, t.Any]:
    """The app's answer to a lifespan message, or the error that ended its lifespan."""
    getter = asyncio.ensure_future(outbox.get())
    done, _ = await asyncio.wait({getter, lifespan}, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        return getter.result()
    getter.cancel()
    error = lifespan.exception()
    return {"type": "lifespan.failed", "message": f"{type(error).__name__}: {error}" if error else "it ended"}


async def _json(send: Send, status: int, body: t.Any) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def app_from_env() -> SharedServer:
    """The factory uvicorn calls in each worker."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")  # before bentoml is imported
    return SharedServer(os.environ[MANIFEST_ENV], memory=int(os.environ.get(MEMORY_ENV) or 0),
                        max_models=int(os.environ.get(MAX_MODELS_ENV) or 0))


def main(argv: list[str] | None = None) -> int:
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # by import string, so that with workers > 1 each worker builds its own server
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    module = os.path.splitext(os.path.basename(__file__))[0]
    uvicorn.run(f"{module}:app_from_env", factory=True, host=args.host, port=args.port, workers=args.workers,
                log_level="warning", access_log=False, timeout_keep_alive=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
