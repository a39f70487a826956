"""A deployment's settings (``dep.configure``, ``dep.scale``): their defaults and their one validation."""

from __future__ import annotations

from typing import Any

from ..._settings import DEPLOY_SETTINGS, ENGINES, knob_row
from ..._windows import parse_window
from ...errors import InvalidArgument
from .._limits import Limits, parse_autoscaling, parse_batching, parse_cpus, parse_memory
from .._rollout import check_gates

# What a deployment's config holds unless set (``dep.configure(...)``).
DEFAULT_CONFIG: dict[str, Any] = {
    "capture": True,  # record latency and status of every request through the stable URL
    "sample_rate": 1.0,  # share of requests whose inputs and outputs may be kept ...
    "sample_budget_per_minute": 600,  # ... up to this many a minute
    "drift": {},  # nbserve._drift.DriftConfig fields: methods, thresholds, drift share
    "drift_window": "1h",  # the traffic the summary's drift flag looks at
    "gates": {},  # what a canary or shadow must meet: p99_ms, error_rate, drift_share, min_requests, window
    # "token": the stable URL needs a token allowed to predict; "open": it does not; None:
    # the agent's default (open on a loopback agent without TLS, token otherwise).
    "predict_auth": None,
    # Serving resources (applied when a server starts; dep.scale() restarts the live one).
    "workers": 1,  # BentoML worker processes behind the stable URL
    "memory": None,  # bytes: a cap on the server's whole process tree (cgroups, else a watchdog)
    "cpus": None,  # cores: a CFS quota (cgroups), else CPU affinity
    "idle_timeout": None,  # e.g. "15m": stop the servers after this long without requests (scale to zero)
    # BentoML's adaptive batching: None (off) or {"max_batch_size": rows, "max_latency_ms": ms}
    "batching": None,
    # Ray Serve's autoscaler (Ray versions): None (a fixed count, ``workers``) or
    # {"min", "max", "target_ongoing_requests", "downscale_delay"}
    "autoscaling": None,
    "engine": None,  # where the next version runs: "local", "ray", or None (the agent's default)
}
RESTARTING_SETTINGS = ("workers", "memory", "cpus", "batching", "autoscaling")  # a server restarts to change them


def validate_config(config: dict[str, Any]) -> None:
    """Check every setting of a whole config; normalises memory, cpus and batching in place."""
    workers, row = config["workers"], knob_row("workers")
    if isinstance(workers, bool) or not isinstance(workers, int) or not row.within(workers):
        raise InvalidArgument(f"workers must be a whole number {row.bounds_text}, got {workers!r}")
    config["memory"] = parse_memory(config["memory"])
    config["batching"] = parse_batching(config["batching"])
    config["cpus"] = parse_cpus(config["cpus"])
    config["autoscaling"] = parse_autoscaling(config["autoscaling"])
    if config["engine"] not in (None, *ENGINES):
        raise InvalidArgument(f"engine must be one of {', '.join(ENGINES)}, got {config['engine']!r}")
    if config["idle_timeout"] is not None:
        parse_window(config["idle_timeout"])
    if config["predict_auth"] not in (None, "token", "open"):
        raise InvalidArgument(f"predict_auth must be 'token', 'open' or null (the agent's default), "
                              f"got {config['predict_auth']!r}")
    if not isinstance(config["capture"], bool):
        raise InvalidArgument("capture must be true or false")
    rate = config["sample_rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise InvalidArgument(f"sample_rate must be a number from 0 to 1, got {rate!r}")
    budget = config["sample_budget_per_minute"]
    if isinstance(budget, bool) or not isinstance(budget, int) or not 0 <= budget <= 1_000_000:
        raise InvalidArgument(f"sample_budget_per_minute must be a whole number >= 0, got {budget!r}")
    parse_window(config["drift_window"])
    if not isinstance(config["gates"], dict):
        raise InvalidArgument("gates must be a mapping: p99_ms, error_rate, drift_share, min_requests, window")
    check_gates(config["gates"])
    if not isinstance(config["drift"], dict):
        raise InvalidArgument("drift must be a mapping of DriftConfig fields")
    if not config["drift"]:
        return  # the defaults: no need to import scipy (and pay ~57 MiB) to know they are valid
    from ..._drift import DriftConfig

    try:
        DriftConfig(**config["drift"])
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"invalid drift settings: {exc}", hint="see help(nbserve.DriftConfig)") from None


def check_serving(serving: dict[str, Any]) -> None:
    """The serving settings a deploy brings (``DEPLOY_SETTINGS``), checked before anything exists."""
    unknown = set(serving) - set(DEPLOY_SETTINGS)
    if unknown:
        raise InvalidArgument(f"unknown serving setting(s): {', '.join(sorted(unknown))}",
                              hint=", ".join(DEPLOY_SETTINGS))
    validate_config({**DEFAULT_CONFIG, **serving})


def serving_text(limits: Limits, batching: dict[str, Any] | None) -> str:
    """", capped at 512 MiB and 1 CPU, batching up to 32 rows within 10 ms": for events."""
    caps = []
    if limits.memory is not None:
        caps.append(f"{limits.memory // 2**20} MiB")
    if limits.cpus is not None:
        caps.append(f"{limits.cpus:g} CPU")
    text = f", capped at {' and '.join(caps)}" if caps else ""
    if batching:
        text += f", batching up to {batching['max_batch_size']} rows within {batching['max_latency_ms']:g} ms"
    return text
