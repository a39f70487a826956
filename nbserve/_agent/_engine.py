"""The engine seam: where a deployment's versions run.

The services talk to an :class:`Engine`, never to ``bentoml serve``. Every agent has the
local one, :class:`~nbserve._agent._supervisor.Supervisor` (``bentoml serve`` processes on
this host, each tree recorded and stopped); an engine that hands versions to another
system (:class:`~nbserve._agent._ray_engine.RayEngine`, Kubernetes) is a new class with these
methods. :class:`~nbserve._agent._engines.Engines` holds an agent's engines and sends each
version to its own. A running version is a
:class:`ServedVersion`: where it answers and what it runs with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import psutil

from ._envs import EnvSpec
from ._limits import Limits


def rss_of(processes: Iterable[psutil.Process]) -> int:
    """The resident memory of a server's processes together (those gone count nothing)."""
    total = 0
    for proc in list(processes):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


class ServedVersion(Protocol):
    """One running server of a version, as the services see it."""

    engine: str  # the name of the engine that runs it
    deployment: str
    version: int
    port: int
    workers: int
    limits: Limits
    batching: dict[str, Any] | None
    ready_seconds: float | None
    stopping: bool
    environment: str | None  # the environment it runs in (None: the agent's own)
    log_path: Path
    # Its own processes, measured for CPU (a shared server's belong to none of its versions).
    known: Mapping[int, psutil.Process]

    @property
    def url(self) -> str: ...

    @property
    def ready(self) -> bool: ...

    @property
    def exit_code(self) -> int | None: ...

    @property
    def process_count(self) -> int: ...

    def alive(self) -> bool: ...

    def rss_bytes(self) -> int:
        """Its memory: its processes' RSS, or what its model added to a shared server."""
        ...


class Engine(Protocol):
    """Starts, adopts, scales (by replacing) and stops the servers of versions."""

    name: str  # "local", "ray": shown per deployment (GET /v1/resources, nbserve top)
    autoscales: bool  # whether it takes ``autoscaling`` bounds and chooses the count itself
    caps: bool  # whether a version's memory and cpu caps apply (not where one server holds many)
    # Where each version runs now, by (deployment, version).
    processes: Mapping[tuple[str, int], Any]
    # How resource caps are enforced ("cgroup", "watchdog", ...), for events and the panel.
    enforcement: str
    # Versions whose environment is being built now: what it holds and how the agent's differs.
    preparing: Mapping[tuple[str, int], dict[str, Any]]

    async def start(self, deployment: str, version: int, bento_tag: str, *, workers: int = 1,
                    limits: Limits | None = None, batching: dict[str, Any] | None = None,
                    replace: bool = False, environment: EnvSpec | None = None,
                    autoscaling: dict[str, Any] | None = None) -> Any:
        """Start a version's server and return it once it answers ``/readyz``; with
        ``replace``, a second server of the same version may run beside the first.
        ``environment``: the Python and pins the version was built with, which the engine
        provides (the local one: an environment of its own when the agent's differs).
        ``autoscaling``: bounds for an engine that scales replicas itself (Ray); one that
        cannot refuses it (``InvalidArgument``)."""
        ...

    async def stop(self, proc: Any, *, expected: bool = True, grace: float = ...) -> None: ...

    async def stop_all(self) -> None: ...

    async def adopt(self, rows: list[Any], bento_tag: str, *, deployment: str | None = None,
                    version: int | None = None) -> Any:
        """After an agent restart: take over a recorded server that still answers, or None.
        ``rows``: the processes recorded for it; empty for an engine that records none here
        (it finds the version's server by ``deployment`` and ``version``)."""
        ...

    def kill_recorded(self, rows: list[Any]) -> int:
        """Stop recorded servers no one adopted."""
        ...

    def sweep_servers(self) -> list[str]:
        """Stop servers a previous agent left half-started or unowned."""
        ...
