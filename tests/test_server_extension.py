"""The JupyterLab panel's server extension, through Jupyter's own HTTP stack (pytest-jupyter).

A real agent in a temporary NBSERVE_HOME serves two versions of a small iris model; every
request goes through ``jp_fetch`` (Jupyter's token) to the extension's handlers, which call
the agent through nbserve's one cached ``AgentClient``. Browser tests live in tests/browser and
run in their own pytest process (pytest-jupyter's event loop and Playwright's do not share one
process).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# pytest-jupyter's fixtures, for this module only (its autouse fixtures stay out of the rest).
from pytest_jupyter.jupyter_server import *  # noqa: F403

import nbserve

from .conftest import repo_root

NAME = "panel-iris"
CANARY = "panel-canary"
SCHEDULE = "panel-sched"
NOTEBOOK = repo_root() / "notebooks" / "03-scheduled-retrain.ipynb"
pytestmark = pytest.mark.slow


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"nbserve._jupyter": True}}}


@pytest.fixture(scope="module")
def two_versions(module_home, iris, forest, tree) -> Iterator[nbserve.Deployment]:
    """v1 (forest) then v2 (tree) of one deployment, with a little traffic."""
    _, X_test, _, _ = iris
    nbserve.deploy(forest, NAME, X_test, description="forest", progress=False)
    dep = nbserve.deploy(tree, NAME, X_test, description="tree", progress=False)
    dep.predict(X_test[:5])
    yield dep


Fetch = Callable[..., tuple[int, Any]]


@pytest.fixture(autouse=True)
def _jp_loop_is_current(jp_asyncio_loop):
    """The server (io_loop) and jp_fetch's client bind to the current loop; jupyter_core hands
    jp_asyncio_loop out of a context variable that earlier tests (papermill runs) may have set
    while asyncio's current loop moved on. Make them one loop before either is built."""
    import asyncio

    asyncio.set_event_loop(jp_asyncio_loop)
    yield


@pytest.fixture
def api(jp_fetch, jp_asyncio_loop) -> Fetch:
    """``api("GET", "deployments", NAME)`` -> (status, JSON body), without raising on 4xx."""

    def call(method: str, *parts: str, body: Any = None, params: dict | None = None,
             headers: dict | None = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"method": method, "raise_error": False, "request_timeout": 120}
        if method == "POST":
            kwargs["body"] = json.dumps(body if body is not None else {})
        response = jp_asyncio_loop.run_until_complete(
            jp_fetch("nbserve", "api", *parts, params=params, headers=headers, **kwargs)
        )
        text = response.body.decode() if response.body else ""
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = text
        return response.code, data

    return call


def test_an_open_panel_does_not_start_a_stopped_agent(api: Fetch, fresh_home) -> None:
    from nbserve._local import find_agent

    status, data = api("GET", "deployments")
    assert (status, data) == (200, [])
    assert api("GET", "state") == (200, {"deployments": [], "schedules": []})
    assert api("GET", "schedules") == (200, [])
    assert find_agent(fresh_home) is None


def test_requests_without_jupyters_token_are_refused(api: Fetch) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "token not-the-token"}):
        status, _ = api("GET", "deployments", headers=headers)
        assert status in (401, 403), status
        status, _ = api("POST", "deployments", NAME, "stop", headers=headers)
        assert status in (401, 403), status
        for parts in (("state",), ("schedules",), ("schedules", SCHEDULE), ("deployments", NAME, "audit"),
                      ("deployments", NAME, "card")):
            status, _ = api("GET", *parts, headers=headers)
            assert status in (401, 403), (parts, status)
        for parts in (("deployments", NAME, "promote"), ("deployments", NAME, "abort"),
                      ("deployments", NAME, "canary"), ("deployments", NAME, "scale"),
                      ("schedules", SCHEDULE, "run"),
                      ("schedules", SCHEDULE, "pause"), ("schedules", SCHEDULE, "resume")):
            status, _ = api("POST", *parts, headers=headers)
            assert status in (401, 403), (parts, status)


