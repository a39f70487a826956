"""The client's way to an agent: the local one (started on demand) or a remote target, one
cached :class:`AgentClient` per target and ``NBSERVE_HOME``; and who this client is."""

from __future__ import annotations

import getpass
import time

from ._config import Home
from ._transport import AgentClient
from .errors import AgentUnreachable, NbserveError

__all__ = ["actor", "connect"]

#: A cached client whose agent answered this recently is reused without a health check
#: (a panel polls every 2 s: one request per poll, not two); a dead agent still fails the
#: request itself with AgentUnreachable, and the next connect() after that replaces it.
FRESH_SECONDS = 5.0

_clients: dict[str, AgentClient] = {}
# For local clients: the (url, pid) of agent.json when the client was made. A restarted
# agent writes another, so a stale client is never reused however fresh its last answer.
_local_agents: dict[str, tuple[str, int]] = {}


def connect(target: str | None = None, *, start: bool = True) -> AgentClient:
    """The client for a target: ``None``/``"local"`` starts the local agent on demand
    (``start=False``: raise ``AgentUnreachable`` instead, for views that only read); any
    other name is a remote agent added with ``nbserve target add`` (its certificate is
    verified before the token is sent). ``NBSERVE_TARGET`` sets the default."""
    import os

    target = target or os.environ.get("NBSERVE_TARGET") or None
    home = Home.resolve()
    key = f"{target or 'local'}:{home.root}"
    client = _clients.get(key)
    if client is not None:
        if _answered_lately(client) and _same_local_agent(key, home):
            return client
        try:
            client.get("/v1/health")
            return client
        except NbserveError:
            client.close()
            del _clients[key]
            _local_agents.pop(key, None)
    if target not in (None, "local"):
        client = _remote_client(target, home)
    else:
        client, pid = _local_client(home, start)
        _local_agents[key] = (client.base_url, pid)
    _clients[key] = client
    return client


def _answered_lately(client: AgentClient) -> bool:
    return client.answered_at is not None and time.monotonic() - client.answered_at < FRESH_SECONDS


def _same_local_agent(key: str, home: Home) -> bool:
    """For a local client: agent.json still names the agent it was made for (no request is
    sent). Remote clients have no such file: their last answer decides."""
    made_for = _local_agents.get(key)
    if made_for is None:
        return True
    from ._local import agent_record

    found = agent_record(home)
    return found is not None and (found[0].rstrip("/"), found[1]) == made_for


def _remote_client(name: str, home: Home) -> AgentClient:
    from ._targets import get_target, open_target

    return open_target(get_target(name, home))


def _local_client(home: Home, start: bool) -> tuple[AgentClient, int]:
    """The client and the agent's pid."""
    from ._local import find_agent, start_agent

    if start:
        info = start_agent(home)
    else:
        found = find_agent(home)
        if found is None:
            raise AgentUnreachable(f"no nbserve agent is running for {home.root}",
                                   hint="deploy a model, or run `nbserve agent start`")
        info = found
    return AgentClient(info.url, info.token, name="local", verify=info.verify), info.pid


def actor() -> str:
    """Who history records as making a change: this process's user."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001
        return "unknown"
