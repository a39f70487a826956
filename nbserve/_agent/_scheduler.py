"""Scheduled notebook runs: cron schedules that retrain and redeploy a deployment.

A schedule names a notebook, a cron expression (croniter) in a time zone, and papermill
parameters. When it is due, the agent executes the notebook with papermill in a child
process of its own (own session, the agent's private environment plus ``NBSERVE_HOME``
and the run's identity), so the notebook's ``nbserve.deploy(...)`` / ``%deploy`` goes to
*this* agent through the ordinary API, with every check a deploy gets. The version that
run produced is found afterwards by its provenance (``scheduled_run.run_id``).

Rules kept here, in one place:

- every run is recorded (``schedule_runs``): status, duration, parameters, the executed
  notebook, the version it produced or why none, the error cut to what matters;
- what would only fail at the first due time is refused at add time, the kernel included
  (one the agent has, stored with the schedule: a notebook without kernelspec metadata runs);
- a run whose files cannot be written for a full disk fails saying so, and the loop goes on;
- a schedule with a run in progress does not start another: the overlap is recorded as
  ``skipped``;
- due times missed while the agent was down are handled once, by the schedule's policy
  (``run_once`` or ``skip``), never as a burst;
- a run past its timeout, a removed schedule, and the agent stopping end the whole
  process tree (papermill and its kernel, which leads its own session);
- the clock is injectable and :meth:`Scheduler.tick` fires what is due at any instant,
  so "3 a.m." can be made to happen at once.

What a schedule may be (cron, zone, kernel, parameters) is checked in ``_schedule_rules``; its
tables and rows are ``_schedule_store``; why a run failed is worked out in ``_run_errors``; a
run's processes (papermill started, watched and ended) are ``_run_process``.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import errno
import json
import logging
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .._config import Home, private_env
from .._names import check_name
from ..errors import Conflict, InvalidArgument, NbserveError, NotFound
from ._registry import Registry, VersionRow
from ._run_errors import ERROR_CHARS, disk_full, error_text, run_error
from ._run_process import ActiveRun, end_left_over, end_run, papermill_command, run_notebook
from ._schedule_rules import (DEFAULT_TIMEOUT, MAX_TIMEOUT, MISSED_POLICIES, aware, check_cron, check_kernel,
                              check_notebook, check_parameters, check_timezone, iso_time, kernel_spec, latest_due,
                              next_due, parse_time, utc_now)
from ._schedule_store import MIGRATIONS, SCHEMA, RunRow, ScheduleRow, run_row, schedule_row

log = logging.getLogger("nbserve.agent")

# A due time younger than this is on time (the loop wakes within seconds of it); an older
# one was missed (the agent was down, or asleep) and goes to the missed-run policy.
ON_TIME_SECONDS = 120.0
POLL_SECONDS = 5.0  # the loop looks at the clock at least this often
# Executed notebooks and logs kept per schedule (runs that made a version keep theirs always).
KEEP_RUN_FILES = int(os.environ.get("NBSERVE_KEEP_RUN_FILES", "50"))
MAX_ROW_ID = 2**63 - 1  # SQLite's INTEGER; it cannot even compare a larger one
Clock = Callable[[], _dt.datetime]
# (deployment, version the run deployed, live version before the run, why) -> what was done
Revert = Callable[[str, int, "int | None", str], Awaitable["str | None"]]


# -- the scheduler ----------------------------------------------------------------------


class Scheduler:
    """Schedules, their runs, and the loop that fires them. One per agent."""

    def __init__(self, home: Home, registry: Registry, *, clock: Clock | None = None,
                 python: str | None = None, poll_seconds: float = POLL_SECONDS,
                 revert: Revert | None = None, keep_run_files: int | None = None) -> None:
        self.home = home
        self.registry = registry
        # Undoes what a failed run deployed (the agent passes Manager.revert), so a failed
        # or timed-out run changes nothing that serves.
        self.revert = revert
        self.clock: Clock = clock or utc_now
        self.python = python or sys.executable
        self.poll_seconds = poll_seconds
        self.runs_dir = home.root / "runs"
        self.keep_run_files = keep_run_files if keep_run_files is not None else KEEP_RUN_FILES
        self._active: dict[str, ActiveRun] = {}
        self._loop_task: asyncio.Task[Any] | None = None
        self._wake: asyncio.Event | None = None
        self._tick_lock: asyncio.Lock | None = None
        self._closing = False
        with registry.transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            for table, column, statement in MIGRATIONS:
                if column not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(statement)

    def now(self) -> _dt.datetime:
        return aware(self.clock())

    # -- reads --------------------------------------------------------------------------

    def schedules(self) -> list[ScheduleRow]:
        with self.registry.transaction() as db:
            rows = db.execute("SELECT * FROM schedules ORDER BY name").fetchall()
        return [schedule_row(r) for r in rows]

    def get(self, name: str) -> ScheduleRow:
        with self.registry.transaction() as db:
            row = db.execute("SELECT * FROM schedules WHERE name = ?", (name,)).fetchone()
        if row is None:
            known = [s.name for s in self.schedules()]
            raise _not_found(
                f"no schedule named {name!r}",
                hint=f"schedules: {', '.join(known)}" if known else "add one with `nbserve schedule add`",
            )
        return schedule_row(row)

    def runs(self, name: str, limit: int = 100) -> list[RunRow]:
        self.get(name)
        with self.registry.transaction() as db:
            rows = db.execute(
                "SELECT * FROM schedule_runs WHERE schedule = ? ORDER BY id DESC LIMIT ?", (name, limit)
            ).fetchall()
        return [run_row(r) for r in reversed(rows)]

    def get_run(self, name: str, run_id: int) -> RunRow:
        row = None
        if 0 < run_id <= MAX_ROW_ID:
            with self.registry.transaction() as db:
                row = db.execute(
                    "SELECT * FROM schedule_runs WHERE schedule = ? AND id = ?", (name, run_id)
                ).fetchone()
        if row is None:
            self.get(name)
            raise _not_found(f"schedule {name!r} has no run {run_id}", hint=f"see `nbserve schedule runs {name}`")
        return run_row(row)

    def running(self, name: str) -> int | None:
        """The id of the run of this schedule in progress, if any."""
        active = self._active.get(name)
        return active.run_id if active else None

    # -- changes ------------------------------------------------------------------------

    async def add(self, *, name: str, notebook: str, cron: str, deployment: str | None = None,
            parameters: dict[str, Any] | None = None, timezone: str = "UTC",
            timeout: float = DEFAULT_TIMEOUT, missed: str = "run_once", kernel: str | None = None,
            actor: str | None = None) -> ScheduleRow:
        """Validate everything that would otherwise fail at the first due time, then store the
        schedule with that time. ``kernel``: see :func:`check_kernel`."""
        deployment = check_name(deployment or name)
        check_name(name)
        cron = check_cron(cron)
        check_timezone(timezone)
        nb_path, nb_kernel = await asyncio.to_thread(check_notebook, notebook)  # a big notebook takes a while
        kernel = await asyncio.to_thread(check_kernel, kernel, nb_kernel)  # reads the kernelspec folders
        params = check_parameters(parameters, deployment)
        if missed not in MISSED_POLICIES:
            raise InvalidArgument(f"missed must be 'skip' or 'run_once', got {missed!r}")
        if not 0 < float(timeout) <= MAX_TIMEOUT:
            raise InvalidArgument(f"timeout must be from 1 second to 7 days, got {timeout!r}")
        now = self.now()
        nxt = next_due(cron, timezone, now)
        try:
            with self.registry.transaction() as db:
                db.execute(
                    "INSERT INTO schedules (name, deployment, notebook, cron, timezone, parameters,"
                    " timeout_seconds, missed, paused, created_by, created_at, next_run_at, kernel)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
                    (name, deployment, str(nb_path), cron, timezone, json.dumps(params), float(timeout),
                     missed, actor, iso_time(now), iso_time(nxt), kernel),
                )
        except sqlite3.IntegrityError:
            raise Conflict(
                f"a schedule named {name!r} exists",
                hint=f"remove it first (`nbserve schedule remove {name}`), or pick another --schedule-name",
            ) from None
        self.registry.add_event(
            "schedule_added",
            f"schedule {name}: {nb_path.name} at {cron!r} ({timezone}), kernel {kernel}; next {iso_time(nxt)}",
            deployment=deployment, actor=actor,
            data={"schedule": name, "cron": cron, "parameters": params, "kernel": kernel},
        )
        self._poke()
        return self.get(name)

    def pause(self, name: str, *, actor: str | None = None) -> ScheduleRow:
        row = self.get(name)
        self._update(name, paused=1)
        self.registry.add_event("schedule_paused", f"schedule {name} paused", deployment=row.deployment,
                                actor=actor, data={"schedule": name})
        return self.get(name)

    def resume(self, name: str, *, actor: str | None = None) -> ScheduleRow:
        """Unpause; the next due time counts from now (a paused period is not caught up)."""
        row = self.get(name)
        nxt = next_due(row.cron, row.timezone, self.now())
        self._update(name, paused=0, next_run_at=iso_time(nxt))
        self.registry.add_event("schedule_resumed", f"schedule {name} resumed; next {iso_time(nxt)}",
                                deployment=row.deployment, actor=actor, data={"schedule": name})
        self._poke()
        return self.get(name)

    async def remove(self, name: str, *, actor: str | None = None) -> ScheduleRow:
        """Stop its run in progress (if any), then delete it and its run records.

        Executed notebooks stay on disk: versions' provenance points at them.
        """
        row = self.get(name)
        active = self._active.get(name)
        if active is not None:
            await self._stop(active, "schedule removed")
        with self.registry.transaction() as db:
            db.execute("DELETE FROM schedule_runs WHERE schedule = ?", (name,))
            db.execute("DELETE FROM schedules WHERE name = ?", (name,))
        self.registry.add_event("schedule_removed", f"schedule {name} removed", deployment=row.deployment,
                                actor=actor, data={"schedule": name})
        return row

    def _update(self, name: str, **fields: Any) -> None:
        assignments = ", ".join(f"{key} = ?" for key in fields)
        with self.registry.transaction() as db:
            db.execute(f"UPDATE schedules SET {assignments} WHERE name = ?", (*fields.values(), name))

    # -- firing -------------------------------------------------------------------------

    async def tick(self, now: _dt.datetime | None = None) -> list[RunRow]:
        """Fire every schedule due at ``now`` (default: the clock); return the runs recorded.

        A due time younger than ``ON_TIME_SECONDS`` runs as ``cron``. An older one was
        missed: ``run_once`` runs it once (``missed``), ``skip`` records one ``skipped``
        run; either way the due times in between collapse into that one record. The next
        due time is then counted from ``now``.
        """
        now = aware(now or self.now())
        if self._tick_lock is None:
            self._tick_lock = asyncio.Lock()
        fired: list[RunRow] = []
        async with self._tick_lock:
            for row in self.schedules():
                due = parse_time(row.next_run_at)
                if row.paused or due is None or due > now:
                    continue
                latest = latest_due(row.cron, row.timezone, now)
                latest = max(latest, due)
                nxt = next_due(row.cron, row.timezone, now)
                self._update(row.name, next_run_at=iso_time(nxt), last_run_at=iso_time(now))
                if (now - latest).total_seconds() <= ON_TIME_SECONDS:
                    fired.append(self._fire(row, "cron", due_at=latest))
                elif row.missed == "run_once":
                    fired.append(self._fire(row, "missed", due_at=latest))
                else:
                    fired.append(self._record_skipped(
                        row, "missed", due_at=latest,
                        reason=f"missed {_missed_text(row, due, latest)} while the agent was not running; "
                               "the missed-run policy is skip",
                    ))
        self._poke()
        return fired

    def run_now(self, name: str, *, actor: str | None = None) -> RunRow:
        """Start a run at once (``manual``); ``skipped`` if one is in progress."""
        row = self.get(name)
        return self._fire(row, "manual", due_at=None, actor=actor)

    def _fire(self, row: ScheduleRow, trigger: str, *, due_at: _dt.datetime | None,
              actor: str | None = None) -> RunRow:
        # No await between the check and the insert: two ticks cannot both start a run.
        active = self._active.get(row.name)
        if active is not None:
            return self._record_skipped(
                row, trigger, due_at=due_at, actor=actor,
                reason=f"run {active.run_id} of schedule {row.name} is still running",
            )
        if self._closing:
            return self._record_skipped(row, trigger, due_at=due_at, actor=actor, reason="the agent is stopping")
        params = {"deployment_name": row.deployment, **row.parameters, "nbserve_scheduled_run": True}
        run_id = self._insert_run(row, trigger, "running", due_at=due_at, params=params, actor=actor)
        out_dir = self.runs_dir / row.name  # made by the run itself: a full disk fails the run, not the tick
        executed, log_path = out_dir / f"{run_id}.ipynb", out_dir / f"{run_id}.log"
        with self.registry.transaction() as db:
            db.execute("UPDATE schedule_runs SET executed_notebook = ?, log_path = ? WHERE id = ?",
                       (str(executed), str(log_path), run_id))
        active = ActiveRun(run_id, row.name)
        self._active[row.name] = active
        active.task = asyncio.get_running_loop().create_task(
            self._execute(row, active, params, executed, log_path))
        return self._get_run(run_id)

    def _insert_run(self, row: ScheduleRow, trigger: str, status: str, *, due_at: _dt.datetime | None,
                    params: dict[str, Any], actor: str | None = None, reason: str | None = None,
                    finished: bool = False) -> int:
        started = iso_time(self.now())
        with self.registry.transaction() as db:
            cursor = db.execute(
                "INSERT INTO schedule_runs (schedule, deployment, trigger, status, due_at, started_at,"
                " finished_at, duration_seconds, parameters, reason, actor)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.name, row.deployment, trigger, status, iso_time(due_at), started,
                 started if finished else None, 0.0 if finished else None, json.dumps(params), reason, actor),
            )
            return int(cursor.lastrowid or 0)

    def _record_skipped(self, row: ScheduleRow, trigger: str, *, due_at: _dt.datetime | None, reason: str,
                        actor: str | None = None) -> RunRow:
        run_id = self._insert_run(row, trigger, "skipped", due_at=due_at, params=row.parameters,
                                  actor=actor, reason=reason, finished=True)
        self.registry.add_event("scheduled_run", f"schedule {row.name}: run {run_id} skipped: {reason}",
                                deployment=row.deployment,
                                data={"schedule": row.name, "run": run_id, "status": "skipped"})
        return self._get_run(run_id)

    def _get_run(self, run_id: int) -> RunRow:
        with self.registry.transaction() as db:
            found = db.execute("SELECT * FROM schedule_runs WHERE id = ?", (run_id,)).fetchone()
        return run_row(found)

    # -- executing ----------------------------------------------------------------------

    async def _execute(self, row: ScheduleRow, active: ActiveRun, params: dict[str, Any], executed: Path,
                       log_path: Path) -> None:
        run_id = active.run_id
        notebook = Path(row.notebook)
        build_home = self.runs_dir / ".bentoml" / str(run_id)
        env = private_env({
            "NBSERVE_HOME": str(self.home.root),
            "NBSERVE_RUN_ID": str(run_id),
            "NBSERVE_SCHEDULE": row.name,
            "NBSERVE_RUN_NOTEBOOK": str(executed),
            "NBSERVE_NOTEBOOK_PATH": str(notebook),
            # the run's own BentoML store for building; the agent imports the Bento into its own
            "BENTOML_HOME": str(build_home),
            "PYTHONUNBUFFERED": "1",
        })
        started = time.monotonic()
        status, reason, error = "failed", None, None
        before = self.registry.get_deployment(row.deployment)
        live_before = before.live_version if before is not None else None
        try:
            if not notebook.is_file():
                raise FileNotFoundError(f"the notebook {notebook} is gone")
            spec = await asyncio.to_thread(kernel_spec, row.kernel,
                                           f"the schedule's kernel {row.kernel!r} is no longer installed on the agent")
            log_path.parent.mkdir(parents=True, exist_ok=True)
            command = papermill_command(self.python, notebook, executed, params, row.kernel, spec.language)
            code = await run_notebook(active, command, env=env, cwd=notebook.parent, log_path=log_path,
                                      timeout=row.timeout_seconds)
            if active.stop_reason is not None:
                status, reason = "failed", active.stop_reason
            elif code is None:
                status, reason = "timed_out", f"the run took longer than its timeout ({row.timeout_seconds:g} s)"
            elif code == 0:
                status = "succeeded"
            else:
                status = "failed"
                error = await asyncio.to_thread(run_error, executed, log_path, code)
        except asyncio.CancelledError:
            status, reason = "failed", active.stop_reason or "agent stopped"
        except NbserveError as exc:  # the run could not start: its kernel is gone
            status, error = "failed", error_text(exc)
        except OSError as exc:
            full = disk_full(log_path.parent, force=exc.errno == errno.ENOSPC)
            if full is None:
                log.exception("scheduled run %s of %s could not run", run_id, row.name)
            status, error = "failed", error_text(full) if full else f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - the run fails, the agent does not
            log.exception("scheduled run %s of %s could not run", run_id, row.name)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            await end_run(self.home, active)
            await asyncio.to_thread(shutil.rmtree, build_home, True)
            reverted = None
            if status != "succeeded":
                reverted = await self._revert(row, run_id, live_before, reason or error or status)
            self._finish(row, run_id, status, time.monotonic() - started, reason=reason, error=error,
                         reverted=reverted)
            if self._active.get(row.name) is active:
                del self._active[row.name]

    async def _revert(self, row: ScheduleRow, run_id: int, live_before: int | None, why: str) -> str | None:
        """Take back a version a failed run deployed; returns what was done, or None."""
        produced = self._produced_version(row.deployment, run_id)
        if produced is None or self.revert is None or produced.status == "failed":
            return None
        try:
            return await self.revert(row.deployment, produced.number, live_before,
                                     f"scheduled run {run_id} of {row.name} failed: {why}"[:300])
        except Exception as exc:  # noqa: BLE001 - the run record must still be written
            log.exception("could not revert v%s of %s", produced.number, row.deployment)
            return f"could not be rolled back: {exc}"

    def _finish(self, row: ScheduleRow, run_id: int, status: str, duration: float, *,
                reason: str | None, error: str | None, reverted: str | None = None) -> None:
        produced = self._produced_version(row.deployment, run_id)
        version = produced.number if produced is not None else None
        if produced is not None and produced.status == "failed":
            reason = f"{reason + '; ' if reason else ''}v{version} did not go live: {produced.error}"
        elif version is None and reason is None:
            reason = {
                "succeeded": f"the notebook finished without deploying {row.deployment} "
                             "(no nbserve.deploy or %deploy ran)",
                "failed": "the notebook failed before it deployed",
            }.get(status, "no version was deployed")
        elif produced is not None and status != "succeeded":
            # The notebook deployed before it failed (or handed its Bento over before the timeout):
            # a failed run changes nothing that serves, so that version was taken back.
            reason = (f"{reason + '; ' if reason else ''}v{version} was deployed before the run ended: "
                      + (reverted or "nothing to undo"))
        with self.registry.transaction() as db:
            db.execute(
                "UPDATE schedule_runs SET status = ?, finished_at = ?, duration_seconds = ?, version = ?,"
                " reason = COALESCE(?, reason), error = ? WHERE id = ?",
                (status, iso_time(self.now()), round(duration, 3), version, reason,
                 error[:ERROR_CHARS] if error else None, run_id),
            )
        what = f"v{version}" if version is not None else "no version"
        detail = error or reason or ""
        self.registry.add_event(
            "scheduled_run", f"schedule {row.name}: run {run_id} {status} ({what})" + (f": {detail}" if detail else ""),
            deployment=row.deployment, version=version,
            data={"schedule": row.name, "run": run_id, "status": status, "duration_seconds": round(duration, 3)},
        )
        self._prune_run_files(row.name)

    def _prune_run_files(self, name: str) -> int:
        """Delete the executed notebooks and logs of a schedule's older runs, keeping the newest
        ``keep_run_files`` and every run that made a version (its provenance points at them).
        The run records stay; their ``executed_notebook`` becomes null."""
        with self.registry.transaction() as db:
            old = db.execute(
                "SELECT id, executed_notebook, log_path FROM schedule_runs WHERE schedule = ? AND version IS NULL"
                " AND status != 'running' AND (executed_notebook IS NOT NULL OR log_path IS NOT NULL)"
                " AND id NOT IN (SELECT id FROM schedule_runs WHERE schedule = ? ORDER BY id DESC LIMIT ?)",
                (name, name, self.keep_run_files),
            ).fetchall()
            if old:
                db.executemany("UPDATE schedule_runs SET executed_notebook = NULL, log_path = NULL WHERE id = ?",
                               [(r["id"],) for r in old])
        for r in old:
            for path in (r["executed_notebook"], r["log_path"]):
                if path:
                    Path(path).unlink(missing_ok=True)
        return len(old)

    def _produced_version(self, deployment: str, run_id: int) -> VersionRow | None:
        """The newest version of the deployment whose provenance names this run."""
        found = [
            v for v in self.registry.list_versions(deployment)
            if str(((v.metadata.get("provenance") or {}).get("scheduled_run") or {}).get("run_id")) == str(run_id)
        ]
        return found[-1] if found else None

    async def _stop(self, active: ActiveRun, reason: str) -> None:
        active.stop_reason = reason
        await end_run(self.home, active)
        if active.task is not None:
            try:
                # Its record is written by the task itself: give it time (kill grace included)
                # before the agent closes the registry under it.
                await asyncio.wait_for(asyncio.shield(active.task), timeout=45)
            except (TimeoutError, asyncio.CancelledError):  # pragma: no cover
                pass

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """After the agent listens: close runs a previous agent left open, catch up, loop."""
        self._wake = asyncio.Event()
        with self.registry.transaction() as db:
            stale = [run_row(r) for r in db.execute("SELECT * FROM schedule_runs WHERE status = 'running'")]
        for run in stale:
            await asyncio.to_thread(end_left_over, self.home, run.id)
            with self.registry.transaction() as db:
                db.execute(
                    "UPDATE schedule_runs SET status = 'failed', finished_at = ?, reason = ? WHERE id = ?",
                    (iso_time(self.now()), "the agent stopped during the run", run.id),
                )
        try:
            await self.tick()  # due times missed while the agent was down: the policy, once
        except Exception:  # noqa: BLE001 - the agent serves even if the scheduler cannot
            log.exception("scheduler catch-up failed")
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        assert self._wake is not None
        while not self._closing:
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - a bad tick must not end the loop
                log.exception("scheduler tick failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._sleep_seconds())
            except TimeoutError:
                pass

    def _sleep_seconds(self) -> float:
        now = self.now()
        dues = [parse_time(s.next_run_at) for s in self.schedules() if not s.paused and s.next_run_at]
        soonest = min(((d - now).total_seconds() for d in dues if d is not None), default=self.poll_seconds)
        return min(self.poll_seconds, max(0.05, soonest))

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def close(self) -> None:
        """Stop the loop, and every run in progress (tree killed, recorded as failed)."""
        self._closing = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        for active in list(self._active.values()):
            await self._stop(active, "agent stopped")


def _missed_text(row: ScheduleRow, first: _dt.datetime | None, latest: _dt.datetime) -> str:
    if first is None or first >= latest:
        return f"the run due at {iso_time(latest)}"
    return f"the runs due from {iso_time(first)} to {iso_time(latest)}"


def _not_found(message: str, *, hint: str | None = None) -> NotFound:
    from .. import errors

    cls = getattr(errors, "ScheduleNotFound", NotFound)
    return cls(message, hint=hint)
