"""Compiled runtime (issue #16): a forest compiled to ONNX vs the forest itself, in this process and over HTTP.

    PYTHONPATH=$PWD .venv/bin/python bench/runtime.py [--parts call models http] [--seconds 5] [--rounds 3]
                                                      [--warmup 2] [--concurrency 1 8] [--timeit-rounds 7]
                                                      [--load auto|wrk|python]

The model: a 50-tree ``RandomForestClassifier(random_state=0)`` fitted on scikit-learn's wine data
(``load_wine(as_frame=True)``: 178 rows, 13 float columns, 3 classes; shipped with scikit-learn,
nothing is downloaded). It is compiled the way ``nbserve.deploy`` compiles it:
``nbserve._runtimes.choose_runtime("onnx", ...)`` on the whole data set as the reference sample
(skl2onnx, float32 input first, kept only when onnxruntime answers as the forest does), then
``nbserve._onnx_runtime.OnnxModel(graph, spec)``, the class the served Bento loads.

Part ``call``, in this process: ``forest.predict(frame)`` vs the compiled ``predict(frame)``, and
``predict_proba`` alike, for a 1-row and a 100-row DataFrame; timeit, median of ``--timeit-rounds``
rounds of at least 0.2 s each; microseconds per call and the speedup. The compiled call includes
turning the DataFrame into the graph's float32 tensor, as in the server.

Part ``models`` (not run by default): the 50-tree forest again, a 200-tree forest, a 100-round
LightGBM Booster and a 100-tree XGBClassifier on the same data (where installed): the seconds
``choose_runtime`` takes to convert each and replay the 178-row sample through onnxruntime (what
``runtime="auto"`` adds to a deploy; target <= 1 s for the 50-tree forest), the graph's size, and
the call native vs compiled for 1 and 100 rows.

Part ``http``: four or five targets, all on 127.0.0.1, one worker each:

  onnx      nbserve's stable URL of ``deploy(forest, "wine-onnx", X, runtime="onnx")``
  native    nbserve's stable URL of ``deploy(forest, "wine-native", X, runtime="native")``
  onnx-direct  the onnx version's own server, hit on its upstream port (no proxy): what the
            stable URL adds (p50, and the agent's CPU per request) is onnx minus this
  baseline  the same forest saved with ``bentoml.sklearn.save_model`` in a store of its own and
            served by plain ``bentoml serve`` of the hand-written service in bench/_bento_wine.py

  mlflow    `mlflow models serve` of the same forest (MLflow's defaults: one uvicorn worker), when
            a venv with mlflow is at .venv-mlflow (or --mlflow-python); sent MLflow's own
            `/invocations` request, `{"dataframe_split": ...}` of the same row

``--workers N`` gives the two nbserve deployments N workers (the baseline keeps one): issue
#16's agent target is stated at >= 1,000 requests/s, more than one worker of the compiled forest
serves on this machine.

Each request is one row as JSON, ``{"data": [row]}`` (the first wine); all must answer the
same label before anything is timed, and each deployment's ``/metadata`` must name the runtime
asked. Load comes from a separate process (wrk when installed, else bench/_common.py's Python
generator), closed loop at each concurrency: a warm-up per target, then ``--rounds`` interleaved
rounds (the order reversed every other round), medians of requests/s and p50/p99 latency, server
CPU per request (the serving process tree), agent CPU per request and the cores others used.

Targets (this bench's; printed, never asserted), from the README's "faster than the framework":
the compiled call >= 2x the forest's for 1 row; over HTTP, onnx >= 1x native and >= 1x baseline
throughput at every concurrency. Every process started here is stopped at the end, even on error.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402  (sets BENTOML_DO_NOT_TRACK / UV_OFFLINE first)

TARGETS = ("onnx", "onnx-direct", "native", "baseline")  # and "mlflow" where its venv is there
MLFLOW_PYTHON = c.ROOT / ".venv-mlflow" / "bin" / "python"
DEPLOYMENT = {"onnx": "wine-onnx", "native": "wine-native"}
BASELINE_MODEL = "wine-forest"  # the name bench/_bento_wine.py loads
ROWS = (1, 100)
METHODS = ("predict", "predict_proba")
CALL_TARGET = 2.0
CONVERT_TARGET_S = 1.0
RPS_TARGET = 1.0
ISSUE_RPS_TARGET, ISSUE_P50_TARGET = 5.0, 0.5  # issue #16, onnx vs plain `bentoml serve`
# issue #16's data path: what the stable URL adds over the same server hit on its own port
AGENT_US_TARGET = 60.0  # agent CPU per request, at >= 1,000 requests/s
AGENT_RPS_FLOOR = 1000.0
ADDED_P50_TARGET_MS = 0.2


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def wine_forest(trees: int = 50) -> tuple[Any, Any]:
    """(the fitted forest, 50 trees unless asked, the wine feature DataFrame)."""
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_wine(return_X_y=True, as_frame=True)
    return RandomForestClassifier(n_estimators=trees, random_state=0).fit(X, y), X


def compiled(forest: Any, X: Any) -> tuple[Any, Any]:
    """(the OnnxModel nbserve would serve, its Runtime record), by nbserve's own steps."""
    from nbserve._onnx_runtime import OnnxModel
    from nbserve._runtimes import choose_runtime

    chosen = choose_runtime("onnx", forest, flavor="sklearn", kind="frame", inputs=X,
                            answered={m: getattr(forest, m)(X) for m in METHODS})
    if chosen.name != "onnx":
        raise RuntimeError(f"the forest did not compile: {chosen.reason}")
    return OnnxModel(chosen.graph, chosen.spec), chosen


