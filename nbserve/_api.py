"""The nbserve Python API: every front (magic, CLI, panel, scheduled runs) calls this.

``deploy`` bundles the model in this process and hands the Bento to an agent;
everything else is a call to the agent through :class:`AgentClient`.
"""

from __future__ import annotations

import getpass
import json
import time
from typing import TYPE_CHECKING, Any

from ._config import Home
from ._names import check_name
from ._display import Progress, deployment_html, deployment_text
from ._transport import AgentClient
from .errors import DeployFailed, InvalidArgument, NbserveError, PredictionFailed, SchemaMismatch

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["Deployment", "connect", "deploy", "get", "deployments"]

_clients: dict[str, AgentClient] = {}


def connect(target: str | None = None) -> AgentClient:
    """The client for a target: ``None``/``"local"`` starts the local agent on demand."""
    if target not in (None, "local"):
        raise InvalidArgument(
            f"unknown target {target!r}",
            hint="only the local target exists yet; remote targets come with `nbserve target add`",
        )
    from ._local import start_agent

    home = Home.resolve()
    key = f"local:{home.root}"
    client = _clients.get(key)
    if client is not None:
        try:
            client.get("/v1/health")
            return client
        except NbserveError:
            client.close()
            del _clients[key]
    info = start_agent(home)
    client = AgentClient(info.url, info.token, name="local")
    _clients[key] = client
    return client


def _actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001
        return "unknown"


