"""Workers, live scaling, memory caps and scale to zero, with real servers and real HTTP."""

from __future__ import annotations

import concurrent.futures as cf
import time

import httpx
import numpy as np
import pytest

import nbserve
from nbserve import errors
from nbserve._agent._limits import enforcement, parse_autoscaling, parse_memory

from ._load import Load

pytestmark = pytest.mark.slow


class Hog:
    """Predicts like the model it wraps; a row with sepal_length > 1000 makes it hold that many MB."""

    def __init__(self, model) -> None:
        self.model = model
        self.hoard: list[bytes] = []

    def predict(self, X):
        size = float(X.iloc[0, 0])
        if size > 1000:
            self.hoard.append(b"x" * int(size) * 2**20)  # touched, kept: RSS stays up
        return self.model.predict(X)


Hog.__module__ = "__main__"  # pickled by value, as if defined in a notebook


def _body(X) -> dict:
    return {"data": X.to_dict(orient="records")}


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_two_workers_both_answer_and_scale_changes_them_without_dropping_a_request(module_home, iris, forest):
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "wide-model", X_test, workers=2, progress=False)
    assert nbserve.top().loc["wide-model", "workers"] == 2

    def worker_ids(_: int) -> set[str]:
        # A fresh connection per request: each one is accepted anew, by whichever worker is free.
        with httpx.Client(trust_env=False, headers={"connection": "close"}) as client:
            return {client.post(f"{dep.url}/predict", json=_body(X_test[:2])).headers["x-nbserve-worker"]
                    for _ in range(10)}

    seen: set[str] = set()
    deadline = time.monotonic() + 120  # on a loaded machine the second worker may still be loading
    while len(seen) < 2 and time.monotonic() < deadline:
        with cf.ThreadPoolExecutor(8) as pool:
            seen |= set().union(*pool.map(worker_ids, range(8)))
        if len(seen) < 2:
            time.sleep(1.0)
    assert len(seen) == 2, seen  # two worker processes behind the one stable URL
    body = '{"data": ' + X_test[:3].to_json(orient="records") + "}"
    with Load(dep.url, body, threads=4) as load:
        time.sleep(1.0)
        dep.scale(workers=1)
        time.sleep(1.0)
    assert load.total > 50 and set(load.statuses) == {200} and not load.failures, (load.statuses, load.failures)
    assert nbserve.top().loc["wide-model", "workers"] == 1 and nbserve.top().loc["wide-model", "servers"] == 1
    scaled = dep.events().query("kind == 'scaled'").iloc[-1]
    assert "1 worker(s)" in scaled["message"]
    with pytest.raises(errors.InvalidArgument, match="does not autoscale"):  # Ray's knob, on a local version
        dep.scale(autoscaling={"max": 4})
    assert dep._client.get("/v1/deployments/wide-model/config")["autoscaling"] is None
    np.testing.assert_array_equal(dep.predict(X_test), forest.predict(X_test))


def test_bad_settings_are_refused_before_anything_exists(module_home, iris, forest):
    _, X_test, _, _ = iris
    with pytest.raises(errors.InvalidArgument, match="too small"):
        nbserve.deploy(forest, "never", X_test, memory="10M", progress=False)
    with pytest.raises(errors.InvalidArgument, match="workers"):
        nbserve.deploy(forest, "never", X_test, workers=0, progress=False)
    # Ray's settings on an agent without a Ray cluster, or on the local engine: named, nothing made
    with pytest.raises(errors.InvalidArgument, match="no 'ray' engine") as info:
        nbserve.deploy(forest, "never", X_test, engine="ray", progress=False)
    assert "--ray-address" in info.value.hint
    with pytest.raises(errors.InvalidArgument, match="autoscaling needs the Ray engine"):
        nbserve.deploy(forest, "never", X_test, autoscaling={"min": 0}, progress=False)
    with pytest.raises(errors.InvalidArgument, match="name the same count"):
        nbserve.deploy(forest, "never", X_test, workers=2, replicas=3, progress=False)
    with pytest.raises(errors.InvalidArgument, match="engine must be one of"):
        nbserve.deploy(forest, "never", X_test, engine="k8s", progress=False)
    with pytest.raises(errors.DeploymentNotFound):
        nbserve.get("never")
    assert parse_memory("1.5G") == int(1.5 * 2**30) and parse_memory("512MiB") == 512 * 2**20
    # Ray's autoscaling: the defaults fill what is left out; a min above the default max lifts it
    assert parse_autoscaling({"min": 0}) == {"min": 0, "max": 4, "target_ongoing_requests": 2, "downscale_delay": "10m"}
    assert parse_autoscaling({"min": 6})["max"] == 6 and parse_autoscaling(False) is None
    for bad, message in (({"min": 3, "max": 2}, "below min"), ({"mini": 1}, "unknown autoscaling"),
                         ({"target_ongoing_requests": 0}, "above 0"), ({"downscale_delay": "soon"}, "invalid window"),
                         ({"max": 65}, "whole number of replicas")):
        with pytest.raises(errors.InvalidArgument, match=message):
            parse_autoscaling(bad)


