"""The agent's services with a fake engine: the lifecycle rules without ``bentoml serve``.

What runs for real: the SQLite registry, the stable endpoints (loopback listeners) and
asyncio. What is fake: the engine (no server processes; a "server" is a record of what was
asked) and the monitor (nothing is captured). The same rules run against real servers in
test_deploy, test_rollouts, test_crash and test_scale; these pin the services' decisions
one at a time, in a few seconds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from nbserve import errors
from nbserve._agent._limits import Limits
from nbserve._agent._manager import Manager
from nbserve._agent._registry import Registry
from nbserve._config import Home


@dataclass(eq=False)
class FakeServer:
    engine: ClassVar[str] = "local"
    deployment: str
    version: int
    port: int
    workers: int = 1
    limits: Limits = field(default_factory=Limits)
    batching: dict[str, Any] | None = None
    ready_seconds: float | None = 0.1
    stopping: bool = False
    environment: str | None = None
    log_path: Path = Path("/dev/null")
    exit_code: int | None = None
    running: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ready(self) -> bool:
        return self.ready_seconds is not None

    @property
    def process_count(self) -> int:
        return 2

    def alive(self) -> bool:
        return self.running

    def rss_bytes(self) -> int:
        return 100 * 2**20


class FakeEngine:
    """Records what the services ask; ``fail_next`` makes the next start fail."""

    enforcement = "none"
    autoscales = False
    caps = True

    def __init__(self) -> None:
        self.processes: dict[tuple[str, int], FakeServer] = {}
        self.started: list[tuple[str, int]] = []
        self.stopped: list[tuple[str, int]] = []
        self.fail_next: str | None = None
        self.environments: list[Any] = []  # the environment asked for at each start
        self.preparing: dict[tuple[str, int], dict[str, Any]] = {}
        self._port = 40000

    async def start(self, deployment: str, version: int, bento_tag: str, *, workers: int = 1,
                    limits: Limits | None = None, batching: dict[str, Any] | None = None,
                    replace: bool = False, environment: Any = None, autoscaling: Any = None) -> FakeServer:
        self.environments.append(environment)
        if self.fail_next:
            message, self.fail_next = self.fail_next, None
            raise errors.DeployFailed(message)
        self._port += 1
        server = FakeServer(deployment, version, self._port, workers, limits or Limits(), batching)
        self.processes[(deployment, version)] = server
        self.started.append((deployment, version))
        return server

    async def stop(self, proc: FakeServer, *, expected: bool = True, grace: float = 1.0) -> None:
        proc.stopping, proc.running = True, False
        if self.processes.get((proc.deployment, proc.version)) is proc:
            del self.processes[(proc.deployment, proc.version)]
        self.stopped.append((proc.deployment, proc.version))

    async def stop_all(self) -> None:
        for proc in list(self.processes.values()):
            await self.stop(proc)

    async def adopt(self, rows: list[Any], bento_tag: str, **found_by: Any) -> None:
        return None

    def kill_recorded(self, rows: list[Any]) -> int:
        return 0

    def sweep_servers(self) -> list[str]:
        return []


class FakeMonitor:
    resources_now: dict[Any, Any] = {}

    def observer_for(self, name: str) -> Any:
        return lambda record: None

    def sampler_for(self, name: str, rate: float, budget: int) -> Any:
        return lambda: False

    def start(self) -> None: ...

    def close(self) -> None: ...


@pytest.fixture
def agent(tmp_path):
    """A Manager over a real registry, a fake engine and a fake monitor, with one deployment
    ``d`` holding two registered versions (neither started)."""
    home = Home(tmp_path)
    registry = Registry(tmp_path / "registry.sqlite")
    engine = FakeEngine()
    manager = Manager(home, registry, engine=engine, monitor=FakeMonitor())  # type: ignore[arg-type]
    registry.create_deployment("d", 0)
    for _ in range(2):
        registry.add_version("d", "d:tag", {}, "test")
    yield manager, engine
    registry.close()


def kinds(manager: Manager) -> list[str]:
    return [e.kind for e in manager.registry.events("d")]  # oldest first


def run(manager: Manager, coro: Any) -> Any:
    async def main() -> Any:
        try:
            return await coro
        finally:
            await manager.close()

    return asyncio.run(main())


def test_start_makes_the_live_version_serve_through_the_stable_endpoint(agent):
    manager, engine = agent
    manager.registry.update_deployment("d", live_version=1)

    async def main() -> None:
        await manager.deployments.start("d", actor="me")
        endpoint = manager.fleet.endpoint_of("d")
        assert endpoint is not None and endpoint.upstream is not None and endpoint.upstream.label == "1"
        assert manager.fleet.view("d").status == "serving"

    run(manager, main())
    assert engine.started == [("d", 1)]
    assert manager.registry.get_version("d", 1).status == "live"
    assert kinds(manager)[-1] == "started"


def test_a_cold_rollback_starts_the_target_and_keeps_the_previous_version_warm(agent):
    manager, engine = agent
    manager.registry.update_deployment("d", live_version=1)
    manager.registry.set_version_status("d", 2, "stopped")  # served before, not running now

    async def main() -> None:
        await manager.deployments.start("d", actor="me")
        await manager.deployments.rollback("d", 2, actor="me")
        assert manager.fleet.endpoint_of("d").upstream.label == "2"
        assert manager.registry.get_version("d", 1).status == "warm" and ("d", 1) in engine.processes

    run(manager, main())
    assert engine.started == [("d", 1), ("d", 2)]
    assert manager.registry.get_deployment("d").live_version == 2
    rollback = manager.registry.events("d")[-1]
    assert rollback.kind == "rollback" and rollback.data == {"previous": 1, "cold": True}


def test_rolling_back_to_a_version_that_never_served_is_refused_and_nothing_changes(agent):
    manager, engine = agent
    manager.registry.update_deployment("d", live_version=1)
    manager.registry.set_version_status("d", 2, "failed")

    async def main() -> None:
        await manager.deployments.start("d", actor="me")
        with pytest.raises(errors.VersionNotFound, match="never went live"):
            await manager.deployments.rollback("d", 2, actor="me")
        with pytest.raises(errors.VersionNotFound, match="no earlier version"):
            await manager.deployments.rollback("d", None, actor="me")
        assert manager.fleet.endpoint_of("d").upstream.label == "1"

    run(manager, main())
    assert engine.started == [("d", 1)]


def test_stop_retires_every_server_and_the_stable_url_stays(agent):
    manager, engine = agent
    manager.registry.update_deployment("d", live_version=1)

    async def main() -> None:
        await manager.deployments.start("d", actor="me")
        await manager.deployments.stop("d", actor="me")
        endpoint = manager.fleet.endpoint_of("d")
        assert endpoint is not None and endpoint.upstream is None  # answers 503, not "refused"
        assert manager.fleet.view("d").status == "stopped"

    run(manager, main())
    assert engine.stopped == [("d", 1)] and not engine.processes
    assert manager.registry.get_version("d", 1).status == "stopped"


def test_a_failed_start_leaves_the_live_version_serving(agent):
    manager, engine = agent
    manager.registry.update_deployment("d", live_version=1)
    manager.registry.set_version_status("d", 2, "stopped")

    async def main() -> None:
        await manager.deployments.start("d", actor="me")
        engine.fail_next = "port taken"
        with pytest.raises(errors.DeployFailed, match="port taken"):
            await manager.deployments.rollback("d", 2, actor="me")
        assert manager.fleet.endpoint_of("d").upstream.label == "1"

    run(manager, main())
    assert manager.registry.get_deployment("d").live_version == 1


def test_a_server_that_exits_on_its_own_is_restarted_and_the_endpoint_follows(agent):
    manager, engine = agent
    manager.registry.update_deployment("d", live_version=1)

    async def main() -> None:
        await manager.deployments.start("d", actor="me")
        crashed = engine.processes[("d", 1)]
        crashed.running, crashed.exit_code = False, -9
        del engine.processes[("d", 1)]
        manager.deployments.on_process_exit(crashed)  # what the engine reports
        for _ in range(100):  # the first restart waits RESTART_BACKOFF[0] = 1 s
            if "restarted" in kinds(manager):
                break
            await asyncio.sleep(0.05)
        new = engine.processes[("d", 1)]
        assert new is not crashed and manager.fleet.endpoint_of("d").upstream.port == new.port

    run(manager, main())
    assert kinds(manager)[-2:] == ["process_exited", "restarted"]
    assert engine.started == [("d", 1), ("d", 1)]


def test_after_a_restart_an_idle_timeout_deployment_comes_back_cold_not_started(agent):
    manager, engine = agent
    manager.registry.update_deployment("d", live_version=1, config={"idle_timeout": "15m"})
    manager.registry.set_version_status("d", 1, "live")

    async def main() -> None:
        await manager.deployments.restore()  # the fake engine adopts nothing
        assert manager.fleet.is_cold("d") and manager.fleet.view("d").status == "cold"

    run(manager, main())
    assert engine.started == []  # the next request wakes it


def test_reverting_a_scheduled_runs_live_version_rolls_back_to_the_one_before(agent):
    manager, engine = agent
    manager.registry.update_deployment("d", live_version=1)
    manager.registry.set_version_status("d", 2, "stopped")

    async def main() -> str:
        await manager.deployments.start("d", actor="me")
        await manager.deployments.rollback("d", 2, actor="me")  # v2 live, as a run's deploy leaves it
        return await manager.deployments.revert("d", 2, 1, "the run failed")

    assert run(manager, main()) == "rolled back to v1"
    assert manager.registry.get_deployment("d").live_version == 1
