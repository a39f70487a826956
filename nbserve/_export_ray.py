"""Hand a deployment's version to Ray Serve on Kubernetes: a KubeRay ``RayService``.

``nbserve export ray NAME`` (``export_ray``) reads the deployment from an agent, as ``export
k8s`` does, and writes into one directory:

- ``<name>-rayservice.yaml``: a ``RayService`` (``ray.io/v1``) whose ``serveConfigV2`` runs the
  version as the agent's Ray engine does (one application, one deployment ``v<N>``, each
  replica loading the Bento with ``nbserve_ray_replica:build_app``; replicas or Ray Serve's
  autoscaler from the deployment's settings; its caps as each replica's reservation), on a
  Ray cluster of a head (no replicas on it) and a worker group sized for the replicas;
- ``Dockerfile``, ``requirements.txt``, ``nbserve_ray_replica.py``: the image every pod runs,
  Ray's own image with the version's pinned packages and its Bento in ``/opt/bentoml``;
- ``build.sh``: ``bentoml export`` of the Bento, ``docker build`` (and push);
- ``README.txt``: the next steps, and what stays behind on the agent.

Nothing is applied to a cluster and nothing changes on the agent.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._export import add_export_arguments, plan_k8s
from ._k8s import Plan, resources, yaml_text
from ._ray_config import (MAX_ONGOING, REPLICA_IMPORT_PATH, actor_options, deployment_name, ray_autoscaling,
                          replica_env)
from .errors import InvalidArgument

__all__ = ["export_ray", "register"]

IMAGE_BENTOML_HOME = "/opt/bentoml"
IMAGE_CODE_DIR = "/opt/nbserve"
DEFAULT_RAY_VERSION = "2.60.0"
SERVE_PORT = 8000  # Ray Serve's HTTP port in every pod; KubeRay's <name>-serve-svc points at it


@dataclass
class RayExport:
    plan: Plan
    ray_version: str
    python: str  # "3.11": the image's Python, the version's own
    autoscaling: dict[str, Any] | None
    paths: list[Path]

    @property
    def manifest_file(self) -> str:
        return f"{self.plan.k8s_name}-rayservice.yaml"


def _ray_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:  # exporting needs no Ray here: the image brings its own
        return DEFAULT_RAY_VERSION


def serve_config(plan: Plan, autoscaling: dict[str, Any] | None) -> dict[str, Any]:
    """The ``serveConfigV2`` (Ray Serve's multi-application config) of the exported version."""
    release = plan.stable
    name = deployment_name(release.number)
    count: dict[str, Any] = ({"autoscaling_config": ray_autoscaling(autoscaling)} if autoscaling
                             else {"num_replicas": release.replicas})
    options = actor_options(plan.memory, plan.cpus, replica_env(release.number, plan.batching, IMAGE_BENTOML_HOME))
    runtime_env = options.pop("runtime_env")
    return {"applications": [{
        "name": plan.k8s_name, "route_prefix": "/", "import_path": REPLICA_IMPORT_PATH,
        "args": {"bento_tag": release.bento_tag, "name": name},
        "runtime_env": runtime_env,
        "deployments": [{"name": name, **count, "max_ongoing_requests": MAX_ONGOING,
                         "ray_actor_options": options}],
    }]}


def rayservice(export: RayExport) -> dict[str, Any]:
    plan, release = export.plan, export.plan.stable
    most = export.autoscaling["max"] if export.autoscaling else release.replicas
    fewest = max(export.autoscaling["min"], 1) if export.autoscaling else release.replicas

    def container(role: str, ports: list[tuple[str, int]]) -> dict[str, Any]:
        return {"name": f"ray-{role}", "image": release.image, "resources": resources(plan),
                "ports": [{"name": n, "containerPort": p} for n, p in ports]}

    meta: dict[str, Any] = {"name": plan.k8s_name}
    if plan.namespace:
        meta["namespace"] = plan.namespace
    meta["labels"] = {"app.kubernetes.io/name": plan.k8s_name, "nbserve/deployment": plan.deployment,
                      "nbserve/version": str(release.number)}
    meta["annotations"] = release.annotations
    cluster: dict[str, Any] = {
        "rayVersion": export.ray_version,
        # the head holds the cluster (GCS, Serve's controller), never a replica: a lost worker pod
        # costs its replicas only, which Ray starts again on the others
        "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}, "template": {"spec": {"containers": [
            container("head", [("gcs-server", 6379), ("dashboard", 8265), ("client", 10001),
                               ("serve", SERVE_PORT)])]}}},
        "workerGroupSpecs": [{
            "groupName": "replicas", "replicas": fewest, "minReplicas": fewest, "maxReplicas": max(most, fewest),
            "rayStartParams": {}, "template": {"spec": {"containers": [container("worker", [("serve", SERVE_PORT)])]}},
        }],
    }
    if export.autoscaling:
        cluster["enableInTreeAutoscaling"] = True  # pods follow the replicas Serve's autoscaler asks for
    return {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": meta,
            "spec": {"serveConfigV2": yaml_text([serve_config(plan, export.autoscaling)]),
                     "rayClusterConfig": cluster}}


