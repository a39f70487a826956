"""Model quality from real outcomes: labelled rows joined to the predictions served.

Figures are scikit-learn's metric functions on the rows of each (time bucket, version);
nothing here reimplements a metric. A row counts once its label arrived (``dep.feedback``)
and its request was sampled (the sampled log holds the prediction it was given).

The rows are streamed oldest first and only one time bucket is held at a time (the rows of
every version in it, as plain values and then numpy arrays), so memory follows the largest
bucket, not the window.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from ..errors import InvalidArgument

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse", "r2")
METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS


def parse_ids(ids: Iterable[Any]) -> list[tuple[str, int]]:
    """Row ids as ``"<request id>:<row>"`` (what ``dep.predict(..., ids=True)`` returns) or a
    bare request id for a one-row request."""
    parsed: list[tuple[str, int]] = []
    append = parsed.append
    for raw in ids:
        text = raw if type(raw) is str else str(raw)
        rid, sep, row = text.rpartition(":")
        if sep and row.isdigit() and rid:
            append((rid, 0 if row == "0" else int(row)))
        else:
            append((text, 0))
    return parsed


def check_metrics(names: Iterable[str] | None) -> list[str] | None:
    if names is None:
        return None
    chosen = [n.strip().lower() for n in names if n and n.strip()]
    unknown = sorted(set(chosen) - set(METRICS))
    if unknown:
        raise InvalidArgument(f"unknown metric(s): {', '.join(unknown)}", hint=f"metrics: {', '.join(METRICS)}")
    return chosen


_CACHE_LIMIT = 65_536  # distinct JSON texts remembered while reading (predictions, outcomes)


class _Group:
    """One (bucket, version): outcomes and predictions of the label rows (``/predict``...)
    and of the probability rows (``/predict_proba``)."""

    __slots__ = ("y_true", "y_pred", "p_true", "scores")

    def __init__(self) -> None:
        self.y_true: list[Any] = []
        self.y_pred: list[Any] = []
        self.p_true: list[Any] = []
        self.scores: list[Any] = []

    def __len__(self) -> int:
        return len(self.y_true) + len(self.p_true)


_UNREADABLE: list[Any] = []  # a response with no list of predictions in it (never has a row)


def _predictions(response: str) -> list[Any]:
    """The list of predictions in a response: a JSON list, or the first list in a JSON object
    (``{"predictions": [...]}`` style answers)."""
    try:
        parsed = json.loads(response)
    except ValueError:
        return _UNREADABLE
    if isinstance(parsed, dict):
        parsed = next((v for v in parsed.values() if isinstance(v, list)), None)
    return parsed if isinstance(parsed, list) else _UNREADABLE


def _discrete(v: Any) -> bool:
    return isinstance(v, (str, bool)) or (isinstance(v, (int, float)) and float(v).is_integer())


def infer_task(y_true: list[Any], declared: str | None) -> str:
    if declared in ("classification", "regression"):
        return declared
    return "classification" if all(_discrete(v) for v in y_true) else "regression"


def _label(value: Any) -> str:
    """A class label as text, so 1, 1.0 and "1" from JSON are the same class."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _encode(y_true: list[Any], y_pred: list[Any]) -> tuple[list[str], Any, Any]:
    """The classes as text, sorted, and the index of each value's class: 1, 1.0 and "1" are one
    class. scikit-learn then counts integer arrays instead of Python strings (the figures are
    the same: only the names of the classes change, not which rows agree)."""
    import numpy as np

    values = y_true + y_pred
    if set(map(type, values)) == {int}:  # the usual case: integer classes
        try:
            distinct, codes = np.unique(np.asarray(values, dtype=np.int64), return_inverse=True)
        except OverflowError:
            distinct = None
        if distinct is not None:
            texts = [str(v) for v in distinct.tolist()]
            order = sorted(range(len(texts)), key=texts.__getitem__)
            rank = np.empty(len(order), dtype=np.intp)
            rank[order] = np.arange(len(order))
            codes = rank[codes.ravel()]
            return [texts[i] for i in order], codes[:len(y_true)], codes[len(y_true):]
    texts = [_label(v) for v in values]
    classes = sorted(set(texts))
    index = {c: i for i, c in enumerate(classes)}
    codes = np.fromiter(map(index.__getitem__, texts), dtype=np.intp, count=len(texts))
    return classes, codes[:len(y_true)], codes[len(y_true):]


def _classification(y_true: list[Any], y_pred: list[Any], scores: list[Any] | None,
                    wanted: list[str]) -> dict[str, float | None]:
    from sklearn import metrics as m

    out: dict[str, float | None] = {}
    if any(name in wanted for name in ("accuracy", "precision", "recall", "f1")):
        classes, t, p = _encode(y_true, y_pred)
        binary = len(classes) <= 2
        average = "binary" if binary and len(classes) == 2 else "macro"
        pos = len(classes) - 1 if average == "binary" else 1  # the last class, as text
        if "accuracy" in wanted:
            out["accuracy"] = float(m.accuracy_score(t, p))
        if any(name in wanted for name in ("precision", "recall", "f1")):
            # What precision_score, recall_score and f1_score each return, in one call.
            figures = m.precision_recall_fscore_support(t, p, average=average, pos_label=pos, zero_division=0)
            for name, value in zip(("precision", "recall", "f1"), figures[:3]):
                if name in wanted:
                    out[name] = float(value)
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
    import numpy as np
    from sklearn import metrics as m

    t = np.fromiter(map(float, y_true), dtype=float, count=len(y_true))
    p = np.fromiter(map(float, y_pred), dtype=float, count=len(y_pred))
    out: dict[str, float | None] = {}
    if "mae" in wanted:
        out["mae"] = float(m.mean_absolute_error(t, p))
    if "rmse" in wanted:
        out["rmse"] = float(math.sqrt(m.mean_squared_error(t, p)))
    if "r2" in wanted:
        out["r2"] = float(m.r2_score(t, p)) if len(t) > 1 else None
    return out


