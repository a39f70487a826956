"""Ground truth: the real outcomes sent after a prediction (``dep.feedback``, ``POST <stable>/feedback``),
stored beside the sampled request they are for, and read back joined with it for quality.

``GroundTruth`` is a part of :class:`~nbserve._agent._monitor.Monitor`, kept in its own room: it
uses the monitor's database (``_db`` under ``_db_lock``), its ``_drain``/``flush`` (so what the
capture thread holds is written before labels are checked) and its ``_reading`` connection.
"""

from __future__ import annotations

import json
import operator
import sqlite3
import time
from pathlib import Path
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any


class GroundTruth:
    """Labels of sampled requests: stored with a report of what could not be used, read as a
    stream joined with the samples."""

    # What the monitor provides (see the module's docstring).
    _db: sqlite3.Connection
    _db_lock: Any

    def _drain(self) -> None: ...
    def flush(self) -> None: ...
    def _reading(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def add_labels(self, name: str, items: list[tuple[str, int, Any]]) -> dict[str, Any]:
        """Store real outcomes ``(request_id, row, y_true)``; a report, never an exception, for
        what cannot be used: ``unknown`` (no sampled request with that id and row),
        ``duplicate`` (the same id and row twice in this batch: the first is kept), ``invalid``
        (not a number, string or boolean), ``updated`` (replaced an earlier label)."""
        report: dict[str, Any] = {"received": len(items), "stored": 0, "updated": 0, "unknown": 0,
                                  "duplicate": 0, "invalid": 0, "examples": {}}

        def note(kind: str, rid: str, row: int) -> None:
            report[kind] += 1
            report["examples"].setdefault(kind, [])
            if len(report["examples"][kind]) < 5:
                report["examples"][kind].append(f"{rid}:{row}")

        seen: dict[tuple[str, int], Any] = {}
        for rid, row, y in items:
            kind = type(y)
            if kind is not int and kind is not str and kind is not bool and not _label_ok(y):
                note("invalid", rid, row)
                continue
            key = (rid, row)
            if key in seen:
                note("duplicate", rid, row)
            else:
                seen[key] = y
        rids = sorted(dict.fromkeys([key[0] for key in seen]))  # sorted: neighbours share pages
        self._drain()
        self.flush()
        with self._db_lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")  # checked and written in one transaction
            try:
                # Row 0 needs only a sampled request with that id; other rows its row count.
                missing = _missing_requests(db, name, rids)
                rows_of = _request_rows(db, name, sorted({rid for rid, row in seen if row > 0}))
                now = time.time()
                dumps = json.dumps
                rows_get = rows_of.get
                rows = [(name, rid, row, str(y) if type(y) is int else dumps(y), now)
                        for (rid, row), y in seen.items()
                        if (row == 0 and rid not in missing) or 0 < row < rows_get(rid, 0)]
                unknown = [] if len(rows) == len(seen) else [
                    (rid, row) for rid, row in seen
                    if not ((row == 0 and rid not in missing) or 0 < row < rows_get(rid, 0))]
                rows.sort(key=_request_id)  # in key order: neighbouring rows share pages
                if rows:
                    # New labels go in; a label sent again replaces the stored one: the rows
                    # the insert skipped are the ones that were already there.
                    cursor = db.executemany("INSERT OR IGNORE INTO labels (deployment, request_id, row,"
                                            " y_true, ts) VALUES (?, ?, ?, ?, ?)", rows)
                    report["updated"] = len(rows) - cursor.rowcount
                    if report["updated"]:
                        db.executemany("UPDATE labels SET y_true = ?4, ts = ?5 WHERE deployment = ?1"
                                       " AND request_id = ?2 AND row = ?3", rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        for key in unknown:
            note("unknown", *key)
        report["stored"] = len(rows)
        return report

    def labelled(self, name: str, since: float, *, version: int | None = None) -> "Labelled":
        """(ts, version, path, response JSON, row, y_true JSON) of every labelled row since
        ``since``, oldest first: iterate it (each pass streams the join in chunks from its own
        read connection, so memory does not grow with the rows and the capture thread is not
        held up); ``len()`` counts them."""
        query = ("SELECT s.ts, s.version, s.path, s.response, l.row, l.y_true FROM samples s"
                 " JOIN labels l ON l.deployment = s.deployment AND l.request_id = s.request_id"
                 " WHERE s.deployment = ? AND s.ts >= ?")
        args: list[Any] = [name, since]
        if version is not None:
            query += " AND s.version = ?"
            args.append(version)
        return Labelled(self, query, args)

    def _read_connection(self) -> sqlite3.Connection | None:
        """A read-only connection of its own to the metrics file (WAL: readers and the writer
        do not wait for each other); None for an in-memory database."""
        with self._db_lock:
            file = next((r[2] for r in self._db.execute("PRAGMA database_list") if r[1] == "main"), "")
        if not file:
            return None
        db = sqlite3.connect(f"{Path(file).as_uri()}?mode=ro", uri=True, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=5000")
        return db


_IN_CHUNK = 500  # request ids per IN (...) when labels are checked
_request_id = operator.itemgetter(1)


def _request_rows(db: sqlite3.Connection, name: str, rids: list[str]) -> dict[str, int]:
    """The payload rows of each sampled request in ``rids`` (no count or 0: one)."""
    rows_of: dict[str, int] = {}
    for lo in range(0, len(rids), _IN_CHUNK):
        chunk = rids[lo:lo + _IN_CHUNK]
        # An id sampled twice comes in ascending order of rows: the largest is the one kept.
        rows_of.update(db.execute(
            "SELECT request_id, COALESCE(NULLIF(rows, 0), 1) FROM samples WHERE deployment = ?"
            f" AND request_id IN ({','.join('?' * len(chunk))}) ORDER BY request_id, rows", [name, *chunk]))
    return rows_of


def _missing_requests(db: sqlite3.Connection, name: str, rids: list[str]) -> set[str]:
    """The ids in ``rids`` no sampled request of ``name`` has; only those come back to Python."""
    try:
        return {rid for (rid,) in db.execute(
            "SELECT value FROM json_each(?) WHERE NOT EXISTS (SELECT 1 FROM samples"
            " WHERE deployment = ? AND request_id = value)", (json.dumps(rids), name))}
    except sqlite3.OperationalError:  # an SQLite built without JSON
        return set(rids) - _request_rows(db, name, rids).keys()


class Labelled:
    """The labelled rows of ``Monitor.labelled``: re-iterable and sized, never held in memory."""

    _FETCH = 5_000  # rows per fetch

    def __init__(self, monitor: "GroundTruth", query: str, args: list[Any]) -> None:
        self._monitor, self._query, self._args = monitor, query, args

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        monitor = self._monitor
        monitor._drain()  # what the capture thread still holds is written first
        monitor.flush()
        db = monitor._read_connection()
        if db is None:  # in-memory database: one connection, read under its lock
            with monitor._reading() as shared:
                rows = shared.execute(self._query + " ORDER BY s.ts", self._args).fetchall()
            yield from rows
            return
        try:
            cursor = db.execute(self._query + " ORDER BY s.ts", self._args)
            while chunk := cursor.fetchmany(self._FETCH):
                yield from chunk
        finally:
            db.close()

    def __len__(self) -> int:
        query = f"SELECT COUNT(*) FROM ({self._query})"
        monitor = self._monitor
        monitor._drain()
        monitor.flush()
        db = monitor._read_connection()
        if db is None:
            with monitor._reading() as shared:
                return shared.execute(query, self._args).fetchone()[0]
        try:
            return db.execute(query, self._args).fetchone()[0]
        finally:
            db.close()

    def __bool__(self) -> bool:
        return len(self) > 0


def migrate_labels(db: sqlite3.Connection, schema: str) -> None:
    """Files written before ``labels`` was a WITHOUT ROWID table: copy it into the new layout."""
    sql = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'labels'").fetchone()
    if sql is None or "WITHOUT ROWID" in sql[0].upper():
        return
    ddl = schema[schema.index("CREATE TABLE IF NOT EXISTS labels"):]
    ddl = ddl[:ddl.index(";") + 1]
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE labels RENAME TO labels_rowid")
        db.execute(ddl)
        db.execute("INSERT OR REPLACE INTO labels SELECT deployment, request_id, row, y_true, ts"
                   " FROM labels_rowid")
        db.execute("DROP TABLE labels_rowid")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _label_ok(value: Any) -> bool:
    if isinstance(value, bool) or isinstance(value, str):
        return True
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value == value and value not in (float("inf"), float("-inf"))
