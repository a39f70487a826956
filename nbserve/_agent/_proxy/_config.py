"""What a request may be: the limits' defaults, from the agent's environment (read once, at import)."""

from __future__ import annotations

import os


def _env_limit(name: str, default: float) -> float:
    """A limit from the agent's environment (read once, when the agent imports this module)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = type(default)(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: expected a positive {type(default).__name__}")
    return value


# What a request may be (defaults like nginx's and h11's); see docs/security.md.  They are the
# constructor's defaults, so the agent's endpoints take them from its environment.
MAX_REQUEST_LINE = int(_env_limit("NBSERVE_PROXY_MAX_REQUEST_LINE", 8 * 1024))  # the target (URL)
MAX_HEADER_BYTES = int(_env_limit("NBSERVE_PROXY_MAX_HEADER_BYTES", 8 * 1024))  # name + value
MAX_HEADERS = int(_env_limit("NBSERVE_PROXY_MAX_HEADERS", 100))
MAX_HEAD_BYTES = int(_env_limit("NBSERVE_PROXY_MAX_HEAD_BYTES", 64 * 1024))  # target + every header
MAX_BODY_BYTES = int(_env_limit("NBSERVE_PROXY_MAX_BODY_BYTES", 64 * 1024 * 1024))
HEADER_TIMEOUT = float(_env_limit("NBSERVE_PROXY_HEADER_TIMEOUT", 30.0))
