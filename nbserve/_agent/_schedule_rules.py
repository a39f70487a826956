"""What a schedule may be: its cron, time zone, notebook, kernel and parameters, checked at add
time, and when it is due. Plain functions, so each rule is testable without an agent."""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import InvalidArgument

DEFAULT_TIMEOUT = 1800.0
MAX_TIMEOUT = 7 * 24 * 3600.0
MISSED_POLICIES = ("skip", "run_once")
RUN_STATUSES = ("running", "succeeded", "failed", "timed_out", "skipped")
TRIGGERS = ("cron", "manual", "missed")
# The kernel of a notebook without kernelspec metadata: the Python the agent runs in
# (jupyter_client's NATIVE_KERNEL_NAME). Schedules stored before they had a kernel ran with it too.
DEFAULT_KERNEL = "python3"
_KERNEL_NAME = re.compile(r"[a-zA-Z0-9._-]{1,200}")



def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def iso_time(when: _dt.datetime | None) -> str | None:
    return when.astimezone(_dt.UTC).isoformat(timespec="seconds") if when is not None else None


def parse_time(text: str | None) -> _dt.datetime | None:
    return _dt.datetime.fromisoformat(text) if text else None


def aware(when: _dt.datetime) -> _dt.datetime:
    """A naive datetime is taken as UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=_dt.UTC)


# -- validation -------------------------------------------------------------------------


def check_cron(expr: str) -> str:
    from croniter import croniter

    expr = " ".join(str(expr).split())
    fields = expr.split(" ")
    if not expr or not (expr.startswith("@") or len(fields) == 5) or not croniter.is_valid(expr):
        raise InvalidArgument(
            f"invalid cron expression {expr!r}",
            hint="five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *' "
            "(every day at 03:00), '*/15 * * * *', '0 6 * * 1-5'; or @hourly, @daily, @weekly",
        )
    return expr


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidArgument(
            f"unknown time zone {name!r}",
            hint="use an IANA time zone name such as 'UTC', 'Europe/Paris' or 'America/New_York'",
        ) from None


def check_notebook(path: str) -> tuple[Path, str | None]:
    """The notebook's resolved path and the kernel its kernelspec metadata names (or None)."""
    import nbformat

    notebook = Path(str(path)).expanduser()
    if not notebook.is_absolute():
        raise InvalidArgument(
            f"the notebook path must be absolute, got {path!r}",
            hint="the Python API and the CLI resolve relative paths for you",
        )
    if not notebook.is_file():
        raise InvalidArgument(f"no notebook at {notebook}", hint="check the path (on the agent's host)")
    try:
        nb = nbformat.read(notebook, as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # noqa: BLE001 - JSON, nbformat and validation errors alike
        raise InvalidArgument(
            f"{notebook} is not a valid notebook: {type(exc).__name__}: {str(exc)[:300]}",
            hint="open and save it in Jupyter, or check it with `jupyter nbconvert --to notebook`",
        ) from None
    kernel = (nb.metadata.get("kernelspec") or {}).get("name")
    return notebook.resolve(), str(kernel) if kernel else None


def kernel_spec(name: str, problem: str | None = None) -> Any:
    """The Jupyter kernelspec called ``name`` on this host (the agent runs the notebook), or an
    ``InvalidArgument`` that says ``problem`` and names the kernels there are."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    try:
        return manager.get_kernel_spec(name)
    except NoSuchKernel:
        pass
    except Exception as exc:  # noqa: BLE001 - a kernel.json that does not parse, a provisioner missing
        raise InvalidArgument(f"the kernel {name!r} on the agent is broken: {type(exc).__name__}: {exc}"[:400],
                              hint="check it with `jupyter kernelspec list` on the agent's host") from None
    known = sorted(manager.find_kernel_specs())
    raise InvalidArgument(
        f"{problem or f'no Jupyter kernel named {name!r} on the agent'}; "
        f"its kernels: {', '.join(known) or 'none'}",
        hint="pass one of them with --kernel (kernel= in Python), or install the kernel on the agent's host "
             "(`jupyter kernelspec list` there shows what it has)",
        kernel=name, kernels=known,
    )


def check_kernel(requested: str | None, notebook_kernel: str | None) -> str:
    """The kernel a schedule's runs use: ``requested``, else the notebook's own (its kernelspec
    metadata), else DEFAULT_KERNEL. Refused unless the agent has it."""
    if requested is not None:
        name = requested.strip() if isinstance(requested, str) else ""
        if not _KERNEL_NAME.fullmatch(name):  # jupyter_client's rule; also keeps paths out
            raise InvalidArgument(f"kernel must be a kernel name such as 'python3', got {requested!r}",
                                  hint="letters, digits, '.', '-' and '_' (see `jupyter kernelspec list`)")
        problem = f"no Jupyter kernel named {name!r} on the agent"
    elif notebook_kernel:
        name = notebook_kernel
        problem = f"the notebook's kernel {name!r} (its kernelspec metadata) is not installed on the agent"
    else:
        name = DEFAULT_KERNEL
        problem = f"the notebook names no kernel and the default one, {name!r}, is not installed on the agent"
    kernel_spec(name, problem)
    return name


def check_parameters(params: dict[str, Any] | None, deployment: str) -> dict[str, Any]:
    params = dict(params or {})
    for key in params:
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidArgument(
                f"parameter name {key!r} is not a Python identifier",
                hint="papermill assigns each parameter as a variable in the notebook",
            )
    if "nbserve_scheduled_run" in params:
        raise InvalidArgument("nbserve_scheduled_run is set by the scheduler (True in every run)")
    if params.get("deployment_name", deployment) != deployment:
        raise InvalidArgument(
            f"deployment_name={params['deployment_name']!r} differs from the schedule's deployment {deployment!r}",
            hint="the deployment a schedule retrains is its --name; it is passed as deployment_name",
        )
    try:
        json.dumps(params)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"parameters must be JSON values: {exc}") from None
    return params


def next_due(cron: str, tz: str, after: _dt.datetime) -> _dt.datetime:
    """The first due time strictly after ``after``, as an aware UTC datetime."""
    from croniter import croniter

    local = aware(after).astimezone(ZoneInfo(tz))
    return croniter(cron, local).get_next(_dt.datetime).astimezone(_dt.UTC)


def latest_due(cron: str, tz: str, at: _dt.datetime) -> _dt.datetime:
    """The last due time at or before ``at`` (UTC)."""
    from croniter import croniter

    local = (aware(at) + _dt.timedelta(seconds=1)).astimezone(ZoneInfo(tz)).replace(microsecond=0)
    return croniter(cron, local).get_prev(_dt.datetime).astimezone(_dt.UTC)
