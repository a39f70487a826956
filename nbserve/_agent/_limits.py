"""Memory and CPU caps for serving processes: cgroups where the host lets us, else a
watchdog and CPU affinity. ``enforcement()`` says which is in force.

- cgroup v2 (a writable unified hierarchy with the memory and cpu controllers) or v1
  (writable ``memory`` and ``cpu`` hierarchies): the kernel enforces ``memory.max`` /
  ``memory.limit_in_bytes`` (an allocation past it is OOM-killed inside the group, never
  elsewhere on the host) and a CFS quota of ``cpus`` cores. The server joins its group
  before it execs, so every worker it forks is in it from birth.
- otherwise: the supervisor's watch loop restarts a server whose tree's RSS exceeds the
  cap, and the tree is pinned to ``ceil(cpus)`` CPUs.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .._settings import knob_row
from .._windows import parse_window
from ..errors import InvalidArgument

CGROUP_ROOT = Path(os.environ.get("NBSERVE_CGROUP_ROOT", "/sys/fs/cgroup"))
GROUP = "nbserve"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
MIN_MEMORY = 64 * 2**20
CFS_PERIOD_US = 100_000


def parse_memory(value: str | int | None) -> int | None:
    """``"512M"``, ``"1.5G"``, ``"1GiB"`` or bytes; at least 64 MiB."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidArgument(f"invalid memory cap {value!r}", hint='e.g. "512M" or "2G"')
    if isinstance(value, (int, float)):
        found = int(value)
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise InvalidArgument(f"invalid memory cap {value!r}", hint='e.g. "512M" or "2G"')
        found = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if found < MIN_MEMORY:
        raise InvalidArgument(f"a memory cap of {found} bytes is too small to start a model server",
                              hint="at least 64M")
    return found


def parse_cpus(value: float | int | str | None) -> float | None:
    if value is None:
        return None
    try:
        found = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"invalid CPU cap {value!r}", hint="a number of cores, e.g. 1 or 0.5") from None
    if isinstance(value, bool) or not 0.05 <= found <= (os.cpu_count() or 1):
        raise InvalidArgument(f"cpus must be from 0.05 to {os.cpu_count()} on this host, got {value!r}")
    return found


def _over_defaults(what: str, value: bool | dict | None, defaults: dict, example: str) -> dict | None:
    """A knobs setting: None/False is off, True the defaults, a mapping the knobs it names over them."""
    if value is None or value is False:
        return None
    if value is True:
        return dict(defaults)
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be true, false or a mapping, got {value!r}", hint=f"e.g. {example}")
    unknown = set(value) - set(defaults)
    if unknown:
        raise InvalidArgument(f"unknown {what} setting(s): {', '.join(sorted(map(str, unknown)))}",
                              hint=", ".join(defaults))
    return {**defaults, **value}


# BentoML's own defaults for @bentoml.api(batchable=True): the dispatcher waits far less than
# max_latency_ms (it regresses the model's batch time); the budget only bounds a request's wait.
BATCHING_DEFAULTS = {"max_batch_size": 100, "max_latency_ms": 60_000}


def parse_batching(value: bool | dict | None) -> dict | None:
    """``None``/``False``: off; ``True``: BentoML's defaults; a mapping with
    ``max_batch_size`` (rows) and/or ``max_latency_ms``: those over the defaults."""
    found = _over_defaults("batching", value, BATCHING_DEFAULTS, "{'max_batch_size': 64, 'max_latency_ms': 20}")
    if found is None:
        return None
    size, latency = found["max_batch_size"], found["max_latency_ms"]
    rows, wait = knob_row("max_batch_size"), knob_row("max_latency_ms")
    if isinstance(size, bool) or not isinstance(size, int) or not rows.within(size):
        raise InvalidArgument(f"max_batch_size must be a whole number of rows {rows.bounds_text}, got {size!r}")
    if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not wait.within(latency):
        raise InvalidArgument(f"max_latency_ms must be {wait.bounds_text}, got {latency!r}",
                              hint="the longest a request may wait for its batch to be answered")
    return {"max_batch_size": size, "max_latency_ms": latency}


AUTOSCALING_DEFAULTS = {"min": 1, "max": 4, "target_ongoing_requests": 2, "downscale_delay": "10m"}


