"""Monitoring in the data path: latency panes, sampled traffic, process resources.

The stable endpoint hands every finished request to :meth:`Monitor.observer_for`'s
callback, which only appends to a bounded deque (about a hundred nanoseconds on the
request path). A capture thread drains the deque: it records the latency in the
per-minute pane of (deployment, version), counts statuses and payload rows, and keeps
the requests the sampler picked (inputs and outputs) for drift and ``dep.traffic()``.

Panes live in memory for the current minute and are flushed to ``metrics.sqlite`` every
couple of seconds, so any window is a merge of stored panes. Retention bounds the file by
age (panes, samples, resources) and by count (samples per deployment).
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._histogram import LatencyHistogram
from .._protocols import protocol_of
from ._ground_truth import GroundTruth, migrate_labels
from ._proxy import RequestRecord
from ._storage import is_disk_full

if TYPE_CHECKING:
    from ._supervisor import ServingProcess

log = logging.getLogger("nbserve.agent")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS panes (
    deployment  TEXT NOT NULL,
    version     INTEGER NOT NULL,      -- 0: answered by the endpoint itself (no live version)
    minute      INTEGER NOT NULL,      -- unix time // 60
    requests    INTEGER NOT NULL,
    errors      INTEGER NOT NULL,      -- 5xx
    client_errors INTEGER NOT NULL,    -- 4xx
    rows        INTEGER NOT NULL,      -- payload rows of the requests that had a readable body
    latency_sum REAL NOT NULL,         -- seconds
    histogram   BLOB NOT NULL,
    PRIMARY KEY (deployment, version, minute)
);
CREATE INDEX IF NOT EXISTS panes_by_minute ON panes (minute);

CREATE TABLE IF NOT EXISTS samples (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment  TEXT NOT NULL,
    version     INTEGER NOT NULL,
    ts          REAL NOT NULL,
    path        TEXT NOT NULL,
    status      INTEGER NOT NULL,
    latency_ms  REAL NOT NULL,
    rows        INTEGER,
    request     TEXT,
    response    TEXT
);
CREATE INDEX IF NOT EXISTS samples_by_deployment ON samples (deployment, ts);

-- Real outcomes sent later (dep.feedback / POST <stable>/feedback), one per payload row of
-- a sampled request; joined with samples.request_id for quality. WITHOUT ROWID: the key is
-- the table, so the join reads one b-tree per label, not the key index and then the row.
CREATE TABLE IF NOT EXISTS labels (
    deployment  TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    row         INTEGER NOT NULL,
    y_true      TEXT NOT NULL,         -- JSON scalar
    ts          REAL NOT NULL,         -- when the label arrived
    PRIMARY KEY (deployment, request_id, row)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS resources (
    deployment  TEXT NOT NULL,
    version     INTEGER NOT NULL,
    ts          REAL NOT NULL,
    cpu_percent REAL NOT NULL,
    rss_bytes   INTEGER NOT NULL,
    processes   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_by_deployment ON resources (deployment, ts);
"""

_MIGRATIONS = (
    ("samples", "request_id", "ALTER TABLE samples ADD COLUMN request_id TEXT"),
)
# Finds the sampled request a label is for, and its payload rows, from the index alone.
_INDEXES = """
CREATE INDEX IF NOT EXISTS samples_by_request_rows ON samples (deployment, request_id, rows);
DROP INDEX IF EXISTS samples_by_request;
"""

_QUEUE_LIMIT = 200_000  # records waiting for the capture thread; beyond it they are counted, not kept
_ROWS_PARSE_LIMIT = 1 << 20  # bodies above this are not parsed just to count rows
_SAMPLE_TEXT_LIMIT = 256 * 1024  # a sampled request or response larger than this is not stored


@dataclass
class MonitorSettings:
    """Host-wide capture settings (``nbserve agent run`` flags / environment)."""

    retention_days: float = 14.0
    max_samples: int = 100_000  # per deployment
    max_megabytes: float = 1024.0  # the whole metrics file: the oldest samples go first past it
    flush_seconds: float = 2.0
    resource_seconds: float = 5.0
    resource_store_seconds: float = 15.0

    @classmethod
    def from_env(cls) -> "MonitorSettings":
        """``NBSERVE_METRICS_RETENTION_DAYS`` and ``NBSERVE_MAX_SAMPLES`` (agents started on demand)."""
        import os

        settings = cls()
        if os.environ.get("NBSERVE_METRICS_RETENTION_DAYS"):
            settings.retention_days = float(os.environ["NBSERVE_METRICS_RETENTION_DAYS"])
        if os.environ.get("NBSERVE_MAX_SAMPLES"):
            settings.max_samples = int(os.environ["NBSERVE_MAX_SAMPLES"])
        if os.environ.get("NBSERVE_METRICS_MAX_MB"):
            settings.max_megabytes = float(os.environ["NBSERVE_METRICS_MAX_MB"])
        return settings


