"""The Ray engine on a real three-node Ray cluster (a head and two worker nodes on this host,
started and stopped here, token authentication on): versions run as Ray Serve applications
whose replicas spread over nodes, behind the agent's stable URL; a new version and a rollback
drop no request; stopping the agent deletes its applications; nothing of Ray's is left."""

from __future__ import annotations

import re
import threading
import time

import httpx
import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'nbserve[ray]')")

import nbserve

from ._ray import RayCluster
from .conftest import Home, assert_no_leftovers, nbserve_home

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    started = RayCluster.start(workers=2)
    try:
        yield started
    finally:
        started.stop()
        assert not started.processes(), "a process of the test cluster was left running"


def _options(cluster) -> list[str]:
    return ["--engine", "ray", "--ray-address", cluster.address, "--ray-http-port", str(cluster.http_port)]


@pytest.fixture(scope="module")
def ray_home(cluster, tmp_path_factory):
    """An agent on the Ray engine, pointed at the cluster (its token in the agent's environment)."""
    from nbserve._local import start_agent, stop_agent

    home = Home.resolve(tmp_path_factory.mktemp("nbhome"))
    with pytest.MonkeyPatch.context() as env:
        for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
            env.setenv(key, cluster.env[key])
        with nbserve_home(home.root):
            start_agent(home, _options(cluster))
            yield home
            stop_agent(home)
    assert_no_leftovers(home)


class Load:
    """Requests in a loop through the stable URL, every answer counted."""

    def __init__(self, url: str, rows: list) -> None:
        self.url, self.rows = url, rows
        self.ok = 0
        self.failures: list[str] = []
        self.versions: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    answer = client.post(f"{self.url}/predict", json={"data": self.rows})
                    if answer.status_code == 200:
                        self.ok += 1
                        self.versions.add(answer.headers.get("x-nbserve-version", "?"))
                    else:
                        self.failures.append(f"{answer.status_code} {answer.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_a_version_runs_on_two_nodes_and_rolls_out_and_back_without_a_failure(cluster, ray_home, iris, forest, tree):
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "ray-iris", X_test, workers=2, progress=False)
    np.testing.assert_array_equal(dep.predict(X_test), forest.predict(X_test))
    replicas = cluster.replicas("nbserve-ray-iris-v1-")
    assert len(replicas) == 2 and len({r["node"] for r in replicas}) == 2, \
        "two replicas, placed by Ray on two different nodes"
    # the agent says so too (GET /v1/resources, what nbserve top shows): the engine, each replica's node
    row = next(r for r in dep._client.get("/v1/resources") if r["deployment"] == "ray-iris")
    assert row["engine"] == "ray" and {r["node"] for r in row["replicas"]} == {r["node"] for r in replicas}
    assert all(r["rss_bytes"] > 10 * 2**20 for r in row["replicas"]), row["replicas"]  # each one measured here
    for path in ("/v2/models/ray-iris/infer", "/invocations"):  # the wire formats come along
        body = ({"inputs": [{"name": c, "shape": [2], "datatype": "FP64", "data": X_test[c][:2].tolist()}
                            for c in X_test]} if path.startswith("/v2") else {"dataframe_records":
                                                                               X_test[:2].to_dict("records")})
        assert httpx.post(f"{dep.url}{path}", json=body, trust_env=False, timeout=30).status_code == 200

    rows = X_test[:3].to_dict("records")
    with Load(dep.url, rows) as load:
        time.sleep(1.0)
        dep2 = nbserve.deploy(tree, "ray-iris", X_test, workers=2, progress=False)
        assert dep2.version == 2
        time.sleep(1.0)
        dep2.rollback()
        time.sleep(1.0)
    assert not load.failures, load.failures[:5]
    assert load.ok > 20 and load.versions == {"1", "2"}, (load.ok, load.versions)
    np.testing.assert_array_equal(nbserve.get("ray-iris").predict(X_test), forest.predict(X_test))
    events = set(nbserve.get("ray-iris").events()["kind"])
    assert "parity_passed" in events, "the reference sample was replayed through the Ray version"


