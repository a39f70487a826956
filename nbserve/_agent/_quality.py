"""Model quality from real outcomes: labelled rows joined to the predictions served.

Figures are scikit-learn's metric functions on the rows of each (time bucket, version);
nothing here reimplements a metric. A row counts once its label arrived (``dep.feedback``)
and its request was sampled (the sampled log holds the prediction it was given).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ..errors import InvalidArgument

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse", "r2")
METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS


def parse_ids(ids: Iterable[Any]) -> list[tuple[str, int]]:
    """Row ids as ``"<request id>:<row>"`` (what ``dep.predict(..., ids=True)`` returns) or a
    bare request id for a one-row request."""
    parsed = []
    for raw in ids:
        text = str(raw)
        rid, sep, row = text.rpartition(":")
        if sep and row.isdigit() and rid:
            parsed.append((rid, int(row)))
        else:
            parsed.append((text, 0))
    return parsed


def check_metrics(names: Iterable[str] | None) -> list[str] | None:
    if names is None:
        return None
    chosen = [n.strip().lower() for n in names if n and n.strip()]
    unknown = sorted(set(chosen) - set(METRICS))
    if unknown:
        raise InvalidArgument(f"unknown metric(s): {', '.join(unknown)}", hint=f"metrics: {', '.join(METRICS)}")
    return chosen


def infer_task(y_true: list[Any], declared: str | None) -> str:
    if declared in ("classification", "regression"):
        return declared
    def discrete(v: Any) -> bool:
        return isinstance(v, (str, bool)) or (isinstance(v, (int, float)) and float(v).is_integer())

    return "classification" if all(discrete(v) for v in y_true) else "regression"


def _rows(labelled: list[tuple[Any, ...]]) -> list[tuple[float, int, bool, Any, Any]]:
    """(ts, version, is_probability, y_pred, y_true) per labelled row whose prediction is
    readable; responses are parsed once per request."""
    out = []
    cache: dict[str, Any] = {}
    for ts, version, path, response, row, y_true in labelled:
        if response is None:
            continue
        parsed = cache.get(response)
        if parsed is None:
            try:
                parsed = cache[response] = json.loads(response)
            except ValueError:
                continue
        if isinstance(parsed, dict):  # {"predictions": [...]} style answers
            parsed = next((v for v in parsed.values() if isinstance(v, list)), None)
        if not isinstance(parsed, list) or row >= len(parsed):
            continue
        out.append((ts, version, str(path).endswith("predict_proba"), parsed[row], json.loads(y_true)))
    if len(cache) > 100_000:
        cache.clear()
    return out


def _label(value: Any) -> str:
    """A class label as text, so 1, 1.0 and "1" from JSON are the same class."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _classification(y_true: list[Any], y_pred: list[Any], scores: list[Any] | None,
                    wanted: list[str]) -> dict[str, float | None]:
    from sklearn import metrics as m

    t, p = [_label(v) for v in y_true], [_label(v) for v in y_pred]
    labels = sorted({*t, *p})
    binary = len(labels) <= 2
    average = "binary" if binary and len(labels) == 2 else "macro"
    pos = labels[-1] if average == "binary" else 1
    out: dict[str, float | None] = {}
    if "accuracy" in wanted:
        out["accuracy"] = float(m.accuracy_score(t, p))
    for name, fn in (("precision", m.precision_score), ("recall", m.recall_score), ("f1", m.f1_score)):
        if name in wanted:
            out[name] = float(fn(t, p, average=average, pos_label=pos, zero_division=0))
    if "roc_auc" in wanted:
        out["roc_auc"] = None
        if scores is not None and len(set(y_true)) > 1:
            try:
                import numpy as np

                s = np.asarray(scores, dtype=float)
                if s.ndim == 2 and s.shape[1] == 2:
                    out["roc_auc"] = float(m.roc_auc_score(y_true, s[:, 1]))
                elif s.ndim == 2:
                    out["roc_auc"] = float(m.roc_auc_score(y_true, s, multi_class="ovr"))
            except ValueError:
                out["roc_auc"] = None  # classes absent from this bucket
    return out


def _regression(y_true: list[Any], y_pred: list[Any], wanted: list[str]) -> dict[str, float | None]:
    from sklearn import metrics as m

    t, p = [float(v) for v in y_true], [float(v) for v in y_pred]
    out: dict[str, float | None] = {}
    if "mae" in wanted:
        out["mae"] = float(m.mean_absolute_error(t, p))
    if "rmse" in wanted:
        out["rmse"] = float(math.sqrt(m.mean_squared_error(t, p)))
    if "r2" in wanted:
        out["r2"] = float(m.r2_score(t, p)) if len(t) > 1 else None
    return out


def quality_rows(labelled: list[tuple[Any, ...]], *, bucket_seconds: float, task: str | None = None,
                 metrics: list[str] | None = None) -> tuple[str | None, list[dict[str, Any]]]:
    """The task, and one row per (bucket start, version): ``labelled`` rows and the metrics."""
    rows = _rows(labelled)
    if not rows:
        return task, []
    task = infer_task([r[4] for r in rows if not r[2]] or [r[4] for r in rows], task)
    wanted = metrics or list(CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS)
    groups: dict[tuple[int, int], list[tuple[float, int, bool, Any, Any]]] = defaultdict(list)
    for row in rows:
        groups[(int(row[0] // bucket_seconds * bucket_seconds), row[1])].append(row)
    out = []
    for (start, version), members in sorted(groups.items()):
        labels = [r for r in members if not r[2]]
        probs = [r for r in members if r[2]]
        figures: dict[str, Any] = {"time": start, "version": version, "labelled": len(members)}
        if task == "classification":
            if labels:
                figures.update(_classification([r[4] for r in labels], [r[3] for r in labels], None, wanted))
            if probs and "roc_auc" in wanted:
                auc = _classification([r[4] for r in probs], [r[4] for r in probs], [r[3] for r in probs],
                                      ["roc_auc"])
                figures["roc_auc"] = auc["roc_auc"]
        elif labels:
            figures.update(_regression([r[4] for r in labels], [r[3] for r in labels], wanted))
        for name in wanted:
            figures.setdefault(name, None)
        out.append(figures)
    return task, out
