"""Many models on one host: shared model servers vs a server per version.

    .venv/bin/python bench/density.py [--parts memory hot evicted] [--counts 20 100] [--dedicated 20]
                                      [--seconds 5] [--rounds 3] [--concurrency 8] [--evict-rounds 5]
                                      [--load auto|wrk|python]

Three parts, each in its own scratch NBSERVE_HOME, all on 127.0.0.1:

  memory   ``--dedicated`` small deployments on the local engine (a server each), then for each
           of ``--counts`` as many on the shared engine (one shared server): half 3-level decision
           trees, half 50-tree forests on iris, each under its own name. One request to each so
           every model is loaded; then the RSS and PSS (PSS counts shared pages once) of every
           process under the scratch root: the agent, its servers and their workers. 100
           dedicated deployments are not run: at ~400 MiB each they need more memory than this
           machine has (that is the point).
  hot      One 50-tree forest deployed twice on one agent, on the local engine and on the shared
           engine (its shared server also holding 10 idle models), loaded in turn through their
           stable URLs at ``--concurrency`` for ``--seconds`` per round, order swapped every
           round: throughput and p50 of shared / dedicated (medians of per-round ratios).
  evicted  An agent with ``--shared-models 1``: two shared deployments; each round asks the other
           one first (which evicts this one) and times this one's request, answered after its
           model is loaded again. Against it, the same forest on the local engine scaled to zero
           (``idle_timeout="2s"``), timed on the request that wakes it (its server starts).

Targets (printed, never asserted): 100 warm shared deployments in <= 2 GiB in all; the hot
shared deployment >= 0.9x the dedicated one's throughput; an evicted model's first answer
<= 0.5 s. Every process started here is stopped at the end, and the script says so.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402  (sets BENTOML_DO_NOT_TRACK / UV_OFFLINE first)
from scale import host_memory, is_cold, part, timed_post, wait_for  # noqa: E402

MIB = 2**20
GIB_TARGET = 2.0
HOT_TARGET = 0.9
EVICTED_TARGET_S = 0.5


def small_models(count: int) -> tuple[list[Any], Any]:
    """``count`` small iris models, alternating a 3-level decision tree and a 50-tree forest."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = c.FEATURES
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    forest = RandomForestClassifier(n_estimators=50, random_state=0).fit(X, y)
    return [tree if i % 2 == 0 else forest for i in range(count)], X


def deploy_many(count: int, engine: str, prefix: str) -> tuple[list[Any], float]:
    import nbserve

    models, X = small_models(count)
    t0 = time.monotonic()
    deps = [nbserve.deploy(m, f"{prefix}-{i:03d}", X.head(30), engine=engine, progress=False)
            for i, m in enumerate(models)]
    return deps, time.monotonic() - t0


def warm_all(deps: list[Any]) -> None:
    body = c.iris_body(1)
    for dep in deps:
        _s, status, _h = timed_post(dep.url, body)
        if status != 200:
            raise RuntimeError(f"{dep.name} answered {status}")


# -- memory ------------------------------------------------------------------------------


def memory(args: argparse.Namespace, run_root: Path) -> list[dict[str, Any]]:
    from nbserve._local import find_agent

    import psutil

    rows = []
    plans = ([("local", args.dedicated)] if args.dedicated else []) + [("shared", n) for n in args.counts]
    for engine, count in plans:
        with part(f"memory-{engine}-{count}", run_root) as (root, home, _extra):
            deps, seconds = deploy_many(count, engine, "m")
            warm_all(deps)
            time.sleep(3)  # the shared servers' status and the last server settle
            agent = psutil.Process(find_agent(home).pid)
            measured = host_memory(str(root), agent)
            import nbserve

            frame = nbserve.top()
            measured.update(engine=engine, count=count, deploy_s=seconds, top_rss=float(frame["rss_bytes"].sum()))
            rows.append(measured)
            print(f"  {count} deployments on the {engine} engine: deployed in {seconds:.0f} s; "
                  f"{measured['processes']} processes, RSS {measured['rss'] / MIB:.0f} MiB, "
                  f"PSS {measured['pss'] / MIB:.0f} MiB", flush=True)
    print()
    print("small deployments, all warm (a request answered by each); every process under the scratch NBSERVE_HOME")
    header = (f"{'engine':<8}| {'deployments':>11} | {'processes':>9} | {'RSS MiB':>8} {'PSS MiB':>8} | "
              f"{'PSS MiB each':>12} | {'agent MiB':>9} | {'deploy s each':>13}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['engine']:<8}| {r['count']:>11} | {r['processes']:>9} | {r['rss'] / MIB:>8.0f} "
              f"{r['pss'] / MIB:>8.0f} | {r['pss'] / MIB / r['count']:>12.1f} | {r['agent_rss'] / MIB:>9.0f} | "
              f"{r['deploy_s'] / r['count']:>13.2f}")
    dedicated = next((r for r in rows if r["engine"] == "local"), None)
    for r in rows:
        if r["engine"] != "shared":
            continue
        line = f"{r['count']} shared: RSS {r['rss'] / 2**30:.2f} GiB in all"
        if r["count"] == 100:
            line += f" (target <= {GIB_TARGET:g} GiB: {'met' if r['rss'] / 2**30 <= GIB_TARGET else 'NOT met'})"
        if dedicated is not None and dedicated["count"] == r["count"]:
            line += (f"; vs {r['count']} dedicated: RSS {r['rss'] / dedicated['rss']:.3f}x, "
                     f"PSS {r['pss'] / dedicated['pss']:.3f}x")
        print(line)
    return rows


