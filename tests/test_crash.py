"""An agent killed (SIGKILL) at any point of a deploy leaves nothing behind.

Each test deploys v1, starts deploying v2 and kills the agent at one point of v2's start:
just after v2 was registered, while its server loads the model, and while its parity replay
runs. The next agent must stop every process of v2's server (recorded or not), mark v2
``failed`` with an event that says why, and serve v1 again at the same stable URL.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable

import httpx
import numpy as np
import psutil
import pytest

import nbserve
from nbserve._agent._supervisor import SERVER_ID_ENV
from nbserve._local import find_agent, start_agent

from .conftest import _forget_clients

pytestmark = pytest.mark.slow


class SlowToLoad:
    """Its server takes seconds to load it: a wide window while the server starts."""

    def __init__(self, model) -> None:
        self.model = model

    def __setstate__(self, state) -> None:
        import os as _os
        import time as _time

        if _os.environ.get("NBSERVE_SERVER_ID"):  # in the server, not in the kernel's own checks
            _time.sleep(8)
        self.__dict__.update(state)

    def predict(self, X):
        return self.model.predict(X)


class SlowOnManyRows:
    """Fast on one row, slow on the whole reference sample: a wide window during parity."""

    def __init__(self, model) -> None:
        self.model = model

    def predict(self, X):
        import os as _os
        import time as _time

        if len(X) > 20 and _os.environ.get("NBSERVE_SERVER_ID"):
            _time.sleep(6)
        return self.model.predict(X)


SlowToLoad.__module__ = SlowOnManyRows.__module__ = "__main__"  # pickled by value, as from a notebook


def _registry(home) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{home.registry}?mode=ro", uri=True, timeout=5)
    db.row_factory = sqlite3.Row
    return db


def _version_status(home, number: int) -> str | None:
    with _registry(home) as db:
        row = db.execute("SELECT status FROM versions WHERE deployment = 'crash' AND number = ?",
                         (number,)).fetchone()
    return row["status"] if row else None


def _server_processes(home, version: int) -> list[psutil.Process]:
    """Every live process of this home's servers for one version, found by the marker every
    process of a server inherits, whether or not the agent had recorded its PID."""
    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if env.get("BENTOML_HOME", "").startswith(str(home.root)) and \
                env.get(SERVER_ID_ENV, "").startswith(f"crash-v{version}-"):
            found.append(proc)
    return found


def _server_ready(home, version: int) -> bool:
    with _registry(home) as db:
        rows = db.execute("SELECT port FROM servers WHERE deployment = 'crash' AND version = ?",
                          (version,)).fetchall()
    for row in rows:
        try:
            if httpx.get(f"http://127.0.0.1:{row['port']}/readyz", timeout=0.5, trust_env=False).status_code == 200:
                return True
        except httpx.HTTPError:
            continue
    return False


def _registered(home) -> bool:
    return _version_status(home, 2) == "starting"


def _loading(home) -> bool:
    """v2's server and at least one of its workers exist; it is not ready."""
    procs = _server_processes(home, 2)
    return len(procs) >= 2 and not _server_ready(home, 2)


def _replaying(home) -> bool:
    return _version_status(home, 2) == "starting" and _server_ready(home, 2)


def _kill_agent_when(home, point: Callable[[object], bool], deploy: Callable[[], object]) -> None:
    agent = find_agent(home)
    assert agent is not None
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            deploy()
        except BaseException as exc:  # noqa: BLE001 - the agent dies under it, as meant
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not point(home):
        assert time.monotonic() < deadline, "the deploy never reached the point to kill at"
        assert thread.is_alive(), f"the deploy ended before the point: {outcome}"
        time.sleep(0.02)
    os.kill(agent.pid, signal.SIGKILL)
    try:
        psutil.Process(agent.pid).wait(timeout=10)
    except psutil.NoSuchProcess:
        pass
    thread.join(timeout=60)
    assert outcome, "the client should see its agent go away"


