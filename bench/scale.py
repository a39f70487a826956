"""Scale on one host: workers, scale to zero, idle memory.  nbserve vs plain `bentoml serve`.

    .venv/bin/python bench/scale.py [--parts throughput cold memory] [--seconds 10] [--rounds 5]
                                    [--concurrency 16] [--trees 200] [--no-batching]
                                    [--max-batch-size 64] [--max-latency-ms 1000]
                                    [--cold-rounds 5] [--deployments 20] [--load auto|wrk|python]

Three parts, each in its own scratch NBSERVE_HOME (so one part's agent and history do not
weigh on the next), all on 127.0.0.1:

  throughput  A RandomForest with ``--trees`` trees on iris (1-row predict: CPU-bound, one
              worker keeps one core busy) is deployed once per worker count (``forest-w1``,
              ``forest-w2``: ``nbserve.deploy(..., workers=1)``, then ``dep.scale(workers=2)``).
              The baseline per worker count is a plain ``bentoml serve`` of the same Bento, with
              ``BENTOML_CONFIG_OPTIONS='services."<name>".workers=2'`` for two workers. All the
              servers stay up (idle ones cost ~nothing); each of ``--rounds`` rounds runs wrk
              at ``--concurrency`` against every target's /predict for ``--seconds`` (order
              reversed every other round), so load from other processes on the machine hits
              all targets alike; ratios are medians of per-round ratios. Server CPU per request
              and the cores the server kept busy come from /proc. Before measuring, concurrent
              requests check that every worker answers (the ``x-nbserve-worker`` header).
              Adaptive batching (unless ``--no-batching``), 1 worker each, same forest and
              body, in the same rounds: ``forest-b1`` deployed with ``max_batch_size`` /
              ``max_latency_ms`` (``--max-batch-size 64 --max-latency-ms 1000``: a budget that
              sheds nothing at this load; errors count any 503), against (A) a plain
              ``bentoml serve`` of its Bento with ``NBSERVE_BATCHING`` set as the agent sets
              it, and (B) BentoML's own ``@bentoml.api(batchable=True)`` with the same knobs on
              a minimal service (bench/_bento_batchable.py: the same model from the same model
              store, a DataFrame of records, no per-request validation; it patches one BentoML
              1.4.40 bug without which such an API answers no request: the first hang, the
              rest get a 503).
              nbserve / A is the agent's cost, nbserve / B the cost of validating each request
              before batching (and of the agent), nbserve batching / nbserve 1 worker
              unbatched the gain. The mean batch a request was part of: wrk reads
              ``x-nbserve-batch-rows`` of every answer (a response hook in its script, run for
              every target alike); B sends no such header, so it counts its calls and rows
              itself (``POST /batches``, read around each run). With ``--load python``,
              16 x 8 concurrent probes after each run read the header instead.
  cold        The same model with ``idle_timeout="2s"``: wait until ``nbserve.top()`` says the
              deployment is cold with no server, then time one POST /predict on the stable URL
              (the agent holds it and starts the server), read the agent's ``woken`` event
              (``cold_start_seconds``), then time a warm request. Baseline per round: a plain
              ``bentoml serve`` from exec to its first answer on /predict, /readyz polled first
              as the agent does (started while the nbserve deployment is cold, so the two never
              compete). Medians of ``--cold-rounds``.
  memory      ``--deployments`` small deployments (one 10-tree iris forest, deployed under
              as many names) on one agent: total RSS (and PSS, which counts shared pages once)
              of every process under the scratch root (agent + servers + workers) and the
              CPU they burn while idle, all warm; then ``dep.scale(idle_timeout="2s")`` on
              each, wait until all are cold, measure again.

Targets (printed, never asserted): 2 workers approach 2x one worker's throughput on a
CPU-bound model; nbserve within 0.85x of plain BentoML at each worker count and with batching.
Every process started here is stopped at the end, even on error, and the script says so.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402  (sets BENTOML_DO_NOT_TRACK / UV_OFFLINE first)

RATIO_TARGET = 0.85  # nbserve / plain bentoml serve, as in endpoint.py
MIB = 2**20


# -- small helpers -------------------------------------------------------------------


def timed_post(url: str, body: bytes, timeout: float = 180.0) -> tuple[float, int, dict[str, str]]:
    """(seconds, status, headers) of one POST /predict on a fresh connection."""
    host, port = c.split_url(url)
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return time.perf_counter() - t0, response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def workers_answering(url: str, body: bytes, concurrency: int = 16, per_thread: int = 6) -> set[str]:
    """The distinct ``x-nbserve-worker`` PIDs that answered concurrent requests."""
    seen: set[str] = set()
    lock = threading.Lock()

    def hit() -> None:
        for _ in range(per_thread):
            _s, status, headers = timed_post(url, body, timeout=60)
            if status == 200:
                with lock:
                    seen.add(headers.get("x-nbserve-worker", "?"))

    threads = [threading.Thread(target=hit) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seen


def plain_serve(bento_tag: str, home: Any, root: Path, name: str, workers: int, log: str,
                batching: dict[str, Any] | None = None) -> tuple[c.ProcessTree, str]:
    """A plain ``bentoml serve`` of the Bento, with ``workers`` workers, as a user would run it;
    with ``batching``, the generated service batches as it does under the agent."""
    from nbserve._service_template import BATCHING_ENV

    port = c.free_port()
    extra = {"BENTOML_HOME": str(home.bentoml_home), "PYTHONUNBUFFERED": "1"}
    if workers != 1:
        # quoted: BentoML's key syntax rejects a bare '-' in a name segment
        extra["BENTOML_CONFIG_OPTIONS"] = f'services."{name}".workers={workers}'
    if batching:
        extra[BATCHING_ENV] = json.dumps(batching)  # as the agent's supervisor sets it
    tree = c.ProcessTree(
        [c.PY, "-m", "bentoml", "serve", bento_tag, "--host", c.HOST, "--port", str(port)],
        env=c.child_env(**extra), cwd=root, log_path=root / log,
    )
    return tree, f"http://{c.HOST}:{port}"


def native_serve(model_tag: str, home: Any, root: Path, batching: dict[str, Any],
                 log: str) -> tuple[c.ProcessTree, str]:
    """BentoML's own adaptive batching (bench/_bento_batchable.py) on the model ``model_tag``
    of the agent's model store, 1 worker."""
    port = c.free_port()
    tree = c.ProcessTree(
        [c.PY, "-m", "bentoml", "serve", "_bento_batchable:NativeBatching", "--working-dir", str(c.BENCH),
         "--host", c.HOST, "--port", str(port)],
        env=c.child_env(BENTOML_HOME=str(home.bentoml_home), PYTHONUNBUFFERED="1",
                        NBSERVE_BENCH_MODEL_TAG=model_tag,
                        NBSERVE_BENCH_MAX_BATCH_SIZE=str(batching["max_batch_size"]),
                        NBSERVE_BENCH_MAX_LATENCY_MS=str(batching["max_latency_ms"])),
        cwd=root, log_path=root / log,
    )
    return tree, f"http://{c.HOST}:{port}"


