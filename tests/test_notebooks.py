"""The example notebooks run, top to bottom, with papermill against a real agent."""

from __future__ import annotations

import ast

import pytest

import nbserve

from .conftest import repo_root

pytestmark = pytest.mark.slow


def _run(name: str, tmp_path, parameters: dict):
    """Execute notebooks/<name>.ipynb with papermill in tmp_path; the executed notebook."""
    import papermill

    return papermill.execute_notebook(
        str(repo_root() / "notebooks" / f"{name}.ipynb"), str(tmp_path / f"{name}.out.ipynb"),
        parameters=parameters, kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
    )


def _outputs(nb) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") or str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


def test_quickstart_notebook(fresh_home, tmp_path):
    executed = _run("01-quickstart", tmp_path, {"n_estimators": 10, "deployment_name": "nb-iris"})
    text = _outputs(executed)
    assert "served prediction:" in text and "latency over 200 requests: p50" in text
    # the deploy cell rendered the rich result (stable URL, curl and Python examples)
    html = [o["data"]["text/html"] for c in executed.cells for o in c.get("outputs", [])
            if "text/html" in o.get("data", {}) and "nbserve-deployment" in o["data"]["text/html"]]
    assert html and "curl -X POST" in html[0]
    # the kernel is gone; the deployment is not, and its provenance names the notebook run
    dep = nbserve.get("nb-iris")
    assert dep.status == "serving" and dep.version == 1 and len(dep.versions) == 2
    assert dep.history().loc[2, "description"] == "5 trees"


def test_monitoring_notebook(fresh_home, tmp_path):
    import base64

    executed = _run("02-monitoring", tmp_path, {"deployment_name": "nb-watch", "requests_per_phase": 40})
    text = _outputs(executed)
    assert "dataset drift: False" in text and "dataset drift: True" in text
    pngs = [o["data"]["image/png"] for c in executed.cells for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
    assert len(pngs) >= 3, "drift, latency and history figures are shown inline"
    assert all(len(base64.b64decode(p)) > 10_000 for p in pngs)
    widgets = [o for c in executed.cells for o in c.get("outputs", [])
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, "the dashboard is a widget"
    assert "dashboard refreshes so far:" in text and "dashboard refreshes so far: 0" not in text
    dep = nbserve.get("nb-watch")
    assert dep.latency("15m")["requests"].sum() == 80


def test_rollouts_notebook(fresh_home, tmp_path):
    executed = _run("04-rollouts", tmp_path, {"deployment_name": "nb-release"})
    text = _outputs(executed)
    assert "rolled back: v2 canary ended: p99" in text
    assert "live version: 3" in text
    # the statuses users saw, as the notebook prints them (read from that line only: later outputs hold
    # timestamps such as 18:29:20.500, which a search of the rest of the text took for a status)
    line = next(line for line in text.splitlines() if "statuses seen by users during all of this:" in line)
    statuses = ast.literal_eval(line.split("during all of this:", 1)[1].strip())
    assert next(iter(statuses)) == 200 and 500 not in statuses, statuses
    dep = nbserve.get("nb-release")
    assert dep.version == 3 and dep.rollout() is None
    kinds = dep.events()["kind"].tolist()
    assert {"gate_breached", "promoted", "shadow_started", "aborted"} <= set(kinds)


def test_quality_notebook(fresh_home, tmp_path):
    import re

    executed = _run("06-quality", tmp_path, {"deployment_name": "nb-quality", "phase_seconds": 6})
    text = _outputs(executed)
    before, after = map(float, re.search(r"accuracy before: ([\d.]+), after: ([\d.]+)", text).groups())
    assert before > after + 0.05, "quality falls once the world changes"
    v1, v2 = map(float, re.search(r"v1 accuracy ([\d.]+), v2 accuracy ([\d.]+)", text).groups())
    assert v2 > v1 and "live version: 2" in text
    assert "'unknown': 1" in text and "'duplicate': 1" in text and "'invalid': 1" in text
    card = (tmp_path / "churn-model-card.md").read_text()
    assert card.startswith("# nb-quality v2") and "retention call" in card and "| accuracy |" in card
    pngs = [o for c in executed.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert pngs, "the quality plot is shown inline"


def test_remote_notebook(fresh_home, tmp_path):
    import socket

    import psutil

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        executed = _run("05-remote", tmp_path, {"host_port": port, "deployment_name": "nb-remote"})
    finally:  # the notebook's "serving host" lives under tmp_path: nothing of it may outlive the test
        for proc in psutil.process_iter(["cmdline", "environ"]):
            try:
                if str(tmp_path) in " ".join(proc.info["cmdline"] or []) + str(proc.info["environ"] or ""):
                    proc.kill()
            except psutil.Error:
                pass
    text = _outputs(executed)
    assert "refused: the certificate of" in text and "not the pinned" in text
    assert "served prediction: [" in text
    assert "no token: 401" in text and "dashboards (viewer): 403" in text and "churn-app (predict): 200" in text
    assert "after revoking churn-app: 401" in text
    assert "audit chain intact: True" in text and "serving host agent stopped: 0" in text
    assert not fresh_home.agent_file.exists(), "deploying to a remote target starts no local agent"


def test_scale_notebook(fresh_home, tmp_path):
    import re

    executed = _run("07-scale", tmp_path, {"deployment_name": "nb-scale", "requests": 128})
    text = _outputs(executed)
    # the gain itself is a timing (bench/scale.py measures it); that requests were merged is not
    rows = float(re.search(r"x one unbatched worker's throughput, ([\d.]+) rows per model call", text).group(1))
    assert rows > 1, text
    assert "warned: ['v1: " in text and "max_latency_ms=2" in text
    assert re.search(r"under load: \{.*503: \d+", text), text  # the too-small budget refused requests
    assert "answered 503" in text and "raise it" in text  # ... and the event said what to change
    assert "state after idling: cold" in text and "cold request: 200 after" in text and "state now: warm" in text
    assert nbserve.top().loc["nb-scale", "batching"] == {"max_batch_size": 64, "max_latency_ms": 1000}



def test_any_model_notebook(fresh_home, tmp_path):
    executed = _run("08-any-model", tmp_path, {"prefix": "nb-any"})
    text = _outputs(executed)
    assert "served: [1, 0] notebook: [1, 0]" in text
    assert "a number among the texts: 422 items must be strings: data[1] is not" in text
    assert "embedding shape: (2, 4) same as the notebook: True" in text
    assert "a wrong shape: 422 expected shape (batch, 8, 8), got (2, 7, 8)" in text
    assert "a broken file: 422" in text
    served, _, notebook = text.partition("a PNG file: ")[2].partition("\n")[0].partition(" notebook: ")
    assert served == notebook, "the file's answer is the notebook's"
    assert "totals: [12.0, 0.0]" in text
    assert "a record with a missing price: 422" in text and "data[0].items[0].price" in text
    assert text.count("served equals the notebook: True") == 2
    assert "saved by value: ['__main__']" in text
    # the kernel is gone; every one of them still serves
    assert {d.name for d in nbserve.deployments() if d.status == "serving"} == {
        "nb-any-reviews", "nb-any-embed", "nb-any-tiles", "nb-any-photos", "nb-any-orders", "nb-any-clip"}
