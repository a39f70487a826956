"""The client's way to an agent: the local one (started on demand) or a remote target, one
cached :class:`AgentClient` per target and ``NBSERVE_HOME``; and who this client is."""

from __future__ import annotations

import getpass

from ._config import Home
from ._transport import AgentClient
from .errors import AgentUnreachable, NbserveError

__all__ = ["actor", "connect"]

_clients: dict[str, AgentClient] = {}


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
        try:
            client.get("/v1/health")
            return client
        except NbserveError:
            client.close()
            del _clients[key]
    if target not in (None, "local"):
        client = _remote_client(target, home)
    else:
        client = _local_client(home, start)
    _clients[key] = client
    return client


def _remote_client(name: str, home: Home) -> AgentClient:
    from ._targets import get_target, open_target

    return open_target(get_target(name, home))


def _local_client(home: Home, start: bool) -> AgentClient:
    from ._local import find_agent, start_agent

    if start:
        info = start_agent(home)
    else:
        found = find_agent(home)
        if found is None:
            raise AgentUnreachable(f"no nbserve agent is running for {home.root}",
                                   hint="deploy a model, or run `nbserve agent start`")
        info = found
    return AgentClient(info.url, info.token, name="local", verify=info.verify)


def actor() -> str:
    """Who history records as making a change: this process's user."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001
        return "unknown"