def native_counters(url: str) -> dict[str, int]:
    """Model calls, rows and squared rows the native batching service has served."""
    status, raw = c.request(url, "POST", "/batches", b"{}", timeout=30)
    if status != 200:
        raise RuntimeError(f"{url}/batches answered {status}")
    return json.loads(raw)


def batch_stats(before: dict[str, int], after: dict[str, int]) -> tuple[float, float]:
    """(mean rows per model call, mean rows of the call a request was part of) between two
    counter readings."""
    calls = after["calls"] - before["calls"]
    rows = after["rows"] - before["rows"]
    squared = after["rows_squared"] - before["rows_squared"]
    return (rows / calls if calls else float("nan")), (squared / rows if rows else float("nan"))


# bench/_common.py's wrk script, plus a response hook that tallies ``x-nbserve-batch-rows``
# (absent on unbatched targets: nothing counted), so batch sizes are read under the load itself.
_WRK_LUA = c.WRK_REQUEST_LUA + """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) seen = 0; rows = 0; inverse = 0 end

function response(status, headers, body)
  for name, value in pairs(headers) do
    if string.lower(name) == "x-nbserve-batch-rows" then
      local n = tonumber(value)
      if n and n > 0 then seen = seen + 1; rows = rows + n; inverse = inverse + 1 / n end
    end
  end
end

function done(summary, latency, requests)
""" + c.WRK_SUMMARY_LUA + """\
  local s, r, inv = 0, 0, 0
  for _, t in ipairs(threads) do s = s + t:get("seen"); r = r + t:get("rows"); inv = inv + t:get("inverse") end
  io.write(string.format("NBSERVE_BATCH {\\"seen\\": %%d, \\"rows\\": %%d, \\"inverse\\": %%.9f}\\n", s, r, inv))
end
"""


