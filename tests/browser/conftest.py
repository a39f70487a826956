"""Browser tests run in their own pytest process: Playwright's event loop and
pytest-jupyter's (tests/test_server_extension.py) conflict in one process.

``scripts/test`` runs the main suite with ``--ignore=tests/browser`` and then this folder
alone. If a single run collects both, the browser tests are skipped with that reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    browser = [item for item in items if HERE in Path(str(item.path)).resolve().parents]
    if browser and len(browser) < len(items):
        skip = pytest.mark.skip(reason="run tests/browser in its own pytest process (scripts/test does)")
        for item in browser:
            item.add_marker(skip)
