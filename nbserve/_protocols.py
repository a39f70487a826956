"""Wire formats other than BentoML's own, as adapters: Open Inference Protocol V2 (KServe,
Triton, MLServer), MLflow's scoring format (``/invocations``) and OpenAI's embeddings and
completions.

Copied into each Bento as ``nbserve_protocols.py``, so a version speaks them wherever it is
served (an image on Kubernetes too). An adapter only translates: a request in its format
becomes a :class:`Call` (which of the version's APIs, and the ``data`` its ``/predict``-style
route takes) or a ready :class:`Answer` (health, metadata, a refusal); the API's JSON answers
become its format's answer. The API route itself does the rest -- the schema check, batching,
the model -- and the agent's stable URL in front does canary, shadow, capture and tokens by path,
as for ``/predict``. The agent also reads captured requests back through :func:`captured`.

Needs numpy, the standard library and the flavor calls module beside it: no bentoml.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import time
import typing as t

import numpy as np

try:  # in a Bento: nbserve/_flavor_calls.py, copied beside this module
    from nbserve_flavor_calls import GENERATIVE_TASKS  # the pipelines served as OpenAI's completions
except ImportError:  # imported from the nbserve package itself (the agent, the tests)
    from nbserve._flavor_calls import GENERATIVE_TASKS

__all__ = ["GENERATION_HEADER", "Answer", "Call", "PROTOCOLS", "Protocol", "Served", "adapter_for", "captured", "example_input", "examples",
           "openapi_paths", "protocol_of"]


# One request's generation settings (JSON), from the completions adapter to the version's API
# route, which checks them (nbserve_flavor_calls.generation_options) and hands them to the pipeline.
GENERATION_HEADER = "x-nbserve-generation"


class Answer(t.NamedTuple):
    status: int
    payload: t.Any  # JSON value, or bytes sent as they are
    content_type: str = "application/json"


class Call(t.NamedTuple):
    """What to ask the version: ``data`` (a ``{"data": ...}`` request's value) to each API in
    ``apis``; ``finish`` turns their JSON answers ({api: answer}) into the protocol's answer."""

    apis: tuple[str, ...]
    data: t.Any
    finish: t.Callable[[dict[str, t.Any]], Answer]
    headers: tuple[tuple[bytes, bytes], ...] = ()  # added to the API call (generation settings)


class Refused(Exception):
    """A request this protocol cannot take: answered ``status`` with the protocol's error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Served:
    """What a version serves, from its bundle: its name, input schema, APIs and what they return."""

    def __init__(self, bundle: dict[str, t.Any], version: str | None = None) -> None:
        self.name: str = bundle.get("deployment", "model")
        self.schema: dict[str, t.Any] = bundle.get("schema", {})
        self.kind: str = self.schema.get("kind", "frame")
        self.columns: list[dict[str, t.Any]] = self.schema.get("columns", [])
        self.names = [c["name"] for c in self.columns]
        model = bundle.get("model", {})
        self.task: str | None = model.get("pipeline_task")  # a Hugging Face pipeline's task
        methods = model.get("methods") or ["predict"]
        self.apis = ["predict", *[m for m in methods if m not in ("predict", "__call__")]]
        returned = model.get("outputs", {})
        # what each API returned in the notebook (its first method answers /predict)
        self.outputs = {api: returned.get(methods[0] if api == "predict" else api, {}) for api in self.apis}
        self.version = version  # the registry's number, when the agent said it (NBSERVE_VERSION)


# -- Open Inference Protocol V2 ------------------------------------------------------------

_V2_NUMERIC = {"BOOL": "b", "UINT8": "u", "UINT16": "u", "UINT32": "u", "UINT64": "u", "INT8": "i",
               "INT16": "i", "INT32": "i", "INT64": "i", "FP16": "f", "FP32": "f", "FP64": "f"}
_V2_DTYPES = {"BOOL": "bool", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
              "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
# What each column kind takes: the numpy kinds of the V2 datatypes it accepts.
_TAKES = {"int": "iu", "float": "fiu", "bool": "b"}


def v2_datatype(dtype: str | None, sample: t.Any = None) -> str:
    """The V2 datatype of a numpy dtype (or of a JSON sample when the dtype is not known)."""
    if dtype is None:
        if isinstance(sample, bool):
            return "BOOL"
        if isinstance(sample, int):
            return "INT64"
        return "FP64" if isinstance(sample, float) else "BYTES"
    try:
        found = np.dtype(dtype)
    except TypeError:  # pandas' own dtypes (category, string)
        return "BYTES"
    if found.kind == "b":
        return "BOOL"
    if found.kind in "iuf":
        return {"i": "INT", "u": "UINT", "f": "FP"}[found.kind] + str(found.itemsize * 8)
    return "BYTES"


def _elements(tensor: dict[str, t.Any]) -> list[t.Any]:
    """A tensor's data as a flat list (the protocol allows it flat or nested row-major)."""
    data = tensor.get("data")
    if not isinstance(data, list):
        raise Refused(400, f"input tensor {tensor.get('name')!r} has no data list")
    if data and isinstance(data[0], list):
        flat: list[t.Any] = []
        stack = [iter(data)]
        while stack:  # iterative: a hostile nesting cannot exhaust the stack
            for item in stack[-1]:
                if isinstance(item, list):
                    stack.append(iter(item))
                    break
                flat.append(item)
            else:
                stack.pop()
        return flat
    return data


def _binary_elements(raw: bytes, datatype: str) -> list[t.Any]:
    """A tensor sent in the binary data extension: little-endian values, or for BYTES each
    element as a 4-byte length and its bytes."""
    if datatype == "BYTES":
        out, at = [], 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise Refused(400, "a BYTES tensor's binary data ends inside an element's length")
            size = int.from_bytes(raw[at:at + 4], "little")
            out.append(raw[at + 4:at + 4 + size])
            at += 4 + size
        return out
    dtype = np.dtype(_V2_DTYPES[datatype])
    if len(raw) % dtype.itemsize:
        raise Refused(400, f"binary data of {len(raw)} bytes is not a whole number of {datatype} values")
    return np.frombuffer(raw, dtype=dtype).tolist()


class OpenInference:
    """Open Inference Protocol V2 over REST, as KServe documents it (``/v2/...``)."""

    name = "v2"
    prefix = "/v2"

    def handle(self, served: Served, method: str, path: str, headers: dict[str, str], body: bytes) -> Call | Answer:
        parts = [p for p in path.split("/") if p][1:]  # after "v2"
        if not parts:
            return self._get(method) or Answer(200, {"name": "nbserve", "version": "2", "extensions": ["binary_tensor_data"]})
        if parts[:1] == ["health"] and len(parts) == 2 and parts[1] in ("live", "ready"):
            return self._get(method) or Answer(200, {parts[1]: True})
        if parts[:1] != ["models"] or len(parts) < 2:
            return _v2_error(404, f"no such V2 endpoint: {path}")
        name, rest = parts[1], parts[2:]
        if name != served.name:
            return _v2_error(404, f"unknown model {name!r}: this URL serves {served.name!r}")
        version = served.version
        if rest[:1] == ["versions"]:
            if len(rest) < 2:
                return _v2_error(404, "a version is named: /v2/models/<name>/versions/<version>")
            if served.version is not None and rest[1] != served.version:
                return _v2_error(404, f"{served.name} version {rest[1]!r} is not served here")
            version, rest = rest[1], rest[2:]
        if not rest:
            return self._get(method) or Answer(200, self.metadata(served, version))
        if rest == ["ready"]:
            return self._get(method) or Answer(200, {"name": served.name, "ready": True})
        if rest != ["infer"]:
            return _v2_error(404, f"no such V2 endpoint: {path}")
        if method != "POST":
            return _v2_error(405, "infer takes POST")
        return self._infer(served, version, headers, body)

    @staticmethod
    def _get(method: str) -> Answer | None:
        return None if method in ("GET", "HEAD") else _v2_error(405, "this V2 endpoint answers GET")

    def metadata(self, served: Served, version: str | None) -> dict[str, t.Any]:
        if served.kind == "frame":
            inputs = [{"name": c["name"], "datatype": v2_datatype(c["dtype"]), "shape": [-1]} for c in served.columns]
        elif served.kind == "array":
            inputs = [{"name": "input", "datatype": v2_datatype(served.schema.get("dtype")),
                       "shape": [-1, *served.schema.get("shape", [])]}]
        else:  # text, records (JSON documents), images (file bytes)
            inputs = [{"name": "input", "datatype": "BYTES", "shape": [-1]}]
        outputs = []
        for api, spec in served.outputs.items():
            datatype = "BYTES" if spec.get("type") in ("frame", "list") else v2_datatype(spec.get("dtype"))
            outputs.append({"name": api, "datatype": datatype, "shape": [-1, *spec.get("shape", [])]})
        return {"name": served.name, "versions": [version] if version else [], "platform": "nbserve",
                "inputs": inputs, "outputs": outputs}

    def _infer(self, served: Served, version: str | None, headers: dict[str, str], body: bytes) -> Call | Answer:
        try:
            request, binary = _v2_body(headers, body)
        except Refused as exc:
            return _v2_error(exc.status, exc.message)
        if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
            return _v2_error(400, 'the request must be a JSON object with a non-empty "inputs" list of tensors')
        try:
            tensors = _v2_tensors(request["inputs"], binary)
            data = _v2_data(served, tensors)
            apis = _v2_outputs(served, request.get("outputs"))
        except Refused as exc:
            return _v2_error(exc.status, exc.message)

        def finish(answers: dict[str, t.Any]) -> Answer:
            outputs = [_v2_tensor(api, answers[api], served.outputs.get(api, {})) for api in apis]
            reply = {"model_name": served.name, "model_version": version or "", "outputs": outputs}
            if "id" in request:
                reply["id"] = request["id"]
            return Answer(200, reply)

        return Call(tuple(apis), data, finish)

    def failed(self, status: int, error: t.Any) -> Answer:
        return _v2_error(400 if 400 <= status < 500 else status, _message(error))

    def captured(self, request: t.Any, response: t.Any, served: Served) -> tuple[t.Any, t.Any]:
        tensors = _v2_tensors(request.get("inputs") or [], b"")
        data = _v2_data(served, tensors)
        predictions = None
        if isinstance(response, dict) and response.get("outputs"):
            first = response["outputs"][0]
            if first.get("name") == "predict" and len(first.get("shape", [])) == 1:
                predictions = first.get("data")
        return data, predictions


def _v2_error(status: int, message: str) -> Answer:
    return Answer(status, {"error": message})


def _v2_body(headers: dict[str, str], body: bytes) -> tuple[t.Any, bytes]:
    """The JSON part of an infer request and the binary data after it (binary tensor extension)."""
    size = headers.get("inference-header-content-length")
    head, binary = body, b""
    if size is not None:
        if not size.isdigit() or int(size) > len(body):
            raise Refused(400, "Inference-Header-Content-Length is not the length of the JSON part")
        head, binary = body[:int(size)], body[int(size):]
    return _json(head), binary


def _v2_tensors(inputs: list[t.Any], binary: bytes) -> dict[str, tuple[str, list[int], list[t.Any]]]:
    """Each input tensor as (datatype, shape, flat elements), checked against its own shape."""
    tensors: dict[str, tuple[str, list[int], list[t.Any]]] = {}
    at = 0
    for tensor in inputs:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise Refused(400, "each input tensor is an object with a name, shape, datatype and data")
        name, datatype, shape = tensor["name"], tensor.get("datatype"), tensor.get("shape")
        if datatype not in _V2_NUMERIC and datatype != "BYTES":
            raise Refused(400, f"input tensor {name!r} has an unknown datatype {datatype!r}")
        if type(shape) is not list or not shape or any(type(d) is not int or d < 0 for d in shape):
            raise Refused(400, f"input tensor {name!r} needs a shape: a list of sizes, the batch first")
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or at + size > len(binary):
                raise Refused(400, f"input tensor {name!r}: binary_data_size is past the end of the body")
            elements = _binary_elements(binary[at:at + size], datatype)
            at += size
        else:
            elements = _elements(tensor)
        if len(elements) != math.prod(shape):
            raise Refused(400, f"input tensor {name!r} has shape {shape} ({math.prod(shape)} values) "
                               f"but {len(elements)} values of data")
        if name in tensors:
            raise Refused(400, f"input tensor {name!r} is sent twice")
        tensors[name] = (datatype, shape, elements)
    return tensors


def _texts(name: str, elements: list[t.Any]) -> list[t.Any]:
    return [e.decode("utf-8", "replace") if isinstance(e, bytes) else e for e in elements]


def _v2_data(served: Served, tensors: dict[str, tuple[str, list[int], list[t.Any]]]) -> t.Any:
    """The ``data`` of a /predict request holding the same inputs."""
    if served.kind != "frame":
        if len(tensors) != 1:
            raise Refused(400, f"{served.name} takes one input tensor, got {len(tensors)}: {', '.join(tensors)}")
        name, (datatype, shape, elements) = next(iter(tensors.items()))
        if served.kind == "array":
            takes = {"b": "b", "f": "fiu"}.get(np.dtype(served.schema.get("dtype", "float64")).kind, "iu")
            if datatype == "BYTES" or _V2_NUMERIC[datatype] not in takes:
                raise Refused(400, f"input tensor {name!r} has datatype {datatype}; "
                                   f"{served.name} takes {v2_datatype(served.schema.get('dtype'))}")
            return np.asarray(elements).reshape(shape).tolist()
        if datatype != "BYTES":
            raise Refused(400, f"input tensor {name!r} has datatype {datatype}; {served.name} takes BYTES "
                               f"({'texts' if served.kind == 'text' else 'JSON documents' if served.kind == 'records' else 'image files'})")
        if served.kind == "images":
            return [base64.b64encode(e).decode("ascii") if isinstance(e, bytes) else e for e in elements]
        items = _texts(name, elements)
        if served.kind == "records":
            try:
                return [json.loads(item) for item in items]
            except (ValueError, TypeError, RecursionError):
                raise Refused(400, f"input tensor {name!r}: each element is a JSON document") from None
        return items
    columns = {c["name"]: c for c in served.columns}
    if len(tensors) == 1 and next(iter(tensors)) not in columns:  # one 2-D tensor: the columns in order
        name, (datatype, shape, elements) = next(iter(tensors.items()))
        if len(shape) != 2 or shape[1] != len(served.names):
            raise Refused(400, f"input tensor {name!r} is not a column of {served.name} ({', '.join(served.names)}); "
                               f"one tensor of shape [rows, {len(served.names)}] holds the columns in that order")
        for column in served.columns:
            _v2_takes(column, name, datatype)
        if datatype == "BYTES":
            elements = _texts(name, elements)
        width = shape[1]
        return {column: elements[j::width] for j, column in enumerate(served.names)}  # columns, as sent
    missing = [n for n in served.names if n not in tensors]
    unexpected = [n for n in tensors if n not in columns]
    if missing or unexpected:
        said = [f"missing input tensors: {', '.join(missing)}"] if missing else []
        said += [f"unexpected input tensors: {', '.join(unexpected)}"] if unexpected else []
        raise Refused(400, "; ".join(said) + f" (one tensor per column: {', '.join(served.names)})")
    rows = {shape[0] for _, shape, _ in tensors.values()}
    if len(rows) != 1:
        raise Refused(400, "input tensors differ in their first dimension (rows): "
                           + ", ".join(f"{n} {shape[0]}" for n, (_, shape, _) in tensors.items()))
    for name, (datatype, shape, _) in tensors.items():
        _v2_takes(columns[name], name, datatype)
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise Refused(400, f"input tensor {name!r} has shape {shape}; a column is [rows] or [rows, 1]")
    # {column: values}: what /predict takes as a frame's columns (and cheaper than a dict per row)
    return {n: _texts(n, tensors[n][2]) if tensors[n][0] == "BYTES" else tensors[n][2] for n in served.names}


def _v2_takes(column: dict[str, t.Any], tensor: str, datatype: str) -> None:
    takes = _TAKES.get(column["kind"])
    ok = datatype == "BYTES" if takes is None else datatype != "BYTES" and _V2_NUMERIC[datatype] in takes
    if not ok:
        raise Refused(400, f"input tensor {tensor!r} has datatype {datatype}; column {column['name']!r} "
                           f"takes {v2_datatype(column['dtype'])}")


def _v2_outputs(served: Served, outputs: t.Any) -> list[str]:
    """The APIs the requested outputs name (each of a version's methods is an output); the
    first (``predict``) when none is asked for."""
    if not outputs:
        return ["predict"]
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise Refused(400, 'outputs is a list of {"name": ...} objects')
    names = [o["name"] for o in outputs]
    unknown = [n for n in names if n not in served.apis]
    if unknown:
        raise Refused(400, f"unknown outputs: {', '.join(unknown)} (this model's outputs: {', '.join(served.apis)})")
    return names


def _v2_tensor(name: str, answer: t.Any, spec: dict[str, t.Any]) -> dict[str, t.Any]:
    """One API's answers as an output tensor: numbers keep their shape and datatype; strings
    are BYTES; records, entities and ragged lists are BYTES holding each answer's JSON."""
    try:
        array = np.asarray(answer)
        if array.dtype == object:
            raise ValueError
    except ValueError:
        return {"name": name, "datatype": "BYTES", "shape": [len(answer)],
                "data": [json.dumps(a) for a in answer]}
    if array.dtype.kind in "US":
        return {"name": name, "datatype": "BYTES", "shape": list(array.shape), "data": array.ravel().tolist()}
    datatype = v2_datatype(str(array.dtype))
    recorded = spec.get("dtype") if spec.get("type") == "array" else None
    if recorded is not None:  # JSON lost float32 and int32: the notebook's dtype says them again
        wanted = v2_datatype(recorded)
        if wanted != "BYTES" and (_V2_NUMERIC[wanted] == array.dtype.kind
                                  or (wanted.startswith("FP") and array.dtype.kind in "iu")):
            datatype = wanted
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.ravel().tolist()}


