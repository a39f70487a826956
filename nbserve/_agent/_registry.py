"""The agent's registry: deployments, immutable numbered versions, processes, events,
access tokens and the audit log.

One SQLite file under ``NBSERVE_HOME``, written only by the agent. Versions are immutable
and events and audit records append-only; triggers enforce both, so no code path can
quietly rewrite history. Each audit record also carries the SHA-256 of the one before it,
so an edit made behind the agent's back (with the sqlite3 shell, say) is evident to
``verify_audit``. WAL mode keeps readers (the CLI's ``--offline`` views, backups) off the
writer.

One room on purpose (over 600 lines): the schema, its triggers, migrations and every statement
that writes it live together, so the rules that keep history immutable are read in one place.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import errors
from .._events import AUDITED, Event
from ._principal import current
from ._storage import insufficient, is_disk_full

log = logging.getLogger("nbserve.agent")

SCHEMA_VERSION = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS deployments (
    name          TEXT PRIMARY KEY,
    created_at    TEXT NOT NULL,
    stable_port   INTEGER UNIQUE,
    live_version  INTEGER,
    state         TEXT NOT NULL CHECK (state IN ('serving', 'stopped')),
    keep_warm     INTEGER NOT NULL DEFAULT 1,
    config        TEXT NOT NULL DEFAULT '{}',
    rollout       TEXT NOT NULL DEFAULT '{}',
    aliases       TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE IF NOT EXISTS versions (
    deployment  TEXT NOT NULL REFERENCES deployments(name),
    number      INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    created_by  TEXT,
    bento_tag   TEXT NOT NULL,
    metadata    TEXT NOT NULL,
    status      TEXT NOT NULL
                CHECK (status IN ('starting', 'live', 'warm', 'stopped', 'failed')),
    error       TEXT,
    -- where it runs now when it was moved (scale(engine=...)); NULL: the engine it was deployed on
    engine      TEXT,
    PRIMARY KEY (deployment, number)
);

CREATE TRIGGER IF NOT EXISTS versions_are_immutable
BEFORE UPDATE OF deployment, number, created_at, created_by, bento_tag, metadata ON versions
BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;

CREATE TABLE IF NOT EXISTS processes (
    pid          INTEGER NOT NULL,
    create_time  REAL NOT NULL,
    deployment   TEXT NOT NULL,
    version      INTEGER NOT NULL,
    port         INTEGER NOT NULL,
    root_pid     INTEGER NOT NULL,
    PRIMARY KEY (pid, create_time)
);

-- A server is written here before it is spawned and removed once stopped, so an agent
-- killed at any instant of a start leaves a record its successor cleans up from. Every
-- process of the server carries server_id in its environment (NBSERVE_SERVER_ID).
CREATE TABLE IF NOT EXISTS servers (
    server_id   TEXT PRIMARY KEY,
    deployment  TEXT NOT NULL,
    version     INTEGER NOT NULL,
    port        INTEGER NOT NULL,
    started_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          TEXT NOT NULL,
    deployment  TEXT,
    version     INTEGER,
    kind        TEXT NOT NULL,
    message     TEXT NOT NULL,
    actor       TEXT,
    data        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_by_deployment ON events (deployment, id);

CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

CREATE TABLE IF NOT EXISTS tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    deployments  TEXT,
    created_at   REAL NOT NULL,
    created_by   TEXT,
    expires_at   REAL,
    revoked_at   REAL,
    salt         BLOB NOT NULL,
    digest       BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS tokens_keep_their_secret
BEFORE UPDATE OF id, name, role, deployments, created_at, salt, digest ON tokens
BEGIN SELECT RAISE(ABORT, 'a token changes only its expiry or revocation'); END;

CREATE TABLE IF NOT EXISTS audit (
    seq         INTEGER PRIMARY KEY,
    ts          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    token       TEXT,
    source      TEXT,
    action      TEXT NOT NULL,
    deployment  TEXT,
    version     INTEGER,
    before      INTEGER,
    after       INTEGER,
    detail      TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_deployment ON audit (deployment, seq);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

# Event kinds that change what serves or who may act: each also gets a chained audit record.
AUDITED_EVENTS = AUDITED  # event kinds that also write an audit record (nbserve/_events.py)
_KNOWN_EVENTS = frozenset(Event)
_unknown_said: set[str] = set()
GENESIS_HASH = "0" * 64
_AUDIT_FIELDS = ("seq", "ts", "actor", "token", "source", "action", "deployment", "version", "before",
                 "after", "detail")


_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
RECOVERY_DOC = "docs/operations.md#a-damaged-registry-or-metrics-file"


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """SQLite says the file is not a (whole) database, as opposed to busy, full or unreadable."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return "malformed" in str(exc) or "not a database" in str(exc)


