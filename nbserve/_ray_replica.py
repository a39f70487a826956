"""What each Ray Serve replica of a version runs: the version's own BentoML service, as the ASGI
app ``bentoml serve`` would serve (its routes, checks, batching and wire formats), loaded from
the BentoML store named by ``BENTOML_HOME``. Imported inside Ray's processes, so it imports
nothing of nbserve's: the cluster's Python needs bentoml, Ray and the version's packages, not
the agent. ``nbserve export ray`` copies this file into the image as ``nbserve_ray_replica.py``.

The agent's Ray engine builds its applications with :func:`version_deployment`; a Serve config
(KubeRay's ``serveConfigV2``, ``serve deploy``) names :func:`build_app` as its ``import_path``.
"""

from __future__ import annotations

import typing as t


def app_builder(bento_tag: str) -> t.Callable[[], t.Any]:
    """A builder Ray Serve calls once per replica (``serve.ingress``); the store and the
    version's settings come from the replica's environment (BENTOML_HOME, NBSERVE_*)."""

    def build() -> t.Any:
        import os

        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")  # before bentoml is imported
        import bentoml

        # standalone, as `bentoml serve` loads it: the Bento's own modules stay importable (the
        # service imports some of them when each replica starts it)
        return bentoml.load(bento_tag, standalone_load=True).to_asgi(is_main=True)

    return build


def version_deployment(bento_tag: str, name: str) -> t.Any:
    """The Serve deployment of one version: one ingress whose replicas each run its Bento."""
    from ray import serve

    return serve.deployment(serve.ingress(app_builder(bento_tag))(), name=name)


def build_app(args: dict[str, t.Any]) -> t.Any:
    """The application builder of a Serve config: ``args`` holds ``bento_tag`` and the
    deployment's ``name`` (``v<N>``); replicas, resources and autoscaling come from the config's
    ``deployments`` entry of that name."""
    return version_deployment(str(args["bento_tag"]), str(args.get("name") or "version")).bind()
