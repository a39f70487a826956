"""The disk under NBSERVE_HOME: full (a real, small tmpfs) or damaged (a real truncated SQLite file).

A full disk is one ``InsufficientStorage`` (507) with a short message, whichever write meets it
(upload, import, registry, metrics), nothing half-written is left, and what was serving keeps
serving. A damaged registry stops the agent from starting, with the file named and the way
back; a damaged metrics file is set aside, kept, and said so. Mounting needs root: without it
the disk-full tests are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import nbserve
from nbserve import errors
from nbserve._agent._archive import receive_upload
from nbserve._config import Home

from .conftest import _forget_clients, assert_no_leftovers, nbserve_home

KiB, MiB = 1024, 1024**2


# -- a small disk ------------------------------------------------------------------------


class Disk:
    """A tmpfs mounted for one test, and a filler file that takes its space."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def free(self) -> int:
        return shutil.disk_usage(self.root).free

    def fill(self, leave: int = 0) -> None:
        """Take every free byte, then give ``leave`` of them back."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for block in (MiB, 4 * KiB, 512):
                try:
                    while True:
                        os.write(fd, bytes(block))
                except OSError as exc:
                    assert exc.errno == 28, exc
        finally:
            os.close(fd)
        if leave:
            os.truncate(self.filler, max(0, self.filler.stat().st_size - leave))
        assert self.free() <= leave + 8 * KiB

    def release(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Disk]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the disk-full tests (root is needed): {done.stderr.strip()}")
    try:
        yield Disk(mount)
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)  # detach; freed when unused


@pytest.fixture
def full_home(small_disk: Disk) -> Iterator[tuple[Home, Disk]]:
    """NBSERVE_HOME on the small disk; its agent is stopped (and checked for leftovers) before
    the disk is unmounted."""
    from nbserve._local import stop_agent

    home = Home.resolve(small_disk.root / "home")
    with nbserve_home(home.root):
        try:
            yield home, small_disk
        finally:
            small_disk.release()  # stopping writes to the registry
            stop_agent(home)
            _forget_clients()
            assert_no_leftovers(home)


def _store(home: Home) -> set[str]:
    """Every path under the agent's BentoML store (Bentos and models)."""
    root = home.bentoml_home
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _staged(home: Home) -> list[Path]:
    uploads = home.staging / "uploads"
    return list(uploads.iterdir()) if uploads.is_dir() else []


# -- the agent on a full disk ----------------------------------------------------------------


@pytest.mark.slow
def test_a_full_home_answers_507_leaves_nothing_behind_and_keeps_serving(full_home, iris, forest, tree):
    home, disk = full_home
    _, X_test, _, _ = iris
    dep = nbserve.deploy(forest, "iris", X_test, progress=False)
    rows = X_test.head(3).to_dict("records")
    expected = forest.predict(X_test.head(3)).tolist()

    def still_serving() -> None:
        r = httpx.post(f"{dep.url}/predict", json={"data": rows}, trust_env=False, timeout=30)
        assert r.status_code == 200 and r.json() == expected and r.headers["x-nbserve-version"] == "1"

    still_serving()
    stored = _store(home)

    # Room for the upload (~36 KiB, with slack for the log and metrics lines written meanwhile)
    # but not for the Bento it unpacks to (~200 KiB on tmpfs): the import is refused before the
    # store is written, in a few words, and the staged upload is gone.
    disk.fill(leave=112 * KiB)
    with pytest.raises(errors.InsufficientStorage) as info:
        nbserve.deploy(tree, "iris", X_test, progress=False)
    err = info.value
    assert len(err.message) < 300 and "bentoml" in err.message, err.message
    assert err.details["needed_bytes"] > err.details["free_bytes"]
    assert _store(home) == stored, "no empty bentos/<name>/ and no model without its Bento"
    assert _staged(home) == []
    still_serving()

    # No room for the upload at all: refused before a byte is written.
    disk.fill()
    with pytest.raises(errors.InsufficientStorage) as info:
        nbserve.deploy(tree, "iris", X_test, progress=False)
    assert "staging" in info.value.message and len(info.value.message) < 300, info.value.message
    assert info.value.details["needed_bytes"] > 0
    assert _staged(home) == [] and _store(home) == stored

    # A registry write: 507 through the agent's one error mapping, nothing changed.
    with pytest.raises(errors.InsufficientStorage, match="writing the registry"):
        dep.configure(sample_rate=0.5)
    assert dep._client.get("/v1/deployments/iris/config")["sample_rate"] == 1.0

    # Requests keep being served and counted while the metrics cannot be written; reading
    # the metrics still answers (it flushes first, which fails quietly).
    for _ in range(20):
        still_serving()
    dep.latency("1h")  # answers (with what was written before), not a 500 or a 507
    assert httpx.get(f"{dep.url}/readyz", trust_env=False).status_code == 200

    # Space comes back: everything works again and nothing that was counted was lost.
    disk.release()
    assert dep.configure(sample_rate=0.5)["sample_rate"] == 0.5  # no write transaction was left open
    assert dep.latency("1h")["requests"].sum() >= 21
    again = nbserve.deploy(tree, "iris", X_test, progress=False)
    assert again.version == 2  # the refused deploys used no version number
    assert again.predict(X_test.head(3)).tolist() == tree.predict(X_test.head(3)).tolist()


# -- each write path on its own ----------------------------------------------------------------


