"""Uploaded Bento archives: receiving with bounded memory, and refusing hostile archives.

Real files, real tarfile, a real exported Bento and a real ``bentoml.import_bento``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import lzma
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")  # conftest sets it too, before bentoml

import pytest  # noqa: E402

from nbserve import errors  # noqa: E402
from nbserve._agent._archive import check_archive, receive_upload  # noqa: E402

MiB = 1024**2


# -- helpers -----------------------------------------------------------------------------


def _member(name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"",
            linkname: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.size = len(data)
    return info, data


def _tar(path: Path, members: Iterable[tuple], mode: str = "w:xz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:  # the same TarInfo may serve several archives
            tar.addfile(info.replace(), io.BytesIO(data) if data else None)
    return path


BENTO_YAML = _member("./bento.yaml", data=b"service: x\n")


def _refused(path: Path, **limits) -> str:
    with pytest.raises(errors.InvalidArchive) as info:
        check_archive(path, **limits)
    assert info.value.status == 400 and info.value.hint
    return info.value.message


class _Zeros(io.RawIOBase):
    """``n`` zero bytes, produced as read: a bomb is written without holding it."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


@pytest.fixture(scope="module")
def exported(tree, iris, tmp_path_factory: pytest.TempPathFactory):
    """A real tiny Bento, exported by bentoml.export_bento (via build_bundle)."""
    from nbserve._bundle import build_bundle

    _, X_test, _, _ = iris
    bundle = build_bundle(tree, name="archive-check", sample=X_test)
    keep = tmp_path_factory.mktemp("exported") / "archive-check.bento"
    shutil.copy(bundle.archive, keep)
    bundle.cleanup()
    return keep, bundle.bento_tag


# -- what export_bento writes, and that it passes ----------------------------------------


def test_export_bento_writes_an_xz_tar_that_passes_the_check(exported):
    archive, _ = exported
    assert archive.read_bytes()[:6] == b"\xfd7zXZ\x00"  # xz, from shutil.make_archive "xztar"
    with tarfile.open(archive, "r|xz") as tar:
        names = [m.name for m in tar]
    assert "./bento.yaml" in names and any(n.startswith("./models/") for n in names)
    check_archive(archive)


# -- hostile archives --------------------------------------------------------------------


