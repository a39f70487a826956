"""The agent's composition root: builds the engine, the monitor and the services, and
wires them together. No logic of its own besides the background loop.

The REST API (``_agent/_rest/``), the panel state (``_agent/_state.py``), the scheduler
and the Prometheus exporter call the services through this object:
``manager.deployments.deploy(...)``, ``manager.rollouts.promote(...)``,
``manager.capacity.scale(...)``, ``manager.readings.latency(...)``. Passing ``engine``
(the local one) or ``monitor`` builds the services around other implementations (fakes in
unit tests); ``others`` are the engines beside the local one (Ray; the shared model servers
are every agent's), ``default_engine`` the one a version runs on when its deploy names none.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .._config import Home
from ._access import Tokens
from ._engine import Engine
from ._engines import Engines
from ._envs import Environments
from ._monitor import Monitor, MonitorSettings
from ._registry import Registry
from ._services.capacity import Capacity
from ._services.checks import ReleaseChecks
from ._services.deployments import Deployments
from ._services.environments import EnvironmentsService
from ._services.fleet import DeploymentView, Fleet
from ._services.readings import Readings
from ._services.rollouts import Rollouts
from ._services.routes import StableRoutes
from ._shared_engine import SharedEngine
from ._supervisor import Supervisor

__all__ = ["DeploymentView", "Manager"]

log = logging.getLogger("nbserve.agent")

HOUSEKEEPING_SECONDS = 2.0  # how often gates are judged, idle deployments cooled, overloads reported


class Manager:
    def __init__(self, home: Home, registry: Registry, *, stable_host: str = "127.0.0.1",
                 monitor_settings: MonitorSettings | None = None, tls: Any = None,
                 tokens: Tokens | None = None, predict_auth: str = "open", public_host: str | None = None,
                 engine: Engine | None = None, monitor: Monitor | None = None,
                 others: dict[str, Engine] | None = None, default_engine: str = "local",
                 shared_memory: int | None = None, shared_models: int | None = None) -> None:
        self.home = home
        self.registry = registry
        # The engine reports exits and broken caps through these; the services exist by then.
        local: Engine = engine or Supervisor(
            home, registry,
            on_exit=lambda proc: self.deployments.on_process_exit(proc),
            on_limit=lambda proc, what: self.capacity.on_memory_limit(proc, what),
            on_worker=lambda proc, what, data: self.deployments.on_worker(proc, what, data),
            on_environment=lambda name, number, what, data: self.deployments.on_environment(
                name, number, what, data),
        )
        if isinstance(local, Supervisor):  # versions deployed with engine="shared" share model servers
            shared = SharedEngine(home, registry, local, memory=shared_memory, max_models=shared_models,
                                  on_exit=lambda proc: self.deployments.on_process_exit(proc))
            others = {"shared": shared, **(others or {})}
        self.engine = Engines(local, others, default=default_engine)
        engine_ = self.engine
        self.monitor = monitor or Monitor(home.metrics, settings=monitor_settings or MonitorSettings.from_env(),
                                          processes=lambda: list(engine_.processes.values()))
        self.fleet = Fleet(home, registry, self.engine, self.monitor,
                           router_for=lambda name: self.routes.router_for(name),
                           stable_host=stable_host, public_host=public_host, tls=tls, tokens=tokens,
                           predict_auth=predict_auth)
        self.readings = Readings(self.fleet)
        self.checks = ReleaseChecks(self.fleet)
        self.rollouts = Rollouts(self.fleet, self.readings)
        self.capacity = Capacity(self.fleet, self.checks)
        self.deployments = Deployments(self.fleet, self.checks, self.rollouts, self.capacity)
        self.environments = EnvironmentsService(self.fleet, self.engine.environments or Environments(home))
        self.routes = StableRoutes(self.fleet, self.readings)

    @property
    def closing(self) -> bool:
        """From True on, nothing new starts (a failed scheduled run's revert included)."""
        return self.fleet.closing

    @closing.setter
    def closing(self, value: bool) -> None:
        self.fleet.closing = value

    def start_background(self) -> None:
        """Background work of a running agent: request capture, gates, scale to zero."""
        self.monitor.start()
        self.fleet.spawn(self._housekeeping())

    async def _housekeeping(self) -> None:
        while not self.fleet.closing:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            try:
                await self.capacity.scale_down()
            except Exception:  # noqa: BLE001 - must not stop the gates
                log.exception("scale-to-zero check failed")
            try:
                self.capacity.report_overloads()
            except Exception:  # noqa: BLE001
                log.exception("batching overload check failed")
            await self.rollouts.judge_all()  # each deployment's failure is logged there

    async def close(self) -> None:
        """Stop every serving process and listener: nothing outlives the agent."""
        self.fleet.closing = True
        self.fleet.cancel_tasks()
        await self.engine.stop_all()
        for state in list(self.fleet.states.values()):
            if state.endpoint is not None:
                await state.endpoint.close()
        await asyncio.to_thread(self.monitor.close)
