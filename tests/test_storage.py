"""The disk under NBSERVE_HOME: damaged (a real truncated SQLite file).

A damaged registry stops the agent from starting, with the file named and the way back; a
damaged metrics file is set aside, kept, and said so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from nbserve import errors
from nbserve._config import Home

KiB = 1024


# -- damaged files ------------------------------------------------------------------------------


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nbserve", *args], capture_output=True, text=True,
                          timeout=timeout)


def _made_and_stopped(home: Home) -> None:
    """A real home: an agent started through the CLI, with something in its files, stopped."""
    started = _cli("agent", "start", "--home", str(home.root))
    assert started.returncode == 0, started.stderr
    from nbserve._local import find_agent

    agent = find_agent(home)
    assert agent is not None
    for i in range(30):  # events and audit records: a registry of a few dozen pages
        httpx.post(f"{agent.url}/v1/deployments/x{i}/events", trust_env=False,
                   headers={"Authorization": f"Bearer {agent.token}"},
                   json={"kind": "build_failed", "message": "m" * 2000})
    stopped = _cli("agent", "stop", "--home", str(home.root))
    assert stopped.returncode == 0, stopped.stderr


def _truncate_to_half(path: Path) -> bytes:
    os.truncate(path, path.stat().st_size // 2)
    return path.read_bytes()


@pytest.mark.slow
def test_a_damaged_registry_is_refused_by_name_with_the_way_back(fresh_home):
    _made_and_stopped(fresh_home)
    assert fresh_home.registry.stat().st_size > 64 * KiB
    damaged = _truncate_to_half(fresh_home.registry)

    result = _cli("agent", "start", "--home", str(fresh_home.root))
    assert result.returncode != 0
    assert f"the registry file {fresh_home.registry} is damaged" in result.stderr, result.stderr
    assert ".recover" in result.stderr and "hint:" in result.stderr
    assert "Traceback" not in result.stderr and "exited with code" not in result.stderr
    assert fresh_home.registry.read_bytes() == damaged, "a refused start must not touch the file"
    assert not fresh_home.agent_file.exists()

    from nbserve._local import start_agent

    with pytest.raises(errors.RegistryDamaged) as info:  # the Python API's on-demand start
        start_agent(fresh_home)
    assert info.value.details["path"] == str(fresh_home.registry)

    doctor = _cli("doctor", "--home", str(fresh_home.root))
    assert doctor.returncode == 1
    assert "registry.sqlite  DAMAGED" in doctor.stdout and "metrics.sqlite   ok" in doctor.stdout, doctor.stdout

    # One documented way back: move it aside; the agent starts with an empty registry.
    os.replace(fresh_home.registry, fresh_home.root / "registry.sqlite.damaged")
    for suffix in ("-wal", "-shm"):
        Path(f"{fresh_home.registry}{suffix}").unlink(missing_ok=True)
    assert _cli("agent", "start", "--home", str(fresh_home.root)).returncode == 0
    assert _cli("doctor", "--home", str(fresh_home.root)).returncode == 0


@pytest.mark.slow
def test_a_damaged_metrics_file_is_set_aside_kept_and_reported(fresh_home):
    _made_and_stopped(fresh_home)
    damaged = _truncate_to_half(fresh_home.metrics)
    assert _cli("doctor", "--home", str(fresh_home.root)).returncode == 1

    result = _cli("agent", "start", "--home", str(fresh_home.root))
    assert result.returncode == 0, result.stderr
    aside = list(fresh_home.root.glob("metrics.sqlite.damaged-*[0-9]"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # kept as it was, for recovery
    from nbserve._api import connect

    events = connect(None, start=False).get("/v1/events", params={"limit": 5})
    said = [e for e in events if e["kind"] == "metrics_damaged"]
    assert said and aside[0].name in said[0]["message"]
    doctor = _cli("doctor", "--home", str(fresh_home.root))
    assert doctor.returncode == 0 and aside[0].name in doctor.stdout, doctor.stdout
