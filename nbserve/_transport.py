"""The client's one seam to an agent: HTTP with a bearer token, errors mapped back.

Every front (Python API, magic, CLI, the Jupyter server extension) talks to an agent
only through :class:`AgentClient`; local and remote agents differ in base URL, token
and TLS settings, not in code. httpx errors never leak: they become ``nbserve`` errors.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx

from .errors import AgentUnreachable, TLSVerificationFailed, error_from_payload


@contextlib.contextmanager
def _map_transport_errors(url: str) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise AgentUnreachable(
            f"the agent at {url} did not answer in time ({type(exc).__name__})",
            hint="check `nbserve agent status`; the agent log is in NBSERVE_HOME/logs/agent.log",
        ) from None
    except httpx.TransportError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
            raise TLSVerificationFailed(
                f"the certificate of {url} is not the one this target trusts: {exc}",
                hint="nothing was sent; if the host's certificate changed, add the target again with "
                     "its new fingerprint (`nbserve target add`)",
            ) from None
        raise AgentUnreachable(
            f"cannot reach the agent at {url}: {exc}",
            hint="start it with `nbserve agent start`, or check the target's address",
        ) from None


class AgentClient:
    """A connection to one agent (``base_url`` + ``token``)."""

    def __init__(
        self, base_url: str, token: str, *, timeout: float = 30.0, verify: Any = True, name: str = "local"
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.verify = verify  # also used for the stable URLs of this agent's deployments
        self.auth_headers = {"Authorization": f"Bearer {token}"}
        self.answered_at: float | None = None  # time.monotonic() of the agent's last answer
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "nbserve-client"},
            timeout=timeout,
            verify=verify,
            trust_env=False,  # never send loopback traffic through a proxy from the env
        )

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        with _map_transport_errors(self.base_url):
            response = self._http.request(method, path, **kwargs)
        self.answered_at = time.monotonic()  # any answer, an error status too: the agent is up
        try:
            payload = response.json()
        except ValueError:
            payload = response.text
        if response.status_code >= 400:
            raise error_from_payload(response.status_code, payload)
        return payload

    def get_bytes(self, path: str, **kwargs: Any) -> tuple[bytes, dict[str, str]]:
        """A binary answer (e.g. Parquet) and its headers; errors mapped as for JSON."""
        with _map_transport_errors(self.base_url):
            response = self._http.request("GET", path, **kwargs)
        self.answered_at = time.monotonic()
        if response.status_code >= 400:
            try:
                payload = response.json()
            except ValueError:
                payload = response.text
            raise error_from_payload(response.status_code, payload)
        return response.content, dict(response.headers)

    def upload(self, path: str, chunks: Any, *, headers: dict[str, str], timeout: float) -> Any:
        """POST a streamed body (an iterator of bytes) and return the JSON answer."""
        return self.request("POST", path, content=chunks, headers=headers,
                            timeout=httpx.Timeout(timeout, connect=30.0))

    def stable_client(self, timeout: float) -> httpx.Client:
        """An HTTP client for this agent's stable URLs: same TLS trust, same token."""
        return httpx.Client(timeout=timeout, verify=self.verify, headers=self.auth_headers, trust_env=False)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=json, **kwargs)

    def __repr__(self) -> str:
        return f"AgentClient({self.name!r}, {self.base_url!r})"
