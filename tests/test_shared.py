"""Versions that share a model server (``engine="shared"``): real shared servers, real HTTP.

Many small models in one process, each at its own stable URL answering its own predictions;
an LRU that unloads the least recently used model under a small bound and loads it again on
its next request; a model that crashes its server takes down only that server, which comes
back with its versions; an agent killed and started again adopts the server; rollbacks move a
deployment between a shared version and a dedicated one without losing an answer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import psutil
import pytest

import nbserve
from nbserve._agent._shared_engine import SHARED_ENV
from nbserve._local import find_agent, start_agent, stop_agent

from .conftest import _forget_clients

pytestmark = pytest.mark.slow


def shared_servers(home) -> list[psutil.Process]:
    """The shared model servers' main processes of this home."""
    ours = {}
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if env.get(SHARED_ENV) and env.get("BENTOML_HOME", "").startswith(str(home.root)):
                ours[proc.pid] = proc
        except psutil.Error:
            continue
    return [p for p in ours.values() if p.ppid() not in ours]  # not uvicorn's worker processes


def offset_model(iris, offset: int):
    """A small regressor whose answers say which model gave them: the class plus ``offset``."""
    from sklearn.tree import DecisionTreeRegressor

    X_train, _, y_train, _ = iris
    return DecisionTreeRegressor(max_depth=3, random_state=0).fit(X_train, y_train + offset)


