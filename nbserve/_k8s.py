"""The Kubernetes objects of an export plan: Deployments (one per release), the Service, the
HorizontalPodAutoscaler, the token proxy's ConfigMap and the NetworkPolicy, as plain dicts, and
their YAML. Pure functions of a :class:`Plan`; ``_export.py`` resolves the plan from an agent and
writes the files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ._service_template import BATCHING_ENV
from ._settings import workers_option

PORT = 3000  # BentoML's HTTP port in the image `bentoml containerize` builds
PROXY_PORT = 8080  # the token-checking proxy's port (predict_auth="token")
SERVICE_PORT = 80
BENTO_UID = 1034  # the user BentoML's image runs as (bentoml/_internal/container/generate.py)
# nginx's unprivileged image renders /etc/nginx/templates/*.template with envsubst at start.
AUTH_PROXY_IMAGE = "nginxinc/nginx-unprivileged:1.27-alpine"
AUTH_PROXY_UID = 101
MAX_BODY = "64m"  # the stable URL's limit on request bodies
CPU_TARGET_PERCENT = 70  # HPA: average CPU utilisation, of the requests


@dataclass
class Release:
    """One nbserve version as a Kubernetes Deployment."""

    number: int
    bento_tag: str
    image: str
    replicas: int
    track: str  # "stable" or "canary"
    annotations: dict[str, str]
    # what its image installs (the Bento's requirements): the pins with what they need, as the kernel had them
    packages: tuple[str, ...] = ()


@dataclass
class Plan:
    deployment: str  # the nbserve name
    k8s_name: str  # the same as a DNS label (Kubernetes object names)
    namespace: str | None
    stable: Release
    canary: Release | None
    max_replicas: int
    workers: int
    batching: dict[str, Any] | None  # the deployment's adaptive batching, read by the service from its env
    memory: int | None  # bytes, the deployment's cap
    cpus: float | None
    predict_auth: str
    agent_bentoml_home: str | None
    source: str  # the target it was exported from
    exported_at: str
    notes: list[str] = field(default_factory=list)

    @property
    def secret_name(self) -> str:
        return f"{self.k8s_name}-predict-token"

    @property
    def proxy_config_name(self) -> str:
        return f"{self.k8s_name}-auth-proxy"

    @property
    def manifest_file(self) -> str:
        return f"{self.k8s_name}.yaml"

    def canary_share(self) -> float | None:
        if self.canary is None:
            return None
        return 100.0 * self.canary.replicas / (self.canary.replicas + self.stable.replicas)


def k8s_name(name: str) -> str:
    """A deployment name as a Kubernetes object name (a DNS label; room left for ``-canary``)."""
    base = name.lower().replace("_", "-")
    if not base[:1].isalpha():
        base = f"nbs-{base}"
    return base[:56].rstrip("-")


def _memory(value: int) -> str:
    for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def _cpu(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"


def resources(plan: Plan) -> dict[str, dict[str, str]]:
    """Requests and limits of the model container: the deployment's caps when set (request =
    limit, so what the agent enforced is what the scheduler reserves), else per-worker defaults."""
    workers = plan.workers
    if plan.memory:
        mem_request = mem_limit = _memory(int(plan.memory))
    else:
        mem_request, mem_limit = _memory(workers * 512 * 2**20), _memory(workers * 2**30)
    if plan.cpus:
        cpu_request = cpu_limit = _cpu(float(plan.cpus))
    else:
        cpu_request, cpu_limit = _cpu(0.5 * workers), _cpu(float(workers))
    return {"requests": {"cpu": cpu_request, "memory": mem_request},
            "limits": {"cpu": cpu_limit, "memory": mem_limit}}


def _meta(plan: Plan, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if plan.namespace:
        meta["namespace"] = plan.namespace
    meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return meta


def app_labels(plan: Plan) -> dict[str, str]:
    """The labels every pod of the deployment carries; the Service selects on them."""
    return {"app.kubernetes.io/name": plan.k8s_name, "nbserve/deployment": plan.deployment}


def _release_labels(plan: Plan, release: Release) -> dict[str, str]:
    return {**app_labels(plan), "app.kubernetes.io/version": str(release.number),
            "nbserve/version": str(release.number), "nbserve/track": release.track}


def _probe(path: str, port: int | str, *, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "timeoutSeconds": 5,
            "failureThreshold": failures}


def deployment(plan: Plan, release: Release) -> dict[str, Any]:
    name = plan.k8s_name if release.track == "stable" else f"{plan.k8s_name}-canary"
    labels = _release_labels(plan, release)
    selector = {**app_labels(plan), "nbserve/track": release.track}
    model = {
        "name": "model",
        "image": release.image,
        "imagePullPolicy": "IfNotPresent",  # a Bento's tag names one immutable build
        "ports": [{"name": "bento" if plan.predict_auth == "token" else "http", "containerPort": PORT,
                   "protocol": "TCP"}],
        "env": [
            # the service is named after the deployment (see _service_template.py)
            {"name": "BENTOML_CONFIG_OPTIONS", "value": workers_option(plan.deployment, plan.workers)},
            {"name": "BENTOML_DO_NOT_TRACK", "value": "true"},
        ] + ([{"name": BATCHING_ENV, "value": json.dumps(plan.batching)}] if plan.batching else []),
        "resources": resources(plan),
        # A slow model load gets up to 5 minutes before liveness counts.
        "startupProbe": _probe("/livez", PORT, period=5, failures=60),
        "readinessProbe": _probe("/readyz", PORT, period=5, failures=3),
        "livenessProbe": _probe("/livez", PORT, period=10, failures=3),
        # Endpoints drop the pod before it stops, so in-flight requests finish (like the agent's drain).
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": BENTO_UID, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }
    containers = [model]
    volumes: list[dict[str, Any]] = []
    if plan.predict_auth == "token":
        containers.append({
            "name": "auth-proxy",
            "image": AUTH_PROXY_IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": "http", "containerPort": PROXY_PORT, "protocol": "TCP"}],
            "env": [
                {"name": "NBSERVE_PREDICT_TOKEN",
                 "valueFrom": {"secretKeyRef": {"name": plan.secret_name, "key": "token"}}},
                {"name": "NGINX_ENVSUBST_FILTER", "value": "^NBSERVE_"},  # only our variable is substituted
            ],
            "volumeMounts": [{"name": "auth-proxy", "mountPath": "/etc/nginx/templates", "readOnly": True}],
            "resources": {"requests": {"cpu": "50m", "memory": "32Mi"},
                          "limits": {"cpu": "500m", "memory": "128Mi"}},
            "readinessProbe": _probe("/readyz", PROXY_PORT, period=5, failures=3),
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
            "securityContext": {"runAsNonRoot": True, "runAsUser": AUTH_PROXY_UID,
                                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        })
        volumes.append({"name": "auth-proxy", "configMap": {"name": plan.proxy_config_name}})
    pod_spec: dict[str, Any] = {
        "containers": containers,
        "terminationGracePeriodSeconds": 60,
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": app_labels(plan)}}],
    }
    if volumes:
        pod_spec["volumes"] = volumes
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(plan, name, labels, release.annotations),
        "spec": {
            "replicas": release.replicas,
            "selector": {"matchLabels": selector},
            # a new pod takes traffic only once ready, and none is removed before (as the agent switches)
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels, "annotations": release.annotations},
                         "spec": pod_spec},
        },
    }


def service(plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(plan, plan.k8s_name, app_labels(plan),
                          {"nbserve/predict-auth": plan.predict_auth}),
        "spec": {
            "type": "ClusterIP",
            "selector": app_labels(plan),  # stable and canary pods alike
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(plan: Plan) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(plan, plan.k8s_name, app_labels(plan)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": plan.k8s_name},
            "minReplicas": plan.stable.replicas,
            "maxReplicas": plan.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": CPU_TARGET_PERCENT}}}],
        },
    }


NGINX_TEMPLATE = """\
# Rendered by the nginx image at start (envsubst): the token comes from the Secret (env NBSERVE_PREDICT_TOKEN).
# Every request but the health checks needs "Authorization: Bearer <token>"; the header is
# never passed to the model server (as on nbserve's stable URL).
server {
    listen PROXY_PORT;
    server_tokens off;
    client_max_body_size MAX_BODY;
    default_type application/json;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Authorization "";
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_read_timeout 300s;

    location = /readyz { proxy_pass http://127.0.0.1:PORT; }
    location = /livez { proxy_pass http://127.0.0.1:PORT; }

    location / {
        if ($http_authorization != "Bearer ${NBSERVE_PREDICT_TOKEN}") {
            return 401 '{"error": "a valid predict token is required", "hint": "send Authorization: Bearer <token>"}\\n';
        }
        proxy_pass http://127.0.0.1:PORT;
    }
}
"""


def proxy_config(plan: Plan) -> dict[str, Any]:
    text = (NGINX_TEMPLATE.replace("PROXY_PORT", str(PROXY_PORT)).replace("MAX_BODY", MAX_BODY)
            .replace(":PORT", f":{PORT}"))
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(plan, plan.proxy_config_name, app_labels(plan)),
            "data": {"default.conf.template": text}}


def network_policy(plan: Plan) -> dict[str, Any]:
    """Only the proxy's port is reachable from other pods; the model server's port stays
    within the pod (the kubelet's probes from the node are always allowed)."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(plan, plan.k8s_name, app_labels(plan)),
            "spec": {"podSelector": {"matchLabels": app_labels(plan)}, "policyTypes": ["Ingress"],
                     "ingress": [{"ports": [{"protocol": "TCP", "port": PROXY_PORT}]}]}}


def manifests(plan: Plan) -> list[dict[str, Any]]:
    """Every Kubernetes object of the plan, in the order ``kubectl apply`` should create them."""
    docs = []
    if plan.predict_auth == "token":
        docs.append(proxy_config(plan))
    docs.append(deployment(plan, plan.stable))
    if plan.canary is not None:
        docs.append(deployment(plan, plan.canary))
    docs.append(service(plan))
    docs.append(autoscaler(plan))
    if plan.predict_auth == "token":
        docs.append(network_policy(plan))
    return docs



def yaml_text(docs: list[dict[str, Any]]) -> str:
    import yaml  # PyYAML: a dependency of bentoml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # shared label dicts are written out, not as &anchors
            return True

    def text(dumper: yaml.SafeDumper, data: str) -> Any:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump_all(docs, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=1000)