class _Chunks:
    """An async body that runs ``between`` after ``first`` chunks (e.g. to fill the disk)."""

    def __init__(self, chunks: list[bytes], *, first: int = 0, between=None) -> None:
        self.chunks, self.first, self.between = chunks, first, between
        self.started = False

    async def __aiter__(self):
        self.started = True
        for i, chunk in enumerate(self.chunks):
            if i == self.first and self.between is not None:
                self.between()
            yield chunk
            await asyncio.sleep(0)


def test_an_upload_larger_than_the_free_space_is_refused_before_reading(small_disk):
    small_disk.fill(leave=32 * KiB)
    body = _Chunks([b"x" * (64 * KiB)] * 4)
    staging = small_disk.root / "staging"
    with pytest.raises(errors.InsufficientStorage) as info:
        asyncio.run(receive_upload(body.__aiter__(), staging, size=256 * KiB, sha256="0" * 64))
    assert info.value.status == 507 and not body.started
    assert info.value.details["needed_bytes"] == 256 * KiB
    assert "256.0 KiB" in info.value.message and str(staging) in info.value.message
    assert list(staging.iterdir()) == []


def test_an_upload_that_fills_the_disk_leaves_no_staging_file(small_disk):
    small_disk.fill(leave=2 * MiB)
    chunks = [os.urandom(64 * KiB) for _ in range(8)]  # 512 KiB: fits when it starts
    body = _Chunks(chunks, first=4, between=small_disk.fill)  # ... then the disk fills
    staging = small_disk.root / "staging"
    with pytest.raises(errors.InsufficientStorage) as info:
        asyncio.run(receive_upload(body.__aiter__(), staging, size=512 * KiB,
                                   sha256=hashlib.sha256(b"".join(chunks)).hexdigest()))
    assert info.value.status == 507 and len(info.value.message) < 300
    assert list(staging.iterdir()) == []


def test_a_registry_write_on_a_full_disk_changes_nothing_and_the_next_one_works(small_disk):
    from nbserve._agent._registry import Registry

    registry = Registry(small_disk.root / "registry.sqlite")
    try:
        registry.add_event("note", "before")
        small_disk.fill()
        with pytest.raises(errors.InsufficientStorage) as info:
            registry.add_event("note", "x" * 10_000)
        assert info.value.status == 507 and "registry.sqlite" in info.value.message
        assert [e.message for e in registry.events()] == ["before"]
        small_disk.release()
        registry.add_event("note", "after")  # the connection is not left inside a transaction
        assert [e.message for e in registry.events()] == ["before", "after"]
    finally:
        registry.close()


def test_metrics_on_a_full_disk_are_logged_once_kept_in_memory_and_written_later(small_disk, caplog):
    from nbserve._agent._monitor import Monitor
    from nbserve._agent._proxy import RequestRecord

    caplog.set_level(logging.INFO, logger="nbserve.agent")
    monitor = Monitor(small_disk.root / "metrics.sqlite")
    observe = monitor.observer_for("iris")

    def request() -> None:
        observe(RequestRecord(label="1", method="POST", path="/predict", status=200,
                              started_ns=time.perf_counter_ns(), elapsed_ns=2_000_000, request_bytes=20,
                              body=b'{"data": [[1, 2]]}', response=b"[0]"))
        monitor._drain()
        monitor.flush()

    try:
        request()
        small_disk.fill()
        for _ in range(3):
            request()  # neither raises nor logs each time
        full = [r for r in caplog.records if "disk is full" in r.getMessage()]
        assert len(full) == 1 and full[0].levelno == logging.ERROR
        small_disk.release()
        monitor.flush()
        assert sum(pane[2] for pane in monitor.panes("iris", since=0)) == 4  # no request lost from the panes
        assert any("written again" in r.getMessage() for r in caplog.records)
        small_disk.fill()
        request()
    finally:
        monitor.close()  # on a full disk too: nothing raises


def test_an_import_the_disk_cuts_short_leaves_no_partial_bento_or_model(small_disk, tmp_path, iris, tree):
    """The store on the small disk, bentoml in a process of its own (BENTOML_HOME is read at
    import). With the space check on, nothing is written; with it off (as when another writer
    takes the space mid-copy), the save fails part-way and is undone."""
    from nbserve._bundle import build_bundle

    _, X_test, _, _ = iris
    bundle = build_bundle(tree, name="fills-disk", sample=X_test)
    archive = tmp_path / "fills-disk.bento"
    shutil.copy(bundle.archive, archive)
    bundle.cleanup()
    store = small_disk.root / "bentoml"
    store.mkdir()
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import nbserve._agent._archive as archive\n"
        "from nbserve import errors\n"
        "if sys.argv[3] == 'unchecked':\n"
        "    archive.require = lambda *args: None\n"
        "try:\n"
        "    archive.import_into_store(Path(sys.argv[1]), Path(sys.argv[2]))\n"
        "except errors.InsufficientStorage as exc:\n"
        "    print('507', exc.message)\n"
    )
    env = {**os.environ, "BENTOML_HOME": str(store), "BENTOML_DO_NOT_TRACK": "true"}
    small_disk.fill(leave=48 * KiB)  # some of the model fits, not all of the Bento
    for mode in ("checked", "unchecked"):
        done = subprocess.run([sys.executable, "-c", code, str(archive), str(store), mode], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        answer = done.stdout.strip().splitlines()[-1]
        assert answer.startswith("507 not enough space on the disk holding"), answer
        assert len(answer) < 300, answer
        left = sorted(str(p.relative_to(store)) for kind in ("bentos", "models") for p in (store / kind).rglob("*"))
        assert left == [], f"{mode}: {left}"
    assert archive.is_file()  # an archive the caller named is not deleted


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