# -- part 1: the model call in this process -----------------------------------------------


def call(args: argparse.Namespace) -> None:
    import numpy as np

    from kinds import per_call_us
    from nbserve._runtimes import TOLERANCE

    forest, X = wine_forest()
    model, chosen = compiled(forest, X)
    print(f"\ncompiled: {chosen.details['converter']}, feed {chosen.spec['feed']} {chosen.spec['dtype']}, "
          f"{len(chosen.graph) / 1024:.0f} KiB graph, in {chosen.details['seconds']:.2f} s (with the parity check)")
    print(f"model call in this process (median of {args.timeit_rounds} timeit rounds):")
    header = f"{'method':<14} {'rows':>4} | {'forest us':>10} {'onnx us':>9} | {'speedup':>8}"
    print(header)
    print("-" * len(header))
    speedups = {}
    for rows in ROWS:
        frame = X.iloc[:rows]
        for method in METHODS:
            native, fast = getattr(forest, method), getattr(model, method)
            want, have = native(frame), fast(frame)
            same = (np.array_equal(want, have) if method == "predict"
                    else np.allclose(want, have, **TOLERANCE))
            if not same:
                raise RuntimeError(f"compiled {method} on {rows} rows differs: {want!r} vs {have!r}")
            forest_us = per_call_us(lambda: native(frame), args.timeit_rounds)
            onnx_us = per_call_us(lambda: fast(frame), args.timeit_rounds)
            speedups[(method, rows)] = forest_us / onnx_us
            print(f"{method:<14} {rows:>4} | {forest_us:>10.1f} {onnx_us:>9.1f} | {forest_us / onnx_us:>7.1f}x",
                  flush=True)
    for method in METHODS:
        ratio = speedups[(method, 1)]
        print(f"{method} 1 row: compiled {ratio:.1f}x the forest (target >= {CALL_TARGET:g}x: "
              f"{met(ratio >= CALL_TARGET)})")


# -- part 3: bigger models, and what compiling adds to a deploy ---------------------------


def other_models() -> dict[str, tuple[Any, Any, str, tuple[str, ...]]]:
    """name -> (model, its data, its flavor, the methods timed): where the gain differs."""
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True, as_frame=True)
    found: dict[str, tuple[Any, Any, str, tuple[str, ...]]] = {
        f"forest, {trees} trees": (wine_forest(trees)[0], X, "sklearn", METHODS) for trees in (50, 200)}
    try:
        import lightgbm as lgb

        booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 1},
                            lgb.Dataset(X, y), num_boost_round=100)
        found["LightGBM Booster, 100 rounds"] = (booster, X, "lightgbm", ("predict",))
    except ImportError:
        print("LightGBM not installed: its row is left out (pip install lightgbm)")
    try:
        import xgboost as xgb

        found["XGBClassifier, 100 trees"] = (xgb.XGBClassifier(n_estimators=100, n_jobs=1).fit(X, y), X, "xgboost",
                                             METHODS)
    except ImportError:
        print("XGBoost not installed: its row is left out (pip install xgboost-cpu)")
    return found