# -- hot ---------------------------------------------------------------------------------


def hot(args: argparse.Namespace, tool: str, run_root: Path) -> None:
    import nbserve

    with part("hot", run_root) as (root, _home, _extra):
        model, X = c.iris_model(50)
        idle, _ = deploy_many(10, "shared", "idle")
        targets = {"dedicated": nbserve.deploy(model, "hot-dedicated", X.head(30), engine="local", progress=False),
                   "shared": nbserve.deploy(model, "hot-shared", X.head(30), engine="shared", progress=False)}
        warm_all(idle + list(targets.values()))
        body = c.iris_body(1)
        for name, dep in targets.items():  # warm-up, unmeasured
            (root / name).mkdir()
            c.load(dep.url, "/predict", body, args.concurrency, 2, tool, root / name)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for rnd in range(args.rounds):
            order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
            for name in order:
                result = c.load(targets[name].url, "/predict", body, args.concurrency, args.seconds, tool, root / name)
                results[name].append(result)
                print(f"  round {rnd + 1} {name:<9}: {result['rps']:>7.0f} req/s, p50 {result['p50_ms']:.2f} ms, "
                      f"errors {result['errors']}", flush=True)
    rps = [s["rps"] / d["rps"] for s, d in zip(results["shared"], results["dedicated"])]
    p50 = [s["p50_ms"] / d["p50_ms"] for s, d in zip(results["shared"], results["dedicated"])]
    print()
    print(f"one hot deployment (50-tree iris forest, 1 row) at c={args.concurrency}, {args.rounds} rounds of "
          f"{args.seconds:g} s; the shared server also holds 10 idle models")
    for name in targets:
        print(f"  {name:<9}: {c.median([r['rps'] for r in results[name]]):>7.0f} req/s, "
              f"p50 {c.median([r['p50_ms'] for r in results[name]]):.2f} ms")
    ratio = c.median(rps)
    print(f"shared / dedicated: throughput {ratio:.3f}x (target >= {HOT_TARGET:g}x: "
          f"{'met' if ratio >= HOT_TARGET else 'NOT met'}), p50 {c.median(p50):.3f}x")


# -- evicted -----------------------------------------------------------------------------


def evicted(args: argparse.Namespace, run_root: Path) -> None:
    import nbserve
    from nbserve._local import start_agent

    body = c.iris_body(1)
    rows = []
    with part("evicted", run_root) as (_root, home, _extra):
        start_agent(home, ["--shared-models", "1"])
        model, X = c.iris_model(50)
        first = nbserve.deploy(model, "lru-a", X.head(30), engine="shared", progress=False)
        other = nbserve.deploy(model, "lru-b", X.head(30), engine="shared", progress=False)
        cold = nbserve.deploy(model, "cold-dedicated", X.head(30), engine="local", idle_timeout="2s",
                              progress=False)
        for rnd in range(args.evict_rounds):
            timed_post(other.url, body)  # loads lru-b: lru-a is evicted
            reload_s, status, _h = timed_post(first.url, body)
            warm_s = min(timed_post(first.url, body)[0] for _ in range(5))
            if status != 200:
                raise RuntimeError(f"the evicted model's request answered {status}")
            wait_for(lambda: is_cold("cold-dedicated"), 120, "the dedicated deployment to scale to zero")
            cold_s, status, _h = timed_post(cold.url, body)
            if status != 200:
                raise RuntimeError(f"the cold request answered {status}")
            rows.append({"reload_s": reload_s, "warm_ms": warm_s * 1000, "cold_s": cold_s})
            print(f"  round {rnd + 1}: evicted model's first answer {reload_s:.3f} s (warm {warm_s * 1000:.1f} ms); "
                  f"dedicated from zero {cold_s:.2f} s", flush=True)
        evictions = int((first.events(limit=500)["kind"] == "model_evicted").sum())
    med = {key: c.median([r[key] for r in rows]) for key in rows[0]}
    print()
    print(f"time to first answer, medians of {len(rows)} rounds ({evictions} eviction events for lru-a)")
    print(f"  evicted model in a shared server (--shared-models 1): {med['reload_s']:.3f} s "
          f"(target <= {EVICTED_TARGET_S:g} s: {'met' if med['reload_s'] <= EVICTED_TARGET_S else 'NOT met'})")
    print(f"  dedicated version scaled to zero, its server started: {med['cold_s']:.2f} s")
    print(f"  evicted / cold dedicated: {med['reload_s'] / med['cold_s']:.3f}x; warm request {med['warm_ms']:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", choices=("memory", "hot", "evicted"), default=["memory", "hot", "evicted"])
    ap.add_argument("--counts", type=int, nargs="+", default=[20, 100], help="shared deployments (memory part)")
    ap.add_argument("--dedicated", type=int, default=20, help="dedicated deployments (memory part; 0: none)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--evict-rounds", type=int, default=5)
    ap.add_argument("--load", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dirs (logs) afterwards")
    args = ap.parse_args()
    tool = c.load_tool(args.load)
    print(f"machine: {c.machine_line()}")
    with c.scratch("density", keep=args.keep) as run_root:
        try:
            if "memory" in args.parts:
                memory(args, run_root)
            if "hot" in args.parts:
                print()
                print(f"load: {c.load_tool_description(tool)}")
                hot(args, tool, run_root)
            if "evicted" in args.parts:
                print()
                evicted(args, run_root)
        finally:
            c.reap_and_say(str(run_root))


if __name__ == "__main__":
    main()