def test_a_node_lost_under_load_costs_at_most_the_requests_in_flight(cluster, ray_home, iris, forest):
    import psutil

    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "ray-nodes", X_test, workers=2, progress=False)
    replicas = cluster.replicas("nbserve-ray-nodes-v1-")
    assert len(replicas) == 2
    head = cluster.raylet("nbserve_head")
    raylets = [psutil.Process(r["pid"]).parent() for r in replicas]  # a replica is its node's raylet's child
    victim = next(r for r in raylets if r.pid != head.pid)  # a worker node: the head holds the cluster
    rows = X_test[:3].to_dict("records")
    with Load(dep.url, rows) as load:
        time.sleep(1.0)
        # the node goes away at once, as a machine does: its raylet and every process it runs
        # (the replica, the node's Serve proxy, Ray's agents)
        for proc in [*victim.children(recursive=True), victim]:
            try:
                proc.kill()
            except psutil.Error:
                pass
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            alive = cluster.replicas("nbserve-ray-nodes-v1-")
            if len(alive) == 2 and all(psutil.pid_exists(r["pid"]) for r in alive):
                break
            time.sleep(2.0)
        before = load.ok
        deadline = time.monotonic() + 30
        while load.ok <= before + 5 and time.monotonic() < deadline:
            time.sleep(0.5)
    assert len(alive) == 2, f"Ray did not bring the replicas back to 2: {alive}"
    assert load.ok > before + 5, f"the deployment answers after the node is gone ({load.failures[:3]})"
    assert len(load.failures) <= 2, f"more failures than requests in flight: {load.failures[:5]}"
    np.testing.assert_array_equal(dep.predict(X_test), forest.predict(X_test))
    deadline = time.monotonic() + 60  # the agent's watcher looks every few seconds
    while time.monotonic() < deadline:
        kinds = list(dep.events()["kind"])
        if "replica_restored" in kinds:
            break
        time.sleep(1.0)
    assert "replica_lost" in kinds and "replica_restored" in kinds, f"the loss and the return are events: {kinds}"
    assert kinds.index("replica_lost") < kinds.index("replica_restored"), kinds  # oldest first


