"""``nbserve schedule ...``: a thin mapping of subcommands onto ``nbserve._schedules``.

Registered into the main parser by :func:`register`; errors are printed by ``nbserve._cli.main``
(``error: ...`` and a hint, exit 1), or by :func:`main` when used on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ._cli_output import table
from .errors import InvalidArgument, NbserveError

RUN_COLUMNS = ["id", "trigger", "status", "started_at", "duration_seconds", "version", "why"]


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value``; the value is JSON when it parses (numbers, booleans, lists), else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InvalidArgument(f"--param takes key=value, got {text!r}", hint="e.g. --param n_estimators=200")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _cmd_add(args: argparse.Namespace) -> int:
    from ._schedules import schedule

    params = dict(parse_param(p) for p in args.param or [])
    sched = schedule(args.notebook, cron=args.cron, name=args.name, params=params, timezone=args.timezone,
                     timeout=args.timeout, missed=args.missed, schedule_name=args.schedule_name,
                     kernel=args.kernel, target=args.target)
    print(f"schedule {sched.name}: {sched.notebook} at {sched.cron!r} ({sched.timezone}), "
          f"kernel {sched.kernel}, deploys {sched.deployment}; next run {sched.next_run_at}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from ._schedules import schedules

    rows = []
    for s in schedules(target=args.target):
        d = s.data
        rows.append({**d, "next_run_at": "paused" if d["paused"] else d["next_run_at"],
                     "running": d.get("running_run") or "",
                     "notebook": d["notebook"].rsplit("/", 1)[-1]})
    print(table(rows, ["name", "deployment", "cron", "timezone", "next_run_at", "last_run_at", "running",
                        "notebook", "kernel"]))
    return 0


def _cmd_pause(args: argparse.Namespace) -> int:
    from ._schedules import get_schedule

    sched = get_schedule(args.name, target=args.target).pause()
    print(f"schedule {sched.name}: paused")
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from ._schedules import get_schedule

    sched = get_schedule(args.name, target=args.target).resume()
    print(f"schedule {sched.name}: resumed; next run {sched.next_run_at}")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    from ._schedules import get_schedule

    get_schedule(args.name, target=args.target).remove()
    print(f"schedule {args.name}: removed")
    return 0


def _describe(run: dict[str, Any]) -> str:
    line = f"run {run['id']} of {run['schedule']}: {run['status']}"
    if run.get("duration_seconds") is not None and run["status"] != "running":
        line += f" in {run['duration_seconds']:.1f} s"
    if run.get("version") is not None:
        line += f", deployed {run['deployment']} v{run['version']}"
    why = run.get("error") or run.get("reason")
    if why and run["status"] != "running":
        line += f" ({why})"
    if run.get("executed_notebook") and run["status"] != "skipped":
        line += f"\n  executed notebook: {run['executed_notebook']}"
    return line


def _cmd_run_now(args: argparse.Namespace) -> int:
    from ._schedules import get_schedule

    run = get_schedule(args.name, target=args.target).run_now(wait=args.wait)
    print(_describe(run))
    return 0 if run["status"] in ("running", "succeeded") else 1


def _cmd_runs(args: argparse.Namespace) -> int:
    from ._connection import connect

    client = connect(args.target)
    runs = client.get(f"/v1/schedules/{args.name}/runs", params={"limit": args.limit})
    rows = [{**r, "why": (r.get("error") or r.get("reason") or "")[:100],
             "duration_seconds": "" if r.get("duration_seconds") is None else f"{r['duration_seconds']:.1f}"}
            for r in runs]
    print(table(rows, RUN_COLUMNS))
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``schedule`` and its subcommands to ``nbserve``'s subparsers."""
    parser = subparsers.add_parser(
        "schedule", help="run a notebook on a cron schedule to retrain and redeploy",
        description="Run a notebook on a cron schedule in the agent (papermill); the notebook deploys as usual.",
    )
    sub = parser.add_subparsers(dest="schedule_command", required=True, metavar="ACTION")

    def add(name: str, func: Any, help_text: str, *, named: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if named:
            p.add_argument("name", help="schedule name")
        p.add_argument("--target", default=None, help="agent to talk to (default: local)")
        p.set_defaults(func=func)
        return p

    add_p = add("add", _cmd_add, "schedule a notebook", named=False)
    add_p.add_argument("notebook", help="the notebook to run (papermill)")
    add_p.add_argument("--cron", required=True, help="five-field cron expression, e.g. '0 3 * * *'")
    add_p.add_argument("--name", required=True, help="the deployment it retrains (passed as deployment_name)")
    add_p.add_argument("--schedule-name", default=None,
                       help="the schedule's own name, for several per deployment (default: --name)")
    add_p.add_argument("--param", "-p", action="append", metavar="KEY=VALUE",
                       help="papermill parameter; VALUE is JSON when it parses, else a string (repeatable)")
    add_p.add_argument("--timezone", default="UTC", help="IANA time zone of the cron expression (default UTC)")
    add_p.add_argument("--timeout", type=float, default=1800, help="seconds before a run is stopped (default 1800)")
    add_p.add_argument("--missed", choices=["skip", "run_once"], default="run_once",
                       help="due times missed while the agent was down (default run_once)")
    add_p.add_argument("--kernel", default=None, metavar="NAME",
                       help="Jupyter kernel to run it with, one the agent has (default: the notebook's own, "
                            "else python3)")
    add("list", _cmd_list, "list schedules", named=False)
    add("pause", _cmd_pause, "stop firing a schedule")
    add("resume", _cmd_resume, "fire a paused schedule again")
    add("remove", _cmd_remove, "delete a schedule (a run in progress is stopped)")
    run_now = add("run-now", _cmd_run_now, "run a schedule's notebook now")
    run_now.add_argument("--wait", action="store_true", help="wait for the run to finish")
    runs = add("runs", _cmd_runs, "runs of a schedule, oldest first")
    runs.add_argument("--limit", type=int, default=50)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``nbserve schedule ...`` on its own (what ``nbserve._cli.main`` does once registered)."""
    parser = argparse.ArgumentParser(prog="nbserve")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NbserveError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return 1
