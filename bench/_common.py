"""Shared helpers for bench/endpoint.py, bench/deploy.py and bench/import_time.py.

Not a test helper: these benches measure, print ratios, and never assert timings.

What is here:
  * privacy env (BENTOML_DO_NOT_TRACK, UV_OFFLINE) set at import, before any bentoml import
  * a scratch root per run (fresh NBSERVE_HOME and BENTOML_HOME under it), removed at the end
  * the iris RandomForest (scikit-learn ships the data set; nothing is downloaded)
  * ProcessTree: a `bentoml serve` started in its own session, every descendant recorded
    (circus workers lead sessions of their own), the whole tree stopped at the end
  * our_processes / reap: the safety net, every process whose command line or
    environment names the run's scratch root
  * load(): the load generator in a separate process, wrk if installed (a tiny Lua
    script POSTs the body, JSON unless another content type is given), else the Python
    generator at the bottom of this file

Run as a script, this file is that Python load generator:
    python bench/_common.py load HOST PORT PATH CONCURRENCY SECONDS BODY_FILE [EXTRA_HEADER [CONTENT_TYPE]]
"""

from __future__ import annotations

import os

# Before anything imports bentoml, in this process and every child (children get os.environ).
os.environ["BENTOML_DO_NOT_TRACK"] = "true"
os.environ["UV_OFFLINE"] = "1"

import contextlib  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HOST = "127.0.0.1"
JSON = "application/json"
PY = sys.executable
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


# -- environment ---------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """The environment of every child process: ours with the privacy defaults forced on."""
    env = dict(os.environ)
    env["BENTOML_DO_NOT_TRACK"] = "true"
    env["UV_OFFLINE"] = "1"
    env.update(extra)
    return env


@contextlib.contextmanager
def env_vars(**values: str) -> Iterator[None]:
    """``os.environ`` with these set for a block, as it was after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def scratch(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A fresh directory for one run; NBSERVE_HOME and BENTOML_HOME point inside it."""
    root = Path(tempfile.mkdtemp(prefix=f"nbserve-bench-{prefix}-")).resolve()
    try:
        with env_vars(NBSERVE_HOME=str(root / "nbhome"), BENTOML_HOME=str(root / "client-bentoml")):
            yield root
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def machine_line() -> str:
    load1, load5, _ = os.getloadavg()
    return (
        f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {load1:.2f} (1 min) {load5:.2f} (5 min)"
    )


def foreign_servers(marker: str | None = None) -> list[str]:
    """bentoml/nbserve processes on the machine that are not this run's: they share the
    two cores, so a reader of the figures should know they were there."""
    import psutil

    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.pid == os.getpid() or not ("bentoml" in cmd or "nbserve" in cmd):
            continue
        if marker and _mentions(proc, marker):
            continue
        out.append(f"{proc.pid} {cmd[:110]}")
    return out


# -- the model -----------------------------------------------------------------------


def iris_model(n_estimators: int = 50) -> tuple[Any, Any]:
    """(fitted RandomForestClassifier, feature DataFrame). The data ships with scikit-learn."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = FEATURES
    model = RandomForestClassifier(n_estimators=n_estimators, random_state=0).fit(X, y)
    return model, X


def iris_body(rows: int = 1) -> bytes:
    sample = [
        {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
        {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
        {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 4.2, "petal_width": 1.5},
    ]
    return json.dumps({"data": [sample[i % len(sample)] for i in range(rows)]}).encode()


def pins(dists: tuple[str, ...] = ("scikit-learn", "numpy", "pandas")) -> list[str]:
    from importlib.metadata import version

    return [f"{d}=={version(d)}" for d in dists]


# -- HTTP ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def split_url(url: str) -> tuple[str, int]:
    hostport = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def request(url: str, method: str, path: str, body: bytes | None = None,
            timeout: float = 5.0, content_type: str = JSON) -> tuple[int, bytes]:
    """One request on a fresh connection; raises OSError/HTTPException if none answers."""
    host, port = split_url(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Content-Type": content_type} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_until_ok(url: str, method: str, path: str, body: bytes | None = None, *,
                  timeout: float = 120.0, interval: float = 0.02,
                  alive: Any = None) -> float:
    """Poll until a 200; return the monotonic time it came. ``alive()`` False aborts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # Short timeout: BentoML's socket accepts before a worker is up and then hangs.
            status, _ = request(url, method, path, body, timeout=0.5)
            if status == 200:
                return time.monotonic()
        except (OSError, http.client.HTTPException):
            pass
        if alive is not None and not alive():
            raise RuntimeError(f"{url} died before answering {method} {path}")
        time.sleep(interval)
    raise TimeoutError(f"{url}{path} did not answer 200 within {timeout:.0f} s")


