"""What every wire-format adapter shares: a request's plan (:class:`Call`), a ready
:class:`Answer`, a refusal (:class:`Refused`), what a version serves (:class:`Served`), and the
JSON helpers. Copied into each Bento as ``nbserve_protocol_base.py``; the standard library only."""

from __future__ import annotations

import json
import typing as t

__all__ = ["GENERATION_HEADER", "Answer", "Call", "Refused", "Served", "error_message", "parse_json"]


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


def parse_json(body: bytes) -> t.Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise Refused(400, "the body is not JSON (or is nested too deeply)") from None


def error_message(error: t.Any) -> str:
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