def test_list_is_compact_with_state_and_metrics(api: Fetch, two_versions: nbserve.Deployment) -> None:
    status, data = api("GET", "deployments")
    assert status == 200, data
    (item,) = [d for d in data if d["name"] == NAME]
    assert item["status"] == "serving"
    assert item["version"] == 2
    assert item["url"] == two_versions.url
    assert {v["number"]: v["status"] for v in item["versions"]} == {1: "warm", 2: "live"}
    summary = item["summary"]
    assert summary is not None
    assert {"requests", "rps", "p50_ms", "p99_ms", "error_rate", "sparkline", "drift"} <= set(summary)
    assert isinstance(summary["sparkline"], list)


RESOURCE_COLUMNS = {"state", "live_version", "servers", "workers", "cpu_percent", "rss_bytes", "processes",
                    "memory_cap", "cpus_cap", "enforcement", "idle_timeout", "idle_seconds", "held"}


def test_one_poll_is_one_agent_request_passed_through(
        api: Fetch, two_versions: nbserve.Deployment, monkeypatch) -> None:
    from nbserve import _connection

    status, state = api("GET", "state")  # the cached client exists from here on
    assert status == 200, state
    monkeypatch.setattr(_connection, "FRESH_SECONDS", 3600.0)  # the clock plays no part in the count
    sent: list[tuple[str, str]] = []

    def seen(request: Any) -> None:
        sent.append((request.method, request.url.path))

    clients = list(_connection._clients.values())
    for client in clients:
        client._http.event_hooks["request"].append(seen)
    try:
        status, state = api("GET", "state")
    finally:
        for client in clients:
            client._http.event_hooks["request"].remove(seen)
    assert status == 200, state
    assert sent == [("GET", "/v1/state")], sent  # one request, whatever the number of deployments
    agent = nbserve.connect(start=False).get("/v1/state")
    for item in agent["deployments"]:  # the agent's own answer, field for field
        item.pop("resources"), item.pop("summary")  # these figures move between two calls
    assert [{k: v for k, v in d.items() if k not in ("resources", "summary")} for d in state["deployments"]] \
        == agent["deployments"]

    (item,) = [d for d in state["deployments"] if d["name"] == NAME]
    assert item["live_version"] == 2 and item["status"] == "serving" and item["url"] == two_versions.url
    resources = item["resources"]
    assert RESOURCE_COLUMNS <= set(resources), resources
    assert resources["state"] == "warm" and resources["live_version"] == 2
    assert resources["workers"] == 1 and resources["servers"] == 2  # v2 live, v1 warm
    assert resources["rss_bytes"] > 0 and resources["processes"] >= 2
    assert resources["memory_cap"] is None and resources["enforcement"] is None
    assert {"requests", "rps", "p50_ms", "p99_ms", "error_rate", "sparkline", "drift"} <= set(item["summary"])


def test_detail_carries_resources_from_one_resources_call(api: Fetch, two_versions: nbserve.Deployment,
                                                          monkeypatch) -> None:
    from nbserve._transport import AgentClient

    status, detail = api("GET", "deployments", NAME)
    assert status == 200, detail
    assert RESOURCE_COLUMNS <= set(detail["resources"]) and detail["resources"]["workers"] == 1

    request = AgentClient.request

    def resources_fail(self: AgentClient, method: str, path: str, **kwargs: Any) -> Any:
        if path == "/v1/resources":  # as the agent answers when it cannot read its processes
            raise nbserve.errors.AgentError("the agent could not read its processes")
        return request(self, method, path, **kwargs)

    monkeypatch.setattr(AgentClient, "request", resources_fail)  # the rest of the detail's answer stands
    status, detail = api("GET", "deployments", NAME)
    assert status == 200 and detail["resources"] is None and detail["version"] == 2


def test_detail_history_events_logs(api: Fetch, two_versions: nbserve.Deployment) -> None:
    status, detail = api("GET", "deployments", NAME)
    assert status == 200, detail
    assert detail["version"] == 2 and detail["url"] == two_versions.url
    history = {row["version"]: row for row in detail["history"]}
    assert set(history) == {1, 2}
    assert history[2]["live"] is True and history[1]["status"] == "warm"
    assert history[1]["description"] == "forest" and history[2]["description"] == "tree"
    assert history[1]["created_by"] and history[1]["created_at"].startswith("20")
    assert any(e["kind"] == "deployed" for e in detail["events"]) or detail["events"]

    status, rows = api("GET", "deployments", NAME, "history")
    assert status == 200 and [r["version"] for r in rows] == [1, 2]

    status, events = api("GET", "deployments", NAME, "events", params={"limit": 3})
    assert status == 200 and 0 < len(events) <= 3
    assert {"ts", "kind", "message"} <= set(events[0])

    status, logs = api("GET", "deployments", NAME, "logs", params={"version": 1, "lines": 20})
    assert status == 200 and logs["version"] == 1 and isinstance(logs["text"], str)
    assert len(logs["text"].splitlines()) <= 20
    status, logs = api("GET", "deployments", NAME, "logs")
    assert status == 200 and logs["version"] == 2


