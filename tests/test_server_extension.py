"""The JupyterLab panel's server extension, through Jupyter's own HTTP stack (pytest-jupyter).

A real agent in a temporary NBSERVE_HOME serves two versions of a small iris model; every
request goes through ``jp_fetch`` (Jupyter's token) to the extension's handlers, which call
the public nbserve API. Browser tests live in tests/browser and run in their own pytest
process (pytest-jupyter's event loop and Playwright's do not share one process).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# pytest-jupyter's fixtures, for this module only (its autouse fixtures stay out of the rest).
from pytest_jupyter.jupyter_server import *  # noqa: F403

import nbserve

NAME = "panel-iris"
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
    assert find_agent(fresh_home) is None


def test_requests_without_jupyters_token_are_refused(api: Fetch) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "token not-the-token"}):
        status, _ = api("GET", "deployments", headers=headers)
        assert status in (401, 403), status
        status, _ = api("POST", "deployments", NAME, "stop", headers=headers)
        assert status in (401, 403), status


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
