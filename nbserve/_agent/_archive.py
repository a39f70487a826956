"""Uploaded Bento archives: received into staging with bounded memory, then inspected.

``bentoml.export_bento`` writes an xz-compressed tar (``shutil.make_archive`` "xztar",
members ``./bento.yaml``, ``./src/...``, ``./models/...``). ``bentoml.import_bento``
(1.4.40) reads it with fsspec's ``TarFileSystem``, choosing the compression from the file
name (``*.bento`` means xz), and extracts with its own member checks: no absolute or
``..`` paths, no hard links or devices, each symlink checked with ``realpath`` as it is
created. Two gaps remain, and :func:`check_archive` closes them before it runs: a symlink
is checked before the links after it exist, so ``x -> d/y/../..`` then ``d/y -> ..``
lands in the store pointing outside the bento (seen here); and nothing limits sizes,
member count, header sizes or the xz decoder's memory. So no extraction of our own is
needed: links are resolved against all the others, and the checks run on headers only.
"""

from __future__ import annotations

import asyncio
import bz2
import gzip
import hashlib
import io
import lzma
import os
import posixpath
import re
import secrets
import tarfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any, BinaryIO, NoReturn

from .. import errors
from ._storage import insufficient, is_disk_full, require

__all__ = [
    "DEFAULT_MAX_MEMBERS",
    "DEFAULT_MAX_RATIO",
    "DEFAULT_MAX_UNPACKED_BYTES",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "check_archive",
    "import_into_store",
    "receive_upload",
]

DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024**3  # 2 GiB compressed
DEFAULT_MAX_UNPACKED_BYTES = 8 * 1024**3  # sum of member sizes
DEFAULT_MAX_MEMBERS = 100_000
DEFAULT_MAX_RATIO = 200.0  # unpacked / compressed bytes (decompression bombs)

_RATIO_FLOOR_BYTES = 64 * 1024**2  # below this many unpacked bytes the ratio is not judged
_FLUSH_BYTES = 1024**2  # received bytes go to disk (off the event loop) this many at a time
_READ_BYTES = 256 * 1024
_MAX_HEADER_BYTES = 1024**2  # a pax or GNU long-name header's own size
_MAX_TRAILING_BYTES = 1024**2  # decompressed bytes allowed after the end-of-archive marker
_XZ_MEMLIMIT = 256 * 1024**2  # an xz header can ask for a 1.5 GiB dictionary; export uses 8 MiB
_MAX_LINK_HOPS = 40  # as Linux's ELOOP
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_DRIVE = re.compile(r"^[A-Za-z]:")

_CUT_SHORT = "rebuild and redeploy with nbserve.deploy(); the upload may have been cut short"
_UNSAFE = ("bentoml.export_bento does not write archives like this; "
           "rebuild and redeploy with nbserve.deploy()")


# -- receiving ---------------------------------------------------------------------------