HOSTILE = {
    "dotdot": ([_member("../evil", data=b"pwned")], "'../evil'", "'..' component"),
    "absolute": ([_member("/etc/evil", data=b"pwned")], "'/etc/evil'", "absolute"),
    "symlink-absolute": ([_member("passwd", tarfile.SYMTYPE, linkname="/etc/passwd")],
                         "'passwd'", "absolute path '/etc/passwd'"),
    "symlink-up": ([_member("a", tarfile.SYMTYPE, linkname="../../x")],
                   "'a'", "outside the archive"),
    "hardlink-up": ([_member("h", tarfile.LNKTYPE, linkname="../x")], "'h'", "'..' component"),
    "hardlink-inside": ([_member("f", data=b"1"), _member("h", tarfile.LNKTYPE, linkname="f")],
                        "'h'", "hard link"),
    "char-device": ([_member("dev", tarfile.CHRTYPE)], "'dev'", "device file"),
    "block-device": ([_member("blk", tarfile.BLKTYPE)], "'blk'", "device file"),
    "fifo": ([_member("fifo", tarfile.FIFOTYPE)], "'fifo'", "FIFO"),
    # bentoml.import_bento accepts this one: it checks x before d/y exists, and the pair
    # resolves to two levels above the bento once both links are on disk.
    "symlink-chain": ([_member("d", tarfile.DIRTYPE),
                       _member("x", tarfile.SYMTYPE, linkname="d/y/../.."),
                       _member("d/y", tarfile.SYMTYPE, linkname="..")],
                      "'x'", "through other symlinks"),
    "symlink-loop": ([_member("p", tarfile.SYMTYPE, linkname="q/z"),
                      _member("q", tarfile.SYMTYPE, linkname="p")], "'p'", "loops"),
    "under-a-symlink": ([_member("sub", tarfile.DIRTYPE),
                         _member("l", tarfile.SYMTYPE, linkname="sub"),
                         _member("l/f", data=b"through the link")],
                        "'l/f'", "under the symlink 'l'"),
    "duplicate": ([_member("src/a", data=b"1"), _member("src/a", tarfile.SYMTYPE, linkname="b")],
                  "'src/a'", "appears twice"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_members_are_refused_by_name(case, tmp_path):
    members, named, reason = HOSTILE[case]
    work = tmp_path / "work"
    work.mkdir()
    archive = _tar(work / "hostile.bento", [BENTO_YAML, *members])
    before = sorted(p.name for p in tmp_path.parent.iterdir())

    message = _refused(archive)

    assert named in message and reason in message, message
    assert "evil" not in os.listdir(tmp_path.parent) and not Path("/etc/evil").exists()
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before
    assert os.listdir(work) == ["hostile.bento"]  # the check extracts nothing


def test_a_decompression_bomb_is_caught_at_its_header(tmp_path):
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz", compresslevel=6) as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 300 * MiB
        tar.addfile(info, _Zeros(info.size))
    assert bomb.stat().st_size < 2 * MiB

    started = time.perf_counter()
    message = _refused(bomb)
    assert time.perf_counter() - started < 1.0  # refused from the header, not by inflating it
    assert "'zeros.bin'" in message and "decompression bomb" in message


def test_small_archives_are_never_flagged_for_their_ratio(tmp_path):
    zeros = _member("src/zeros", data=bytes(8 * MiB))
    archive = _tar(tmp_path / "small.bento", [BENTO_YAML, zeros])
    assert (8 * MiB) / archive.stat().st_size > 200
    check_archive(archive)


def test_member_count_and_unpacked_size_are_bounded(tmp_path):
    files = [_member(f"f{i}", data=b"x") for i in range(10)]
    many = _tar(tmp_path / "many.bento", [BENTO_YAML, *files])
    assert "'f4'" in _refused(many, max_members=5)
    check_archive(many, max_members=11)

    big = _tar(tmp_path / "big.bento", [BENTO_YAML, _member("src/big", data=bytes(4000))])
    message = _refused(big, max_unpacked_bytes=2000)
    assert "'src/big'" in message and "over the 2000 allowed" in message


def test_an_oversized_extended_header_is_refused_before_it_is_read(tmp_path):
    long_name = "d/" * (600 * 1024) + "f"  # a pax "path" record of 1.2 MB
    archive = _tar(tmp_path / "pax.bento", [BENTO_YAML, _member(long_name, data=b"x")])
    assert "extended header of" in _refused(archive)


def _xz_asking_for_a_huge_dictionary(data: bytes) -> bytes:
    """An xz stream whose block header declares a 4 GiB dictionary (CRC fixed up)."""
    raw = bytearray(lzma.compress(data, filters=[{"id": lzma.FILTER_LZMA2, "preset": 0}]))
    start, size = 12, (raw[12] + 1) * 4
    props = raw.index(b"\x21\x01", start) + 2  # LZMA2 filter id, one property byte
    raw[props] = 40
    crc = zlib.crc32(bytes(raw[start : start + size - 4]))
    raw[start + size - 4 : start + size] = struct.pack("<I", crc)
    return bytes(raw)


def test_an_xz_stream_that_needs_too_much_memory_is_refused(tmp_path):
    plain = _tar(tmp_path / "plain.tar", [BENTO_YAML], mode="w")
    archive = tmp_path / "dict.bento"
    archive.write_bytes(_xz_asking_for_a_huge_dictionary(plain.read_bytes()))
    assert "MiB of memory to decode" in _refused(archive)


@pytest.mark.parametrize("keep", [0.5, -1, -30], ids=["half", "last-byte", "footer"])
def test_a_truncated_archive_is_refused(exported, tmp_path, keep):
    archive, _ = exported
    data = archive.read_bytes()
    cut = tmp_path / "cut.bento"
    cut.write_bytes(data[: int(len(data) * keep)] if isinstance(keep, float) else data[:keep])
    message = _refused(cut)
    assert "truncated or corrupt" in message, message


def test_an_archive_missing_its_end_marker_is_refused(tmp_path):
    members = [BENTO_YAML, _member("src/a", data=b"abc")]
    whole = _tar(tmp_path / "whole.tar", members, mode="w").read_bytes()
    # Headers and data of both members, then nothing: no zero blocks. Plain tar, so only
    # the tar structure can tell.
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[: 4 * 512])
    assert "end-of-archive marker" in _refused(cut)


def test_random_bytes_and_wrong_compression_are_not_archives(tmp_path):
    noise = os.urandom(64 * 1024)
    for name in ("noise.bento", "noise.tar"):
        (tmp_path / name).write_bytes(noise)
        assert "not a Bento archive" in _refused(tmp_path / name)
    # import_bento reads *.bento as xz: a gzip tar of that name would fail there.
    gz = _tar(tmp_path / "gz.bento", [BENTO_YAML], mode="w:gz")
    message = _refused(gz)
    assert "gzip-compressed" in message and "xz-compressed" in message
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    assert "not a Bento archive" in _refused(empty)


def test_an_archive_without_bento_yaml_is_not_a_bento(tmp_path):
    archive = _tar(tmp_path / "nobento.bento", [_member("src/a", data=b"1")])
    assert "no bento.yaml" in _refused(archive)


def test_links_that_stay_inside_pass(tmp_path):
    archive = _tar(tmp_path / "links.bento", [
        BENTO_YAML, _member("src", tarfile.DIRTYPE), _member("src/data", data=b"1"),
        _member("src/alias", tarfile.SYMTYPE, linkname="../src/./data"),
        _member("env", tarfile.SYMTYPE, linkname="src"),
    ])
    check_archive(archive)


# -- receiving ---------------------------------------------------------------------------


class _Body:
    """An async chunk source that records how far it was read."""

    def __init__(self, chunks: Iterable[bytes], fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.fail_after = fail_after
        self.yielded = 0
        self.started = False

    async def __call__(self) -> AsyncIterator[bytes]:
        self.started = True
        for chunk in self.chunks:
            if self.fail_after is not None and self.yielded == self.fail_after:
                raise ConnectionResetError("client went away")
            self.yielded += 1
            yield chunk
            await asyncio.sleep(0)


def _receive(body: _Body, staging: Path, *, size: int, sha256: str, **kw) -> Path:
    return asyncio.run(receive_upload(body(), staging, size=size, sha256=sha256, **kw))


@pytest.mark.parametrize("sizes", [[10], [1000] * 300, [3 * MiB // 2, 7, 2 * MiB, 100]],
                         ids=["one", "many-small", "large-chunks"])
def test_an_upload_is_stored_exactly(tmp_path, sizes):
    chunks = [os.urandom(n) for n in sizes]
    data = b"".join(chunks)
    path = _receive(_Body(chunks), tmp_path / "staging", size=len(data),
                    sha256=hashlib.sha256(data).hexdigest().upper())
    assert path.parent == tmp_path / "staging" and path.suffix == ".bento"
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_upload_longer_than_declared_stops_early(tmp_path):
    staging = tmp_path / "staging"
    chunks = [b"x" * 100_000] * 10
    body = _Body(chunks)
    with pytest.raises(errors.PayloadTooLarge) as info:
        _receive(body, staging, size=250_000, sha256=hashlib.sha256(b"".join(chunks)).hexdigest())
    assert body.yielded == 3  # the fourth chunk was never asked for
    assert "expected 250000 bytes, got at least 300000" in info.value.message
    assert info.value.status == 413
    assert list(staging.iterdir()) == []


def test_a_short_upload_is_refused(tmp_path):
    staging = tmp_path / "staging"
    data = b"y" * 5000
    with pytest.raises(errors.InvalidArchive) as info:
        _receive(_Body([data]), staging, size=8000, sha256=hashlib.sha256(data).hexdigest())
    assert "cut short: expected 8000 bytes, got 5000" in info.value.message
    assert "redeploy" in info.value.hint
    assert list(staging.iterdir()) == []


def test_a_wrong_digest_is_refused(tmp_path):
    staging = tmp_path / "staging"
    data = b"z" * 5000
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(errors.InvalidArchive) as info:
        _receive(_Body([data]), staging, size=len(data), sha256=wrong)
    assert f"expected {wrong}, got {hashlib.sha256(data).hexdigest()}" in info.value.message
    assert list(staging.iterdir()) == []


@pytest.mark.parametrize("digest", ["abc", "g" * 64, "a" * 65, ""])
def test_a_malformed_digest_is_refused_before_reading(tmp_path, digest):
    body = _Body([b"data"])
    with pytest.raises(errors.InvalidArchive, match="64 hexadecimal"):
        _receive(body, tmp_path / "staging", size=4, sha256=digest)
    assert not body.started
    assert not (tmp_path / "staging").exists() or list((tmp_path / "staging").iterdir()) == []


def test_an_upload_over_the_limit_is_refused_before_reading(tmp_path):
    body = _Body([b"data"])
    with pytest.raises(errors.PayloadTooLarge, match="accepts at most 1000") as info:
        _receive(body, tmp_path / "staging", size=1001, sha256="0" * 64, max_bytes=1000)
    assert info.value.status == 413 and not body.started
    assert not (tmp_path / "staging").exists() or list((tmp_path / "staging").iterdir()) == []


def test_a_client_that_disconnects_leaves_nothing(tmp_path):
    staging = tmp_path / "staging"
    chunks = [b"q" * 600_000] * 5  # the first flush to disk happens before the failure
    body = _Body(chunks, fail_after=3)
    with pytest.raises(ConnectionResetError):
        _receive(body, staging, size=3_000_000, sha256=hashlib.sha256(b"".join(chunks)).hexdigest())
    assert body.yielded == 3
    assert list(staging.iterdir()) == []


def test_a_cancelled_upload_leaves_nothing(tmp_path):
    staging = tmp_path / "staging"

    async def stalls() -> AsyncIterator[bytes]:
        yield b"a" * (2 * MiB)
        await asyncio.Event().wait()
        yield b"never"

    async def scenario() -> None:
        task = asyncio.create_task(receive_upload(stalls(), staging, size=4 * MiB, sha256="0" * 64))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if any(staging.glob("*")) and next(staging.glob("*")).stat().st_size:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert list(staging.iterdir()) == []


def test_receiving_64_mib_keeps_memory_bounded(tmp_path):
    chunk_size, count = 64 * 1024, 1024  # 64 MiB, made as it is read

    def chunks() -> Iterable[bytes]:
        for i in range(count):
            yield bytes([i % 251]) * chunk_size

    digest = hashlib.sha256()
    for chunk in chunks():
        digest.update(chunk)

    tracemalloc.start()
    try:
        path = _receive(_Body(chunks()), tmp_path / "staging", size=chunk_size * count,
                        sha256=digest.hexdigest())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size == 64 * MiB
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB"


# -- the whole way: upload, check, import --------------------------------------------------


def test_a_received_and_checked_archive_still_imports(exported, tmp_path):
    archive, tag = exported
    data = archive.read_bytes()

    def pieces() -> Iterable[bytes]:
        with open(archive, "rb") as file:
            while block := file.read(4096):
                yield block

    staged = _receive(_Body(pieces()), tmp_path / "staging", size=len(data),
                      sha256=hashlib.sha256(data).hexdigest())
    check_archive(staged)

    # A fresh store in its own process: BENTOML_HOME is read when bentoml is imported.
    home = tmp_path / "bentoml-home"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    code = "import sys, bentoml; print(bentoml.import_bento(sys.argv[1]).tag)"
    done = subprocess.run([sys.executable, "-c", code, str(staged)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == tag
    name, version = tag.split(":")
    assert (home / "bentos" / name / version / "bento.yaml").is_file()