# -- MLflow's scoring protocol ---------------------------------------------------------------

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
                data = self.data_of(served, _json(body))
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
        return _mlflow_error(400 if 400 <= status < 500 else status, _message(error))

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


# -- OpenAI: embeddings, completions --------------------------------------------------------------------

_EMBEDDING_APIS = ("embed", "encode", "transform")


class OpenAI:
    """OpenAI's ``POST /v1/embeddings`` for a version that answers one vector per text (a
    ``transform``, a feature-extraction pipeline); ``/v1/completions`` and
    ``/v1/chat/completions`` for a text-generation pipeline; ``GET /v1/models``."""

    name = "openai"
    prefix = "/v1"

    def handle(self, served: Served, method: str, path: str, headers: dict[str, str], body: bytes) -> Call | Answer:
        model = {"id": served.name, "object": "model", "created": 0, "owned_by": "nbserve"}
        if path in ("/v1/models", f"/v1/models/{served.name}"):
            if method not in ("GET", "HEAD"):
                return _openai_error(405, f"{path} answers GET")
            return Answer(200, model if path.endswith(served.name) else {"object": "list", "data": [model]})
        if path.startswith("/v1/models/"):
            return _openai_error(404, f"the model {path[11:]!r} does not exist; this URL serves {served.name!r}",
                                 code="model_not_found", param="model")
        if path in ("/v1/completions", "/v1/chat/completions"):
            return self._completion(served, method, path, body)
        if path != "/v1/embeddings":
            return _openai_error(404, f"no such endpoint: {path} (this URL serves /v1/embeddings, /v1/completions, "
                                      "/v1/chat/completions and /v1/models)")
        if method != "POST":
            return _openai_error(405, "/v1/embeddings takes POST")
        if served.kind != "text":
            return _openai_error(400, f"{served.name} does not take texts (its input is {served.kind}); "
                                      "embeddings need a model that answers one vector per text", param="model")
        try:
            request = _json(body)
            texts, encoding, dimensions = self._request(served, request)
        except Refused as exc:
            return _openai_error(exc.status, exc.message, param=getattr(exc, "param", None))
        api = next((a for a in _EMBEDDING_APIS if a in served.apis), "predict")

        def finish(answers: dict[str, t.Any]) -> Answer:
            vectors = answers[api]
            if not _vectors(vectors, len(texts)):
                return _openai_error(400, f"{served.name}'s {api} does not answer one vector of numbers per text")
            if dimensions is not None and len(vectors[0]) != dimensions:
                return _openai_error(400, f"{served.name} answers vectors of {len(vectors[0])} dimensions, "
                                          f"not {dimensions}", param="dimensions")
            data = [{"object": "embedding", "index": i,
                     "embedding": (base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")
                                   if encoding == "base64" else v)}
                    for i, v in enumerate(vectors)]
            tokens = sum(len(text.split()) for text in texts)
            return Answer(200, {"object": "list", "data": data, "model": served.name,
                                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

        return Call((api,), texts, finish)

    def _completion(self, served: Served, method: str, path: str, body: bytes) -> Call | Answer:
        """``/v1/completions`` and ``/v1/chat/completions`` for a text-generation pipeline:
        each prompt generated with the request's settings; ``stream`` as server-sent events."""
        if method != "POST":
            return _openai_error(405, f"{path} takes POST")
        if served.task not in GENERATIVE_TASKS:
            return _openai_error(400, f"{served.name} does not generate text (completions need a Hugging Face "
                                      "text-generation pipeline)", param="model")
        chat = path == "/v1/chat/completions"
        try:
            request = _json(body)
            if not isinstance(request, dict):
                raise _param(400, "the body must be a JSON object", "messages" if chat else "prompt")
            model = request.get("model")
            if model not in (None, served.name):
                raise _param(404, f"the model {model!r} does not exist; this URL serves {served.name!r}", "model")
            prompts = [_chat_prompt(request.get("messages"))] if chat else _prompts(request.get("prompt"))
            options = _generation(request)
        except Refused as exc:
            return _openai_error(exc.status, exc.message, param=getattr(exc, "param", None))
        stream = request.get("stream") is True
        reply_id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)

        def finish(answers: dict[str, t.Any]) -> Answer:
            texts = [_generated(a) for a in answers["predict"]]
            created = int(time.time())
            prompt_tokens = sum(len(p.split()) for p in prompts)
            completion_tokens = sum(len(x.split()) for x in texts)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens}
            head = {"id": reply_id, "created": created, "model": served.name}
            if chat and stream:
                chunks = [{"delta": {"role": "assistant", "content": ""}, "finish_reason": None},
                          {"delta": {"content": texts[0]}, "finish_reason": None},
                          {"delta": {}, "finish_reason": "stop"}]
                return _events({**head, "object": "chat.completion.chunk", "choices": [{"index": 0, **c}]}
                               for c in chunks)
            if stream:
                return _events({**head, "object": "text_completion",
                                "choices": [{"index": i, "text": text, "finish_reason": "stop", "logprobs": None}]}
                               for i, text in enumerate(texts))
            if chat:
                return Answer(200, {**head, "object": "chat.completion", "usage": usage, "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": texts[0]}, "finish_reason": "stop"}]})
            return Answer(200, {**head, "object": "text_completion", "usage": usage, "choices": [
                {"index": i, "text": text, "finish_reason": "stop", "logprobs": None} for i, text in enumerate(texts)]})

        return Call(("predict",), prompts, finish, ((GENERATION_HEADER.encode(), json.dumps(options).encode()),))

    @staticmethod
    def _request(served: Served, request: t.Any) -> tuple[list[str], str, int | None]:
        if not isinstance(request, dict) or "input" not in request:
            raise _param(400, 'the body must be a JSON object with "model" and "input"', "input")
        model = request.get("model")
        if model not in (None, served.name):
            raise _param(404, f"the model {model!r} does not exist; this URL serves {served.name!r}", "model")
        value = request["input"]
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(v, str) for v in texts):
            raise _param(400, "input is a string or a non-empty list of strings (token arrays are not taken)", "input")
        encoding = request.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise _param(400, f"encoding_format is 'float' or 'base64', not {encoding!r}", "encoding_format")
        dimensions = request.get("dimensions")
        if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
            raise _param(400, "dimensions is a positive integer", "dimensions")
        return texts, encoding, dimensions

    def failed(self, status: int, error: t.Any) -> Answer:
        return _openai_error(400 if 400 <= status < 500 else status, _message(error),
                             kind="invalid_request_error" if status < 500 else "server_error")

    def captured(self, request: t.Any, response: t.Any, served: Served) -> tuple[t.Any, t.Any]:
        if not isinstance(request, dict):
            return None, None
        if "messages" in request:
            return [_chat_prompt(request["messages"])], None
        value = request.get("input", request.get("prompt"))
        return ([value] if isinstance(value, str) else value), None


