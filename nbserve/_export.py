"""Hand a deployment to an existing engine: Kubernetes manifests for a version's Bento.

nbserve does not grow a cluster. ``export_k8s`` (``nbserve export k8s``) reads a deployment
and its version(s) from an agent and writes, into one directory:

- ``<name>.yaml``: a Deployment (probes on ``/readyz`` and ``/livez``, resources from the
  deployment's ``memory``/``cpus``, ``workers`` as BentoML's ``services.<name>.workers``), a
  Service, a HorizontalPodAutoscaler, and for a canary a second Deployment behind the same
  Service; with ``predict_auth="token"`` also a token-checking proxy in each pod (its nginx
  configuration as a ConfigMap, the token from a Secret reference) and a NetworkPolicy that
  lets only that proxy's port be reached;
- ``secret.example.yaml``: the Secret the proxy reads, commented out (the user creates it);
- ``containerize.sh``: ``bentoml export``/``import`` to move the Bento to a build machine and
  ``bentoml containerize <tag> -t <image>``;
- ``README.txt``: the next steps and what is (and is not) enforced.

Nothing is applied to a cluster and nothing changes on the agent.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._k8s import (CPU_TARGET_PERCENT, PORT, PROXY_PORT, SERVICE_PORT, Plan, Release, k8s_name, manifests, resources,
                   yaml_text)
from ._service_template import BATCHING_ENV
from ._settings import workers_option
from .errors import InvalidArgument, NbserveError, VersionNotFound

__all__ = ["export_k8s", "register"]

PREDICT_AUTH = ("token", "open")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")


# -- the plan: what is exported, resolved from the agent ----------------------------------


@dataclass
class Export:
    """What ``export_k8s`` wrote, and what to do next."""

    plan: Plan
    paths: list[Path]
    next_steps: str


def _check_args(*, replicas: Any, max_replicas: Any, canary: Any, canary_version: Any, version: Any,
                namespace: Any, image: Any, registry: Any, predict_auth: Any) -> None:
    def whole(value: Any, what: str, hint: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgument(f"{what} must be a whole number of at least 1, not {value!r}", hint=hint)

    whole(replicas, "replicas", "e.g. --replicas 3 (Kubernetes pods of the version)")
    if max_replicas is not None:
        whole(max_replicas, "max_replicas", "the autoscaler's upper bound, e.g. --max-replicas 10")
        if max_replicas < replicas:
            raise InvalidArgument(f"max_replicas ({max_replicas}) is below replicas ({replicas})",
                                  hint="the autoscaler scales between --replicas and --max-replicas")
    for value, what in ((version, "version"), (canary_version, "canary_version")):
        if value is not None:
            whole(value, what, "a version number from `nbserve history NAME`")
    if canary is None and canary_version is not None:
        raise InvalidArgument("canary_version needs canary (the share of requests)",
                              hint="e.g. --canary 10 --canary-version 4")
    if canary is not None:
        if isinstance(canary, bool) or not isinstance(canary, (int, float)) or not 0 < canary < 100:
            raise InvalidArgument(f"canary must be a percent between 0 and 100 (exclusive), not {canary!r}",
                                  hint="e.g. --canary 10 --canary-version 4")
        if canary_version is None:
            raise InvalidArgument("a canary needs the version it sends requests to",
                                  hint="add --canary-version N (a version from `nbserve history NAME`)")
        if version is not None and canary_version == version:
            raise InvalidArgument(f"the canary version is the stable version (v{version})",
                                  hint="a canary runs a different version beside the stable one")
    if namespace is not None and (not isinstance(namespace, str) or not _DNS_LABEL.match(namespace)):
        raise InvalidArgument(f"invalid Kubernetes namespace {namespace!r}",
                              hint="lowercase letters, digits and '-', at most 63 characters")
    for value, what in ((image, "image"), (registry, "registry")):
        if value is not None and (not isinstance(value, str) or not _IMAGE.match(value)):
            raise InvalidArgument(f"invalid {what} {value!r}",
                                  hint="e.g. --registry ghcr.io/acme or --image ghcr.io/acme/churn:3")
    if image is not None and canary is not None:
        raise InvalidArgument("--image names one image, but a canary runs two versions",
                              hint="use --registry: each version's image is <registry>/<bento name>:<bento version>")
    if predict_auth not in PREDICT_AUTH:
        raise InvalidArgument(f"predict_auth must be 'token' or 'open', not {predict_auth!r}",
                              hint="token: a proxy in each pod checks the predict token; open: no check")


def _image_for(bento_tag: str, image: str | None, registry: str | None) -> str:
    if image:
        return image
    name, _, version = bento_tag.partition(":")
    plain = f"{name}:{version}" if version else name
    return f"{registry.rstrip('/')}/{plain}" if registry else plain


def _annotations(meta: dict[str, Any], exported_at: str, source: str) -> dict[str, str]:
    prov = meta.get("provenance") or {}
    git = prov.get("git") or {}
    model = meta.get("model") or {}
    found = {
        "nbserve/bento": meta.get("bento"),
        "nbserve/created-by": meta.get("created_by"),
        "nbserve/created-at": meta.get("created_at"),
        "nbserve/notebook": prov.get("notebook"),
        "nbserve/git-commit": (git.get("commit", "") + ("-dirty" if git.get("dirty") else "")) or None,
        "nbserve/model": model.get("class"),
        "nbserve/description": meta.get("description"),
        "nbserve/exported-at": exported_at,
        "nbserve/exported-from": source,
    }
    return {k: str(v)[:1000] for k, v in found.items() if v not in (None, "")}


def plan_k8s(name: str, *, version: int | None = None, replicas: int = 2, max_replicas: int | None = None,
             image: str | None = None, registry: str | None = None, namespace: str | None = None,
             canary: float | None = None, canary_version: int | None = None, predict_auth: str = "token",
             target: str | None = None) -> Plan:
    """Read the deployment and its version(s) from the agent; check every argument first."""
    from ._api import get

    _check_args(replicas=replicas, max_replicas=max_replicas, canary=canary, canary_version=canary_version,
                version=version, namespace=namespace, image=image, registry=registry,
                predict_auth=predict_auth)
    dep = get(name, target=target)  # DeploymentNotFound from the agent
    numbers = {v["number"]: v for v in dep.versions}

    def pick(number: int | None, what: str) -> dict[str, Any]:
        if number is None:
            raise InvalidArgument(f"{name} has no live version to export",
                                  hint="name one with --version N (see `nbserve history " + name + "`)")
        found = numbers.get(number)
        if found is None:
            known = ", ".join(f"v{n}" for n in sorted(numbers)) or "none"
            raise VersionNotFound(f"{name} has no version {number} ({what})", hint=f"versions: {known}")
        if found["status"] == "failed":
            raise InvalidArgument(f"{name} v{number} failed to serve ({found.get('error') or 'see its log'}); "
                                  "its image would fail the same way",
                                  hint="export a version that served: `nbserve history " + name + "`")
        return found

    stable_row = pick(version if version is not None else dep.version, "stable")
    canary_row = pick(canary_version, "canary") if canary is not None else None
    if canary_row is not None and canary_row["number"] == stable_row["number"]:
        raise InvalidArgument(f"the canary version is the stable version (v{stable_row['number']})",
                              hint="name another --version or --canary-version")
    config = dep._client.get(f"/v1/deployments/{name}/config")
    try:
        agent_home = dep._client.get("/v1/health").get("home")
    except NbserveError:  # only used for a hint in containerize.sh
        agent_home = None
    exported_at = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    source = target or "local"

    def release(row: dict[str, Any], count: int, track: str) -> Release:
        meta = dep.metadata(row["number"])
        return Release(number=row["number"], bento_tag=row["bento_tag"],
                       image=_image_for(row["bento_tag"], image, registry), replicas=count, track=track,
                       annotations=_annotations(meta, exported_at, source), packages=_resolved(meta))

    stable = release(stable_row, replicas, "stable")
    plan = Plan(
        deployment=name, k8s_name=k8s_name(name), namespace=namespace, stable=stable, canary=None,
        max_replicas=max_replicas or 3 * replicas, workers=int(config.get("workers") or 1),
        batching=config.get("batching"), memory=config.get("memory"), cpus=config.get("cpus"), predict_auth=predict_auth,
        agent_bentoml_home=str(Path(agent_home) / "bentoml") if agent_home else None,
        source=source, exported_at=exported_at,
    )
    if canary_row is not None:
        # A Service spreads requests over ready pods, so the canary's share is its share of
        # pods: the smallest count (at least 1) whose share is closest to the percent asked.
        count = max(1, round(replicas * canary / (100.0 - canary)))
        plan.canary = release(canary_row, count, "canary")
        share = plan.canary_share() or 0.0
        if abs(share - canary) >= 0.5:
            plan.notes.append(
                f"canary: {count} of {count + replicas} pods is {share:.0f}% of requests, not {canary:g}% "
                "(a Service splits by pod count; use more --replicas, or Argo Rollouts or a service mesh "
                "for exact weights)")
    if image is None and registry is None:
        plan.notes.append(f"image: {stable.image} has no registry; push it where the cluster can pull "
                          "(--registry REGISTRY), or load it into a local cluster (kind load docker-image)")
    if plan.memory is None or plan.cpus is None:
        plan.notes.append("resources: the deployment has no "
                          + " or ".join(x for x, v in (("memory", plan.memory), ("cpus", plan.cpus)) if v is None)
                          + f" cap; defaults per worker were used (`nbserve scale {name} --memory 1G --cpus 1` "
                            "sets them, then export again)")
    return plan


# -- files -----------------------------------------------------------------------------


def _ns(plan: Plan) -> str:
    return f" -n {plan.namespace}" if plan.namespace else ""


def _releases(plan: Plan) -> list[Release]:
    return [plan.stable] + ([plan.canary] if plan.canary else [])


def _manifest_text(plan: Plan) -> str:
    versions = " + ".join(f"v{r.number} ({r.bento_tag}, {r.track}, {r.replicas} pod(s))" for r in _releases(plan))
    head = [
        f"# nbserve deployment {plan.deployment!r}: {versions}",
        f"# exported from the {plan.source} agent at {plan.exported_at} by `nbserve export k8s`.",
        "# Build the image(s) with containerize.sh; see README.txt before `kubectl apply`.",
    ]
    return "\n".join(head) + "\n---\n" + yaml_text(manifests(plan))


def _secret_example(plan: Plan) -> str:
    meta = [f"#   name: {plan.secret_name}"] + ([f"#   namespace: {plan.namespace}"] if plan.namespace else [])
    return "\n".join([
        f"# The Secret the auth proxy of {plan.deployment!r} reads its predict token from.",
        "# Not applied by `kubectl apply -f " + plan.manifest_file + "`: create it yourself, either with",
        f"#   kubectl create secret generic {plan.secret_name}{_ns(plan)} --from-literal=token=\"$(cat TOKEN_FILE)\"",
        "# or by copying this file, uncommenting it and putting the token in (keep that copy out of git).",
        "# Any string of letters, digits, '-', '_' and '.' works (e.g. `openssl rand -hex 32 > TOKEN_FILE`);",
        "# nginx reads '$', '\"' or '\\' in it as syntax. A predict token its clients",
        "# already use on the nbserve host lets them keep it, e.g. one made with",
        f"#   nbserve token create {plan.deployment}-app --role predict --deployment {plan.deployment} "
        "--out TOKEN_FILE",
        "# The pods do not start until this Secret exists.",
        "#",
        "# apiVersion: v1",
        "# kind: Secret",
        "# metadata:",
        *meta,
        "# type: Opaque",
        "# stringData:",
        "#   token: PASTE-THE-TOKEN-HERE",
        "",
    ])


def _resolved(meta: dict[str, Any]) -> tuple[str, ...]:
    prov = meta.get("provenance") or {}
    return tuple(prov.get("resolved") or prov.get("packages") or ())


def _containerize_script(plan: Plan) -> str:
    lines = [
        "#!/usr/bin/env bash",
        f"# Build the container image(s) of nbserve deployment {plan.deployment!r} for {plan.manifest_file}.",
        "# Written by `nbserve export k8s`; needs bentoml and Docker (or another OCI builder) on this machine.",
        "#",
        "# The Bento lives in the nbserve agent's own BentoML store. On the agent's host, this script",
        "# exports it from there; on another build machine, copy the .bento archive(s) here first:",
    ]
    home = plan.agent_bentoml_home or "<NBSERVE_HOME>/bentoml"
    for r in _releases(plan):
        lines.append(f"#   (agent host) BENTOML_HOME={home} bentoml export {r.bento_tag} {_archive(r)}")
    lines += [
        "# Images are built for this machine's CPU; add --platform linux/amd64 when the cluster's differ.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        f"AGENT_BENTOML_HOME={_quote(home)}",
        "",
    ]
    for r in _releases(plan):
        archive = _archive(r)
        lines += [
            f"# v{r.number} ({r.track})",
            f"if ! bentoml get {r.bento_tag} >/dev/null 2>&1; then",
            f'  if [ ! -f {archive} ] && [ -d "$AGENT_BENTOML_HOME" ]; then',
            f'    BENTOML_HOME="$AGENT_BENTOML_HOME" bentoml export {r.bento_tag} {archive}',
            "  fi",
            f"  bentoml import {archive}",
            "fi",
            f"bentoml containerize {r.bento_tag} -t {r.image}",
        ]
        if "/" in r.image:
            lines.append(f"docker push {r.image}")
        else:
            lines.append(f"# push {r.image} to a registry the cluster pulls from, or: kind load docker-image {r.image}")
        lines.append("")
    return "\n".join(lines)


def _listed(packages: tuple[str, ...], shown: int = 6) -> str:
    return ", ".join(packages[:shown]) + (f" and {len(packages) - shown} more" if len(packages) > shown else "")


def _archive(release: Release) -> str:
    return release.bento_tag.replace(":", "-") + ".bento"


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _next_steps(plan: Plan) -> str:
    ns = _ns(plan)
    steps = ["1. Build the image(s): ./containerize.sh"]
    if plan.predict_auth == "token":
        steps.append(f"2. Create the predict token's Secret (see secret.example.yaml):\n"
                     f"     kubectl create secret generic {plan.secret_name}{ns} "
                     "--from-literal=token=\"$(cat TOKEN_FILE)\"")
    steps.append(f"{len(steps) + 1}. Apply: kubectl apply{ns} -f {plan.manifest_file}")
    auth = ' -H "Authorization: Bearer $(cat TOKEN_FILE)"' if plan.predict_auth == "token" else ""
    steps.append(f"{len(steps) + 1}. Call it: kubectl port-forward{ns} svc/{plan.k8s_name} 8080:{SERVICE_PORT}, then\n"
                 f"     curl -X POST http://127.0.0.1:8080/predict{auth} "
                 "-H 'content-type: application/json' -d '{\"data\": [...]}'")
    return "\n".join(steps)


def _readme(plan: Plan) -> str:
    r = plan.stable
    res = resources(plan)
    parts = [
        f"nbserve deployment {plan.deployment!r} as Kubernetes manifests",
        "=" * 60,
        f"Exported from the {plan.source} agent at {plan.exported_at}.",
        "",
        "Files",
        f"  {plan.manifest_file:<21}  every object, for `kubectl apply -f`",
        f"  {'containerize.sh':<21}  bentoml export/import and `bentoml containerize` for each version",
        *([f"  {'secret.example.yaml':<21}  the predict token's Secret, commented out (create it yourself)"]
          if plan.predict_auth == "token" else []),
        "",
        "What it runs",
        f"  v{r.number} ({r.bento_tag}) as Deployment {plan.k8s_name}: {r.replicas} pod(s), image {r.image}",
    ]
    if plan.canary:
        c = plan.canary
        parts += [
            f"  v{c.number} ({c.bento_tag}) as Deployment {plan.k8s_name}-canary: {c.replicas} pod(s), image {c.image}",
            f"  Both are behind Service {plan.k8s_name}, which spreads requests over ready pods, so the",
            f"  canary gets about {plan.canary_share():.0f}% of requests: its share of pods. The split is not",
            "  sticky, and the autoscaler scales only the stable Deployment, which dilutes the canary.",
            "  For exact weights use Argo Rollouts (setWeight steps) or a service mesh (Istio weights).",
            f"  Promote: export again with --version {c.number} and no canary, apply, and delete",
            f"  Deployment {plan.k8s_name}-canary. Abort: kubectl delete deployment {plan.k8s_name}-canary.",
        ]
    parts += [
        f"  Each pod: {plan.workers} BentoML worker(s) (BENTOML_CONFIG_OPTIONS {workers_option(plan.deployment, plan.workers)}),",
        *([f"  Adaptive batching as on the host: up to {plan.batching['max_batch_size']} rows within "
           f"{plan.batching['max_latency_ms']:g} ms ({BATCHING_ENV})."] if plan.batching else []),
        f"  requests cpu {res['requests']['cpu']} / memory {res['requests']['memory']}, "
        f"limits cpu {res['limits']['cpu']} / memory {res['limits']['memory']}"
        + (" (the deployment's caps)" if plan.memory and plan.cpus else " (defaults where no cap was set)") + ".",
        *[f"  v{x.number}'s image installs {len(x.packages)} packages at the versions it serves with here "
          f"has (its pins and what they need, as the kernel had them; the Bento's env/python/requirements.txt): "
          f"{_listed(x.packages)}" for x in _releases(plan) if x.packages],
        f"  Probes: readiness GET /readyz, liveness and startup GET /livez, on port {PORT}.",
        f"  HorizontalPodAutoscaler {plan.k8s_name}: {r.replicas}..{plan.max_replicas} pods at "
        f"{CPU_TARGET_PERCENT}% of the CPU request (needs metrics-server).",
        "",
        "Predict tokens: what is enforced",
        "  A Bento served by `bentoml serve` (what the image runs) checks no token: on the nbserve host,",
        "  the agent's stable URL does that, and it is not part of the image.",
    ]
    if plan.predict_auth == "token":
        parts += [
            f"  Here each pod also runs an nginx proxy (container auth-proxy, port {PROXY_PORT}) that answers 401",
            "  unless the request carries \"Authorization: Bearer <token>\" with the token from Secret",
            f"  {plan.secret_name} (key `token`), and strips that header before the model server. The",
            f"  Service points at the proxy; NetworkPolicy {plan.k8s_name} lets other pods reach only port",
            f"  {PROXY_PORT}, so port {PORT} is reachable from the pod itself and the node (probes) only, on",
            "  a network plugin that enforces NetworkPolicy. /readyz and /livez answer without a token.",
            "  The pods do not start until that Secret exists (secret.example.yaml).",
            "  It is one shared token: revoking an nbserve token on the agent does not reach the cluster,",
            "  and nginx compares it as a plain string (the agent compares in constant time; nginx does not).",
            f"  To rotate, change the Secret and `kubectl rollout restart{_ns(plan)} deployment/{plan.k8s_name}`.",
            "  Prometheus scraping /metrics needs the token too (or a NetworkPolicy rule for port 3000).",
            "  If an Ingress or gateway in front already checks tokens, export with --predict-auth open.",
        ]
    else:
        parts += [
            "  Exported with --predict-auth open: nothing checks a token. Enforce one in front of the",
            f"  Service (an Ingress or gateway with authentication) before exposing {plan.k8s_name}.",
        ]
    parts += [
        "",
        "What stays with nbserve",
        "  Versions, provenance, drift, history and the audit log stay with the nbserve agent: this",
        "  export is a copy of a version, labelled nbserve/version and annotated with its Bento and",
        "  provenance. Deploy new versions through nbserve, then export them again.",
        "",
    ]
    if plan.notes:
        parts += ["Notes"] + [f"  - {n}" for n in plan.notes] + [""]
    parts += ["Next steps", _next_steps(plan), ""]
    return "\n".join(parts)


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def _export_k8s(name: str, *, version: int | None = None, replicas: int = 2, max_replicas: int | None = None,
                out: str | Path = "deploy", image: str | None = None, registry: str | None = None,
                namespace: str | None = None, canary: float | None = None, canary_version: int | None = None,
                predict_auth: str = "token", target: str | None = None) -> Export:
    plan = plan_k8s(name, version=version, replicas=replicas, max_replicas=max_replicas, image=image,
                    registry=registry, namespace=namespace, canary=canary, canary_version=canary_version,
                    predict_auth=predict_auth, target=target)
    directory = Path(out).expanduser()
    if directory.exists() and not directory.is_dir():
        raise InvalidArgument(f"{directory} is a file, not a directory", hint="name a directory with --out")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        paths = [_write(directory / plan.manifest_file, _manifest_text(plan)),
                 _write(directory / "containerize.sh", _containerize_script(plan), 0o755)]
        if plan.predict_auth == "token":
            paths.append(_write(directory / "secret.example.yaml", _secret_example(plan)))
        else:
            (directory / "secret.example.yaml").unlink(missing_ok=True)  # from an earlier export
        paths.append(_write(directory / "README.txt", _readme(plan)))
    except OSError as exc:
        raise InvalidArgument(f"cannot write to {directory}: {exc.strerror or exc}",
                              hint="choose another --out directory") from None
    return Export(plan=plan, paths=paths, next_steps=_next_steps(plan))


def export_k8s(name: str, *, version: int | None = None, replicas: int = 2, max_replicas: int | None = None,
               out: str | Path = "deploy", image: str | None = None, registry: str | None = None,
               namespace: str | None = None, canary: float | None = None, canary_version: int | None = None,
               predict_auth: str = "token", target: str | None = None) -> list[Path]:
    """Write Kubernetes manifests for a version of deployment ``name``; return the files written.

    Args:
        name: the deployment (``DeploymentNotFound`` if the agent has none by that name).
        version: the version to run (default: the live one).
        replicas: pods of that version; the HorizontalPodAutoscaler's minimum.
        max_replicas: the autoscaler's maximum (default: 3 x replicas).
        out: the directory to write into (created; files of an earlier export are replaced).
        image: the container image (default: the Bento tag's ``name:version``, what
            ``bentoml containerize <tag>`` builds); not with a canary, which needs two.
        registry: prefix the default image names with a registry, e.g. ``ghcr.io/acme``.
        namespace: the Kubernetes namespace of every object (default: kubectl's current one).
        canary: percent of requests for ``canary_version``, run as a second Deployment behind
            the same Service; the split is by pod count (the README says what it came to).
        canary_version: the version the canary runs.
        predict_auth: ``"token"``: a proxy in each pod requires the token from Secret
            ``<name>-predict-token``; ``"open"``: no check (put authentication in front).
        target: the agent to read from (default: local).

    Nothing is applied to a cluster; containerize.sh and README.txt in ``out`` say what to run.
    """
    return _export_k8s(name, version=version, replicas=replicas, max_replicas=max_replicas, out=out, image=image,
                       registry=registry, namespace=namespace, canary=canary, canary_version=canary_version,
                       predict_auth=predict_auth, target=target).paths


# -- the command ---------------------------------------------------------------------------


def _cmd_export_k8s(args: argparse.Namespace) -> int:
    done = _export_k8s(args.name, version=args.version, replicas=args.replicas, max_replicas=args.max_replicas,
                       out=args.out, image=args.image, registry=args.registry, namespace=args.namespace,
                       canary=args.canary, canary_version=args.canary_version, predict_auth=args.predict_auth,
                       target=args.target)
    plan = done.plan
    what = f"v{plan.stable.number}" + (f" + canary v{plan.canary.number}" if plan.canary else "")
    print(f"{plan.deployment}: {what} exported to {Path(args.out)}/")
    for path in done.paths:
        print(f"  {path}")
    for note in plan.notes:
        print(f"note: {note}")
    print("\nNext steps (in " + str(Path(args.out)) + "/):\n" + done.next_steps)
    return 0


def add_export_arguments(parser: argparse.ArgumentParser, *, image: str) -> None:
    """What every ``nbserve export ENGINE`` takes: the deployment, its version, where to write,
    the image, the namespace and the agent (``--target``)."""
    parser.add_argument("name", help="deployment name")
    parser.add_argument("--version", type=int, default=None, help="version to export (default: live)")
    parser.add_argument("--out", default="deploy", help="directory to write (default: deploy)")
    parser.add_argument("--image", default=None, help=image)
    parser.add_argument("--registry", default=None, help="registry prefix for the default image, e.g. ghcr.io/acme")
    parser.add_argument("--namespace", default=None, help="Kubernetes namespace (default: kubectl's current)")
    parser.add_argument("--target", default=None, help="agent to read from (default: local)")


def register(sub: Any) -> Any:
    """``nbserve export k8s NAME ...``: the parser lives here; ``_cli.build_parser`` calls this
    and gives the engines' subparsers it returns to ``_export_ray.register``."""
    export = sub.add_parser("export", help="hand a deployment to another engine (Kubernetes, KubeRay)",
                            description="Write what another engine needs to serve a deployment's version.")
    engines = export.add_subparsers(dest="engine", required=True, metavar="ENGINE")
    k8s = engines.add_parser(
        "k8s", help="Kubernetes manifests, containerize script and README for a version's Bento",
        description="Kubernetes manifests (Deployment, Service, HorizontalPodAutoscaler, canary, token proxy) "
                    "for a version's Bento, plus containerize.sh and README.txt. Nothing is applied.")
    add_export_arguments(k8s, image="container image (default: the Bento tag's name:version)")
    k8s.add_argument("--replicas", type=int, default=2, help="pods of that version (default 2)")
    k8s.add_argument("--max-replicas", type=int, default=None,
                     help="the autoscaler's maximum (default: 3 x --replicas)")
    k8s.add_argument("--canary", type=float, default=None, metavar="PERCENT",
                     help="run --canary-version beside it on about this share of requests")
    k8s.add_argument("--canary-version", type=int, default=None, help="the canary's version")
    k8s.add_argument("--predict-auth", choices=list(PREDICT_AUTH), default="token",
                     help="token (default): a proxy in each pod checks the predict token; open: no check")
    k8s.set_defaults(func=_cmd_export_k8s)
    return engines
