"""The ``nbserve`` command: a thin mapping of subcommands onto the Python API.

nbserve errors print as ``error: ...`` plus a hint and exit 1, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from ._cli_output import table
from ._settings import ENGINE_ALIASES, ENGINES, add_serving_flags, serving_arguments
from .errors import NbserveError


def _cmd_list(args: argparse.Namespace) -> int:
    from ._api import deployments

    rows = [
        {"name": d.name, "status": d.status, "version": d.version, "versions": len(d.versions), "url": d.url}
        for d in deployments(target=args.target)
    ]
    print(table(rows, ["name", "status", "version", "versions", "url"]))
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from ._api import get

    frame = get(args.name, target=args.target).history()
    if frame.empty:
        print("(no versions)")
        return 0
    columns = ["status", "live", "created_at", "created_by", "model", "runtime", "notebook", "cell", "error"]
    print(frame[[c for c in columns if c in frame]].to_string())
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from ._api import get

    dep = get(args.name, target=args.target).rollback(to=args.to)
    print(f"{dep.name}: v{dep.version} is live at {dep.url}")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from ._api import get

    dep = get(args.name, target=args.target).stop()
    print(f"{dep.name}: stopped (the stable URL {dep.url} answers 503 until `nbserve start {dep.name}`)")
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    from ._api import get

    dep = get(args.name, target=args.target).start()
    print(f"{dep.name}: v{dep.version} is serving at {dep.url}")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from ._api import get

    dep = get(args.name, target=args.target).promote()
    print(f"{dep.name}: v{dep.version} is live at {dep.url}")
    return 0


def _cmd_abort(args: argparse.Namespace) -> int:
    from ._api import get

    dep = get(args.name, target=args.target).abort()
    print(f"{dep.name}: rollout ended; v{dep.version} serves every request")
    return 0


def _cmd_canary(args: argparse.Namespace) -> int:
    from ._api import get

    dep = get(args.name, target=args.target)
    if args.percent is not None:
        dep.set_canary(args.percent)
    print(json.dumps(dep.rollout(), indent=2, default=str))
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    from ._api import get

    print(get(args.name, target=args.target).logs(version=args.version, lines=args.lines))
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    from ._connection import connect

    client = connect(args.target)
    path = f"/v1/deployments/{args.name}/events" if args.name else "/v1/events"
    events = client.get(path, params={"limit": args.limit})
    print(table(events, ["id", "ts", "deployment", "version", "kind", "message"]))
    return 0


def _cmd_envs(args: argparse.Namespace) -> int:
    from ._admin import environments, prune_environments

    if args.action == "prune":
        done = prune_environments(target=args.target)
        for env in done["removed"]:
            size = f" ({env['bytes'] / 2**20:.0f} MiB)" if env.get("bytes") else ""
            print(f"removed {env['environment']}{size}")
        for env in done["kept"]:
            needs = ", ".join(f"{v['deployment']} v{v['version']}" for v in env["versions"])
            print(f"kept {env['environment']}: {needs} may be rolled back to or started with it")
        return 0
    rows = [{**e, "python": e.get("python") or "-", "packages": ", ".join(e.get("packages") or []) or "-",
             "disk": (f"{e['bytes'] / 2**20:.0f}M own / {e['total_bytes'] / 2**20:.0f}M"
                      if e.get("bytes") is not None and e.get("total_bytes") is not None else "-"),
             "versions": ", ".join(f"{v['deployment']} v{v['version']}" + ("*" if v["running"] else "")
                                   for v in e.get("versions") or []) or "(none: prune removes it)"}
            for e in environments(target=args.target)]
    print(table(rows, ["environment", "python", "disk", "versions", "packages"]))
    return 0


def _engine_text(r: Any) -> str:
    """``local``; on Ray its replicas and nodes, and the autoscaler's bounds: ``ray 2r/2n 0-4``; in a
    shared model server each version's model, loaded or not, its memory and requests:
    ``shared v3:loaded/4M/120r``."""
    engine = r.get("engine") or "local"
    replicas = r.get("replicas") or []
    models = r.get("models") or []
    if models:
        engine += " " + " ".join(
            f"v{m['version']}:" + (f"loaded/{(m['memory_bytes'] or 0) / 2**20:.0f}M/{m['requests']}r" if m["loaded"]
                                   else "unloaded") for m in models)
    if "ray" not in engine:
        return engine
    text = f"{engine} {len(replicas)}r/{len({x['node'] for x in replicas})}n"
    scaling = r.get("autoscaling")
    return text + (f" {scaling['min']}-{scaling['max']}" if isinstance(scaling, dict) else "")


def _cmd_top(args: argparse.Namespace) -> int:
    import time as _time

    from ._api import top

    while True:
        frame = top(target=args.target)
        rows = [] if frame.empty else [
            {**r, "deployment": name, "version": f"v{r['live_version']}" if r["live_version"] else "-",
             "cpu": f"{r['cpu_percent']:.0f}%", "rss": f"{r['rss_bytes'] / 2**20:.0f}M",
             "caps": " ".join(x for x in (f"{r['memory_cap'] / 2**20:.0f}M" if r["memory_cap"] else "",
                                          f"{r['cpus_cap']:g}cpu" if r["cpus_cap"] else "") if x)
             + (f" ({r['enforcement']})" if r["enforcement"] else ""),
             "idle": "-" if r["idle_seconds"] is None else f"{r['idle_seconds']:.0f}s",
             "idle_timeout": r["idle_timeout"] or "-",
             "batching": (f"{r['batching']['max_batch_size']}/{r['batching']['max_latency_ms']:g}ms"
                          if isinstance(r.get("batching"), dict) else "-"),
             "cold_start": "-" if r.get("last_cold_start_seconds") is None else f"{r['last_cold_start_seconds']:.1f}s",
             "env": ",".join(r.get("environments") or []) or "-",
             "engine": _engine_text(r)}
            for name, r in frame.iterrows()
        ]
        if not args.once:
            print("\033[2J\033[H", end="")
        print(table(rows, ["deployment", "state", "version", "servers", "workers", "cpu", "rss", "processes",
                            "caps", "batching", "idle", "idle_timeout", "cold_start", "held", "env", "engine"]))
        if args.once:
            return 0
        _time.sleep(args.interval)


def _cmd_scale(args: argparse.Namespace) -> int:
    from ._api import get

    dep = get(args.name, target=args.target).scale(**serving_arguments(args), engine=args.engine)
    print(f"{dep.name}: {dep.status}, v{dep.version}")
    return 0


def _cmd_agent(args: argparse.Namespace) -> int:
    from ._config import Home
    from ._local import find_agent, start_agent, stop_agent

    home = Home.resolve(args.home)
    if args.action == "run":
        from ._agent._main import run

        from ._agent._monitor import MonitorSettings

        settings = MonitorSettings.from_env()
        if args.metrics_retention_days is not None:
            settings.retention_days = args.metrics_retention_days
        if args.max_samples is not None:
            settings.max_samples = args.max_samples
        if args.metrics_max_mb is not None:
            settings.max_megabytes = args.metrics_max_mb
        from ._agent._main import Exposure

        exposure = Exposure(tls_cert=args.tls_cert, tls_key=args.tls_key, insecure=args.insecure,
                            predict_auth=args.predict_auth, public_host=args.public_host)
        # where versions' own environments get their packages: read by _agent/_envs.py
        if args.find_links:
            os.environ["NBSERVE_FIND_LINKS"] = os.path.abspath(args.find_links)
        if args.offline:
            os.environ["NBSERVE_OFFLINE"] = "1"
        ray = None
        # A Ray cluster makes the Ray engine available (deploy(engine="ray")); --engine ray makes it
        # the default. RAY_ADDRESS is read only then: a shell's Ray setting alone joins no cluster.
        address = (args.ray_address or os.environ.get("NBSERVE_RAY_ADDRESS")
                   or (os.environ.get("RAY_ADDRESS") if args.engine == "ray" else None))
        if args.engine == "ray" and not address:
            print("nbserve agent: --engine ray needs --ray-address HOST:PORT (or RAY_ADDRESS)", file=sys.stderr)
            return 2
        if address:
            from ._agent._main import RayTarget

            ray = RayTarget(address, args.ray_http_port, default=args.engine == "ray")
        from ._agent._limits import parse_memory
        from ._agent._main import SharedTarget

        try:
            shared = SharedTarget(parse_memory(args.shared_memory), args.shared_models or None,
                                  default=args.engine == "shared")
        except NbserveError as exc:
            print(f"nbserve agent: --shared-memory: {exc.message}", file=sys.stderr)
            return 2
        return run(home, host=args.host, port=args.port, monitor=settings, exposure=exposure,
                   memory_budget=args.memory_budget, ray=ray, shared=shared)
    if args.action == "init-tls":
        from ._cli_access import init_tls

        return init_tls(args)
    if args.action == "start":
        options = _run_options(args)
        if options and find_agent(home) is not None:
            print(f"error: an agent already runs for {home.root}; its options stay as they are",
                  file=sys.stderr)
            print("hint: `nbserve agent stop` first, then start it with the new options", file=sys.stderr)
            return 1
        info = start_agent(home, options)
        print(f"agent running: pid {info.pid} at {info.url} (home {home.root})")
        return 0
    if args.action == "stop":
        stopped = stop_agent(home)
        print("agent stopped" if stopped else "no agent was running")
        return 0
    info = find_agent(home)
    if info is None:
        print(f"no agent running (home {home.root})")
        return 1
    print(json.dumps({"pid": info.pid, "url": info.url, "home": str(home.root)}, indent=2))
    return 0


_LOW_SPACE_BYTES = 100 * 1024**2


def _cmd_doctor(args: argparse.Namespace) -> int:
    """Check a home without starting (or needing) an agent: SQLite's integrity_check of the
    registry and the metrics file, free space, the agent, the last refused start."""
    from ._agent._main import read_refusal
    from ._agent._registry import RECOVERY_DOC, check_database, damaged
    from ._agent._storage import free_bytes, size_text
    from ._config import Home
    from ._local import find_agent

    home = Home.resolve(args.home)
    problems = 0

    def line(what: str, state: str, detail: str = "") -> None:
        print(f"{what:<16} {state}{'  ' + detail if detail else ''}")

    for path in (home.registry, home.metrics):
        if not path.exists():
            line(path.name, "absent", "(made at the first start)")
            continue
        found = check_database(path)
        if not found:
            line(path.name, "ok", f"(integrity_check, {size_text(path.stat().st_size)})")
            continue
        problems += 1
        line(path.name, "DAMAGED", "; ".join(found[:3]))
        if path == home.registry:
            print(f"  hint: {damaged(path, found[0]).hint}")
        else:
            print(f"  hint: the next agent start moves it aside and starts a new one; to keep its history, "
                  f"stop the agent and recover it first, see {RECOVERY_DOC}")
    for aside in sorted(home.root.glob("metrics.sqlite.damaged-*[0-9]")):
        line("set aside", aside.name, "(a damaged metrics file, kept for recovery)")
    free = free_bytes(home.root)
    low = free is not None and free < _LOW_SPACE_BYTES
    problems += low
    line("disk", "LOW" if low else "ok", f"{size_text(free)} free on the disk holding {home.root}")
    agent = find_agent(home)
    if agent is not None:
        line("agent", "running", f"pid {agent.pid} at {agent.url}")
    else:
        refusal = read_refusal(home)
        line("agent", "not running", f"(its last start was refused: {refusal['message']})" if refusal else "")
    return 1 if problems else 0


# `agent run` flags that `agent start` passes on to the agent it starts: (dest, flag, default)
_RUN_FLAGS = (("host", "--host", "127.0.0.1"), ("port", "--port", 0),
              ("metrics_retention_days", "--metrics-retention-days", None), ("max_samples", "--max-samples", None),
              ("metrics_max_mb", "--metrics-max-mb", None), ("memory_budget", "--memory-budget", None),
              ("tls_cert", "--tls-cert", None), ("tls_key", "--tls-key", None), ("insecure", "--insecure", False),
              ("predict_auth", "--predict-auth", None), ("public_host", "--public-host", None),
              ("find_links", "--find-links", None), ("offline", "--offline", False),
              ("engine", "--engine", "local"), ("ray_address", "--ray-address", None),
              ("ray_http_port", "--ray-http-port", 8000), ("shared_memory", "--shared-memory", None),
              ("shared_models", "--shared-models", None))


def _run_options(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for dest, flag, default in _RUN_FLAGS:
        value = getattr(args, dest)
        if value == default:
            continue
        if dest in ("tls_cert", "tls_key", "find_links"):
            value = os.path.abspath(value)  # the agent runs in NBSERVE_HOME, not here
        out += [flag] if value is True else [flag, str(value)]
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbserve", description="Deploy, version and watch notebook models (BentoML)."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Any, help_text: str, *, named: bool | None = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if named:
            p.add_argument("name", help="deployment name")
        elif named is None:
            p.add_argument("name", nargs="?", help="deployment name (default: all)")
        p.add_argument("--target", default=None, help="agent to talk to (default: local)")
        p.set_defaults(func=func)
        return p

    add("list", _cmd_list, "list deployments", named=False)
    add("history", _cmd_history, "versions of a deployment")
    rollback = add("rollback", _cmd_rollback, "point the stable URL at an earlier version")
    rollback.add_argument("--to", type=int, default=None, help="version number (default: the previous)")
    add("stop", _cmd_stop, "stop a deployment's serving processes")
    add("start", _cmd_start, "start a stopped deployment again")
    add("promote", _cmd_promote, "make the canary (or shadow) version live")
    add("abort", _cmd_abort, "end the canary (or shadow); the live version takes all traffic")
    canary = add("canary", _cmd_canary, "show the rollout under way (and change the canary's share)")
    canary.add_argument("percent", nargs="?", type=float, default=None, help="new share in percent")
    logs = add("logs", _cmd_logs, "server log of a version")
    logs.add_argument("--version", type=int, default=None, help="version (default: live)")
    logs.add_argument("--lines", type=int, default=200)
    top = add("top", _cmd_top, "every deployment's state, workers, CPU, memory and caps, refreshed", named=False)
    top.add_argument("--once", action="store_true", help="print once and exit")
    top.add_argument("--interval", type=float, default=2.0)
    scale = add("scale", _cmd_scale, "change workers, caps or the idle timeout, or move the live version to "
                "another engine, without dropping requests")
    add_serving_flags(scale)
    scale.add_argument("--engine", choices=(*ENGINES, *ENGINE_ALIASES),
                       help="move the live version: dedicated (local), shared or ray")
    envs = add("envs", _cmd_envs, "the environments versions run in where the agent's own differs (list), "
               "and removing those no version needs (prune)", named=False)
    envs.add_argument("action", nargs="?", choices=("list", "prune"), default="list")
    events = add("events", _cmd_events, "what happened, newest last", named=None)
    events.add_argument("--limit", type=int, default=50)
    from ._cli_schedule import register as register_schedule

    register_schedule(sub)
    from ._cli_access import register as register_access

    register_access(sub)
    from ._export import register as register_export
    from ._export_ray import register as register_export_ray

    register_export_ray(register_export(sub))

    doctor = sub.add_parser("doctor", help="check the registry, metrics file and disk of a home (no agent needed)",
                            description="Run SQLite's integrity_check on registry.sqlite and metrics.sqlite, "
                                        "report free space and the agent; exit 1 if anything is wrong.")
    doctor.add_argument("--home", default=None, help="NBSERVE_HOME (default: ~/.nbserve)")
    doctor.set_defaults(func=_cmd_doctor)

    agent = sub.add_parser("agent", help="run or control the local agent")
    agent.add_argument("action", choices=["run", "start", "stop", "status", "init-tls"],
                       help="run: in the foreground; start: in the background; "
                            "init-tls: make a self-signed certificate for this host")
    agent.add_argument("--home", default=None, help="NBSERVE_HOME (default: ~/.nbserve)")
    agent.add_argument("--host", default="127.0.0.1", help="address to listen on (run and start)")
    agent.add_argument("--port", type=int, default=0, help="port (run and start; default: any free)")
    agent.add_argument("--metrics-retention-days", type=float, default=None,
                       help="keep latency panes, samples and resources this long (run and start; default 14)")
    agent.add_argument("--max-samples", type=int, default=None,
                       help="sampled requests kept per deployment (run and start; default 100000)")
    agent.add_argument("--metrics-max-mb", type=float, default=None,
                       help="size budget of metrics.sqlite; oldest samples go first (run and start; default 1024)")
    agent.add_argument("--memory-budget", default=None,
                       help='memory for every server together, e.g. "8G": past it the least recently used '
                            "deployments are scaled to zero (run and start)")
    agent.add_argument("--find-links", default=None,
                       help="a wheel directory versions' own environments install from, beside the index uv "
                            "is set up for (run and start)")
    agent.add_argument("--offline", action="store_true",
                       help="versions' own environments install only what uv's cache or --find-links holds "
                            "(run and start)")
    agent.add_argument("--engine", "--default-engine", dest="engine", choices=["local", "shared", "ray"],
                       default="local",
                       help="where versions run unless their deploy says: local bentoml serve processes, "
                            "shared model servers (docs/shared.md), or the Ray Serve cluster of --ray-address "
                            "(run and start; docs/ray.md)")
    agent.add_argument("--shared-memory", default=None,
                       help='memory the loaded models of one shared model server may take, e.g. "2G": past it '
                            "the least recently used idle model is unloaded (run and start)")
    agent.add_argument("--shared-models", type=int, default=None,
                       help="models one shared model server keeps loaded at once (run and start)")
    agent.add_argument("--ray-address", default=None,
                       help="a Ray cluster's address, HOST:PORT: versions deployed with engine=\"ray\" run on it "
                            "(default: NBSERVE_RAY_ADDRESS; with --engine ray, RAY_ADDRESS too)")
    agent.add_argument("--ray-http-port", type=int, default=8000,
                       help="Ray Serve's HTTP port on this host, bound to 127.0.0.1 (with a Ray cluster)")
    agent.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate (run and start)")
    agent.add_argument("--tls-key", default=None, help="... and this private key (run and start)")
    agent.add_argument("--insecure", action="store_true",
                       help="allow listening beyond loopback without TLS (run and start; not advised)")
    agent.add_argument("--predict-auth", choices=["token", "open"], default=None,
                       help="stable URLs need a predict token by default (token) or not (open); "
                            "default: open only on loopback without TLS (run and start)")
    agent.add_argument("--public-host", default=None,
                       help="host name in stable URLs (run and start; default: --host, or this host's name)")
    agent.add_argument("--tls-host", action="append", default=None,
                       help="init-tls: a name or address the certificate is for (repeatable; "
                            "default: this host's names)")
    agent.add_argument("--out", default=None, help="init-tls: directory (default: NBSERVE_HOME/tls)")
    agent.add_argument("--force", action="store_true", help="init-tls: replace an existing pair")
    agent.set_defaults(func=_cmd_agent)
    return parser


def _version() -> str:
    from ._version import __version__

    return f"nbserve {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NbserveError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