def test_metrics(api: Fetch, two_versions: nbserve.Deployment) -> None:
    status, data = api("GET", "deployments", NAME, "metrics", params={"window": "1h"})
    assert status == 200, data
    assert data["window"] == "1h"
    assert data["summary"] is not None
    latency = data["latency"]
    assert latency is not None
    if latency:
        assert {"time", "requests", "rps", "p50_ms", "p99_ms"} <= set(latency[0])
    drift = data["drift"]
    assert drift is not None and {"features", "dataset_drift", "drift_share"} <= set(drift)
    if not drift["features"]:  # too little traffic: the agent's reason, not an error response
        assert "drift" in drift["unavailable"]["message"]


def test_drift_after_traffic(api: Fetch, two_versions: nbserve.Deployment, iris) -> None:
    _, X_test, _, _ = iris
    two_versions.predict(X_test)  # 45 rows: enough for a drift test
    status, data = api("GET", "deployments", NAME, "metrics", params={"window": "1h"})
    assert status == 200, data
    drift = data["drift"]
    assert drift["unavailable"] is None, drift
    features = {f["feature"]: f for f in drift["features"]}
    assert {"sepal_length", "sepal_width", "petal_length", "petal_width"} <= set(features)
    assert {"score", "threshold", "drifted"} <= set(features["sepal_length"])
    assert isinstance(drift["dataset_drift"], bool)
    assert sum(p["requests"] for p in data["latency"]) >= 2


def test_unknown_deployment_is_a_404_with_the_error_body(api: Fetch, module_home) -> None:
    for parts in (("deployments", "no-such"), ("deployments", "no-such", "history"),
                  ("deployments", "no-such", "logs")):
        status, data = api("GET", *parts)
        assert status == 404, (parts, data)
        error = data["error"]
        assert error["type"] == "DeploymentNotFound"
        assert "no-such" in error["message"]
        assert "hint" in error
    status, data = api("POST", "deployments", "no-such", "rollback", body={"to": 1})
    assert status == 404 and data["error"]["type"] == "DeploymentNotFound"


def test_bad_rollback_target_answers_the_agents_message(api: Fetch, two_versions: nbserve.Deployment) -> None:
    status, data = api("POST", "deployments", NAME, "rollback", body={"to": 99})
    assert 400 <= status < 500, data
    assert data["error"]["type"] == "VersionNotFound"
    assert "99" in data["error"]["message"]

    status, data = api("POST", "deployments", NAME, "rollback", body={"to": "one"})
    assert status == 400 and data["error"]["type"] == "InvalidArgument"
    status, data = api("GET", "deployments", NAME, "events", params={"limit": "many"})
    assert status == 400 and data["error"]["type"] == "InvalidArgument"
    assert nbserve.get(NAME).version == 2  # nothing moved


def test_rollback_then_stop_and_start(api: Fetch, two_versions: nbserve.Deployment, iris) -> None:
    _, X_test, _, _ = iris
    status, state = api("POST", "deployments", NAME, "rollback", body={"to": 1})
    assert status == 200, state
    assert state["version"] == 1 and state["status"] == "serving"
    assert two_versions.refresh().version == 1
    import httpx

    answer = httpx.post(f"{two_versions.url}/predict", json={"data": X_test[:2].to_dict("records")},
                        timeout=30, trust_env=False)
    assert answer.status_code == 200 and answer.headers["x-nbserve-version"] == "1"

    status, state = api("POST", "deployments", NAME, "rollback", body={"to": 2})
    assert status == 200 and state["version"] == 2

    status, state = api("POST", "deployments", NAME, "stop")
    assert status == 200, state
    assert state["status"] == "stopped"
    status, state = api("POST", "deployments", NAME, "start")
    assert status == 200, state
    assert state["status"] in ("serving", "starting") and state["version"] == 2
    assert two_versions.refresh().status in ("serving", "starting")


