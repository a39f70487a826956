"""What the monitor's raw panes and samples mean: latency series, summaries, traffic, drift.

Pure functions over what :class:`~nbserve._agent._monitor.Monitor` returns, plus the
per-version reference profiles (built once from the Bento's reference sample and cached),
so the REST handlers stay thin and every front reads the same figures.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._histogram import LatencyHistogram

if TYPE_CHECKING:
    import pandas as pd

    from .._drift import ReferenceProfile

PREDICTION = "prediction"
_STORED_PREDICTION = "__prediction__"  # the column name inside reference.parquet
MIN_DRIFT_ROWS = 30


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 4)


def latency_rows(panes: list[tuple], *, by_version: bool, now: float | None = None) -> list[dict[str, Any]]:
    """One row per minute (or per minute and version): counts, rates and percentiles."""
    now = time.time() if now is None else now
    current_minute = int(now) // 60
    groups: dict[tuple[int, int | None], list[Any]] = {}
    for minute, version, requests, errors, client_errors, rows, _total, hist in panes:
        key = (minute, version if by_version else None)
        acc = groups.get(key)
        if acc is None:
            groups[key] = [requests, errors, client_errors, rows, LatencyHistogram().merge(hist)]
        else:
            acc[0] += requests
            acc[1] += errors
            acc[2] += client_errors
            acc[3] += rows
            acc[4].merge(hist)
    out = []
    for (minute, version), (requests, errors, client_errors, rows, hist) in sorted(groups.items()):
        elapsed = 60.0 if minute < current_minute else max(1.0, now - minute * 60)
        p50, p90, p99 = hist.quantiles([0.5, 0.9, 0.99])
        row = {
            "time": minute * 60,
            "requests": requests,
            "errors": errors,
            "client_errors": client_errors,
            "error_rate": errors / requests if requests else None,
            "rps": requests / elapsed,
            "rows": rows,
            "p50_ms": _ms(p50),
            "p90_ms": _ms(p90),
            "p99_ms": _ms(p99),
            "mean_ms": _ms(hist.mean),
        }
        if by_version:
            row["version"] = version
        out.append(row)
    return out


def summary(panes: list[tuple], *, window: float, now: float | None = None, spark_minutes: int = 30) -> dict[str, Any]:
    """Totals over ``window`` seconds and a per-minute request-rate sparkline."""
    now = time.time() if now is None else now
    since = now - window
    merged = LatencyHistogram()
    requests = errors = 0
    first: float | None = None
    spark = [0.0] * spark_minutes
    current_minute = int(now) // 60
    for minute, _version, n, err, _cerr, _rows, _total, hist in panes:
        offset = current_minute - minute
        if 0 <= offset < spark_minutes:
            elapsed = 60.0 if offset else max(1.0, now - minute * 60)
            spark[spark_minutes - 1 - offset] += n / elapsed
        if minute * 60 + 60 <= since:
            continue
        merged.merge(hist)
        requests += n
        errors += err
        first = minute * 60 if first is None else min(first, minute * 60)
    span = max(1.0, now - max(since, first if first is not None else since))
    p50, p99 = merged.quantiles([0.5, 0.99])
    return {
        "window_seconds": window,
        "requests": requests,
        "rps": requests / span if requests else 0.0,
        "p50_ms": _ms(p50),
        "p99_ms": _ms(p99),
        "error_rate": errors / requests if requests else None,
        "sparkline": [round(v, 4) for v in spark],
    }


# -- traffic ---------------------------------------------------------------------------


def traffic_frame(samples: list[Any], schema: dict[str, Any]) -> "pd.DataFrame":
    """Sampled requests as one row per payload row: inputs, the prediction, and context."""
    import pandas as pd

    from .._kinds import from_spec
    from .._protocols import captured, protocol_of

    kind = from_spec(schema)  # text, arrays, records: drift looks at columns derived from them
    names = [c["name"] for c in schema.get("columns", [])]
    frames = []
    for s in samples:
        try:
            body = json.loads(s["request"]) if s["request"] else None
            output = json.loads(s["response"]) if s["response"] else None
        except ValueError:
            continue
        found = captured(s["path"], body, output, schema)  # /predict's, or another protocol's
        if found is None or found[0] is None:
            continue
        data, predictions = found
        if kind is not None:
            if not isinstance(data, list) or not data:
                continue
            frame = kind.features(data)
        elif isinstance(data, dict):
            frame = pd.DataFrame(data)
        elif data and isinstance(data[0], (list, tuple)):
            frame = pd.DataFrame(data, columns=names[: len(data[0])] or None)
        else:
            frame = pd.DataFrame(data)
        if frame.empty:
            continue
        if names:  # a rejected request may carry any columns: keep the schema's
            frame = frame[[c for c in names if c in frame.columns]]
        if isinstance(predictions, list) and len(predictions) == len(frame):
            if not predictions or not isinstance(predictions[0], (list, dict)):
                frame[PREDICTION] = predictions
        frame.insert(0, "ts", s["ts"])
        frame.insert(1, "version", s["version"])
        frame.insert(2, "request_id", s["id"])
        frame["status"] = s["status"]
        frame["latency_ms"] = s["latency_ms"]
        frame["protocol"] = protocol_of(s["path"])
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["ts", "version", "request_id", *names, "status", "latency_ms", "protocol"])
    out = pd.concat(frames, ignore_index=True)
    out["ts"] = pd.to_datetime(out["ts"], unit="s", utc=True)
    return out


def feature_columns(frame: "pd.DataFrame") -> list[str]:
    return [c for c in frame.columns if c not in ("ts", "version", "request_id", "status", "latency_ms", "protocol")]


# -- reference profiles ------------------------------------------------------------------


def request_rows_json(frame: "pd.DataFrame") -> str:
    """A reference sample's rows as a request's ``data``: records of its columns, or the
    items' own JSON for inputs that are not columns (text, arrays, records)."""
    from .._kinds import INPUT_COLUMN

    if INPUT_COLUMN in frame.columns:
        return "[" + ", ".join(frame[INPUT_COLUMN]) + "]"
    return frame.to_json(orient="records", date_format="iso")