def _dockerfile(export: RayExport) -> str:
    release = export.plan.stable
    archive = _archive(release.bento_tag)
    return "\n".join([
        f"# The image of nbserve deployment {export.plan.deployment!r} v{release.number} on Ray Serve "
        "(written by `nbserve export ray`).",
        f"FROM rayproject/ray:{export.ray_version}-py{export.python.replace('.', '')}",
        "# the version's packages at the versions it serves with on the agent",
        "COPY requirements.txt /tmp/nbserve-requirements.txt",
        "RUN pip install --no-cache-dir -r /tmp/nbserve-requirements.txt",
        f"ENV BENTOML_HOME={IMAGE_BENTOML_HOME} BENTOML_DO_NOT_TRACK=true PYTHONPATH={IMAGE_CODE_DIR}",
        f"COPY {archive} /tmp/{archive}",
        f"RUN bentoml import /tmp/{archive} && rm /tmp/{archive}",
        f"COPY nbserve_ray_replica.py {IMAGE_CODE_DIR}/nbserve_ray_replica.py",
        "",
    ])


def _requirements(plan: Plan) -> str:
    # Ray comes with the base image; a pin of it here would fight the image's own
    pins = [p for p in plan.stable.packages if not p.lower().startswith(("ray==", "ray["))]
    return "\n".join(pins) + "\n"


def _archive(bento_tag: str) -> str:
    return bento_tag.replace(":", "-") + ".bento"


def _build_script(export: RayExport) -> str:
    release, home = export.plan.stable, export.plan.agent_bentoml_home or "<NBSERVE_HOME>/bentoml"
    archive = _archive(release.bento_tag)
    push = (f"docker push {release.image}" if "/" in release.image
            else f"# push {release.image} to a registry the cluster pulls from, or: kind load docker-image {release.image}")
    return "\n".join([
        "#!/usr/bin/env bash",
        f"# Build the image of {export.manifest_file}: needs bentoml and Docker (or another OCI builder).",
        f"# On another machine than the agent's, copy {archive} here first:",
        f"#   (agent host) BENTOML_HOME={home} bentoml export {release.bento_tag} {archive}",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        f"if [ ! -f {archive} ]; then BENTOML_HOME={home!r} bentoml export {release.bento_tag} {archive}; fi",
        f"docker build -t {release.image} .",
        push,
        "",
    ])