def damaged(path: Path, found: str) -> errors.RegistryDamaged:
    fixed = path.with_name("registry-recovered.sqlite")
    return errors.RegistryDamaged(
        f"the registry file {path} is damaged ({found[:200]}); the agent will not start on it",
        hint=f"stop here and recover it: restore your backup of it, or "
             f"`sqlite3 {path} \".recover\" | sqlite3 {fixed}` and move that in its place, or move the "
             f"file aside to start with an empty registry (the Bentos in bentoml/ stay); see {RECOVERY_DOC}",
        path=str(path), found=found[:2000],
    )


def check_database(path: Path, *, full: bool = True) -> list[str]:
    """SQLite's own check of a database file, read-only: ``[]`` when intact (or absent), else
    what it found (at most 20 lines). ``full``: ``integrity_check`` (also indexes against
    tables), else ``quick_check``."""
    if not path.exists():
        return []
    pragma = "integrity_check(20)" if full else "quick_check(20)"
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = [str(r[0]) for r in db.execute(f"PRAGMA {pragma}")]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            return [str(exc)]
        raise
    return [] if found == ["ok"] else found


def utcnow() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class DeploymentRow:
    name: str
    created_at: str
    stable_port: int | None
    live_version: int | None
    state: str
    keep_warm: int
    config: dict[str, Any]
    rollout: dict[str, Any]  # {} or the canary/shadow under way: mode, version, percent, gates...
    aliases: dict[str, int]  # name -> version number (``/v/<alias>/...``)


@dataclass(frozen=True)
class VersionRow:
    deployment: str
    number: int
    created_at: str
    created_by: str | None
    bento_tag: str
    metadata: dict[str, Any]
    status: str
    error: str | None
    engine: str | None = None  # where it runs now, when moved since its deploy

    @property
    def placed_on(self) -> str | None:
        """The engine it runs on: where it was moved, else where it was deployed (None: the agent's default)."""
        return self.engine or self.metadata.get("engine")


@dataclass(frozen=True)
class ProcessRow:
    pid: int
    create_time: float
    deployment: str
    version: int
    port: int
    root_pid: int


@dataclass(frozen=True)
class ServerRow:
    server_id: str
    deployment: str
    version: int
    port: int
    started_at: str


@dataclass(frozen=True)
class EventRow:
    id: int
    ts: str
    deployment: str | None
    version: int | None
    kind: str
    message: str
    actor: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class AuditRow:
    seq: int
    ts: str
    actor: str
    token: str | None
    source: str | None
    action: str
    deployment: str | None
    version: int | None
    before: int | None  # the live version before the change
    after: int | None  # ... and after it
    detail: dict[str, Any]
    prev_hash: str
    hash: str


