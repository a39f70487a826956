"""MLflow's scoring protocol, as ``mlflow models serve`` answers it: ``POST /invocations``
(``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``, CSV), ``/ping``, ``/health``.
Copied into each Bento as ``nbserve_protocol_mlflow.py``; the standard library only."""

from __future__ import annotations

import typing as t

try:  # in a Bento: nbserve/_protocol_base.py, copied beside this module
    from nbserve_protocol_base import Answer, Call, Refused, Served, error_message, parse_json
except ImportError:  # imported from the nbserve package itself (the agent, the tests)
    from nbserve._protocol_base import Answer, Call, Refused, Served, error_message, parse_json  # type: ignore[no-redef]

__all__ = ["MLflowScoring"]


_MLFLOW_FIELDS = ("dataframe_split", "dataframe_records", "instances", "inputs")


class MLflowScoring:
    """What ``mlflow models serve`` answers: ``POST /invocations``, ``GET /ping``, ``GET /health``."""

    name = "mlflow"
    paths = ("/invocations", "/ping", "/health")

    def handle(self, served: Served, method: str, path: str, headers: dict[str, str], body: bytes) -> Call | Answer:
        if path in ("/ping", "/health"):
            return Answer(200, b"\n", "text/plain") if method in ("GET", "HEAD") else _mlflow_error(405, f"{path} answers GET")
        if method != "POST":
            return _mlflow_error(405, "/invocations takes POST")
        content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        try:
            if content_type == "text/csv":
                data = _csv_records(body)
            elif content_type in ("application/json", ""):
                data = self.data_of(served, parse_json(body))
            else:
                return _mlflow_error(415, f"content type {content_type!r} is not supported: send application/json or text/csv")
        except Refused as exc:
            return _mlflow_error(exc.status, exc.message)
        return Call(("predict",), data, lambda answers: Answer(200, {"predictions": answers["predict"]}))

    def data_of(self, served: Served, payload: t.Any) -> t.Any:
        if not isinstance(payload, dict):
            raise Refused(400, "the body must be a JSON object with one of the fields " + ", ".join(_MLFLOW_FIELDS))
        given = [f for f in _MLFLOW_FIELDS if f in payload]
        if len(given) != 1:
            raise Refused(400, "the body must have exactly one of the fields " + ", ".join(_MLFLOW_FIELDS)
                          + (f" (it has {', '.join(given)})" if given else ""))
        field, value = given[0], payload[given[0]]
        if field == "dataframe_split":
            if not isinstance(value, dict) or not isinstance(value.get("data"), list):
                raise Refused(400, 'dataframe_split is {"columns": [...], "data": [[...], ...]}')
            columns = value.get("columns") or served.names
            if not all(isinstance(row, list) and len(row) == len(columns) for row in value["data"]):
                raise Refused(400, f"each row of dataframe_split.data has {len(columns)} values, one per column")
            rows = [dict(zip(columns, row)) for row in value["data"]]
            return rows if served.kind == "frame" else [r[columns[0]] for r in rows]
        if field == "dataframe_records":
            if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
                raise Refused(400, "dataframe_records is a list of {column: value} objects")
            return value if served.kind == "frame" else [next(iter(r.values()), None) for r in value]
        # instances / inputs: tensors; a dict of columns, or a list of rows (or of inputs)
        if isinstance(value, dict):
            if served.kind != "frame":
                if len(value) != 1:
                    raise Refused(400, f"{field} names one input for this model, got {', '.join(map(str, value))}")
                value = next(iter(value.values()))
            else:
                lists = [v for v in value.values() if isinstance(v, list)]
                if len(lists) != len(value) or len({len(v) for v in lists}) > 1:
                    raise Refused(400, f"{field} as columns is {{column: [values...]}}, every column as long")
                return [dict(zip(value, row)) for row in zip(*value.values())]
        if not isinstance(value, list):
            raise Refused(400, f"{field} is a list of rows (or of inputs) or a {{column: [values]}} object")
        if served.kind == "frame" and value and isinstance(value[0], list):
            return [dict(zip(served.names, row)) if isinstance(row, list) else row for row in value]
        return value

    def failed(self, status: int, error: t.Any) -> Answer:
        return _mlflow_error(400 if 400 <= status < 500 else status, error_message(error))

    def captured(self, request: t.Any, response: t.Any, served: Served) -> tuple[t.Any, t.Any]:
        data = self.data_of(served, request)
        return data, response.get("predictions") if isinstance(response, dict) else None


def _mlflow_error(status: int, message: str) -> Answer:
    code = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
    return Answer(status, {"error_code": code, "message": message})


def _csv_records(body: bytes) -> list[dict[str, t.Any]]:
    import csv
    import io

    try:
        reader = csv.DictReader(io.StringIO(body.decode("utf-8")))
        rows = [{k: _csv_value(v) for k, v in row.items()} for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise Refused(400, f"the CSV body could not be read: {exc}") from None
    if not rows:
        raise Refused(400, "the CSV body has no rows (its first line names the columns)")
    return rows


def _csv_value(text: str | None) -> t.Any:
    """A CSV cell as JSON would have it: a number when it reads as one (the schema check casts)."""
    if text is None or text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
