"""The nbserve Python API: every front (magic, CLI, panel, scheduled runs) calls this.

``deploy`` bundles the model in this process and hands the Bento to an agent;
everything else is a call to the agent through :class:`AgentClient`.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from ._names import check_name
from ._display import Progress
from ._connection import actor, connect
from ._deployment import Deployment, version_warnings
from ._runtimes import DEFAULT_RUNTIME, check_runtime
from ._settings import ReleasePlan, engine_named, serving_body
from ._transport import AgentClient
from .errors import NbserveError, NbserveWarning

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Deployment", "connect", "deploy", "get", "deployments", "top"]


def deploy(
    model: Any,
    name: str,
    sample: Any,
    *,
    description: str | None = None,
    port: int | None = None,
    target: str | None = None,
    notebook: str | None = None,
    timeout: float = 300.0,
    progress: bool = True,
    canary: float | None = None,
    shadow: bool = False,
    auto_promote: bool = False,
    skip_parity: bool = False,
    sticky_header: str | None = None,
    intended_use: str | None = None,
    limitations: str | None = None,
    workers: int | None = None,
    memory: str | int | None = None,
    cpus: float | None = None,
    idle_timeout: str | None = None,
    batching: bool | None = None,
    max_batch_size: int | None = None,
    max_latency_ms: float | None = None,
    method: str | None = None,
    methods: list[str] | None = None,
    packages: list[str] | None = None,
    runtime: str = DEFAULT_RUNTIME,
    engine: str | None = None,
    replicas: int | None = None,
    autoscaling: dict[str, Any] | bool | None = None,
) -> Deployment:
    """Save ``model`` as a BentoML bundle and serve it as the next version of ``name``.

    Args:
        model: a fitted model (scikit-learn estimators and Pipelines, XGBoost, LightGBM
            Boosters, PyTorch modules, Hugging Face ``transformers`` pipelines, any picklable
            object with ``predict``), or a plain function or callable taking the input;
            classes and functions defined in the notebook (or in ``.py`` files beside it) are
            saved with it. New kinds of model: :mod:`nbserve.flavors`.
        name: the deployment; deploying the same name again makes the next version.
        sample: inputs the model takes, which fix the kind of input and its schema: a
            DataFrame (or 2-D array) of rows, a list/Series of strings (text), an N-D numeric
            array or a torch tensor (first axis the batch), a list of dicts (records) or of
            PIL images; kept (up to 10,000) as the reference for parity and drift. See
            docs/models.md.
        description: free text stored with the version.
        port: fix the stable URL's port on first deploy (default: a free port).
        target: where to deploy; ``None`` is the local agent, started on demand (or
            ``NBSERVE_TARGET``); a name from ``nbserve target add`` is a remote agent.
        notebook: the notebook path for provenance (found automatically in Jupyter).
        timeout: seconds to wait for the new version to pass its health check.
        progress: show the steps as they run.
        canary: send this percent of the stable URL's requests to the new version instead of
            making it live (sticky per client when ``sticky_header`` names a request header);
            ``dep.promote()``, ``dep.abort()``, ``dep.set_canary(50)``; the deployment's gates
            (``dep.gates(...)``) roll it back on their own when breached.
        shadow: mirror live traffic to the new version and compare its answers; users only
            ever get the live version's answers.
        auto_promote: promote the canary (or shadow) once the gates pass for their window.
        skip_parity: do not replay the reference sample through the new server before it
            takes traffic (the skip is recorded in the version's history).
        intended_use, limitations: free text for the model card, stored with the version.
        workers: BentoML worker processes behind the stable URL (``dep.scale`` changes it live).
        memory, cpus: caps on the server's processes ("1G", 1.5); enforced by cgroups where the
            host allows, else by a watchdog and CPU affinity (``nbserve top`` says which).
        idle_timeout: stop the servers after this long without requests ("15m"); the next
            request starts them again and is answered once ready (scale to zero).
        batching: BentoML's adaptive batching: concurrent requests are validated one by one,
            then merged into one model call of up to ``max_batch_size`` rows (default 100);
            a request waits at most ``max_latency_ms`` (default 60000) for its batch's answer,
            else it gets a 503 and the agent records a ``batch_overloaded`` warning. Giving
            either knob turns batching on. See docs/scaling.md for the trade-off.
        method: the model method ``/predict`` answers with: ``"predict"`` (default),
            ``"predict_proba"``, ``"transform"``, ``"decision_function"``, ``"__call__"`` or any
            public method; a named method is also served at its own path (``/transform``).
        methods: several methods, each at its own path, the first also at ``/predict``
            (default: ``predict``, plus ``predict_proba`` when the model has it).
        packages: exact pins (``["scikit-learn==1.5.2"]``) added to the ones found, or replacing
            the found pin of the same distribution. Each version runs with its pins: where the
            agent's own environment differs, it serves from an environment of its own, built
            once with uv (see docs/environments.md).
        runtime: ``"auto"`` (default) compiles the model to ONNX and serves it with onnxruntime
            when nbserve can (scikit-learn estimators and pipelines, LightGBM Boosters, PyTorch
            modules, with ``nbserve[fast]``) and the compiled model answers the sample as the
            model does; else it serves the model itself and says why (a ``runtime_fallback`` event). ``"onnx"``: compiled or the
            deploy fails with the reason; ``"native"``: never compiled. See docs/runtimes.md.
        engine: where this version runs: ``"local"`` (``bentoml serve`` on the agent's host),
            ``"shared"`` (a shared model server on the agent's host, many small models to a
            process, loaded on demand, docs/shared.md) or ``"ray"`` (a Ray Serve application on
            the agent's Ray cluster, docs/ray.md); default:
            the deployment's last choice, else the agent's. Kept by the version, so a canary on
            Ray can run beside a live version served locally.
        replicas: Ray's name for ``workers``: the version's replicas, spread over the nodes.
        autoscaling: Ray Serve's autoscaler for a Ray version: ``{"min": 0, "max": 8,
            "target_ongoing_requests": 4, "downscale_delay": "30s"}`` (any key left out keeps
            its default: 1, 4, 2, "10m"); with ``min`` 0 Ray stops every replica when idle and
            the next request waits for one to start.

    Returns the :class:`Deployment`, with the new version live (or under canary/shadow). If anything fails the
    previous version keeps serving and a typed ``nbserve.errors`` exception says why.
    """
    from ._bundle import build_bundle

    check_name(name)
    # a wrong option fails before anything is built
    ReleasePlan(canary=canary, shadow=shadow, auto_promote=auto_promote, skip_parity=skip_parity,
                sticky_header=sticky_header)
    check_runtime(runtime)  # before connect(): a wrong runtime starts no agent
    serving = serving_body(workers=workers, memory=memory, cpus=cpus, idle_timeout=idle_timeout,
                           batching=batching, max_batch_size=max_batch_size, max_latency_ms=max_latency_ms,
                           replicas=replicas, autoscaling=autoscaling)
    if engine is not None:
        serving["engine"] = engine_named(engine)
    show = Progress(f"Deploying {name}", enabled=progress)
    try:
        show.step("checking")
        client = connect(target)
        try:
            bundle = build_bundle(
                model, name=name, sample=sample, description=description, notebook=notebook,
                on_step=lambda key, detail: show.step(key, detail),
                card={"intended_use": intended_use, "limitations": limitations},
                method=method, methods=methods, packages=packages, runtime=runtime,
            )
        except NbserveError as exc:
            _report(client, name, f"the bundle was not built: {exc.message}")
            raise
        try:
            show.step("uploading", bundle.bento_tag)
            upload_id = upload_archive(client, bundle.archive, progress=progress)
            version = client.post(
                f"/v1/deployments/{name}/versions",
                json={"upload_id": upload_id, "stable_port": port, "actor": actor(),
                      "canary": canary, "shadow": shadow, "auto_promote": auto_promote,
                      "skip_parity": skip_parity, "sticky_header": sticky_header,
                      "serving": serving or None},
                timeout=max(60.0, timeout),
            )
        finally:
            bundle.cleanup()
        dep = Deployment(client, {"name": name, "url": None, "status": "starting", "live_version": None,
                                  "versions": []})
        show.step("starting")
        dep.wait_for_version(version["number"], timeout=timeout, progress=show)
        rollout = dep._data.get("rollout")
        if rollout and rollout.get("version") == version["number"]:
            share = f"{rollout['percent']:g}% of requests" if rollout["mode"] == "canary" else "mirrored traffic"
            show.step("live", f"v{rollout['version']} is a {rollout['mode']} on {share}; v{dep.version} stays live "
                      f"at {dep.url}")
        else:
            show.step("live", f"{dep.url} (v{dep.version})")
        for message in version_warnings(client, name, version["number"]):
            show.warn(message)
            warnings.warn(message, NbserveWarning, stacklevel=2)
        show.finish(True)
        return dep
    except NbserveError as exc:
        show.finish(False, exc.message)
        raise


UPLOAD_CHUNK = 1 << 20


def upload_archive(client: AgentClient, archive: Any, *, progress: bool = True) -> str:
    """Stream a Bento archive to the agent with its size and SHA-256; return its upload id.

    Memory stays at one chunk on this side: the file is read twice (digest, then body)
    rather than held. Archives over 8 MiB show a progress bar (a widget in notebooks)."""
    import hashlib
    from pathlib import Path

    path = Path(archive)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(UPLOAD_CHUNK):
            digest.update(chunk)
    bar = None
    if progress and size >= 8 * UPLOAD_CHUNK:
        from tqdm.auto import tqdm

        bar = tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"uploading {path.name}")

    def chunks() -> Any:
        with path.open("rb") as handle:
            while chunk := handle.read(UPLOAD_CHUNK):
                if bar is not None:
                    bar.update(len(chunk))
                yield chunk

    try:
        answer = client.upload(
            "/v1/uploads", chunks(), timeout=300.0,
            headers={"content-type": "application/octet-stream", "content-length": str(size),
                     "x-nbserve-sha256": digest.hexdigest()},
        )
    finally:
        if bar is not None:
            bar.close()
    return answer["upload_id"]


def _report(client: AgentClient, name: str, message: str) -> None:
    """Record a client-side failure in the agent's history; never hide the real error."""
    try:
        client.post(f"/v1/deployments/{name}/events",
                    json={"kind": "build_failed", "message": message[:4000], "actor": actor()})
    except NbserveError:
        pass


def get(name: str, *, target: str | None = None, start: bool = True) -> Deployment:
    """The deployment called ``name`` (``DeploymentNotFound`` if there is none)."""
    client = connect(target, start=start)
    return Deployment(client, client.get(f"/v1/deployments/{name}"))


def top(*, target: str | None = None, start: bool = True) -> "pd.DataFrame":
    """Every deployment now: warm or cold, servers and workers, CPU %, RSS, caps and how they
    are enforced, seconds since the last request (what ``nbserve top`` shows). ``start=False``:
    do not start a local agent to ask."""
    import pandas as pd

    frame = pd.DataFrame(connect(target, start=start).get("/v1/resources"))
    return frame.set_index("deployment") if not frame.empty else frame


def deployments(*, target: str | None = None, start: bool = True) -> list[Deployment]:
    """Every deployment on the target (``start=False``: do not start a local agent to ask)."""
    client = connect(target, start=start)
    return [Deployment(client, data) for data in client.get("/v1/deployments")]
