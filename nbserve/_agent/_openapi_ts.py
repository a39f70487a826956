"""TypeScript types for the JupyterLab panel, generated from the agent's OpenAPI document:
``python -m nbserve._agent._openapi_ts > labextension/src/agentTypes.ts``.

One exported interface per component schema (the document ``python -m nbserve._agent.openapi``
prints), enums as string-literal unions (inline for a property, a named type for an enum schema), and ``EventKind``: the event kinds of
``nbserve._events.Event``, which the document leaves a plain string on purpose (an older or
newer agent may write others). tests/test_docs.py checks the committed file is this output.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any

__all__ = ["render"]

COMMAND = "python -m nbserve._agent._openapi_ts > labextension/src/agentTypes.ts"
_REF = "#/components/schemas/"
WIDTH = 100  # the panel's line length
_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_PRIMITIVES = {"string": "string", "integer": "number", "number": "number", "boolean": "boolean",
               "null": "null"}


def render(document: dict[str, Any], event_kinds: list[str]) -> str:
    """The whole agentTypes.ts for ``document`` (an OpenAPI dict) and the known event kinds."""
    schemas = document.get("components", {}).get("schemas", {})
    parts = [
        "// Generated from the agent's OpenAPI document by nbserve/_agent/_openapi_ts.py: "
        "do not edit.\n"
        f"// Regenerate: {COMMAND}\n"
        "// (after a change to the agent's models; tests/test_docs.py fails while this file is stale).\n",
        _doc("The kinds of event this agent writes (nbserve/_events.py). `EventOut.kind` stays a string: "
             "an older or newer agent may write others.")
        + f"export type EventKind =\n{_union_lines(event_kinds)};\n",
    ]
    parts += [_declaration(name, schemas[name]) for name in sorted(schemas)]
    return "\n".join(parts)


def _declaration(name: str, schema: dict[str, Any]) -> str:
    """An interface for an object schema; a string-literal union for an enum (a StrEnum model)."""
    comment = _doc(schema["description"]) if schema.get("description") else ""
    if "enum" in schema:
        return f"{comment}export type {name} =\n{_union_lines(schema['enum'])};\n"
    if schema.get("type") != "object" or "properties" not in schema:
        raise ValueError(f"component schema {name} is neither an object with properties nor an enum")
    required = set(schema.get("required", []))
    lines = []
    for prop, spec in schema["properties"].items():
        key = prop if _IDENTIFIER.match(prop) else json.dumps(prop)
        optional = "" if prop in required else "?"
        description = spec.get("description")
        if description:
            lines.append(_doc(description, indent="  ").rstrip("\n"))
        lines.append(f"  {key}{optional}: {type_of(spec)};")
    body = "\n".join(lines)
    return f"{comment}export interface {name} {{\n{body}\n}}\n"


def type_of(spec: dict[str, Any]) -> str:
    """The TypeScript type of one JSON schema (the subset FastAPI and pydantic write)."""
    if "$ref" in spec:
        ref = spec["$ref"]
        if not ref.startswith(_REF):
            raise ValueError(f"a reference outside the component schemas: {ref}")
        return ref[len(_REF):]
    if "const" in spec:
        return _literal(spec["const"])
    if "enum" in spec:
        return " | ".join(_literal(value) for value in spec["enum"])
    for key in ("anyOf", "oneOf"):
        if key in spec:
            return _union([type_of(part) for part in spec[key]])
    if "allOf" in spec:
        if len(spec["allOf"]) != 1:
            raise ValueError(f"allOf with more than one schema: {spec}")
        return type_of(spec["allOf"][0])
    kind = spec.get("type")
    if kind is None:
        return "unknown"
    if kind == "array":
        item = type_of(spec.get("items", {}))
        return f"({item})[]" if " | " in item else f"{item}[]"
    if kind == "object":
        if "properties" in spec:
            raise ValueError(f"an inline object with properties (make it a model): {spec}")
        values = spec.get("additionalProperties", True)
        return f"Record<string, {'unknown' if values is True or values == {} else type_of(values)}>"
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    raise ValueError(f"a JSON schema type the generator does not know: {spec}")


def _union(types: list[str]) -> str:
    seen: list[str] = []
    for t in types:
        if t not in seen:
            seen.append(t)
    return " | ".join(seen)


def _union_lines(values: list[str]) -> str:
    return "\n".join(f"  | {_literal(v)}" for v in values)


def _literal(value: Any) -> str:
    """A TypeScript literal type: strings in single quotes, as the panel's code writes them."""
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return json.dumps(value)


def _doc(text: str, indent: str = "") -> str:
    """A JSDoc comment, wrapped at the panel's line length."""
    width = WIDTH - len(indent) - 3
    lines = [wrapped for line in text.replace("*/", "*\\/").strip().splitlines()
             for wrapped in (textwrap.wrap(line, width) or [""])]
    if len(lines) == 1 and len(lines[0]) <= width - 4:
        return f"{indent}/** {lines[0]} */\n"
    inner = "\n".join(f"{indent} *{' ' + line if line.strip() else ''}" for line in lines)
    return f"{indent}/**\n{inner}\n{indent} */\n"


def main() -> None:
    from .._events import Event
    from .openapi import openapi_document

    print(render(openapi_document(), [e.value for e in Event]), end="")


if __name__ == "__main__":
    main()