def models(args: argparse.Namespace) -> None:
    """Per model: the conversion and its parity replay on the 178-row sample (what runtime="auto"
    adds to a deploy, median of --timeit-rounds conversions), and the call, 1 and 100 rows."""
    import numpy as np

    from kinds import per_call_us
    from nbserve._flavors import flavor_named
    from nbserve._onnx_runtime import OnnxModel
    from nbserve._runtimes import TOLERANCE, choose_runtime

    print(f"\nconversion + parity replay, and the call (median of {args.timeit_rounds} rounds):")
    header = (f"{'model':<29} | {'convert s':>9} {'graph KiB':>9} | {'method':<13} {'rows':>4} | "
              f"{'native us':>10} {'onnx us':>9} {'speedup':>8}")
    print(header)
    print("-" * len(header))
    for name, (model, X, flavor, methods) in other_models().items():
        call = flavor_named(flavor).call
        answered = {m: np.asarray(call(model, m, X)) for m in methods}
        seconds, chosen = [], None
        for _ in range(args.timeit_rounds):
            t0 = time.perf_counter()
            chosen = choose_runtime("onnx", model, flavor=flavor, kind="frame", inputs=X, answered=answered)
            seconds.append(time.perf_counter() - t0)
            if chosen.name != "onnx":
                raise RuntimeError(f"{name} did not compile: {chosen.reason}")
        compiled_model = OnnxModel(chosen.graph, chosen.spec)
        first = True
        for rows in ROWS:
            frame = X.iloc[:rows]
            for method in methods:
                native, fast = (lambda: call(model, method, frame)), (lambda: getattr(compiled_model, method)(frame))
                want, have = np.asarray(native()), np.asarray(fast())
                same = np.array_equal(want, have) if want.dtype.kind in "iub" else np.allclose(want, have, **TOLERANCE)
                if not same:
                    raise RuntimeError(f"{name}: compiled {method} on {rows} rows differs")
                native_us, onnx_us = per_call_us(native, args.timeit_rounds), per_call_us(fast, args.timeit_rounds)
                lead = (f"{name:<29} | {statistics.median(seconds):>9.2f} {len(chosen.graph) / 1024:>9.0f}" if first
                        else f"{'':<29} | {'':>9} {'':>9}")
                first = False
                print(f"{lead} | {method:<13} {rows:>4} | {native_us:>10.1f} {onnx_us:>9.1f} "
                      f"{native_us / onnx_us:>7.1f}x", flush=True)
    print(f"conversion target (the 50-tree forest): <= {CONVERT_TARGET_S:g} s, with its parity replay")


# -- part 2: over HTTP ---------------------------------------------------------------------


def baseline_serve(store: Path, root: Path) -> tuple[c.ProcessTree, str]:
    port = c.free_port()
    tree = c.ProcessTree(
        [c.PY, "-m", "bentoml", "serve", "_bento_wine:WineForest", "--working-dir", str(c.BENCH),
         "--host", c.HOST, "--port", str(port)],
        env=c.child_env(BENTOML_HOME=str(store), PYTHONUNBUFFERED="1"), cwd=root, log_path=root / "baseline.log",
    )
    return tree, f"http://{c.HOST}:{port}"


def processes_of(tree: c.ProcessTree) -> list[Any]:
    """Every process the tree has had, read again (for CPU per request)."""
    tree.refresh()
    return list(tree.known.values())


