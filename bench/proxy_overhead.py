"""What does the stable-endpoint proxy cost?  Direct vs through StableEndpoint.

    .venv/bin/python bench/proxy_overhead.py [--duration 3] [--rounds 3]
                                             [--work-ms 0 3] [--concurrency 1 8]
                                             [--versus OTHER_CHECKOUT]

Three kinds of process, so none steals the others' event loop:
  upstream  uvicorn (uvloop + httptools) serving a tiny Starlette JSON app; with
            --work-ms it burns that much CPU per request, to stand in for a
            model server (BentoML costs ~3 ms CPU per request)
  proxy     one StableEndpoint on uvloop, forwarding to the upstream
  load      keep-alive load generator (uvloop + raw protocols + httptools), N
            connections each sending one POST /predict after another

For every work setting and concurrency it measures requests/s and p50/p99
latency hitting the upstream directly and through the proxy (alternating,
--rounds times, reporting medians, so drift on a shared machine hits both
sides alike), plus the proxy process's CPU time per request, and prints a
table with the ratios.
Targets: throughput >= 0.85x direct, <= 1 ms added p50, proxy CPU well under
300 us per request.

With --versus, a second proxy process runs the StableEndpoint of another checkout
(e.g. main's, to weigh a change to the proxy) against the same upstream, measured in
the same rounds (the two proxies take turns going first), and a second table
compares the two.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'


# -- upstream ------------------------------------------------------------------------


def run_upstream(fd: int, work_ms: float) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    work_s = work_ms / 1000

    async def predict(request: Request) -> JSONResponse:
        payload = await request.json()
        if work_s:
            end = time.thread_time() + work_s  # CPU time, like a model's forward pass
            while time.thread_time() < end:
                pass
        return JSONResponse({"predictions": [0] * len(payload["inputs"])})

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", lifespan="off", log_level="warning", access_log=False
    )
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


# -- proxy ---------------------------------------------------------------------------


def run_proxy(upstream_port: int, root: str) -> None:
    import uvloop

    sys.path.insert(0, root)
    import nbserve
    from nbserve._agent._proxy import StableEndpoint, Upstream

    if Path(nbserve.__file__).resolve().parent.parent != Path(root).resolve():
        raise SystemExit(f"proxy: nbserve came from {nbserve.__file__}, not from {root}")

    async def main() -> None:
        ep = StableEndpoint("bench", Upstream(HOST, upstream_port, "1"))
        port = await ep.start(HOST, 0)
        print(port, flush=True)
        # Serve until the parent closes our stdin.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await ep.close()

    uvloop.run(main())


# -- load ----------------------------------------------------------------------------


def run_load(port: int, concurrency: int, duration: float, warmup: float) -> None:
    import httptools
    import uvloop

    request = (
        b"POST /predict HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (HOST.encode(), port, len(BODY), BODY)
    )

    class Client(asyncio.Protocol):
        """Sends one request, waits for its response, repeats (a keep-alive client)."""

        def __init__(self, bench: Bench) -> None:
            self.bench = bench
            self.parser = httptools.HttpResponseParser(self)
            self.sent_ns = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.send()

        def send(self) -> None:
            self.sent_ns = time.perf_counter_ns()
            self.transport.write(request)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            bench = self.bench
            if self.parser.get_status_code() != 200:
                bench.errors += 1
            if bench.measuring:
                bench.latencies.append(time.perf_counter_ns() - self.sent_ns)
            if not bench.stopped:
                self.send()

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.bench.stopped:
                self.bench.errors += 1

    class Bench:
        def __init__(self) -> None:
            self.latencies: list[int] = []
            self.errors = 0
            self.measuring = False
            self.stopped = False

    async def main() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        bench = Bench()
        transports = [
            (await loop.create_connection(lambda: Client(bench), HOST, port))[0]
            for _ in range(concurrency)
        ]
        await asyncio.sleep(warmup)
        bench.measuring = True
        start = time.perf_counter()
        await asyncio.sleep(duration)
        bench.measuring = False
        elapsed = time.perf_counter() - start
        bench.stopped = True
        for t in transports:
            t.close()
        lat = sorted(bench.latencies)
        n = len(lat)
        return {
            "requests": n,
            "rps": n / elapsed,
            "p50_ms": lat[n // 2] / 1e6 if n else float("nan"),
            "p99_ms": lat[min(n - 1, int(n * 0.99))] / 1e6 if n else float("nan"),
            "errors": bench.errors,
        }

    print(json.dumps(uvloop.run(main())), flush=True)


# -- orchestration -----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def load(port: int, concurrency: int, duration: float, warmup: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "load", str(port), str(concurrency), str(duration), str(warmup)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def start_upstream(work_ms: float) -> tuple[subprocess.Popen[bytes], int]:
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, __file__, "upstream", str(sock.fileno()), str(work_ms)],
        pass_fds=[sock.fileno()],
    )
    sock.close()
    return proc, port


def start_proxy(upstream_port: int, root: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "proxy", str(upstream_port), root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, int(proc.stdout.readline())


def stop(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    if proc.stdin:
        proc.stdin.close()
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]} | {
        "errors": sum(run["errors"] for run in runs)
    }


def orchestrate(args: argparse.Namespace) -> None:
    roots = [str(ROOT)] + ([str(Path(args.versus).resolve())] if args.versus else [])
    rows, versus_rows = [], []
    for work_ms in args.work_ms:
        upstream, up_port = start_upstream(work_ms)
        proxies = []
        try:
            for root in roots:
                proxies.append(start_proxy(up_port, root))
            load(up_port, 4, 2.0, 0.0)  # warm them up
            for _, proxy_port in proxies:
                load(proxy_port, 4, 2.0, 0.0)
            for c in args.concurrency:
                directs: list[dict[str, float]] = []
                vias: list[list[dict[str, float]]] = [[] for _ in proxies]
                proxy_cpu = [0.0] * len(proxies)
                proxied = [0.0] * len(proxies)
                for r in range(args.rounds):
                    directs.append(load(up_port, c, args.duration, args.warmup))
                    order = range(len(proxies)) if r % 2 == 0 else reversed(range(len(proxies)))
                    for i in order:
                        proxy, proxy_port = proxies[i]
                        before = cpu_seconds(proxy.pid)
                        vias[i].append(load(proxy_port, c, args.duration, args.warmup))
                        proxy_cpu[i] += cpu_seconds(proxy.pid) - before
                        # The proxy also served the warm-up: count all the requests it saw.
                        proxied[i] += vias[i][-1]["requests"] * (args.duration + args.warmup) / args.duration
                cpu_us = [cpu / n * 1e6 for cpu, n in zip(proxy_cpu, proxied)]
                rows.append((work_ms, c, median(directs), median(vias[0]), cpu_us[0]))
                if len(proxies) > 1:
                    versus_rows.append((work_ms, c, median(vias[0]), median(vias[1]), cpu_us[0], cpu_us[1]))
        finally:
            for proxy, _ in proxies:
                stop(proxy)
            stop(upstream)

    print(
        f"\nproxy overhead, {os.cpu_count()} CPUs, keep-alive POST /predict, "
        f"medians of {args.rounds} alternating {args.duration:g} s runs"
    )
    header = (
        f"{'work':>6} {'conc':>4} | {'direct rps':>10} {'p50':>7} {'p99':>7} | "
        f"{'proxy rps':>10} {'p50':>7} "
        f"{'p99':>7} | {'rps ratio':>9} {'+p50 ms':>8} {'proxy CPU/req':>14} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for work_ms, c, d, v, cpu_us in rows:
        print(
            f"{work_ms:>4g}ms {c:>4} | {d['rps']:>10.0f} {d['p50_ms']:>7.2f} {d['p99_ms']:>7.2f} | "
            f"{v['rps']:>10.0f} {v['p50_ms']:>7.2f} {v['p99_ms']:>7.2f} | "
            f"{v['rps'] / d['rps']:>9.2f} {v['p50_ms'] - d['p50_ms']:>8.2f} "
            f"{cpu_us:>11.0f} us {int(d['errors'] + v['errors']):>6}"
        )
    print("latencies in ms; 'work' = CPU burnt by the upstream per request (BentoML: ~3 ms)")
    if versus_rows:
        print(f"\nthis checkout ({roots[0]}) vs --versus ({roots[1]}), same rounds")
        header = (
            f"{'work':>6} {'conc':>4} | {'this rps':>9} {'versus rps':>10} {'ratio':>6} | "
            f"{'this p50':>8} {'versus p50':>10} | {'this CPU/req':>12} {'versus CPU/req':>14} {'ratio':>6}"
        )
        print(header)
        print("-" * len(header))
        for work_ms, c, this, other, this_cpu, other_cpu in versus_rows:
            print(
                f"{work_ms:>4g}ms {c:>4} | {this['rps']:>9.0f} {other['rps']:>10.0f} "
                f"{this['rps'] / other['rps']:>6.3f} | {this['p50_ms']:>8.3f} {other['p50_ms']:>10.3f} | "
                f"{this_cpu:>9.1f} us {other_cpu:>11.1f} us {this_cpu / other_cpu:>6.3f}"
            )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("upstream", "proxy", "load"):
        role, *rest = sys.argv[1:]
        if role == "upstream":
            run_upstream(int(rest[0]), float(rest[1]))
        elif role == "proxy":
            run_proxy(int(rest[0]), rest[1])
        else:
            run_load(int(rest[0]), int(rest[1]), float(rest[2]), float(rest[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
    ap.add_argument("--rounds", type=int, default=3, help="direct/proxy run pairs per setting")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    ap.add_argument("--work-ms", type=float, nargs="+", default=[0.0, 3.0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--versus", metavar="CHECKOUT",
                    help="also measure the proxy of another checkout of nbserve (its root)")
    orchestrate(ap.parse_args())


if __name__ == "__main__":
    main()