def test_audit_records_a_rollback_made_through_the_extension(api: Fetch, two_versions: nbserve.Deployment) -> None:
    live = two_versions.refresh().version
    to = 1 if live == 2 else 2
    status, state = api("POST", "deployments", NAME, "rollback", body={"to": to})
    assert status == 200 and state["version"] == to, state

    status, data = api("GET", "deployments", NAME, "audit", params={"limit": 50})
    assert status == 200, data
    records, chain = data["records"], data["chain"]
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # oldest first
    assert {r["deployment"] for r in records} == {NAME}
    last = records[-1]
    assert last["action"] == "rollback", records[-3:]
    assert (last["before"], last["after"], last["version"]) == (live, to, to)
    assert last["token"] == "owner" and last["actor"]  # the host's owner token, naming its user
    assert last["source"] == "127.0.0.1"
    assert last["detail"]["previous"] == live
    assert isinstance(last["ts"], str) and last["ts"].startswith("20") and "T" in last["ts"]
    assert len(last["hash"]) == 64 and last["prev_hash"] != last["hash"]
    first = records[0]  # JSON-safe: the first record has no live version before it (NA -> null)
    assert first["action"] == "deployment_created" and first["before"] is None
    assert chain["ok"] is True and chain["broken_at"] is None, chain
    assert chain["records"] >= len(records) and chain["head"] and len(chain["head"]) == 64

    status, data = api("GET", "deployments", NAME, "audit", params={"limit": 1})
    assert status == 200 and [r["seq"] for r in data["records"]] == [last["seq"]]
    status, data = api("GET", "deployments", NAME, "audit", params={"limit": "all"})
    assert status == 400 and data["error"]["type"] == "InvalidArgument", data
    status, data = api("GET", "deployments", "no-such", "audit")
    assert status == 404 and data["error"]["type"] == "DeploymentNotFound", data

    status, state = api("POST", "deployments", NAME, "rollback", body={"to": live})  # as it was
    assert status == 200 and state["version"] == live, state


def test_quality_aliases_and_model_card(api: Fetch, two_versions: nbserve.Deployment, iris, forest, tree) -> None:
    from sklearn.metrics import accuracy_score

    _, X_test, _, y_test = iris
    dep = two_versions.refresh()
    live = dep.version
    model = {1: forest, 2: tree}[live]
    frame = dep.predict(X_test, ids=True)  # real outcomes for the live version's answers
    report = dep.feedback(frame["id"], y_test)
    assert report["stored"] == len(X_test) and report["unknown"] == 0, report
    expected = accuracy_score(y_test, model.predict(X_test))

    status, state = api("GET", "state")
    assert status == 200, state
    (item,) = [d for d in state["deployments"] if d["name"] == NAME]
    quality = item["summary"]["quality"]
    assert quality["metric"] == "accuracy" and quality["task"] == "classification", quality
    assert quality["value"] == pytest.approx(expected) and quality["labelled"] == len(X_test)
    assert "previous" in quality  # the hour before: None within the first hour
    status, detail = api("GET", "deployments", NAME)
    assert status == 200, detail
    assert detail["summary"]["quality"] == quality
    status, metrics = api("GET", "deployments", NAME, "metrics", params={"window": "1h"})
    assert metrics["summary"]["quality"]["value"] == pytest.approx(expected)

    # aliases: in the detail and the compact state alike
    assert detail["aliases"] == {} and item["aliases"] == {}
    other = 1 if live == 2 else 2
    dep.alias("staging", other)
    try:
        status, detail = api("GET", "deployments", NAME)
        assert detail["aliases"] == {"staging": other}, detail["aliases"]
        status, state = api("GET", "state")
        assert [d["aliases"] for d in state["deployments"] if d["name"] == NAME] == [{"staging": other}]
    finally:
        dep.alias("staging", None)

    # the model card: the live version's by default, any version's on request
    status, card = api("GET", "deployments", NAME, "card")
    assert status == 200, card
    assert card["version"] == live and set(card) == {"html", "markdown", "version"}
    assert type(model).__name__ in card["html"] and "<h3>Input schema</h3>" in card["html"]
    assert card["markdown"].startswith(f"# {NAME} v{live}: ") and "## Quality so far" in card["markdown"]
    assert "| accuracy |" in card["markdown"]  # the labels just sent
    status, card = api("GET", "deployments", NAME, "card", params={"version": other})
    assert status == 200 and card["version"] == other, card
    assert type({1: forest, 2: tree}[other]).__name__ in card["html"]
    assert "sepal_length" in card["html"]  # the input schema's columns

    status, data = api("GET", "deployments", NAME, "card", params={"version": 99})
    assert status == 404 and data["error"]["type"] == "VersionNotFound", data
    for bad in ("two", "0"):
        status, data = api("GET", "deployments", NAME, "card", params={"version": bad})
        assert status == 400 and data["error"]["type"] == "InvalidArgument", data
    status, data = api("GET", "deployments", "no-such", "card")
    assert status == 404 and data["error"]["type"] == "DeploymentNotFound", data