def load(url: str, body: bytes, concurrency: int, seconds: float, tool: str, workdir: Path) -> dict[str, float]:
    """``c.load`` on POST /predict; with wrk, also ``batch_rows`` (mean rows of the model call an
    answer was part of, from its ``x-nbserve-batch-rows``) and ``batch_rows_per_call``, over the
    answers that carried the header (``batch_answers``)."""
    if tool != "wrk":
        return c.load(url, "/predict", body, concurrency, seconds, tool, workdir)
    host, port = c.split_url(url)
    script = workdir / "post-batch-rows.lua"
    if not script.exists():
        script.write_text(_WRK_LUA % body.decode())
    before = os.times()
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
         "--latency", "-s", str(script), f"http://{host}:{port}/predict"],
        capture_output=True, text=True, timeout=seconds + 60, env=c.child_env(),
    )
    after = os.times()
    lines = {ln.split(" ", 1)[0]: json.loads(ln.split(" ", 1)[1]) for ln in out.stdout.splitlines()
             if ln.startswith(("NBSERVE_BENCH ", "NBSERVE_BATCH "))}
    if "NBSERVE_BENCH" not in lines or "NBSERVE_BATCH" not in lines:
        raise RuntimeError(f"wrk failed: {out.stdout[-800:]} {out.stderr[-800:]}")
    raw, batch = lines["NBSERVE_BENCH"], lines["NBSERVE_BATCH"]
    return {
        "requests": raw["requests"],
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": sum(raw[k] for k in ("connect", "read", "write", "status", "timeout")),
        "batch_answers": batch["seen"],
        "batch_rows": batch["rows"] / batch["seen"] if batch["seen"] else float("nan"),
        # a call of n rows answers n one-row requests
        "batch_rows_per_call": batch["seen"] / batch["inverse"] if batch["seen"] else float("nan"),
        "load_cpu_s": (after.children_user - before.children_user)
        + (after.children_system - before.children_system),
    }


