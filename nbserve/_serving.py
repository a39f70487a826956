"""What every nbserve service does around its model, as a real module: copied into each
Bento as ``nbserve_serving.py`` beside the generated service (``nbserve_service.py``, only the
model's tag, loader, method calls and typed APIs), so it is read, linted and unit-tested as
code. It needs bentoml, numpy, pandas and the kinds module, not nbserve, so the Bento serves
anywhere. The version's input schema is read from ``nbserve_bundle.json`` beside it; requests
that do not match get a 422 naming the columns (or the items, for other kinds of input).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import threading
import types
import typing as t

import anyio
import numpy as np
import pandas as pd
from bentoml.validators import DataframeSchema
from pydantic import WithJsonSchema
from starlette.applications import Starlette
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

# Bento file names (nbserve/_service_template.py has the same; a test keeps them equal).
BUNDLE_FILE = "nbserve_bundle.json"
BATCHING_ENV = "NBSERVE_BATCHING"
VERSION_ENV = "NBSERVE_VERSION"  # the registry's number of the version served (set by the agent)

try:
    import nbserve_flavor_calls as _flavor_calls  # in a Bento: nbserve/_flavor_calls.py, copied beside
    import nbserve_kinds as _kinds  # nbserve/_kinds.py
    import nbserve_protocols as _protocols  # and nbserve/_protocols.py
except ImportError:  # imported from the nbserve package itself (its tests)
    from nbserve import _flavor_calls  # type: ignore[no-redef]
    from nbserve import _kinds  # type: ignore[no-redef]
    from nbserve import _protocols  # type: ignore[no-redef]

_NUMERIC = {"int", "float", "bool"}
_WORKER = str(os.getpid())
# The serving process reads its batching settings from the environment (set by the agent,
# or by hand when the Bento is served elsewhere): {"max_batch_size": 100, "max_latency_ms": 60000}.
BATCHING: dict | None = json.loads(os.environ.get(BATCHING_ENV) or "null")
# This version's service instance (Serving._start), which the Protocols middleware calls in
# process. A module global is this version's own: a shared server loads each version's copy.
_SERVICE: Serving | None = None
_ONE_MODEL_CALL = threading.Lock()


def configure(bundle: dict) -> None:
    """Take the version's input schema from its bundle: the columns of a DataFrame, or
    another kind of input (text, N-D arrays, records, images), checked by that kind."""
    global _COLUMNS, _NAMES, _POSITIONAL, _DTYPES, _ALL_NUMERIC, _KIND, KIND_DATA, SERVED, _UNIFORM, _INDEX
    schema = bundle.get("schema", {})
    _COLUMNS = schema.get("columns", [])
    _NAMES = [c["name"] for c in _COLUMNS]
    _POSITIONAL = bool(schema.get("positional"))
    _DTYPES = [c["dtype"] for c in _COLUMNS]
    _ALL_NUMERIC = all(c["kind"] in _NUMERIC for c in _COLUMNS)
    # Columns all of one float or int dtype: records are built straight into one array (_records_frame).
    dtypes = set(_DTYPES)
    _UNIFORM = (_UNIFORM_TYPES[_DTYPES[0]], _DTYPES[0]) if (
        _COLUMNS and not _POSITIONAL and len(dtypes) == 1 and _DTYPES[0] in _UNIFORM_TYPES) else None
    _INDEX = pd.Index(_NAMES)
    _KIND = _kinds.from_spec(schema) if schema.get("kind", "frame") != "frame" else None
    # The OpenAPI document describes such a request's data (its check stays the kind's own).
    KIND_DATA = t.Annotated[t.Any, WithJsonSchema(_KIND.json_schema() if _KIND is not None else {})]
    # what the other wire formats (nbserve_protocols.py) need to know of this version
    SERVED = _protocols.Served(bundle, os.environ.get(VERSION_ENV) or None)


# Python types a JSON value of a uniform schema's dtype may have (JSON writes 2.0 as 2 at times).
# (float32 is not among them: the check leaves JSON's float64 columns as they are for it.)
_UNIFORM_TYPES = {"float64": (float, int), "int64": (int,)}


def _records_frame(data: t.Any) -> pd.DataFrame:
    """A request's records as the DataFrame BentoML's ``Rows`` makes of them
    (``pd.DataFrame(data)``), for _conform to check. Records of a uniform schema (every
    column float64, or every column int64) whose values are all numbers of it are built straight
    into one array in the schema's order: what _conform would make of pandas' frame, in
    ~10 us instead of ~270 us for one row of 13 columns (pandas 3). Anything else is pandas'."""
    if _UNIFORM is not None and type(data) is list and data:
        types, dtype = _UNIFORM
        width = len(_NAMES)
        try:
            rows = [[record[n] for n in _NAMES] for record in data
                    if type(record) is dict and len(record) == width]
            if len(rows) == len(data) and all(type(v) in types for row in rows for v in row):
                return pd.DataFrame(np.array(rows, dtype=dtype), columns=_INDEX, copy=False)
        except (KeyError, TypeError, OverflowError):
            pass
    return pd.DataFrame(data)


