"""The agent's service layer: deploy, roll back, stop, start, restore.

Every change to a deployment goes through here, one at a time per deployment (a lock
each). The rule that makes deploys atomic: the stable URL moves to a version only after
its Bento imported, its server started and ``/readyz`` answered; until then the
previous version serves, and a failure leaves it serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time

import httpx
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._config import Home
from .._names import check_name
from ..errors import (
    Conflict,
    DeployFailed,
    NotFound,
    DeploymentNotFound,
    InvalidArgument,
    NbserveError,
    VersionNotFound,
)
from .._windows import parse_window
from ._insights import MIN_DRIFT_ROWS, ProfileCache, feature_columns, latency_rows, summary, traffic_frame
from ._insights import read_reference, request_rows_json
from .._kinds import ANSWER_COLUMN, INPUT_COLUMN
from ._monitor import Monitor, MonitorSettings
from ._rollout import (
    PARITY_CHUNK_ROWS,
    ReleasePlan,
    ShadowStats,
    check_gates,
    compare_predictions,
    evaluate_gates,
)
from ._proxy import LocalAnswer, Router, StableEndpoint, Upstream
from ._quality import check_metrics, parse_ids, quality_rows
from ._access import Tokens
from ._limits import Limits, parse_batching, parse_cpus, parse_memory
from ._registry import DeploymentRow, Registry, VersionRow
from ._supervisor import ServingProcess, Supervisor, free_port

log = logging.getLogger("nbserve.agent")

RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
# A request that lost its worker is sent again once and waits this long for one to take it.
RETRY_WAIT = float(os.environ.get("NBSERVE_RETRY_WAIT", "5"))

# What a deployment's config holds unless set (``dep.configure(...)``).
DEFAULT_CONFIG: dict[str, Any] = {
    "capture": True,  # record latency and status of every request through the stable URL
    "sample_rate": 1.0,  # share of requests whose inputs and outputs may be kept ...
    "sample_budget_per_minute": 600,  # ... up to this many a minute
    "drift": {},  # nbserve._drift.DriftConfig fields: methods, thresholds, drift share
    "drift_window": "1h",  # the traffic the summary's drift flag looks at
    "gates": {},  # what a canary or shadow must meet: p99_ms, error_rate, drift_share, min_requests, window
    # "token": the stable URL needs a token allowed to predict; "open": it does not; None:
    # the agent's default (open on a loopback agent without TLS, token otherwise).
    "predict_auth": None,
    # Serving resources (applied when a server starts; dep.scale() restarts the live one).
    "workers": 1,  # BentoML worker processes behind the stable URL
    "memory": None,  # bytes: a cap on the server's whole process tree (cgroups, else a watchdog)
    "cpus": None,  # cores: a CFS quota (cgroups), else CPU affinity
    "idle_timeout": None,  # e.g. "15m": stop the servers after this long without requests (scale to zero)
    # BentoML's adaptive batching: None (off) or {"max_batch_size": rows, "max_latency_ms": ms}
    "batching": None,
}
SERVING_SETTINGS = ("workers", "memory", "cpus", "idle_timeout", "batching")
RESTARTING_SETTINGS = ("workers", "memory", "cpus", "batching")  # the server must restart to change them
DRIFT_SUMMARY_SECONDS = 10.0
GATE_CHECK_SECONDS = 2.0  # the summary's drift flag is recomputed at most this often
OVERLOAD_REPORT_SECONDS = 60.0  # a batching server's 503s are reported at most this often
BATCH_PROBE_MAX_ROWS = 10_000  # the deploy-time batching check never sends more rows than this


@dataclass
class DeploymentView:
    """A deployment as the API shows it: registry row plus live process state."""

    row: DeploymentRow
    status: str
    url: str | None
    versions: list[VersionRow]
    running: dict[int, ServingProcess]


class Manager:
    def __init__(self, home: Home, registry: Registry, *, stable_host: str = "127.0.0.1",
                 monitor_settings: MonitorSettings | None = None, tls: Any = None,
                 tokens: Tokens | None = None, predict_auth: str = "open", public_host: str | None = None) -> None:
        self.home = home
        self.registry = registry
        self.stable_host = stable_host
        self.public_host = public_host or stable_host  # the host name in stable URLs
        self.tls = tls  # an ssl.SSLContext: stable URLs are https
        self.tokens = tokens
        self.predict_auth = predict_auth  # the default of the predict_auth setting
        self.supervisor = Supervisor(home, registry, on_exit=self._on_process_exit,
                                     on_limit=self._on_memory_limit, on_worker=self._on_worker)
        self.memory_budget: int | None = None  # bytes for every server together (nbserve agent --memory-budget)
        self.cold: set[str] = set()  # deployments scaled to zero: no server, requests wake them
        self._active_since: dict[str, float] = {}  # loop time a deployment last started serving
        self.cold_starts: dict[str, float] = {}  # seconds the last wake from zero took
        self.endpoints: dict[str, StableEndpoint] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._restarts: dict[tuple[str, int], int] = {}
        self.closing = False
        self.monitor = Monitor(home.metrics, settings=monitor_settings or MonitorSettings.from_env(),
                               processes=lambda: list(self.supervisor.processes.values()))
        self.profiles = ProfileCache()
        self._drift_flags: dict[str, tuple[float, dict[str, Any]]] = {}
        self._shadows: dict[str, ShadowStats] = {}
        self._info: dict[tuple[str, int, str], LocalAnswer] = {}  # /metadata, /schema per version
        self._quality_flags: dict[str, tuple[float, dict[str, Any]]] = {}
        # per deployment: (monotonic time of the last batch_overloaded event, 503s not yet reported)
        self._overloads: dict[str, tuple[float, dict[str, int]]] = {}

    def start_background(self) -> None:
        """Background work of a running agent: request capture and rollout gates."""
        self.monitor.start()
        self._spawn(self._watch_rollouts())

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- reads ----------------------------------------------------------------------

    def get_row(self, name: str) -> DeploymentRow:
        row = self.registry.get_deployment(name)
        if row is None:
            known = [d.name for d in self.registry.list_deployments()]
            raise DeploymentNotFound(
                f"no deployment named {name!r}",
                hint=f"known deployments: {', '.join(known)}" if known else "nothing is deployed yet",
            )
        return row

    def view(self, name: str) -> DeploymentView:
        row = self.get_row(name)
        versions = self.registry.list_versions(name)
        running = {
            v: p for (d, v), p in self.supervisor.processes.items() if d == name and p.alive()
        }
        ready = {v for v, p in running.items() if p.ready}
        status = "cold" if name in self.cold and row.state == "serving" else self._status(row, versions, ready)
        return DeploymentView(row, status, self.stable_url(row), versions, running)

    def views(self) -> list[DeploymentView]:
        return [self.view(row.name) for row in self.registry.list_deployments()]

    def stable_url(self, row: DeploymentRow) -> str | None:
        scheme = "https" if self.tls is not None else "http"
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return f"{scheme}://{host}:{row.stable_port}" if row.stable_port else None

    @staticmethod
    def _status(row: DeploymentRow, versions: list[VersionRow], ready: set[int]) -> str:
        if row.state == "stopped":
            return "stopped"
        if row.live_version is not None and row.live_version in ready:
            return "serving"
        if any(v.status == "starting" for v in versions):
            return "starting"
        if row.live_version is not None:
            return "restarting"
        return "failed" if versions and versions[-1].status == "failed" else "starting"

    def get_version(self, name: str, number: int) -> VersionRow:
        self.get_row(name)
        found = self.registry.get_version(name, number)
        if found is None:
            raise VersionNotFound(
                f"{name} has no version {number}",
                hint=f"versions: {', '.join(str(v.number) for v in self.registry.list_versions(name))}",
            )
        return found

    # -- deploy ---------------------------------------------------------------------

    async def deploy(
        self,
        name: str,
        archive: Path,
        *,
        actor: str | None,
        stable_port: int | None = None,
        remove_archive: bool = False,
        release: ReleasePlan | None = None,
        serving: dict[str, Any] | None = None,
    ) -> VersionRow:
        """Import a Bento archive and register it as the next version; roll it out in the
        background. Bad archives fail here, before any version exists."""
        check_name(name)
        if self.closing:
            raise Conflict("the agent is shutting down", hint="try again in a moment")
        if serving:
            unknown = set(serving) - set(SERVING_SETTINGS)
            if unknown:
                raise InvalidArgument(f"unknown serving setting(s): {', '.join(sorted(unknown))}",
                                      hint=", ".join(SERVING_SETTINGS))
            _validate_config({**DEFAULT_CONFIG, **serving})  # a wrong one fails before anything exists
        bento_tag, metadata = await asyncio.to_thread(_import_bento, archive, self.home)
        metadata["release"] = (release or ReleasePlan()).to_dict()  # part of the immutable record
        if remove_archive:
            archive.unlink(missing_ok=True)
        row = self.registry.get_deployment(name)
        if row is None:
            row = self._create(name, stable_port, actor)
        elif stable_port and stable_port != row.stable_port:
            raise Conflict(
                f"{name} already serves on port {row.stable_port}",
                hint="leave out --port, or stop and delete the deployment first",
            )
        if serving:
            self.configure(name, serving, actor=actor)  # before the version starts, so it starts with them
        version = self.registry.add_version(name, bento_tag, metadata, actor)
        self.registry.add_event(
            "version_registered", f"v{version.number} registered from {bento_tag}",
            deployment=name, version=version.number, actor=actor,
        )
        self._spawn(self._roll_out(name, version.number, actor))
        return version

    def _create(self, name: str, stable_port: int | None, actor: str | None) -> DeploymentRow:
        port = stable_port or free_port(self.stable_host)
        taken = {d.stable_port for d in self.registry.list_deployments()}
        if port in taken:
            raise Conflict(f"port {port} is already the stable port of another deployment")
        row = self.registry.create_deployment(name, port)
        self.registry.add_event("deployment_created", f"stable URL {self.stable_url(row)}", deployment=name,
                                actor=actor)
        return row

    async def _roll_out(self, name: str, number: int, actor: str | None) -> None:
        async with self._lock(name):
            version = self.registry.get_version(name, number)
            assert version is not None
            plan = ReleasePlan(**version.metadata.get("release", {}))
            try:
                endpoint = await self._endpoint(self.get_row(name))
                proc = await self._start(name, number, version.bento_tag)
                await self._check_parity(name, number, proc, plan, actor)
                if proc.batching:
                    await self._check_batching(name, number, proc, actor)
            except NbserveError as exc:
                self._fail(name, number, exc, actor)
                return
            except Exception as exc:  # noqa: BLE001 - anything else is still a failed deploy
                log.exception("roll-out of %s v%s failed", name, number)
                self._fail(name, number, DeployFailed(f"{type(exc).__name__}: {exc}"), actor)
                return
            row = self.get_row(name)
            live = self.supervisor.processes.get((name, row.live_version)) if row.live_version else None
            if plan.gradual and row.state == "serving" and live is not None and live.ready:
                if row.rollout:
                    await self._abort_locked(name, f"superseded by v{number}", actor=actor)
                self._begin_rollout(name, endpoint, proc, plan, actor)
                return
            if plan.gradual:
                self.registry.add_event(
                    "rollout_skipped", f"v{number} goes live directly: no version serves to compare it with",
                    deployment=name, version=number, actor=actor,
                )
            if row.rollout:
                await self._abort_locked(name, f"superseded by v{number}", actor=actor)
            previous = self._make_live(name, endpoint, proc)
            self.registry.add_event(
                "deployed",
                f"v{number} is live" + (f" (was v{previous})" if previous else ""),
                deployment=name, version=number, actor=actor,
                data={"previous": previous, "ready_seconds": proc.ready_seconds},
            )
            await self._reap(name)

    async def _check_parity(self, name: str, number: int, proc: ServingProcess, plan: ReleasePlan,
                            actor: str | None) -> None:
        """Replay the reference sample through the new server; refuse it if its answers are
        not the notebook's. Raises ``DeployFailed`` (the server is stopped by the caller's
        failure path) with the differing rows in ``details``."""
        if plan.skip_parity:
            self.registry.add_event("parity_skipped", f"v{number}: parity check skipped on request",
                                    deployment=name, version=number, actor=actor)
            return
        _, bento_path = self.reference_path(name, number)
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
        report = await asyncio.to_thread(compare_predictions, expected, got, reference)
        if report["status"] == "failed":
            await self.supervisor.stop(proc, grace=1.0)
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

    async def _check_batching(self, name: str, number: int, proc: ServingProcess, actor: str | None) -> None:
        """Time one row and one full batch through the new server, before any traffic, and
        warn when the latency budget cannot hold a full batch: under load those requests
        would be answered 503. Never fails the deploy: a check that cannot run says so."""
        try:
            await self._time_batching(name, number, proc, actor)
        except Exception as exc:  # noqa: BLE001 - a warning, never a failed deploy
            log.exception("batching check of %s v%s failed", name, number)
            self.registry.add_event("batching_warning", f"v{number}: the batching check could not run: "
                                    f"{type(exc).__name__}: {exc}", deployment=name, version=number, actor=actor)

    async def _time_batching(self, name: str, number: int, proc: ServingProcess, actor: str | None) -> None:
        batching = proc.batching or {}
        budget, size = float(batching["max_latency_ms"]), int(batching["max_batch_size"])
        _, bento_path = self.reference_path(name, number)
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

    # -- canary and shadow ---------------------------------------------------------------

    def _begin_rollout(self, name: str, endpoint: StableEndpoint, proc: ServingProcess, plan: ReleasePlan,
                       actor: str | None) -> None:
        upstream = Upstream("127.0.0.1", proc.port, str(proc.version))
        mode = "shadow" if plan.shadow else "canary"
        if mode == "canary":
            endpoint.set_canary(upstream, plan.canary or 0.0, sticky_header=plan.sticky_header)
        else:
            stats = self._shadows[name] = ShadowStats(proc.version)
            endpoint.set_shadow(upstream, stats.record)
        self.registry.set_version_status(name, proc.version, "warm")  # running, not (yet) live
        rollout = {"mode": mode, "version": proc.version, "percent": plan.canary,
                   "sticky_header": plan.sticky_header, "auto_promote": plan.auto_promote,
                   "started_at": time.time(), "started_by": actor}
        self.registry.update_deployment(name, rollout=rollout)
        live = self.get_row(name).live_version
        what = f"{plan.canary:g}% of requests" if mode == "canary" else "a copy of live traffic"
        self.registry.add_event(
            f"{mode}_started", f"v{proc.version} gets {what}; v{live} stays live"
            + (" (promoted automatically when the gates pass)" if plan.auto_promote else ""),
            deployment=name, version=proc.version, actor=actor, data=rollout,
        )

    def rollout(self, name: str) -> dict[str, Any] | None:
        """The canary or shadow under way, its gates and its figures so far; None if none."""
        row = self.get_row(name)
        if not row.rollout:
            return None
        gates = check_gates(self.config(name)["gates"])
        figures = self._rollout_figures(name, row, gates)
        verdict, reasons = evaluate_gates(gates, figures)
        return {**row.rollout, "gates": gates, "figures": figures, "verdict": verdict, "reasons": reasons}

    def _rollout_figures(self, name: str, row: DeploymentRow, gates: dict[str, Any]) -> dict[str, Any]:
        rollout = row.rollout
        started = float(rollout["started_at"])
        age = time.time() - started
        since = max(started, time.time() - parse_window(gates["window"]))
        if rollout["mode"] == "shadow":
            stats = self._shadows.get(name)
            shadow = stats.to_dict() if stats else {}
            endpoint = self.endpoints.get(name)
            shadow["dropped"] = endpoint.shadow_dropped if endpoint is not None else 0
            return {"requests": shadow.get("compared", 0), "p99_ms": shadow.get("p99_ms"),
                    "error_rate": shadow.get("error_rate"), "drift_share": None, "age_seconds": age,
                    "shadow": shadow}
        panes = self.monitor.panes(name, since, version=rollout["version"])
        out = summary(panes, window=time.time() - since)  # counts only the panes inside the window
        figures = {"requests": out["requests"], "p99_ms": out["p99_ms"], "p50_ms": out["p50_ms"],
                   "error_rate": out["error_rate"], "drift_share": None, "age_seconds": age}
        if gates.get("drift_share") is not None:
            try:
                report = self.drift(name, time.time() - since, version=rollout["version"])
                figures["drift_share"] = report.attrs.get("drift_share")
            except NbserveError:
                pass  # too few sampled rows yet: the gate waits
        if gates.get("quality"):
            labelled = self.monitor.labelled(name, since, version=rollout["version"])
            _, rows = quality_rows(labelled, bucket_seconds=1e12, task=self._task(name, rollout["version"]),
                                   metrics=list(gates["quality"]))
            figures["labelled"] = rows[0]["labelled"] if rows else 0
            figures["quality"] = {k: v for k, v in (rows[0] if rows else {}).items()
                                  if k not in ("time", "version", "labelled")}
        return figures

    async def promote(self, name: str, *, actor: str | None, reason: str = "promoted") -> VersionRow:
        async with self._lock(name):
            return await self._promote_locked(name, actor=actor, reason=reason)

    async def _promote_locked(self, name: str, *, actor: str | None, reason: str,
                              figures: dict[str, Any] | None = None) -> VersionRow:
        row = self.get_row(name)
        if not row.rollout:
            raise Conflict(f"{name} has no canary or shadow to promote",
                           hint="deploy with canary=N or shadow=True first")
        number = row.rollout["version"]
        proc = self.supervisor.processes.get((name, number))
        if proc is None or not proc.alive():
            await self._abort_locked(name, "its server is not running", actor=actor)
            raise DeployFailed(f"v{number} cannot be promoted: its server is not running",
                               hint=f"see `nbserve logs {name} --version {number}`")
        if figures is None:  # the gate watcher passes the figures it judged by
            gates = check_gates(self.config(name)["gates"])
            figures = await asyncio.to_thread(self._rollout_figures, name, row, gates)
        endpoint = await self._endpoint(row)
        endpoint.set_canary(None)
        endpoint.set_shadow(None)
        self._shadows.pop(name, None)
        previous = self._make_live(name, endpoint, proc)
        self.registry.update_deployment(name, rollout={})
        self.registry.add_event(
            "promoted", f"v{number} promoted ({reason}); was v{previous}",
            deployment=name, version=number, actor=actor,
            data={"previous": previous, "reason": reason, "figures": figures, "mode": row.rollout["mode"]},
        )
        await self._reap(name)
        found = self.registry.get_version(name, number)
        assert found is not None
        return found

    async def abort(self, name: str, *, actor: str | None, reason: str = "aborted") -> None:
        async with self._lock(name):
            if not self.get_row(name).rollout:
                raise Conflict(f"{name} has no canary or shadow to abort")
            await self._abort_locked(name, reason, actor=actor)

    async def _abort_locked(self, name: str, reason: str, *, actor: str | None, kind: str = "aborted",
                            figures: dict[str, Any] | None = None) -> None:
        """Take the new version out of the traffic path at once, then drain and stop it."""
        row = self.get_row(name)
        rollout = row.rollout
        endpoint = self.endpoints.get(name)
        if endpoint is not None:
            endpoint.set_canary(None)
            endpoint.set_shadow(None)
        self._shadows.pop(name, None)
        self.registry.update_deployment(name, rollout={})
        number = rollout["version"]
        self.registry.set_version_status(name, number, "stopped", error=f"{kind}: {reason}")
        self.registry.add_event(
            kind, f"v{number} {rollout['mode']} ended: {reason}; v{row.live_version} keeps serving",
            deployment=name, version=number, actor=actor,
            data={"reason": reason, "figures": figures or {}, "mode": rollout["mode"]},
        )
        await self._retire(name, number, "stopped")

    async def revert(self, name: str, number: int, previous: int | None, reason: str) -> str:
        """Take a version back out of traffic (a scheduled run that deployed it failed):
        end its canary or shadow, or roll back to ``previous`` if it went live."""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # let its roll-out (parity, health) finish first
            if self.closing:
                return "not needed: the agent is stopping every server"
            version = self.registry.get_version(name, number)
            if version is None or version.status != "starting":
                break
            await asyncio.sleep(0.2)
        row = self.get_row(name)
        if row.rollout.get("version") == number:
            await self.abort(name, actor="nbserve-scheduler", reason=reason)
            return f"its {row.rollout['mode']} was ended"
        if row.live_version == number and previous is not None and previous != number:
            await self.rollback(name, previous, actor="nbserve-scheduler")
            return f"rolled back to v{previous}"
        if row.live_version == number:
            await self.stop(name, actor="nbserve-scheduler")
            return "stopped (no earlier version had served)"
        return "it was not serving"

    async def set_canary(self, name: str, percent: float, *, actor: str | None) -> None:
        async with self._lock(name):
            row = self.get_row(name)
            if row.rollout.get("mode") != "canary":
                raise Conflict(f"{name} has no canary under way", hint="deploy with canary=N first")
            ReleasePlan(canary=percent)  # validates
            number = row.rollout["version"]
            proc = self.supervisor.processes.get((name, number))
            endpoint = await self._endpoint(row)
            if proc is not None:
                endpoint.set_canary(Upstream("127.0.0.1", proc.port, str(number)), float(percent),
                                    sticky_header=row.rollout.get("sticky_header"))
            self.registry.update_deployment(name, rollout={**row.rollout, "percent": float(percent)})
            self.registry.add_event("canary_changed", f"v{number} now gets {float(percent):g}% of requests",
                                    deployment=name, version=number, actor=actor,
                                    data={"before": row.rollout.get("percent"), "after": float(percent)})

    async def _watch_rollouts(self) -> None:
        """Judge every canary and shadow against its gates; roll back or promote on its own."""
        while not self.closing:
            await asyncio.sleep(GATE_CHECK_SECONDS)
            try:
                await self._scale_down()
            except Exception:  # noqa: BLE001 - must not stop the gates
                log.exception("scale-to-zero check failed")
            try:
                self._report_overloads()
            except Exception:  # noqa: BLE001
                log.exception("batching overload check failed")
            for row in self.registry.list_deployments():
                if not row.rollout or row.state != "serving":
                    continue
                try:
                    await self._judge(row.name)
                except Exception:  # noqa: BLE001 - one deployment's failure must not stop the others
                    log.exception("gate check of %s failed", row.name)

    async def _judge(self, name: str) -> None:
        async with self._lock(name):
            row = self.get_row(name)
            if not row.rollout:
                return
            gates = check_gates(self.config(name)["gates"])
            figures = await asyncio.to_thread(self._rollout_figures, name, row, gates)
            verdict, reasons = evaluate_gates(gates, figures)
            if verdict == "breach":
                await self._abort_locked(name, "; ".join(reasons), actor="nbserve-gates", kind="gate_breached",
                                         figures=figures)
            elif verdict == "pass" and row.rollout.get("auto_promote"):
                await self._promote_locked(name, actor="nbserve-gates",
                                           reason=f"gates passed for {gates['window']}", figures=figures)

    def _fail(self, name: str, number: int, exc: NbserveError, actor: str | None) -> None:
        self.registry.set_version_status(name, number, "failed", error=str(exc))
        live = self.get_row(name).live_version
        self.registry.add_event(
            "deploy_failed",
            f"v{number} did not go live: {exc.message}"
            + (f"; v{live} keeps serving" if live else ""),
            deployment=name, version=number, actor=actor, data=exc.details,
        )

    def _switch(self, endpoint: StableEndpoint, proc: ServingProcess) -> None:
        endpoint.set_upstream(Upstream("127.0.0.1", proc.port, str(proc.version)))  # held requests go too
        if endpoint.name in self.cold:  # a deploy, rollback or start while cold: it is warm now
            self.cold.discard(endpoint.name)
            endpoint.set_waker(None)

    def _make_live(self, name: str, endpoint: StableEndpoint, proc: ServingProcess) -> int | None:
        """Point the stable URL at a ready server and record it; return the previous live
        version, which stays warm if its server is still running."""
        previous = self.get_row(name).live_version
        self._switch(endpoint, proc)
        self.registry.update_deployment(name, live_version=proc.version, state="serving")
        self.registry.set_version_status(name, proc.version, "live")
        if previous is not None and previous != proc.version:
            running = (name, previous) in self.supervisor.processes
            self.registry.set_version_status(name, previous, "warm" if running else "stopped")
        return previous

    async def _endpoint(self, row: DeploymentRow) -> StableEndpoint:
        endpoint = self.endpoints.get(row.name)
        if endpoint is None:
            endpoint = StableEndpoint(row.name, retry_wait=RETRY_WAIT)
            config = self.config(row.name)
            self._apply_capture(endpoint, config)
            self._apply_access(endpoint, config)
            endpoint.set_router(self._router_for(row.name))
            try:
                await endpoint.start(self.stable_host, row.stable_port or 0, ssl=self.tls)
            except OSError as exc:
                raise Conflict(
                    f"cannot listen on the stable port {row.stable_port} of {row.name}: {exc.strerror}",
                    hint="another program holds the port; stop it, then run `nbserve agent stop` "
                    "and deploy again",
                ) from None
            self.endpoints[row.name] = endpoint
        return endpoint

    async def _reap(self, name: str) -> None:
        """Keep the live version and the ``keep_warm`` most recent others; stop the rest."""
        row = self.get_row(name)
        protected = {row.live_version, row.rollout.get("version")}
        others = sorted(
            (v for (d, v) in self.supervisor.processes if d == name and v not in protected),
            reverse=True,
        )
        for number in others[row.keep_warm:]:
            await self._retire(name, number, "stopped")

    async def _retire(self, name: str, number: int, status: str) -> None:
        proc = self.supervisor.processes.get((name, number))
        if proc is None:
            return
        # Marked first: from now on it is no instant-rollback target. A rollback to it
        # waits for the deployment lock, which is held until it has stopped.
        self.registry.set_version_status(name, number, status)
        endpoint = self.endpoints.get(name)
        upstream = Upstream("127.0.0.1", proc.port, str(number))
        if endpoint is not None:
            drained = await endpoint.drain(upstream, timeout=30.0)  # let its last requests finish
            if not drained:
                self.registry.add_event(
                    "drain_timeout",
                    f"v{number} still had {endpoint.inflight(upstream)} requests after 30 s; stopping it anyway",
                    deployment=name, version=number,
                )
            endpoint.close_idle(upstream)
        await self.supervisor.stop(proc)

    # -- rollback / stop / start ----------------------------------------------------

    async def rollback(self, name: str, to: int | None, *, actor: str | None) -> VersionRow:
        async with self._lock(name):
            if self.get_row(name).rollout:
                await self._abort_locked(name, "rollback requested", actor=actor)
            row = self.get_row(name)
            target = self._rollback_target(name, row, to)
            endpoint = await self._endpoint(row)
            proc = self.supervisor.processes.get((name, target.number))
            cold = proc is None or not proc.alive()
            if cold:
                self.registry.add_event(
                    "restarting", f"v{target.number} is not running; starting it from its Bento",
                    deployment=name, version=target.number, actor=actor,
                )
                proc = await self._start(name, target.number, target.bento_tag)
            assert proc is not None
            previous = self._make_live(name, endpoint, proc)
            self.registry.add_event(
                "rollback",
                f"rolled back from v{previous} to v{target.number}" + (" (cold start)" if cold else ""),
                deployment=name, version=target.number, actor=actor,
                data={"previous": previous, "cold": cold},
            )
            await self._reap(name)
            found = self.registry.get_version(name, target.number)
            assert found is not None
            return found

    def _rollback_target(self, name: str, row: DeploymentRow, to: int | None) -> VersionRow:
        versions = self.registry.list_versions(name)
        if to is not None:
            target = next((v for v in versions if v.number == to), None)
            if target is None:
                raise VersionNotFound(
                    f"{name} has no version {to}",
                    hint=f"versions: {', '.join(str(v.number) for v in versions)}",
                )
            if target.status in ("failed", "starting"):
                raise VersionNotFound(
                    f"v{to} of {name} never went live ({target.status}), so it cannot take traffic",
                    hint="roll back to a version that served before; see `nbserve history " + name + "`",
                )
            return target
        live = row.live_version or 0
        candidates = [v for v in versions if v.number < live and v.status not in ("failed", "starting")]
        if not candidates:
            raise VersionNotFound(
                f"{name} has no earlier version to roll back to (live: v{live})",
                hint="pass --to N to pick a version; see `nbserve history " + name + "`",
            )
        return candidates[-1]

    async def stop(self, name: str, *, actor: str | None) -> None:
        async with self._lock(name):
            if self.get_row(name).rollout:
                await self._abort_locked(name, "deployment stopped", actor=actor)
            row = self.get_row(name)
            endpoint = self.endpoints.get(name)
            self.cold.discard(name)
            if endpoint is not None:
                endpoint.set_upstream(None)
                endpoint.set_waker(None)  # stopped means 503, not "start on the next request"
            for (d, number) in list(self.supervisor.processes):
                if d == name:
                    await self._retire(name, number, "stopped")
            for version in self.registry.list_versions(name):
                if version.status in ("live", "warm"):
                    self.registry.set_version_status(name, version.number, "stopped")
            self.registry.update_deployment(name, state="stopped")
            self.registry.add_event(
                "stopped", "all serving processes stopped; the stable URL answers 503",
                deployment=name, version=row.live_version, actor=actor,
            )

    async def start(self, name: str, *, actor: str | None) -> None:
        async with self._lock(name):
            row = self.get_row(name)
            if row.live_version is None:
                raise VersionNotFound(f"{name} has no version that served", hint="deploy a model first")
            version = self.get_version(name, row.live_version)
            endpoint = await self._endpoint(row)
            proc = await self._start(name, version.number, version.bento_tag)
            self._make_live(name, endpoint, proc)
            self.registry.add_event(
                "started", f"v{version.number} is serving again",
                deployment=name, version=version.number, actor=actor,
            )

    # -- restore and crash handling -------------------------------------------------

    async def restore(self) -> None:
        """After the agent (re)starts: adopt or restart what was serving, fail what was
        starting, and stop every process no one adopted."""
        rows_by_root: dict[tuple[str, int], list[Any]] = {}
        for proc_row in self.registry.processes():
            rows_by_root.setdefault((proc_row.deployment, proc_row.version), []).append(proc_row)
        restarts: list[tuple[str, int]] = []
        for row in self.registry.list_deployments():
            self._fail_interrupted_starts(row.name)
            wanted = {v.number: v for v in self.registry.list_versions(row.name) if v.status in ("live", "warm")}
            if row.state == "serving" and row.live_version is not None:
                wanted.setdefault(row.live_version, self.get_version(row.name, row.live_version))
            else:
                wanted = {}
            for number, version in wanted.items():
                proc = await self._adopt(rows_by_root.pop((row.name, number), []), version.bento_tag)
                if proc is not None:
                    self.registry.add_event("adopted", f"v{number} was still serving; adopted it",
                                            deployment=row.name, version=number)
                    if number == row.live_version:
                        self._switch(await self._endpoint(row), proc)
                elif number == row.live_version and self.config(row.name)["idle_timeout"]:
                    self._make_cold(await self._endpoint(row), "the agent restarted")  # woken by traffic
                elif number == row.live_version:
                    restarts.append((row.name, number))
                else:
                    self.registry.set_version_status(row.name, number, "stopped")
            if row.state == "stopped" or row.live_version is None:
                await self._endpoint(row)  # the URL answers 503 with a reason, not "refused"
            if row.rollout:
                self._resume_rollout(row)
        for stray in rows_by_root.values():
            self.supervisor.kill_recorded(stray)
        swept = await asyncio.to_thread(self.supervisor.sweep_servers)  # before anything new starts
        if swept:
            log.info("stopped %d server(s) a previous agent left half-started or unowned", len(swept))
        for name, number in restarts:
            self._spawn(self._restart(name, number, reason="agent restarted"))

    async def _adopt(self, recorded: list[Any], bento_tag: str) -> ServingProcess | None:
        """Adopt one whole, ready server of a version's recorded trees (a scale that was under
        way leaves two); stop the others."""
        trees: dict[int, list[Any]] = {}
        for proc_row in recorded:
            trees.setdefault(proc_row.root_pid, []).append(proc_row)
        adopted = None
        for tree in trees.values():
            if adopted is None:
                adopted = await self.supervisor.adopt(tree, bento_tag)
                if adopted is not None:
                    continue
            self.supervisor.kill_recorded(tree)
        return adopted

    def _fail_interrupted_starts(self, name: str) -> None:
        """A version still ``starting`` when the agent starts never finished its start: the
        previous agent stopped during it. Its processes go with the sweep in ``restore``."""
        for version in self.registry.list_versions(name):
            if version.status != "starting":
                continue
            self.registry.set_version_status(name, version.number, "failed",
                                             error="the agent stopped during its start")
            self.registry.add_event(
                "start_interrupted",
                f"v{version.number} did not finish starting: the agent stopped during its start; deploy it again",
                deployment=name, version=version.number,
            )

    def _resume_rollout(self, row: DeploymentRow) -> None:
        """After an agent restart: keep the canary (or shadow) going if its server was adopted."""
        number = row.rollout["version"]
        proc = self.supervisor.processes.get((row.name, number))
        endpoint = self.endpoints.get(row.name)
        if proc is None or endpoint is None or row.state != "serving":
            self.registry.update_deployment(row.name, rollout={})
            self.registry.set_version_status(row.name, number, "stopped", error="aborted: agent restarted")
            self.registry.add_event("aborted", f"v{number} {row.rollout['mode']} ended: the agent restarted "
                                    "and its server was gone", deployment=row.name, version=number)
            return
        upstream = Upstream("127.0.0.1", proc.port, str(number))
        if row.rollout["mode"] == "canary":
            endpoint.set_canary(upstream, float(row.rollout.get("percent") or 0.0),
                                sticky_header=row.rollout.get("sticky_header"))
        else:
            stats = self._shadows[row.name] = ShadowStats(number)  # comparisons restart from zero
            endpoint.set_shadow(upstream, stats.record)
        self.registry.add_event(f"{row.rollout['mode']}_resumed", f"v{number} {row.rollout['mode']} resumed "
                                "after an agent restart", deployment=row.name, version=number)

    async def _restart(self, name: str, number: int, *, reason: str) -> None:
        async with self._lock(name):
            row = self.get_row(name)
            if row.state != "serving" or self.closing:
                return
            version = self.get_version(name, number)
            endpoint = await self._endpoint(row)
            try:
                proc = await self._start(name, number, version.bento_tag)
            except NbserveError as exc:
                self.registry.add_event("restart_failed", f"v{number} did not restart: {exc.message}",
                                        deployment=name, version=number, data=exc.details)
                raise
            if self.get_row(name).live_version == number:
                self._switch(endpoint, proc)
            self.registry.add_event("restarted", f"v{number} restarted ({reason})",
                                    deployment=name, version=number,
                                    data={"ready_seconds": proc.ready_seconds})

    def _on_process_exit(self, proc: ServingProcess) -> None:
        if self.closing or proc.stopping:
            return
        name, number = proc.deployment, proc.version
        code = proc.popen.returncode if proc.popen is not None else None
        self.registry.add_event(
            "process_exited", f"the server of v{number} exited (code {code}); restarting it",
            deployment=name, version=number, data={"returncode": code, "log": str(proc.log_path)},
        )
        row = self.registry.get_deployment(name)
        if row is None or row.state != "serving":
            return
        if row.live_version != number:
            self.registry.set_version_status(name, number, "stopped")
            return
        attempt = self._restarts.get((name, number), 0)
        self._restarts[(name, number)] = attempt + 1
        delay = RESTART_BACKOFF[min(attempt, len(RESTART_BACKOFF) - 1)]

        async def later() -> None:
            await asyncio.sleep(delay)
            try:
                await self._restart(name, number, reason=f"exited with code {code}")
                self._restarts.pop((name, number), None)
            except NbserveError:
                pass  # the next exit report (or none) decides; the event says why

        self._spawn(later())

    def _on_worker(self, proc: ServingProcess, what: str, data: dict[str, Any]) -> None:
        """A worker of a running server died, or the server has all its workers again."""
        if self.closing or proc.stopping:
            return
        name, number = proc.deployment, proc.version
        if what == "lost":
            others = proc.workers - 1
            self.registry.add_event(
                "worker_exited",
                f"a worker of v{number} died (PID {', '.join(map(str, data['pids']))}); its server starts another"
                + (f"; the other {others} answer meanwhile" if others > 0 else
                   f"; requests wait up to {RETRY_WAIT:g} s for it, then get 503 with Retry-After"),
                deployment=name, version=number, data=data)
        else:
            self.registry.add_event(
                "worker_restarted", f"v{number} has its {proc.workers} worker(s) again after {data['seconds']:g} s",
                deployment=name, version=number, data=data)

    async def close(self) -> None:
        """Stop every serving process and listener: nothing outlives the agent."""
        self.closing = True
        for task in list(self._tasks):
            task.cancel()
        await self.supervisor.stop_all()
        for endpoint in self.endpoints.values():
            await endpoint.close()
        await asyncio.to_thread(self.monitor.close)

    # -- resources: workers, caps, scale to zero ------------------------------------------

    async def _start(self, name: str, number: int, bento_tag: str, *, replace: bool = False) -> ServingProcess:
        """Start a version's server with the deployment's workers and caps."""
        config = self.config(name)
        batching = config["batching"]
        if batching and "batching" not in self.get_version(name, number).metadata.get("service_features", ()):
            batching = None
            self.registry.add_event(
                "batching_unavailable", f"v{number} was built by an nbserve without batching; it serves unbatched",
                deployment=name, version=number)
        proc = await self.supervisor.start(
            name, number, bento_tag, workers=int(config["workers"]),
            limits=Limits(config["memory"], config["cpus"]), batching=batching, replace=replace,
        )
        self._active_since[name] = asyncio.get_running_loop().time()
        return proc

    async def scale(self, name: str, changes: dict[str, Any], *, actor: str | None) -> None:
        """Change workers or caps and restart the live version's server with them: the new
        server starts beside the old, takes the traffic once ready, then the old one drains."""
        before = self.get_row(name).config
        old = self.config(name)
        new = self.configure(name, changes, actor=actor)
        if all(old[key] == new[key] for key in RESTARTING_SETTINGS):
            return  # only the idle timeout changed: the running server stays
        async with self._lock(name):
            row = self.get_row(name)
            if row.state != "serving" or name in self.cold or row.live_version is None:
                return  # applied at the next start
            try:
                proc = await self._replace_live(name, row.live_version, reason="scaled")
            except NbserveError:
                # the old server keeps serving; so must its settings, or the next start fails too
                self.registry.update_deployment(name, config=before)
                raise
            if proc.batching and proc.batching != old["batching"]:
                await self._check_batching(name, proc.version, proc, actor)  # as a deploy does

    async def _replace_live(self, name: str, number: int, *, reason: str) -> ServingProcess:
        version = self.get_version(name, number)
        endpoint = await self._endpoint(self.get_row(name))
        old = self.supervisor.processes.get((name, number))
        proc = await self._start(name, number, version.bento_tag, replace=True)
        self._switch(endpoint, proc)
        if old is not None and old is not proc:
            upstream = Upstream("127.0.0.1", old.port, str(number))
            await endpoint.drain(upstream)
            endpoint.close_idle(upstream)
            await self.supervisor.stop(old)
        self.registry.add_event(
            "scaled" if reason == "scaled" else "restarted",
            f"v{number} now runs {proc.workers} worker(s)" + _caps_text(proc.limits) + _batching_text(proc.batching)
            + f" ({reason})",
            deployment=name, version=number,
            data={"workers": proc.workers, "memory": proc.limits.memory, "cpus": proc.limits.cpus,
                  "batching": proc.batching,
                  "enforcement": self.supervisor.enforcement, "ready_seconds": proc.ready_seconds},
        )
        return proc

    def _report_overloads(self) -> None:
        """Turn the 503s a batching server answers (its latency budget ran out) into a
        ``batch_overloaded`` event saying what to change: at once, then at most once a minute."""
        now = time.monotonic()
        for name, endpoint in self.endpoints.items():
            counts, endpoint.refused = endpoint.refused, {}
            last, pending = self._overloads.get(name, (float("-inf"), {}))
            if not counts and not pending:
                continue
            batching = self.config(name)["batching"]
            if not batching:  # another server's 503s (the monitor counts them as errors), or batching is off now
                self._overloads.pop(name, None)
                continue
            for label, n in counts.items():
                pending[label] = pending.get(label, 0) + n
            if now - last < OVERLOAD_REPORT_SECONDS:  # reported later, with what follows
                self._overloads[name] = (last, pending)
                continue
            self._overloads[name] = (now, {})
            for label, refused in sorted(pending.items()):
                self.registry.add_event(
                    "batch_overloaded",
                    f"v{label} answered {refused} request(s) 503: its batches did not finish within "
                    f"max_latency_ms={batching['max_latency_ms']:g} under this load; raise it "
                    f"(dep.scale(max_latency_ms=...)), lower max_batch_size or add workers",
                    deployment=name, version=int(label), data={"refused": refused, **batching},
                )

    def _on_memory_limit(self, proc: ServingProcess, what: str) -> None:
        name, number = proc.deployment, proc.version
        self.registry.add_event("memory_exceeded", f"v{number}: {what}; restarting it",
                                deployment=name, version=number,
                                data={"memory": proc.limits.memory, "enforcement": self.supervisor.enforcement})
        proc.limits = Limits(None, proc.limits.cpus)  # report once; the replacement has its own cap

        async def restart() -> None:
            async with self._lock(name):
                row = self.get_row(name)
                if row.state != "serving" or self.closing:
                    return
                if row.live_version == number or row.rollout.get("version") == number:
                    try:
                        await self._replace_live(name, number, reason="over its memory cap")
                    except NbserveError as exc:
                        self.registry.add_event("restart_failed", f"v{number} did not restart: {exc.message}",
                                                deployment=name, version=number)
                else:
                    await self.supervisor.stop(proc)
                    self.registry.set_version_status(name, number, "stopped")

        self._spawn(restart())

    async def _scale_down(self) -> None:
        """Cool idle deployments (``idle_timeout``) and, over the host's memory budget, the
        least recently used ones (never the most recent)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        warm = []
        for row in self.registry.list_deployments():
            endpoint = self.endpoints.get(row.name)
            if (row.state != "serving" or row.rollout or row.name in self.cold or endpoint is None
                    or endpoint.upstream is None):
                continue
            last = max(endpoint.last_request, self._active_since.get(row.name, now))
            warm.append((last, row.name))
            timeout = self.config(row.name)["idle_timeout"]
            if timeout and now - last >= parse_window(timeout) and endpoint.inflight() == 0:
                await self._cool(row.name, f"no requests for {timeout}")
        if self.memory_budget is None:
            return
        warm = [(last, name) for last, name in sorted(warm) if name not in self.cold]
        used = sum(p.rss_bytes() for p in self.supervisor.processes.values())
        for _last, name in warm[:-1]:  # the most recently used stays warm
            if used <= self.memory_budget:
                break
            freed = sum(p.rss_bytes() for (d, _), p in self.supervisor.processes.items() if d == name)
            await self._cool(name, f"the host's memory budget ({self.memory_budget // 2**20} MiB) was exceeded")
            used -= freed

    async def _cool(self, name: str, reason: str) -> None:
        """Scale to zero: stop every server of the deployment; its stable URL holds the next
        request, starts the live version again and then answers it."""
        async with self._lock(name):
            row = self.get_row(name)
            endpoint = self.endpoints.get(row.name)
            if row.state != "serving" or row.rollout or name in self.cold or endpoint is None:
                return
            self._make_cold(endpoint, reason)
            procs = [p for (d, _), p in list(self.supervisor.processes.items()) if d == name]
            for proc in procs:
                upstream = Upstream("127.0.0.1", proc.port, str(proc.version))
                await endpoint.drain(upstream)
                endpoint.close_idle(upstream)
                await self.supervisor.stop(proc)
                if proc.version != row.live_version:
                    self.registry.set_version_status(name, proc.version, "stopped")
            self.registry.add_event("scaled_to_zero", f"every server stopped: {reason}; the next request "
                                    "starts v{0} again".format(row.live_version), deployment=name,
                                    version=row.live_version, data={"reason": reason})

    def _make_cold(self, endpoint: StableEndpoint, reason: str) -> None:
        name = endpoint.name
        self.cold.add(name)
        endpoint.set_upstream(None)
        endpoint.set_waker(lambda: self._spawn(self._wake(name)))

    async def _wake(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        endpoint = self.endpoints[name]
        async with self._lock(name):
            row = self.get_row(name)
            if name not in self.cold:
                return
            try:
                version = self.get_version(name, row.live_version)  # type: ignore[arg-type]
                proc = await self._start(name, version.number, version.bento_tag)
            except NbserveError as exc:
                endpoint.wake_failed(f"{name} could not be started: {exc.message}", exc.hint or "see its log")
                self.registry.add_event("wake_failed", f"v{row.live_version} did not start: {exc.message}",
                                        deployment=name, version=row.live_version)
                return
            held = endpoint.held()
            self._switch(endpoint, proc)  # held requests go now; no longer cold
            seconds = self.cold_starts[name] = loop.time() - started
            self.registry.add_event(
                "woken", f"v{version.number} started again in {seconds:.1f} s for {held} waiting connection(s)",
                deployment=name, version=version.number,
                data={"cold_start_seconds": seconds, "held": held, "ready_seconds": proc.ready_seconds},
            )

    def host_resources(self) -> list[dict[str, Any]]:
        """Per deployment, now: state, workers, caps, CPU, RSS, processes, idle seconds."""
        now = asyncio.get_running_loop().time() if self.endpoints else 0.0
        out = []
        for row in self.registry.list_deployments():
            config = self.config(row.name)
            procs = [p for (d, _), p in self.supervisor.processes.items() if d == row.name]
            endpoint = self.endpoints.get(row.name)
            state = ("stopped" if row.state == "stopped" else "cold" if row.name in self.cold
                     else "warm" if procs else "starting")
            current = [self.monitor.resources_now.get((row.name, p.version), {}) for p in procs]
            last = endpoint.last_request if endpoint is not None and endpoint.last_request else None
            out.append({
                "deployment": row.name, "state": state, "live_version": row.live_version,
                "servers": len(procs), "workers": int(config["workers"]),
                "cpu_percent": sum(c.get("cpu_percent", 0.0) for c in current),
                "rss_bytes": sum(p.rss_bytes() for p in procs),
                "processes": sum(len(p.known) for p in procs),
                "memory_cap": config["memory"], "cpus_cap": config["cpus"],
                "enforcement": self.supervisor.enforcement if (config["memory"] or config["cpus"]) else None,
                "idle_timeout": config["idle_timeout"],
                "batching": config["batching"],
                "idle_seconds": (now - last) if last is not None else None,
                "held": endpoint.held() if endpoint is not None else 0,
                "last_cold_start_seconds": self.cold_starts.get(row.name),
            })
        return out

    # -- per-version URLs and what a stable URL answers itself ---------------------------

    def _router_for(self, name: str) -> Router:
        """``/v/<number or alias>/...`` goes to that version's server; ``/metadata``,
        ``/schema`` (also under ``/v/...``) and ``POST /feedback`` are answered here."""

        def route(method: bytes, url: bytes, body: bytes) -> Any:
            path, _, query = url.partition(b"?")
            number: int | None = None
            if path.startswith(b"/v/"):
                key, _, rest = path[3:].partition(b"/")
                number = self._resolve_version(name, key.decode("latin-1"))
                if isinstance(number, LocalAnswer):
                    return number
                path = b"/" + rest
                if rest not in (b"metadata", b"schema"):
                    proc = self.supervisor.processes.get((name, number))
                    if proc is None or not proc.ready:
                        return _answer(503, {"error": f"v{number} of {name} is not running",
                                             "hint": "only the live and warm versions answer; roll back to it "
                                                     "or deploy it again to run it"})
                    return Upstream("127.0.0.1", proc.port, str(number)), path + (b"?" + query if query else b"")
            if path in (b"/metadata", b"/schema"):
                if method not in (b"GET", b"HEAD"):
                    return _answer(405, {"error": f"{path.decode()} answers GET", "hint": "use GET"})
                if number is None:
                    live = self.endpoints[name].upstream if name in self.endpoints else None
                    if live is None:
                        return _answer(503, {"error": f"{name} has no serving version", "hint": "deploy one"})
                    number = int(live.label)
                return self._version_info(name, number, path[1:].decode())
            if path == b"/feedback":
                if method != b"POST":
                    return _answer(405, {"error": "/feedback takes POST", "hint": "POST {ids, y_true}"})
                return self._feedback_answer(name, body)
            return None  # anything else: the live version, as usual

        return route

    def _resolve_version(self, name: str, key: str) -> Any:
        if key.isdigit():  # 18 digits fit SQLite's INTEGER; a longer number names no version
            number = int(key) if len(key) <= 18 else None
        else:
            number = self.get_row(name).aliases.get(key)
        if number is None or self.registry.get_version(name, int(number)) is None:
            return _answer(404, {"error": f"{name} has no version or alias {key!r}",
                                 "hint": "use /v/<number>/... or an alias set with dep.alias(name, version)"})
        return int(number)

    def _version_info(self, name: str, number: int, kind: str) -> Any:
        """The cached answer (versions are immutable), or a coroutine that builds it off the
        event loop the first time (it reads the Bento's reference sample)."""
        cached = self._info.get((name, number, kind))
        if cached is not None:
            return cached

        async def build() -> LocalAnswer:
            try:
                payload = await asyncio.to_thread(self.metadata if kind == "metadata" else self.schema, name, number)
            except NbserveError as exc:
                return _answer(exc.status, {"error": exc.message, "hint": exc.hint or ""})
            answer = self._info[(name, number, kind)] = _answer(200, payload)
            return answer

        return build()

    def metadata(self, name: str, number: int) -> dict[str, Any]:
        """What a version is: model, packages, provenance, who and when (immutable)."""
        v = self.get_version(name, number)
        meta = v.metadata
        prov = meta.get("provenance") or {}
        return {
            "deployment": name, "version": number, "bento": v.bento_tag, "created_at": v.created_at,
            "created_by": v.created_by, "model": meta.get("model"), "description": meta.get("description"),
            "card": meta.get("card") or {}, "packages": prov.get("packages"),
            "python": prov.get("python"), "provenance": prov, "release": meta.get("release"),
        }

    def schema(self, name: str, number: int) -> dict[str, Any]:
        """A version's input schema and an example row from its reference sample."""
        v = self.get_version(name, number)
        import json as _json

        example: Any = None
        schema = dict(v.metadata.get("schema", {}))
        schema.pop("vocabulary", None)  # the text kind's drift reference: large, not a schema
        try:
            _, bento_path = self.reference_path(name, number)
            frame = read_reference(bento_path)
            columns = [c["name"] for c in schema.get("columns", [])]
            if len(frame) and INPUT_COLUMN in frame.columns:
                example = _json.loads(frame[INPUT_COLUMN].iloc[0])
            elif len(frame) and columns:
                example = _json.loads(frame[columns].head(1).to_json(orient="records", date_format="iso"))[0]
        except (NbserveError, OSError, KeyError, ValueError):
            example = None
        return {"deployment": name, "version": number, "kind": schema.get("kind", "frame"), "schema": schema,
                "example": example, "request": {"data": [example]} if example is not None else None}

    def _feedback_answer(self, name: str, body: bytes) -> Any:
        async def run() -> LocalAnswer:
            import json as _json

            try:
                payload = _json.loads(body or b"{}")
                ids, y_true = payload["ids"], payload["y_true"]
            except RecursionError:  # like the REST API: a client's mistake, not a 500
                return _answer(400, {"error": "the body is JSON nested too deeply",
                                     "hint": "send {\"ids\": [...], \"y_true\": [...]} with flat lists"})
            except (ValueError, KeyError, TypeError):
                return _answer(400, {"error": "the body must be JSON {\"ids\": [...], \"y_true\": [...]}",
                                     "hint": "ids are the x-request-id of each prediction (\"<id>:<row>\")"})
            try:
                report = await asyncio.to_thread(self.feedback, name, ids, y_true)
            except NbserveError as exc:
                return _answer(exc.status, {"error": exc.message, "hint": exc.hint or ""})
            return _answer(200, report)

        return run()

    def feedback(self, name: str, ids: list[Any], y_true: list[Any]) -> dict[str, Any]:
        """Attach real outcomes to served predictions; see ``Monitor.add_labels``."""
        self.get_row(name)
        if not isinstance(ids, list) or not isinstance(y_true, list) or len(ids) != len(y_true):
            raise InvalidArgument("ids and y_true must be lists of the same length",
                                  hint="one outcome per prediction id")
        if len(ids) > 1_000_000:
            raise InvalidArgument("at most 1,000,000 labels per call", hint="send them in batches")
        items = [(rid, row, y) for (rid, row), y in zip(parse_ids(ids), y_true, strict=True)]
        report = self.monitor.add_labels(name, items)
        self._quality_flags.pop(name, None)
        return report

    def quality(self, name: str, window: str | float = "1d", *, bucket: str | float = "1h",
                metrics: list[str] | None = None, version: int | None = None) -> dict[str, Any]:
        """Metrics per time bucket and version from labelled predictions."""
        row = self.get_row(name)
        since = time.time() - parse_window(window)
        bucket_seconds = parse_window(bucket)
        labelled = self.monitor.labelled(name, since, version=version)  # streamed: read once
        number = version or row.live_version
        declared = self._task(name, number) if number is not None else None
        task, rows = quality_rows(labelled, bucket_seconds=bucket_seconds, task=declared,
                                  metrics=check_metrics(metrics))
        return {"task": task, "rows": rows, "labelled": sum(r["labelled"] for r in rows)}

    def _task(self, name: str, number: int) -> str | None:
        try:
            return (self.get_version(name, number).metadata.get("model") or {}).get("task")
        except NbserveError:
            return None

    def set_alias(self, name: str, alias: str, number: int | None, *, actor: str | None) -> dict[str, int]:
        """Name a version (``None``: remove the alias); ``/v/<alias>/...`` then calls it."""
        row = self.get_row(name)
        if not alias or alias.isdigit() or len(alias) > 63 or not alias.replace("-", "").replace("_", "").isalnum():
            raise InvalidArgument(f"invalid alias {alias!r}",
                                  hint="letters, digits, '-' and '_' (not only digits), up to 63 characters")
        aliases = dict(row.aliases)
        before = aliases.get(alias)
        if number is None:
            if aliases.pop(alias, None) is None:
                raise NotFound(f"{name} has no alias {alias!r}")
        else:
            self.get_version(name, number)
            aliases[alias] = number
        self.registry.update_deployment(name, aliases=aliases)
        self.registry.add_event(
            "alias_set" if number is not None else "alias_removed",
            f"alias {alias} -> v{number}" if number is not None else f"alias {alias} removed (was v{before})",
            deployment=name, version=number, actor=actor, data={"alias": alias, "before": before, "after": number},
        )
        return aliases

    # -- configuration -------------------------------------------------------------------

    def config(self, name: str) -> dict[str, Any]:
        return {**DEFAULT_CONFIG, **self.get_row(name).config}

    def configure(self, name: str, changes: dict[str, Any], *, actor: str | None) -> dict[str, Any]:
        """Change a deployment's monitoring settings; validated before anything is stored."""
        unknown = set(changes) - set(DEFAULT_CONFIG)
        if unknown:
            raise InvalidArgument(
                f"unknown setting(s): {', '.join(sorted(unknown))}",
                hint=f"settings: {', '.join(DEFAULT_CONFIG)}",
            )
        current = self.config(name)
        if isinstance(changes.get("batching"), dict) and current["batching"]:
            changes = {**changes, "batching": {**current["batching"], **changes["batching"]}}  # change one knob
        merged = {**current, **changes}
        _validate_config(merged)
        before = self.get_row(name).config
        stored = {k: v for k, v in merged.items() if v != DEFAULT_CONFIG[k]}
        self.registry.update_deployment(name, config=stored)
        endpoint = self.endpoints.get(name)
        if endpoint is not None:
            self._apply_capture(endpoint, merged)
            self._apply_access(endpoint, merged)
        self._drift_flags.pop(name, None)
        self.registry.add_event(
            "configured", "settings changed: " + ", ".join(f"{k}={changes[k]!r}" for k in sorted(changes)),
            deployment=name, actor=actor, data={"before": before, "after": stored},
        )
        return merged

    def _apply_access(self, endpoint: StableEndpoint, config: dict[str, Any]) -> None:
        mode = config["predict_auth"] or self.predict_auth
        if mode == "token" and self.tokens is not None:
            check, name = self.tokens.check_header, endpoint.name
            endpoint.set_auth(lambda header: check(header, name))
        else:
            endpoint.set_auth(None)

    def _apply_capture(self, endpoint: StableEndpoint, config: dict[str, Any]) -> None:
        if config["capture"]:
            endpoint.set_monitoring(
                self.monitor.observer_for(endpoint.name),
                self.monitor.sampler_for(
                    endpoint.name, config["sample_rate"], config["sample_budget_per_minute"]
                ),
            )
        else:
            endpoint.set_monitoring(None, None)

    # -- monitoring reads ---------------------------------------------------------------

    def _since(self, name: str, window: str | float | None, since_version: int | None) -> float:
        if since_version is not None:
            from datetime import datetime

            created = self.get_version(name, since_version).created_at
            return datetime.fromisoformat(created).timestamp()
        return time.time() - parse_window(window or "1h")

    def latency(self, name: str, window: str | float | None = "1h", *, by_version: bool = False,
                since_version: int | None = None, version: int | None = None) -> list[dict[str, Any]]:
        self.get_row(name)
        panes = self.monitor.panes(name, self._since(name, window, since_version), version=version)
        return latency_rows(panes, by_version=by_version)

    def summary(self, name: str, window: str | float = "5m") -> dict[str, Any]:
        self.get_row(name)
        seconds = parse_window(window)
        panes = self.monitor.panes(name, time.time() - max(seconds, 30 * 60))
        out = summary(panes, window=seconds)
        out["drift"] = self._drift_flag(name)
        out["quality"] = self._quality_flag(name)
        return out

    def _quality_flag(self, name: str) -> dict[str, Any]:
        """The live version's headline metric in its newest hour with labels, and the hour
        before (the trend); cached like the drift flag, since panels poll summaries."""
        cached = self._quality_flags.get(name)
        if cached is not None and time.monotonic() - cached[0] < DRIFT_SUMMARY_SECONDS:
            return cached[1]
        flag: dict[str, Any] = {"metric": None, "value": None, "previous": None, "labelled": 0, "task": None}
        live = self.get_row(name).live_version
        if live is not None:
            found = self.quality(name, "1d", bucket="1h", version=live)
            task = found["task"]
            metric = "accuracy" if task == "classification" else "rmse" if task == "regression" else None
            rows = [r for r in found["rows"] if metric and r.get(metric) is not None]
            if rows:
                flag = {"metric": metric, "value": rows[-1][metric],
                        "previous": rows[-2][metric] if len(rows) > 1 else None,
                        "labelled": rows[-1]["labelled"], "task": task}
        self._quality_flags[name] = (time.monotonic(), flag)
        return flag

    def _drift_flag(self, name: str) -> dict[str, Any]:
        cached = self._drift_flags.get(name)
        if cached is not None and time.monotonic() - cached[0] < DRIFT_SUMMARY_SECONDS:
            return cached[1]
        flag: dict[str, Any] = {"drifted": None, "share": None, "features": 0, "rows": 0}
        try:
            report = self.drift(name, self.config(name)["drift_window"])
            flag = {"drifted": report.attrs.get("dataset_drift"), "share": report.attrs.get("drift_share"),
                    "features": report.attrs.get("features", 0), "rows": report.attrs.get("n_current", 0)}
        except NbserveError:
            pass  # too little traffic yet, or no live version: the flag stays unknown
        self._drift_flags[name] = (time.monotonic(), flag)
        return flag

    def traffic(self, name: str, window: str | float = "1h", *, version: int | None = None,
                limit: int = 10_000) -> Any:
        self.get_row(name)
        samples = self.monitor.samples(name, time.time() - parse_window(window), version=version, limit=limit)
        schema = self._schema(name, version)
        return traffic_frame(samples, schema)

    def _schema(self, name: str, version: int | None) -> dict[str, Any]:
        number = version or self.get_row(name).live_version
        if number is None:
            versions = self.registry.list_versions(name)
            number = versions[-1].number if versions else None
        return self.get_version(name, number).metadata.get("schema", {}) if number else {}

    def reference_path(self, name: str, version: int | None = None) -> tuple[int, Path]:
        """The version (default: live) and the path of its Bento in the agent's store."""
        import bentoml

        row = self.get_row(name)
        number = version or row.live_version
        if number is None:
            raise VersionNotFound(f"{name} has no live version", hint="pass version=N")
        v = self.get_version(name, number)
        return number, Path(bentoml.get(v.bento_tag).path)

    def drift(self, name: str, window: str | float = "1h", *, version: int | None = None) -> Any:
        """Drift of the sampled traffic of one version (default: live) against its reference."""
        from .._drift import DriftConfig, drift_report

        number, bento_path = self.reference_path(name, version)
        current = self.traffic(name, window, version=number)
        current = current[current["status"] < 400] if "status" in current else current
        if len(current) < MIN_DRIFT_ROWS:
            raise InvalidArgument(
                f"only {len(current)} sampled rows of v{number} of {name} in the last {window}; "
                f"drift needs at least {MIN_DRIFT_ROWS}",
                hint="send more traffic, widen the window, or pass a DataFrame: dep.drift(df)",
                rows=len(current),
            )
        profile = self.profiles.get((name, number), bento_path)
        config = DriftConfig(**self.config(name)["drift"])
        return drift_report(profile, current[feature_columns(current)], config=config)


def _import_bento(archive: Path, home: Home) -> tuple[str, dict[str, Any]]:
    """Import into the agent's store; return the tag and the bundle's metadata. A full disk
    is ``InsufficientStorage`` with nothing half-written (see ``import_into_store``)."""
    import json

    from .._service_template import BUNDLE_FILE
    from ._archive import import_into_store

    if not archive.is_file():
        raise InvalidArgument(f"no Bento archive at {archive}")
    # A staged upload is deployed once: if it does not import, nothing else can use it.
    staged = archive.parent == home.staging / "uploads"
    bento = import_into_store(archive, home.bentoml_home, discard=staged)
    bundle_path = Path(bento.path) / "src" / BUNDLE_FILE
    if not bundle_path.is_file():
        if staged:
            archive.unlink(missing_ok=True)
        raise InvalidArgument(
            f"{bento.tag} is not an nbserve bundle (no {BUNDLE_FILE})",
            hint="deploy models with nbserve.deploy() or %deploy",
        )
    metadata = json.loads(bundle_path.read_text())
    return str(bento.tag), metadata



def _answer(status: int, payload: Any) -> LocalAnswer:
    import json

    return LocalAnswer(status, json.dumps(payload, default=str).encode())


def _caps_text(limits: Limits) -> str:
    caps = []
    if limits.memory is not None:
        caps.append(f"{limits.memory // 2**20} MiB")
    if limits.cpus is not None:
        caps.append(f"{limits.cpus:g} CPU")
    return f", capped at {' and '.join(caps)}" if caps else ""


def _batching_text(batching: dict[str, Any] | None) -> str:
    if not batching:
        return ""
    return f", batching up to {batching['max_batch_size']} rows within {batching['max_latency_ms']:g} ms"


def _validate_config(config: dict[str, Any]) -> None:
    workers = config["workers"]
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise InvalidArgument(f"workers must be a whole number from 1 to 64, got {workers!r}")
    config["memory"] = parse_memory(config["memory"])
    config["batching"] = parse_batching(config["batching"])
    config["cpus"] = parse_cpus(config["cpus"])
    if config["idle_timeout"] is not None:
        parse_window(config["idle_timeout"])
    if config["predict_auth"] not in (None, "token", "open"):
        raise InvalidArgument(f"predict_auth must be 'token', 'open' or null (the agent's default), "
                              f"got {config['predict_auth']!r}")
    if not isinstance(config["capture"], bool):
        raise InvalidArgument("capture must be true or false")
    rate = config["sample_rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise InvalidArgument(f"sample_rate must be a number from 0 to 1, got {rate!r}")
    budget = config["sample_budget_per_minute"]
    if isinstance(budget, bool) or not isinstance(budget, int) or not 0 <= budget <= 1_000_000:
        raise InvalidArgument(f"sample_budget_per_minute must be a whole number >= 0, got {budget!r}")
    parse_window(config["drift_window"])
    if not isinstance(config["gates"], dict):
        raise InvalidArgument("gates must be a mapping: p99_ms, error_rate, drift_share, min_requests, window")
    check_gates(config["gates"])
    if not isinstance(config["drift"], dict):
        raise InvalidArgument("drift must be a mapping of DriftConfig fields")
    if not config["drift"]:
        return  # the defaults: no need to import scipy (and pay ~57 MiB) to know they are valid
    from .._drift import DriftConfig

    try:
        DriftConfig(**config["drift"])
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"invalid drift settings: {exc}", hint="see help(nbserve.DriftConfig)") from None
