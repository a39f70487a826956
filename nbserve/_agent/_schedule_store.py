"""How schedules and their runs are stored: the tables (in the registry's database) and the
rows read from them."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from ._schedule_rules import DEFAULT_KERNEL

SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    name             TEXT PRIMARY KEY,
    deployment       TEXT NOT NULL,
    notebook         TEXT NOT NULL,
    cron             TEXT NOT NULL,
    timezone         TEXT NOT NULL,
    parameters       TEXT NOT NULL DEFAULT '{}',
    timeout_seconds  REAL NOT NULL,
    missed           TEXT NOT NULL CHECK (missed IN ('skip', 'run_once')),
    paused           INTEGER NOT NULL DEFAULT 0,
    created_by       TEXT,
    created_at       TEXT NOT NULL,
    next_run_at      TEXT,
    last_run_at      TEXT,
    kernel           TEXT
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule           TEXT NOT NULL,
    deployment         TEXT NOT NULL,
    trigger            TEXT NOT NULL CHECK (trigger IN ('cron', 'manual', 'missed')),
    status             TEXT NOT NULL
                       CHECK (status IN ('running', 'succeeded', 'failed', 'timed_out', 'skipped')),
    due_at             TEXT,
    started_at         TEXT NOT NULL,
    finished_at        TEXT,
    duration_seconds   REAL,
    parameters         TEXT NOT NULL DEFAULT '{}',
    executed_notebook  TEXT,
    log_path           TEXT,
    version            INTEGER,
    reason             TEXT,
    error              TEXT,
    actor              TEXT
);
CREATE INDEX IF NOT EXISTS schedule_runs_by_schedule ON schedule_runs (schedule, id);
"""
# Columns added since the tables were first written; a registry of an older agent gets them
# (NULL in old rows).
MIGRATIONS = (
    ("schedules", "kernel", "ALTER TABLE schedules ADD COLUMN kernel TEXT"),
)


@dataclass(frozen=True)
class ScheduleRow:
    name: str
    deployment: str
    notebook: str
    cron: str
    timezone: str
    parameters: dict[str, Any]
    timeout_seconds: float
    missed: str
    paused: bool
    created_by: str | None
    created_at: str
    next_run_at: str | None
    last_run_at: str | None
    kernel: str


@dataclass(frozen=True)
class RunRow:
    id: int
    schedule: str
    deployment: str
    trigger: str
    status: str
    due_at: str | None
    started_at: str
    finished_at: str | None
    duration_seconds: float | None
    parameters: dict[str, Any]
    executed_notebook: str | None
    log_path: str | None
    version: int | None
    reason: str | None
    error: str | None
    actor: str | None


def schedule_row(row: sqlite3.Row) -> ScheduleRow:
    data = dict(row)
    data["parameters"] = json.loads(data["parameters"] or "{}")
    data["paused"] = bool(data["paused"])
    data["kernel"] = data.get("kernel") or DEFAULT_KERNEL  # rows from before the column: what they ran with
    return ScheduleRow(**data)


def run_row(row: sqlite3.Row) -> RunRow:
    data = dict(row)
    data["parameters"] = json.loads(data["parameters"] or "{}")
    return RunRow(**data)