def _bundle_beside() -> dict:
    path = pathlib.Path(__file__).parent / BUNDLE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


configure(_bundle_beside())  # in a Bento, the bundle file lies beside this module


def _unprocessable(message: str, **detail: t.Any) -> JSONResponse:
    return JSONResponse({"error": message, **detail}, status_code=422)


def _conform(data: pd.DataFrame) -> pd.DataFrame | JSONResponse:
    """Check a request against the deploy-time schema; reorder and cast its columns."""
    if len(data) == 0:
        return _unprocessable("the request has no rows", expected_columns=_NAMES)
    if _POSITIONAL and list(data.columns) == list(range(len(_NAMES))):
        data = data.set_axis(_NAMES, axis=1)
    got = [str(c) for c in data.columns]
    missing = [n for n in _NAMES if n not in got]
    unexpected = [g for g in got if g not in _NAMES]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing columns: " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected columns: " + ", ".join(unexpected))
        return _unprocessable(
            "; ".join(parts),
            missing_columns=missing,
            unexpected_columns=unexpected,
            expected_columns={c["name"]: c["dtype"] for c in _COLUMNS},
        )
    if got != _NAMES:
        data = data.set_axis(got, axis=1)[_NAMES]
    # Fast path (most requests; ~1 ms saved on a 1-row request): numeric columns that JSON
    # already parsed to their deploy-time dtypes hold nothing but valid values of them.
    have_dtypes = data.dtypes.tolist()
    if _ALL_NUMERIC and [str(d) for d in have_dtypes] == _DTYPES:
        return data.to_numpy() if _POSITIONAL else data
    type_errors: dict[str, dict[str, t.Any]] = {}
    out = {}
    for col, have in zip(_COLUMNS, have_dtypes):
        name, kind, dtype = col["name"], col["kind"], col["dtype"]
        values = data[name]
        if kind in _NUMERIC and str(have) == dtype:
            out[name] = values
            continue
        if kind == "float" and have.kind in "iu":
            out[name] = values.astype(dtype)
            continue
        present = values.notna()
        if kind in _NUMERIC:
            if kind == "bool":
                converted = values.map(
                    lambda v: v if isinstance(v, (bool, np.bool_)) or v is None else
                    (bool(v) if v in (0, 1) else np.nan)
                )
            else:
                converted = pd.to_numeric(values, errors="coerce")
            bad = present & converted.isna()
            if kind == "int" and not bad.any():
                bad = present & (converted.fillna(0) % 1 != 0)
            if bad.any():
                type_errors[name] = {"expected": dtype, "got": repr(values[bad].iloc[0])}
                continue
            if kind == "float" or not converted.isna().any():  # a missing int stays float (NaN)
                converted = converted.astype(dtype)
            out[name] = converted
        elif kind == "datetime":
            converted = pd.to_datetime(values, errors="coerce")
            bad = present & converted.isna()
            if bad.any():
                type_errors[name] = {"expected": dtype, "got": repr(values[bad].iloc[0])}
                continue
            out[name] = converted
        else:
            bad = present & ~values.map(lambda v: isinstance(v, str))
            if bad.any():
                type_errors[name] = {"expected": "string", "got": repr(values[bad].iloc[0])}
                continue
            out[name] = values.astype(dtype) if kind == "category" else values
    if type_errors:
        return _unprocessable(
            "wrong value types in columns: " + ", ".join(type_errors),
            type_errors=type_errors,
        )
    frame = pd.DataFrame(out, index=data.index)
    return frame.to_numpy() if _POSITIONAL else frame


