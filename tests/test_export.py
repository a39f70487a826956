"""`nbserve export k8s`: manifests for a real deployment on a real agent, validated against
Kubernetes' own OpenAPI schemas (kubernetes-validate, strict: unknown fields fail too)."""

from __future__ import annotations

import copy
import json
import re
import stat

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version, major_minor

import nbserve
from nbserve import errors
from nbserve._cli import main
from nbserve._export import export_k8s

pytestmark = pytest.mark.slow

NAME = "churn_model"  # "_" is fine for nbserve, not in a Kubernetes object name
K8S = "churn-model"
K8S_VERSION = latest_version()  # the newest schemas the package ships


@pytest.fixture(scope="module")
def dep(module_home, iris, forest, tree):
    _, X_test, _, _ = iris
    nbserve.deploy(forest, NAME, X_test, memory="1G", cpus=1, workers=2, max_batch_size=32, max_latency_ms=500,
                   skip_parity=True, progress=False)
    return nbserve.deploy(tree, NAME, X_test, skip_parity=True, progress=False)  # v2, same settings


@pytest.fixture(scope="module")
def canary(dep, tmp_path_factory):
    """v1 on 3 pods with v2 as a 10% canary, images in a registry, in a namespace."""
    out = tmp_path_factory.mktemp("deploy")
    paths = export_k8s(NAME, version=1, replicas=3, out=out, registry="registry.example.com/ml",
                       namespace="models", canary=10, canary_version=2)
    return out, paths, _objects(out)


