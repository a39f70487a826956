"""How a version is described to Ray Serve, in one place for the two that describe it: the
agent's Ray engine (``_agent/_ray_engine.py``, through Serve's Python API) and ``nbserve
export ray`` (a KubeRay ``RayService``'s ``serveConfigV2``). Plain data, no Ray import."""

from __future__ import annotations

import json
from typing import Any

from ._service_template import BATCHING_ENV, VERSION_ENV
from ._windows import parse_window

__all__ = ["MAX_ONGOING", "REPLICA_IMPORT_PATH", "actor_options", "deployment_name", "ray_autoscaling",
           "replica_env"]

MAX_ONGOING = 64  # requests one replica takes at once (Serve queues the rest in its proxy)
REPLICA_IMPORT_PATH = "nbserve_ray_replica:build_app"  # _ray_replica.py, as an image holds it


def deployment_name(version: int) -> str:
    """The Serve deployment's name inside a version's application: ``v<N>``."""
    return f"v{version}"


def replica_env(version: int, batching: dict[str, Any] | None, bentoml_home: str) -> dict[str, str]:
    """The environment each replica starts with: the store it loads the Bento from, the
    version it says it is, its batching."""
    env = {"BENTOML_HOME": bentoml_home, "BENTOML_DO_NOT_TRACK": "true", VERSION_ENV: str(version)}
    if batching:
        env[BATCHING_ENV] = json.dumps(batching)
    return env


def actor_options(memory: int | None, cpus: float | None, env: dict[str, str]) -> dict[str, Any]:
    """Ray's reservation for each replica: the deployment's caps (none: no CPU reserved, so
    replicas are not held back on a small cluster) and its environment."""
    options: dict[str, Any] = {"num_cpus": cpus or 0, "runtime_env": {"env_vars": env}}
    if memory:
        options["memory"] = int(memory)
    return options


def ray_autoscaling(bounds: dict[str, Any]) -> dict[str, Any]:
    """nbserve's autoscaling setting as Ray Serve's ``autoscaling_config``. A version starts with
    one replica even when ``min`` is 0, so its parity replay and first requests find one; Ray
    removes it after ``downscale_delay`` without load."""
    delay = parse_window(bounds["downscale_delay"])
    return {"min_replicas": bounds["min"], "max_replicas": bounds["max"],
            "initial_replicas": max(bounds["min"], 1),
            "target_ongoing_requests": bounds["target_ongoing_requests"],
            "downscale_delay_s": delay, "downscale_to_zero_delay_s": delay,
            # Ray's defaults look 30 s back every 10 s: far slower than the delay a user asks for
            "metrics_interval_s": min(10.0, max(delay / 4, 0.5)), "look_back_period_s": min(30.0, max(delay, 1.0)),
            "upscale_delay_s": min(30.0, max(delay / 10, 0.5))}