_JSON_TYPES = {"int": {"type": "integer"}, "float": {"type": "number"}, "bool": {"type": "boolean"},
               "datetime": {"type": "string", "format": "date-time"}}


def _column_schema(col: dict) -> dict:
    found = dict(_JSON_TYPES.get(col["kind"], {"type": "string"}))
    if col.get("categories"):
        found["enum"] = col["categories"]
    return {**found, "title": col["name"], "description": f"dtype {col['dtype']}"}


class Rows(DataframeSchema):
    """A DataFrame of records, described in OpenAPI with the deploy-time columns (validation
    is still _conform's, so a wrong request gets a 422 that names the columns)."""

    def __get_pydantic_json_schema__(self, schema: t.Any, handler: t.Any) -> dict[str, t.Any]:
        value = super().__get_pydantic_json_schema__(schema, handler)
        if _POSITIONAL:
            row = {"type": "array", "minItems": len(_NAMES), "maxItems": len(_NAMES),
                   "description": "values in this order: " + ", ".join(_NAMES)}
        else:
            row = {"type": "object", "properties": {c["name"]: _column_schema(c) for c in _COLUMNS},
                   "required": _NAMES}
        value["items"] = row
        value.setdefault("type", "array")
        return value


def _jsonable(result: t.Any) -> t.Any:
    if hasattr(result, "toarray") and not isinstance(result, np.ndarray):  # scipy.sparse (a transform)
        result = result.toarray()
    if isinstance(result, (pd.DataFrame, pd.Series)):
        result = result.to_numpy()
    return np.asarray(result)


def _plain(result: t.Any) -> t.Any:
    """Any model's answers as JSON values: arrays and frames as lists, records as dicts."""
    if hasattr(result, "toarray") and not isinstance(result, np.ndarray):  # scipy.sparse
        result = result.toarray()
    if isinstance(result, pd.DataFrame):
        return json.loads(result.to_json(orient="records", date_format="iso"))
    if isinstance(result, (pd.Series, np.ndarray)):
        return json.loads(pd.Series(np.asarray(result).tolist()).to_json(orient="values", date_format="iso"))
    if isinstance(result, (list, tuple)):
        return json.loads(json.dumps(list(result), default=lambda v: v.item() if hasattr(v, "item") else str(v)))
    return result


class _Shed(Exception):
    """The batch dispatcher gave up on a request: it could not be answered within max_latency_ms."""


def _shed() -> t.NoReturn:
    raise _Shed


class _ArrayShare(np.ndarray):
    """One request's share of a batch's answers (an array), knowing how many rows the batch had."""

    batch_rows = 0


class _ListShare(list):
    """The same for answers that are JSON values (the kinds of input other than DataFrames)."""

    batch_rows = 0


def _share(answers: t.Any, batch_rows: int) -> t.Any:
    # Still an array or a list, so BentoML's dispatcher can join the parts of a request
    # it split across batches (it knows those containers, not a class of ours).
    share = answers.view(_ArrayShare) if isinstance(answers, np.ndarray) else _ListShare(answers)
    share.batch_rows = batch_rows
    return share


def _join(parts: t.Sequence[t.Any]) -> t.Any:
    """Requests' inputs as one batch, in the container the model takes them in."""
    first = parts[0]
    if isinstance(first, np.ndarray):  # a 2-D array's rows, N-D arrays, texts kept as an array
        return np.concatenate(parts)
    if isinstance(first, (pd.DataFrame, pd.Series)):
        return pd.concat(parts, ignore_index=True)
    return [item for part in parts for item in part]  # texts, records, images: lists