def test_scale_through_the_extension(api: Fetch, two_versions: nbserve.Deployment, iris) -> None:
    _, X_test, _, _ = iris
    assert nbserve.top().loc[NAME, "workers"] == 1
    status, state = api("POST", "deployments", NAME, "scale", body={"workers": 2})
    try:
        assert status == 200, state
        assert state["name"] == NAME and state["status"] == "serving", state
        assert nbserve.top().loc[NAME, "workers"] == 2
        status, polled = api("GET", "state")
        assert [d["resources"]["workers"] for d in polled["deployments"] if d["name"] == NAME] == [2]
        assert len(two_versions.predict(X_test[:3])) == 3  # the replaced server answers

        # the agent's own refusal, as a 400 with its message; nothing changes
        status, data = api("POST", "deployments", NAME, "scale", body={"workers": 0})
        assert status == 400 and data["error"]["type"] == "InvalidArgument", data
        message = data["error"]["message"]
        assert "workers" in message and "greater than or equal to 1" in message, message
        status, data = api("POST", "deployments", NAME, "scale", body={})
        assert status == 400 and data["error"]["message"] == "nothing to change", data
        # the extension's own checks: JSON types and names
        for body in ({"workers": "two"}, {"workers": True}, {"idle_timeout": 15}, {"batching": "yes"},
                     {"batching": {"rows": 3}}, {"replicas": 3}):
            status, data = api("POST", "deployments", NAME, "scale", body=body)
            assert status == 400 and data["error"]["type"] == "InvalidArgument", (body, data)
        assert "replicas" in data["error"]["message"]
        status, data = api("POST", "deployments", "no-such", "scale", body={"workers": 2})
        assert status == 404 and data["error"]["type"] == "DeploymentNotFound", data
        assert nbserve.top().loc[NAME, "workers"] == 2
        # batching as the panel's Scale dialog sends it: the knobs changed, then off
        status, state = api("POST", "deployments", NAME, "scale", body={"batching": {"max_latency_ms": 500}})
        assert status == 200, state
        assert nbserve.top().loc[NAME, "batching"] == {"max_batch_size": 100, "max_latency_ms": 500}
        status, state = api("POST", "deployments", NAME, "scale", body={"batching": False})
        assert status == 200 and nbserve.top().loc[NAME, "batching"] is None, state
    finally:
        status, state = api("POST", "deployments", NAME, "scale", body={"workers": 1})  # as it was
    assert status == 200, state
    assert nbserve.top().loc[NAME, "workers"] == 1


# -- rollouts --------------------------------------------------------------------------------


