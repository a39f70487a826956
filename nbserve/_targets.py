"""Named remote agents (``nbserve target add prod https://host:8443 ...``).

A target is a URL, the file its token is read from (the secret itself is never copied
here), and how its certificate is verified: a pinned fingerprint or a CA file. Stored in
``NBSERVE_HOME/targets.json`` (mode 0600). ``local`` is reserved for the local agent.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ._config import Home
from ._names import check_name
from .errors import InvalidArgument, NbserveError, TargetNotFound

if TYPE_CHECKING:
    from ._transport import AgentClient


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    token_file: str
    fingerprint: str | None = None
    ca_file: str | None = None
    insecure: bool = False  # plain http: only when the user asked for it by name

    def token(self) -> str:
        try:
            token = Path(self.token_file).expanduser().read_text().strip()
        except OSError as exc:
            raise InvalidArgument(f"cannot read the token of target {self.name!r} from {self.token_file}: "
                                  f"{exc.strerror}", hint="point it at the file: `nbserve target add ... "
                                  "--token-file PATH`") from None
        if not token:
            raise InvalidArgument(f"the token file {self.token_file} of target {self.name!r} is empty")
        return token


def _load(home: Home) -> dict[str, dict]:
    try:
        return json.loads(home.targets_file.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise InvalidArgument(f"{home.targets_file} is not valid JSON: {exc}",
                              hint="fix or delete it, then add the targets again") from None


def _save(home: Home, targets: dict[str, dict]) -> None:
    home.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = home.targets_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(targets, handle, indent=2, sort_keys=True)
    os.replace(tmp, home.targets_file)


def check_target(target: Target) -> Target:
    """Refuse a target that would send its token unprotected or cannot be verified."""
    from ._tls import normalize_fingerprint

    if target.name == "local":
        raise InvalidArgument("'local' is the local agent's name", hint="choose another target name")
    check_name(target.name)
    parts = urlsplit(target.url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidArgument(f"{target.url!r} is not an agent URL", hint="e.g. https://serving-host:8443")
    if parts.scheme == "http" and not target.insecure:
        raise InvalidArgument(
            f"{target.url} is plain HTTP: the token and your data would cross the network unencrypted",
            hint="run the agent with --tls-cert/--tls-key and use https://, or pass --insecure if you must",
        )
    if target.fingerprint and target.ca_file:
        raise InvalidArgument("give a fingerprint or a CA file, not both")
    if target.fingerprint:
        normalize_fingerprint(target.fingerprint)
    if target.ca_file and not Path(target.ca_file).expanduser().is_file():
        raise InvalidArgument(f"no CA file at {target.ca_file}")
    target.token()
    return target


def add_target(target: Target, home: Home | None = None, *, verify: bool = True) -> dict:
    """Save ``target`` once its agent answered with a verified certificate and accepted the
    token (``verify=False``: save without trying); returns who the token is."""
    home = home or Home.resolve()
    check_target(target)
    who: dict = {}
    if verify:
        client = open_target(target)
        try:
            who = client.get("/v1/whoami")
        finally:
            client.close()
    targets = _load(home)
    targets[target.name] = {k: v for k, v in asdict(target).items() if k != "name"}
    _save(home, targets)
    return who


def remove_target(name: str, home: Home | None = None) -> None:
    """Forget a target (its token file is left alone)."""
    home = home or Home.resolve()
    targets = _load(home)
    if targets.pop(name, None) is None:
        raise TargetNotFound(f"no target called {name!r}", hint="see `nbserve target list`")
    _save(home, targets)


def list_targets(home: Home | None = None) -> list[Target]:
    """This machine's targets, by name."""
    home = home or Home.resolve()
    return [Target(name=name, **fields) for name, fields in sorted(_load(home).items())]


def get_target(name: str, home: Home | None = None) -> Target:
    home = home or Home.resolve()
    fields = _load(home).get(name)
    if fields is None:
        raise TargetNotFound(f"no target called {name!r}",
                             hint="add it: `nbserve target add NAME https://host:port --token-file PATH "
                                  "--fingerprint SHA256`")
    return Target(name=name, **fields)


def open_target(target: Target) -> "AgentClient":
    """A verified client for a :class:`Target`: the certificate is checked
    (pin or CA) and the token tried before anything else is sent."""
    from ._tls import client_context
    from ._transport import AgentClient

    verify = (client_context(target.url, fingerprint=target.fingerprint, ca_file=target.ca_file)
              if target.url.startswith("https://") else False)
    client = AgentClient(target.url, target.token(), verify=verify, name=target.name)
    try:
        client.get("/v1/health")  # fail here, with a clear error, rather than mid-deploy
        client.get("/v1/whoami")  # ... and for a wrong token too
    except NbserveError:
        client.close()
        raise
    return client
