"""The server extension app: wires the panel's routes into Jupyter server, nothing else."""

from __future__ import annotations

from jupyter_server.extension.application import ExtensionApp

from ._handlers import routes


class NbserveExtension(ExtensionApp):
    """Serves ``/nbserve/api/...``: the nbserve client API, behind Jupyter's own auth."""

    name = "nbserve"
    load_other_extensions = True

    def initialize_handlers(self) -> None:
        self.handlers.extend(routes())
