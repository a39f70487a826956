"""Open Inference Protocol V2 (REST), as KServe documents it and Triton, MLServer and KServe's
clients speak it: health, server and model metadata, ``infer`` with JSON or binary tensors.
Copied into each Bento as ``nbserve_protocol_v2.py``; numpy and the standard library."""

from __future__ import annotations

import base64
import json
import math
import typing as t

import numpy as np

try:  # in a Bento: nbserve/_protocol_base.py, copied beside this module
    from nbserve_protocol_base import Answer, Call, Refused, Served, error_message, parse_json
except ImportError:  # imported from the nbserve package itself (the agent, the tests)
    from nbserve._protocol_base import Answer, Call, Refused, Served, error_message, parse_json  # type: ignore[no-redef]

__all__ = ["OpenInference", "v2_datatype"]


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
        return _v2_error(400 if 400 <= status < 500 else status, error_message(error))

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
    return parse_json(head), binary


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
