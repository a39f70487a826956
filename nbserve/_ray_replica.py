"""What each Ray Serve replica of a version runs: the version's own BentoML service, as the ASGI
app ``bentoml serve`` would serve (its routes, checks, batching and wire formats), loaded from
the agent's BentoML store. Imported inside the replica's process, so it imports nothing of
nbserve's: the cluster's Python needs bentoml and the version's packages, not the agent."""

from __future__ import annotations

import typing as t


def app_builder(bento_tag: str) -> t.Callable[[], t.Any]:
    """A builder Ray Serve calls once per replica (``serve.ingress``); the store and the
    version's settings come from the replica's ``runtime_env`` (BENTOML_HOME, NBSERVE_*)."""

    def build() -> t.Any:
        import os

        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")  # before bentoml is imported
        import bentoml

        # standalone, as `bentoml serve` loads it: the Bento's own modules stay importable (the
        # service imports some of them when each replica starts it)
        return bentoml.load(bento_tag, standalone_load=True).to_asgi(is_main=True)

    return build
