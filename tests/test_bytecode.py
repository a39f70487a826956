"""A new environment gets the bytecode its files already have elsewhere, and its installer is
ended with the agent: real files, real Python imports, real processes (no uv needed)."""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nbserve._agent._bytecode import seed_bytecode
from nbserve._agent._envs import Environments
from nbserve._config import Home
from nbserve.errors import EnvironmentFailed

TAG = sys.implementation.cache_tag
SOURCE = "def answer():\n    return 42\n"


def _donor(root: Path, text: str = SOURCE) -> Path:
    package = root / "donor" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(text)
    for name in ("__init__", "mod"):
        py_compile.compile(str(package / f"{name}.py"), doraise=True)
    return root / "donor"


def _loads_from_bytecode(site: Path) -> str:
    """What Python says when it imports pkg.mod from ``site`` (bytecode never written): its
    verbose import lines, then the file its code says it came from."""
    done = subprocess.run([sys.executable, "-v", "-c", "import pkg.mod; print(pkg.mod.answer.__code__.co_filename)"],
                          capture_output=True, text=True, cwd=site, timeout=60,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr
    return done.stderr + done.stdout


def test_a_copied_file_gets_the_donors_bytecode_with_its_own_header(tmp_path):
    donor = _donor(tmp_path)
    target = tmp_path / "target" / "pkg"
    target.mkdir(parents=True)
    (target / "__init__.py").write_text("")
    (target / "mod.py").write_text(SOURCE)
    os.utime(target / "mod.py", (1_000_000, 1_000_000))  # another mtime than the donor's

    assert seed_bytecode(tmp_path / "target", [donor]) == 2
    pyc = target / "__pycache__" / f"mod.{TAG}.pyc"
    assert pyc.stat().st_nlink == 1  # rewritten, not linked: the header names this source
    said = _loads_from_bytecode(tmp_path / "target")
    assert f"matches {target / 'mod.py'}" in said  # Python accepts it without recompiling
    assert said.strip().splitlines()[-1] == str(target / "mod.py")  # co_filename: this file, not the donor's


def test_the_same_file_gets_the_same_bytecode_linked(tmp_path):
    donor = _donor(tmp_path)
    target = tmp_path / "target" / "pkg"
    target.mkdir(parents=True)
    for name in ("__init__.py", "mod.py"):
        os.link(donor / "pkg" / name, target / name)  # as uv links both from its cache

    assert seed_bytecode(tmp_path / "target", [donor]) == 2
    pyc = target / "__pycache__" / f"mod.{TAG}.pyc"
    assert pyc.samefile(donor / "pkg" / "__pycache__" / f"mod.{TAG}.pyc")
    assert f"matches {target / 'mod.py'}" in _loads_from_bytecode(tmp_path / "target")


def test_other_bytes_or_stale_bytecode_are_left_to_python(tmp_path):
    donor = _donor(tmp_path)
    target = tmp_path / "target" / "pkg"
    target.mkdir(parents=True)
    (target / "__init__.py").write_text("")
    (target / "mod.py").write_text(SOURCE.replace("42", "43"))  # same size, other bytes
    assert seed_bytecode(tmp_path / "target", [donor]) == 1  # __init__ only
    assert not (target / "__pycache__" / f"mod.{TAG}.pyc").exists()

    (donor / "pkg" / "mod.py").write_text(SOURCE.replace("42", "43"))  # the donor's bytecode is stale now
    os.utime(donor / "pkg" / "mod.py", (2_000_000, 2_000_000))
    assert seed_bytecode(tmp_path / "target", [donor]) == 0


def _group_gone(pgid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)  # a killed child is reaped by whoever adopted it
    return False


def test_the_agents_shutdown_ends_an_install_under_way(tmp_path):
    slow = tmp_path / "slow-uv"
    slow.write_text("#!/bin/sh\nsleep 120 &\nwait\n")  # a child of its own, as uv's builds have
    slow.chmod(0o755)
    envs = Environments(Home(tmp_path / "home"), uv=str(slow))
    failed: list[BaseException] = []

    def install() -> None:
        try:
            envs._run([str(slow)], what="scikit-learn==1.5.2")
        except EnvironmentFailed as exc:
            failed.append(exc)

    worker = threading.Thread(target=install)
    worker.start()
    deadline = time.monotonic() + 10
    while not envs._installers and time.monotonic() < deadline:
        time.sleep(0.02)
    (proc,) = envs._installers
    envs.stop_installs()
    worker.join(timeout=10)
    assert not worker.is_alive() and failed and "stopped" in str(failed[0])
    assert _group_gone(proc.pid)  # the installer's children too: nothing left behind
    with pytest.raises(EnvironmentFailed, match="stopping"):
        envs._run([str(slow)], what="anything")