class _Batcher:
    """BentoML's adaptive batching -- its CorkDispatcher, the engine behind
    ``@bentoml.api(batchable=True)`` -- placed after each request's own validation, so a
    bad request gets its own 422 and never joins a batch, and a batch the model fails on
    is retried request by request: one request's rows cannot fail another's.

    ``answers`` turns the model's result into one sliceable answer per row: an array for
    DataFrames, a list of JSON values for the other kinds of input."""

    def __init__(self, predict: t.Callable[[t.Any], t.Any], answers: t.Callable[[t.Any], t.Any],
                 max_batch_size: int, max_latency_ms: float) -> None:
        from bentoml._internal.marshal.dispatcher import CorkDispatcher

        self._predict = predict
        self._answers = answers
        dispatcher = CorkDispatcher(
            max_latency_in_ms=max_latency_ms, max_batch_size=max_batch_size, fallback=_shed,
            get_batch_size=len, batch_dim=(0, 0),
        )
        self.submit = dispatcher(self._run)  # runs _run in a thread, one batch at a time

    def _run(self, parts: t.Sequence[t.Any]) -> list[t.Any]:
        sizes = [len(p) for p in parts]
        total = sum(sizes)
        try:
            joined = parts[0] if len(parts) == 1 else _join(parts)
            served = self._answers(self._predict(joined))
            if len(served) != total:
                raise ValueError(f"the model returned {len(served)} answers for {total} rows")
        except Exception:
            if len(parts) == 1:
                raise
            return [self._alone(p) for p in parts]
        ends = np.cumsum(sizes).tolist()
        return [_share(served[end - size:end], total) for size, end in zip(sizes, ends)]

    def _alone(self, part: t.Any) -> t.Any:
        try:
            return _share(self._answers(self._predict(part)), len(part))
        except Exception as exc:  # this request's own failure, answered to it alone
            return exc


