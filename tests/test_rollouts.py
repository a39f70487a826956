"""Releases: parity before traffic, canary and shadow, promote/abort, gates that act alone.

Real agent, real `bentoml serve` processes, real HTTP; steady load from threads counts
every response of the runs that cross a switch.
"""

from __future__ import annotations

import json
import os
import time

import httpx
import numpy as np
import pytest

import nbserve
from nbserve import errors

from ._load import Load

pytestmark = pytest.mark.slow


def _body(frame) -> str:
    return json.dumps({"data": json.loads(frame.to_json(orient="records"))})


def _wait(predicate, timeout: float = 60.0, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


class EnvModel:
    """Predicts from an environment variable: the notebook and the server disagree."""

    def __init__(self, variable: str) -> None:
        self.variable = variable

    def predict(self, X):
        return np.full(len(X), float(os.environ.get(self.variable, "0")))


EnvModel.__module__ = "__main__"  # as if defined in a notebook cell


class Slow:
    """Wraps a model and sleeps in predict: deliberately worse on latency."""

    def __init__(self, model, ms: float) -> None:
        self.model, self.ms = model, ms

    def predict(self, X):
        time.sleep(self.ms / 1000)
        return self.model.predict(X)


Slow.__module__ = "__main__"


def test_parity_mismatch_stops_the_deploy_and_skipping_it_is_recorded(module_home, iris, forest):
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "parity", X_test, progress=False)
    os.environ["NBSERVE_TEST_PARITY"] = "1"  # the agent (started before) does not have it
    try:
        with pytest.raises(errors.DeployFailed, match="parity check failed: 45 of 45") as caught:
            nbserve.deploy(EnvModel("NBSERVE_TEST_PARITY"), "parity", X_test, progress=False)
        assert "skip_parity=True" in str(caught.value)
        dep.refresh()
        assert dep.version == 1 and dep.status == "serving"
        failed = dep.history().loc[2]
        assert failed["status"] == "failed" and "parity" in failed["error"]
        assert httpx.post(f"{dep.url}/predict", content=_body(X_test[:2]),
                          headers={"content-type": "application/json"}).headers["x-nbserve-version"] == "1"
        report = dep.events().set_index("kind").loc["deploy_failed", "data"]
        parity = report["parity"]
        assert parity["mismatches"] == 45 and parity["examples"][0] == {
            "row": 0, "expected": 1.0, "served": 0.0, "input": json.loads(X_test[:1].to_json(orient="records"))[0],
        }
        skipped = nbserve.deploy(EnvModel("NBSERVE_TEST_PARITY"), "parity", X_test, skip_parity=True,
                                 progress=False)
        assert skipped.version == 3
        kinds = skipped.events()["kind"].tolist()
        assert "parity_skipped" in kinds and kinds.count("parity_passed") == 1
        assert skipped.versions[-1]["metadata"]["release"]["skip_parity"] is True
    finally:
        del os.environ["NBSERVE_TEST_PARITY"]
        nbserve.get("parity").stop()


def test_canary_promote_and_abort_drop_no_request(module_home, iris, forest, tree):
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "canary", X_test, progress=False)
    body = _body(X_test[:3])
    with Load(dep.url, body, threads=4) as load:
        time.sleep(0.5)
        dep = nbserve.deploy(tree, "canary", X_test, canary=30, progress=False)
        assert dep.version == 1
        assert dep.history().loc[2, "status"] == "canary"
        rollout = dep.rollout()
        assert rollout["mode"] == "canary" and rollout["version"] == 2 and rollout["percent"] == 30
        _wait(lambda: load.versions["2"] > 20)
        dep.set_canary(80)
        assert dep.rollout()["percent"] == 80
        dep.promote()
        assert dep.version == 2 and dep.rollout() is None
        time.sleep(0.3)  # requests already in flight to v1 finish there
        before = load.versions["1"]
        time.sleep(1.0)
        assert load.versions["1"] == before  # nothing goes to v1 after the promote
        third = nbserve.deploy(forest, "canary", X_test, canary=50, progress=False)
        _wait(lambda: load.versions["3"] > 10)
        third.abort()
        time.sleep(0.3)
        after_abort = load.versions["3"]
        time.sleep(1.0)
        assert load.versions["3"] == after_abort
    assert load.failures == [] and set(load.statuses) == {200}, (load.statuses, load.failures[:3])
    assert load.total > 100
    history = nbserve.get("canary").history()
    assert history.loc[2, "status"] == "live" and history.loc[3, "status"] == "stopped"
    assert history.loc[3, "error"].startswith("aborted")
    kinds = nbserve.get("canary").events()["kind"].tolist()
    for kind in ("canary_started", "canary_changed", "promoted", "aborted"):
        assert kind in kinds
    with pytest.raises(errors.Conflict):
        nbserve.get("canary").promote()
    with pytest.raises(errors.InvalidArgument, match="canary must be a percentage"):
        nbserve.deploy(tree, "canary", X_test, canary=150, progress=False)
    with pytest.raises(errors.InvalidArgument, match="canary or shadow"):
        nbserve.deploy(tree, "canary", X_test, canary=10, shadow=True, progress=False)
    nbserve.get("canary").stop()