def mlflow_serve(python: Path, root: Path) -> tuple[c.ProcessTree, str]:
    """`mlflow models serve` of the same forest (saved by bench/_mlflow_wine.py in mlflow's venv),
    its defaults (one uvicorn worker, access log on), on 127.0.0.1."""
    model = root / "mlflow-model"
    env = c.child_env(MLFLOW_TRACKING_URI=(root / "mlruns").as_uri(), MLFLOW_DISABLE_TELEMETRY="true",
                      DO_NOT_TRACK="true", PATH=f"{python.parent}:{os.environ.get('PATH', '')}")
    saved = subprocess.run([str(python), str(c.BENCH / "_mlflow_wine.py"), str(model)], env=env, cwd=root,
                           capture_output=True, text=True, timeout=300)
    if saved.returncode != 0:
        raise RuntimeError(f"saving the MLflow model failed: {saved.stderr[-800:]}")
    port = c.free_port()
    tree = c.ProcessTree([str(python.parent / "mlflow"), "models", "serve", "-m", str(model), "--env-manager", "local",
                          "-h", c.HOST, "-p", str(port), "-w", "1"], env=env, cwd=root, log_path=root / "mlflow.log")
    return tree, f"http://{c.HOST}:{port}"


def label_of(answer: Any) -> Any:
    """The one label of a one-row answer, whatever wraps it."""
    while isinstance(answer, dict) and len(answer) == 1:
        answer = next(iter(answer.values()))
    while isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]
    return answer