# -- processes -----------------------------------------------------------------------


class ProcessTree:
    """A command started in its own session, with every descendant it ever had recorded.

    BentoML's server is circus; its workers lead sessions of their own, so neither the
    process group of the root nor waiting for the root is enough: stop() signals every
    PID seen (psutil checks create times, so a recycled PID is never hit).
    """

    def __init__(self, cmd: list[str], *, env: dict[str, str], cwd: Path, log_path: Path) -> None:
        import psutil

        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.popen = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=env, cwd=str(cwd), start_new_session=True,
        )
        self.known: dict[int, psutil.Process] = {}
        self.refresh()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def refresh(self) -> None:
        import psutil

        try:
            root = self.known.get(self.pid) or psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            self.known.setdefault(proc.pid, proc)

    def cpu_seconds(self) -> float:
        """User+system CPU of every live recorded process (call refresh() first)."""
        import psutil

        total = 0.0
        for proc in self.known.values():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        return total

    def stop(self, grace: float = 10.0) -> list[int]:
        """SIGTERM the root (circus stops its workers), then SIGKILL anything recorded
        that is still alive, and its process group. Returns PIDs that survived (none)."""
        import psutil

        self.refresh()
        procs = list(self.known.values())
        with contextlib.suppress(psutil.Error):
            self.known[self.pid].send_signal(signal.SIGTERM)
        _gone, alive = psutil.wait_procs(procs, timeout=grace)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        _gone, alive = psutil.wait_procs(alive, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=1)
        self._log.close()
        return [p.pid for p in alive]


def bentoml_serve(bento_tag: str, *, bentoml_home: Path, cwd: Path, log_path: Path,
                  port: int | None = None) -> tuple[ProcessTree, str]:
    """A plain ``bentoml serve`` of a Bento on loopback; (tree, base URL)."""
    port = port or free_port()
    tree = ProcessTree(
        [PY, "-m", "bentoml", "serve", bento_tag, "--host", HOST, "--port", str(port)],
        env=child_env(BENTOML_HOME=str(bentoml_home), PYTHONUNBUFFERED="1"),
        cwd=cwd, log_path=log_path,
    )
    return tree, f"http://{HOST}:{port}"


def _mentions(proc: Any, marker: str) -> bool:
    import psutil

    try:
        if marker in " ".join(proc.cmdline()):
            return True
        return any(marker in v for v in proc.environ().values())
    except psutil.Error:
        return False


def our_processes(marker: str) -> list[Any]:
    """Every process (but this one) whose command line or environment names ``marker``."""
    import psutil

    me = os.getpid()
    return [p for p in psutil.process_iter() if p.pid != me and _mentions(p, marker)]


def stop_agents(homes: list[Any], marker: str) -> None:
    """Stop each home's agent, then kill and report whatever of this run is still alive."""
    from nbserve._local import stop_agent

    for home in homes:
        try:
            stop_agent(home)
        except Exception as exc:  # noqa: BLE001 - a bench reports and goes on cleaning up
            print(f"warning: stopping the agent of {home.root} failed: {exc}")
    time.sleep(0.5)
    reap_and_say(marker)