def read_reference(bento_path: Path) -> "pd.DataFrame":
    """A version's reference sample (inputs and the model's predictions), as deployed."""
    import pandas as pd

    from .._service_template import REFERENCE_FILE

    frame = pd.read_parquet(Path(bento_path) / "src" / REFERENCE_FILE)
    if _STORED_PREDICTION in frame.columns and PREDICTION not in frame.columns:
        frame = frame.rename(columns={_STORED_PREDICTION: PREDICTION})
    return frame


class ProfileCache:
    """Reference profiles per (deployment, version): built once, kept for the busiest."""

    def __init__(self, capacity: int = 64) -> None:
        self._profiles: OrderedDict[tuple[str, int], "ReferenceProfile"] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int], bento_path: Path) -> "ReferenceProfile":
        from .._drift import ReferenceProfile

        with self._lock:
            found = self._profiles.get(key)
            if found is not None:
                self._profiles.move_to_end(key)
                return found
        from .._kinds import NOT_FEATURES

        profile = ReferenceProfile.build(read_reference(bento_path).drop(columns=list(NOT_FEATURES), errors="ignore"))
        with self._lock:
            self._profiles[key] = profile
            while len(self._profiles) > self._capacity:
                self._profiles.popitem(last=False)
        return profile


def report_payload(report: "pd.DataFrame") -> dict[str, Any]:
    """A drift report (DataFrame + attrs) as JSON: NaN becomes null."""
    import numpy as np

    records = json.loads(report.replace({np.nan: None}).to_json(orient="records"))
    return {"report": records, **{k: _plain(v) for k, v in report.attrs.items()}}


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value