def _chat_prompt(messages: t.Any) -> str:
    """The conversation as one prompt, a line per message and the assistant's turn last (the
    pipeline's own chat template is not used: a pipeline saved without one has none)."""
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise _param(400, 'messages is a non-empty list of {"role": ..., "content": "text"}', "messages")
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"


def _prompts(prompt: t.Any) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise _param(400, "prompt is a string or a non-empty list of strings (token arrays are not taken)", "prompt")
    return prompts


def _generation(request: dict[str, t.Any]) -> dict[str, t.Any]:
    """OpenAI's sampling fields as the pipeline's generation settings; what it cannot honour is refused."""
    for name, why in (("stop", "stop sequences"), ("logprobs", "log probabilities"), ("tools", "tools"),
                      ("suffix", "suffixes")):
        if request.get(name) not in (None, False, [], ""):
            raise _param(400, f"{why} are not supported by nbserve's completions", name)
    if request.get("n", 1) != 1:
        raise _param(400, "n must be 1: one completion per prompt", "n")
    options: dict[str, t.Any] = {"return_full_text": False}
    tokens = request.get("max_completion_tokens", request.get("max_tokens"))
    if tokens is not None:
        if not isinstance(tokens, int) or isinstance(tokens, bool) or not 1 <= tokens <= 4096:
            raise _param(400, "max_tokens is an integer from 1 to 4096", "max_tokens")
        options["max_new_tokens"] = tokens
    temperature = request.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
            raise _param(400, "temperature is a number from 0 to 2", "temperature")
        options["do_sample"] = temperature > 0  # 0: greedy, the same answer every time
        if temperature > 0:
            options["temperature"] = float(temperature)
    top_p = request.get("top_p")
    if top_p is not None:
        if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 < top_p <= 1:
            raise _param(400, "top_p is a number above 0, at most 1", "top_p")
        if options.get("do_sample"):
            options["top_p"] = float(top_p)
    return options


