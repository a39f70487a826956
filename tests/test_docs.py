"""The docs stay true: the committed OpenAPI document is the one the agent serves."""

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