class Files:
    """ASGI middleware: image files posted as multipart/form-data become the JSON request the
    API takes (every file, in order, base64-encoded as ``data``). Other kinds take JSON only: a
    multipart body gets a 415 (BentoML's own form parsing answers 500 to a binary part)."""

    def __init__(self, app: t.Any) -> None:
        self.app = app

    async def __call__(self, scope: t.Any, receive: t.Any, send: t.Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        if not content_type.lower().startswith(b"multipart/form-data"):
            return await self.app(scope, receive, send)
        if _KIND is None or _KIND.name != "images":
            refusal = JSONResponse({"error": "this version takes a JSON body; only image models take files",
                                    "expected": "application/json"}, status_code=415)
            return await refusal(scope, receive, send)
        import base64

        from starlette.requests import Request

        try:
            form = await Request(scope, receive).form()
            files = [value for _, value in form.multi_items() if hasattr(value, "read")]
            data = [base64.b64encode(await f.read()).decode("ascii") for f in files]
        except Exception as exc:  # a malformed multipart body is the client's
            return await JSONResponse({"error": f"the multipart body could not be read: {exc}"},
                                      status_code=400)(scope, receive, send)
        if not data:
            return await JSONResponse({"error": "the multipart body has no files", "expected": "image files"},
                                      status_code=422)(scope, receive, send)
        headers, replay = _json_body(scope["headers"], json.dumps({"data": data}).encode())
        return await self.app(dict(scope, headers=headers), replay, send)


def _json_body(headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[list[tuple[bytes, bytes]], t.Callable[[], t.Any]]:
    """The headers and the ASGI ``receive`` of a request whose JSON body a middleware wrote
    in place of the one it read."""
    headers = [(k, v) for k, v in headers if k not in (b"content-type", b"content-length")]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return headers, _replay(body)


# Request headers the adapters read (ASGI names are lower case).
_READ_HEADERS = (b"content-type", b"inference-header-content-length")
# Headers of the API's answer a protocol's answer keeps (the agent counts rows from them).
_KEPT_HEADERS = ("x-nbserve-worker", "x-nbserve-rows", "x-nbserve-batch-rows", "x-nbserve-shed", "retry-after")
_UNEXPECTED = {"error": "An unexpected error has occurred, please check the server log."}  # BentoML's words

logger = logging.getLogger("nbserve.serving")


class Protocols:
    """ASGI middleware: requests in another wire format (Open Inference V2, MLflow's
    ``/invocations``, OpenAI embeddings; nbserve_protocols.py) are translated by their adapter
    and answered by the functions behind the version's own API routes, called in process
    (:meth:`Serving.call`), so the schema check, batching and errors are those of ``/predict``
    without a second JSON encoding and parse of the rows; the answers are translated back.
    BentoML's own ``{"data": ...}`` requests to those routes are answered the same way."""

    def __init__(self, app: t.Any) -> None:
        self.app = app

    async def __call__(self, scope: t.Any, receive: t.Any, send: t.Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"].endswith("/docs.json") and scope["method"] == "GET":  # the /docs page's document
            return await self._document(scope, receive, send)
        root = scope.get("root_path", "")  # under Ray Serve, its route prefix (the path keeps it)
        path = scope["path"][len(root):] if root and scope["path"].startswith(root) else scope["path"]
        if scope["method"] == "POST" and path[1:] in SERVED.apis and _SERVICE is not None and _json(scope):
            return await self._api(scope, path[1:], await _read(receive), send)
        adapter = _protocols.adapter_for(path)
        if adapter is None:
            return await self.app(scope, receive, send)
        body = await _read(receive)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _READ_HEADERS}
        plan = adapter.handle(SERVED, scope["method"], path, headers, body)
        kept: list[tuple[bytes, bytes]] = []
        if isinstance(plan, _protocols.Call):
            answers = {}
            for api in plan.apis:
                status, kept, answer = await _call(api, plan.data, plan.headers)
                if status != 200:
                    plan = adapter.failed(status, answer)
                    break
                answers[api] = answer
            else:
                plan = plan.finish(answers)
        payload = plan.payload if isinstance(plan.payload, bytes) else json.dumps(plan.payload).encode()
        await send({"type": "http.response.start", "status": plan.status,
                    "headers": [(b"content-type", plan.content_type.encode()),
                                (b"content-length", str(len(payload)).encode()), *kept]})
        await send({"type": "http.response.body", "body": payload if scope["method"] != "HEAD" else b""})

    async def _api(self, scope: t.Any, api: str, body: bytes, send: t.Any) -> None:
        """BentoML's own ``POST /<api>`` with a ``{"data": ...}`` JSON body, answered in process
        as its route would answer it (the same function, headers and errors) without BentoML's
        per-request work around it (its serde, the pydantic input model, the output's encoding):
        ~400 us of a request's ~1.7 ms on a compiled model. Any other body goes to the route,
        so BentoML's own 400s stand."""
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):
            request = None
        if not (isinstance(request, dict) and request.keys() == {"data"}):
            return await self.app(scope, _replay(body), send)
        generation = _protocols.GENERATION_HEADER.encode()  # a client's own settings, as the route reads them
        extra = [(k, v) for k, v in scope["headers"] if k == generation]
        status, kept, answer = await _call(api, request["data"], extra)
        payload = _dumps(answer)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()),
                                (b"server", f"BentoML Service/{SERVED.name}".encode()), *kept]})
        await send({"type": "http.response.body", "body": payload})

    async def _document(self, scope: t.Any, receive: t.Any, send: t.Any) -> None:
        """BentoML's OpenAPI document with the other protocols' routes added."""
        parts: list[t.Any] = []

        async def collect(message: dict) -> None:
            parts.append(message)

        await self.app(scope, receive, collect)
        start = next((m for m in parts if m["type"] == "http.response.start"), None)
        raw = b"".join(m.get("body", b"") for m in parts if m["type"] == "http.response.body")
        try:
            document = json.loads(raw) if start is not None and start["status"] == 200 else None
        except ValueError:
            document = None
        if document is None or not isinstance(document.get("paths"), dict):  # not ours to change: as it was
            for message in parts:
                await send(message)
            return
        document["paths"].update(_protocols.openapi_paths(SERVED))
        await JSONResponse(document)(scope, receive, send)