def _generated(answer: t.Any) -> str:
    """A text-generation pipeline's answer for one prompt: [{"generated_text": ...}] or the dict."""
    first = answer[0] if isinstance(answer, list) and answer else answer
    return str(first.get("generated_text", "")) if isinstance(first, dict) else str(first)


def _events(chunks: t.Iterable[dict[str, t.Any]]) -> Answer:
    """Server-sent events as OpenAI streams them, ending with ``[DONE]``."""
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
    return Answer(200, body.encode(), "text/event-stream")


def _param(status: int, message: str, param: str) -> Refused:
    refused = Refused(status, message)
    refused.param = param  # type: ignore[attr-defined]
    return refused


def _openai_error(status: int, message: str, *, param: str | None = None, code: str | None = None,
                  kind: str = "invalid_request_error") -> Answer:
    return Answer(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


def _vectors(answers: t.Any, count: int) -> bool:
    if not isinstance(answers, list) or len(answers) != count or not answers:
        return False
    width = len(answers[0]) if isinstance(answers[0], list) else -1
    return width > 0 and all(isinstance(v, list) and len(v) == width and
                             all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) for v in answers)


# -- shared ----------------------------------------------------------------------------------


def _json(body: bytes) -> t.Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise Refused(400, "the body is not JSON (or is nested too deeply)") from None