def _figures(start: int, version: int, group: _Group, task: str, wanted: list[str]) -> dict[str, Any]:
    figures: dict[str, Any] = {"time": start, "version": version, "labelled": len(group)}
    if task == "classification":
        if group.y_true:
            figures.update(_classification(group.y_true, group.y_pred, None, wanted))
        if group.p_true and "roc_auc" in wanted:
            auc = _classification(group.p_true, group.p_true, group.scores, ["roc_auc"])
            figures["roc_auc"] = auc["roc_auc"]
    elif group.y_true:
        figures.update(_regression(group.y_true, group.y_pred, wanted))
    for name in wanted:
        figures.setdefault(name, None)
    return figures


class _NotClassification(Exception):
    """A label row's outcome is not discrete: the task is regression."""


def _bucket_key(bucket_seconds: float) -> Any:
    return lambda r: r[0] // bucket_seconds


def _stream(labelled: Iterable[tuple[Any, ...]], bucket_seconds: float, task: str, wanted: list[str],
            guessing: bool) -> tuple[list[dict[str, Any]], bool, bool]:
    """Figures per (bucket, version), holding one bucket at a time; the rows must come in
    bucket order. Also: whether there were label rows, and whether every outcome of the
    probability rows was discrete (for the guess). ``guessing``: ``task`` is a guess
    (classification): stop as soon as a label row's outcome is not discrete.

    A row counts when its prediction is readable: a response that is a JSON list (or an
    object holding one) with an element at the row's index. Each distinct response, outcome
    and path text is looked at once (up to a bound)."""
    out: list[dict[str, Any]] = []
    groups: dict[int, _Group] = {}
    quotient: float | None = None
    current: int | None = None
    any_labels, proba_discrete = False, True
    responses: dict[str, list[Any]] = {}
    outcomes: dict[str, tuple[Any, bool]] = {}
    paths: dict[Any, bool] = {}
    loads = json.loads
    for ts, version, path, response, row, y_true in labelled:
        if response is None:
            continue
        predictions = responses.get(response)
        if predictions is None:
            predictions = _predictions(response)
            if len(responses) < _CACHE_LIMIT:
                responses[response] = predictions
        if row >= len(predictions):
            continue
        outcome = outcomes.get(y_true)
        if outcome is None:
            value = loads(y_true)
            outcome = (value, _discrete(value))
            if len(outcomes) < _CACHE_LIMIT:
                outcomes[y_true] = outcome
        q = ts // bucket_seconds
        if q != quotient:
            quotient = q
            start = int(q * bucket_seconds)
            if start != current:
                if current is not None:
                    if start < current:
                        raise ValueError("labelled rows must come oldest first")
                    out.extend(_figures(current, v, groups[v], task, wanted) for v in sorted(groups))
                current, groups = start, {}
        group = groups.get(version)
        if group is None:
            group = groups[version] = _Group()
        is_proba = paths.get(path)
        if is_proba is None:
            is_proba = paths[path] = str(path).endswith("predict_proba")
        if is_proba:
            if not outcome[1]:
                proba_discrete = False
            group.p_true.append(outcome[0])
            group.scores.append(predictions[row])
        else:
            if guessing and not outcome[1]:
                raise _NotClassification
            any_labels = True
            group.y_true.append(outcome[0])
            group.y_pred.append(predictions[row])
    if current is not None:
        out.extend(_figures(current, v, groups[v], task, wanted) for v in sorted(groups))
    return out, any_labels, proba_discrete


def quality_rows(labelled: Iterable[tuple[Any, ...]], *, bucket_seconds: float, task: str | None = None,
                 metrics: list[str] | None = None) -> tuple[str | None, list[dict[str, Any]]]:
    """The task, and one row per (bucket start, version): ``labelled`` rows and the metrics.

    ``labelled``: (ts, version, path, response JSON, row, y_true JSON) rows, as
    ``Monitor.labelled`` gives them: oldest first, and it can be iterated again; only then is
    the input streamed (a one-shot iterator is read into a list, a list out of time order is
    sorted by bucket). Without a declared ``task`` it is classification when every outcome is
    discrete (of the label rows, or of all rows if there are only probability rows): figures
    are computed as classification while that holds, and once more as regression if it fails.
    """
    if iter(labelled) is labelled:  # a one-shot iterator
        labelled = list(labelled)
    if isinstance(labelled, (list, tuple)):
        key = _bucket_key(bucket_seconds)
        if any(key(labelled[i]) > key(labelled[i + 1]) for i in range(len(labelled) - 1)):
            labelled = sorted(labelled, key=key)  # stable: input order within a bucket

    def wanted_for(kind: str) -> list[str]:
        return metrics or list(CLASSIFICATION_METRICS if kind == "classification" else REGRESSION_METRICS)

    if task in ("classification", "regression"):
        return task, _stream(labelled, bucket_seconds, task, wanted_for(task), guessing=False)[0]
    try:
        out, any_labels, proba_discrete = _stream(
            labelled, bucket_seconds, "classification", wanted_for("classification"), guessing=True)
    except _NotClassification:
        out, any_labels, proba_discrete = None, True, False
    if out == []:
        return task, []  # no readable rows: the task stays as declared
    if out is not None and (any_labels or proba_discrete):
        return "classification", out
    return "regression", _stream(labelled, bucket_seconds, "regression", wanted_for("regression"),
                                 guessing=False)[0]