def _wait(predicate, timeout: float = 60.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _models(dep) -> dict:
    """What the version's shared server says of its model (from /v1/resources)."""
    from nbserve._api import top

    return top().loc[dep.name].to_dict()


class CrashesOnSentinel:
    """Answers like its model, except that a row with sepal_length -1 kills its process:
    a model that takes its server down (a segfault in native code, an os._exit in a library)."""

    def __init__(self, model) -> None:
        self.model = model

    def predict(self, X):
        import os as _os

        if (X["sepal_length"] == -1).any():
            _os._exit(3)
        return self.model.predict(X)


def test_twelve_deployments_share_one_server_and_each_answers_its_own(fresh_home, iris):
    _, X_test, _, _ = iris
    start_agent(fresh_home)
    models = {f"seg-{i}": offset_model(iris, 10 * i) for i in range(12)}
    deps = {name: nbserve.deploy(model, name, X_test, engine="shared", progress=False)
            for name, model in models.items()}
    assert len(shared_servers(fresh_home)) == 1, "one environment, one worker count: one server"
    for name, dep in deps.items():
        np.testing.assert_allclose(dep.predict(X_test), models[name].predict(X_test))
        assert dep.history().loc[1, "status"] == "live"
    # everything a version has: its schema's 4xx, the other wire formats, its per-version URL
    one = deps["seg-3"]
    bad = httpx.post(f"{one.url}/predict", json={"data": [{"sepal_length": 1.0}]}, timeout=30, trust_env=False)
    assert bad.status_code == 422 and "missing columns" in bad.json()["error"]
    v2 = httpx.post(f"{one.url}/v2/models/seg-3/infer", timeout=30, trust_env=False, json={"inputs": [
        {"name": c, "shape": [1], "datatype": "FP64", "data": [float(X_test.iloc[0][c])]} for c in X_test.columns]})
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == pytest.approx(list(models["seg-3"].predict(X_test.head(1))))
    per_version = httpx.post(f"{one.url}/v/1/predict", json={"data": X_test.head(2).to_dict("records")},
                             timeout=30, trust_env=False)
    assert per_version.json() == pytest.approx(list(models["seg-3"].predict(X_test.head(2))))
    row = _models(one)
    assert row["engine"].startswith("shared")
    assert row["rss_bytes"] > 0, "its model's memory, measured in its server"
    # a version's stop takes it out of the server; the others keep answering
    one.stop()
    np.testing.assert_allclose(deps["seg-4"].predict(X_test), models["seg-4"].predict(X_test))
    assert len(shared_servers(fresh_home)) == 1


def test_the_least_recently_used_model_is_unloaded_and_loaded_again_on_its_next_request(fresh_home, iris):
    _, X_test, _, _ = iris
    start_agent(fresh_home, ["--shared-models", "2"])
    models = [offset_model(iris, 100 * i) for i in range(3)]
    deps = [nbserve.deploy(m, f"lru-{i}", X_test, engine="shared", progress=False) for i, m in enumerate(models)]
    # three models, room for two: the first was unloaded when the third came
    _wait(lambda: "model_evicted" in set(deps[0].events()["kind"]), what="lru-0's eviction event")
    started = time.monotonic()
    np.testing.assert_allclose(deps[0].predict(X_test), models[0].predict(X_test))
    reload_seconds = time.monotonic() - started
    assert reload_seconds < 30
    _wait(lambda: "model_loaded" in set(deps[0].events()["kind"]), what="lru-0's load event")
    loaded = deps[0].events().query("kind == 'model_loaded'").iloc[0]
    assert loaded["data"]["memory_bytes"] > 0
    for dep, model in zip(deps, models):  # every one answers, whichever is loaded now
        np.testing.assert_allclose(dep.predict(X_test), model.predict(X_test))


def test_a_model_that_crashes_its_server_takes_down_only_that_server_and_is_then_put_in_one_of_its_own(
        fresh_home, iris, forest):
    _, X_test, _, _ = iris
    start_agent(fresh_home)
    crasher = nbserve.deploy(CrashesOnSentinel(forest), "crasher", X_test, engine="shared", progress=False)
    calm = nbserve.deploy(offset_model(iris, 7), "calm", X_test, engine="shared", progress=False)
    dedicated = nbserve.deploy(forest, "dedicated", X_test, engine="local", progress=False)
    before = shared_servers(fresh_home)
    assert len(before) == 1
    poison = X_test.head(1).assign(sepal_length=-1.0)
    with pytest.raises(nbserve.errors.NbserveError):
        crasher.predict(poison)
    _wait(lambda: "restarted" in set(calm.events()["kind"]), timeout=90, what="the shared server's restart")
    exited = calm.events().query("kind == 'process_exited'")
    assert len(exited) >= 1 and "code 3" in exited.iloc[0]["message"]
    assert shared_servers(fresh_home)[0].pid != before[0].pid
    np.testing.assert_allclose(calm.predict(X_test), offset_model(iris, 7).predict(X_test))
    # it was at work each time the server died: after the second time it gets a server of its own
    for _ in range(3):
        if "quarantined" in set(crasher.events()["kind"]):
            break
        with pytest.raises(nbserve.errors.NbserveError):
            crasher.predict(poison)
        time.sleep(1.0)
    _wait(lambda: "quarantined" in set(crasher.events()["kind"]), timeout=60, what="the quarantine")
    _wait(lambda: crasher.refresh().status == "serving" and _models(crasher)["models"]
          and _models(crasher)["models"][0]["server"] == "agent-w1-crasher-v1", timeout=90, what="its own server")
    np.testing.assert_array_equal(crasher.predict(X_test), forest.predict(X_test))
    exits = len(calm.events().query("kind == 'process_exited'"))
    with pytest.raises(nbserve.errors.NbserveError):
        crasher.predict(poison)  # now it takes down its own server only
    _wait(lambda: crasher.refresh().status == "serving" and _models(crasher)["models"]
          and _models(crasher)["models"][0]["server"] == "agent-w1-crasher-v1", timeout=90, what="its restart")
    assert len(calm.events().query("kind == 'process_exited'")) == exits, "its old neighbours are safe from it"
    np.testing.assert_allclose(calm.predict(X_test), offset_model(iris, 7).predict(X_test))
    np.testing.assert_array_equal(dedicated.predict(X_test), forest.predict(X_test))
    assert "process_exited" not in set(dedicated.events()["kind"]), "a dedicated server is not touched"


def test_an_agent_killed_and_started_again_adopts_its_shared_server(fresh_home, iris):
    _, X_test, _, _ = iris
    start_agent(fresh_home)
    model = offset_model(iris, 3)
    dep = nbserve.deploy(model, "adoptee", X_test, engine="shared", progress=False)
    server = shared_servers(fresh_home)[0]
    agent = find_agent(fresh_home)
    os.kill(agent.pid, signal.SIGKILL)
    _wait(lambda: not psutil.pid_exists(agent.pid) or psutil.Process(agent.pid).status() == psutil.STATUS_ZOMBIE)
    _forget_clients()
    start_agent(fresh_home)
    dep = nbserve.get("adoptee")
    _wait(lambda: "adopted" in set(dep.events()["kind"]), what="the adoption event")
    assert [p.pid for p in shared_servers(fresh_home)] == [server.pid], "the same server serves on"
    np.testing.assert_allclose(dep.predict(X_test), model.predict(X_test))
    stop_agent(fresh_home)
    assert not shared_servers(fresh_home), "an agent that stops stops its shared servers"


@contextlib.contextmanager
def under_load(url: str, body: dict) -> Iterator[list]:
    """Two clients posting ``body`` to ``url`` for the block; each answer's status (or the error
    of a request that got none), checked by the caller after the block."""
    until, answers = threading.Event(), []

    def client() -> None:
        with httpx.Client(timeout=60, trust_env=False) as http:
            while not until.is_set():
                try:
                    answers.append(http.post(f"{url}/predict", json=body).status_code)
                except httpx.HTTPError as exc:
                    answers.append(type(exc).__name__)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        yield answers
    finally:
        until.set()
        for thread in threads:
            thread.join(timeout=60)


def test_rollbacks_between_a_shared_and_a_dedicated_version_answer_every_request(fresh_home, iris):
    _, X_test, _, _ = iris
    start_agent(fresh_home)
    shared_model, dedicated_model = offset_model(iris, 0), offset_model(iris, 50)
    dep = nbserve.deploy(shared_model, "mover", X_test, engine="shared", progress=False)
    nbserve.deploy(dedicated_model, "mover", X_test, engine="local", progress=False)
    with under_load(dep.url, {"data": X_test.head(1).to_dict("records")}) as answers:
        for target, model in ((1, shared_model), (2, dedicated_model), (1, shared_model)):
            dep.rollback(to=target)
            np.testing.assert_allclose(dep.predict(X_test), model.predict(X_test))
            time.sleep(0.5)
    assert answers and all(a == 200 for a in answers), f"{len(answers)} answers: {set(map(str, answers))}"
    history = dep.history()
    assert history.loc[1, "status"] == "live" and history.loc[2, "status"] in ("warm", "stopped")


def test_scale_moves_the_live_version_out_of_a_shared_server_and_back_answering_every_request(fresh_home, iris):
    _, X_test, _, _ = iris
    start_agent(fresh_home)
    model = offset_model(iris, 20)
    dep = nbserve.deploy(model, "movable", X_test, engine="shared", progress=False)
    # caps belong to a server of the version's own: refused, and nothing changes
    with pytest.raises(nbserve.errors.InvalidArgument, match="caps"):
        nbserve.deploy(model, "movable", X_test, engine="shared", memory="512M", progress=False)
    assert list(dep.history().index) == [1]
    with under_load(dep.url, {"data": X_test.head(1).to_dict("records")}) as answers:
        dep.scale(engine="dedicated")
        assert _models(dep)["engine"] == "local" and dep.history().loc[1, "engine"] == "local"
        assert not shared_servers(fresh_home), "its shared server held only it: it stopped"
        np.testing.assert_allclose(dep.predict(X_test), model.predict(X_test))
        dep.scale(engine="shared")
        assert _models(dep)["engine"].startswith("shared") and dep.history().loc[1, "engine"] == "shared"
        np.testing.assert_allclose(dep.predict(X_test), model.predict(X_test))
        time.sleep(0.5)
    assert answers and all(a == 200 for a in answers), f"{len(answers)} answers: {set(map(str, answers))}"
    moved = dep.events().query("kind == 'moved'")
    assert [(d["from"], d["to"]) for d in moved["data"]] == [("shared", "local"), ("local", "shared")]
    with pytest.raises(nbserve.errors.InvalidArgument, match="engine must be one of"):
        dep.scale(engine="elsewhere")


def test_two_workers_batching_and_scale_to_zero_apply_to_a_shared_version(fresh_home, iris):
    _, X_test, _, _ = iris
    start_agent(fresh_home)
    model = offset_model(iris, 30)
    dep = nbserve.deploy(model, "busy", X_test, engine="shared", workers=2, batching=True, max_batch_size=16,
                         max_latency_ms=500, progress=False)
    servers = shared_servers(fresh_home)
    workers = [p for p in servers[0].children() if "resource_tracker" not in " ".join(p.cmdline())]
    assert len(servers) == 1 and len(workers) == 2, "a server of two uvicorn workers"
    assert _models(dep)["models"][0]["server"] == "agent-w2"
    with httpx.Client(timeout=30, trust_env=False) as http:
        for _ in range(40):
            answer = http.post(f"{dep.url}/predict", json={"data": X_test.head(3).to_dict("records")})
            assert answer.status_code == 200 and answer.json() == pytest.approx(list(model.predict(X_test.head(3))))
            assert int(answer.headers["x-nbserve-batch-rows"]) >= 3, "batched"
    assert "batching_checked" in set(dep.events()["kind"])
    # scale to zero takes it out of its server (the last one: the server stops), a request wakes it
    dep.scale(idle_timeout="2s")
    _wait(lambda: _models(dep)["state"] == "cold" and not shared_servers(fresh_home), timeout=60, what="cold")
    np.testing.assert_allclose(dep.predict(X_test), model.predict(X_test))
    assert "woken" in set(dep.events()["kind"]) and len(shared_servers(fresh_home)) == 1
