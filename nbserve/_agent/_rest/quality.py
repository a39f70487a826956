"""Labels for served predictions (feedback) and the quality metrics computed from them."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query

from .._access import Principal
from .._manager import Manager
from .auth import predict, view
from .deps import get_manager
from .models import MAX_INT, FeedbackIn, FeedbackOut, QualityOut

router = APIRouter()


@router.post("/v1/deployments/{name}/feedback", response_model=FeedbackOut, tags=["quality"])
async def feedback(name: str, body: FeedbackIn, who: Principal = predict,
                   manager: Manager = Depends(get_manager)) -> FeedbackOut:
    """Real outcomes for served predictions (also ``POST <stable URL>/feedback``)."""
    return FeedbackOut(**await asyncio.to_thread(manager.readings.feedback, name, body.ids, body.y_true))


@router.get("/v1/deployments/{name}/quality", response_model=QualityOut, dependencies=[view],
            tags=["quality"])
async def quality(name: str, window: str = "1d", bucket: str = "1h", metrics: str | None = None,
                  version: int | None = Query(None, ge=1, le=MAX_INT),
                  manager: Manager = Depends(get_manager)) -> QualityOut:
    """Metrics (scikit-learn) per time bucket and version over labelled predictions."""
    chosen = metrics.split(",") if metrics else None
    return QualityOut(**await asyncio.to_thread(manager.readings.quality, name, window, bucket=bucket,
                                                metrics=chosen, version=version))