def http(args: argparse.Namespace, tool: str, root: Path) -> None:
    import psutil

    import nbserve
    from endpoint import server_tree_of
    from kinds import save_baseline_model
    from nbserve._config import Home
    from nbserve._local import find_agent

    marker = str(root)
    store = root / "baseline-bentoml"
    tree = mlflow_tree = None
    targets = TARGETS
    home = Home.resolve()
    try:
        forest, X = wine_forest()
        tag = save_baseline_model(forest, BASELINE_MODEL, store, root)
        tree, baseline_url = baseline_serve(store, root)
        print(f"baseline: {tag} served by _bento_wine:WineForest at {baseline_url} (pid {tree.pid})")
        urls, servers = {"baseline": baseline_url}, {}
        if args.mlflow_python.exists():
            mlflow_tree, urls["mlflow"] = mlflow_serve(args.mlflow_python, root)
            targets = (*TARGETS, "mlflow")
            print(f"mlflow: `mlflow models serve` of the same forest at {urls['mlflow']} (pid {mlflow_tree.pid})")
        else:
            print(f"mlflow: left out, no {args.mlflow_python} (python3 -m venv .venv-mlflow && "
                  ".venv-mlflow/bin/pip install mlflow scikit-learn==<this venv's>)")
        for name in ("onnx", "native"):
            t0 = time.monotonic()
            dep = nbserve.deploy(forest, DEPLOYMENT[name], X, runtime=name, workers=args.workers, progress=False)
            elapsed = time.monotonic() - t0
            version = dep.refresh().versions[-1]
            serving = dep.metadata()["model"]["runtime"]
            if serving["name"] != name:
                raise RuntimeError(f"{DEPLOYMENT[name]} serves {serving['name']}, not {name}: {serving}")
            urls[name] = dep.url
            procs = server_tree_of(c.split_url(version["upstream_url"])[1], marker)
            servers[name] = lambda procs=procs: procs
            if name == "onnx":
                urls["onnx-direct"] = version["upstream_url"]
                servers["onnx-direct"] = servers[name]
            print(f"deployed {DEPLOYMENT[name]} v{dep.version} in {elapsed:.1f} s, runtime {serving['name']}"
                  f"{' (' + serving['converter'] + ')' if serving.get('converter') else ''}; stable URL {dep.url}, "
                  f"upstream {version['upstream_url']} ({len(procs)} processes)")
        c.wait_until_ok(baseline_url, "GET", "/readyz", timeout=180, alive=tree.alive)
        tree.refresh()
        servers["baseline"] = lambda: processes_of(tree)
        requests = {name: ("/predict", json.dumps({"data": X.iloc[:1].to_dict(orient="records")}).encode())
                    for name in targets}
        if mlflow_tree is not None:
            c.wait_until_ok(urls["mlflow"], "GET", "/ping", timeout=180, alive=mlflow_tree.alive)
            mlflow_tree.refresh()
            servers["mlflow"] = lambda: processes_of(mlflow_tree)
            split = X.iloc[:1].to_dict(orient="split")
            requests["mlflow"] = ("/invocations", json.dumps(
                {"dataframe_split": {"columns": split["columns"], "data": split["data"]}}).encode())
        agent = find_agent(home)
        assert agent is not None, "the agent is not running after deploy"
        agent_proc = psutil.Process(agent.pid)

        body = requests["onnx"][1]
        answers = {}
        for name in targets:
            status, payload = c.request(urls[name], "POST", *requests[name], timeout=30)
            if status != 200:
                raise RuntimeError(f"{name} {requests[name][0]} answered {status}: {payload[:300]!r}")
            answers[name] = json.loads(payload)
        labels = {name: label_of(a) for name, a in answers.items()}
        same = len({json.dumps(v) for v in labels.values()}) == 1
        print(f"request: POST /predict, {len(body)} B, 1 row -> {json.dumps(answers['onnx'])[:60]} (baseline "
              f"{json.dumps(answers['baseline'])[:40]}); same label from all: {same}")
        if not same:
            raise RuntimeError(f"the targets answered different labels: {answers}")

        tree.refresh()
        ours = c.our_processes(marker)  # servers, agent, the agent's servers: all name the scratch root
        ours += servers["mlflow"]() if mlflow_tree is not None else []  # its uvicorn names no path of ours
        work = {}
        for name in targets:  # one per target: _common.load keeps its script per directory
            work[name] = root / "load" / name
            work[name].mkdir(parents=True, exist_ok=True)
        print(f"warm-up: {args.warmup:g} s per target at concurrency {max(args.concurrency)}")
        for name in targets:
            c.load(urls[name], *requests[name], max(args.concurrency), args.warmup, tool, work[name])
        results: dict[tuple[int, str], list[dict[str, float]]] = {}
        for conc in args.concurrency:
            for rnd in range(args.rounds):
                for name in (targets if rnd % 2 == 0 else tuple(reversed(targets))):
                    procs = servers[name]()
                    server0, agent0, ours0 = c.cpu_of(procs), c.cpu_of([agent_proc]), c.cpu_of(ours)
                    busy0, wall0 = c.busy_seconds(), time.monotonic()
                    out = c.load(urls[name], *requests[name], conc, args.seconds, tool, work[name])
                    wall = time.monotonic() - wall0
                    n = max(1, out["requests"])
                    out["server_us"] = (c.cpu_of(procs) - server0) / n * 1e6
                    out["agent_us"] = (c.cpu_of([agent_proc]) - agent0) / n * 1e6
                    mine = c.cpu_of(ours) - ours0 + out["load_cpu_s"]  # what this run used is not "others"
                    out["others_cores"] = max(0.0, c.busy_seconds() - busy0 - mine) / wall
                    results.setdefault((conc, name), []).append(out)
                    print(f"  c={conc} round {rnd + 1} {name:<11} {out['rps']:7.1f} rps p50 {out['p50_ms']:6.2f} ms "
                          f"p99 {out['p99_ms']:6.2f} ms errors {int(out['errors'])} "
                          f"(others {out['others_cores']:.2f} cores)", flush=True)
        report(args, tool, results, targets)
    finally:
        if mlflow_tree is not None:
            survivors = mlflow_tree.stop()
            if survivors:
                print(f"warning: mlflow processes survived SIGKILL: {survivors}")
        if tree is not None:
            survivors = tree.stop()
            if survivors:
                print(f"warning: baseline processes survived SIGKILL: {survivors}")
        c.stop_agents([home], marker)