def _message(error: t.Any) -> str:
    """The message of a version's own error answer (nbserve's {"error": ...}, or BentoML's)."""
    if isinstance(error, dict):
        found = error.get("error")
        if isinstance(found, str):
            return found
        if isinstance(found, dict) and isinstance(found.get("message"), str):
            return found["message"]
        if isinstance(error.get("message"), str):
            return error["message"]
    return str(error)[:500]


Protocol = t.Union[OpenInference, MLflowScoring, OpenAI]
PROTOCOLS: tuple[Protocol, ...] = (OpenInference(), MLflowScoring(), OpenAI())


def examples(name: str, schema: dict[str, t.Any], example: t.Any) -> dict[str, dict[str, t.Any]]:
    """A ready request in each protocol for one example input (the stable URL's ``/schema``):
    ``{protocol: {"method", "path", "body"}}``."""
    served = Served({"deployment": name, "schema": schema})
    if served.kind == "frame":
        tensors = [{"name": c["name"], "shape": [1], "datatype": v2_datatype(c["dtype"]), "data": [example.get(c["name"])]}
                   for c in served.columns]
    elif served.kind == "array":
        flat = np.asarray(example).ravel().tolist()
        tensors = [{"name": "input", "shape": [1, *schema.get("shape", [])],
                    "datatype": v2_datatype(schema.get("dtype")), "data": flat}]
    else:
        tensors = [{"name": "input", "shape": [1], "datatype": "BYTES",
                    "data": [example if isinstance(example, str) else json.dumps(example)]}]
    found = {
        "bentoml": {"method": "POST", "path": "/predict", "body": {"data": [example]}},
        "v2": {"method": "POST", "path": f"/v2/models/{name}/infer", "body": {"inputs": tensors}},
        "mlflow": {"method": "POST", "path": "/invocations",
                   "body": {"dataframe_records": [example]} if served.kind == "frame" else {"instances": [example]}},
    }
    if served.kind == "text":
        found["openai"] = {"method": "POST", "path": "/v1/embeddings", "body": {"model": name, "input": [example]}}
    return found