def probe_batches(url: str, body: bytes, concurrency: int = 16, per_thread: int = 8) -> dict[str, float]:
    """Concurrent keep-alive probes (started together) on a batching target, for when the load
    generator cannot read headers (``--load python``): the mean rows of the model call a
    request was part of (``x-nbserve-batch-rows``), the mean rows per call, and the non-200
    answers."""
    host, port = c.split_url(url)
    seen: list[int] = []
    bad = [0]
    lock = threading.Lock()
    start = threading.Barrier(concurrency)

    def hit() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            start.wait()
            for _ in range(per_thread):
                try:
                    conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    with lock:
                        bad[0] += 1
                    conn.close()  # http.client reconnects on the next request
                    continue
                rows = response.getheader("x-nbserve-batch-rows")
                with lock:
                    if response.status != 200:
                        bad[0] += 1
                    elif rows is not None:
                        seen.append(int(rows))
        finally:
            conn.close()

    threads = [threading.Thread(target=hit) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if seen:
        per_request = sum(seen) / len(seen)
        per_call = len(seen) / sum(1 / n for n in seen)  # a call of n rows answers n requests
    else:
        per_call = per_request = float("nan")
    return {"probe_rows": per_request, "probe_rows_per_call": per_call, "probe_bad": bad[0],
            "probe_headers": len(seen)}


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll until ``predicate()`` is true; return the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def top_row(name: str) -> dict[str, Any]:
    import nbserve

    frame = nbserve.top()
    return frame.loc[name].to_dict()


def is_cold(name: str) -> bool:
    row = top_row(name)
    return row["state"] == "cold" and int(row["servers"]) == 0


@contextlib.contextmanager
def part(prefix: str, run_root: Path) -> Any:
    """A fresh NBSERVE_HOME (and agent) under the run's scratch root; every process under
    it is stopped at the end. The client's BENTOML_HOME stays the run's: BentoML reads it
    once per process, so it cannot move between parts."""
    from nbserve._config import Home
    from nbserve._local import stop_agent

    root = run_root / prefix
    root.mkdir()
    marker = str(root)
    saved = os.environ["NBSERVE_HOME"]
    os.environ["NBSERVE_HOME"] = str(root / "nbhome")
    home = Home.resolve()
    extra: list[c.ProcessTree] = []
    try:
        yield root, home, extra
    finally:
        try:
            for tree in extra:
                survivors = tree.stop()
                if survivors:
                    print(f"warning: plain server processes survived SIGKILL: {survivors}")
            stop_agent(home)
            time.sleep(0.5)
        finally:
            os.environ["NBSERVE_HOME"] = saved
            left = c.reap(marker)
            print(f"[{prefix}] processes left behind: " + ("none" if not left else f"{len(left)} (killed now):"))
            for line in left:
                print(f"  {line}")


def agent_process(home: Any) -> Any:
    import psutil

    from nbserve._local import find_agent

    agent = find_agent(home)
    assert agent is not None, "the agent is not running after deploy"
    return psutil.Process(agent.pid)


# -- throughput ----------------------------------------------------------------------


# the batching targets, 1 worker each: kind -> what it is
BATCH_KINDS = {
    "plain+b": "plain `bentoml serve` of forest-b1's Bento with NBSERVE_BATCHING",
    "nbserve+b": "nbserve stable URL of forest-b1 (deployed with batching)",
    "native+b": "BentoML @bentoml.api(batchable=True), bench/_bento_batchable.py",
}


def throughput(args: argparse.Namespace, tool: str, run_root: Path) -> None:
    import nbserve

    body = c.iris_body(1)
    batching = {"max_batch_size": args.max_batch_size, "max_latency_ms": args.max_latency_ms}
    targets = [(w, kind) for w in args.workers for kind in ("plain", "nbserve")]
    if args.batching:
        targets += [(1, kind) for kind in BATCH_KINDS]
    results: dict[tuple[int, str], list[dict[str, float]]] = {}
    with part("throughput", run_root) as (root, home, extra):
        model, X = c.iris_model(args.trees)
        tags: dict[tuple[int, str], str] = {}  # the Bento each nbserve/plain target serves
        urls: dict[tuple[int, str], str] = {}
        trees: dict[tuple[int, str], c.ProcessTree] = {}  # the plain and native servers
        for w in args.workers:
            # one deployment per worker count, so every round measures all of them alike
            name = f"forest-w{w}"
            t0 = time.monotonic()
            dep = nbserve.deploy(model, name, X, workers=1, progress=False)
            line = f"deployed {name} ({args.trees} trees, workers=1) in {time.monotonic() - t0:.1f} s"
            if w != 1:
                t0 = time.monotonic()
                dep.scale(workers=w)
                line += f"; dep.scale(workers={w}) returned in {time.monotonic() - t0:.1f} s"
            tags[(w, "plain")] = tags[(w, "nbserve")] = dep.refresh().versions[-1]["bento_tag"]
            urls[(w, "nbserve")] = dep.url
            print(f"{line}; stable URL {dep.url}", flush=True)
        model_tag = ""
        if args.batching:
            name = "forest-b1"
            t0 = time.monotonic()
            dep = nbserve.deploy(model, name, X, workers=1, progress=False, **batching)
            line = (f"deployed {name} ({args.trees} trees, workers=1, max_batch_size={args.max_batch_size}, "
                    f"max_latency_ms={args.max_latency_ms:g}) in {time.monotonic() - t0:.1f} s")
            tags[(1, "plain+b")] = tags[(1, "nbserve+b")] = bento_tag = dep.refresh().versions[-1]["bento_tag"]
            urls[(1, "nbserve+b")] = dep.url
            print(f"{line}; stable URL {dep.url}", flush=True)
            events = dep.events(limit=50)
            for _i, ev in events[events["kind"].isin(["batching_checked", "batching_warning"])].iterrows():
                print(f"  {ev['kind']}: {ev['data']}")
            # the model the Bento serves, and its flavor, from the bundle inside the Bento
            bento_name, bento_version = bento_tag.split(":")
            bundle = json.loads((home.bentoml_home / "bentos" / bento_name / bento_version / "src"
                                 / "nbserve_bundle.json").read_text())
            model_tag = bundle["model_tag"]
            print(f"  the Bento serves model {model_tag} (flavor {bundle['model']['flavor']})")
        agent = agent_process(home)
        for w, kind in targets:
            if kind == "nbserve" or kind == "nbserve+b":
                continue
            if kind == "native+b":
                trees[(w, kind)], urls[(w, kind)] = native_serve(model_tag, home, root, batching, "native-b1.log")
            else:
                trees[(w, kind)], urls[(w, kind)] = plain_serve(
                    tags[(w, kind)], home, root, f"forest-{'b' if kind == 'plain+b' else 'w'}{w}", w,
                    f"{kind}-w{w}.log", batching if kind == "plain+b" else None)
            extra.append(trees[(w, kind)])
            c.wait_until_ok(urls[(w, kind)], "GET", "/readyz", timeout=180, alive=trees[(w, kind)].alive)
        print("servers: " + ", ".join(f"{kind} w{w} {urls[(w, kind)]} (pid {tree.pid})"
                                      for (w, kind), tree in trees.items()) + f"; agent pid {agent.pid}")
        for w, kind in targets:
            if kind == "native+b":
                continue  # BentoML's own service sets no x-nbserve-worker header
            seen = workers_answering(urls[(w, kind)], body)
            print(f"  workers={w} {kind:<9} answered by {len(seen)} worker PID(s): {sorted(seen)}")
            if len(seen) != w:
                print(f"  warning: {kind} was asked for {w} worker(s); {len(seen)} answered")

        def server_procs(w: int, kind: str) -> list:
            if (w, kind) in trees:
                trees[(w, kind)].refresh()
                return list(trees[(w, kind)].known.values())
            out = []
            for proc in agent.children(recursive=True):  # nbserve's servers, workers included
                with contextlib.suppress(Exception):
                    if any(tags[(w, kind)] in arg for arg in proc.cmdline()):
                        out.append(proc)
            return out

        print(f"warm-up: {args.warmup:g} s per target")
        for w, kind in targets:
            load(urls[(w, kind)], body, args.concurrency, args.warmup, tool, root)
        for rnd in range(args.rounds):
            order = targets if rnd % 2 == 0 else list(reversed(targets))
            for w, kind in order:
                url = urls[(w, kind)]
                procs = server_procs(w, kind)
                ours = [agent, *[p for t in targets for p in server_procs(*t)]]
                counters = native_counters(url) if kind == "native+b" else None
                server0, agent0, ours0 = c.cpu_of(procs), c.cpu_of([agent]), c.cpu_of(ours)
                busy0, wall0 = c.busy_seconds(), time.monotonic()
                out = load(url, body, args.concurrency, args.seconds, tool, root)
                wall = time.monotonic() - wall0
                n = max(1, out["requests"])
                server_s = c.cpu_of(procs) - server0
                out["server_us"] = server_s / n * 1e6
                out["server_cores"] = server_s / wall
                out["agent_us"] = (c.cpu_of([agent]) - agent0) / n * 1e6
                mine = c.cpu_of(ours) - ours0 + out["load_cpu_s"]
                out["others_cores"] = max(0.0, c.busy_seconds() - busy0 - mine) / wall
                line = ""
                if kind in BATCH_KINDS:
                    if counters is not None:  # the native service counts its own calls and rows
                        out["batch_rows_per_call"], out["batch_rows"] = batch_stats(counters, native_counters(url))
                    elif tool != "wrk":  # the Python generator reads no headers: probe after the run
                        probes = probe_batches(url, body)
                        out["batch_rows"] = probes["probe_rows"]
                        out["batch_rows_per_call"] = probes["probe_rows_per_call"]
                        out["errors"] += probes["probe_bad"]
                        line += " (batch rows from probes after the run)"
                    elif out["batch_answers"] < out["requests"]:
                        line += (f" (only {int(out['batch_answers'])} of {int(out['requests'])} answers carried "
                                 f"x-nbserve-batch-rows: not batching?)")
                    line = (f" batch rows {out['batch_rows']:.1f} (per call {out['batch_rows_per_call']:.1f})"
                            + line)
                results.setdefault((w, kind), []).append(out)
                print(f"  round {rnd + 1} workers={w} {kind:<9} {out['rps']:7.1f} rps "
                      f"p50 {out['p50_ms']:7.2f} ms p99 {out['p99_ms']:7.2f} ms errors {int(out['errors'])} "
                      f"server {out['server_cores']:.2f} cores (others {out['others_cores']:.2f}){line}", flush=True)
    report_throughput(args, tool, targets, results)


def report_throughput(args: argparse.Namespace, tool: str, targets: list[tuple[int, str]], results: dict) -> None:
    def med(workers: int, target: str, key: str) -> float:
        return c.median([r[key] for r in results[(workers, target)]])

    def paired(num: tuple[int, str], den: tuple[int, str]) -> tuple[float, float, float]:
        """Median, min and max of the per-round ratio (both measured in the same round)."""
        ratios = [a["rps"] / b["rps"] for a, b in zip(results[num], results[den])]
        return c.median(ratios), min(ratios), max(ratios)

    print()
    print(f"iris RandomForest ({args.trees} trees), POST /predict with 1 row, concurrency {args.concurrency}, "
          f"load: {tool}; medians of {args.rounds} rounds, each running every target for {args.seconds:g} s")
    header = (f"{'workers':>7} {'target':<9}| {'rps':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} | "
              f"{'batch rows':>10} | {'server CPU us/req':>17} {'server cores':>12} {'agent us/req':>12} | "
              f"{'others':>6}")
    print(header)
    print("-" * len(header))
    for workers, target in targets:
        errors = sum(int(r["errors"]) for r in results[(workers, target)])
        agent = f"{med(workers, target, 'agent_us'):>12.0f}" if target.startswith("nbserve") else f"{'-':>12}"
        rows = f"{med(workers, target, 'batch_rows'):>10.1f}" if target in BATCH_KINDS else f"{'-':>10}"
        print(f"{workers:>7} {target:<9}| {med(workers, target, 'rps'):>7.1f} "
              f"{med(workers, target, 'p50_ms'):>8.2f} {med(workers, target, 'p99_ms'):>8.2f} {errors:>6} | "
              f"{rows} | {med(workers, target, 'server_us'):>17.0f} {med(workers, target, 'server_cores'):>12.2f} "
              f"{agent} | {med(workers, target, 'others_cores'):>6.2f}")
    if args.batching:
        print(f"+b: adaptive batching, max_batch_size {args.max_batch_size}, max_latency_ms {args.max_latency_ms:g}, "
              f"1 worker; " + "; ".join(f"{k}: {v}" for k, v in BATCH_KINDS.items()))
        how = ("under the measured load: x-nbserve-batch-rows of every answer, read by wrk" if tool == "wrk" else
               "x-nbserve-batch-rows of 16 x 8 concurrent probes after each run (the python generator reads "
               "no headers)")
        print(f"batch rows: mean rows of the model call a request was part of ({how}; native+b: its own call "
              f"and row counters over the measured run); per model call: "
              + ", ".join(f"{k} {med(1, k, 'batch_rows_per_call'):.1f}" for k in BATCH_KINDS))
    print()
    print("ratios: median of the per-round ratios (min - max)")
    for workers in args.workers:
        ratio, lo_r, hi_r = paired((workers, "nbserve"), (workers, "plain"))
        ok = "met" if ratio >= RATIO_TARGET else "MISSED"
        print(f"  workers={workers}: nbserve/plain throughput {ratio:.2f}x ({lo_r:.2f} - {hi_r:.2f}; "
              f"target >= {RATIO_TARGET}x: {ok}); added p50 "
              f"{med(workers, 'nbserve', 'p50_ms') - med(workers, 'plain', 'p50_ms'):+.2f} ms")
    if len(args.workers) >= 2:
        lo, hi = args.workers[0], args.workers[-1]
        ideal = min(hi, os.cpu_count() or 1) / lo
        for target in ("plain", "nbserve"):
            gain, lo_r, hi_r = paired((hi, target), (lo, target))
            print(f"  {target}: {hi} workers / {lo} worker throughput {gain:.2f}x ({lo_r:.2f} - {hi_r:.2f}; "
                  f"target: approach {ideal:.1f}x on {os.cpu_count()} cores)")
    if args.batching:
        b = (1, "nbserve+b")
        lines = [(f"nbserve batching / nbserve {w} worker{'s' if w > 1 else ''} unbatched", b, (w, "nbserve"),
                  "the batching gain" if w == 1 else f"batching on 1 worker vs {w} workers")
                 for w in args.workers]
        lines += [("nbserve batching / plain serve batching (A)", b, (1, "plain+b"), "the agent's cost"),
                  ("nbserve batching / BentoML batchable=True (B)", b, (1, "native+b"),
                   "the design's cost: validate then batch, and the agent"),
                  ("plain serve batching (A) / BentoML batchable=True (B)", (1, "plain+b"), (1, "native+b"),
                   "the design's cost without the agent")]
        for label, num, den, meaning in lines:
            ratio, lo_r, hi_r = paired(num, den)
            target = ""
            if den == (1, "plain+b"):
                target = f"; target >= {RATIO_TARGET}x: {'met' if ratio >= RATIO_TARGET else 'MISSED'}"
            print(f"  {label}: {ratio:.2f}x ({lo_r:.2f} - {hi_r:.2f}{target}): {meaning}; p50 "
                  f"{med(*num, 'p50_ms') - med(*den, 'p50_ms'):+.2f} ms")
    print("server cores = CPU seconds of the serving process tree per wall second; agent us/req = the "
          "nbserve agent (proxy + monitoring) per request; others = cores busy with processes not of this bench")


# -- cold start ----------------------------------------------------------------------


def cold(args: argparse.Namespace, run_root: Path) -> None:
    import nbserve

    body = c.iris_body(1)
    name = "forest"
    rows: list[dict[str, float]] = []
    with part("cold", run_root) as (root, home, extra):
        model, X = c.iris_model(args.trees)
        dep = nbserve.deploy(model, name, X, workers=1, idle_timeout=args.idle_timeout, progress=False)
        bento_tag = dep.refresh().versions[-1]["bento_tag"]
        print(f"deployed {name} ({args.trees} trees, idle_timeout={args.idle_timeout}); stable URL {dep.url}")
        for _ in range(5):  # the first requests of a fresh worker are slower
            timed_post(dep.url, body)
        for rnd in range(args.cold_rounds):
            waited = wait_for(lambda: is_cold(name), 120, f"{name} to scale to zero")
            # baseline while nbserve's side is cold and quiet: plain serve, exec to first 200
            t0 = time.monotonic()
            tree, plain_url = plain_serve(bento_tag, home, root, name, 1, f"plain-cold-{rnd}.log")
            extra.append(tree)
            # as the agent does: poll /readyz (short probes), then the request
            c.wait_until_ok(plain_url, "GET", "/readyz", timeout=180, interval=0.05, alive=tree.alive)
            _s, status, _h = timed_post(plain_url, body)
            plain_s = time.monotonic() - t0
            if status != 200:
                raise RuntimeError(f"the plain server's first request answered {status}")
            tree.stop()
            extra.remove(tree)
            if not is_cold(name):
                raise RuntimeError(f"{name} woke up without a request")
            last = dep.events(limit=1)
            last_id = int(last["id"].max()) if not last.empty else 0
            cold_s, status, _h = timed_post(dep.url, body)
            if status != 200:
                raise RuntimeError(f"the cold request answered {status}")
            warm = sorted(timed_post(dep.url, body)[0] for _ in range(5))
            event: dict[str, Any] = {}

            def woken() -> bool:
                frame = dep.events(limit=50, after=last_id)
                found = frame[frame["kind"] == "woken"] if not frame.empty else frame
                if not found.empty:
                    event.update(found.iloc[-1]["data"])
                return bool(event)

            wait_for(woken, 10, "the woken event")
            shown = top_row(name).get("last_cold_start_seconds")  # nbserve top's cold_start column
            row = {"idle_wait_s": waited, "cold_s": cold_s, "event_s": float(event["cold_start_seconds"]),
                   "ready_s": float(event.get("ready_seconds") or float("nan")), "held": event.get("held"),
                   "top_s": float("nan") if shown is None else float(shown),
                   "warm_ms": warm[len(warm) // 2] * 1000, "plain_s": plain_s}
            rows.append(row)
            print(f"  round {rnd + 1}: cold {waited:.1f} s after the last request; cold request "
                  f"{cold_s:.2f} s (woken event {row['event_s']:.2f} s, server ready {row['ready_s']:.2f} s, "
                  f"held {row['held']}); warm request {row['warm_ms']:.1f} ms; plain serve to first answer "
                  f"{plain_s:.2f} s", flush=True)
    report_cold(args, rows)


def report_cold(args: argparse.Namespace, rows: list[dict[str, float]]) -> None:
    def med(key: str) -> float:
        return c.median([r[key] for r in rows])

    print()
    print(f"cold start, iris RandomForest ({args.trees} trees), 1 worker, idle_timeout={args.idle_timeout}; "
          f"medians of {len(rows)} rounds")
    print(f"{'what':<62}| {'median':>9} | {'range':>17}")
    print("-" * 95)
    lines = [
        ("nbserve: cold request, client side (POST to answer)", "cold_s", "s"),
        ("nbserve: woken event cold_start_seconds (agent)", "event_s", "s"),
        ("nbserve: of which server start to /readyz (ready_seconds)", "ready_s", "s"),
        ("nbserve: top() last_cold_start_seconds", "top_s", "s"),
        ("nbserve: warm request, client side", "warm_ms", "ms"),
        ("plain `bentoml serve`: exec to first answer on /predict", "plain_s", "s"),
    ]
    for label, key, unit in lines:
        values = [r[key] for r in rows]
        print(f"{label:<62}| {med(key):>7.2f} {unit:<2}| {min(values):>7.2f} - {max(values):>7.2f}")
    print()
    print(f"cold request / warm request: {med('cold_s') / (med('warm_ms') / 1000):.0f}x; "
          f"cold request / plain serve start: {med('cold_s') / med('plain_s'):.2f}x; "
          f"client minus agent figure: {(med('cold_s') - med('event_s')) * 1000:+.0f} ms")


# -- memory --------------------------------------------------------------------------


def host_memory(marker: str, agent: Any) -> dict[str, float]:
    """RSS and PSS of every process under the scratch root, and the agent's own RSS."""
    import psutil

    rss = pss = 0
    procs = c.our_processes(marker)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
    return {"processes": len(procs), "rss": rss, "pss": pss, "agent_rss": agent.memory_info().rss}


def idle_cores(marker: str, seconds: float = 10.0) -> float:
    """Cores the processes under the scratch root keep busy while nobody calls them."""
    procs = c.our_processes(marker)
    before = c.cpu_of(procs)
    time.sleep(seconds)
    return (c.cpu_of(procs) - before) / seconds


def memory(args: argparse.Namespace, run_root: Path) -> None:
    import nbserve

    names = [f"idle-{i:02d}" for i in range(1, args.deployments + 1)]
    with part("memory", run_root) as (root, home, _extra):
        marker = str(root)
        model, X = c.iris_model(10)
        deps = []
        t0 = time.monotonic()
        for name in names:
            deps.append(nbserve.deploy(model, name, X, progress=False))
        deploy_s = time.monotonic() - t0
        agent = agent_process(home)
        print(f"deployed {len(deps)} deployments (iris RandomForest, 10 trees) in {deploy_s:.0f} s "
              f"({deploy_s / len(deps):.1f} s each)")
        time.sleep(3)  # let the last server settle
        frame = nbserve.top()
        assert (frame["state"] == "warm").all(), frame["state"].value_counts().to_dict()
        warm = host_memory(marker, agent)
        warm["top_rss"] = float(frame["rss_bytes"].sum())
        warm["top_servers"] = int(frame["servers"].sum())
        warm["idle_cores"] = idle_cores(marker)

        t0 = time.monotonic()
        for dep in deps:
            dep.scale(idle_timeout=args.idle_timeout)
        scale_s = time.monotonic() - t0
        scaled = sum(int((d.events(limit=50)["kind"] == "scaled").sum()) for d in deps)
        waited = wait_for(lambda: (nbserve.top()["state"] == "cold").all() and nbserve.top()["servers"].sum() == 0,
                          300, "every deployment to scale to zero", interval=0.5)
        print(f"dep.scale(idle_timeout={args.idle_timeout!r}) on all took {scale_s:.1f} s "
              f"({scaled} 'scaled' events: each call restarted the live server); all cold {waited:.1f} s later")
        time.sleep(2)
        frame = nbserve.top()
        cold_m = host_memory(marker, agent)
        cold_m["top_rss"] = float(frame["rss_bytes"].sum())
        cold_m["top_servers"] = int(frame["servers"].sum())
        cold_m["idle_cores"] = idle_cores(marker)
    report_memory(args, warm, cold_m)


def report_memory(args: argparse.Namespace, warm: dict[str, float], cold_m: dict[str, float]) -> None:
    print()
    print(f"idle host with {args.deployments} deployments (one 10-tree iris forest each, 1 worker), "
          f"every process under the scratch NBSERVE_HOME")
    header = (f"{'state':<22}| {'processes':>9} {'servers':>7} | {'RSS MiB':>8} {'PSS MiB':>8} | "
              f"{'top() rss + agent MiB':>21} {'agent MiB':>9} | {'idle cores':>10}")
    print(header)
    print("-" * len(header))
    for label, m in (("all warm", warm), (f"scaled to zero ({args.idle_timeout})", cold_m)):
        print(f"{label:<22}| {m['processes']:>9} {m['top_servers']:>7} | {m['rss'] / MIB:>8.0f} "
              f"{m['pss'] / MIB:>8.0f} | {(m['top_rss'] + m['agent_rss']) / MIB:>21.0f} "
              f"{m['agent_rss'] / MIB:>9.0f} | {m['idle_cores']:>10.3f}")
    print()
    print(f"scaled to zero / all warm: RSS {cold_m['rss'] / warm['rss']:.3f}x, PSS {cold_m['pss'] / warm['pss']:.3f}x "
          f"({(warm['pss'] - cold_m['pss']) / MIB / args.deployments:.0f} MiB PSS freed per deployment)")


# -- main ----------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", choices=("throughput", "cold", "memory"),
                    default=["throughput", "cold", "memory"])
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per throughput run")
    ap.add_argument("--rounds", type=int, default=5, help="throughput rounds (each runs every target once)")
    ap.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds per target first")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--trees", type=int, default=200, help="trees of the CPU-bound forest")
    ap.add_argument("--batching", action=argparse.BooleanOptionalAction, default=True,
                    help="measure the adaptive batching targets too (throughput part)")
    ap.add_argument("--max-batch-size", type=int, default=64, help="batching targets' max_batch_size")
    ap.add_argument("--max-latency-ms", type=float, default=1000.0,
                    help="batching targets' max_latency_ms (high enough not to shed at this load)")
    ap.add_argument("--cold-rounds", type=int, default=5)
    ap.add_argument("--idle-timeout", default="2s")
    ap.add_argument("--deployments", type=int, default=20, help="deployments on the idle host (memory part)")
    ap.add_argument("--load", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dirs (logs) afterwards")
    args = ap.parse_args()
    tool = c.load_tool(args.load)
    print(f"machine: {c.machine_line()}")
    others = c.foreign_servers()
    if others:
        print(f"note: {len(others)} other bentoml/nbserve processes share the machine:")
        for line in others[:6]:
            print(f"  {line}")
    with c.scratch("scale", keep=args.keep) as run_root:
        try:
            if "throughput" in args.parts:
                print(f"load: {c.load_tool_description(tool)}")
                throughput(args, tool, run_root)
            if "cold" in args.parts:
                print()
                cold(args, run_root)
            if "memory" in args.parts:
                print()
                memory(args, run_root)
        finally:
            c.reap_and_say(str(run_root))


if __name__ == "__main__":
    main()