@dataclass
class SamplingPolicy:
    """Per deployment: which requests keep their inputs and outputs."""

    rate: float = 1.0  # share of requests considered
    budget_per_minute: int = 600  # at most this many kept per minute
    minute: int = 0
    used: int = 0

    def __call__(self) -> bool:
        if self.rate <= 0.0 or (self.rate < 1.0 and random.random() >= self.rate):
            return False
        minute = int(time.time()) // 60
        if minute != self.minute:
            self.minute, self.used = minute, 0
        if self.used >= self.budget_per_minute:
            return False
        self.used += 1
        return True


@dataclass
class Pane:
    requests: int = 0
    errors: int = 0
    client_errors: int = 0
    rows: int = 0
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    dirty: bool = True

    def add(self, seconds: float, status: int, rows: int) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1
        elif status >= 400:
            self.client_errors += 1
        self.rows += rows
        self.histogram.record(seconds)
        self.dirty = True


@dataclass
class Totals:
    """Since the agent started, for Prometheus (counters reset with the process)."""

    by_status: dict[int, int] = field(default_factory=dict)
    by_protocol: dict[str, int] = field(default_factory=dict)  # bentoml, v2, mlflow, openai
    rows: int = 0
    unreadable: int = 0  # POST bodies that could not be read as JSON (row count unknown)
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)


def _payload_rows(body: bytes) -> tuple[int | None, Any]:
    """Rows in a ``{"data": [...]}`` body and the parsed body; ``(None, None)`` when the
    body cannot be read (not JSON, nested past the parser's depth, not UTF-8)."""
    if not body or len(body) > _ROWS_PARSE_LIMIT:
        return 0, None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # anyone allowed to predict can send either
        return None, None
    data = parsed.get("data") if isinstance(parsed, dict) else parsed
    if isinstance(data, list):
        return len(data), parsed
    if isinstance(data, dict):  # columnar: {"col": [values...]}
        first = next(iter(data.values()), None)
        return (len(first) if isinstance(first, list) else 1), parsed
    return 0, parsed


