"""What does checking predict tokens cost a stable URL?  The same endpoint, auth off vs on.

    .venv/bin/python bench/token_check.py [--duration 2] [--rounds 6]
                                          [--concurrency 1 8] [--load auto|wrk|python]

The process structure of bench/proxy_overhead.py (whose upstream it reuses), so none
steals another's event loop:
  upstream  uvicorn (uvloop + httptools) serving a tiny Starlette JSON app, no work
            per request: the cheapest upstream, where the check's cost shows most
  proxy     one StableEndpoint on uvloop, switched between ``set_auth(None)`` and the
            check the agent wires (``Tokens.check_header`` bound to the deployment, over
            a real Registry in a temp dir), on command, without restarting
  load      wrk (or bench/_common.py's Python generator), keep-alive, every request carrying
            ``Authorization: Bearer <a real predict token>`` in both modes, so only the
            check differs (the proxy drops the header either way; on, it checks it first)

Rounds alternate off/on (ABBA), medians. Also timeit of ``check_header`` alone, and
the proxy's CPU per request, which moves far less with the rest of the machine than p50
does on two shared cores.
Target (printed, never asserted): added p50 <= 50 us.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import secrets
import subprocess
import sys
import time
import timeit
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import _common as c  # noqa: E402
import proxy_overhead as po  # noqa: E402

HOST = c.HOST
DEPLOYMENT = "bench"
BODY = po.BODY
TARGET_US = 50.0


# -- proxy (a child process) --------------------------------------------------------------


def run_proxy(registry_path: str, owner_file: str, upstream_port: int) -> None:
    """A StableEndpoint whose token check is switched by lines on stdin ("on" / "off")."""
    import uvloop

    from nbserve._agent._access import Tokens
    from nbserve._agent._proxy import StableEndpoint, Upstream
    from nbserve._agent._registry import Registry

    tokens = Tokens(Registry(Path(registry_path)), Path(owner_file).read_text().strip())
    check, name = tokens.check_header, DEPLOYMENT

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ep = StableEndpoint(DEPLOYMENT, Upstream(HOST, upstream_port, "1"))
        port = await ep.start(HOST, 0)
        print(port, flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            mode = line.strip()
            # Exactly as Manager._apply_access wires it.
            ep.set_auth((lambda header: check(header, name)) if mode == "on" else None)
            print(f"ok {mode}", flush=True)
        await ep.close()

    uvloop.run(main())


class Proxy:
    def __init__(self, registry_path: Path, owner_file: Path, upstream_port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "proxy", str(registry_path), str(owner_file), str(upstream_port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def set(self, mode: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(mode + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer != f"ok {mode}":
            raise RuntimeError(f"the proxy answered {answer!r}")


# -- load -------------------------------------------------------------------------------------

_WRK_LUA = c._WRK_LUA + 'wrk.headers["Authorization"] = "%s"\n'


def load(tool: str, port: int, concurrency: int, seconds: float, header: str, workdir: Path) -> dict[str, float]:
    """One closed-loop run from a separate process; rps, p50_ms, p99_ms, requests, errors."""
    if tool == "wrk":
        script = workdir / "post-auth.lua"
        if not script.exists():
            script.write_text(_WRK_LUA % (BODY.decode(), header))
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
             "--latency", "-s", str(script), f"http://{HOST}:{port}/predict"],
            capture_output=True, text=True, timeout=seconds + 60, env=c.child_env(),
        )
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("NBSERVE_BENCH ")), None)
        if line is None:
            raise RuntimeError(f"wrk failed: {out.stdout[-800:]} {out.stderr[-800:]}")
        raw = json.loads(line.split(" ", 1)[1])
        return {"requests": raw["requests"], "rps": raw["requests"] / (raw["duration_us"] / 1e6),
                "p50_ms": raw["p50_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
                "errors": sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))}
    body_file = workdir / "body.json"
    body_file.write_bytes(BODY)
    out = subprocess.run(  # bench/_common.py's generator, with the Authorization header
        [sys.executable, c.__file__, "load", HOST, str(port), "/predict", str(concurrency), str(seconds),
         str(body_file), f"Authorization: {header}"],
        capture_output=True, text=True, timeout=seconds + 60, check=True, env=c.child_env(),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- measuring ---------------------------------------------------------------------------------


def status_of(port: int, header: str | None) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers["Authorization"] = header
        conn.request("POST", "/predict", body=BODY, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def microbench(tokens: Any, secret: str, owner: str) -> list[tuple[str, float, str]]:
    """ns per check_header call, best of 5 timeit repeats, per kind of header."""
    token_id = secret.split("_")[1]
    check, name = tokens.check_header, DEPLOYMENT
    wired = lambda header: check(header, name)  # noqa: E731 - as Manager._apply_access wires it
    cases = [
        ("valid predict token", f"Bearer {secret}".encode()),
        ("wrong secret, known id", f"Bearer nbs_{token_id}_{secrets.token_urlsafe(32)}".encode()),
        ("unknown token id", f"Bearer nbs_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}".encode()),
        ("not a token (owner compare)", f"Bearer {secrets.token_urlsafe(32)}".encode()),
        ("owner token", f"Bearer {owner}".encode()),
        ("missing header", None),
    ]
    rows = []
    for label, header in cases:
        answer = wired(header)
        timer = timeit.Timer(lambda h=header: wired(h))
        number, _ = timer.autorange()
        best = min(timer.repeat(5, number)) / number
        rows.append((label, best * 1e9, "allowed" if answer is None else str(answer[0])))
    return rows


# -- orchestration ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    from nbserve._agent._access import Tokens
    from nbserve._agent._registry import Registry

    tool = c.load_tool(args.load)
    with c.scratch("token-check") as root:
        marker = str(root)  # in NBSERVE_HOME, so in every child's environment
        procs: list[subprocess.Popen[Any]] = []
        try:
            print(c.machine_line())
            owner = secrets.token_urlsafe(32)
            owner_file = root / "owner-token"
            owner_file.write_text(owner)
            registry = Registry(root / "registry.sqlite")
            tokens = Tokens(registry, owner)
            secret, _row = tokens.create("bench-predict", "predict", deployments=[DEPLOYMENT])
            tokens.create("other-predict", "predict", deployments=["other"])  # a table of more than one
            header = f"Bearer {secret}"

            print("\nTokens.check_header alone (timeit, best of 5, as the endpoint calls it):")
            micro = microbench(tokens, secret, owner)
            for label, ns, answer in micro:
                print(f"  {label:<30} {ns:>8.0f} ns  -> {answer}")
            registry.close()

            upstream, up_port = po.start_upstream(0.0)
            procs.append(upstream)
            proxy = Proxy(root / "registry.sqlite", owner_file, up_port)
            procs.append(proxy.proc)
            proxy.set("on")
            checks = (status_of(proxy.port, header), status_of(proxy.port, None),
                      status_of(proxy.port, "Bearer nbs_000000000000_wrong"))
            proxy.set("off")
            open_status = status_of(proxy.port, None)
            print(f"\nsanity: auth on -> with the token {checks[0]}, without {checks[1]}, wrong {checks[2]}; "
                  f"auth off -> without a token {open_status}")
            if checks != (200, 401, 401) or open_status != 200:
                raise RuntimeError("the endpoint does not check tokens as expected")
            print(f"load: {c.load_tool_description(tool)}; {args.duration:g} s measured after "
                  f"{args.warmup:g} s unmeasured, per run")

            results: dict[tuple[int, str], list[dict[str, float]]] = {}
            for conc in args.concurrency:
                for mode in ("off", "on"):  # warm both paths at this concurrency
                    proxy.set(mode)
                    load(tool, proxy.port, conc, args.warmup, header, root)
                for rnd in range(args.rounds):
                    order = ("off", "on") if rnd % 2 == 0 else ("on", "off")
                    for mode in order:
                        proxy.set(mode)
                        load(tool, proxy.port, conc, args.warmup, header, root)
                        cpu0, busy0, wall0 = po.cpu_seconds(proxy.proc.pid), c.busy_seconds(), time.monotonic()
                        mine0 = po.cpu_seconds(upstream.pid)
                        kids0 = os.times()
                        out = load(tool, proxy.port, conc, args.duration, header, root)
                        kids1 = os.times()
                        wall = time.monotonic() - wall0
                        proxy_cpu = po.cpu_seconds(proxy.proc.pid) - cpu0
                        load_cpu = (kids1.children_user - kids0.children_user) + (
                            kids1.children_system - kids0.children_system)
                        mine = proxy_cpu + po.cpu_seconds(upstream.pid) - mine0 + load_cpu
                        out["proxy_us"] = proxy_cpu / max(1, out["requests"]) * 1e6
                        out["others_cores"] = max(0.0, c.busy_seconds() - busy0 - mine) / wall
                        results.setdefault((conc, mode), []).append(out)
                        print(f"  c={conc} round {rnd + 1} auth {mode:<3} {out['rps']:8.0f} rps  "
                              f"p50 {out['p50_ms'] * 1000:7.1f} us  p99 {out['p99_ms'] * 1000:7.1f} us  "
                              f"proxy CPU {out['proxy_us']:5.1f} us/req  errors {int(out['errors'])}  "
                              f"(others used {out['others_cores']:.2f} cores)", flush=True)
            report(args, tool, results)
        finally:
            for proc in reversed(procs):
                po.stop(proc)
            left = c.reap(marker)
            print(f"processes left behind: {', '.join(left) if left else 'none'}")


def report(args: argparse.Namespace, tool: str, results: dict[tuple[int, str], list[dict[str, float]]]) -> None:
    def med(conc: int, mode: str, key: str) -> float:
        return c.median([r[key] for r in results[(conc, mode)]])

    print(f"\ntoken check on a stable URL, {os.cpu_count()} CPUs, upstream with no work, keep-alive POST /predict, "
          f"medians of {args.rounds} alternating {args.duration:g} s runs ({tool})")
    print("| conc | auth | rps | p50 us | p99 us | proxy CPU us/req | errors | others |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for conc in args.concurrency:
        for mode in ("off", "on"):
            errors = sum(int(r["errors"]) for r in results[(conc, mode)])
            print(f"| {conc} | {mode} | {med(conc, mode, 'rps'):.0f} | {med(conc, mode, 'p50_ms') * 1000:.1f} | "
                  f"{med(conc, mode, 'p99_ms') * 1000:.1f} | {med(conc, mode, 'proxy_us'):.1f} | {errors} | "
                  f"{med(conc, mode, 'others_cores'):.2f} |")
    print()
    for conc in args.concurrency:
        added = (med(conc, "on", "p50_ms") - med(conc, "off", "p50_ms")) * 1000
        pairs = [(on["p50_ms"] - off["p50_ms"]) * 1000
                 for off, on in zip(results[(conc, "off")], results[(conc, "on")], strict=True)]
        cpu = med(conc, "on", "proxy_us") - med(conc, "off", "proxy_us")
        print(f"c={conc}: added p50 {added:+.1f} us (per round: {', '.join(f'{p:+.0f}' for p in pairs)}; "
              f"their median {c.median(pairs):+.1f}), "
              f"throughput {med(conc, 'on', 'rps') / med(conc, 'off', 'rps'):.3f}x, proxy CPU {cpu:+.1f} us/req; "
              f"target <= {TARGET_US:g} us: {'met' if added <= TARGET_US else 'MISSED'}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "proxy":
        run_proxy(*sys.argv[2:4], int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=2.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    ap.add_argument("--rounds", type=int, default=6, help="off/on run pairs per concurrency")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--load", choices=["auto", "wrk", "python"], default="auto",
                    help="load generator: wrk if installed (auto), or the Python one")
    run(ap.parse_args())


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