async def receive_upload(
    chunks: AsyncIterator[bytes],
    staging_dir: Path,
    *,
    size: int,
    sha256: str,
    max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
) -> Path:
    """Write the streamed body to a new ``0600`` file under ``staging_dir`` and return it.

    The declared ``size`` and ``sha256`` are checked before the first chunk is read, and
    so is the free space for ``size`` bytes; the body is hashed as it arrives, written off
    the event loop about 1 MiB at a time, and refused as soon as it runs past ``size``. On
    any failure, the client vanishing included, the partial file is deleted and the error
    re-raised (a full disk as ``InsufficientStorage``).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise errors.InvalidArchive(
            f"the upload's size must be a whole number of bytes, got {size!r}")
    if size > max_bytes:
        raise errors.PayloadTooLarge(
            f"the archive is {size} bytes; this agent accepts at most {max_bytes}",
            hint="make the bundle smaller, or ask the agent's owner to raise its upload limit",
            size=size, max_bytes=max_bytes,
        )
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise errors.InvalidArchive(
            f"the upload's SHA-256 must be 64 hexadecimal characters, got {str(sha256)[:80]!r}",
            hint="send the hex digest of the archive file (hashlib.sha256(data).hexdigest())",
        )
    expected = sha256.lower()
    staging_dir = Path(staging_dir)
    try:
        staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        require(staging_dir, size, "the upload")
        # The name ends in .bento: import_bento picks the decompressor from the name (xz).
        path = staging_dir / f"upload-{secrets.token_hex(12)}.bento"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if is_disk_full(exc):
            raise insufficient(staging_dir, needed=size, what="the upload") from None
        raise
    hasher = hashlib.sha256()
    received = 0
    pending = bytearray()
    try:
        with open(fd, "wb") as file:
            os.fchmod(fd, 0o600)  # whatever the umask
            async for chunk in chunks:
                received += len(chunk)
                if received > size:
                    raise errors.PayloadTooLarge(
                        f"the upload is longer than declared: expected {size} bytes, "
                        f"got at least {received}",
                        hint="send the archive's exact size in bytes (Content-Length)",
                        expected_bytes=size, received_bytes=received,
                    )
                if pending and len(pending) + len(chunk) > _FLUSH_BYTES:
                    await asyncio.to_thread(_write, file, hasher, pending)
                    pending.clear()
                if len(chunk) >= _FLUSH_BYTES:
                    await asyncio.to_thread(_write, file, hasher, chunk)
                else:
                    pending += chunk
            if pending:
                await asyncio.to_thread(_write, file, hasher, pending)
                pending.clear()
        if received < size:
            raise errors.InvalidArchive(
                f"the upload was cut short: expected {size} bytes, got {received}",
                hint=_CUT_SHORT, expected_bytes=size, received_bytes=received,
            )
        actual = hasher.hexdigest()
        if actual != expected:
            raise errors.InvalidArchive(
                f"the upload's SHA-256 does not match: expected {expected}, got {actual}",
                hint="the archive changed in transit or on disk; deploy again",
                expected_sha256=expected, received_sha256=actual,
            )
    except BaseException as exc:
        # Closing the file waits for a write still running in its thread (the buffered
        # writer's lock), so the unlink below is the last thing to touch it.
        path.unlink(missing_ok=True)
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise insufficient(staging_dir, needed=size, what="the upload") from None
        raise
    return path


def _write(file: IO[bytes], hasher: Any, data: bytes | bytearray) -> None:
    hasher.update(data)
    file.write(data)


# -- importing ---------------------------------------------------------------------------


def import_into_store(archive: Path, store: Path, *, discard: bool = False) -> Any:
    """``bentoml.import_bento`` in its two steps, all or nothing; returns the stored Bento.

    Unpacking (into TMPDIR) first tells how much the Bento and its models need, which is
    checked against the store's disk before the store is written. A save the disk cuts
    short is undone (bentoml removes the version's directory itself; the empty
    ``bentos/<name>/`` and any model saved before the Bento failed go too), and a full disk
    is one short ``InsufficientStorage``, not the copy error of every file. ``store`` is the
    ``BENTOML_HOME`` bentoml was imported with. ``discard``: delete ``archive`` on failure.
    """
    import tempfile

    import bentoml
    from bentoml.exceptions import NotFound as BentoNotFound

    try:
        try:
            unpacked = bentoml.Bento.import_from(str(archive))  # bentoml removes it on failure
        except Exception as exc:  # noqa: BLE001 - a broken archive can fail in many ways
            if is_disk_full(exc):
                raise insufficient(Path(tempfile.gettempdir()), what="unpacking the Bento archive") from None
            raise errors.InvalidArgument(
                f"the Bento archive could not be imported: {_short_error(exc)}",
                hint="rebuild it with nbserve.deploy(); the archive may be truncated",
            ) from None
        try:
            return bentoml.get(unpacked.tag)  # imported before: Bentos are immutable, use that one
        except BentoNotFound:
            return _save(unpacked, store)
    except BaseException:
        if discard:
            archive.unlink(missing_ok=True)
        raise


def _save(unpacked: Any, store: Path) -> Any:
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound as BentoNotFound

    needed = _bytes_on_disk(Path(unpacked.path))
    require(store, needed, f"the Bento {unpacked.tag}")
    new_models = []
    for model in unpacked.info.all_models:
        try:
            bentoml.models.get(model.tag)
        except BentoNotFound:
            new_models.append(model.tag)
    try:
        return unpacked.save()
    except Exception as exc:  # noqa: BLE001 - undo, then say what happened
        if isinstance(exc, BentoMLException) and "already exists" in str(exc):
            return bentoml.get(unpacked.tag)  # a concurrent import of the same Bento won
        for tag in new_models:  # saved before the Bento failed: nothing refers to them
            try:
                bentoml.models.delete(tag)
            except Exception:  # noqa: BLE001 - it was not saved at all
                pass
        leftovers = [store / "bentos" / unpacked.tag.name, *(store / "models" / t.name for t in new_models)]
        for leftover in leftovers:
            try:
                leftover.rmdir()  # only when empty: other versions may live there
            except OSError:
                pass
        if is_disk_full(exc):
            raise insufficient(store, needed=needed, what=f"the Bento {unpacked.tag}") from None
        raise errors.InvalidArgument(f"the Bento archive could not be imported: {_short_error(exc)}",
                                     hint="rebuild it with nbserve.deploy()") from None


def _bytes_on_disk(root: Path) -> int:
    """What a copy of the tree takes: each file rounded up to whole 4 KiB blocks, each
    directory one block (a sum of sizes undercounts a Bento's many small files)."""
    total = 0
    for entry in root.rglob("*"):
        if entry.is_symlink():
            continue
        size = entry.stat().st_size if entry.is_file() else 0
        total += max(1, -(-size // 4096)) * 4096
    return total


def _short_error(exc: BaseException) -> str:
    """One line: copytree's list of every file that failed becomes its first and a count."""
    import shutil

    failures = exc.args[0] if isinstance(exc, shutil.Error) and exc.args else None
    if isinstance(failures, list) and failures:
        first = failures[0][-1] if isinstance(failures[0], tuple) else failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        return f"copying failed: {first}{more}"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]


# -- checking ----------------------------------------------------------------------------


def check_archive(
    path: Path,
    *,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> None:
    """Refuse, with :class:`~nbserve.errors.InvalidArchive` naming the member, an archive
    that is unsafe or unfit for ``bentoml.import_bento``; return ``None`` for a good one.

    Reads the stream once (headers only, data skipped), so memory stays bounded and a
    decompression bomb is caught at its header, before its data is inflated.
    """
    path = Path(path)
    compressed_size = max(path.stat().st_size, 1)
    scan = _Scan(max_unpacked_bytes, max_members, max_ratio, compressed_size)
    with open(path, "rb") as raw:
        found = _compression_of(raw.read(6))
        raw.seek(0)
        expected = _compression_bentoml_reads(path.name)
        if found != expected:
            scan.not_an_archive(path.name, found, expected)
        try:
            stream = _decompressed(raw, found)
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=scan.tarinfo_class()) as tar:
                while (member := tar.next()) is not None:
                    scan.member(member)
                    tar.members.clear()  # stream mode keeps every header otherwise
                if not scan.clean_end:
                    raise tarfile.ReadError("the archive stops without its end-of-archive marker")
                trailing = 0  # read to the end: checks the compressed stream's own checksum
                while block := stream.read(_READ_BYTES):
                    trailing += len(block)
                    if trailing > _MAX_TRAILING_BYTES:
                        raise tarfile.ReadError("more data follows the end-of-archive marker")
        except errors.InvalidArchive:
            raise
        except lzma.LZMAError as exc:
            if "memory" in str(exc).lower():
                raise scan.refusal(None, f"its xz stream needs more than {_XZ_MEMLIMIT // 1024**2} "
                                         "MiB of memory to decode") from None
            raise scan.corrupt(exc) from None
        except (tarfile.TarError, EOFError, OSError, zlib.error, RecursionError,
                UnicodeError) as exc:
            raise scan.corrupt(exc) from None
    scan.finish()


class _Scan:
    """What one pass over the headers has seen, and the rules it applies."""

    def __init__(self, max_unpacked: int, max_members: int, max_ratio: float, compressed: int):
        self.max_unpacked = max_unpacked
        self.max_members = max_members
        self.max_ratio = max_ratio
        self.compressed = compressed
        self.members = 0
        self.unpacked = 0
        self.kinds: dict[str, str] = {}  # normalised path -> "dir" | "file" | "link"
        self.links: dict[str, str] = {}  # normalised path -> symlink target
        self.clean_end = False

    # errors

    def refuse(self, member: str | None, reason: str) -> NoReturn:
        raise self.refusal(member, reason)

    def refusal(self, member: str | None, reason: str) -> errors.InvalidArchive:
        if member is None:
            return errors.InvalidArchive(f"the Bento archive was refused: {reason}", hint=_UNSAFE)
        return errors.InvalidArchive(
            f"the Bento archive was refused: member {member!r} {reason}",
            hint=_UNSAFE, member=member,
        )

    def corrupt(self, exc: BaseException) -> errors.InvalidArchive:
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self.members == 0 and isinstance(exc, tarfile.ReadError):
            return errors.InvalidArchive(
                f"the upload is not a Bento archive (not a tar archive: {what})",
                hint="send the file bentoml.export_bento wrote; " + _CUT_SHORT,
            )
        return errors.InvalidArchive(
            f"the Bento archive is truncated or corrupt after {self.members} members ({what})",
            hint=_CUT_SHORT,
        )

    def not_an_archive(self, name: str, found: str | None, expected: str | None) -> NoReturn:
        labels = {"xz": "an xz-compressed tar", "gzip": "a gzip-compressed tar",
                  "bz2": "a bzip2-compressed tar", "zip": "a zip file", None: "a plain tar"}
        holds = labels[found] if found else "no xz, gzip or bzip2 stream"
        raise errors.InvalidArchive(
            f"the upload is not a Bento archive: {name} holds {holds}, but "
            f"bentoml.import_bento reads a file of that name as {labels[expected]}",
            hint="send the file bentoml.export_bento wrote (an xz-compressed tar, *.bento); "
                 + _CUT_SHORT,
        )

    # headers

    def tarinfo_class(self) -> type[tarfile.TarInfo]:
        scan = self

        class _GuardedTarInfo(tarfile.TarInfo):
            """Refuses a header before tarfile reads its payload into memory."""

            @classmethod
            def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
                try:
                    return super().fromtarfile(tar)
                except tarfile.EOFHeaderError:
                    scan.clean_end = True
                    raise

            def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
                if self.type == tarfile.XGLTYPE:
                    scan.refuse(self.name, "is a global pax header (tarfile keeps every one)")
                if self.type == tarfile.GNUTYPE_SPARSE:
                    scan.refuse(self.name, "is a sparse file")
                if self.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                                 tarfile.GNUTYPE_LONGLINK) and self.size > _MAX_HEADER_BYTES:
                    scan.refuse(self.name, f"is an extended header of {self.size} bytes "
                                           f"(at most {_MAX_HEADER_BYTES})")
                return super()._proc_member(tar)

        return _GuardedTarInfo

    def member(self, info: tarfile.TarInfo) -> None:
        name = info.name
        self.members += 1
        if self.members > self.max_members:
            self.refuse(name, f"is one more than the {self.max_members} members allowed")
        parts = self._parts(name, name, "path")
        key = "/".join(parts)
        if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            kind = "file"
            self.unpacked += info.size
            if self.unpacked > self.max_unpacked:
                self.refuse(name, f"brings the unpacked size to {self.unpacked} bytes, "
                                  f"over the {self.max_unpacked} allowed")
            ratio = self.unpacked / self.compressed
            if self.unpacked > _RATIO_FLOOR_BYTES and ratio > self.max_ratio:
                self.refuse(name, f"brings the unpacked size to {self.unpacked} bytes from "
                                  f"{self.compressed} compressed ({ratio:.0f}x, over "
                                  f"{self.max_ratio:g}x): a decompression bomb")
        elif info.type == tarfile.DIRTYPE:
            kind = "dir"
        elif info.type == tarfile.SYMTYPE:
            kind = "link"
            self._check_symlink(name, parts, info.linkname)
            self.links[key] = info.linkname
        elif info.type == tarfile.LNKTYPE:
            target = info.linkname
            target_parts = self._parts(name, target, "hard-link target")
            if not target_parts:
                self.refuse(name, f"is a hard link to the archive root {target!r}")
            self.refuse(name, f"is a hard link to {target!r} "
                              "(bentoml.import_bento refuses hard links)")
        elif info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            self.refuse(name, "is a device file")
        elif info.type == tarfile.FIFOTYPE:
            self.refuse(name, "is a FIFO")
        else:
            self.refuse(name, "is not a regular file, directory or symlink "
                              f"(tar type {info.type!r})")
        if not parts and kind != "dir":
            self.refuse(name, "stands for the archive root but is not a directory")
        previous = self.kinds.get(key)
        if previous is not None and not (previous == kind == "dir"):
            self.refuse(name, f"appears twice (as a {previous}, then a {kind})")
        self.kinds[key] = kind

    def _parts(self, member: str, path: str, what: str) -> list[str]:
        """``path`` split into components; absolute, drive-qualified or ``..`` paths refused.

        Backslashes count as separators, as bentoml counts them."""
        if "\x00" in path:
            self.refuse(member, f"has a NUL byte in its {what}")
        unified = path.replace("\\", "/")
        if unified.startswith("/") or _DRIVE.match(unified):
            self.refuse(member, f"has an absolute {what} {path!r}")
        parts = [part for part in unified.split("/") if part not in ("", ".")]
        if ".." in parts:
            self.refuse(member, f"has a '..' component in its {what} {path!r}")
        return parts

    def _check_symlink(self, name: str, parts: list[str], target: str) -> None:
        if not target or "\x00" in target or "\\" in target:
            self.refuse(name, f"is a symlink with an unusable target {target!r}")
        if target.startswith("/") or _DRIVE.match(target):
            self.refuse(name, f"is a symlink to the absolute path {target!r}")
        depth = len(parts) - 1  # the link's directory
        for part in target.split("/"):
            if part == "..":
                depth -= 1
                if depth < 0:
                    self.refuse(name, f"is a symlink to {target!r}, outside the archive")
            elif part not in ("", "."):
                depth += 1

    # the whole archive

    def finish(self) -> None:
        for key in self.kinds:  # nothing may be extracted through a link
            parts = key.split("/")
            for i in range(1, len(parts)):
                ancestor = "/".join(parts[:i])
                if ancestor in self.links:
                    self.refuse(key, f"lies under the symlink {ancestor!r}")
        for key, target in self.links.items():
            self._resolve(key, target)
        if self.kinds.get("bento.yaml") != "file":
            self.refuse(None, "it has no bento.yaml at its root, so it is not a Bento")

    def _resolve(self, key: str, target: str) -> None:
        """Follow ``key``'s target through every symlink in the archive, as the tree on
        disk will once all are created; refuse if it leaves the root or loops."""
        pending = [*reversed(target.split("/")), *reversed(posixpath.dirname(key).split("/"))]
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    self.refuse(key, f"is a symlink to {target!r}, which resolves outside the "
                                     "archive through other symlinks")
                resolved.pop()
                continue
            resolved.append(part)
            link = self.links.get("/".join(resolved))
            if link is not None:
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    self.refuse(key, f"is a symlink to {target!r} that loops")
                resolved.pop()
                pending.extend(reversed(link.split("/")))


# -- streams -----------------------------------------------------------------------------


def _compression_of(magic: bytes) -> str | None:
    if magic.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if magic.startswith(b"\x1f\x8b"):
        return "gzip"
    if magic.startswith(b"BZh"):
        return "bz2"
    return None


def _compression_bentoml_reads(name: str) -> str | None:
    """The decompressor ``bentoml.import_bento`` will use for a file of this name
    (``Exportable.guess_format`` in bentoml 1.4): xz unless the name says otherwise."""
    ext = posixpath.splitext(name)[1][1:]
    return {"gz": "gzip", "bz2": "bz2", "tar": None, "zip": "zip"}.get(ext, "xz")


def _decompressed(raw: BinaryIO, compression: str | None) -> BinaryIO:
    if compression == "xz":
        return io.BufferedReader(_XzReader(raw), buffer_size=_READ_BYTES)
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "bz2":
        return bz2.BZ2File(raw)  # type: ignore[return-value]
    return raw


class _XzReader(io.RawIOBase):
    """Concatenated xz streams, as ``lzma.LZMAFile`` reads them, with a memory cap on
    the decoder (which ``LZMAFile`` cannot take)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._decoder = self._new()

    @staticmethod
    def _new() -> lzma.LZMADecompressor:
        return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while True:
            if self._decoder.eof:
                rest = self._decoder.unused_data or self._raw.read(_READ_BYTES)
                if not rest:
                    return 0
                self._decoder = self._new()
                data = self._decoder.decompress(rest, len(view))
            elif self._decoder.needs_input:
                block = self._raw.read(_READ_BYTES)
                if not block:
                    raise EOFError("the xz stream ends before its end-of-stream marker")
                data = self._decoder.decompress(block, len(view))
            else:
                data = self._decoder.decompress(b"", len(view))
            if data:
                view[: len(data)] = data
                return len(data)
