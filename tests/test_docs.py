"""The docs stay true: the committed OpenAPI document is the one the agent serves, and the
panel's TypeScript types (labextension/src/agentTypes.ts) are the ones it generates."""

from __future__ import annotations

import json

from nbserve._agent.openapi import openapi_document

from .conftest import repo_root


def test_committed_openapi_matches_the_agent():
    committed = json.loads((repo_root() / "docs" / "openapi.json").read_text())
    assert committed == json.loads(json.dumps(openapi_document())), (
        "docs/openapi.json is stale: run `python -m nbserve._agent.openapi > docs/openapi.json`"
    )


def test_every_documented_error_is_in_the_tree():
    text = (repo_root() / "docs" / "api.md").read_text()
    from nbserve import errors

    for name in errors.__all__:
        if name[0].isupper():
            assert f"`{name}`" in text, f"{name} is missing from docs/api.md"


def test_committed_reference_matches_the_docstrings():
    from nbserve._reference import render

    committed = (repo_root() / "docs" / "reference.md").read_text()
    assert committed == render(), "docs/reference.md is stale: run `python -m nbserve._reference > docs/reference.md`"
    assert "(undocumented)" not in committed, "every public function and method has a docstring"


def _agent_types(document: dict) -> str:
    from nbserve._agent._openapi_ts import render
    from nbserve._events import Event

    return render(document, [e.value for e in Event])


def test_committed_panel_types_match_the_agents_openapi():
    committed = (repo_root() / "labextension" / "src" / "agentTypes.ts").read_text()
    assert committed == _agent_types(openapi_document()), (
        "labextension/src/agentTypes.ts is stale: run "
        "`python -m nbserve._agent._openapi_ts > labextension/src/agentTypes.ts`"
    )


def test_the_panel_types_cover_every_component_schema():
    import re

    document = openapi_document()
    text = _agent_types(document)
    interfaces = dict(re.findall(r"^export interface (\w+) \{\n(.*?)^\}", text, re.S | re.M))
    schemas = document["components"]["schemas"]
    declared = re.findall(r"^export (?:interface|type) (\w+)", text, re.M)
    assert sorted(declared) == sorted([*schemas, "EventKind"]), "one declaration per component schema"
    for name, schema in schemas.items():
        if "enum" in schema:
            continue
        fields = set(re.findall(r"^  (\w+)\??: ", interfaces[name], re.M))
        assert fields == set(schema["properties"]), f"{name}: every property, nothing else"
    from nbserve._events import Event

    kinds = re.search(r"^export type EventKind =\n(.*?);$", text, re.S | re.M)
    assert kinds and set(re.findall(r"'(\w+)'", kinds.group(1))) == {e.value for e in Event}


def test_the_generator_types_what_pydantic_writes():
    from nbserve._agent._openapi_ts import render

    schemas = {
        "Mode": {"enum": ["a", "b'c"], "type": "string", "description": "how"},
        "Row": {"type": "object", "required": ["mode", "n"], "properties": {
            "mode": {"$ref": "#/components/schemas/Mode"},
            "n": {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "a count"},
            "tags": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "extra": {"type": "object", "additionalProperties": {"type": "number"}},
            "kind": {"const": "x", "type": "string"},
            "odd-key": {},
        }},
    }
    text = render({"components": {"schemas": schemas}}, ["k"])
    assert "export type Mode =\n  | 'a'\n  | 'b\\'c';\n" in text
    assert "export interface Row {\n  mode: Mode;\n  /** a count */\n  n: number | null;\n" in text
    assert "  tags?: (string | null)[];\n  extra?: Record<string, number>;\n  kind?: 'x';\n" in text
    assert '  "odd-key"?: unknown;\n}' in text