def parse_autoscaling(value: bool | dict | None) -> dict | None:
    """``None``/``False``: a fixed count of replicas; ``True`` or a mapping of ``min``, ``max``,
    ``target_ongoing_requests`` and ``downscale_delay``: Ray Serve's autoscaler, over the defaults."""
    found = _over_defaults("autoscaling", value, AUTOSCALING_DEFAULTS,
                           '{"min": 0, "max": 8, "target_ongoing_requests": 4}')
    if found is None:
        return None
    if not (isinstance(value, dict) and "max" in value) and isinstance(found["min"], int):
        found["max"] = max(found["max"], found["min"], 1)  # min=6 alone is not refused for max's default
    for name in ("min", "max"):
        row = knob_row(name)
        if isinstance(found[name], bool) or not isinstance(found[name], int) or not row.within(found[name]):
            raise InvalidArgument(f"autoscaling {name} must be a whole number of replicas {row.bounds_text}, "
                                  f"got {found[name]!r}")
    if found["max"] < found["min"]:
        raise InvalidArgument(f"autoscaling max ({found['max']}) is below min ({found['min']})")
    target, row = found["target_ongoing_requests"], knob_row("target_ongoing_requests")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= (row.maximum or 0):
        raise InvalidArgument(f"target_ongoing_requests must be a number above 0 and up to {row.maximum}, "
                              f"got {target!r}")
    parse_window(found["downscale_delay"])
    return found


@dataclass(frozen=True)
class Limits:
    memory: int | None = None  # bytes
    cpus: float | None = None

    def __bool__(self) -> bool:
        return self.memory is not None or self.cpus is not None


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


def enforcement() -> str:
    """``cgroup-v2``, ``cgroup-v1`` or ``watchdog``: how caps are enforced on this host."""
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.is_file() and _writable(CGROUP_ROOT):
        available = controllers.read_text().split()
        if "memory" in available and "cpu" in available:
            return "cgroup-v2"
    if _writable(CGROUP_ROOT / "memory") and _writable(CGROUP_ROOT / "cpu"):
        return "cgroup-v1"
    return "watchdog"


class Group:
    """The cgroup(s) of one serving process tree (empty when caps are not kernel-enforced)."""

    def __init__(self, key: str, limits: Limits, mode: str) -> None:
        self.mode = mode
        self.dirs: list[Path] = []
        if not limits or mode == "watchdog":
            return
        if mode == "cgroup-v2":
            parent = CGROUP_ROOT / GROUP
            parent.mkdir(exist_ok=True)
            (parent / "cgroup.subtree_control").write_text("+memory +cpu")
            group = parent / key
            group.mkdir(exist_ok=True)
            if limits.memory is not None:
                (group / "memory.max").write_text(str(limits.memory))
                (group / "memory.swap.max").write_text("0") if (group / "memory.swap.max").exists() else None
            if limits.cpus is not None:
                (group / "cpu.max").write_text(f"{int(limits.cpus * CFS_PERIOD_US)} {CFS_PERIOD_US}")
            self.dirs = [group]
            return
        memory = CGROUP_ROOT / "memory" / GROUP / key
        cpu = CGROUP_ROOT / "cpu" / GROUP / key
        memory.mkdir(parents=True, exist_ok=True)
        cpu.mkdir(parents=True, exist_ok=True)
        if limits.memory is not None:
            (memory / "memory.limit_in_bytes").write_text(str(limits.memory))
            swap = memory / "memory.memsw.limit_in_bytes"
            if swap.exists():
                try:
                    swap.write_text(str(limits.memory))
                except OSError:
                    pass  # swap accounting off: the RAM cap alone
        if limits.cpus is not None:
            (cpu / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (cpu / "cpu.cfs_quota_us").write_text(str(int(limits.cpus * CFS_PERIOD_US)))
        self.dirs = [memory, cpu]

    def wrap(self, command: list[str]) -> list[str]:
        """The command, joining this group before it execs (so its children are born in it)."""
        if not self.dirs:
            return command
        joins = " && ".join(f"echo $$ > {d / 'cgroup.procs'}" for d in self.dirs)
        return ["/bin/sh", "-c", f'{joins} && exec "$@"', "nbserve-limits", *command]

    def oom_kills(self) -> int:
        """Processes the kernel killed in this group for exceeding its memory."""
        for directory in self.dirs:
            for name in ("memory.events", "memory.oom_control"):
                path = directory / name
                if path.is_file():
                    for line in path.read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            return int(value)
        return 0

    def remove(self) -> None:
        for directory in self.dirs:
            try:
                directory.rmdir()  # only possible once every process has left
            except OSError:
                pass


def affinity(cpus: float | None) -> list[int] | None:
    """The CPUs a watchdog-mode tree is pinned to."""
    if cpus is None:
        return None
    available = sorted(os.sched_getaffinity(0))
    return available[: max(1, math.ceil(cpus))]