def _json(scope: t.Any) -> bool:
    """Whether a request's body is JSON as BentoML reads it (no content type is JSON to it too)."""
    for key, value in scope["headers"]:
        if key == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json"
    return True


async def _read(receive: t.Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def _replay(body: bytes) -> t.Callable[[], t.Any]:
    """An ASGI ``receive`` that gives a body already read once more."""
    done = False

    async def receive() -> dict:
        nonlocal done
        if done:
            return {"type": "http.disconnect"}
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _dumps(answer: t.Any) -> bytes:
    """JSON as BentoML's pydantic encoding writes it: NaN and infinities as null."""
    try:
        return json.dumps(answer, allow_nan=False).encode()
    except ValueError:
        return json.dumps(_finite(answer)).encode()


def _finite(value: t.Any) -> t.Any:
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


async def _call(api: str, data: t.Any,
                extra: t.Sequence[tuple[bytes, bytes]] = ()) -> tuple[int, list[tuple[bytes, bytes]], t.Any]:
    """One call of the version's API function, in process: its status, kept headers and JSON
    answer, as its route would have answered ``{"data": data}``. Of the request's headers only
    ``extra`` reaches it: generation settings (an adapter's own, or a ``/predict`` client's)."""
    if _SERVICE is None:
        return 503, [(b"retry-after", b"1")], {"error": "this version is still starting"}
    ctx = _InProcessContext({k.decode("latin-1"): v.decode("latin-1") for k, v in extra})
    try:
        status, answer = await _SERVICE.call(api, data, ctx)
    except Exception:  # the model's own failure: logged with its traceback, answered as BentoML does
        logger.exception("%s of %s failed", api, SERVED.name)
        status, answer = 500, _UNEXPECTED
    kept = [(k.encode(), v.encode()) for k, v in ctx.response.headers.items() if k in _KEPT_HEADERS]
    return status, kept, answer


class _InProcessContext:
    """What the API functions use of ``bentoml.Context``, for a call made in process."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.request = types.SimpleNamespace(headers=headers)
        self.response = types.SimpleNamespace(headers={}, status_code=200)


def _json_answer(out: t.Any) -> t.Any:
    if isinstance(out, JSONResponse):
        return json.loads(out.body)
    return out.tolist() if isinstance(out, np.ndarray) else out


# BentoML serves its Swagger UI at "/"; "/docs" is where users look for it.
DOCS = Starlette(routes=[Route("/", lambda request: RedirectResponse(url="/"))])


class Serving:
    """What every version's service does around its model: check each request (by its
    columns or its kind), answer it, batch it. The generated service class adds the model,
    its methods' calls and the typed APIs (``nbserve/_service_template.py``)."""

    def _start(self, predictors: dict[str, t.Callable[[t.Any], t.Any]]) -> None:
        global _SERVICE
        self._predictors = predictors
        answers = _jsonable if _KIND is None else _plain
        self._batchers = ({api: _Batcher(f, answers, **BATCHING) for api, f in predictors.items()}
                          if BATCHING else {})
        _SERVICE = self

    async def call(self, api: str, data: t.Any, ctx: t.Any) -> tuple[int, t.Any]:
        """``api`` answering ``data`` (a ``{"data": ...}`` request's value) as its route would,
        without HTTP: the status and the JSON answer. Without batching the model runs in a
        thread, one call at a time with the route's own (:meth:`_predict`)."""
        if _KIND is None:
            try:
                data = _records_frame(data)  # what the route's Rows makes of a request's records
            except (ValueError, TypeError) as exc:
                return 400, {"error": f"the rows do not make a table: {exc}"}
            if BATCHING:
                out = await self._answer_batched(api, data, ctx)
            else:
                out = await anyio.to_thread.run_sync(self._answer, api, data, ctx)
        elif BATCHING:
            out = await self._answer_any_batched(api, data, ctx)
        else:
            out = await anyio.to_thread.run_sync(self._answer_any, api, data, ctx)
        return ctx.response.status_code, _json_answer(out)

    def _predict(self, api: str, inputs: t.Any) -> t.Any:
        # BentoML runs a sync API in one thread at a time; the in-process calls of the
        # Protocols middleware come from other threads, so they take turns with it here.
        with _ONE_MODEL_CALL:
            return self._predictors[api](inputs)

    @staticmethod
    def _checked(data: pd.DataFrame, ctx: t.Any) -> t.Any:
        """The request's rows conformed to the schema, or its 422 (per request, before any batching)."""
        ctx.response.headers["x-nbserve-worker"] = _WORKER  # which worker answered (scaling checks)
        frame = _conform(data)
        if isinstance(frame, JSONResponse):
            ctx.response.status_code = frame.status_code  # BentoML applies ctx's status to any response
        else:
            ctx.response.headers["x-nbserve-rows"] = str(len(frame))  # counted by the agent unparsed
        return frame

    @staticmethod
    def _decoded(data: t.Any, ctx: t.Any) -> t.Any:
        """A request of another kind than a DataFrame, checked by its kind, or its 422."""
        ctx.response.headers["x-nbserve-worker"] = _WORKER
        try:
            inputs = _KIND.decode(data)
        except _kinds.Invalid as exc:
            ctx.response.status_code = 422
            return JSONResponse({"error": exc.message, **exc.detail}, status_code=422)
        ctx.response.headers["x-nbserve-rows"] = str(len(inputs))
        return inputs

    def _answer(self, api: str, data: pd.DataFrame, ctx: t.Any) -> t.Any:
        frame = self._checked(data, ctx)
        return frame if isinstance(frame, JSONResponse) else _jsonable(self._predict(api, frame))

    def _answer_any(self, api: str, data: t.Any, ctx: t.Any) -> t.Any:
        inputs = self._decoded(data, ctx)
        if isinstance(inputs, JSONResponse):
            return inputs
        raw = ctx.request.headers.get(_protocols.GENERATION_HEADER)
        if raw is None:
            return _plain(self._predict(api, inputs))
        try:  # this request's generation settings (OpenAI's completions), for this call only
            token = _flavor_calls.GENERATION.set(_flavor_calls.generation_options(raw))
        except ValueError as exc:
            ctx.response.status_code = 422
            return JSONResponse({"error": str(exc)}, status_code=422)
        try:
            return _plain(self._predict(api, inputs))
        finally:
            _flavor_calls.GENERATION.reset(token)

    async def _answer_batched(self, api: str, data: pd.DataFrame, ctx: t.Any) -> t.Any:
        frame = self._checked(data, ctx)
        if isinstance(frame, JSONResponse):
            return frame
        served = await self._batched(api, frame, ctx)
        return served if isinstance(served, JSONResponse) else np.asarray(served)

    async def _answer_any_batched(self, api: str, data: t.Any, ctx: t.Any) -> t.Any:
        inputs = self._decoded(data, ctx)
        if isinstance(inputs, JSONResponse):
            return inputs
        if _protocols.GENERATION_HEADER in ctx.request.headers:  # a batch has one set of settings
            ctx.response.status_code = 422
            return JSONResponse({"error": "generation settings per request (max_tokens, temperature) need "
                                          "batching off: deploy this version with batching=False"}, status_code=422)
        served = await self._batched(api, inputs, ctx)
        return served if isinstance(served, JSONResponse) else list(served)

    async def _batched(self, api: str, inputs: t.Any, ctx: t.Any) -> t.Any:
        """This request's answers from a batch, or the 503 of a batch that came too late."""
        try:
            share = await self._batchers[api].submit(inputs)
        except _Shed:
            ctx.response.status_code = 503
            ctx.response.headers["retry-after"] = "1"
            ctx.response.headers["x-nbserve-shed"] = "batch-latency"  # which kind of 503 this is
            return JSONResponse(
                {"error": f"not answered within the batching latency budget (max_latency_ms="
                          f"{BATCHING['max_latency_ms']:g}): batches of this model take longer under this load",
                 "hint": "raise max_latency_ms or add workers (dep.scale(max_latency_ms=..., workers=...))",
                 "type": "batch_latency_exceeded"},
                status_code=503,
            )
        ctx.response.headers["x-nbserve-batch-rows"] = str(getattr(share, "batch_rows", 0) or len(share))
        return share