def test_canary_in_list_and_detail_share_then_promote(api: Fetch, module_home, iris, forest, tree) -> None:
    import httpx

    _, X_test, _, _ = iris
    nbserve.deploy(forest, CANARY, X_test, progress=False)
    dep = nbserve.deploy(tree, CANARY, X_test, canary=50, progress=False)

    status, state = api("GET", "state")
    assert status == 200, state
    (item,) = [d for d in state["deployments"] if d["name"] == CANARY]
    assert item["live_version"] == 1
    rollout = item["rollout"]
    assert rollout["mode"] == "canary" and rollout["version"] == 2 and rollout["percent"] == 50
    assert rollout["auto_promote"] is False and rollout["started_at"]
    assert {v["number"]: v["status"] for v in item["versions"]} == {1: "live", 2: "canary"}
    first_event = item["latest_event_id"]
    assert isinstance(first_event, int) and first_event > 0
    status, listed = api("GET", "deployments")  # the plain list has the same fields
    assert [d["rollout"] for d in listed if d["name"] == CANARY] == [rollout]

    status, detail = api("GET", "deployments", CANARY)
    assert status == 200, detail
    rollout = detail["rollout"]
    assert rollout["mode"] == "canary" and rollout["version"] == 2
    assert rollout["verdict"] in ("waiting", "pass") and isinstance(rollout["reasons"], list)
    assert {"min_requests", "window"} <= set(rollout["gates"])
    assert {"requests", "p50_ms", "p99_ms", "error_rate", "age_seconds"} <= set(rollout["figures"])
    assert {r["version"]: r["status"] for r in detail["history"]}[2] == "canary"

    status, state = api("POST", "deployments", CANARY, "canary", body={"percent": 20})
    assert status == 200, state
    assert state["rollout"]["percent"] == 20 and dep.refresh()._data["rollout"]["percent"] == 20
    status, data = api("POST", "deployments", CANARY, "canary", body={"percent": 150})
    assert status == 400 and data["error"]["type"] == "InvalidArgument", data
    assert "100" in data["error"]["message"]  # the agent's own words
    status, data = api("POST", "deployments", CANARY, "canary", body={"percent": "half"})
    assert status == 400 and data["error"]["type"] == "InvalidArgument", data

    status, state = api("POST", "deployments", CANARY, "promote")
    assert status == 200, state
    assert state["version"] == 2 and state["rollout"] is None
    answer = httpx.post(f"{dep.url}/predict", json={"data": X_test[:2].to_dict("records")},
                        timeout=30, trust_env=False)
    assert answer.status_code == 200 and answer.headers["x-nbserve-version"] == "2"
    status, state = api("GET", "state")
    (item,) = [d for d in state["deployments"] if d["name"] == CANARY]
    assert item["rollout"] is None and item["latest_event_id"] > first_event
    status, events = api("GET", "deployments", CANARY, "events", params={"limit": 5})
    assert events[-1]["kind"] == "promoted" and events[-1]["id"] == item["latest_event_id"]


def test_abort_then_abort_again_is_a_409_with_the_agents_message(api: Fetch, module_home, iris, forest) -> None:
    _, X_test, _, _ = iris
    try:
        nbserve.get(CANARY)
    except nbserve.errors.DeploymentNotFound:  # run alone: a live version first
        nbserve.deploy(forest, CANARY, X_test, progress=False)
    live = nbserve.get(CANARY).version
    dep = nbserve.deploy(forest, CANARY, X_test, shadow=True, progress=False)
    status, detail = api("GET", "deployments", CANARY)
    assert detail["rollout"]["mode"] == "shadow" and detail["rollout"]["percent"] is None
    assert "shadow" in detail["rollout"]["figures"]
    shadow = detail["rollout"]["version"]

    status, state = api("POST", "deployments", CANARY, "abort")
    assert status == 200, state
    assert state["rollout"] is None and state["version"] == live
    assert dep.refresh().rollout() is None
    status, data = api("POST", "deployments", CANARY, "abort")
    assert status == 409, data
    assert data["error"]["type"] == "Conflict"
    assert data["error"]["message"] == f"{CANARY} has no canary or shadow to abort"
    status, data = api("POST", "deployments", CANARY, "promote")
    assert status == 409 and "no canary or shadow to promote" in data["error"]["message"]
    status, data = api("POST", "deployments", CANARY, "canary", body={"percent": 10})
    assert status == 409 and "no canary" in data["error"]["message"]
    status, events = api("GET", "deployments", CANARY, "events", params={"limit": 5})
    assert events[-1]["kind"] == "aborted" and events[-1]["version"] == shadow
    nbserve.get(CANARY).stop()


# -- schedules -------------------------------------------------------------------------------


