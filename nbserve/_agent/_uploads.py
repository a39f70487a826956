"""Bento archives sent to the agent: received into staging, checked, handed to a deploy.

A remote client cannot name a file on the agent's disk, so it uploads the archive first
(``POST /v1/uploads``, streamed, with its size and SHA-256) and deploys the returned
``upload_id``. An upload is verified (size, digest) and inspected member by member
(:func:`check_archive`) before anything imports it; a refused upload leaves nothing
behind, and the version that serves keeps serving. One that does not fit on the disk is
refused with ``InsufficientStorage`` (507): before it is read, or as the disk fills.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from .. import errors
from ._access import Principal

UPLOAD_TTL_SECONDS = 3600.0  # an upload not deployed within this long is deleted
# A client that sends nothing for this long loses its upload (NBSERVE_UPLOAD_IDLE_SECONDS).
CHUNK_TIMEOUT_SECONDS = float(os.environ.get("NBSERVE_UPLOAD_IDLE_SECONDS", "60"))


@dataclass(frozen=True)
class Upload:
    id: str
    path: Path
    size: int
    sha256: str
    owner: str
    received_at: float


async def _with_idle_timeout(chunks: AsyncIterator[bytes], timeout: float) -> AsyncIterator[bytes]:
    iterator = chunks.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), timeout)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise errors.InvalidArchive(
                f"the upload stalled: nothing arrived for {timeout:g} s",
                hint="check the network and deploy again",
            ) from None
        yield chunk


class Uploads:
    def __init__(self, staging: Path, *, max_bytes: int | None = None) -> None:
        self.dir = staging / "uploads"
        self.max_bytes = max_bytes
        self._uploads: dict[str, Upload] = {}

    async def receive(self, chunks: AsyncIterator[bytes], *, size: int, sha256: str, owner: Principal) -> Upload:
        from ._archive import DEFAULT_MAX_UPLOAD_BYTES, check_archive, receive_upload

        self._expire()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = await receive_upload(_with_idle_timeout(chunks, CHUNK_TIMEOUT_SECONDS), self.dir,
                                    size=size, sha256=sha256.lower(), max_bytes=self.max_bytes or DEFAULT_MAX_UPLOAD_BYTES)
        try:
            await asyncio.to_thread(check_archive, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        upload = Upload(secrets.token_hex(16), path, size, sha256.lower(), owner.name, time.time())
        self._uploads[upload.id] = upload
        return upload

    def archive_for(self, upload_id: str | None, archive_path: str | None, who: Principal,
                    remove_archive: bool) -> tuple[Path, bool]:
        """The archive a deploy request names, and whether to delete it after import."""
        if (upload_id is None) == (archive_path is None):
            raise errors.InvalidArgument("name exactly one of upload_id and archive_path",
                                         hint="upload the archive with POST /v1/uploads, then deploy its upload_id")
        if archive_path is not None:
            # A path on the agent's disk: only the host's own user (the owner token) may
            # name one; anyone else could make the agent read files it can see.
            if who.token_id is not None:
                raise errors.PermissionDenied(
                    "only the host's owner token may deploy an archive_path",
                    hint="upload the archive (POST /v1/uploads) and deploy its upload_id",
                )
            return Path(archive_path), remove_archive
        upload = self._uploads.pop(upload_id, None)  # type: ignore[arg-type]
        if upload is None or upload.owner != who.name:
            raise errors.NotFound(f"no upload {upload_id!r}",
                                  hint="uploads are deployed once, by the token that sent them, within an hour")
        return upload.path, True

    def _expire(self) -> None:
        cutoff = time.time() - UPLOAD_TTL_SECONDS
        for key, upload in list(self._uploads.items()):
            if upload.received_at < cutoff:
                upload.path.unlink(missing_ok=True)
                del self._uploads[key]

    def clear(self) -> None:
        """Forget every upload (at start-up nothing is pending: staged files are leftovers)."""
        self._uploads.clear()
        if self.dir.is_dir():
            for leftover in self.dir.iterdir():
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)