def audit_hash(prev_hash: str, record: dict[str, Any]) -> str:
    """SHA-256 over the previous record's hash and this record's fields, canonically encoded."""
    body = json.dumps([record[k] for k in _AUDIT_FIELDS], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


class Registry:
    """Typed access to the SQLite file. Thread-safe; every method is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        # (PRAGMA data_version, seq, hash, records) of the last intact audit chain: while no other
        # connection has written (data_version unchanged), only records after it need checking.
        self._audit_verified: tuple[int, int, str, int] | None = None
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._open()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, errors.NbserveError):
                raise
            if isinstance(exc, sqlite3.DatabaseError) and is_damage(exc):
                raise damaged(path, str(exc)) from None
            if is_disk_full(exc):
                raise insufficient(path, what="opening the registry") from None
            raise

    def _open(self) -> None:
        # Checked before anything writes to it: a damaged file is refused as it is found,
        # never "repaired" into something that loses or invents state.
        problems = [r[0] for r in self._db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise damaged(self.path, "; ".join(problems))
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        # executescript commits on its own, so it runs outside transaction(); every
        # statement in it is idempotent.
        self._db.executescript(_SCHEMA)
        self._migrate()
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def _migrate(self) -> None:
        """Bring an older registry file up to SCHEMA_VERSION; every step is additive."""
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(deployments)")}
        if "rollout" not in columns:  # 1 -> 2: canary / shadow state of a deployment
            self._db.execute("ALTER TABLE deployments ADD COLUMN rollout TEXT NOT NULL DEFAULT '{}'")
        if "aliases" not in columns:  # 3 -> 4: named versions (dep.alias)
            self._db.execute("ALTER TABLE deployments ADD COLUMN aliases TEXT NOT NULL DEFAULT '{}'")
        if "engine" not in {r["name"] for r in self._db.execute("PRAGMA table_info(versions)")}:
            self._db.execute("ALTER TABLE versions ADD COLUMN engine TEXT")  # 4 -> 5: versions moved between engines

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; on a full disk nothing of it is kept and the caller gets
        :class:`~nbserve.errors.InsufficientStorage` (507), not SQLite's own error."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")  # where WAL mode writes, so where a full disk shows
                except BaseException:
                    if self._db.in_transaction:  # SQLite may have rolled back on its own
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                if is_disk_full(exc):
                    raise insufficient(self.path, what="writing the registry") from None
                raise

    # -- deployments --------------------------------------------------------------

    def get_deployment(self, name: str) -> DeploymentRow | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM deployments WHERE name = ?", (name,)).fetchone()
        return _deployment(row) if row else None

    def list_deployments(self) -> list[DeploymentRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM deployments ORDER BY name").fetchall()
        return [_deployment(r) for r in rows]

    def create_deployment(self, name: str, stable_port: int, keep_warm: int = 1) -> DeploymentRow:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO deployments (name, created_at, stable_port, state, keep_warm)"
                " VALUES (?, ?, ?, 'serving', ?)",
                (name, utcnow(), stable_port, keep_warm),
            )
        found = self.get_deployment(name)
        assert found is not None
        return found

    def update_deployment(self, name: str, **fields: Any) -> None:
        allowed = {"live_version", "state", "keep_warm", "config", "stable_port", "rollout", "aliases"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        for key in ("config", "rollout", "aliases"):
            if key in fields:
                fields[key] = json.dumps(fields[key], default=str)
        assignments = ", ".join(f"{key} = ?" for key in fields)
        with self.transaction() as db:
            db.execute(f"UPDATE deployments SET {assignments} WHERE name = ?", (*fields.values(), name))

    # -- versions -----------------------------------------------------------------

    def add_version(
        self, deployment: str, bento_tag: str, metadata: dict[str, Any], created_by: str | None
    ) -> VersionRow:
        """Register the next numbered version (status ``starting``)."""
        with self.transaction() as db:
            (number,) = db.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE deployment = ?",
                (deployment,),
            ).fetchone()
            db.execute(
                "INSERT INTO versions (deployment, number, created_at, created_by, bento_tag,"
                " metadata, status) VALUES (?, ?, ?, ?, ?, ?, 'starting')",
                (deployment, number, utcnow(), created_by, bento_tag, json.dumps(metadata, default=str)),
            )
        found = self.get_version(deployment, number)
        assert found is not None
        return found

    def get_version(self, deployment: str, number: int) -> VersionRow | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM versions WHERE deployment = ? AND number = ?", (deployment, number)
            ).fetchone()
        return _version(row) if row else None

    def list_versions(self, deployment: str) -> list[VersionRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM versions WHERE deployment = ? ORDER BY number", (deployment,)
            ).fetchall()
        return [_version(r) for r in rows]

    def set_version_status(
        self, deployment: str, number: int, status: str, error: str | None = None
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE versions SET status = ?, error = COALESCE(?, error)"
                " WHERE deployment = ? AND number = ?",
                (status, error, deployment, number),
            )

    def set_version_engine(self, deployment: str, number: int, engine: str) -> None:
        """Where a version runs from now on (``scale(engine=...)`` moves it), beside the engine
        its immutable metadata says it was deployed on."""
        with self.transaction() as db:
            db.execute("UPDATE versions SET engine = ? WHERE deployment = ? AND number = ?",
                       (engine, deployment, number))

    # -- processes ----------------------------------------------------------------

    def record_processes(
        self, deployment: str, version: int, port: int, root_pid: int, procs: list[tuple[int, float]]
    ) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO processes (pid, create_time, deployment, version, port, root_pid)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(pid, ctime, deployment, version, port, root_pid) for pid, ctime in procs],
            )

    def processes(self, deployment: str | None = None, version: int | None = None) -> list[ProcessRow]:
        query, args = "SELECT * FROM processes WHERE 1=1", []
        if deployment is not None:
            query += " AND deployment = ?"
            args.append(deployment)
        if version is not None:
            query += " AND version = ?"
            args.append(version)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [ProcessRow(**dict(r)) for r in rows]

    def forget_processes(self, root_pid: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM processes WHERE root_pid = ?", (root_pid,))

    def record_server(self, server_id: str, deployment: str, version: int, port: int) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO servers (server_id, deployment, version, port, started_at) VALUES (?, ?, ?, ?, ?)",
                (server_id, deployment, version, port, utcnow()),
            )

    def servers(self) -> list[ServerRow]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM servers ORDER BY started_at").fetchall()
        return [ServerRow(**dict(r)) for r in rows]

    def forget_server(self, server_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM servers WHERE server_id = ?", (server_id,))

    # -- tokens -------------------------------------------------------------------

    def load_tokens(self) -> list[dict[str, Any]]:
        """The stored tokens as rows (``deployments`` as its JSON text); ``_access`` reads them."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM tokens ORDER BY created_at").fetchall()
        return [dict(r) for r in rows]

    def add_token(self, row: Any, *, action: str = "token_created", audit: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO tokens (id, name, role, deployments, created_at, created_by, expires_at,"
                " revoked_at, salt, digest) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                (row.id, row.name, row.role, json.dumps(list(row.deployments)) if row.deployments is not None
                 else None, row.created_at, row.created_by, row.expires_at, row.salt, row.digest),
            )
            self._append_audit(db, action, actor=row.created_by, detail={"token": row.name, "id": row.id, **audit})

    def set_token_revoked(self, token_id: str, at: float, *, action: str | None,
                          detail: dict[str, Any] | None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (at, token_id))
            if action is not None:
                self._append_audit(db, action, actor=None, detail=detail or {})

    def set_token_expiry(self, token_id: str, expires_at: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE tokens SET expires_at = ? WHERE id = ?", (expires_at, token_id))

    # -- audit --------------------------------------------------------------------

    def _append_audit(self, db: sqlite3.Connection, action: str, *, actor: str | None,
                      deployment: str | None = None, version: int | None = None,
                      detail: dict[str, Any]) -> None:
        """One chained record, inside the caller's transaction (so it and the change it
        records are written together or not at all)."""
        principal = current.get()
        last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        before = after = None
        if deployment is not None:
            live = db.execute("SELECT live_version FROM deployments WHERE name = ?", (deployment,)).fetchone()
            after = live["live_version"] if live else None
            previous = db.execute("SELECT after FROM audit WHERE deployment = ? ORDER BY seq DESC LIMIT 1",
                                  (deployment,)).fetchone()
            before = previous["after"] if previous else None
        record = {
            "seq": (last["seq"] + 1) if last else 1,
            "ts": utcnow(),
            "actor": actor or (principal.name if principal else "agent"),
            "token": principal.name if principal else None,
            "source": principal.source if principal else None,
            "action": action, "deployment": deployment, "version": version,
            "before": before, "after": after,
            "detail": json.loads(json.dumps(detail, default=str)),
        }
        prev_hash = last["hash"] if last else GENESIS_HASH
        digest = audit_hash(prev_hash, record)
        db.execute(
            "INSERT INTO audit (seq, ts, actor, token, source, action, deployment, version, before, after,"
            " detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*(record[k] for k in _AUDIT_FIELDS[:-1]), json.dumps(record["detail"], sort_keys=True),
             prev_hash, digest),
        )

    def audit(self, deployment: str | None = None, limit: int = 200, after_seq: int = 0) -> list[AuditRow]:
        return [_audit(r) for r in self._newest("audit", "seq", deployment, limit, after_seq)]

    def _newest(self, table: str, key: str, deployment: str | None, limit: int, after: int) -> list[sqlite3.Row]:
        """The newest ``limit`` rows of an append-only table with ``key`` above ``after``,
        oldest first."""
        query, args = f"SELECT * FROM {table} WHERE {key} > ?", [after]
        if deployment is not None:
            query += " AND deployment = ?"
            args.append(deployment)
        query += f" ORDER BY {key} DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return rows[::-1]

    def verify_audit(self) -> dict[str, Any]:
        """Recompute the chain: ``ok``, records checked, the head hash, and the first broken
        record (an edited field, a deleted or reordered record)."""
        expected_prev, expected_seq, checked = GENESIS_HASH, 1, 0
        with self._lock:
            # This connection only ever appends (and triggers forbid edits); any other writer,
            # the sqlite3 shell included, changes data_version, and the whole chain is checked again.
            data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
            cached = self._audit_verified
            if cached is not None and cached[0] == data_version:
                _, last_seq, expected_prev, checked = cached
                expected_seq = last_seq + 1
            cursor = self._db.execute("SELECT * FROM audit WHERE seq >= ? ORDER BY seq", (expected_seq,))
            for raw in cursor:
                row = _audit(raw)
                record = {k: getattr(row, k) for k in _AUDIT_FIELDS}
                problem = None
                if row.seq != expected_seq:
                    problem = f"record {expected_seq} is missing (found {row.seq} next)"
                elif row.prev_hash != expected_prev:
                    problem = f"record {row.seq} does not follow the record before it"
                elif audit_hash(row.prev_hash, record) != row.hash:
                    problem = f"record {row.seq} was changed after it was written"
                if problem:
                    self._audit_verified = None
                    return {"ok": False, "records": checked, "broken_at": row.seq, "problem": problem,
                            "head": None}
                expected_prev, expected_seq, checked = row.hash, row.seq + 1, checked + 1
            self._audit_verified = (data_version, expected_seq - 1, expected_prev, checked)
        return {"ok": True, "records": checked, "broken_at": None, "problem": None, "head": expected_prev}

    # -- events -------------------------------------------------------------------

    def add_event(
        self,
        kind: str,
        message: str,
        *,
        deployment: str | None = None,
        version: int | None = None,
        actor: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> EventRow:
        if kind not in _KNOWN_EVENTS and kind not in _unknown_said:  # a new kind not added to Event
            _unknown_said.add(kind)
            log.warning("event kind %r is not one of nbserve._events.Event; the panel shows it as info", kind)
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO events (ts, deployment, version, kind, message, actor, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (utcnow(), deployment, version, kind, message, actor, json.dumps(data or {}, default=str)),
            )
            if kind in AUDITED_EVENTS:
                self._append_audit(db, kind, actor=actor, deployment=deployment, version=version,
                                   detail={"message": message, **(data or {})})
            row = db.execute("SELECT * FROM events WHERE id = ?", (cursor.lastrowid,)).fetchone()
        return _event(row)

    def events(self, deployment: str | None = None, limit: int = 200, after_id: int = 0) -> list[EventRow]:
        return [_event(r) for r in self._newest("events", "id", deployment, limit, after_id)]

    def latest_event_ids(self) -> dict[str, int]:
        """Each deployment's newest event id, in one query (the events_by_deployment index)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT deployment, MAX(id) FROM events WHERE deployment IS NOT NULL GROUP BY deployment"
            ).fetchall()
        return {deployment: newest for deployment, newest in rows}


def _deployment(row: sqlite3.Row) -> DeploymentRow:
    data = dict(row)
    data["config"] = json.loads(data["config"] or "{}")
    data["rollout"] = json.loads(data.get("rollout") or "{}")
    data["aliases"] = json.loads(data.get("aliases") or "{}")
    return DeploymentRow(**data)


def _version(row: sqlite3.Row) -> VersionRow:
    data = dict(row)
    data["metadata"] = json.loads(data["metadata"])
    return VersionRow(**data)


def _audit(row: sqlite3.Row) -> AuditRow:
    data = dict(row)
    data["detail"] = json.loads(data["detail"] or "{}")
    return AuditRow(**data)


def _event(row: sqlite3.Row) -> EventRow:
    data = dict(row)
    data["data"] = json.loads(data["data"] or "{}")
    return EventRow(**data)