def example_input(served: Served) -> t.Any:
    """An input of the version's schema (zeros, a word) for its docs page, where no sample is at hand."""
    if served.kind == "frame":
        plain = {"int": 0, "float": 0.0, "bool": False, "datetime": "2026-01-01T00:00:00"}
        return {c["name"]: (c.get("categories") or [None])[0] if c["kind"] == "category" else plain.get(c["kind"], "text")
                for c in served.columns}
    if served.kind == "array":
        return np.zeros(served.schema.get("shape", []), dtype=served.schema.get("dtype", "float64")).tolist()
    return {"text": "some text", "records": {}}.get(served.kind, "<base64 of an image file>")


def openapi_paths(served: Served) -> dict[str, t.Any]:
    """The other protocols' routes for the version's OpenAPI document (its ``/docs`` page), each
    with a ready request, so they can be tried where BentoML's own routes are."""
    ready = examples(served.name, served.schema, example_input(served))
    if served.task in GENERATIVE_TASKS:
        ready["openai"] = {"method": "POST", "path": "/v1/chat/completions",
                           "body": {"model": served.name, "messages": [{"role": "user", "content": "some text"}],
                                    "max_tokens": 16}}
    tags = {"v2": "Open Inference Protocol V2", "mlflow": "MLflow scoring", "openai": "OpenAI"}
    paths: dict[str, t.Any] = {}
    for protocol, request in ready.items():
        if protocol == "bentoml":
            continue
        paths[request["path"]] = {"post": {
            "tags": [tags[protocol]], "summary": f"{tags[protocol]} (docs/protocols.md)",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"type": "object"}, "example": request["body"]}}},
            "responses": {"200": {"description": "the answer in this protocol's format"},
                          "400": {"description": "what is wrong with the request, in this protocol's error shape"}}}}
    for path, what in ((f"/v2/models/{served.name}", "model metadata: inputs and outputs"),
                       ("/v2/health/ready", "ready"), ("/ping", "MLflow's health check")):
        paths[path] = {"get": {"tags": [tags["mlflow" if path == "/ping" else "v2"]], "summary": what,
                               "responses": {"200": {"description": what}}}}
    return paths


