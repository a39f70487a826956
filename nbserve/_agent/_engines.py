"""The engines one agent has, seen by the services as one :class:`~._engine.Engine`.

Every agent has the local engine (``bentoml serve`` here); one given a Ray cluster
(``--ray-address``, or ``NBSERVE_RAY_ADDRESS``) has the Ray engine too. Each version runs on
the engine it was deployed with (``deploy(engine="ray")``, recorded in the version's
metadata; the agent's default otherwise), so a canary can run on Ray beside a live version
served here. :class:`Engines` sends each call to the engine that owns the version (or the
server), and answers for all of them where the services ask about every server.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping
from typing import Any

from .. import errors
from ._engine import Engine

__all__ = ["Engines"]


class Engines:
    """The local engine and the others an agent was given, by name."""

    def __init__(self, local: Engine, others: Mapping[str, Engine] | None = None, *, default: str = "local") -> None:
        self.local = local
        self.by_name: dict[str, Engine] = {"local": local, **(others or {})}
        if default not in self.by_name:
            raise ValueError(f"the default engine {default!r} is not one of {sorted(self.by_name)}")
        self.default = default
        # One live view over every engine's servers: a version runs on one engine only.
        self.processes: Mapping[tuple[str, int], Any] = ChainMap(*(e.processes for e in self.by_name.values()))

    @property
    def name(self) -> str:
        return self.default

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.by_name)

    @property
    def enforcement(self) -> str:
        return self.local.enforcement

    @property
    def preparing(self) -> Mapping[tuple[str, int], dict[str, Any]]:
        return self.local.preparing

    @property
    def environments(self) -> Any:
        return getattr(self.local, "environments", None)

    def get(self, name: str | None) -> Engine:
        """The engine called ``name`` (None: the default), or a 400 naming the ones there are."""
        engine = self.by_name.get(name or self.default)
        if engine is None:
            raise errors.InvalidArgument(
                f"this agent has no {name!r} engine (it has {', '.join(self.names)})",
                hint="start the agent with --ray-address HOST:PORT (or set NBSERVE_RAY_ADDRESS before it starts) "
                     "to serve versions on a Ray cluster; see docs/ray.md" if name == "ray" else None,
            )
        return engine

    def owner(self, proc: Any) -> Engine:
        return self.by_name[getattr(proc, "engine", "local")]

    def enforcement_of(self, proc: Any) -> str:
        return self.owner(proc).enforcement

    # -- the engine seam, sent on --------------------------------------------------------

    async def start(self, deployment: str, version: int, bento_tag: str, *, engine: str | None = None,
                    **options: Any) -> Any:
        return await self.get(engine).start(deployment, version, bento_tag, **options)

    async def stop(self, proc: Any, **options: Any) -> None:
        await self.owner(proc).stop(proc, **options)

    async def stop_all(self) -> None:
        for engine in self.by_name.values():
            await engine.stop_all()

    async def adopt(self, rows: list[Any], bento_tag: str, *, deployment: str | None = None,
                    version: int | None = None, engine: str | None = None) -> Any:
        """Recorded processes are the local engine's; a version without any is asked of its own engine."""
        target = self.local if rows else self.by_name.get(engine or self.default)
        if target is None:  # deployed on an engine this agent was started without
            return None
        return await target.adopt(rows, bento_tag, deployment=deployment, version=version)

    def kill_recorded(self, rows: list[Any]) -> int:
        return self.local.kill_recorded(rows)

    def sweep_servers(self) -> list[str]:
        swept: list[str] = []
        for engine in self.by_name.values():
            swept += engine.sweep_servers()
        return swept