@pytest.mark.parametrize("point, model_of", [
    (_registered, SlowToLoad),
    (_loading, SlowToLoad),
    (_replaying, SlowOnManyRows),
], ids=["registered", "loading-the-model", "parity-replay"])
def test_an_agent_killed_during_a_deploy_leaves_no_orphan_and_the_old_version_serves(
        fresh_home, iris, forest, tree, point, model_of):
    _, X_test, _, _ = iris
    v1 = nbserve.deploy(forest, "crash", X_test, progress=False)
    _kill_agent_when(fresh_home, point, lambda: nbserve.deploy(model_of(tree), "crash", X_test, progress=False))

    _forget_clients()
    start_agent(fresh_home)
    assert _server_processes(fresh_home, 2) == [], "v2's half-started server outlived the agent that started it"
    with _registry(fresh_home) as db:
        assert db.execute("SELECT count(*) FROM servers WHERE version = 2").fetchone()[0] == 0
    dep = nbserve.get("crash")
    deadline = time.monotonic() + 60
    while dep.refresh().status != "serving" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert dep.url == v1.url and dep.version == 1
    history = dep.history()
    assert history.loc[2, "status"] == "failed"
    assert "agent stopped during its start" in history.loc[2, "error"]
    assert "start_interrupted" in set(dep.events()["kind"])
    np.testing.assert_array_equal(dep.predict(X_test), forest.predict(X_test))

    if point is _loading:  # the next deploy is not held up by the one that was cut short
        v3 = nbserve.deploy(tree, "crash", X_test, progress=False)
        assert v3.version == 3
        np.testing.assert_array_equal(v3.predict(X_test), tree.predict(X_test))
        assert nbserve.get("crash").history().loc[2, "status"] == "failed"
    # fresh_home's teardown stops the agent and fails if any process of this home is left


# -- a worker killed under load -----------------------------------------------------------


def _worker_pids(home) -> list[int]:
    pids = []
    for proc in psutil.process_iter():
        try:
            if "--worker-id" in proc.cmdline() and proc.environ().get("BENTOML_HOME", "").startswith(str(home.root)):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


def _load_while(url: str, body: dict, until: threading.Event) -> list[tuple[int | None, str | None]]:
    """Two clients posting predictions until told to stop; (status, retry-after) per answer,
    (None, error) for a request that got no complete answer."""
    answers: list[tuple[int | None, str | None]] = []

    def client() -> None:
        with httpx.Client(timeout=60, trust_env=False) as http:
            while not until.is_set():
                try:
                    r = http.post(f"{url}/predict", json=body)
                    answers.append((r.status_code, r.headers.get("retry-after")))
                except httpx.HTTPError as exc:
                    answers.append((None, type(exc).__name__))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    until.wait()
    for t in threads:
        t.join(timeout=90)
    return answers


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_worker_costs_requests_a_bounded_wait_and_is_reported(fresh_home, iris, forest, workers):
    """A worker killed under load stalled its in-flight requests until circus had a new one
    up (12 s seen). Now they are sent again: another worker answers them, or, with none, they
    get a 503 with Retry-After after NBSERVE_RETRY_WAIT (5 s); the events say when the server
    had its workers again."""
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "worker-kill", X_test, workers=workers, progress=False)
    body = {"data": X_test.head(1).to_dict("records")}
    done = threading.Event()
    result: list[list[tuple[int | None, str | None]]] = []
    loader = threading.Thread(target=lambda: result.append(_load_while(dep.url, body, done)), daemon=True)
    loader.start()
    time.sleep(1.5)
    victim = _worker_pids(fresh_home)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while "worker_restarted" not in set(dep.events()["kind"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1.0)  # traffic after the restart too
    done.set()
    loader.join(timeout=120)
    answers = result[0]
    statuses = [status for status, _ in answers]
    assert statuses.count(200) > 50
    odd = [a for a in answers if a[0] not in (200, 503, None)]
    assert not odd, f"only 200s, or 503s while no worker was up: {odd}"
    assert all(retry == "1" for status, retry in answers if status == 503), "a 503 says when to retry"
    if workers > 1:
        assert 503 not in statuses, "the other worker should answer the requests the dead one lost"
    # a response whose head had left the dead worker cannot be sent again: at most the two in flight
    assert statuses.count(None) <= 2
    events = dep.events()
    lost = events[events["kind"] == "worker_exited"]
    back = events[events["kind"] == "worker_restarted"]
    assert len(lost) == 1 and str(victim) in lost.iloc[0]["message"]
    assert len(back) == 1 and back.iloc[0]["data"]["seconds"] > 0
    np.testing.assert_array_equal(dep.predict(X_test), forest.predict(X_test))
