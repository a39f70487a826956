"""The agent's OpenAPI document, built without running an agent:
``python -m nbserve._agent.openapi > docs/openapi.json`` (tests/test_docs.py compares them)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from .._config import Home
from ._access import Tokens
from ._manager import Manager
from ._registry import Registry
from ._rest.app import create_app
from ._scheduler import Scheduler


def openapi_document() -> dict[str, Any]:
    """The document of an app with every router (a scheduler included), over a throwaway home."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp))
        registry = Registry(home.root / "registry.sqlite")
        try:
            manager = Manager(home, registry)
            try:
                tokens = Tokens(registry, "unused")
                return create_app(manager, tokens, scheduler=Scheduler(home, registry)).openapi()
            finally:
                manager.monitor.close()
        finally:
            registry.close()


if __name__ == "__main__":
    print(json.dumps(openapi_document(), indent=2, sort_keys=True))