class Monitor(GroundTruth):
    def __init__(
        self,
        path: Path,
        *,
        settings: MonitorSettings | None = None,
        processes: Callable[[], list["ServingProcess"]] | None = None,
    ) -> None:
        self.settings = settings or MonitorSettings()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        for table, column, statement in _MIGRATIONS:  # files written by an older agent
            if column not in {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(statement)
        self._db.executescript(_INDEXES)
        migrate_labels(self._db, _SCHEMA)
        self._db_lock = threading.RLock()
        self._lock = threading.RLock()  # panes, totals, resources
        self._measure_lock = threading.Lock()
        self._cpu_primed: set[int] = set()  # PIDs with a previous CPU reading in psutil
        self._queue: deque[tuple[str, RequestRecord]] = deque()
        self.dropped = 0
        self._panes: dict[tuple[str, int, int], Pane] = {}
        self.totals: dict[tuple[str, int], Totals] = {}
        self.resources_now: dict[tuple[str, int], dict[str, float]] = {}
        self._policies: dict[str, SamplingPolicy] = {}
        self._processes = processes or (lambda: [])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nbserve-monitor", daemon=True)
        self._last_flush = self._last_resources = self._last_resource_store = 0.0
        self._last_retention = 0.0

    _disk_full = False  # set while writes fail for lack of space (logged once)

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> bool:
        """Many rows in one transaction: one WAL commit, not one per row (autocommit).
        False when the disk is full: nothing written, logged once, serving goes on."""
        with self._db_lock:
            try:
                self._db.execute("BEGIN")
                try:
                    self._db.executemany(sql, rows)
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # SQLite may have rolled back on its own
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                if not is_disk_full(exc):
                    raise
                if not self._disk_full:
                    log.error("metrics not written, the disk is full: panes wait in memory, samples are "
                              "dropped until space is freed")
                self._disk_full = True
                return False
        if self._disk_full:
            log.warning("metrics are written again")
            self._disk_full = False
        return True

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._drain()
        self.flush()
        with self._db_lock:
            self._db.close()

    # -- the data path -----------------------------------------------------------------

    def observer_for(self, name: str) -> Callable[[RequestRecord], None]:
        queue = self._queue
        append = queue.append

        def observe(record: RequestRecord) -> None:
            if len(queue) < _QUEUE_LIMIT:
                append((name, record))
            else:
                self.dropped += 1

        return observe

    def protocols(self, name: str) -> dict[str, int]:
        """Requests per wire format since the agent started, over every version of ``name``."""
        found: dict[str, int] = {}
        with self._lock:
            for (deployment, _), totals in self.totals.items():
                if deployment == name:
                    for protocol, n in totals.by_protocol.items():
                        found[protocol] = found.get(protocol, 0) + n
        return found

    def sampler_for(self, name: str, rate: float = 1.0, budget_per_minute: int = 600) -> SamplingPolicy:
        policy = self._policies.get(name)
        if policy is None:
            policy = self._policies[name] = SamplingPolicy(rate, budget_per_minute)
        else:
            policy.rate, policy.budget_per_minute = rate, budget_per_minute
        return policy

    # -- the capture thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self._drain()
                now = time.monotonic()
                if now - self._last_flush >= self.settings.flush_seconds:
                    self._last_flush = now
                    self.flush()
                if now - self._last_resources >= self.settings.resource_seconds:
                    self._last_resources = now
                    store = now - self._last_resource_store >= self.settings.resource_store_seconds
                    if store:
                        self._last_resource_store = now
                    self._sample_resources(store)
                if now - self._last_retention >= 600:
                    self._last_retention = now
                    self.apply_retention()
            except Exception:  # noqa: BLE001 - monitoring must never take the agent down
                log.exception("monitor cycle failed")

    def _drain(self) -> None:
        queue = self._queue
        if not queue:
            return
        now_wall, now_perf = time.time(), time.perf_counter_ns()
        samples = []
        with self._lock:
            while queue:
                name, rec = queue.popleft()
                try:
                    sample = self._count(name, rec, now_wall, now_perf)
                except Exception:  # noqa: BLE001 - one odd record never costs the others theirs
                    self.dropped += 1
                    log.warning("monitor: a request record of %s could not be counted", name, exc_info=True)
                    continue
                if sample is not None:
                    samples.append(sample)
        if samples:
            self._write(
                "INSERT INTO samples (deployment, version, ts, path, status, latency_ms, rows,"
                " request, response, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                samples,
            )

    def _count(self, name: str, rec: RequestRecord, now_wall: float, now_perf: int) -> tuple[Any, ...] | None:
        """Add one request to its pane and totals; its sample row if it is kept."""
        version = int(rec.label) if rec.label and rec.label.isdigit() else 0
        ts = now_wall - (now_perf - rec.started_ns) / 1e9
        if rec.method != "POST":
            rows, readable = 0, False
        elif rec.rows >= 0:  # the model server read the body and said how many rows it held
            rows, readable = rec.rows, True
        else:  # an older version, or an answer the server gave before reading (a 4xx)
            rows, parsed = _payload_rows(rec.body)
            readable = parsed is not None
        seconds = rec.elapsed_ns / 1e9
        totals = self.totals.get((name, version))
        if totals is None:
            totals = self.totals[(name, version)] = Totals()
        if rows is None:
            totals.unreadable += 1
            rows = 0
        self._pane(name, version, int(ts) // 60).add(seconds, rec.status, rows)
        totals.by_status[rec.status] = totals.by_status.get(rec.status, 0) + 1
        protocol = protocol_of(rec.path)
        totals.by_protocol[protocol] = totals.by_protocol.get(protocol, 0) + 1
        totals.rows += rows
        totals.histogram.record(seconds)
        if rec.response is not None and readable:
            return _sample_row(name, version, ts, rec, rows)
        return None

    def _pane(self, name: str, version: int, minute: int) -> Pane:
        key = (name, version, minute)
        pane = self._panes.get(key)
        if pane is None:
            pane = self._panes[key] = self._load_pane(key)  # an agent restart mid-minute
        return pane

    def _load_pane(self, key: tuple[str, int, int]) -> Pane:
        with self._db_lock:
            row = self._db.execute(
                "SELECT requests, errors, client_errors, rows, latency_sum, histogram FROM panes"
                " WHERE deployment = ? AND version = ? AND minute = ?",
                key,
            ).fetchone()
        if row is None:
            return Pane()
        return Pane(row[0], row[1], row[2], row[3], LatencyHistogram.from_bytes(row[5], total=row[4]))

    def flush(self) -> None:
        """Write changed panes; forget those of minutes that are over."""
        current = int(time.time()) // 60
        with self._lock:
            dirty = [(k, p) for k, p in self._panes.items() if p.dirty]
            rows = [
                (*key, p.requests, p.errors, p.client_errors, p.rows, p.histogram.total,
                 p.histogram.to_bytes())
                for key, p in dirty
            ]
            for _key, pane in dirty:
                pane.dirty = False
            for key in [k for k, p in self._panes.items() if k[2] < current - 1 and not p.dirty]:
                del self._panes[key]
        if rows and not self._write(
            "INSERT OR REPLACE INTO panes (deployment, version, minute, requests, errors,"
            " client_errors, rows, latency_sum, histogram) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        ):
            with self._lock:  # not written (a full disk): the next flush tries them again
                for key, pane in dirty:
                    self._panes.setdefault(key, pane).dirty = True

    # -- resources ---------------------------------------------------------------------

    def _sample_resources(self, store: bool) -> None:
        now = time.time()
        procs = self._processes()
        seen = self._measure(procs, now)
        with self._measure_lock:  # forget PIDs that left every tree
            self._cpu_primed &= {pid for proc in procs for pid in proc.known}
        with self._lock:
            self.resources_now = seen
        if store and seen:
            self._store_resources(seen)

    def _measure(self, procs: list["ServingProcess"], now: float) -> dict[tuple[str, int], dict[str, float]]:
        """CPU and RSS of each server's whole tree. A process measured for the first time has
        no previous reading to take CPU from, so its CPU is its average since it started."""
        seen: dict[tuple[str, int], dict[str, float]] = {}
        with self._measure_lock:  # psutil keeps the previous reading on the Process object
            for proc in procs:
                cpu = 0.0
                count = 0
                for p in list(proc.known.values()):
                    try:
                        with p.oneshot():
                            percent = p.cpu_percent(interval=None)  # since the previous call on p
                            if p.pid not in self._cpu_primed:
                                self._cpu_primed.add(p.pid)
                                times = p.cpu_times()
                                percent = 100 * (times.user + times.system) / max(now - p.create_time(), 1e-3)
                            cpu += percent
                        count += 1
                    except Exception:  # noqa: BLE001 - processes come and go
                        continue
                # its own figure: a tree's RSS, or (in a shared server) what its model added
                rss = float(proc.rss_bytes())
                seen[(proc.deployment, proc.version)] = {
                    "ts": now, "cpu_percent": cpu, "rss_bytes": rss, "processes": count,
                }
        return seen

    def _store_resources(self, seen: dict[tuple[str, int], dict[str, float]]) -> None:
        self._write(
            "INSERT INTO resources (deployment, version, ts, cpu_percent, rss_bytes, processes)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(d, v, r["ts"], r["cpu_percent"], int(r["rss_bytes"]), int(r["processes"]))
             for (d, v), r in seen.items()],
        )

    # -- retention ---------------------------------------------------------------------

    def apply_retention(self) -> dict[str, int]:
        """Drop what is older than the retention and samples beyond the per-deployment cap."""
        cutoff = time.time() - self.settings.retention_days * 86400
        removed = {}
        with self._db_lock:
            removed["panes"] = self._db.execute(
                "DELETE FROM panes WHERE minute < ?", (int(cutoff) // 60,)
            ).rowcount
            removed["resources"] = self._db.execute(
                "DELETE FROM resources WHERE ts < ?", (cutoff,)
            ).rowcount
            removed["samples"] = self._db.execute("DELETE FROM samples WHERE ts < ?", (cutoff,)).rowcount
            removed["labels"] = self._db.execute("DELETE FROM labels WHERE ts < ?", (cutoff,)).rowcount
            for (name,) in self._db.execute("SELECT DISTINCT deployment FROM samples").fetchall():
                removed["samples"] += self._db.execute(
                    "DELETE FROM samples WHERE deployment = ? AND id <= (SELECT id FROM samples"
                    " WHERE deployment = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (name, name, self.settings.max_samples),
                ).rowcount
            removed["samples"] += self._shrink_to_budget()
        return removed

    def _live_bytes(self) -> int:
        """Bytes in use in the file (freed pages are reused before the file grows)."""
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return page_size * (pages - free)

    def _shrink_to_budget(self) -> int:
        """Past ``max_megabytes``, drop the oldest tenth of the samples until under it."""
        budget = self.settings.max_megabytes * 2**20
        removed = 0
        while self._live_bytes() > budget:
            count = self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            if count == 0:
                break  # panes and resources alone: bounded by age
            removed += self._db.execute(
                "DELETE FROM samples WHERE id IN (SELECT id FROM samples ORDER BY id LIMIT ?)",
                (max(1, count // 10),),
            ).rowcount
        return removed

    # -- reads ---------------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        self._drain()
        self.flush()
        with self._db_lock:
            yield self._db

    def panes(
        self, name: str, since: float, until: float | None = None, version: int | None = None
    ) -> list[tuple[int, int, int, int, int, int, float, LatencyHistogram]]:
        """(minute, version, requests, errors, client_errors, rows, latency_sum, histogram)."""
        query = (
            "SELECT minute, version, requests, errors, client_errors, rows, latency_sum, histogram"
            " FROM panes WHERE deployment = ? AND minute >= ?"
        )
        args: list[Any] = [name, int(since) // 60]
        if until is not None:
            query += " AND minute <= ?"
            args.append(int(until) // 60)
        if version is not None:
            query += " AND version = ?"
            args.append(version)
        with self._reading() as db:
            rows = db.execute(query + " ORDER BY minute, version", args).fetchall()
        return [(*r[:7], LatencyHistogram.from_bytes(r[7], total=r[6])) for r in rows]

    def samples(
        self, name: str, since: float, *, version: int | None = None, limit: int = 10_000,
        path: str | None = None,
    ) -> list[sqlite3.Row]:
        query = "SELECT * FROM samples WHERE deployment = ? AND ts >= ?"
        args: list[Any] = [name, since]
        if version is not None:
            query += " AND version = ?"
            args.append(version)
        if path is not None:
            query += " AND path = ?"
            args.append(path)
        query += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._reading() as db:
            db.row_factory = sqlite3.Row
            try:
                rows = db.execute(query, args).fetchall()
            finally:
                db.row_factory = None
        return list(reversed(rows))

    def resources(self, name: str, since: float) -> list[tuple[Any, ...]]:
        """Stored samples of a deployment's servers, oldest first. A running server with no
        sample newer than the storing interval (one that just went live) is measured now,
        so the answer always ends with its current row."""
        now = time.time()
        with self._reading() as db:
            stored = db.execute(
                "SELECT ts, version, cpu_percent, rss_bytes, processes FROM resources"
                " WHERE deployment = ? AND ts >= ? ORDER BY ts",
                (name, since),
            ).fetchall()
        fresh = {row[1] for row in stored if row[0] >= now - self.settings.resource_store_seconds}
        stale = [p for p in self._processes() if p.deployment == name and p.version not in fresh]
        if not stale or now < since:
            return stored
        seen = self._measure(stale, now)
        self._store_resources(seen)
        return stored + [(r["ts"], v, r["cpu_percent"], int(r["rss_bytes"]), int(r["processes"]))
                         for (_, v), r in sorted(seen.items())]

    def storage(self) -> dict[str, int]:
        with self._db_lock:
            counts = {
                table: self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("panes", "samples", "labels", "resources")
            }
            page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        return {**counts, "bytes": page_size * pages, "queued": len(self._queue), "dropped": self.dropped}


def _sample_row(name: str, version: int, ts: float, rec: RequestRecord, rows: int) -> tuple[Any, ...]:
    request = rec.body.decode("utf-8", "replace") if len(rec.body) <= _SAMPLE_TEXT_LIMIT else None
    response = rec.response
    text = response.decode("utf-8", "replace") if response and len(response) <= _SAMPLE_TEXT_LIMIT else None
    return (name, version, ts, rec.path, rec.status, rec.elapsed_ns / 1e6, rows, request, text,
            rec.request_id or None)
