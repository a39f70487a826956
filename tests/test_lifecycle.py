"""Deployments outlive kernels and agents; nothing nbserve starts is left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import numpy as np
import psutil
import pytest

import nbserve
from nbserve._local import find_agent, start_agent, stop_agent

from .conftest import _forget_clients, home_processes

pytestmark = pytest.mark.slow


def _serving_pids(home) -> set[int]:
    return {p.pid for p in home_processes(home) if "--home" not in " ".join(p.cmdline())}


def test_agent_restart_restores_what_was_serving(fresh_home, iris, forest, tree):
    _, X_test, _, _ = iris
    nbserve.deploy(forest, "iris", X_test, progress=False)
    dep = nbserve.deploy(tree, "iris", X_test, progress=False)
    url = dep.url
    assert stop_agent(fresh_home)
    assert home_processes(fresh_home) == [], "agent stop must stop every serving process"
    with pytest.raises(httpx.ConnectError):  # the stable URL went down with its agent
        httpx.get(f"{url}/readyz", trust_env=False)

    _forget_clients()
    again = nbserve.get("iris")  # starts the agent on demand, which restores v2
    deadline = time.monotonic() + 60
    while again.refresh().status != "serving" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert again.url == url and again.version == 2
    np.testing.assert_array_equal(again.predict(X_test), tree.predict(X_test))
    assert list(again.history().index) == [1, 2]
    assert "restarted" in set(again.events()["kind"])


def test_a_cached_client_answers_without_a_health_check_but_never_for_a_restarted_agent(
        fresh_home, monkeypatch):
    from nbserve import _connection

    monkeypatch.setattr(_connection, "FRESH_SECONDS", 3600.0)  # however fresh its last answer
    first = nbserve.connect()
    pid = first.get("/v1/health")["pid"]
    sent: list[str] = []
    first._http.event_hooks["request"].append(lambda request: sent.append(request.url.path))
    assert nbserve.connect() is first and sent == []  # it answered lately: reused as it is
    assert stop_agent(fresh_home)
    start_agent(fresh_home)
    second = nbserve.connect()
    assert second is not first and second.get("/v1/health")["pid"] != pid


def test_a_killed_agent_leaves_servers_that_the_next_agent_adopts(fresh_home, iris, forest):
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "iris", X_test, progress=False)
    agent = find_agent(fresh_home)
    assert agent is not None
    before = _serving_pids(fresh_home)
    assert before
    os.kill(agent.pid, signal.SIGKILL)
    try:
        psutil.Process(agent.pid).wait(timeout=10)
    except psutil.NoSuchProcess:
        pass

    _forget_clients()
    start_agent(fresh_home)
    again = nbserve.get("iris")
    assert again.status == "serving" and again.url == dep.url
    assert _serving_pids(fresh_home) == before, "the running server should be adopted, not restarted"
    assert "adopted" in set(again.events()["kind"])
    np.testing.assert_array_equal(again.predict(X_test), forest.predict(X_test))
    # fresh_home's teardown stops the agent and fails if any adopted process survives


def test_deployments_outlive_a_dead_kernel(fresh_home, iris, forest):
    """A real IPython kernel deploys with %deploy and is killed; a new kernel sees it."""
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ, NBSERVE_HOME=str(fresh_home.root))
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        code = textwrap.dedent(
            """
            %load_ext nbserve
            from sklearn.datasets import load_iris
            from sklearn.ensemble import RandomForestClassifier
            X, y = load_iris(return_X_y=True, as_frame=True)
            X.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
            model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
            dep = %deploy model --name kernel-made --sample X
            print("URL", dep.url)
            """
        )
        reply = kc.execute_interactive(code, timeout=180, output_hook=lambda msg: None)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        km.shutdown_kernel(now=True)  # the kernel dies; the agent is in its own session
        kc.stop_channels()
    _forget_clients()
    dep = nbserve.get("kernel-made")
    assert dep.status == "serving"
    assert dep.history().loc[1, "cell"] is not None
    r = httpx.post(f"{dep.url}/predict", json={"data": [dict(zip(
        ["sepal_length", "sepal_width", "petal_length", "petal_width"], [5.1, 3.5, 1.4, 0.2]))]},
        trust_env=False)
    assert r.status_code == 200 and r.json() == [0]


def test_two_clients_racing_start_one_agent(fresh_home):
    script = "from nbserve._local import start_agent; from nbserve._config import Home; " \
             "print(start_agent(Home.resolve()).pid)"
    env = dict(os.environ, NBSERVE_HOME=str(fresh_home.root))
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    pids = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(pids) == 1, pids
    # the losers exit on their own (code 3) as soon as they find the lock taken
    deadline = time.monotonic() + 10
    while True:
        agents = [p for p in home_processes(fresh_home) if "--home" in " ".join(p.cmdline())]
        if len(agents) <= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [str(a.pid) for a in agents] == list(pids)


def test_agent_file_and_token_are_private(fresh_home):
    start_agent(fresh_home)
    assert oct(fresh_home.token_file.stat().st_mode & 0o777) == "0o600"
    info = json.loads(fresh_home.agent_file.read_text())
    assert info["url"].startswith("http://127.0.0.1:")
    # the REST API refuses requests without the token, with a JSON error
    r = httpx.get(f"{info['url']}/v1/deployments", trust_env=False)
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "AuthenticationFailed"
    spec = httpx.get(f"{info['url']}/openapi.json", trust_env=False).json()
    assert "/v1/deployments/{name}/rollback" in spec["paths"]


def test_an_agent_started_from_a_scheduled_run_does_not_inherit_the_run(monkeypatch):
    from nbserve._local import _agent_env

    monkeypatch.setenv("NBSERVE_RUN_ID", "7")
    monkeypatch.setenv("NBSERVE_RUN_NOTEBOOK", "/x.ipynb")
    env = _agent_env()
    assert "NBSERVE_RUN_ID" not in env and "NBSERVE_RUN_NOTEBOOK" not in env
    assert env["BENTOML_DO_NOT_TRACK"] == "true"


# -- an agent that cannot start says why, to whoever started it ------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nbserve", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["no-tls", "bad-certificate", "port-in-use"])
def test_agent_start_shows_the_agents_own_reason_and_hint(fresh_home, tmp_path, case):
    squatter = None
    if case == "no-tls":
        options, reason = ["--host", "0.0.0.0"], "refusing to listen on 0.0.0.0 without TLS"
    elif case == "bad-certificate":
        missing = tmp_path / "missing.crt"
        options, reason = ["--tls-cert", str(missing), "--tls-key", str(missing)], "cannot load the TLS certificate"
    else:
        squatter = socket.create_server(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        options, reason = ["--port", str(port)], f"cannot listen on 127.0.0.1:{port}: Address already in use"
    try:
        result = _cli("agent", "start", "--home", str(fresh_home.root), *options)
    finally:
        if squatter is not None:
            squatter.close()
    assert result.returncode != 0
    assert f"error: {reason}" in result.stderr, result.stderr
    assert "  hint: " in result.stderr
    assert "Traceback" not in result.stderr and "exited with code" not in result.stderr
    assert not fresh_home.agent_file.exists()


def test_the_python_api_start_raises_the_agents_reason(fresh_home):
    from nbserve import errors

    with pytest.raises(errors.AgentStartFailed) as info:
        start_agent(fresh_home, ["--host", "0.0.0.0"])
    assert info.value.message.startswith("refusing to listen on 0.0.0.0 without TLS")
    assert "--insecure" in info.value.hint
    assert find_agent(fresh_home) is None


def test_a_second_agent_says_which_one_runs_and_what_to_do(fresh_home):
    start_agent(fresh_home)
    result = _cli("agent", "run", "--home", str(fresh_home.root))
    assert result.returncode == 3
    assert f"another agent holds {fresh_home.lock_file}" in result.stderr
    assert "hint: `nbserve agent status`" in result.stderr


def test_agent_already_running_is_a_conflict_in_the_error_tree(fresh_home):
    from nbserve import errors
    from nbserve._agent._main import AgentAlreadyRunning, take_lock

    fresh_home.ensure()
    held = take_lock(fresh_home)
    try:
        with pytest.raises(AgentAlreadyRunning) as info:
            take_lock(fresh_home)
        assert isinstance(info.value, errors.Conflict) and info.value.status == 409 and info.value.hint
    finally:
        held.close()
