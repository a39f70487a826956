"""What an endpoint allows and how long it waits: the request limits (defaults from the agent's
environment, read once at import) and the timeouts, fixed when the endpoint is made, with the
answers a broken limit gets."""

from __future__ import annotations

import os
from dataclasses import dataclass


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

Refusal = tuple[int, str, str]  # (status, error, hint): an answer the proxy gives itself


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """One endpoint's limits and timeouts (see StableEndpoint.__init__ for what each means)."""

    name: str
    max_body_bytes: int
    max_request_line: int
    max_header_bytes: int
    max_headers: int
    max_head_bytes: int
    upstream_timeout: float
    idle_timeout: float
    header_timeout: float
    pool_idle_timeout: float
    pool_max_age: float
    retry_wait: float

    @property
    def sweep_every(self) -> float:
        """How often the one timeout sweep runs: often enough for the shortest timeout."""
        return max(0.05, min(0.5, self.upstream_timeout / 4, self.idle_timeout / 4,
                             self.header_timeout / 4, self.pool_idle_timeout / 4))

    def target_too_long(self) -> Refusal:
        return (414, f"request target exceeds {self.max_request_line} bytes",
                "Send the data in the request body, not the URL "
                "(the agent's NBSERVE_PROXY_MAX_REQUEST_LINE sets the limit).")

    def head_too_large(self) -> Refusal:
        return (431, f"request head exceeds {self.max_head_bytes} bytes",
                "Send fewer or smaller headers "
                "(the agent's NBSERVE_PROXY_MAX_HEAD_BYTES sets the limit).")

    def header_refusal(self, count: int, name: bytes, size: int) -> Refusal:
        """Which head limit its ``count``-th header ``name`` (``size`` bytes) broke."""
        if size > self.max_header_bytes:
            shown = name[:64].decode("latin-1")
            return (431, f"request header {shown!r} exceeds {self.max_header_bytes} bytes",
                    "Send a smaller header "
                    "(the agent's NBSERVE_PROXY_MAX_HEADER_BYTES sets the limit).")
        if count > self.max_headers:
            return (431, f"more than {self.max_headers} request headers",
                    "Send fewer headers (the agent's NBSERVE_PROXY_MAX_HEADERS sets the limit).")
        return self.head_too_large()

    def body_too_large(self) -> Refusal:
        return (413, f"request body exceeds {self.max_body_bytes} bytes",
                "Send a smaller payload, or raise the endpoint's max_body_bytes.")
