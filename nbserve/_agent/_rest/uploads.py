"""``POST /v1/uploads``: a Bento archive streamed to the agent, checked, then deployed by its
``upload_id`` (``POST /v1/deployments/{name}/versions``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ... import errors
from .._access import Principal
from .._uploads import Uploads
from .auth import deploy
from .deps import get_uploads
from .models import ErrorResponse, UploadOut

router = APIRouter()


@router.post("/v1/uploads", response_model=UploadOut, status_code=201, tags=["deployments"],
             responses={code: {"model": ErrorResponse} for code in (411, 415)},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload(request: Request, who: Principal = deploy,
                 uploads: Uploads = Depends(get_uploads)) -> UploadOut:
    """Stream a Bento archive (``application/octet-stream``, with ``Content-Length`` and
    ``X-Nbserve-Sha256``); deploy it with its ``upload_id``. Checked before it is kept:
    size, digest, and every member (no paths out of the tree, links, devices or bombs)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/octet-stream":
        raise errors.UnsupportedMediaType(
            f"an upload is application/octet-stream, not {content_type or 'unspecified'}",
            hint="send the archive's bytes as the body")
    try:
        size = int(request.headers["content-length"])
    except (KeyError, ValueError):
        raise errors.LengthRequired("an upload needs a Content-Length header",
                                    hint="send the archive's size; chunked uploads are refused") from None
    digest = request.headers.get("x-nbserve-sha256", "")
    found = await uploads.receive(request.stream(), size=size, sha256=digest, owner=who)
    return UploadOut(upload_id=found.id, size=found.size, sha256=found.sha256)
