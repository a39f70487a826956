"""What does nbserve's stable URL cost on a real model?  Direct vs stable, same Bento.

    .venv/bin/python bench/endpoint.py [--seconds 10] [--rounds 3] [--concurrency 1 8]
                                       [--warmup 3] [--rows 1] [--load auto|wrk|python]

One iris RandomForest (scikit-learn, 50 trees) is deployed with ``nbserve.deploy``.
The same Bento is then served three ways, all on 127.0.0.1, one worker each:

  direct    an independent plain ``python -m bentoml serve <bento>`` started by this
            bench (BENTOML_HOME = the agent's store): the baseline
  upstream  the ``bentoml serve`` process nbserve's agent started for the version,
            hit on its own port (the same server as behind the stable URL)
  stable    nbserve's stable URL (the agent's reverse proxy in front of "upstream")

Load comes from a separate process: wrk (a Lua script POSTs the JSON body) when it is
installed, else the Python keep-alive generator in bench/_common.py; the output says which.
Each concurrency gets a warm-up, then ``--rounds`` rounds of one ``--seconds`` run per
target, the order reversed every other round so drift hits all targets alike; the table
shows medians. CPU columns are CPU seconds per request of the serving process tree, of
the agent (the proxy lives in it) and of the load generator, read from /proc.

Targets (printed beside the figures, never asserted): stable >= 0.85x direct throughput,
<= 1 ms added p50.  Every process started here is stopped at the end, even on error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402  (sets BENTOML_DO_NOT_TRACK / UV_OFFLINE first)

TARGETS = ("direct", "upstream", "stable")
RPS_TARGET = 0.85
P50_TARGET_MS = 1.0


def server_tree_of(port: int, marker: str) -> list:
    """The agent's ``bentoml serve ... --port PORT`` process and its descendants."""
    for proc in c.our_processes(marker):
        try:
            cmd = proc.cmdline()
        except Exception:  # noqa: BLE001
            continue
        if "serve" in cmd and "--port" in cmd and cmd[cmd.index("--port") + 1] == str(port):
            return [proc, *proc.children(recursive=True)]
    return []


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def run(args: argparse.Namespace) -> None:
    tool = c.load_tool(args.load)
    body = c.iris_body(args.rows)
    with c.scratch("endpoint", keep=args.keep) as root:
        marker = str(root)
        print(f"machine: {c.machine_line()}")
        others = c.foreign_servers(marker)
        if others:
            print(f"note: {len(others)} other bentoml/nbserve processes share the machine:")
            for line in others[:6]:
                print(f"  {line}")
        print(f"load: {c.load_tool_description(tool)}")

        direct_tree = None
        home = None
        try:
            import psutil

            import nbserve
            from nbserve._config import Home
            from nbserve._local import find_agent

            home = Home.resolve()
            model, X = c.iris_model(50)
            t0 = time.monotonic()
            dep = nbserve.deploy(model, "iris", X, progress=False)
            print(f"deployed iris v{dep.version} in {time.monotonic() - t0:.1f} s; stable URL {dep.url}")
            version = dep.refresh().versions[-1]
            bento_tag, upstream_url = version["bento_tag"], version["upstream_url"]
            agent = find_agent(home)
            assert agent is not None, "the agent is not running after deploy"
            agent_proc = psutil.Process(agent.pid)

            direct_tree, direct_url = c.bentoml_serve(
                bento_tag, bentoml_home=home.bentoml_home, cwd=root, log_path=root / "direct.log"
            )
            c.wait_until_ok(direct_url, "GET", "/readyz", timeout=180, alive=direct_tree.alive)
            direct_tree.refresh()
            upstream_procs = server_tree_of(c.split_url(upstream_url)[1], marker)
            urls = {"direct": direct_url, "upstream": upstream_url, "stable": dep.url}
            trees = {
                "direct": lambda: list(direct_tree.known.values()),
                "upstream": lambda: upstream_procs,
                "stable": lambda: upstream_procs,
            }
            print(f"bento {bento_tag}; direct {direct_url} (pid {direct_tree.pid}); "
                  f"upstream {upstream_url} ({len(upstream_procs)} processes); agent pid {agent.pid}")

            answers = {}
            for name, url in urls.items():
                status, payload = c.request(url, "POST", "/predict", body, timeout=30)
                if status != 200:
                    raise RuntimeError(f"{name} {url}/predict answered {status}: {payload[:300]!r}")
                answers[name] = payload
            if len(set(answers.values())) != 1:
                print(f"warning: the targets answer differently: {answers}")
            print(f"request: POST /predict, {len(body)} bytes, {args.rows} row(s) -> {answers['stable'][:60].decode()}")

            print(f"warm-up: {args.warmup:g} s per target at concurrency {max(args.concurrency)}")
            for name in TARGETS:
                c.load(urls[name], "/predict", body, max(args.concurrency), args.warmup, tool, root)

            results: dict[tuple[int, str], list[dict[str, float]]] = {}
            for conc in args.concurrency:
                for rnd in range(args.rounds):
                    order = TARGETS if rnd % 2 == 0 else tuple(reversed(TARGETS))
                    for name in order:
                        direct_tree.refresh()
                        procs = trees[name]()
                        ours = [*direct_tree.known.values(), *upstream_procs, agent_proc]
                        server0, agent0, ours0 = c.cpu_of(procs), c.cpu_of([agent_proc]), c.cpu_of(ours)
                        busy0, wall0 = c.busy_seconds(), time.monotonic()
                        out = c.load(urls[name], "/predict", body, conc, args.seconds, tool, root)
                        wall = time.monotonic() - wall0
                        n = max(1, out["requests"])
                        out["server_us"] = (c.cpu_of(procs) - server0) / n * 1e6
                        out["agent_us"] = (c.cpu_of([agent_proc]) - agent0) / n * 1e6
                        out["load_us"] = out["load_cpu_s"] / n * 1e6
                        # CPU the rest of the machine used meanwhile, in cores: other
                        # people's processes competing for the same two cores.
                        mine = c.cpu_of(ours) - ours0 + out["load_cpu_s"]
                        out["others_cores"] = max(0.0, c.busy_seconds() - busy0 - mine) / wall
                        results.setdefault((conc, name), []).append(out)
                        print(f"  c={conc} round {rnd + 1} {name:<8} {out['rps']:7.1f} rps "
                              f"p50 {out['p50_ms']:6.2f} ms p99 {out['p99_ms']:6.2f} ms "
                              f"errors {int(out['errors'])}  (others used {out['others_cores']:.2f} cores)",
                              flush=True)
            report(args, tool, results)
        finally:
            if direct_tree is not None:
                survivors = direct_tree.stop()
                if survivors:
                    print(f"warning: direct server processes survived SIGKILL: {survivors}")
            if home is not None:
                from nbserve._local import stop_agent

                stop_agent(home)
            time.sleep(0.5)
            left = c.reap(marker)
            print("processes left behind: " + ("none" if not left else f"{len(left)} (killed now):"))
            for line in left:
                print(f"  {line}")


