"""The local agent, started on demand: find it, or start it detached and wait for it.

The agent runs in its own session, so it outlives the kernel (or terminal) that started
it. Two kernels racing to start it are safe: the agent takes a file lock, the loser
exits, and both clients then find the winner through ``agent.json``. An agent that does
not start leaves its reason in ``logs/agent-refusal.json``; the starter raises it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from ._agent._main import EXIT_ALREADY_RUNNING, START_ERRORS, read_refusal
from ._agent._storage import free_bytes, insufficient
from ._config import Home, private_env
from .errors import AgentStartFailed, NbserveError, error_from_payload

START_TIMEOUT = float(os.environ.get("NBSERVE_AGENT_START_TIMEOUT", "60"))


@dataclass(frozen=True)
class AgentInfo:
    url: str
    pid: int
    token: str
    verify: Any = True  # an ssl.SSLContext trusting the agent's own certificate, if it uses TLS


def _verify_for(info: dict[str, Any]) -> Any:
    """A client on the agent's own host trusts the certificate file the agent serves."""
    cert = info.get("tls_cert")
    if not cert:
        return True
    from ._tls import pinned_context

    return pinned_context(Path(cert).read_text())


def _live_record(home: Home) -> dict[str, Any] | None:
    """``agent.json``, if it names a URL and a process that exists; no request is sent."""
    try:
        info = json.loads(home.agent_file.read_text())
        str(info["url"])
        pid = int(info.get("pid", 0))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if pid and psutil.pid_exists(pid) else None


def agent_record(home: Home) -> tuple[str, int] | None:
    """The URL and pid ``agent.json`` names, if that process exists; no request is sent."""
    info = _live_record(home)
    return None if info is None else (str(info["url"]), int(info["pid"]))


def find_agent(home: Home) -> AgentInfo | None:
    """The running agent of this home, if one answers its health check."""
    info = _live_record(home)
    if info is None:
        return None
    try:
        token = home.token_file.read_text().strip()
        verify = _verify_for(info)
    except (OSError, ValueError):
        return None
    pid = int(info["pid"])
    try:
        response = httpx.get(f"{info['url']}/v1/health", timeout=2.0, trust_env=False, verify=verify)
    except httpx.HTTPError:
        return None
    if response.status_code != 200 or response.json().get("pid") != pid:
        return None
    return AgentInfo(info["url"], pid, token, verify)


# Set by the scheduler for the notebook it runs; an agent started from such a kernel must
# not carry them (its own deploys would claim to come from that run).
_RUN_VARIABLES = ("NBSERVE_RUN_ID", "NBSERVE_SCHEDULE", "NBSERVE_RUN_NOTEBOOK", "NBSERVE_NOTEBOOK_PATH")


def _agent_env() -> dict[str, str]:
    env = private_env()
    for key in _RUN_VARIABLES:
        env.pop(key, None)
    return env


def start_agent(home: Home, options: Sequence[str] = ()) -> AgentInfo:
    """Start the local agent in the background (if none runs) and wait until it answers.
    ``options``: ``nbserve agent run`` flags for it (ignored when one already runs)."""
    found = find_agent(home)
    if found:
        return found
    home.ensure()
    home.agent_log.parent.mkdir(parents=True, exist_ok=True)
    spawned_at = time.time()
    with home.agent_log.open("ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nbserve", "agent", "run", "--home", str(home.root), *options],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=_agent_env(),
            cwd=str(home.root),
            start_new_session=True,  # outlive the kernel that started it
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = find_agent(home)
        if found:
            return found
        code = proc.poll()
        if code is not None and code != EXIT_ALREADY_RUNNING:
            raise _start_failure(home, proc.pid, code)
        if code is not None:  # another agent won the race: wait for it, unless it refused too
            refusal = read_refusal(home)
            if refusal is not None and refusal.get("at", 0) >= spawned_at:
                raise _refusal_error(home, refusal)
        time.sleep(0.05)
    raise AgentStartFailed(
        f"the nbserve agent did not answer within {START_TIMEOUT:.0f} s",
        hint=f"see {home.agent_log}",
    )


def _start_failure(home: Home, pid: int, code: int) -> NbserveError:
    """The agent's own reason for exiting, as the error class it named."""
    refusal = read_refusal(home)
    if refusal is not None and refusal.get("pid") == pid:
        return _refusal_error(home, refusal)
    free = free_bytes(home.root)
    if free is not None and free < 1024**2:  # it could not even write its reason down
        return insufficient(home.root, what=f"the agent exited with code {code} while starting")
    return AgentStartFailed(f"the nbserve agent exited with code {code} while starting",
                            hint=f"see {home.agent_log}", exit_code=code)


def _refusal_error(home: Home, refusal: dict[str, Any]) -> NbserveError:
    details = refusal.get("details") if isinstance(refusal.get("details"), dict) else {}
    error = error_from_payload(500, {"error": {**refusal, "details": {**details, "log": str(home.agent_log)}}})
    return error if isinstance(error, START_ERRORS) else AgentStartFailed(error.message, hint=error.hint,
                                                                           **error.details)


def stop_agent(home: Home, timeout: float = 60.0) -> bool:
    """Ask the agent to stop every serving process and exit; False if none was running."""
    found = find_agent(home)
    if found is None:
        return False
    try:
        httpx.post(
            f"{found.url}/v1/agent/shutdown",
            headers={"Authorization": f"Bearer {found.token}"},
            timeout=5.0,
            trust_env=False,
            verify=found.verify,
        )
    except httpx.HTTPError:
        pass
    try:
        psutil.Process(found.pid).wait(timeout=timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        psutil.Process(found.pid).terminate()
    return True
