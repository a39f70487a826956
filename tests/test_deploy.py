"""Deploy, predict, redeploy, roll back, stop: real agent, real bentoml serve, real HTTP."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

import nbserve
from nbserve import errors
from nbserve._runtimes import TOLERANCE

from ._load import Load
from .conftest import IRIS_COLUMNS

pytestmark = pytest.mark.slow


def _body(frame) -> str:
    return json.dumps({"data": json.loads(frame.to_json(orient="records"))})


@pytest.fixture(scope="module")
def dep(module_home, iris, forest):
    _, X_test, _, _ = iris
    return nbserve.deploy(forest, "iris", X_test, description="first forest", progress=False)


def test_first_deploy_serves_the_notebook_predictions(dep, iris, forest):
    _, X_test, _, _ = iris
    assert dep.version == 1
    assert dep.status == "serving"
    assert dep.url.startswith("http://127.0.0.1:")
    # the curl: a JSON body of records
    r = httpx.post(f"{dep.url}/predict", content=_body(X_test), headers={"content-type": "application/json"},
                   trust_env=False)
    assert r.status_code == 200
    assert r.headers["x-nbserve-version"] == "1"
    assert r.headers["x-nbserve-rows"] == str(len(X_test)), "the monitor counts rows from it, unparsed"
    assert r.json() == forest.predict(X_test).tolist()
    np.testing.assert_array_equal(dep.predict(X_test), forest.predict(X_test))


def test_stable_url_is_a_bentoml_service_base_url(dep, iris, forest):
    import bentoml

    _, X_test, _, _ = iris
    with bentoml.SyncHTTPClient(dep.url) as client:
        np.testing.assert_array_equal(np.asarray(client.predict(data=X_test)), forest.predict(X_test))
    for path in ("/readyz", "/livez", "/docs.json"):
        assert httpx.get(f"{dep.url}{path}", trust_env=False).status_code == 200, path
    docs = httpx.get(f"{dep.url}/docs", trust_env=False, follow_redirects=True)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = httpx.get(f"{dep.url}/docs.json", trust_env=False).json()
    assert "/predict" in spec["paths"]


def test_predict_proba_is_served_too(dep, iris, forest):
    _, X_test, _, _ = iris
    # served compiled (runtime="auto"): float32, within the documented tolerance of the forest's own
    np.testing.assert_allclose(dep.predict(X_test[:5], endpoint="predict_proba"), forest.predict_proba(X_test[:5]),
                               **TOLERANCE)
    assert dep.metadata()["model"]["runtime"]["name"] == "onnx"


@pytest.mark.parametrize(
    ("rows", "field", "named"),
    [
        ([{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}], "missing_columns", ["petal_width"]),
        ([{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2, "colour": "red"}],
         "unexpected_columns", ["colour"]),
        ([{"sepal_length": "long", "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}],
         "type_errors", ["sepal_length"]),
    ],
)
def test_bad_payloads_get_a_422_naming_the_columns(dep, rows, field, named):
    r = httpx.post(f"{dep.url}/predict", json={"data": rows}, trust_env=False)
    assert r.status_code == 422
    body = r.json()
    got = body[field] if isinstance(body[field], list) else sorted(body[field])
    assert got == named
    assert all(name in body["error"] for name in named)


def test_dep_predict_raises_schema_mismatch(dep, iris):
    _, X_test, _, _ = iris
    with pytest.raises(errors.SchemaMismatch, match="missing columns: petal_width"):
        dep.predict(X_test.drop(columns=["petal_width"]))


def test_redeploy_makes_v2_and_moves_the_url_without_dropping_requests(dep, iris, tree):
    _, X_test, _, _ = iris
    with Load(dep.url, _body(X_test[:3])) as load:
        time.sleep(0.5)
        dep2 = nbserve.deploy(tree, "iris", X_test, description="a stump", progress=False)
        time.sleep(0.5)
    assert dep2.version == 2 and dep2.url == dep.url
    assert load.failures == [] and set(load.statuses) == {200}, (load.statuses, load.failures[:3])
    assert load.versions["1"] > 0 and load.versions["2"] > 0, load.versions
    np.testing.assert_array_equal(dep2.predict(X_test), tree.predict(X_test))


def test_rollback_is_instant_and_drops_nothing(dep, iris, forest, tree):
    _, X_test, _, _ = iris
    dep.refresh()
    assert dep.version == 2
    with Load(dep.url, _body(X_test[:3])) as load:
        time.sleep(0.3)
        started = time.monotonic()
        dep.rollback()
        took = time.monotonic() - started
        time.sleep(0.3)
    assert dep.version == 1
    assert took < 2.0, f"a warm rollback took {took:.2f} s"
    assert load.failures == [] and set(load.statuses) == {200}
    np.testing.assert_array_equal(dep.predict(X_test), forest.predict(X_test))
    dep.rollback(to=2)
    assert dep.version == 2
    np.testing.assert_array_equal(dep.predict(X_test), tree.predict(X_test))


def test_history_is_a_dataframe_with_provenance(dep):
    frame = dep.history()
    assert list(frame.index) == [1, 2]
    assert frame.loc[2, "live"] and not frame.loc[1, "live"]
    assert frame.loc[1, "description"] == "first forest"
    assert frame.loc[1, "model"].endswith("RandomForestClassifier")
    assert frame.loc[2, "model"].endswith("DecisionTreeClassifier")
    version = dep.versions[0]
    prov = version["metadata"]["provenance"]
    assert any(p.startswith("scikit-learn==") for p in prov["packages"])
    assert prov["python"] and prov["user"] and prov["created_at"]
    schema = version["metadata"]["schema"]
    assert [c["name"] for c in schema["columns"]] == IRIS_COLUMNS
    assert {c["kind"] for c in schema["columns"]} == {"float"}


def test_get_and_deployments_see_the_same_state(dep):
    again = nbserve.get("iris")
    assert again.url == dep.url and again.version == dep.refresh().version
    assert "iris" in [d.name for d in nbserve.deployments()]
    with pytest.raises(errors.DeploymentNotFound, match="no deployment named 'nope'"):
        nbserve.get("nope")


def test_rollback_errors_are_typed(dep):
    with pytest.raises(errors.VersionNotFound, match="no version 99"):
        dep.rollback(to=99)


def test_model_without_predict_is_refused_before_anything_is_built(dep, iris):
    _, X_test, _, _ = iris
    before = len(dep.refresh().versions)
    with pytest.raises(errors.ModelNotServable, match="no predict"):
        nbserve.deploy(object(), "iris", X_test, progress=False)
    assert len(dep.refresh().versions) == before
    last = dep.events().iloc[-1]
    assert last["kind"] == "build_failed" and "no predict" in last["message"]


def test_failed_start_leaves_the_previous_version_serving(dep, iris, tmp_path, monkeypatch):
    """A model that needs, when loaded, a module the notebook has and the server does not
    (code beside the notebook that the model's pickle names is carried with it; a module only
    imported at load time cannot be): the server dies."""
    _, X_test, _, _ = iris
    module = tmp_path / "only_here.py"
    module.write_text("SEVEN = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    class Constant:
        def __init__(self) -> None:
            self.value = 7  # state, so that loading calls __setstate__

        def predict(self, X):
            return [self.value] * len(X)

        def __setstate__(self, state):
            import only_here  # noqa: F401 - at load time, in the server

            self.__dict__.update(state)

    Constant.__module__ = "__main__"  # pickled by value, as if defined in a notebook
    live = dep.refresh().version
    with Load(dep.url, _body(X_test[:3]), threads=2) as load:
        with pytest.raises(errors.DeployFailed) as info:
            nbserve.deploy(Constant(), "iris", X_test, progress=False)
    assert "only_here" in str(info.value)
    assert load.failures == [] and set(load.statuses) == {200}
    dep.refresh()
    assert dep.version == live and dep.status == "serving"
    failed = dep.history().iloc[-1]
    assert failed["status"] == "failed" and "only_here" in failed["error"]
    assert "deploy_failed" in set(dep.events()["kind"])


def test_a_server_whose_port_was_taken_first_starts_again_on_another(dep, module_home, monkeypatch):
    """free_port() finds a port free, then another process binds it before the server does:
    a real bentoml serve fails with EADDRINUSE, and the supervisor starts it on a new port."""
    import asyncio
    import socket

    from nbserve._agent import _supervisor
    from nbserve._agent._registry import Registry

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    ports = iter([taken])
    real_free_port = _supervisor.free_port
    monkeypatch.setattr(_supervisor, "free_port", lambda host="127.0.0.1": next(ports, None) or real_free_port(host))
    registry = Registry(module_home.registry)
    supervisor = _supervisor.Supervisor(module_home, registry)
    bento_tag = dep.refresh().versions[0]["bento_tag"]

    async def start_and_stop() -> tuple[int, int]:
        proc = await supervisor.start("port-race", 1, bento_tag)
        async with httpx.AsyncClient(trust_env=False) as client:
            status = (await client.get(f"{proc.url}/readyz")).status_code
        await supervisor.stop(proc)
        return proc.port, status

    try:
        port, status = asyncio.run(start_and_stop())
    finally:
        squatter.close()
        registry.close()
    assert port != taken and status == 200
    log = module_home.version_log("port-race", 1).read_text()
    assert "Address already in use" in log and f"on port {port}" in log  # the first try, then the second


def test_rollback_to_a_reaped_version_restarts_it_from_its_bento(dep, iris, forest, tree):
    _, X_test, _, _ = iris
    nbserve.deploy(forest, "iris", X_test, description="third", progress=False)
    dep.refresh()
    statuses = {v["number"]: v["status"] for v in dep.versions}
    assert statuses[1] == "stopped", statuses  # keep_warm=1 keeps only the previous live one
    dep.rollback(to=1)
    assert dep.version == 1 and dep.status == "serving"
    assert dep.events().iloc[-1]["message"].endswith("(cold start)")
    np.testing.assert_array_equal(dep.predict(X_test), forest.predict(X_test))


def test_stop_answers_503_and_start_serves_again(dep, iris):
    _, X_test, _, _ = iris
    live = dep.refresh().version
    dep.stop()
    assert dep.status == "stopped"
    r = httpx.post(f"{dep.url}/predict", content=_body(X_test[:1]), trust_env=False)
    assert r.status_code == 503
    assert "error" in r.json()
    dep.start()
    assert dep.status == "serving" and dep.version == live
    assert len(dep.predict(X_test[:2])) == 2


def test_a_crashed_server_is_restarted_by_the_agent(dep, iris):
    import psutil

    _, X_test, _, _ = iris
    live = dep.refresh().version
    port = next(v for v in dep.versions if v["number"] == live)["upstream_url"].rsplit(":", 1)[1]
    # find the serving process by its port, then kill its whole tree hard
    victims = [p for p in psutil.process_iter(["cmdline"])
               if "serve" in (p.info["cmdline"] or []) and port in (p.info["cmdline"] or [])]
    assert victims
    for proc in victims:
        for child in proc.children(recursive=True):
            child.kill()
        proc.kill()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kinds = set(dep.events()["kind"])
        if "restarted" in kinds and dep.refresh().status == "serving":
            break
        time.sleep(0.5)
    assert "process_exited" in kinds and "restarted" in kinds
    assert len(dep.predict(X_test[:2])) == 2