def report(args: argparse.Namespace, tool: str, results: dict, targets: tuple[str, ...]) -> None:
    def med(conc: int, name: str, key: str) -> float:
        return c.median([r[key] for r in results[(conc, name)]])

    print(f"\nwine RandomForest (50 trees), POST /predict with 1 row, load: {tool}; "
          f"medians of {args.rounds} interleaved {args.seconds:g} s runs per target")
    header = (f"{'conc':>4} {'target':<11}| {'rps':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} | "
              f"{'server CPU us/req':>17} {'agent':>6} | {'others':>6}")
    print(header)
    print("-" * len(header))
    for conc in args.concurrency:
        for name in targets:
            errors = sum(int(r["errors"]) for r in results[(conc, name)])
            agent = f"{med(conc, name, 'agent_us'):>6.0f}" if name not in ("baseline", "mlflow") else f"{'-':>6}"
            print(f"{conc:>4} {name:<11}| {med(conc, name, 'rps'):>7.1f} {med(conc, name, 'p50_ms'):>7.2f} "
                  f"{med(conc, name, 'p99_ms'):>7.2f} {errors:>6} | {med(conc, name, 'server_us'):>17.0f} "
                  f"{agent} | {med(conc, name, 'others_cores'):>6.2f}")
    print()
    for conc in args.concurrency:
        for base in [b for b in ("native", "baseline", "mlflow") if b in targets]:
            ratio = med(conc, "onnx", "rps") / med(conc, base, "rps")
            p50, base50 = med(conc, "onnx", "p50_ms"), med(conc, base, "p50_ms")
            print(f"c={conc} onnx/{base:<8} throughput {ratio:.2f}x (target >= {RPS_TARGET:g}x: "
                  f"{met(ratio >= RPS_TARGET)}), p50 {p50 / base50:.2f}x ({p50 - base50:+.2f} ms)")
    # issue #16's own targets against plain `bentoml serve`: >= 5x throughput at c=8, p50 <= 0.5x at c=1
    if 8 in args.concurrency:
        ratio = med(8, "onnx", "rps") / med(8, "baseline", "rps")
        print(f"issue #16: onnx/baseline throughput at c=8 {ratio:.2f}x (target >= {ISSUE_RPS_TARGET:g}x: "
              f"{met(ratio >= ISSUE_RPS_TARGET)})")
    if 1 in args.concurrency:
        ratio = med(1, "onnx", "p50_ms") / med(1, "baseline", "p50_ms")
        print(f"issue #16: onnx/baseline p50 at c=1 {ratio:.2f}x (target <= {ISSUE_P50_TARGET:g}x: "
              f"{met(ratio <= ISSUE_P50_TARGET)})")
    for conc in args.concurrency:
        added = med(conc, "onnx", "p50_ms") - med(conc, "onnx-direct", "p50_ms")
        agent_us, rps = med(conc, "onnx", "agent_us"), med(conc, "onnx", "rps")
        floor = "" if rps >= AGENT_RPS_FLOOR else f", below the target's {AGENT_RPS_FLOOR:,.0f} requests/s"
        print(f"c={conc} stable URL over the onnx server direct: added p50 {added * 1000:+.0f} us (target <= "
              f"{ADDED_P50_TARGET_MS * 1000:.0f} us: {met(added <= ADDED_P50_TARGET_MS)}), agent CPU {agent_us:.0f} "
              f"us/req at {rps:,.0f} requests/s (target <= {AGENT_US_TARGET:.0f} us: "
              f"{met(agent_us <= AGENT_US_TARGET)}{floor})")
    print("onnx/native = nbserve's stable URL, compiled vs the forest itself; onnx/baseline = compiled behind "
          "nbserve's stable URL vs the forest in a hand-written service (bench/_bento_wine.py), plain `bentoml "
          "serve`, no proxy; others = cores busy with processes not of this bench")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", choices=("call", "models", "http"), default=["call", "http"])
    ap.add_argument("--workers", type=int, default=1, help="workers of the two nbserve deployments")
    ap.add_argument("--mlflow-python", type=Path, default=MLFLOW_PYTHON,
                    help="the Python of a venv with mlflow and this venv's scikit-learn (the mlflow target)")
    c.add_load_arguments(ap, seconds=5.0, rounds=3, warmup=2.0)
    args = ap.parse_args()
    print(f"machine: {c.machine_line()}")
    if "call" in args.parts:
        call(args)
    if "models" in args.parts:
        models(args)
    if "http" in args.parts:
        tool = c.load_tool(args.load)
        print(f"\nload: {c.load_tool_description(tool)}")
        with c.scratch("runtime", keep=args.keep) as root:
            others = c.foreign_servers(str(root))
            if others:
                print(f"note: {len(others)} other bentoml/nbserve processes share the machine")
            http(args, tool, root)
    print(f"machine at the end: {c.machine_line()}")


if __name__ == "__main__":
    main()
