"""The Jupyter server extension behind the JupyterLab panel.

Enabled by ``jupyter-config/jupyter_server_config.d/nbserve.json`` (installed to
``etc/jupyter/jupyter_server_config.d``); nothing in :mod:`nbserve` imports this package,
so ``import nbserve`` never pulls in jupyter_server.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from ._extension import NbserveExtension

    return [{"module": "nbserve._jupyter", "app": NbserveExtension}]