def _objects(out) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((out / f"{K8S}.yaml").read_text()) if d is not None]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def _container(deployment: dict, name: str) -> dict:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def test_every_object_validates_against_the_kubernetes_schemas(dep, canary):
    assert major_minor(K8S_VERSION) >= major_minor("1.30")
    out, paths, objects = canary
    assert sorted(objects) == sorted([
        f"ConfigMap/{K8S}-auth-proxy", f"Deployment/{K8S}", f"Deployment/{K8S}-canary", f"Service/{K8S}",
        f"HorizontalPodAutoscaler/{K8S}", f"NetworkPolicy/{K8S}",
    ])
    for key, doc in objects.items():
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == major_minor(K8S_VERSION), key
        assert doc["metadata"]["namespace"] == "models"
    # the validator does check: a misspelt field and a wrong type are refused
    broken = copy.deepcopy(objects[f"Deployment/{K8S}"])
    broken["spec"]["replica"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = copy.deepcopy(objects[f"Service/{K8S}"])
    broken["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    # the Secret the user creates, once uncommented, is a valid Secret with the referenced name
    example = (out / "secret.example.yaml").read_text()
    assert yaml.safe_load(example) is None  # all comments: applying the directory creates nothing
    lines = example.splitlines()
    secret = yaml.safe_load("\n".join(line[2:] for line in lines[lines.index("# apiVersion: v1"):]))
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == f"{K8S}-predict-token"
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    assert {p.name for p in paths} == {f"{K8S}.yaml", "containerize.sh", "secret.example.yaml", "README.txt"}


def test_probes_resources_workers_and_provenance(dep, canary):
    _, _, objects = canary
    stable = objects[f"Deployment/{K8S}"]
    model = _container(stable, "model")
    assert model["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 3000}
    assert model["livenessProbe"]["httpGet"] == {"path": "/livez", "port": 3000}
    assert {"containerPort": 3000, "name": "bento", "protocol": "TCP"} in model["ports"]
    # memory="1G", cpus=1 on the agent are the pod's limits (and requests)
    assert model["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert model["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    env = {e["name"]: e.get("value") for e in model["env"]}
    assert env["BENTOML_CONFIG_OPTIONS"] == f'services."{NAME}".workers=2'  # the service is named NAME (quoted)
    assert json.loads(env["NBSERVE_BATCHING"]) == {"max_batch_size": 32, "max_latency_ms": 500}
    v1 = dep.metadata(1)
    assert model["image"] == "registry.example.com/ml/" + v1["bento"]
    labels = stable["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == K8S
    assert labels["app.kubernetes.io/version"] == "1" and labels["nbserve/version"] == "1"
    notes = stable["metadata"]["annotations"]
    assert notes["nbserve/bento"] == v1["bento"] and notes["nbserve/created-by"] == v1["created_by"]
    assert notes["nbserve/exported-from"] == "local"


def test_service_hpa_canary_and_token_fit_together(dep, canary):
    _, _, objects = canary
    stable, canary_dep = objects[f"Deployment/{K8S}"], objects[f"Deployment/{K8S}-canary"]
    svc, hpa = objects[f"Service/{K8S}"], objects[f"HorizontalPodAutoscaler/{K8S}"]
    # the HPA scales the stable Deployment, from --replicas up
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": K8S}
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 9
    # one Service selects the pods of both Deployments; each Deployment selects only its own
    for d in (stable, canary_dep):
        pod_labels = d["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        assert d["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        port_names = {p["name"] for c in d["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert svc["spec"]["ports"][0]["targetPort"] in port_names
    assert stable["spec"]["selector"] != canary_dep["spec"]["selector"]
    assert canary_dep["spec"]["template"]["metadata"]["labels"]["nbserve/version"] == "2"
    assert _container(canary_dep, "model")["image"] == "registry.example.com/ml/" + dep.metadata(2)["bento"]
    # 10% of 3 stable pods: 1 canary pod (25% of requests: a Service splits by pods)
    assert stable["spec"]["replicas"] == 3 and canary_dep["spec"]["replicas"] == 1
    # the predict token: a Secret reference in the proxy that the Service points at
    proxy = _container(stable, "auth-proxy")
    ref = next(e for e in proxy["env"] if e["name"] == "NBSERVE_PREDICT_TOKEN")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": f"{K8S}-predict-token", "key": "token"}
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in proxy["ports"]
    conf = objects[f"ConfigMap/{K8S}-auth-proxy"]["data"]["default.conf.template"]
    assert '"Bearer ${NBSERVE_PREDICT_TOKEN}"' in conf and 'proxy_set_header Authorization ""' in conf
    policy = objects[f"NetworkPolicy/{K8S}"]["spec"]
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]


def test_containerize_script_and_readme(dep, canary):
    out, _, _ = canary
    script = (out / "containerize.sh").read_text()
    assert (out / "containerize.sh").stat().st_mode & stat.S_IXUSR
    for number in (1, 2):
        tag = dep.metadata(number)["bento"]
        assert f"bentoml containerize {tag} -t registry.example.com/ml/{tag}\n" in script
        assert f"bentoml export {tag} {tag.replace(':', '-')}.bento" in script
        assert f"bentoml import {tag.replace(':', '-')}.bento" in script
        assert f"docker push registry.example.com/ml/{tag}" in script
    readme = (out / "README.txt").read_text()
    assert "checks no token" in readme and "25% of requests" in readme
    assert f"kubectl create secret generic {K8S}-predict-token -n models" in readme
    assert f"kubectl apply -n models -f {K8S}.yaml" in readme
    for number in (1, 2):  # each image installs the version's resolved set, the one it serves with here
        resolved = dep.metadata(number)["provenance"]["resolved"]
        assert f"v{number}'s image installs {len(resolved)} packages at the versions it serves with here" in readme
        assert resolved[0] in readme


def test_cli_exports_the_live_version(dep, tmp_path, capsys):
    out = tmp_path / "deploy"
    assert main(["export", "k8s", NAME, "--replicas", "2", "--out", str(out), "--predict-auth", "open"]) == 0
    printed = capsys.readouterr().out
    assert "Next steps" in printed and "./containerize.sh" in printed
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", f"{K8S}.yaml", "containerize.sh"]
    objects = _objects(out)
    assert sorted(objects) == [f"Deployment/{K8S}", f"HorizontalPodAutoscaler/{K8S}", f"Service/{K8S}"]
    for doc in objects.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    stable = objects[f"Deployment/{K8S}"]
    assert stable["spec"]["template"]["metadata"]["labels"]["nbserve/version"] == str(dep.version) == "2"
    model = _container(stable, "model")
    assert model["image"] == dep.metadata(2)["bento"]  # what `bentoml containerize <tag>` names it
    assert model["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]  # no proxy
    assert "nothing checks a token" in (out / "README.txt").read_text()
    assert re.search(rf"bentoml containerize {re.escape(model['image'])} -t {re.escape(model['image'])}\n",
                     (out / "containerize.sh").read_text())


@pytest.mark.parametrize("argv, message", [
    (["no-such-model"], "no deployment named 'no-such-model'"),
    ([NAME, "--canary", "10"], "a canary needs the version"),
    ([NAME, "--replicas", "0"], "replicas must be a whole number"),
    ([NAME, "--version", "99"], "has no version 99"),
    ([NAME, "--canary", "150", "--canary-version", "1"], "between 0 and 100"),
    ([NAME, "--canary", "10", "--canary-version", "2"], "the canary version is the stable version"),
    ([NAME, "--namespace", "Not_Valid"], "invalid Kubernetes namespace"),
])
def test_bad_input_is_an_error_line_not_a_traceback(dep, tmp_path, capsys, argv, message):
    out = tmp_path / "deploy"
    assert main(["export", "k8s", *argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "hint: " in err and "Traceback" not in err
    assert not out.exists()  # nothing written


def test_python_api_raises_typed_errors(dep, tmp_path):
    with pytest.raises(errors.DeploymentNotFound):
        export_k8s("no-such-model", out=tmp_path)
    with pytest.raises(errors.VersionNotFound):
        export_k8s(NAME, version=7, out=tmp_path)
    with pytest.raises(errors.InvalidArgument, match="max_replicas"):
        export_k8s(NAME, replicas=4, max_replicas=2, out=tmp_path)
    assert list(tmp_path.iterdir()) == []
