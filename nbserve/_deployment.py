"""A deployment on an agent, as the Python API hands it out: its stable URL, versions, controls,
predictions and what it has seen. Every method is a call to the agent through :class:`AgentClient`.

One room on purpose (over 600 lines): it is the one public class users hold, and each method is a
thin call; splitting it would scatter its documentation (``help(dep)``) across modules."""

from __future__ import annotations

import json
import time
import warnings
from typing import TYPE_CHECKING, Any

from ._display import Progress, deployment_html, deployment_text
from ._connection import actor
from ._events import SAID_AT_DEPLOY
from ._history import version_rows
from ._settings import engine_named, serving_body
from ._transport import AgentClient
from .errors import (
    DeployFailed,
    InvalidArgument,
    NbserveWarning,
    PredictionFailed,
    SchemaMismatch,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Deployment"]

# A rollback or start may cold-start a server from its Bento; a stop drains in-flight requests.
CHANGE_TIMEOUT = 300.0


class Deployment:
    """A named deployment on an agent: its stable URL, versions and controls.

    Attributes are a snapshot; :meth:`refresh` reloads them. Methods act on the agent.
    """

    def __init__(self, client: AgentClient, data: dict[str, Any]) -> None:
        self._client = client
        self._data = data
        self._http: Any = None
        self.last_request_id: str | None = None

    # -- state ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The deployment's name."""
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
        """serving, starting, restarting, failed, stopped or cold (scaled to zero)."""
        return self._data["status"]

    @property
    def versions(self) -> list[dict[str, Any]]:
        """Every version: number, status, created_at/by, bento_tag, running, ready, metadata."""
        return list(self._data["versions"])

    @property
    def schema(self) -> dict[str, Any]:
        """The live version's input schema: columns (name, dtype, kind) and ``positional``."""
        live = next((v for v in self.versions if v["number"] == self.version), None)
        return (live or {}).get("metadata", {}).get("schema", {})

    def _output(self, endpoint: str) -> dict[str, Any]:
        """What the live version's method at ``endpoint`` returned in the notebook."""
        live = next((v for v in self.versions if v["number"] == self.version), None)
        model = (live or {}).get("metadata", {}).get("model") or {}
        methods = model.get("methods") or ["predict"]
        method = methods[0] if endpoint == "predict" else endpoint
        return (model.get("outputs") or {}).get(method) or {"type": "array"}

    def refresh(self) -> "Deployment":
        """Reload the snapshot (status, versions, rollout, aliases) from the agent."""
        self._data = self._client.get(f"/v1/deployments/{self.name}")
        return self

    # -- calling it -----------------------------------------------------------------

    def predict(self, data: Any, *, endpoint: str = "predict", version: int | str | None = None,
                ids: bool = False, timeout: float = 60.0) -> Any:
        """POST rows to the stable URL and return the predictions as an array.

        ``data`` is a DataFrame, a list of row dicts, or a 2-D array for models deployed
        from arrays. A request that does not match the schema raises ``SchemaMismatch``.
        ``version`` (a number or an alias) calls that version's own URL instead of the live
        one. ``ids=True`` returns a DataFrame of ``id`` and ``prediction``: the ids to send
        the real outcomes back with (``feedback``). The last request's id is also in
        ``last_request_id``.
        """
        import httpx
        import numpy as np

        body = '{"data": ' + _input_json(data, self.schema) + "}"
        if self._http is None:
            self._http = self._client.stable_client(timeout)
        base = self.url if version is None else f"{self.url}/v/{version}"
        try:
            response = self._http.post(
                f"{base}/{endpoint}", content=body, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise PredictionFailed(f"cannot reach {self.url}: {exc}", hint="check `nbserve list`") from None
        self.last_request_id = response.headers.get("x-request-id")
        try:
            payload = response.json()
        except ValueError:
            payload = response.text
        if response.status_code == 422:
            schema = self.schema
            expected = (f"expected columns: {[c['name'] for c in schema.get('columns', [])]}"
                        if schema.get("kind", "frame") == "frame" else f"expected {schema['kind']} inputs; see dep.url/schema")
            raise SchemaMismatch(payload.get("error", str(payload)) if isinstance(payload, dict) else str(payload),
                                 hint=expected, **(payload if isinstance(payload, dict) else {}))
        if response.status_code >= 400:
            message = payload.get("error") if isinstance(payload, dict) else payload
            if isinstance(message, dict):
                message = message.get("message")
            raise PredictionFailed(f"{base}/{endpoint} answered {response.status_code}: {message}",
                                   hint=f"see dep.logs() or `nbserve logs {self.name}`")
        first = payload[0] if isinstance(payload, list) and payload else None
        if isinstance(first, dict) or (isinstance(first, list) and self._output(endpoint).get("type") == "list"):
            predictions: Any = payload  # records (a frame's rows), or lists per input (entities) stay a list
        else:
            predictions = np.asarray(payload)
        if not ids:
            return _as_returned(payload, predictions, self._output(endpoint), data)
        import pandas as pd

        rid = self.last_request_id
        frame = pd.DataFrame({"id": [f"{rid}:{i}" for i in range(len(predictions))]})
        frame["prediction"] = list(predictions) if isinstance(predictions, list) or predictions.ndim > 1 \
            else predictions
        if isinstance(data, pd.DataFrame):
            frame.index = data.index
        return frame

    # -- history and control --------------------------------------------------------

    def history(self) -> "pd.DataFrame":
        """One row per version: number, status, when, who (and from which address, from the
        audit log), notebook and cell, description, intended use and limitations, Bento."""
        import pandas as pd

        self.refresh()
        registered = {a["version"]: a.get("source") for a in self._client.get(
            "/v1/audit", params={"deployment": self.name, "limit": 10_000}) if a["action"] == "version_registered"}
        rows = version_rows(self.versions, self.version, registered)
        for row in rows:
            row["created_at"] = pd.Timestamp(row["created_at"])
        return pd.DataFrame(rows).set_index("version") if rows else pd.DataFrame()

    def events(self, limit: int = 200, *, after: int = 0) -> "pd.DataFrame":
        """What happened, oldest first: the newest ``limit`` events with an id above ``after``
        (poll with the last id seen to get only new ones)."""
        import pandas as pd

        events = self._client.get(f"/v1/deployments/{self.name}/events",
                                  params={"limit": limit, "after": after})
        frame = pd.DataFrame(events)
        if not frame.empty:
            frame["ts"] = pd.to_datetime(frame["ts"])
        return frame

    # -- quality ------------------------------------------------------------------

    def feedback(self, ids: Any, y_true: Any, *, batch: int = 10_000) -> dict[str, Any]:
        """Attach real outcomes to served predictions (hours or days later, in any order).

        ``ids`` are the prediction ids from ``predict(..., ids=True)`` (a column, list or
        Series), ``y_true`` the outcomes in the same order. Returns counts: ``stored``,
        ``updated`` (replaced an earlier label), ``unknown`` (no sampled prediction has that
        id), ``duplicate``, ``invalid``; nothing raises for bad rows. Only sampled predictions
        can be joined (``configure(sample_rate=...)``)."""
        import numpy as np

        id_list = [str(i) for i in (ids.tolist() if hasattr(ids, "tolist") else list(ids))]
        y_list = y_true.tolist() if hasattr(y_true, "tolist") else list(y_true)
        if len(id_list) != len(y_list):
            raise InvalidArgument(f"{len(id_list)} ids but {len(y_list)} outcomes", hint="one outcome per id")
        y_list = [v.item() if isinstance(v, np.generic) else v for v in y_list]
        total: dict[str, Any] = {}
        for start in range(0, max(len(id_list), 1), batch):
            part = self._client.post(f"/v1/deployments/{self.name}/feedback",
                                     json={"ids": id_list[start:start + batch], "y_true": y_list[start:start + batch]})
            for key, value in part.items():
                if isinstance(value, int):
                    total[key] = total.get(key, 0) + value
                else:
                    merged = total.setdefault(key, {})
                    for kind, examples in value.items():
                        merged[kind] = (merged.get(kind, []) + examples)[:5]
        return total

    def quality(self, window: str = "1d", *, bucket: str = "1h", metrics: list[str] | None = None,
                version: int | None = None) -> "pd.DataFrame":
        """Model quality from real outcomes, per time bucket and version: ``labelled`` rows and
        scikit-learn's metrics (accuracy, precision, recall, f1, roc_auc for classifiers; mae,
        rmse, r2 for regressors). ``attrs["task"]`` says which."""
        import pandas as pd

        params: dict[str, Any] = {"window": window, "bucket": bucket}
        if metrics:
            params["metrics"] = ",".join(metrics)
        if version is not None:
            params["version"] = version
        answer = self._client.get(f"/v1/deployments/{self.name}/quality", params=params)
        frame = pd.DataFrame(answer["rows"])
        if not frame.empty:
            frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True)
        frame.attrs["task"] = answer["task"]
        return frame

    def plot_quality(self, window: str = "1d", *, bucket: str = "1h", metric: str | None = None) -> Any:
        """Quality over time, one line per version, version changes marked."""
        from ._plots import plot_quality

        return plot_quality(self.quality(window, bucket=bucket), self.events(), metric=metric,
                            title=f"{self.name}: quality, last {window}")

    def alias(self, alias: str, version: int | None) -> dict[str, int]:
        """Name a version (``None`` removes the name): ``<url>/v/<alias>/predict`` calls it
        and ``predict(..., version=alias)`` too. Returns every alias."""
        path = f"/v1/deployments/{self.name}/aliases/{alias}"
        if version is None:
            aliases = self._client.request("DELETE", path)
        else:
            aliases = self._client.request("PUT", path, json={"version": version, "actor": actor()})
        self._data["aliases"] = aliases
        return aliases

    @property
    def aliases(self) -> dict[str, int]:
        """Named versions: alias -> version number (``<url>/v/<alias>/...``)."""
        return dict(self._data.get("aliases") or {})

    def metadata(self, version: int | None = None) -> dict[str, Any]:
        """What a version is (default: live): model, packages, provenance, card, who and when."""
        return self._client.get(f"/v1/deployments/{self.name}/versions/{version or self.version}/metadata")

    def model_card(self, version: int | None = None) -> Any:
        """A model card of a version (default: live): shown inline; ``.save("card.md")`` or
        ``.save("card.html")`` writes it."""
        from ._card import build_card

        return build_card(self, version or self.version)

    def scale(self, *, workers: int | None = None, memory: str | int | None = None,
              cpus: float | str | None = None, idle_timeout: str | None = None,
              batching: bool | None = None, max_batch_size: int | None = None,
              max_latency_ms: float | None = None, replicas: int | None = None,
              autoscaling: dict[str, Any] | bool | None = None, engine: str | None = None) -> "Deployment":
        """Change workers (``replicas`` on Ray), memory/CPU caps, the idle timeout (``"none"``
        removes a cap or the timeout), adaptive batching (``batching=False`` turns it off;
        ``max_batch_size`` or ``max_latency_ms`` alone change that knob) or, for a version on
        Ray, its autoscaling (a mapping as ``deploy`` takes it; ``False``: a fixed count). The
        live server is replaced without dropping a request: the new one starts beside it,
        takes the traffic once ready, and the old one drains. ``engine`` moves the live version
        the same way: ``"dedicated"`` (or ``"local"``) out of a shared model server into a
        server of its own, ``"shared"`` into one, ``"ray"`` onto the agent's Ray cluster; later
        versions run there too."""
        body = serving_body(workers=workers, memory=memory, cpus=cpus, idle_timeout=idle_timeout,
                            batching=batching, max_batch_size=max_batch_size, max_latency_ms=max_latency_ms,
                            replicas=replicas, autoscaling=autoscaling)
        if engine is not None:
            body["engine"] = engine_named(engine)
        seen = self._client.get(f"/v1/deployments/{self.name}/events", params={"limit": 1})
        self._data = self._client.post(f"/v1/deployments/{self.name}/scale", json={**body, "actor": actor()},
                                       timeout=600)
        after = seen[-1]["id"] if seen else 0
        for message in version_warnings(self._client, self.name, self.version, after=after):
            warnings.warn(message, NbserveWarning, stacklevel=2)
        return self

    def audit(self, limit: int = 200) -> "pd.DataFrame":
        """Who changed this deployment, when, from where, and the live version before and after
        (the agent's hash-chained audit log, oldest first)."""
        from ._admin import audit_frame

        return audit_frame(self._client.get("/v1/audit", params={"deployment": self.name, "limit": limit}))

    def rollback(self, to: int | None = None) -> "Deployment":
        """Point the stable URL at version ``to`` (default: the one before the live one)."""
        self._data = self._client.post(
            f"/v1/deployments/{self.name}/rollback", json={"to": to, "actor": actor()},
            timeout=CHANGE_TIMEOUT,
        )
        return self

    # -- rollouts ---------------------------------------------------------------------

    def rollout(self) -> dict[str, Any] | None:
        """The canary or shadow under way: version, percent, gates, figures so far, verdict."""
        return self._client.get(f"/v1/deployments/{self.name}/rollout")

    def promote(self) -> "Deployment":
        """Make the canary (or shadow) version live now; the previous one stays warm."""
        self._data = self._client.post(f"/v1/deployments/{self.name}/promote", json={"actor": actor()},
                                       timeout=CHANGE_TIMEOUT)
        return self

    def abort(self) -> "Deployment":
        """End the canary (or shadow): its traffic goes back to the live version at once."""
        self._data = self._client.post(f"/v1/deployments/{self.name}/abort", json={"actor": actor()},
                                       timeout=CHANGE_TIMEOUT)
        return self

    def set_canary(self, percent: float) -> "Deployment":
        """Change the share of requests the canary gets (0 < percent <= 100)."""
        self._data = self._client.post(f"/v1/deployments/{self.name}/canary",
                                       json={"percent": percent, "actor": actor()})
        return self

    def gates(self, *, p99_ms: float | None = None, error_rate: float | None = None,
              drift_share: float | None = None, min_requests: int | None = None,
              window: str | None = None, quality: dict[str, float] | None = None,
              min_labels: int | None = None, clear: bool = False) -> dict[str, Any]:
        """Set what a canary or shadow must meet (merged with the current gates; ``clear``
        starts from none) and return them. While a rollout runs the agent checks them every
        2 s: a breach rolls back on its own; passing for ``window`` promotes with auto_promote.

        ``quality`` sets floors on the new version's quality from real outcomes
        (``{"accuracy": 0.9}``; for ``mae``/``rmse`` a ceiling), judged once ``min_labels``
        labelled rows (default 50) arrived through ``feedback``."""
        given = {"p99_ms": p99_ms, "error_rate": error_rate, "drift_share": drift_share,
                 "min_requests": min_requests, "window": window, "quality": quality, "min_labels": min_labels}
        current = {} if clear else self._client.get(f"/v1/deployments/{self.name}/config")["gates"]
        gates = {**current, **{k: v for k, v in given.items() if v is not None}}
        return self.configure(gates=gates)["gates"]

    def stop(self) -> "Deployment":
        """Stop every serving process; the stable URL stays and answers 503 until started."""
        self._data = self._client.post(f"/v1/deployments/{self.name}/stop", json={"actor": actor()},
                                       timeout=CHANGE_TIMEOUT)
        return self

    def start(self) -> "Deployment":
        """Serve the live version again after ``stop()`` (a cold start from its Bento)."""
        self._data = self._client.post(f"/v1/deployments/{self.name}/start", json={"actor": actor()},
                                       timeout=CHANGE_TIMEOUT)
        return self

    def logs(self, version: int | None = None, lines: int = 200) -> str:
        """The tail of a version's server log (default: the live version)."""
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
                preparing = v.get("preparing")
                if preparing:
                    differs = preparing.get("differs") or []
                    progress.step("environment", f"Python {preparing['python']}, {len(preparing['packages'])} "
                                  f"package(s); installing what the agent lacks: {', '.join(differs[:3])}"
                                  + (" ..." if len(differs) > 3 else ""))
                else:
                    step = "parity" if v["ready"] else "health" if v["running"] else "starting"
                    progress.step(step, v.get("upstream_url") if v["running"] and not v["ready"] else None)
            time.sleep(0.05)
        raise DeployFailed(f"v{number} was not live after {timeout:.0f} s",
                           hint=f"see `nbserve logs {self.name} --version {number}`")

    # -- monitoring -----------------------------------------------------------------

    def summary(self, window: str = "5m") -> dict[str, Any]:
        """Requests, rps, p50/p99 (ms), error rate over ``window``, a 30-minute request-rate
        sparkline, and the drift flag of the live version's recent traffic."""
        return self._client.get(f"/v1/deployments/{self.name}/summary", params={"window": window})

    def latency(
        self, window: str = "1h", *, by_version: bool = False, since_version: int | None = None,
        version: int | None = None,
    ) -> "pd.DataFrame":
        """Per minute: requests, errors, error rate, rps, rows, p50/p90/p99/mean in ms.

        ``window`` is e.g. ``"5m"``, ``"1h"``, ``"1d"``; ``since_version=3`` starts at
        version 3's creation instead; ``by_version=True`` splits each minute by version.
        """
        import pandas as pd

        params: dict[str, Any] = {"window": window, "by_version": by_version}
        if since_version is not None:
            params["since_version"] = since_version
        if version is not None:
            params["version"] = version
        rows = self._client.get(f"/v1/deployments/{self.name}/latency", params=params)
        columns = ["time", *(["version"] if by_version else []), "requests", "errors", "client_errors",
                   "error_rate", "rps", "rows", "p50_ms", "p90_ms", "p99_ms", "mean_ms"]
        frame = pd.DataFrame(rows, columns=columns)
        frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True)
        return frame

    def traffic(self, window: str = "1h", *, version: int | None = None, limit: int = 10_000) -> "pd.DataFrame":
        """Sampled requests of the stable URL, one row per payload row: ``ts``, ``version``,
        ``request_id``, the input columns, ``prediction``, ``status``, ``latency_ms`` and
        ``protocol`` (``bentoml`` for /predict, ``v2``, ``mlflow``, ``openai``)."""
        params: dict[str, Any] = {"window": window, "limit": limit}
        if version is not None:
            params["version"] = version
        frame = _split_frame(self._client.get(f"/v1/deployments/{self.name}/traffic", params=params))
        if "ts" in frame:
            import pandas as pd

            frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        return frame

    def reference(self, version: int | None = None) -> "pd.DataFrame":
        """The reference sample saved at deploy time (inputs and the model's ``prediction``)."""
        import io

        import pandas as pd

        number = version or self.version
        key = (self._client.base_url, self.name, number)
        cached = _references.get(key)
        if cached is None:
            params = {"version": number} if number else {}
            data, _headers = self._client.get_bytes(f"/v1/deployments/{self.name}/reference", params=params)
            cached = pd.read_parquet(io.BytesIO(data))
            if "__prediction__" in cached.columns and "prediction" not in cached.columns:
                cached = cached.rename(columns={"__prediction__": "prediction"})
            _references[key] = cached
        return cached.copy()

    def drift(
        self, current: Any = None, *, window: str = "1h", version: int | None = None,
        exact: bool | None = None, **settings: Any,
    ) -> "pd.DataFrame":
        """Per-feature drift against the version's reference sample.

        With ``current`` (a DataFrame), drift of that data, computed here against the
        reference (fetched once, then cached with its profile). Without it, drift of the
        sampled traffic of the last ``window``, computed by the agent. ``settings`` are
        :class:`nbserve.DriftConfig` fields (methods, thresholds, drift share).
        The frame's ``attrs`` hold ``dataset_drift`` and ``drift_share``.
        """
        import pandas as pd

        from ._drift import DriftConfig, drift_report

        if current is None:
            if settings or exact is not None:
                raise InvalidArgument(
                    "settings and exact apply to a DataFrame you pass",
                    hint="for traffic drift, change the deployment's settings: dep.configure(drift={...})",
                )
            params: dict[str, Any] = {"window": window}
            if version is not None:
                params["version"] = version
            payload = self._client.get(f"/v1/deployments/{self.name}/drift", params=params)
            frame = pd.DataFrame(payload.pop("report"))
            frame.attrs.update(payload)
            return frame
        from ._kinds import NOT_FEATURES, from_spec

        kind = from_spec(self.schema) if self.schema else None
        if kind is not None and not isinstance(current, pd.DataFrame):
            current = kind.features(kind.items(current))  # texts, arrays, records: their derived columns
        if not isinstance(current, pd.DataFrame):
            raise InvalidArgument(
                f"current must be a pandas DataFrame, got {type(current).__name__}",
                hint="pass the rows to compare with the reference, e.g. dep.drift(X_new)",
            )
        try:
            config = DriftConfig(**settings)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"invalid drift settings: {exc}", hint="see help(nbserve.DriftConfig)") from None
        reference = self.reference(version).drop(columns=list(NOT_FEATURES), errors="ignore")
        common = [c for c in current.columns if c in reference.columns]
        if not common:
            raise SchemaMismatch(
                "none of the columns of current are in the reference sample",
                hint=f"reference columns: {list(reference.columns)}",
            )
        if exact is None:
            exact = len(current) <= 200_000
        if exact:
            report = drift_report(reference, current[common], config=config, exact=True)
        else:
            key = (self._client.base_url, self.name, version or self.version)
            profile = _profiles.get(key)
            if profile is None:
                from ._drift import ReferenceProfile

                profile = _profiles[key] = ReferenceProfile.build(reference)
            report = drift_report(profile, current[common], config=config)
        report.attrs["version"] = version or self.version
        return report

    def resources(self, window: str = "1h") -> "pd.DataFrame":
        """CPU (% of one core) and memory of each version's serving processes over time."""
        import pandas as pd

        frame = _split_frame(self._client.get(f"/v1/deployments/{self.name}/resources",
                                              params={"window": window}))
        if not frame.empty:
            frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
            frame["rss_mb"] = frame["rss_bytes"] / 2**20
        return frame

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change monitoring settings: ``capture``, ``sample_rate``, ``sample_budget_per_minute``,
        ``drift`` (DriftConfig fields), ``drift_window``. Returns the whole config."""
        return self._client.request("PATCH", f"/v1/deployments/{self.name}/config",
                                    json={"settings": settings, "actor": actor()})

    def plot_latency(self, window: str = "1h") -> Any:
        """p50/p90/p99 per minute with version changes marked (a matplotlib Figure)."""
        from ._plots import plot_latency

        return plot_latency(self.latency(window), self.events(), title=f"{self.name}: latency, last {window}")

    def plot_drift(self, current: Any = None, *, window: str = "1h", top: int = 3) -> Any:
        """Per-feature drift scores against thresholds, and reference vs current histograms
        of the ``top`` worst features (a matplotlib Figure)."""
        from ._plots import plot_drift

        report = self.drift(current, window=window)
        data = current if current is not None else self.traffic(window, version=self.version)
        return plot_drift(report, self.reference(), data, top=top, title=f"{self.name}: drift")

    def plot_history(self) -> Any:
        """The version timeline: when each version went live, who made it, and why."""
        from ._plots import plot_history

        return plot_history(self.history(), self.events(), title=f"{self.name}: versions")

    def dashboard(self, *, refresh: float = 3.0, window: str = "15m") -> Any:
        """A live ipywidgets dashboard; refreshes in the background until closed."""
        from ._dashboard import Dashboard

        return Dashboard(self, refresh=refresh, window=window)

    # -- display --------------------------------------------------------------------

    def _repr_html_(self) -> str:
        """Status, stable URL, and copy-paste curl and Python examples (the notebook's view)."""
        return deployment_html(self._data)

    def __repr__(self) -> str:
        return deployment_text(self._data)


_references: dict[tuple[str, str, int | None], Any] = {}  # reference samples are immutable
_profiles: dict[tuple[str, str, int | None], Any] = {}


def _split_frame(payload: dict[str, Any]) -> "pd.DataFrame":
    import pandas as pd

    return pd.DataFrame(payload.get("data", []), columns=payload.get("columns", []))


def _as_returned(payload: Any, predictions: Any, output: dict[str, Any], data: Any) -> Any:
    """Answers as the type the method returned in the notebook: a DataFrame, a Series, a list,
    else an array (versions built before nbserve recorded it: an array, as always)."""
    import pandas as pd

    kind = output.get("type")
    if kind == "frame":
        frame = pd.DataFrame(payload) if payload and isinstance(payload[0], dict) else \
            pd.DataFrame(payload, columns=output.get("columns") or None)
        if isinstance(data, pd.DataFrame) and len(data) == len(frame):
            frame.index = data.index
        return frame
    if kind == "series":
        index = data.index if isinstance(data, (pd.DataFrame, pd.Series)) and len(data) == len(payload) else None
        return pd.Series(payload, name=output.get("name"), index=index)
    if kind == "list":
        return list(payload) if isinstance(payload, list) else predictions
    return predictions


def _input_json(data: Any, schema: dict[str, Any]) -> str:
    """``data`` as a request's JSON ``data``, in the form the version's kind of input takes."""
    from ._kinds import from_spec

    kind = from_spec(schema) if schema else None
    if kind is None:
        return _records_json(data)
    if isinstance(data, str) or isinstance(data, dict):
        data = [data]  # one text, one record
    return json.dumps(kind.items(data), default=str)


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


WARNING_EVENTS = SAID_AT_DEPLOY  # said to the user who deployed


def version_warnings(client: AgentClient, name: str, number: int | None, *, after: int = 0) -> list[str]:
    """What the agent warned about while bringing this version up (it went live anyway)."""
    events = client.get(f"/v1/deployments/{name}/events", params={"limit": 50, "after": after})
    return [e["message"] for e in events if e.get("version") == number and e["kind"] in WARNING_EVENTS]