def test_a_canary_on_ray_beside_a_live_version_served_locally(cluster, ray_home, iris, forest, tree):
    """Each version runs on the engine its deploy named; the split stays in the agent's proxy."""
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "ray-mixed", X_test, engine="local", progress=False)
    assert not [a for a in cluster.applications() if a.startswith("nbserve-ray-mixed-")], "v1 runs here, not on Ray"
    rows = X_test[:3].to_dict("records")
    with Load(dep.url, rows) as load:
        time.sleep(1.0)
        dep = nbserve.deploy(tree, "ray-mixed", X_test, engine="ray", canary=50, progress=False)
        assert any(a.startswith("nbserve-ray-mixed-v2-") for a in cluster.applications())
        row = next(r for r in dep._client.get("/v1/resources") if r["deployment"] == "ray-mixed")
        assert row["engine"] == "local+ray" and {r["version"] for r in row["replicas"]} == {2}
        time.sleep(3.0)
        dep.promote()
        time.sleep(1.0)
        dep.rollback()  # back to the local v1, which stayed warm
        time.sleep(1.0)
    assert not load.failures, load.failures[:5]
    assert load.versions == {"1", "2"} and load.ok > 20, (load.ok, load.versions)
    np.testing.assert_array_equal(dep.predict(X_test), forest.predict(X_test))
    # a later deploy keeps the deployment's last engine; autoscaling is Ray's alone
    with pytest.raises(nbserve.errors.InvalidArgument, match="autoscaling needs the Ray engine"):
        nbserve.deploy(tree, "ray-mixed", X_test, engine="local", autoscaling={"min": 0}, progress=False)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(1.0)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def test_autoscaling_from_zero_holds_the_next_request_and_scale_changes_a_live_ray_version(
        cluster, ray_home, iris, forest, capsys):
    from nbserve._cli import main

    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "ray-auto", X_test, engine="ray", progress=False,
                         autoscaling={"min": 0, "max": 2, "downscale_delay": "2s"})
    row = next(r for r in dep._client.get("/v1/resources") if r["deployment"] == "ray-auto")
    assert row["autoscaling"]["min"] == 0 and row["autoscaling"]["max"] == 2
    assert main(["top", "--once"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("ray-auto"))
    # the engine, replicas on nodes (Ray may have removed the idle one already), the autoscaler's bounds
    assert re.search(r"\bray [01]r/[01]n 0-2\b", line), line
    _wait_for(lambda: cluster.replicas("nbserve-ray-auto-v1-") == [], 90, "Ray stopped the idle replica")
    # no replica: the request waits for Ray to start one, and is answered
    answer = httpx.post(f"{dep.url}/predict", json={"data": X_test[:3].to_dict("records")}, trust_env=False,
                        timeout=120)
    assert answer.status_code == 200 and answer.json() == forest.predict(X_test[:3]).tolist()
    assert len(cluster.replicas("nbserve-ray-auto-v1-")) >= 1
    assert "replica_lost" not in set(dep.events()["kind"]), "a replica the autoscaler removed was not lost"

    # a fixed count again, live: the new application takes the traffic, no request dropped
    rows = X_test[:3].to_dict("records")
    with Load(dep.url, rows) as load:
        time.sleep(1.0)
        dep.scale(autoscaling=False, replicas=2)
        time.sleep(1.0)
    assert not load.failures and load.ok > 10, (load.ok, load.failures[:5])
    apps = [a for a in cluster.applications() if a.startswith("nbserve-ray-auto-v1-")]
    assert len(apps) == 1, f"the old application was deleted once the new one served: {apps}"
    assert len(cluster.replicas(apps[0])) == 2
    row = next(r for r in dep._client.get("/v1/resources") if r["deployment"] == "ray-auto")
    assert row["autoscaling"] is None and row["workers"] == 2


def _strict(schema: dict) -> dict:
    """An OpenAPI schema that refuses unknown fields wherever it lists the known ones (what
    the API server's strict field validation does), except where the CRD keeps them."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(v) for v in schema]
    return schema


def test_export_ray_writes_a_rayservice_whose_serve_config_runs_on_a_real_cluster(
        cluster, ray_home, iris, forest, tmp_path):
    import gzip
    import json
    import subprocess
    import sys
    from pathlib import Path

    import jsonschema
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from nbserve._cli import main

    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "ray-export", X_test, engine="ray", memory="512M", cpus=0.5,
                         autoscaling={"min": 1, "max": 3, "target_ongoing_requests": 4}, progress=False)
    out = tmp_path / "deploy"
    assert main(["export", "ray", "ray-export", "--out", str(out), "--registry", "registry.example.com/ml"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Dockerfile", "README.txt", "build.sh", "nbserve_ray_replica.py",
                                                     "ray-export-rayservice.yaml", "requirements.txt"]
    doc = yaml.safe_load((out / "ray-export-rayservice.yaml").read_text())
    # KubeRay's own CRD schema (tests/data/kuberay/), unknown fields refused
    crd = json.loads(gzip.decompress((Path(__file__).parent / "data/kuberay/rayservice-v1.schema.json.gz").read_bytes()))
    jsonschema.validate(doc, _strict(crd))
    cluster_spec = doc["spec"]["rayClusterConfig"]
    assert cluster_spec["enableInTreeAutoscaling"] is True
    assert cluster_spec["workerGroupSpecs"][0]["maxReplicas"] == 3
    image = cluster_spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("registry.example.com/ml/ray-export-ray:")
    config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)  # and Ray Serve's own schema of that config
    app = config["applications"][0]
    deployment = app["deployments"][0]
    assert deployment["autoscaling_config"]["max_replicas"] == 3 and "num_replicas" not in deployment
    assert deployment["ray_actor_options"] == {"num_cpus": 0.5, "memory": 512 * 2**20}
    assert "rayproject/ray:" in (out / "Dockerfile").read_text()
    resolved = dep.metadata(1)["provenance"]["resolved"]
    assert (out / "requirements.txt").read_text().split() == [p for p in resolved if not p.startswith("ray")]

    # Run that very config on the test cluster with `serve deploy`: only the image's paths become
    # this host's (the Bento store, the replica module that the image keeps on PYTHONPATH)
    app["route_prefix"] = "/exported"
    app["runtime_env"]["env_vars"].update(BENTOML_HOME=str(ray_home.bentoml_home), PYTHONPATH=str(out))
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    serve_cli = str(Path(sys.executable).with_name("serve"))
    done = subprocess.run([serve_cli, "deploy", str(tmp_path / "serve.yaml"), "-a",
                           f"http://127.0.0.1:{cluster.dashboard_port}"], env=cluster.env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    try:
        url = f"http://127.0.0.1:{cluster.http_port}/exported"

        def answers():
            try:
                return httpx.get(f"{url}/readyz", trust_env=False, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_for(answers, 120, "the exported application answers /readyz on Ray Serve")
        answer = httpx.post(f"{url}/predict", json={"data": X_test[:5].to_dict("records")}, trust_env=False,
                            timeout=30)
        assert answer.status_code == 200 and answer.json() == forest.predict(X_test[:5]).tolist()
        bad = httpx.post(f"{url}/predict", json={"data": [{"nope": 1}]}, trust_env=False, timeout=30)
        assert bad.status_code == 422 and "sepal" in bad.text  # the version's own schema check
    finally:
        cluster.query("from ray import serve\nserve.delete('ray-export')\nanswer(True)")


def test_a_version_pinned_to_other_packages_runs_on_ray_with_them(cluster, ray_home):
    """Ray installs the pins the cluster lacks with uv (runtime_env), over its own Python: the
    replica answers from the version's scikit-learn, a version beside it from the cluster's."""
    import sklearn

    from .test_envs import OLD_SKLEARN, TEXTS, Reporter, _index_answers

    why = _index_answers()
    if why:
        pytest.skip(f"no package index answers uv here: {why}")
    dep = nbserve.deploy(Reporter(), "ray-pinned", TEXTS, engine="ray", methods=["predict", "versions"],
                         progress=False)
    dep = nbserve.deploy(Reporter(), "ray-pinned", TEXTS, engine="ray", methods=["predict", "versions"],
                         packages=[f"scikit-learn=={OLD_SKLEARN}"], canary=50, progress=False)

    def answers(path: str) -> list:
        response = httpx.post(f"{dep.url}{path}", json={"data": TEXTS}, trust_env=False, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    assert answers("/v/2/versions") == [OLD_SKLEARN] * 3
    assert answers("/v/1/versions") == [sklearn.__version__] * 3
    row = next(r for r in dep._client.get("/v1/resources") if r["deployment"] == "ray-pinned")
    assert any(e.startswith("ray-uv:") for e in row["environments"]), row["environments"]
    dep.abort()


def test_an_agent_that_crashed_adopts_its_applications_when_it_starts_again(cluster, ray_home, iris, forest):
    import signal

    import psutil

    from nbserve._local import find_agent, start_agent

    from .conftest import _forget_clients

    _, X_test, _, _ = iris
    before = sorted(a for a in cluster.applications() if a.startswith("nbserve-ray-iris-v1-"))
    assert len(before) == 1
    agent = psutil.Process(find_agent(ray_home).pid)
    agent.send_signal(signal.SIGKILL)  # a crash: it deletes nothing on its way out
    agent.wait(timeout=30)
    _forget_clients()
    start_agent(ray_home, _options(cluster))
    dep = nbserve.get("ray-iris")
    np.testing.assert_array_equal(dep.predict(X_test), forest.predict(X_test))
    after = sorted(a for a in cluster.applications() if a.startswith("nbserve-ray-iris-v1-"))
    assert after == before, "the same application serves: adopted by name, not started again"
    assert "adopted" in set(dep.events()["kind"])


def test_stopping_the_agent_deletes_its_applications(cluster, ray_home, iris, tree):
    _, X_test, _, _ = iris
    nbserve.deploy(tree, "ray-tree", X_test, progress=False)
    assert any(a.startswith("nbserve-ray-tree-v1-") for a in cluster.applications())
    from nbserve._local import stop_agent

    stop_agent(ray_home)
    deadline = time.monotonic() + 30
    while [a for a in cluster.applications() if a.startswith("nbserve-")] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [a for a in cluster.applications() if a.startswith("nbserve-")] == [], "every application deleted"
    assert cluster.replicas("nbserve-") == [], "and their replicas"
