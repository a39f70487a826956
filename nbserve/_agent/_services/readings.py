"""What the monitor has seen, read for a deployment: latency, summaries, traffic, drift,
quality and outcomes (feedback). Reads only, besides recording outcomes."""

from __future__ import annotations

import time
from typing import Any

from ..._windows import parse_window
from ...errors import InvalidArgument, NbserveError
from .._insights import (
    MIN_DRIFT_ROWS,
    ProfileCache,
    feature_columns,
    latency_rows,
    summary,
    traffic_frame,
)
from .._quality import check_metrics, parse_ids, quality_rows
from .fleet import Fleet

FLAG_SECONDS = 10.0  # a summary's drift and quality flags are recomputed at most this often


class Readings:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.monitor = fleet.monitor
        self.profiles = ProfileCache()  # each version's reference profile, for drift

    def feedback(self, name: str, ids: list[Any], y_true: list[Any]) -> dict[str, Any]:
        """Attach real outcomes to served predictions; see ``Monitor.add_labels``."""
        self.fleet.get_row(name)
        if not isinstance(ids, list) or not isinstance(y_true, list) or len(ids) != len(y_true):
            raise InvalidArgument("ids and y_true must be lists of the same length",
                                  hint="one outcome per prediction id")
        if len(ids) > 1_000_000:
            raise InvalidArgument("at most 1,000,000 labels per call", hint="send them in batches")
        items = [(rid, row, y) for (rid, row), y in zip(parse_ids(ids), y_true, strict=True)]
        report = self.monitor.add_labels(name, items)
        self.fleet.state(name).quality_flag = None
        return report

    def quality(self, name: str, window: str | float = "1d", *, bucket: str | float = "1h",
                metrics: list[str] | None = None, version: int | None = None) -> dict[str, Any]:
        """Metrics per time bucket and version from labelled predictions."""
        row = self.fleet.get_row(name)
        since = time.time() - parse_window(window)
        bucket_seconds = parse_window(bucket)
        labelled = self.monitor.labelled(name, since, version=version)  # streamed: read once
        number = version or row.live_version
        declared = self.task(name, number) if number is not None else None
        task, rows = quality_rows(labelled, bucket_seconds=bucket_seconds, task=declared,
                                  metrics=check_metrics(metrics))
        return {"task": task, "rows": rows, "labelled": sum(r["labelled"] for r in rows)}

    def task(self, name: str, number: int) -> str | None:
        """What the version's model declared it does ("classification", "regression"), if anything."""
        try:
            return (self.fleet.get_version(name, number).metadata.get("model") or {}).get("task")
        except NbserveError:
            return None

    def _since(self, name: str, window: str | float | None, since_version: int | None) -> float:
        if since_version is not None:
            from datetime import datetime

            created = self.fleet.get_version(name, since_version).created_at
            return datetime.fromisoformat(created).timestamp()
        return time.time() - parse_window(window or "1h")

    def latency(self, name: str, window: str | float | None = "1h", *, by_version: bool = False,
                since_version: int | None = None, version: int | None = None) -> list[dict[str, Any]]:
        self.fleet.get_row(name)
        panes = self.monitor.panes(name, self._since(name, window, since_version), version=version)
        return latency_rows(panes, by_version=by_version)

    def summary(self, name: str, window: str | float = "5m") -> dict[str, Any]:
        self.fleet.get_row(name)
        seconds = parse_window(window)
        panes = self.monitor.panes(name, time.time() - max(seconds, 30 * 60))
        out = summary(panes, window=seconds)
        out["drift"] = self._drift_flag(name)
        out["quality"] = self._quality_flag(name)
        out["protocols"] = self.monitor.protocols(name)
        return out

    def _quality_flag(self, name: str) -> dict[str, Any]:
        """The live version's headline metric in its newest hour with labels, and the hour
        before (the trend); cached like the drift flag, since panels poll summaries."""
        state = self.fleet.state(name)
        if state.quality_flag is not None and time.monotonic() - state.quality_flag[0] < FLAG_SECONDS:
            return state.quality_flag[1]
        flag: dict[str, Any] = {"metric": None, "value": None, "previous": None, "labelled": 0, "task": None}
        live = self.fleet.get_row(name).live_version
        if live is not None:
            found = self.quality(name, "1d", bucket="1h", version=live)
            task = found["task"]
            metric = "accuracy" if task == "classification" else "rmse" if task == "regression" else None
            rows = [r for r in found["rows"] if metric and r.get(metric) is not None]
            if rows:
                flag = {"metric": metric, "value": rows[-1][metric],
                        "previous": rows[-2][metric] if len(rows) > 1 else None,
                        "labelled": rows[-1]["labelled"], "task": task}
        state.quality_flag = (time.monotonic(), flag)
        return flag

    def _drift_flag(self, name: str) -> dict[str, Any]:
        state = self.fleet.state(name)
        if state.drift_flag is not None and time.monotonic() - state.drift_flag[0] < FLAG_SECONDS:
            return state.drift_flag[1]
        flag: dict[str, Any] = {"drifted": None, "share": None, "features": 0, "rows": 0}
        try:
            report = self.drift(name, self.fleet.config(name)["drift_window"])
            flag = {"drifted": report.attrs.get("dataset_drift"), "share": report.attrs.get("drift_share"),
                    "features": report.attrs.get("features", 0), "rows": report.attrs.get("n_current", 0)}
        except NbserveError:
            pass  # too little traffic yet, or no live version: the flag stays unknown
        state.drift_flag = (time.monotonic(), flag)
        return flag

    def traffic(self, name: str, window: str | float = "1h", *, version: int | None = None,
                limit: int = 10_000) -> Any:
        self.fleet.get_row(name)
        samples = self.monitor.samples(name, time.time() - parse_window(window), version=version, limit=limit)
        return traffic_frame(samples, self._schema(name, version))

    def _schema(self, name: str, version: int | None) -> dict[str, Any]:
        number = version or self.fleet.get_row(name).live_version
        if number is None:
            versions = self.fleet.registry.list_versions(name)
            number = versions[-1].number if versions else None
        return self.fleet.get_version(name, number).metadata.get("schema", {}) if number else {}

    def drift(self, name: str, window: str | float = "1h", *, version: int | None = None) -> Any:
        """Drift of the sampled traffic of one version (default: live) against its reference."""
        from ..._drift import DriftConfig, drift_report

        number, bento_path = self.fleet.reference_path(name, version)
        current = self.traffic(name, window, version=number)
        current = current[current["status"] < 400] if "status" in current else current
        if len(current) < MIN_DRIFT_ROWS:
            raise InvalidArgument(
                f"only {len(current)} sampled rows of v{number} of {name} in the last {window}; "
                f"drift needs at least {MIN_DRIFT_ROWS}",
                hint="send more traffic, widen the window, or pass a DataFrame: dep.drift(df)",
                rows=len(current),
            )
        profile = self.profiles.get((name, number), bento_path)
        config = DriftConfig(**self.fleet.config(name)["drift"])
        return drift_report(profile, current[feature_columns(current)], config=config)