def test_a_breached_gate_rolls_the_canary_back_on_its_own(module_home, iris, forest):
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "gated", X_test, progress=False)
    gates = dep.gates(p99_ms=40, error_rate=0.01, min_requests=15, window="10m")
    assert gates == {"p99_ms": 40, "error_rate": 0.01, "min_requests": 15, "window": "10m"}
    with pytest.raises(errors.InvalidArgument, match="error_rate"):
        dep.gates(error_rate=5)
    with pytest.raises(errors.InvalidArgument, match="unknown gate"):
        dep.configure(gates={"p95": 1})
    slow = Slow(forest, ms=120)
    dep = nbserve.deploy(slow, "gated", X_test, canary=50, progress=False)
    with Load(dep.url, _body(X_test[:2]), threads=4) as load:
        _wait(lambda: nbserve.get("gated").rollout() is None, timeout=90)
    assert load.failures == [] and set(load.statuses) == {200}
    dep.refresh()
    assert dep.version == 1
    events = dep.events().set_index("kind")
    breach = events.loc["gate_breached"]
    assert "p99" in breach["message"] and breach["actor"] == "nbserve-gates"
    assert breach["data"]["figures"]["requests"] >= 15 and breach["data"]["figures"]["p99_ms"] > 40
    assert dep.history().loc[2, "error"].startswith("gate_breached: p99")


def test_passing_gates_promote_with_auto_promote(module_home, iris, forest, tree):
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "auto", X_test, progress=False)
    dep.gates(p99_ms=5000, error_rate=0.5, min_requests=10, window="4s")
    dep = nbserve.deploy(tree, "auto", X_test, canary=50, auto_promote=True, progress=False)
    with Load(dep.url, _body(X_test[:2]), threads=2) as load:
        _wait(lambda: nbserve.get("auto").version == 2, timeout=90)
    assert load.failures == [] and set(load.statuses) == {200}
    promoted = nbserve.get("auto").events().set_index("kind").loc["promoted"]
    assert promoted["actor"] == "nbserve-gates" and "gates passed" in promoted["message"]
    nbserve.get("auto").stop()


def test_shadow_compares_answers_and_users_only_see_the_live_version(module_home, iris, forest, tree):
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "shadowed", X_test, progress=False)
    dep = nbserve.deploy(tree, "shadowed", X_test, shadow=True, progress=False)
    assert dep.history().loc[2, "status"] == "shadow"
    with httpx.Client(timeout=30) as client:
        for i in range(len(X_test)):
            r = client.post(f"{dep.url}/predict", content=_body(X_test.iloc[i : i + 1]),
                            headers={"content-type": "application/json"})
            assert r.headers["x-nbserve-version"] == "1"
            assert r.json() == forest.predict(X_test.iloc[i : i + 1]).tolist()
            # one mirror at a time: on a loaded machine a burst past 8 in flight is dropped (counted)
            _wait(lambda: dep.rollout()["figures"]["shadow"]["compared"] == i + 1, every=0.02)
    expected_diff = int((forest.predict(X_test) != tree.predict(X_test)).sum())
    figures = dep.rollout()["figures"]
    assert figures["shadow"]["differing"] == expected_diff > 0
    assert figures["shadow"]["errors"] == 0 and figures["shadow"]["dropped"] == 0
    assert figures["requests"] == len(X_test)
    dep.abort()
    assert dep.rollout() is None and dep.version == 1
    dep.stop()


def test_a_canary_survives_an_agent_crash(fresh_home, iris, forest, tree):
    import signal

    import psutil

    from nbserve._local import find_agent, start_agent

    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "sturdy", X_test, progress=False)
    nbserve.deploy(tree, "sturdy", X_test, canary=50, progress=False)
    agent = find_agent(fresh_home)
    os.kill(agent.pid, signal.SIGKILL)
    psutil.Process(agent.pid).wait(10) if psutil.pid_exists(agent.pid) else None
    start_agent(fresh_home)
    dep = nbserve.get("sturdy")
    assert dep.rollout()["version"] == 2 and dep.version == 1
    assert "canary_resumed" in dep.events()["kind"].tolist()
    seen = set()
    with httpx.Client(timeout=30) as client:
        for _ in range(40):
            r = client.post(f"{dep.url}/predict", content=_body(X_test[:1]),
                            headers={"content-type": "application/json"})
            assert r.status_code == 200
            seen.add(r.headers["x-nbserve-version"])
    assert seen == {"1", "2"}