def reap_and_say(marker: str, label: str = "") -> None:
    """Kill whatever this run left behind under ``marker`` and say so (it should be none)."""
    left = reap(marker)
    print(f"{label}processes left behind: " + ("none" if not left else f"{len(left)} (killed now):"))
    for line in left:
        print(f"  {line}")


def reap(marker: str, grace: float = 5.0) -> list[str]:
    """Kill whatever this run left behind; return a description of each (should be none)."""
    import psutil

    found = our_processes(marker)
    described = []
    for proc in found:
        with contextlib.suppress(psutil.Error):
            described.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
            proc.terminate()
    _gone, alive = psutil.wait_procs(found, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return described


# -- load generation -----------------------------------------------------------------

# wrk scripts are %-formatted with the request body: the request part and the summary line
# ``load`` parses, apart so other benches can add hooks between them (bench/scale.py).
WRK_REQUEST_LUA = """\
wrk.method = "POST"
wrk.body = [==[%s]==]
wrk.headers["Content-Type"] = "application/json"
"""
WRK_SUMMARY_LUA = """\
  local e = summary.errors
  io.write(string.format(
    "NBSERVE_BENCH {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, " ..
    "\\"p99_us\\": %%d, \\"connect\\": %%d, \\"read\\": %%d, \\"write\\": %%d, " ..
    "\\"status\\": %%d, \\"timeout\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
"""
_WRK_DONE_LUA = "\nfunction done(summary, latency, requests)\n" + WRK_SUMMARY_LUA + "end\n"
_WRK_LUA = WRK_REQUEST_LUA + _WRK_DONE_LUA


def add_load_arguments(ap: Any, *, seconds: float, rounds: int, warmup: float) -> None:
    """The flags every HTTP bench shares: how long, how many interleaved rounds, at which
    concurrencies, timeit rounds, which load generator, whether to keep the scratch dir."""
    ap.add_argument("--seconds", type=float, default=seconds, help="measured seconds per run")
    ap.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds per concurrency")
    ap.add_argument("--warmup", type=float, default=warmup, help="unmeasured seconds per target first")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--timeit-rounds", type=int, default=7, help="timeit rounds (>= 0.2 s each) per figure")
    ap.add_argument("--load", choices=("auto", "wrk", "python"), default="auto",
                    help="load generator: wrk if installed (auto), or the Python one")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (logs) afterwards")


def wrk_request_lua(body: bytes, content_type: str = JSON) -> str:
    """The request part of a wrk script for any body (PNG bytes, multipart): the body as a
    quoted Lua string, every byte that is not plain ASCII escaped, because a long bracket
    ``[==[...]==]`` (WRK_REQUEST_LUA) turns CRLF into LF and would break a multipart body."""
    text = "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}" for b in body)
    return f'wrk.method = "POST"\nwrk.body = "{text}"\nwrk.headers["Content-Type"] = "{content_type}"\n'


def load_tool(choice: str = "auto") -> str:
    """'wrk' or 'python'; 'auto' is wrk when it is installed."""
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if choice == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk), use --load python")
    return choice


def load_tool_description(tool: str) -> str:
    if tool == "wrk":
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        version = (out.stdout + out.stderr).split("[")[0].strip() or "wrk"
        return f"{version}, 1 thread, keep-alive, separate process"
    return "python asyncio keep-alive generator (bench/_common.py), separate process"


