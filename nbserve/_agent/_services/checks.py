"""What a new version's server must show before it takes traffic: it answers its own
reference sample as the notebook did (parity), and, when it batches, whether its latency
budget can hold a full batch (a warning, never a failure)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

import httpx

from ..._kinds import ANSWER_COLUMN, INPUT_COLUMN
from ..._settings import ReleasePlan
from ...errors import DeployFailed
from .._engine import ServedVersion
from .._insights import read_reference, request_rows_json
from .._rollout import PARITY_CHUNK_ROWS, compare_predictions
from .fleet import Fleet

log = logging.getLogger("nbserve.agent")

BATCH_PROBE_MAX_ROWS = 10_000  # the deploy-time batching check never sends more rows than this


class ReleaseChecks:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.registry = fleet.registry

    async def parity(self, name: str, number: int, proc: ServedVersion, plan: ReleasePlan,
                     actor: str | None) -> None:
        """Replay the reference sample through the new server; refuse it if its answers are
        not the notebook's. Raises ``DeployFailed`` (the server is stopped by the caller's
        failure path) with the differing rows in ``details``."""
        if plan.skip_parity:
            self.registry.add_event("parity_skipped", f"v{number}: parity check skipped on request",
                                    deployment=name, version=number, actor=actor)
            return
        _, bento_path = self.fleet.reference_path(name, number)
        reference = await asyncio.to_thread(read_reference, bento_path)
        if ANSWER_COLUMN in reference.columns:  # one vector (probabilities, an embedding) per row
            reference["prediction"] = [json.loads(v) for v in reference.pop(ANSWER_COLUMN)]
        if "prediction" not in reference.columns:
            self.registry.add_event("parity_not_applicable",
                                    f"v{number}: the model's outputs are not one value per row; not compared",
                                    deployment=name, version=number, actor=actor)
            return
        expected = reference.pop("prediction").tolist()
        if INPUT_COLUMN in reference.columns:  # text, arrays, records: each item's request JSON
            reference = reference[[INPUT_COLUMN]]
        got: list[Any] = []
        async with httpx.AsyncClient(timeout=120, trust_env=False) as client:
            for start in range(0, len(reference), PARITY_CHUNK_ROWS):
                chunk = reference.iloc[start:start + PARITY_CHUNK_ROWS]
                body = '{"data": ' + request_rows_json(chunk) + "}"
                response = await client.post(f"{proc.url}/predict", content=body,
                                             headers={"content-type": "application/json"})
                if response.status_code != 200:
                    raise DeployFailed(
                        f"parity check: v{number} answered {response.status_code} to its own reference "
                        f"sample: {response.text[:300]}",
                        hint=f"see `nbserve logs {name} --version {number}`", parity={"status": "error"},
                    )
                got.extend(response.json())
        # a compiled runtime computes in float32: its version records the tolerance it was checked with
        tolerance = ((self.fleet.get_version(name, number).metadata.get("model") or {}).get("runtime") or {}).get(
            "tolerance") or {}
        report = await asyncio.to_thread(compare_predictions, expected, got, reference,
                                         **{k: float(v) for k, v in tolerance.items() if k in ("rtol", "atol")})
        if report["status"] == "failed":
            await self.fleet.engine.stop(proc, grace=1.0)
            first = report["examples"][0]
            raise DeployFailed(
                f"parity check failed: {report['mismatches']} of {report['rows']} reference rows are "
                f"served differently from the notebook's predictions (row {first['row']}: expected "
                f"{first['expected']!r}, served {first['served']!r})",
                hint="the Bento does not reproduce the notebook (a dependency or preprocessing "
                "difference?); dep.events() has the differing rows; skip_parity=True to deploy anyway",
                parity=report,
            )
        self.registry.add_event("parity_passed", f"v{number} reproduces the notebook on {report['rows']} rows",
                                deployment=name, version=number, actor=actor, data=report)

    async def batching(self, name: str, number: int, proc: ServedVersion, actor: str | None) -> None:
        """Time one row and one full batch through the new server, before any traffic, and
        warn when the latency budget cannot hold a full batch: under load those requests
        would be answered 503. Never fails the deploy: a check that cannot run says so."""
        try:
            await self._time_batching(name, number, proc, actor)
        except Exception as exc:  # noqa: BLE001 - a warning, never a failed deploy
            log.exception("batching check of %s v%s failed", name, number)
            self.registry.add_event("batching_warning", f"v{number}: the batching check could not run: "
                                    f"{type(exc).__name__}: {exc}", deployment=name, version=number, actor=actor)

    async def _time_batching(self, name: str, number: int, proc: ServedVersion, actor: str | None) -> None:
        batching = proc.batching or {}
        budget, size = float(batching["max_latency_ms"]), int(batching["max_batch_size"])
        _, bento_path = self.fleet.reference_path(name, number)
        reference = (await asyncio.to_thread(read_reference, bento_path)).drop(
            columns=["prediction", ANSWER_COLUMN], errors="ignore")  # what the model answered is not input
        rows = min(size, BATCH_PROBE_MAX_ROWS)
        full = reference.sample(n=rows, replace=len(reference) < rows, random_state=0)
        timings: dict[str, float] = {}
        async with httpx.AsyncClient(timeout=120, trust_env=False) as client:
            for key, frame, repeat in (("one_row_ms", reference.iloc[:1], 5), ("full_batch_ms", full, 3)):
                body = '{"data": ' + request_rows_json(frame) + "}"
                took = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    response = await client.post(f"{proc.url}/predict", content=body,
                                                 headers={"content-type": "application/json"})
                    took.append((time.perf_counter() - started) * 1000)
                    if response.status_code != 200:
                        self.registry.add_event(
                            "batching_warning", f"v{number}: the batching check got {response.status_code} for "
                            f"{len(frame)} row(s): {response.text[:200]}", deployment=name, version=number,
                            actor=actor, data=batching)
                        return
                timings[key] = sorted(took)[len(took) // 2]
        figures = {**batching, **{k: round(v, 2) for k, v in timings.items()}, "probe_rows": rows,
                   "suggested_max_latency_ms": math.ceil(2 * timings["full_batch_ms"])}
        self.registry.add_event(
            "batching_checked", f"v{number}: one row {timings['one_row_ms']:.1f} ms, {rows} rows "
            f"{timings['full_batch_ms']:.1f} ms, budget {budget:g} ms", deployment=name, version=number,
            actor=actor, data=figures)
        if timings["one_row_ms"] >= budget:
            problem = (f"a single row already takes {timings['one_row_ms']:.1f} ms, at or over max_latency_ms="
                       f"{budget:g}: under concurrent load most requests will be answered 503")
        elif timings["full_batch_ms"] > budget:
            problem = (f"a batch of {rows} rows takes {timings['full_batch_ms']:.1f} ms, over max_latency_ms="
                       f"{budget:g}: batches will stay small and requests that wait past the budget are "
                       f"answered 503 under load")
        else:
            return
        self.registry.add_event(
            "batching_warning", f"v{number}: {problem}; raise max_latency_ms to at least "
            f"{figures['suggested_max_latency_ms']} or lower max_batch_size", deployment=name, version=number,
            actor=actor, data=figures)
