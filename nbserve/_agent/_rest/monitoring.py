"""What the monitor recorded: latency, summaries, traffic, drift, the reference sample,
resource use over time, the capture settings, its storage and Prometheus' ``/metrics``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from ..._windows import parse_window
from .._access import Principal
from .._insights import report_payload
from .._manager import Manager
from .auth import deploy, view, view_all
from .deps import get_manager
from .models import MAX_INT, ConfigUpdate, DriftOut, LatencyRow, SummaryOut, TableOut

router = APIRouter()


@router.get("/v1/deployments/{name}/latency", response_model=list[LatencyRow], dependencies=[view],
            tags=["monitoring"])
async def latency(name: str, window: str = "1h", by_version: bool = False,
                  since_version: int | None = Query(None, ge=1, le=MAX_INT),
                  version: int | None = Query(None, ge=0, le=MAX_INT),
                  manager: Manager = Depends(get_manager)) -> list[LatencyRow]:
    rows = await asyncio.to_thread(manager.readings.latency, name, window, by_version=by_version,
                                   since_version=since_version, version=version)
    return [LatencyRow(**r) for r in rows]


@router.get("/v1/deployments/{name}/summary", response_model=SummaryOut, dependencies=[view],
            tags=["monitoring"])
async def deployment_summary(name: str, window: str = "5m",
                             manager: Manager = Depends(get_manager)) -> SummaryOut:
    return SummaryOut(**await asyncio.to_thread(manager.readings.summary, name, window))


@router.get("/v1/deployments/{name}/traffic", response_model=TableOut, dependencies=[view],
            tags=["monitoring"])
async def traffic(name: str, window: str = "1h",
                  version: int | None = Query(None, ge=0, le=MAX_INT),
                  limit: int = Query(10_000, ge=1, le=1_000_000),
                  manager: Manager = Depends(get_manager)) -> Response:
    frame = await asyncio.to_thread(manager.readings.traffic, name, window, version=version, limit=limit)
    return _frame_response(frame)


@router.get("/v1/deployments/{name}/drift", response_model=DriftOut, dependencies=[view],
            tags=["monitoring"])
async def drift(name: str, window: str = "1h",
                version: int | None = Query(None, ge=1, le=MAX_INT),
                manager: Manager = Depends(get_manager)) -> DriftOut:
    report = await asyncio.to_thread(manager.readings.drift, name, window, version=version)
    return DriftOut(version=version or manager.fleet.get_row(name).live_version, **report_payload(report))


@router.get("/v1/deployments/{name}/reference", dependencies=[view], tags=["monitoring"],
            responses={200: {"content": {"application/vnd.apache.parquet": {}}}})
async def reference(name: str, version: int | None = Query(None, ge=1, le=MAX_INT),
                    manager: Manager = Depends(get_manager)) -> Response:
    """The version's reference sample (inputs and the model's predictions) as Parquet."""
    number, bento_path = await asyncio.to_thread(manager.fleet.reference_path, name, version)
    from ..._service_template import REFERENCE_FILE

    data = (bento_path / "src" / REFERENCE_FILE).read_bytes()
    return Response(data, media_type="application/vnd.apache.parquet",
                    headers={"x-nbserve-version": str(number)})


@router.get("/v1/deployments/{name}/resources", response_model=TableOut, dependencies=[view],
            tags=["monitoring"])
async def resources(name: str, window: str = "1h", manager: Manager = Depends(get_manager)) -> TableOut:
    manager.fleet.get_row(name)
    since = time.time() - parse_window(window)
    rows = await asyncio.to_thread(manager.monitor.resources, name, since)
    return TableOut(columns=["ts", "version", "cpu_percent", "rss_bytes", "processes"],
                    data=[list(r) for r in rows])


@router.get("/v1/deployments/{name}/config", dependencies=[view], tags=["monitoring"])
async def get_config(name: str, manager: Manager = Depends(get_manager)) -> dict[str, Any]:
    return manager.fleet.config(name)


@router.patch("/v1/deployments/{name}/config", tags=["monitoring"])
async def set_config(name: str, body: ConfigUpdate, who: Principal = deploy,
                     manager: Manager = Depends(get_manager)) -> dict[str, Any]:
    return manager.fleet.configure(name, body.settings, actor=who.actor(body.actor))


@router.get("/v1/monitor", dependencies=[view_all], tags=["monitoring"])
async def monitor_state(manager: Manager = Depends(get_manager)) -> dict[str, Any]:
    """Rows and bytes the monitor keeps, requests waiting for capture, and dropped ones."""
    return await asyncio.to_thread(manager.monitor.storage)


@router.get("/metrics", dependencies=[view_all], tags=["monitoring"],
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(manager: Manager = Depends(get_manager)) -> Response:
    """Prometheus text format: requests, latency histograms, rows, process resources."""
    from .._prometheus import render

    body, content_type = render(manager)
    return Response(body, media_type=content_type)


def _frame_response(frame: Any) -> Response:
    body = frame.to_json(orient="split", index=False, date_format="iso", date_unit="ms")
    return Response(body, media_type="application/json")