def _over_the_cap_is_restarted(dep, X_test, forest, mode: str) -> None:
    row = nbserve.top().loc[dep.name]
    assert row["memory_cap"] == 900 * 2**20 and row["enforcement"] == mode
    hungry = X_test[:1].copy()
    hungry.iloc[0, 0] = 1500.0  # 1.5 GB, over the cap
    try:
        httpx.post(f"{dep.url}/predict", json=_body(hungry), trust_env=False, timeout=60)
    except httpx.HTTPError:
        pass  # the kernel may kill the worker mid-request
    _wait(lambda: "memory_exceeded" in set(dep.events()["kind"]))
    exceeded = dep.events().query("kind == 'memory_exceeded'").iloc[-1]
    assert "900 MiB" in exceeded["message"]
    _wait(lambda: dep.refresh().status == "serving" and "over its memory cap" in " ".join(dep.events()["message"]))
    np.testing.assert_array_equal(dep.predict(X_test), forest.predict(X_test))  # a fresh server answers
    assert nbserve.get(dep.name).version == 1


def test_a_deployment_over_its_memory_cap_is_restarted_and_the_agent_stays_up(module_home, iris, forest):
    _, X_test, _, _ = iris
    dep = nbserve.deploy(Hog(forest), "hog", X_test, memory="900M", progress=False)
    _over_the_cap_is_restarted(dep, X_test, forest, enforcement())


def test_without_cgroups_a_watchdog_enforces_the_memory_cap(fresh_home, monkeypatch, iris, forest):
    monkeypatch.setenv("NBSERVE_CGROUP_ROOT", str(fresh_home.root / "no-cgroups"))  # the agent started below
    _, X_test, _, _ = iris
    dep = nbserve.deploy(Hog(forest), "hog-watched", X_test, memory="900M", progress=False)
    _over_the_cap_is_restarted(dep, X_test, forest, "watchdog")


def test_an_idle_deployment_goes_cold_and_the_next_request_wakes_it_and_is_answered(module_home, iris, tree):
    _, X_test, _, _ = iris
    dep = nbserve.deploy(tree, "sleepy", X_test, idle_timeout="3s", progress=False)
    _wait(lambda: tuple(nbserve.top().loc["sleepy", ["state", "servers"]]) == ("cold", 0), timeout=30)
    assert dep.refresh().status == "cold"
    started = time.monotonic()
    with cf.ThreadPoolExecutor(3) as pool:  # three callers arrive while it is cold: all held, all answered
        answers = list(pool.map(lambda _: httpx.post(f"{dep.url}/predict", json=_body(X_test[:4]),
                                                     trust_env=False, timeout=120), range(3)))
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all(a.json() == tree.predict(X_test[:4]).tolist() for a in answers)
    woken = dep.events().query("kind == 'woken'").iloc[-1]
    assert woken["data"]["cold_start_seconds"] <= time.monotonic() - started + 1
    assert woken["data"]["held"] >= 1
    assert dep.refresh().status == "serving"
    assert nbserve.top().loc["sleepy", "last_cold_start_seconds"] == pytest.approx(woken["data"]["cold_start_seconds"])
    from nbserve._cli import main

    assert main(["top", "--once"]) == 0  # the terminal view prints (cold start included)
    server = dep.refresh().versions[-1]["upstream_url"]
    scaled = int((dep.events()["kind"] == "scaled").sum())
    dep.scale(idle_timeout="none")  # stays warm from now on
    assert nbserve.top().loc["sleepy", "idle_timeout"] is None
    assert int((dep.events()["kind"] == "scaled").sum()) == scaled  # a timeout change restarts nothing
    assert dep.refresh().versions[-1]["upstream_url"] == server