def adapter_for(path: str) -> Protocol | None:
    """The protocol a path belongs to, or None (BentoML's own routes)."""
    for protocol in PROTOCOLS:
        prefix = getattr(protocol, "prefix", None)
        if prefix is not None and (path == prefix or path.startswith(prefix + "/")):
            return protocol
        if path in getattr(protocol, "paths", ()):
            return protocol
    return None


def _route(path: str) -> str:
    """A stable URL's request path as the version's server sees it: without a per-version
    URL's ``/v/<N>`` and without the query."""
    if path.startswith("/v/"):
        path = "/" + path[3:].partition("/")[2]
    return path.partition("?")[0]


def protocol_of(path: str) -> str:
    """A request log's protocol column: ``bentoml`` for BentoML's own routes (``/predict``...)."""
    found = adapter_for(_route(path))
    return found.name if found is not None else "bentoml"


def captured(path: str, request: t.Any, response: t.Any, schema: dict[str, t.Any]) -> tuple[t.Any, t.Any] | None:
    """A captured request (parsed JSON) as the ``data`` /predict would have had, and the
    ``predict`` answers when the response holds them; None for what is not a prediction."""
    path = _route(path)
    protocol = adapter_for(path)
    if protocol is None:
        if not isinstance(request, dict) or "data" not in request:
            return None
        return request["data"], response if path.rstrip("/").endswith("/predict") else None
    try:
        return protocol.captured(request, response, Served({"schema": schema}))
    except (Refused, AttributeError, TypeError, ValueError):
        return None