class Deployment:
    """A named deployment on an agent: its stable URL, versions and controls.

    Attributes are a snapshot; :meth:`refresh` reloads them. Methods act on the agent.
    """

    def __init__(self, client: AgentClient, data: dict[str, Any]) -> None:
        self._client = client
        self._data = data
        self._http: Any = None

    # -- state ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._data["name"]

    @property
    def url(self) -> str:
        """The stable URL: a BentoML service base URL that always points at the live version."""
        return self._data["url"]

    @property
    def version(self) -> int | None:
        """The live version number."""
        return self._data["live_version"]

    @property
    def status(self) -> str:
        return self._data["status"]

    @property
    def versions(self) -> list[dict[str, Any]]:
        return list(self._data["versions"])

    @property
    def schema(self) -> dict[str, Any]:
        live = next((v for v in self.versions if v["number"] == self.version), None)
        return (live or {}).get("metadata", {}).get("schema", {})

    def refresh(self) -> "Deployment":
        self._data = self._client.get(f"/v1/deployments/{self.name}")
        return self

    # -- calling it -----------------------------------------------------------------

    def predict(self, data: Any, *, endpoint: str = "predict", timeout: float = 60.0) -> "np.ndarray":
        """POST rows to the stable URL and return the predictions as an array.

        ``data`` is a DataFrame, a list of row dicts, or a 2-D array for models deployed
        from arrays. A request that does not match the schema raises ``SchemaMismatch``.
        """
        import httpx
        import numpy as np

        body = '{"data": ' + _records_json(data) + "}"
        if self._http is None:
            self._http = httpx.Client(timeout=timeout, trust_env=False)
        try:
            response = self._http.post(
                f"{self.url}/{endpoint}", content=body, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise PredictionFailed(f"cannot reach {self.url}: {exc}", hint="check `nbserve list`") from None
        try:
            payload = response.json()
        except ValueError:
            payload = response.text
        if response.status_code == 422:
            raise SchemaMismatch(payload.get("error", str(payload)) if isinstance(payload, dict) else str(payload),
                                 hint=f"expected columns: {[c['name'] for c in self.schema.get('columns', [])]}",
                                 **(payload if isinstance(payload, dict) else {}))
        if response.status_code >= 400:
            message = payload.get("error") if isinstance(payload, dict) else payload
            if isinstance(message, dict):
                message = message.get("message")
            raise PredictionFailed(f"{self.url}/{endpoint} answered {response.status_code}: {message}",
                                   hint=f"see dep.logs() or `nbserve logs {self.name}`")
        return np.asarray(payload)

    # -- history and control --------------------------------------------------------

    def history(self) -> "pd.DataFrame":
        """One row per version: number, status, when, who, notebook and cell, Bento."""
        import pandas as pd

        self.refresh()
        rows = []
        for v in self.versions:
            meta = v.get("metadata", {})
            prov = meta.get("provenance", {})
            rows.append({
                "version": v["number"],
                "status": v["status"],
                "live": v["number"] == self.version,
                "created_at": pd.Timestamp(v["created_at"]),
                "created_by": v.get("created_by"),
                "model": (meta.get("model") or {}).get("class"),
                "notebook": prov.get("notebook"),
                "cell": prov.get("cell_execution_count"),
                "cell_sha256": (prov.get("cell_sha256") or "")[:12] or None,
                "description": meta.get("description"),
                "bento": v["bento_tag"],
                "error": v.get("error"),
            })
        return pd.DataFrame(rows).set_index("version") if rows else pd.DataFrame()

    def events(self, limit: int = 200) -> "pd.DataFrame":
        import pandas as pd

        events = self._client.get(f"/v1/deployments/{self.name}/events", params={"limit": limit})
        frame = pd.DataFrame(events)
        if not frame.empty:
            frame["ts"] = pd.to_datetime(frame["ts"])
        return frame

    def rollback(self, to: int | None = None) -> "Deployment":
        """Point the stable URL at version ``to`` (default: the one before the live one)."""
        self._data = self._client.post(
            f"/v1/deployments/{self.name}/rollback", json={"to": to, "actor": _actor()}
        )
        return self

    def stop(self) -> "Deployment":
        """Stop every serving process; the stable URL stays and answers 503 until started."""
        self._data = self._client.post(f"/v1/deployments/{self.name}/stop", json={"actor": _actor()})
        return self

    def start(self) -> "Deployment":
        self._data = self._client.post(f"/v1/deployments/{self.name}/start", json={"actor": _actor()})
        return self

    def logs(self, version: int | None = None, lines: int = 200) -> str:
        params: dict[str, Any] = {"lines": lines}
        if version is not None:
            params["version"] = version
        return self._client.get(f"/v1/deployments/{self.name}/logs", params=params)["text"]

    def wait_for_version(self, number: int, *, timeout: float = 300.0, progress: Progress | None = None) -> "Deployment":
        """Wait until version ``number`` is live (return) or failed (raise ``DeployFailed``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self._client.get(f"/v1/deployments/{self.name}/versions/{number}")
            if v["status"] == "live":
                return self.refresh()
            if v["status"] == "failed":
                raise DeployFailed(
                    v.get("error") or f"v{number} failed",
                    hint=f"the previous version keeps serving; see `nbserve logs {self.name} --version {number}`",
                    version=number,
                )
            if v["status"] != "starting":
                return self.refresh()  # superseded by a rollback or a later deploy
            if progress is not None:
                progress.step("health" if v["running"] else "starting",
                              v.get("upstream_url") if v["running"] else None)
            time.sleep(0.05)
        raise DeployFailed(f"v{number} was not live after {timeout:.0f} s",
                           hint=f"see `nbserve logs {self.name} --version {number}`")

    # -- display --------------------------------------------------------------------

    def _repr_html_(self) -> str:
        return deployment_html(self._data)

    def __repr__(self) -> str:
        return deployment_text(self._data)


def _records_json(data: Any) -> str:
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.Series):
        data = data.to_frame().T
    if isinstance(data, pd.DataFrame):
        return data.to_json(orient="records", date_format="iso")
    if isinstance(data, np.ndarray):
        return json.dumps(data.tolist())
    if isinstance(data, dict):
        data = [data]
    return json.dumps(data, default=str)


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
) -> Deployment:
    """Save ``model`` as a BentoML bundle and serve it as the next version of ``name``.

    Args:
        model: a fitted model with ``predict`` (scikit-learn estimators and Pipelines,
            XGBoost, LightGBM Boosters, PyTorch modules, or any picklable object).
        name: the deployment; deploying the same name again makes the next version.
        sample: rows of input data (DataFrame or 2-D array); it fixes the input schema and
            is kept (up to 10,000 rows) as the reference for drift.
        description: free text stored with the version.
        port: fix the stable URL's port on first deploy (default: a free port).
        target: where to deploy; ``None`` is the local agent, started on demand.
        notebook: the notebook path for provenance (found automatically in Jupyter).
        timeout: seconds to wait for the new version to pass its health check.
        progress: show the steps as they run.

    Returns the :class:`Deployment`, with the new version live. If anything fails the
    previous version keeps serving and a typed ``nbserve.errors`` exception says why.
    """
    from ._bundle import build_bundle

    check_name(name)
    show = Progress(f"Deploying {name}", enabled=progress)
    try:
        show.step("checking")
        client = connect(target)
        try:
            bundle = build_bundle(
                model, name=name, sample=sample, description=description, notebook=notebook,
                on_step=lambda key, detail: show.step(key, detail),
            )
        except NbserveError as exc:
            _report(client, name, f"the bundle was not built: {exc.message}")
            raise
        try:
            show.step("uploading", bundle.bento_tag)
            version = client.post(
                f"/v1/deployments/{name}/versions",
                json={"archive_path": str(bundle.archive), "stable_port": port, "actor": _actor()},
                timeout=max(60.0, timeout),
            )
        finally:
            bundle.cleanup()
        dep = Deployment(client, {"name": name, "url": None, "status": "starting", "live_version": None,
                                  "versions": []})
        show.step("starting")
        dep.wait_for_version(version["number"], timeout=timeout, progress=show)
        show.step("live", f"{dep.url} (v{dep.version})")
        show.finish(True)
        return dep
    except NbserveError as exc:
        show.finish(False, exc.message)
        raise


def _report(client: AgentClient, name: str, message: str) -> None:
    """Record a client-side failure in the agent's history; never hide the real error."""
    try:
        client.post(f"/v1/deployments/{name}/events",
                    json={"kind": "build_failed", "message": message[:4000], "actor": _actor()})
    except NbserveError:
        pass


def get(name: str, *, target: str | None = None) -> Deployment:
    """The deployment called ``name`` (``DeploymentNotFound`` if there is none)."""
    client = connect(target)
    return Deployment(client, client.get(f"/v1/deployments/{name}"))


def deployments(*, target: str | None = None) -> list[Deployment]:
    """Every deployment on the target."""
    client = connect(target)
    return [Deployment(client, data) for data in client.get("/v1/deployments")]
