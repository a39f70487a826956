"""The naming rule for deployments, shared by the client (early errors) and the agent."""

from __future__ import annotations

import re

from .errors import InvalidArgument

NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
# The service is named after the deployment, and BentoML reads a service named like one of
# its service settings as that setting (its build then fails on a schema error).
RESERVED = frozenset({
    "batching", "resources", "workers", "traffic", "backlog", "max_runner_connections", "logging",
    "metrics", "http", "grpc", "ssl", "runner_probe", "monitoring", "tracing", "version",
})


def check_name(name: str) -> str:
    """Return ``name`` if it can name a deployment (and its Bento); else ``InvalidArgument``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidArgument(
            f"invalid deployment name {name!r}",
            hint="use 1-63 lowercase letters, digits, '-' or '_', starting and ending "
            "with a letter or digit, e.g. 'iris' or 'churn-model'",
        )
    if name in RESERVED:
        raise InvalidArgument(
            f"{name!r} cannot name a deployment: BentoML reads a service of that name as its "
            f"{name!r} setting",
            hint=f"add a word to it, e.g. '{name}-model'",
        )
    return name