def report(args: argparse.Namespace, tool: str, results: dict) -> None:
    def med(conc: int, name: str, key: str) -> float:
        return c.median([r[key] for r in results[(conc, name)]])

    print()
    print(f"iris RandomForest (50 trees), POST /predict with {args.rows} row(s), load: {tool}; "
          f"medians of {args.rounds} interleaved {args.seconds:g} s runs")
    header = (f"{'conc':>4} {'target':<9}| {'rps':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} | "
              f"{'CPU us/req: server':>18} {'agent':>6} {'load':>6} | {'others':>6}")
    print(header)
    print("-" * len(header))
    for conc in args.concurrency:
        for name in TARGETS:
            errors = sum(int(r["errors"]) for r in results[(conc, name)])
            print(f"{conc:>4} {name:<9}| {med(conc, name, 'rps'):>7.1f} {med(conc, name, 'p50_ms'):>7.2f} "
                  f"{med(conc, name, 'p99_ms'):>7.2f} {errors:>6} | {med(conc, name, 'server_us'):>18.0f} "
                  f"{med(conc, name, 'agent_us'):>6.0f} {med(conc, name, 'load_us'):>6.0f} | "
                  f"{med(conc, name, 'others_cores'):>6.2f}")
    print()
    for conc in args.concurrency:
        for base in ("direct", "upstream"):
            ratio = med(conc, "stable", "rps") / med(conc, base, "rps")
            add50 = med(conc, "stable", "p50_ms") - med(conc, base, "p50_ms")
            add99 = med(conc, "stable", "p99_ms") - med(conc, base, "p99_ms")
            label = "stable/direct  " if base == "direct" else "stable/upstream"
            targets = (f" (target >= {RPS_TARGET}x: {met(ratio >= RPS_TARGET)})",
                       f" (target <= {P50_TARGET_MS:g} ms: {met(add50 <= P50_TARGET_MS)})")
            if base == "upstream":
                targets = ("", "")
            print(f"c={conc} {label} throughput {ratio:.2f}x{targets[0]}; "
                  f"added p50 {add50:+.2f} ms{targets[1]}; added p99 {add99:+.2f} ms")
    print("direct = independent `bentoml serve` of the same Bento; upstream = the agent's own "
          "`bentoml serve` hit on its port (stable minus upstream = the proxy alone); "
          "others = cores busy with processes not of this bench during the runs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per concurrency")
    ap.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds per target first")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--rows", type=int, default=1, help="rows per request")
    ap.add_argument("--load", choices=("auto", "wrk", "python"), default="auto",
                    help="load generator: wrk if installed (auto), or the Python one")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (logs) afterwards")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
