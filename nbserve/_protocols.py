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

Each adapter is a module of its own (``_protocol_v2.py``, ``_protocol_mlflow.py``,
``_protocol_openai.py``, over ``_protocol_base.py``), copied beside this one; this module is
their registry and what is said of all of them (``/schema`` examples, the docs page, captures).
Needs numpy and the standard library: no bentoml.
"""

from __future__ import annotations

import json
import typing as t

import numpy as np

try:  # in a Bento: the modules copied beside this one
    from nbserve_flavor_calls import GENERATIVE_TASKS
    from nbserve_protocol_base import GENERATION_HEADER, Answer, Call, Refused, Served
    from nbserve_protocol_mlflow import MLflowScoring
    from nbserve_protocol_openai import OpenAI
    from nbserve_protocol_v2 import OpenInference, v2_datatype
except ImportError:  # imported from the nbserve package itself (the agent, the tests)
    from nbserve._flavor_calls import GENERATIVE_TASKS  # type: ignore[no-redef]
    from nbserve._protocol_base import GENERATION_HEADER, Answer, Call, Refused, Served  # type: ignore[no-redef]
    from nbserve._protocol_mlflow import MLflowScoring  # type: ignore[no-redef]
    from nbserve._protocol_openai import OpenAI  # type: ignore[no-redef]
    from nbserve._protocol_v2 import OpenInference, v2_datatype  # type: ignore[no-redef]

__all__ = ["GENERATION_HEADER", "PROTOCOLS", "Answer", "Call", "MLflowScoring", "OpenAI", "OpenInference", "Protocol",
           "Served", "adapter_for", "captured", "example_input", "examples", "openapi_paths", "protocol_of"]


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