def load(url: str, path: str, body: bytes, concurrency: int, seconds: float,
         tool: str, workdir: Path, content_type: str = JSON) -> dict[str, float]:
    """Drive ``concurrency`` keep-alive connections, each POSTing one request after another,
    for ``seconds``; from a separate process. Returns rps, p50_ms, p99_ms, requests,
    errors and load_cpu_s (the load process's own CPU time). One body per ``workdir``:
    its script (or body file) is written there once."""
    host, port = split_url(url)
    before = os.times()
    if tool == "wrk":
        script = workdir / "post.lua"
        if not script.exists():
            script.write_text(_WRK_LUA % body.decode() if content_type == JSON
                              else wrk_request_lua(body, content_type) + _WRK_DONE_LUA % ())  # %% -> %
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
             "--latency", "-s", str(script), f"http://{host}:{port}{path}"],
            capture_output=True, text=True, timeout=seconds + 60, env=child_env(),
        )
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("NBSERVE_BENCH ")), None)
        if line is None:
            raise RuntimeError(f"wrk failed: {out.stdout[-800:]} {out.stderr[-800:]}")
        raw = json.loads(line.split(" ", 1)[1])
        result = {
            "requests": raw["requests"],
            "rps": raw["requests"] / (raw["duration_us"] / 1e6),
            "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000,
            "errors": sum(raw[k] for k in ("connect", "read", "write", "status", "timeout")),
        }
    else:
        body_file = workdir / "body.json"
        if not body_file.exists():
            body_file.write_bytes(body)
        out = subprocess.run(
            [PY, str(Path(__file__)), "load", host, str(port), path, str(concurrency),
             str(seconds), str(body_file), *(["", content_type] if content_type != JSON else [])],
            capture_output=True, text=True, timeout=seconds + 60, env=child_env(),
        )
        if out.returncode != 0:
            raise RuntimeError(f"python load generator failed: {out.stderr[-800:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
    after = os.times()
    result["load_cpu_s"] = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return result


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def cpu_of(procs: list) -> float:
    """CPU seconds (user + system) of these psutil processes so far; gone ones count nothing."""
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except Exception:  # noqa: BLE001 - gone meanwhile
            continue
    return total


def busy_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (all cores)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _python_load(host: str, port: int, path: str, concurrency: int, seconds: float,
                 body: bytes, extra_header: str = "", content_type: str = JSON) -> dict[str, float]:
    """Closed loop: each of ``concurrency`` keep-alive connections sends one POST, waits
    for the whole response, sends the next; latency per request with perf_counter_ns.
    ``extra_header``: one more header line, e.g. ``"Authorization: Bearer ..."``."""
    import asyncio

    import httptools

    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        + (f"{extra_header}\r\n" if extra_header else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    request_bytes = head + body
    state = {"measuring": True, "errors": 0}
    latencies: list[int] = []

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.sent = 0
            self.transport: Any = None
            self.lost = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.send()

        def send(self) -> None:
            self.sent = time.perf_counter_ns()
            self.transport.write(request_bytes)

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                state["errors"] += 1
                self.transport.close()

        def on_message_complete(self) -> None:
            if not state["measuring"]:
                self.transport.close()
                return
            latencies.append(time.perf_counter_ns() - self.sent)
            if self.parser.get_status_code() != 200:
                state["errors"] += 1
            self.send()

        def connection_lost(self, exc: Exception | None) -> None:
            if state["measuring"]:
                state["errors"] += 1
            if not self.lost.done():
                self.lost.set_result(None)

    async def main() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        clients = []
        for _ in range(concurrency):
            _t, proto = await loop.create_connection(Client, host, port)
            clients.append(proto)
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        state["measuring"] = False
        elapsed = time.perf_counter() - start
        n = len(latencies)  # requests completed within the window
        await asyncio.wait([c.lost for c in clients], timeout=15)
        lat = sorted(latencies[:n])
        return {
            "requests": n,
            "rps": n / elapsed,
            "p50_ms": percentile(lat, 50) / 1e6,
            "p99_ms": percentile(lat, 99) / 1e6,
            "errors": state["errors"],
        }

    try:
        import uvloop

        return uvloop.run(main())
    except ImportError:
        return asyncio.run(main())


if __name__ == "__main__":
    if len(sys.argv) in (8, 9, 10) and sys.argv[1] == "load":
        _, _, h, p, pth, c, s, f, *extra = sys.argv
        print(json.dumps(_python_load(h, int(p), pth, int(c), float(s), Path(f).read_bytes(), *extra)))
    else:
        sys.exit(__doc__)
