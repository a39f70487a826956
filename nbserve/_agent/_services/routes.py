"""What a stable URL answers besides the live version: ``/v/<number or alias>/...`` (that
version's server; Open Inference V2's ``/v2/models/<name>/versions/<N>/...`` likewise),
``/metadata`` and ``/schema`` (also under ``/v/...``), ``POST /feedback``; and the aliases
that name versions. The proxy calls :meth:`StableRoutes.router_for`'s router only for those
paths."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..._kinds import INPUT_COLUMN
from ..._protocols import examples
from ...errors import InvalidArgument, NbserveError, NotFound
from .._insights import read_reference
from .._proxy import LocalAnswer, Router
from .fleet import Fleet, upstream_of
from .readings import Readings


_V2_MODELS = b"/v2/models/"


class StableRoutes:
    def __init__(self, fleet: Fleet, readings: Readings) -> None:
        self.fleet = fleet
        self.registry = fleet.registry
        self.readings = readings

    def router_for(self, name: str) -> Router:
        fleet = self.fleet

        def route(method: bytes, url: bytes, body: bytes) -> Any:
            path, _, query = url.partition(b"?")
            number: int | None = None
            if path.startswith(b"/v/"):
                key, _, rest = path[3:].partition(b"/")
                number = self._resolve_version(name, key.decode("latin-1"))
                if isinstance(number, LocalAnswer):
                    return number
                path = b"/" + rest
                if rest not in (b"metadata", b"schema"):
                    return self._to_version(name, number, path, query)
            elif path.startswith(_V2_MODELS):
                # Open Inference V2 names versions in its own path: .../versions/<N or alias>/...
                model, _, rest = path[len(_V2_MODELS):].partition(b"/")
                if model.decode("latin-1") != name or not rest.startswith(b"versions/"):
                    return None  # the live version answers (an unknown model's 404 too)
                key, _, tail = rest[len(b"versions/"):].partition(b"/")
                number = self._resolve_version(name, key.decode("latin-1"))
                if isinstance(number, LocalAnswer):
                    return number  # 404 {"error": ...}, as V2 answers an unknown version
                path = _V2_MODELS + model + b"/versions/" + str(number).encode() + (b"/" + tail if tail else b"")
                return self._to_version(name, number, path, query)
            if path in (b"/metadata", b"/schema"):
                if method not in (b"GET", b"HEAD"):
                    return _answer(405, {"error": f"{path.decode()} answers GET", "hint": "use GET"})
                if number is None:
                    endpoint = fleet.endpoint_of(name)
                    live = endpoint.upstream if endpoint is not None else None
                    if live is None:
                        return _answer(503, {"error": f"{name} has no serving version", "hint": "deploy one"})
                    number = int(live.label)
                return self._version_info(name, number, path[1:].decode())
            if path == b"/feedback":
                if method != b"POST":
                    return _answer(405, {"error": "/feedback takes POST", "hint": "POST {ids, y_true}"})
                return self._feedback_answer(name, body)
            return None  # anything else: the live version, as usual

        return route

    def _to_version(self, name: str, number: int, path: bytes, query: bytes) -> Any:
        """Forward to version ``number``'s own server, or say it is not running."""
        proc = self.fleet.process(name, number)
        if proc is None or not proc.ready:
            return _answer(503, {"error": f"v{number} of {name} is not running",
                                 "hint": "only the live and warm versions answer; roll back to it "
                                         "or deploy it again to run it"})
        return upstream_of(proc), path + (b"?" + query if query else b"")

    def _resolve_version(self, name: str, key: str) -> Any:
        if key.isdigit():  # 18 digits fit SQLite's INTEGER; a longer number names no version
            number = int(key) if len(key) <= 18 else None
        else:
            number = self.fleet.get_row(name).aliases.get(key)
        if number is None or self.registry.get_version(name, int(number)) is None:
            return _answer(404, {"error": f"{name} has no version or alias {key!r}",
                                 "hint": "use /v/<number>/... or an alias set with dep.alias(name, version)"})
        return int(number)

    def _version_info(self, name: str, number: int, kind: str) -> Any:
        """The cached answer (versions are immutable), or a coroutine that builds it off the
        event loop the first time (it reads the Bento's reference sample)."""
        answers = self.fleet.state(name).answers
        cached = answers.get((number, kind))
        if cached is not None:
            return cached

        async def build() -> LocalAnswer:
            try:
                payload = await asyncio.to_thread(self.metadata if kind == "metadata" else self.schema, name, number)
            except NbserveError as exc:
                return _answer(exc.status, {"error": exc.message, "hint": exc.hint or ""})
            answer = answers[(number, kind)] = _answer(200, payload)
            return answer

        return build()

    def metadata(self, name: str, number: int) -> dict[str, Any]:
        """What a version is: model, packages, provenance, who and when (immutable)."""
        v = self.fleet.get_version(name, number)
        meta = v.metadata
        prov = meta.get("provenance") or {}
        return {
            "deployment": name, "version": number, "bento": v.bento_tag, "created_at": v.created_at,
            "created_by": v.created_by, "model": meta.get("model"), "description": meta.get("description"),
            "card": meta.get("card") or {}, "packages": prov.get("packages"),
            "python": prov.get("python"), "provenance": prov, "release": meta.get("release"),
        }

    def schema(self, name: str, number: int) -> dict[str, Any]:
        """A version's input schema and an example row from its reference sample."""
        v = self.fleet.get_version(name, number)
        example: Any = None
        schema = dict(v.metadata.get("schema", {}))
        schema.pop("vocabulary", None)  # the text kind's drift reference: large, not a schema
        try:
            _, bento_path = self.fleet.reference_path(name, number)
            frame = read_reference(bento_path)
            columns = [c["name"] for c in schema.get("columns", [])]
            if len(frame) and INPUT_COLUMN in frame.columns:
                example = json.loads(frame[INPUT_COLUMN].iloc[0])
            elif len(frame) and columns:
                example = json.loads(frame[columns].head(1).to_json(orient="records", date_format="iso"))[0]
        except (NbserveError, OSError, KeyError, ValueError):
            example = None
        return {"deployment": name, "version": number, "kind": schema.get("kind", "frame"), "schema": schema,
                "example": example, "request": {"data": [example]} if example is not None else None,
                # the same request in each wire format the version speaks (docs/protocols.md)
                "requests": examples(name, schema, example) if example is not None else None}

    def _feedback_answer(self, name: str, body: bytes) -> Any:
        async def run() -> LocalAnswer:
            try:
                payload = json.loads(body or b"{}")
                ids, y_true = payload["ids"], payload["y_true"]
            except RecursionError:  # like the REST API: a client's mistake, not a 500
                return _answer(400, {"error": "the body is JSON nested too deeply",
                                     "hint": "send {\"ids\": [...], \"y_true\": [...]} with flat lists"})
            except (ValueError, KeyError, TypeError):
                return _answer(400, {"error": "the body must be JSON {\"ids\": [...], \"y_true\": [...]}",
                                     "hint": "ids are the x-request-id of each prediction (\"<id>:<row>\")"})
            try:
                report = await asyncio.to_thread(self.readings.feedback, name, ids, y_true)
            except NbserveError as exc:
                return _answer(exc.status, {"error": exc.message, "hint": exc.hint or ""})
            return _answer(200, report)

        return run()

    def set_alias(self, name: str, alias: str, number: int | None, *, actor: str | None) -> dict[str, int]:
        """Name a version (``None``: remove the alias); ``/v/<alias>/...`` then calls it."""
        row = self.fleet.get_row(name)
        if not alias or alias.isdigit() or len(alias) > 63 or not alias.replace("-", "").replace("_", "").isalnum():
            raise InvalidArgument(f"invalid alias {alias!r}",
                                  hint="letters, digits, '-' and '_' (not only digits), up to 63 characters")
        aliases = dict(row.aliases)
        before = aliases.get(alias)
        if number is None:
            if aliases.pop(alias, None) is None:
                raise NotFound(f"{name} has no alias {alias!r}")
        else:
            self.fleet.get_version(name, number)
            aliases[alias] = number
        self.registry.update_deployment(name, aliases=aliases)
        self.registry.add_event(
            "alias_set" if number is not None else "alias_removed",
            f"alias {alias} -> v{number}" if number is not None else f"alias {alias} removed (was v{before})",
            deployment=name, version=number, actor=actor, data={"alias": alias, "before": before, "after": number},
        )
        return aliases


def _answer(status: int, payload: Any) -> LocalAnswer:
    return LocalAnswer(status, json.dumps(payload, default=str).encode())
