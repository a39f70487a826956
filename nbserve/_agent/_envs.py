"""Each version runs in the environment it was built for.

A version's Bento records the Python (``major.minor``) and the packages the kernel had pinned
(``dist==version``). Where that version's ``bentoml serve`` runs from is resolved here:

- the agent's own environment, when it has that Python and exactly those versions (no cost);
- otherwise an isolated environment for that exact set, built once with ``uv`` under
  ``NBSERVE_HOME/envs/<hash of the set>`` and shared by every version with the same set. The set
  is the pins plus the serving package (``bentoml`` at the agent's version, which the generated
  service imports; the Bento needs no nbserve). uv's cache hard-links the files, so a second
  environment that shares most packages costs little disk.

Packages come from where the host says (``NBSERVE_FIND_LINKS`` a wheel directory,
``NBSERVE_OFFLINE`` only what the cache or that directory holds, else the index uv is set up
for). Nothing is ever installed into the agent's own environment, and no Python is
downloaded: a Python minor version the host (or uv's cache) lacks is refused by name.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata as _metadata
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._config import Home
from ._bytecode import agent_site_packages, seed_bytecode, site_packages
from .._requirements import canonical_name, parse_pin
from ..errors import EnvironmentFailed, InvalidArgument

log = logging.getLogger("nbserve.agent")

MARKER = "nbserve-env.json"  # written last: an environment without it is incomplete
INSTALL_TIMEOUT = 900.0
_ERROR_CHARS = 800


@dataclass(frozen=True)
class EnvSpec:
    """What a version needs to run: a Python ``major.minor`` and exact pins."""

    python: str
    packages: tuple[str, ...]

    @property
    def key(self) -> str:
        text = json.dumps({"python": self.python, "packages": list(self.packages)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def of_version(cls, metadata: dict[str, Any]) -> "EnvSpec | None":
        """The spec recorded in a version's metadata (its provenance), or None for a version
        that recorded none (then it runs where the agent runs, as before)."""
        prov = metadata.get("provenance") or {}
        # the resolved set (pins and what they need, as the kernel had them); older versions have pins only
        python, packages = prov.get("python"), prov.get("resolved") or prov.get("packages")
        if not python or not isinstance(packages, list):
            return None
        minor = ".".join(str(python).split(".")[:2])
        pins = {}
        for pin in packages:
            parsed = parse_pin(pin)
            if parsed:
                pins[canonical_name(parsed[0])] = f"{parsed[0]}=={parsed[1]}"
        return cls(minor, tuple(pins[name] for name in sorted(pins)))


@dataclass(frozen=True)
class Prepared:
    """Where a version runs: the Python to start ``bentoml serve`` with, and the environment
    (None: the agent's own)."""

    python: str
    key: str | None = None
    path: Path | None = None
    cached: bool = True
    installed: tuple[str, ...] = ()
    seconds: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {"environment": self.key or "agent", "path": str(self.path) if self.path else None,
                "cached": self.cached, "installed": list(self.installed), "seconds": round(self.seconds, 2)}


def serving_packages() -> list[str]:
    """What the generated service imports beyond the model's own pins, at the agent's versions."""
    return [f"bentoml=={_metadata.version('bentoml')}"]


def own_mismatches(spec: EnvSpec) -> list[str]:
    """The pins of ``spec`` the agent's own environment does not satisfy (empty: it runs there)."""
    found = [] if spec.python == f"{sys.version_info.major}.{sys.version_info.minor}" else [f"python {spec.python}"]
    for pin in spec.packages:
        name, _, version = pin.partition("==")
        try:
            have = _metadata.version(name)
        except _metadata.PackageNotFoundError:
            found.append(f"{pin} (not installed)")
            continue
        if have != version:
            found.append(f"{pin} (the agent has {have})")
    return found


class Environments:
    """The environments under ``NBSERVE_HOME/envs``: resolved, built once, listed and pruned."""

    def __init__(self, home: Home, *, find_links: str | None = None, offline: bool | None = None,
                 uv: str | None = None) -> None:
        self.root = home.root / "envs"
        self.find_links = find_links if find_links is not None else (os.environ.get("NBSERVE_FIND_LINKS") or None)
        if offline is None:
            offline = os.environ.get("NBSERVE_OFFLINE", "").lower() in ("1", "true", "yes")
        self.offline = offline
        self._uv = uv
        self._locks: dict[str, asyncio.Lock] = {}
        self._installers: set[subprocess.Popen[str]] = set()
        self._closing = False

    @property
    def uv(self) -> str:
        if self._uv is None:
            try:
                from uv import find_uv_bin

                self._uv = find_uv_bin()
            except (ImportError, FileNotFoundError):
                found = shutil.which("uv")
                if not found:
                    raise EnvironmentFailed("uv is not installed where the agent runs, so a version that needs "
                                            "other packages than the agent's cannot get its own environment",
                                            hint="pip install uv (nbserve depends on it)") from None
                self._uv = found
        return self._uv

    def path(self, key: str) -> Path:
        return self.root / key

    async def prepare(self, spec: EnvSpec | None, *,
                      on_step: Callable[[str, dict[str, Any]], None] | None = None) -> Prepared:
        """Where a version with ``spec`` runs; builds its environment if it is not there yet.
        Raises ``EnvironmentFailed`` with the installer's reason."""
        missing = own_mismatches(spec) if spec is not None else []
        if spec is None or not missing:
            return Prepared(sys.executable)
        lock = self._locks.setdefault(spec.key, asyncio.Lock())
        async with lock:  # two versions with one set: the second waits, then reuses it
            return await asyncio.to_thread(self._prepare, spec, missing, on_step or (lambda step, data: None))

    def _prepare(self, spec: EnvSpec, missing: list[str],
                 on_step: Callable[[str, dict[str, Any]], None]) -> Prepared:
        path = self.path(spec.key)
        python = path / "bin" / "python"
        if (path / MARKER).is_file() and python.exists():
            self._touch(path)
            return Prepared(str(python), spec.key, path, cached=True)
        started = time.monotonic()
        on_step("environment_preparing", {"environment": spec.key, "python": spec.python,
                                          "packages": list(spec.packages), "differs": missing})
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)  # a build that did not finish
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            interpreter = self._find_python(spec.python)
            self._run([self.uv, "venv", "--quiet", "--python", interpreter, str(path)], what=f"Python {spec.python}")
            wanted = [*spec.packages, *serving_packages()]
            command = [self.uv, "pip", "install", "--quiet", "--python", str(python), *self._sources(), *wanted]
            what = ", ".join(spec.packages) or "the serving packages"
            try:
                # uv's cache first: a set whose wheels are all cached needs no index round trips (~2 s)
                self._run([*command, "--offline"] if not self.offline else command, what=what)
            except EnvironmentFailed:
                if self.offline:
                    raise
                self._run(command, what=what)
            seeded = seed_bytecode(site_packages(path, spec.python), self._bytecode_donors(spec))
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        seconds = time.monotonic() - started
        (path / MARKER).write_text(json.dumps({
            "python": spec.python, "packages": list(spec.packages), "serving": serving_packages(),
            "created_at": time.time(), "used_at": time.time(), "seconds": round(seconds, 2),
        }, indent=1))
        log.info("environment %s ready in %.1f s (%s; bytecode for %d files from older environments)",
                 spec.key, seconds, ", ".join(spec.packages), seeded)
        return Prepared(str(python), spec.key, path, cached=False, installed=spec.packages, seconds=seconds)

    def _bytecode_donors(self, spec: EnvSpec) -> list[Path]:
        """Where a new environment's bytecode may come from: the environments of the same Python
        (their sources are hard links to uv's cache, as the new one's), then the agent's own."""
        if spec.python != f"{sys.version_info.major}.{sys.version_info.minor}":
            return []  # another Python's bytecode is its own to write
        return [*(site_packages(path, spec.python) for path in sorted(self.root.iterdir())
                  if path.name != spec.key and (path / MARKER).is_file()), *agent_site_packages()]

    def _find_python(self, minor: str) -> str:
        """The host's Python ``minor`` (or one in uv's cache of Pythons); never a download."""
        done = subprocess.run([self.uv, "python", "find", "--python-preference", "system", minor],
                              capture_output=True, text=True, timeout=60, env=self._env(), stdin=subprocess.DEVNULL)
        found = done.stdout.strip().splitlines()
        if done.returncode != 0 or not found:
            raise EnvironmentFailed(
                f"the version was built under Python {minor}, which this host does not have (nor does uv's cache "
                f"of Pythons)", hint=f"install Python {minor} on the agent's host (or `uv python install {minor}`); "
                "nbserve never runs a pickle under another Python", python=minor)
        return found[-1]

    def _env(self) -> dict[str, str]:
        # Never a downloaded Python; never the agent's own venv (uv would take VIRTUAL_ENV as the
        # target). UV_OFFLINE is nbserve's own default for Bento builds (_config.py), not the host's
        # choice for environments: that is --offline (NBSERVE_OFFLINE).
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_OFFLINE")}
        env["UV_PYTHON_DOWNLOADS"] = "never"
        return env

    def _sources(self) -> list[str]:
        args: list[str] = []
        if self.find_links:
            args += ["--find-links", self.find_links]
        if self.offline:
            args += ["--offline"]
        return args

    def _run(self, command: list[str], *, what: str) -> None:
        if self._closing:
            raise EnvironmentFailed(f"the agent is stopping: {what} was not installed", hint="deploy again")
        # Its own session, tracked like a serving process: the agent's shutdown ends it (and
        # its children) rather than waiting on an install or leaving it behind.
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True, env=self._env(), start_new_session=True)
        self._installers.add(proc)
        try:
            _out, stderr = proc.communicate(timeout=INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise EnvironmentFailed(f"installing {what} took over {INSTALL_TIMEOUT:.0f} s",
                                    hint="check the host's index, or give it a wheel directory (--find-links)") from None
        finally:
            self._installers.discard(proc)
        if self._closing:
            raise EnvironmentFailed(f"the agent stopped while installing {what}", hint="deploy again")
        if proc.returncode != 0:
            raise EnvironmentFailed(f"the environment for {what} could not be built: {installer_reason(stderr)}",
                                    hint=self._hint(stderr), installer=stderr[-4000:])

    def stop_installs(self) -> None:
        """End every install under way (the agent is stopping); their environments are removed."""
        self._closing = True
        for proc in list(self._installers):
            _kill_group(proc)

    def _hint(self, stderr: str) -> str:
        if self.offline:
            return ("the agent is offline (--offline): put the wheels in its --find-links directory or in uv's "
                    "cache, or start it without --offline")
        return "check that the version exists on the index the host is set up for, or pass --find-links DIR"

    def _touch(self, path: Path) -> None:
        marker = path / MARKER
        try:
            data = json.loads(marker.read_text())
            data["used_at"] = time.time()
            marker.write_text(json.dumps(data, indent=1))
        except (OSError, ValueError):
            pass

    def list(self) -> list[dict[str, Any]]:
        """Every environment with what it holds, its size on disk and when it was last used."""
        found = []
        if not self.root.is_dir():
            return found
        for path in sorted(self.root.iterdir()):
            try:
                data = json.loads((path / MARKER).read_text())
            except (OSError, ValueError):
                data = {"incomplete": True}
            total, own = disk_usage(path)  # now: bytecode written by its servers since counts too
            found.append({"environment": path.name, "path": str(path), **data, "total_bytes": total, "bytes": own})
        return found

    def remove(self, key: str) -> None:
        if not re.fullmatch(r"[0-9a-f]{16}", key):
            raise InvalidArgument(f"no environment {key!r}", hint="see `nbserve envs list`")
        shutil.rmtree(self.path(key), ignore_errors=True)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def installer_reason(stderr: str) -> str:
    """uv's reason, cut to what matters: its ``error:`` line and the ``╰─▶`` explanation."""
    lines = [line.rstrip() for line in stderr.splitlines() if line.strip()]
    keep = [line.strip() for line in lines if line.lstrip().startswith(("error:", "×", "╰─▶", "Because", "hint:"))]
    text = " ".join(keep or lines[-3:]) or "the installer failed without saying why"
    return text[:_ERROR_CHARS]


def disk_usage(path: Path) -> tuple[int, int]:
    """(everything in the environment, each file once; what is its own): a file hard-linked from
    uv's cache (and so shared with every environment that has that wheel) is not its own, a file
    with one link is (its bytecode, its scripts, a wheel no longer in the cache)."""
    total = own = 0
    seen: set[tuple[int, int]] = set()
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            size = st.st_blocks * 512
            total += size
            if st.st_nlink == 1:
                own += size
    return total, own

