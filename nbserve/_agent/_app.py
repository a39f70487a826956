"""Where the agent's app was built; it is ``nbserve._agent._rest`` now (routers by resource).
Kept while its importers move: ``create_app`` and ``openapi_document``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._access import Tokens
from ._manager import Manager
from ._rest.app import create_app

__all__ = ["create_app", "openapi_document"]


def openapi_document() -> dict[str, Any]:
    """The agent's OpenAPI document, without running an agent (for docs/openapi.json)."""
    import tempfile

    from .._config import Home
    from ._registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp))
        registry = Registry(home.root / "registry.sqlite")
        try:
            manager = Manager(home, registry)
            try:
                from ._scheduler import Scheduler

                tokens = Tokens(registry, "unused")
                return create_app(manager, tokens, scheduler=Scheduler(home, registry)).openapi()
            finally:
                manager.monitor.close()
        finally:
            registry.close()