def _readme(export: RayExport) -> str:
    plan, release = export.plan, export.plan.stable
    ns = f" -n {plan.namespace}" if plan.namespace else ""
    count = (f"Ray Serve's autoscaler: {export.autoscaling['min']} to {export.autoscaling['max']} replicas, "
             f"aiming at {export.autoscaling['target_ongoing_requests']:g} requests in flight each"
             if export.autoscaling else f"{release.replicas} replica(s)")
    return "\n".join([
        f"nbserve deployment {plan.deployment!r} v{release.number} as a KubeRay RayService",
        "=" * 60,
        f"Exported from the {plan.source} agent at {plan.exported_at}.",
        "",
        "Files",
        f"  {export.manifest_file:<28}  the RayService, for `kubectl apply -f` (needs the KubeRay operator)",
        f"  {'Dockerfile':<28}  Ray {export.ray_version} (Python {export.python}) + the version's packages + its Bento",
        f"  {'requirements.txt':<28}  the {len(release.packages)} packages it serves with on the agent",
        f"  {'nbserve_ray_replica.py':<28}  what each replica runs: the Bento's own BentoML service",
        f"  {'build.sh':<28}  bentoml export of the Bento, docker build (and push)",
        "",
        "What runs",
        f"  One Serve application, {plan.k8s_name}, with one deployment {deployment_name(release.number)}: {count}.",
        "  Each replica answers what the version answers on the agent: /predict, its other methods,",
        "  /schema, the Open Inference (V2), MLflow and OpenAI routes, the same 4xx for bad input.",
        "",
        "Next steps",
        "  1. ./build.sh",
        f"  2. kubectl apply{ns} -f {export.manifest_file}",
        f"  3. kubectl port-forward{ns} svc/{plan.k8s_name}-serve-svc 8000:{SERVE_PORT}, then",
        "     curl -X POST http://127.0.0.1:8000/predict -H 'content-type: application/json' -d '{\"data\": [...]}'",
        "",
        "What stays on the agent",
        "  Canary and shadow splits, gates, parity replay, request capture, drift, predict tokens and the",
        "  audit log are the agent's; this RayService serves one version, open: put authentication in",
        "  front of it (an ingress, a service mesh), and roll out a new version by exporting it and",
        "  applying again (KubeRay upgrades the RayService without dropping requests).",
        *(["", "Notes", *(f"  - {n}" for n in plan.notes)] if plan.notes else []),
        "",
    ])


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def export_ray(name: str, *, version: int | None = None, replicas: int | None = None, out: str | Path = "deploy",
               image: str | None = None, registry: str | None = None, namespace: str | None = None,
               target: str | None = None) -> list[Path]:
    """Write a KubeRay ``RayService`` for a version of deployment ``name``; return the files written.

    Args:
        name: the deployment (``DeploymentNotFound`` if the agent has none by that name).
        version: the version to run (default: the live one).
        replicas: Serve replicas (default: the deployment's ``workers``); with the deployment's
            ``autoscaling`` set, Ray Serve's autoscaler chooses within its bounds instead.
        out: the directory to write into (created; files of an earlier export are replaced).
        image: the image every pod runs (default: the Bento tag's ``name:version``, with
            ``-ray`` appended to the name).
        registry: prefix the default image name with a registry, e.g. ``ghcr.io/acme``.
        namespace: the Kubernetes namespace (default: kubectl's current one).
        target: the agent to read from (default: local).

    Nothing is applied to a cluster; build.sh and README.txt in ``out`` say what to run.
    """
    if replicas is not None and (isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1):
        raise InvalidArgument(f"replicas must be a whole number of at least 1, not {replicas!r}",
                              hint="e.g. --replicas 2")
    plan = plan_k8s(name, version=version, replicas=replicas or 1, image=image, registry=registry,
                    namespace=namespace, predict_auth="open", target=target)
    from ._api import get

    dep = get(name, target=target)
    config = dep._client.get(f"/v1/deployments/{name}/config")
    if replicas is None:
        plan.stable.replicas = int(config.get("workers") or 1)
    if image is None:  # not the image `bentoml containerize` makes of the same tag
        repo, _, tag = plan.stable.image.rpartition(":")
        plan.stable.image = f"{repo}-ray:{tag}"
    plan.notes = [n for n in plan.notes if not n.startswith("resources:")] + (
        [] if plan.memory and plan.cpus else
        ["resources: without a memory and a CPU cap on the deployment, each pod asks for defaults and each "
         f"replica reserves no CPU (`nbserve scale {name} --memory 1G --cpus 1` sets them; export again)"])
    meta = dep.metadata(plan.stable.number)
    python = ".".join(str((meta.get("provenance") or {}).get("python") or "3.11").split(".")[:2])
    export = RayExport(plan, _ray_version(), python, config.get("autoscaling"), [])
    directory = Path(out).expanduser()
    if directory.exists() and not directory.is_dir():
        raise InvalidArgument(f"{directory} is a file, not a directory", hint="name a directory with --out")
    replica_code = (Path(__file__).with_name("_ray_replica.py")).read_text()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        export.paths = [
            _write(directory / export.manifest_file, yaml_text([rayservice(export)])),
            _write(directory / "Dockerfile", _dockerfile(export)),
            _write(directory / "requirements.txt", _requirements(plan)),
            _write(directory / "nbserve_ray_replica.py", replica_code),
            _write(directory / "build.sh", _build_script(export), 0o755),
            _write(directory / "README.txt", _readme(export)),
        ]
    except OSError as exc:
        raise InvalidArgument(f"cannot write to {directory}: {exc.strerror or exc}",
                              hint="choose another --out directory") from None
    return export.paths


def _cmd_export_ray(args: argparse.Namespace) -> int:
    paths = export_ray(args.name, version=args.version, replicas=args.replicas, out=args.out, image=args.image,
                       registry=args.registry, namespace=args.namespace, target=args.target)
    print(f"{args.name}: exported to {Path(args.out)}/ as a KubeRay RayService")
    for path in paths:
        print(f"  {path}")
    print(f"\nNext steps: see {Path(args.out) / 'README.txt'} (./build.sh, then kubectl apply -f {paths[0].name})")
    return 0


def register(engines: Any) -> None:
    """``nbserve export ray NAME ...``, beside ``export k8s``."""
    ray = engines.add_parser(
        "ray", help="a KubeRay RayService, its image's Dockerfile and README for a version",
        description="A KubeRay RayService that serves a version on Ray Serve as the agent's Ray engine does, "
                    "the Dockerfile of its image, build.sh and README.txt. Nothing is applied.")
    add_export_arguments(ray, image="image of every pod (default: the Bento tag's name-ray:version)")
    ray.add_argument("--replicas", type=int, default=None,
                     help="Serve replicas (default: the deployment's workers; its autoscaling when set)")
    ray.set_defaults(func=_cmd_export_ray)