def test_schedules_list_pause_resume_run_now(api: Fetch, module_home, jp_root_dir) -> None:
    from nbserve._schedules import get_schedule, schedule

    schedule(NOTEBOOK, cron="0 3 * * *", name=SCHEDULE, params={"n_estimators": 5},
             timezone="Europe/Paris", timeout=300)
    try:
        status, items = api("GET", "schedules")
        assert status == 200, items
        (item,) = [s for s in items if s["name"] == SCHEDULE]
        assert item["deployment"] == SCHEDULE and item["cron"] == "0 3 * * *"
        assert item["timezone"] == "Europe/Paris" and item["paused"] is False
        assert item["next_run_at"] and item["last_run"] is None and item["running_run"] is None
        status, state = api("GET", "state")
        assert [s["name"] for s in state["schedules"]] == [SCHEDULE]

        status, item = api("POST", "schedules", SCHEDULE, "pause")
        assert status == 200 and item["paused"] is True, item
        assert get_schedule(SCHEDULE).paused
        status, item = api("POST", "schedules", SCHEDULE, "resume")
        assert status == 200 and item["paused"] is False, item

        status, run = api("POST", "schedules", SCHEDULE, "run")
        assert status == 202, run
        assert run["status"] == "running" and run["trigger"] == "manual"
        status, items = api("GET", "schedules")
        (item,) = [s for s in items if s["name"] == SCHEDULE]
        assert item["running_run"] == run["id"] and item["last_run"]["id"] == run["id"]
        status, again = api("POST", "schedules", SCHEDULE, "run")  # one in progress: recorded as skipped
        assert status == 202 and again["status"] == "skipped", again

        done = get_schedule(SCHEDULE).wait_for_run(run["id"], timeout=240)
        assert done["status"] == "succeeded", done
        status, detail = api("GET", "schedules", SCHEDULE)
        assert status == 200, detail
        runs = {r["id"]: r for r in detail["runs"]}
        assert set(runs) == {run["id"], again["id"]}
        mine = runs[run["id"]]
        assert mine["status"] == "succeeded" and mine["version"] == 1
        assert mine["executed_notebook"] == done["executed_notebook"]
        assert mine["executed_notebook"].startswith(str(module_home.root))
        assert mine["executed_notebook_lab_path"] is None  # not under the server's root
        assert mine["parameters"]["n_estimators"] == 5
        assert detail["last_run"]["id"] == max(runs)
        assert nbserve.get(SCHEDULE).version == 1

        status, data = api("GET", "schedules", "no-such")
        assert status == 404 and data["error"]["type"] == "ScheduleNotFound", data
        status, data = api("POST", "schedules", "no-such", "run")
        assert status == 404 and "no-such" in data["error"]["message"], data
    finally:
        get_schedule(SCHEDULE).remove()
        try:
            nbserve.get(SCHEDULE).stop()
        except nbserve.errors.NbserveError:
            pass
    status, items = api("GET", "schedules")
    assert status == 200 and [s for s in items if s["name"] == SCHEDULE] == []


def test_executed_notebook_paths_under_the_server_root(tmp_path) -> None:
    from nbserve._jupyter._handlers import notebook_path_under

    root = tmp_path / "root"
    (root / "runs").mkdir(parents=True)
    assert notebook_path_under(str(root / "runs" / "7.ipynb"), str(root)) == "runs/7.ipynb"
    assert notebook_path_under(str(tmp_path / "elsewhere.ipynb"), str(root)) is None
    assert notebook_path_under(str(root), str(root)) is None
    assert notebook_path_under(None, str(root)) is None
    assert notebook_path_under(str(root / "a.ipynb"), None) is None


def test_extension_is_not_imported_by_nbserve() -> None:
    import subprocess
    import sys

    code = "import sys, nbserve; print('jupyter_server' in sys.modules, 'nbserve._jupyter' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_installed_into_jupyter_enabled_ok() -> None:
    """`pip install` put the prebuilt panel and the server extension config in place."""
    import subprocess
    import sys

    jupyter = [sys.executable, "-m", "jupyter"]
    out = subprocess.run([*jupyter, "labextension", "list"], capture_output=True, text=True, check=True)
    lines = [_strip_ansi(line) for line in (out.stdout + out.stderr).splitlines()]
    (line,) = [line for line in lines if "nbserve-labextension" in line]
    assert line.split()[2:4] == ["enabled", "OK"], line
    assert "(python, nbserve)" in line, line

    out = subprocess.run([*jupyter, "server", "extension", "list"], capture_output=True, text=True, check=True)
    text = _strip_ansi(out.stdout + out.stderr)
    assert "nbserve._jupyter enabled" in text and "nbserve._jupyter  OK" in text, text
