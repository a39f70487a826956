"""Wire formats (issue #19): the same deployment and rows through /predict, Open Inference V2 and MLflow.

    PYTHONPATH=$PWD .venv/bin/python bench/protocols.py [--parts call http] [--seconds 5] [--rounds 3]
                                                        [--warmup 2] [--concurrency 1 8] [--rows 1 5]
                                                        [--timeit-rounds 7] [--load auto|wrk|python]
                                                        [--runtime auto|native|onnx]

The model: the 50-tree ``RandomForestClassifier(random_state=0)`` of bench/runtime.py, fitted on
scikit-learn's wine data (``load_wine(as_frame=True)``: 178 rows, 13 float columns, 3 classes;
nothing is downloaded), deployed once with ``nbserve.deploy(forest, "wine-protocols", X)``, the
default runtime (``--runtime`` asks another: the translation's share depends on what the model
costs). The rows: wines 0, 59, 130, 1, 60 (all three classes), the first ``--rows`` of them.
Each request carries the same rows in one of three wire formats, POSTed to the stable URL:

  predict   BentoML's own ``/predict``: ``{"data": [{column: value, ...}, ...]}``
  v2        Open Inference Protocol V2, ``/v2/models/wine-protocols/infer``: ``{"inputs": [{"name":
            column, "shape": [rows], "datatype": "FP64", "data": [...]}, ...]}``, one tensor per column
  mlflow    MLflow's scoring format, ``/invocations``: ``{"dataframe_split": {"columns": [...],
            "data": [[...], ...]}}``

v2 and mlflow are translated in the serving process by the ASGI middleware ``Protocols``
(nbserve/_serving.py, with nbserve/_protocols.py's adapters) and answered by the function behind
the version's own ``/predict`` route, called in process (``Serving.call``: no second JSON
encoding of the rows); on the stable URL a ``/v2/models/`` path also takes the agent's router
call (V2's versions are named in its path). All three must answer the same predictions (and the
forest's) before anything is timed.

Part ``call``, in this process, with a model that costs nothing: the version's ``Serving`` with a
model answering the deployment's real answer at once. ``/predict``: its function as BentoML calls
it (the body's JSON parsed, a DataFrame of its records, the function in a thread, the answer
encoded), without BentoML's HTTP layer; V2 and MLflow: the whole ``Protocols`` middleware around
the same function. Microseconds per request (median of ``--timeit-rounds`` timeit rounds of
>= 0.2 s). It takes the deployment's bundle (schema, outputs) and answers, so ``--parts call``
alone still deploys.

Part ``http``: load from a separate process (wrk when installed, else bench/_common.py's Python
keep-alive generator), closed loop at each concurrency: a warm-up per target, then ``--rounds``
rounds of one ``--seconds`` run per (format, rows), the order reversed every other round; medians
of requests/s, p50 and p99, the serving process tree's and the agent's CPU per request, and the
cores others used meanwhile.

Targets (printed, never asserted): each format >= 0.95x the throughput of ``/predict`` with the
same rows at the same concurrency; its added p50 (ms) is printed beside it. Every process
started here is stopped at the end, even on error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402  (sets BENTOML_DO_NOT_TRACK / UV_OFFLINE first)

NAME = "wine-protocols"
PROTOCOLS = ("predict", "v2", "mlflow")
PATHS = {"predict": "/predict", "v2": f"/v2/models/{NAME}/infer", "mlflow": "/invocations"}
SAMPLE = (0, 59, 130, 1, 60)  # wines of the three classes, so 5 rows answer more than one label
RPS_TARGET = 0.95


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def bodies(rows: Any) -> dict[str, bytes]:
    """The same rows (a DataFrame) as each format's request body."""
    columns = list(rows.columns)
    found = {
        "predict": {"data": rows.to_dict(orient="records")},
        "v2": {"inputs": [{"name": col, "shape": [len(rows)], "datatype": "FP64", "data": rows[col].tolist()}
                          for col in columns]},
        "mlflow": {"dataframe_split": {"columns": columns, "data": rows.to_numpy().tolist()}},
    }
    return {name: json.dumps(body).encode() for name, body in found.items()}


def predictions(protocol: str, answer: Any) -> list:
    """The predicted labels in each format's answer."""
    if protocol == "v2":
        return answer["outputs"][0]["data"]
    if protocol == "mlflow":
        return answer["predictions"]
    return answer


# -- part 1: the middleware in this process ------------------------------------------------


def stub_service(answer: list) -> Any:
    """The version's ``Serving`` (its schema check, its answer's conversion, the thread its
    model runs in) with a model that answers ``answer`` at once: what is left of a request
    in process once the model costs nothing."""
    import numpy as np
    from nbserve import _serving

    service = _serving.Serving()
    service._start({"predict": lambda frame: np.asarray(answer)})  # also what the middleware calls
    return service


def asgi_request(app: Any, path: str, body: bytes, repeat: int) -> Any:
    """A coroutine function sending ``repeat`` POSTs of ``body`` to ``path``; returns the last answer."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    message = {"type": "http.request", "body": body, "more_body": False}

    async def many() -> bytes:
        chunks: list[bytes] = []
        for _ in range(repeat):
            chunks.clear()

            async def receive() -> dict:
                return message

            async def send(sent: dict) -> None:
                if sent["type"] == "http.response.body":
                    chunks.append(sent.get("body", b""))

            await app(dict(scope), receive, send)
        return b"".join(chunks)

    return many


def predict_call(service: Any, body: bytes, repeat: int) -> Any:
    """``repeat`` answers of the function behind ``/predict`` to ``body``, as BentoML calls it
    (its JSON parsed, a DataFrame of its records, the function in a thread), without HTTP."""
    import anyio
    import pandas as pd
    from nbserve import _serving

    async def many() -> bytes:
        out = b""
        for _ in range(repeat):
            frame = pd.DataFrame(json.loads(body)["data"])
            answer = await anyio.to_thread.run_sync(service._answer, "predict", frame,
                                                    _serving._InProcessContext({}))
            out = json.dumps(answer.tolist()).encode()
        return out

    return many


def call(args: argparse.Namespace, bundle: dict, cases: dict[int, dict[str, bytes]],
         answers: dict[int, bytes]) -> None:
    from kinds import per_call_us
    from nbserve import _serving

    _serving.configure(bundle)  # what the served version's module knows: its schema, name, outputs
    repeat = 100
    loop = asyncio.new_event_loop()
    try:
        print(f"\nin this process, a model that costs nothing (median of {args.timeit_rounds} timeit rounds, "
              f"{repeat} requests per call): the function behind /predict as BentoML calls it, against "
              f"the Protocols middleware calling it:")
        header = f"{'rows':>4} {'format':<8}| {'us/request':>10} {'added us':>9}"
        print(header)
        print("-" * len(header))
        for rows in args.rows:
            service = stub_service(json.loads(answers[rows]))
            wrapped = _serving.Protocols(None)  # it never calls the app for these formats
            base = None
            for protocol in PROTOCOLS:
                if protocol == "predict":
                    many = predict_call(service, cases[rows][protocol], repeat)
                    once = predict_call(service, cases[rows][protocol], 1)
                else:
                    many = asgi_request(wrapped, PATHS[protocol], cases[rows][protocol], repeat)
                    once = asgi_request(wrapped, PATHS[protocol], cases[rows][protocol], 1)
                got = json.loads(loop.run_until_complete(once()))
                if predictions(protocol, got) != json.loads(answers[rows]):
                    raise RuntimeError(f"{protocol} in process answered {got}")
                us = per_call_us(lambda many=many: loop.run_until_complete(many()), args.timeit_rounds) / repeat
                base = us if protocol == "predict" else base
                added = "" if protocol == "predict" else f"{us - base:>+9.1f}"
                print(f"{rows:>4} {protocol:<8}| {us:>10.1f} {added:>9}", flush=True)
    finally:
        loop.close()


# -- part 2: over HTTP ---------------------------------------------------------------------


def http(args: argparse.Namespace, tool: str, root: Path, dep: Any, cases: dict[int, dict[str, bytes]],
         server_procs: list, agent_proc: Any) -> None:
    marker = str(root)
    targets = [(protocol, rows) for rows in args.rows for protocol in PROTOCOLS]
    ours = c.our_processes(marker)  # the agent and its servers: all name the scratch root
    work = {}
    for protocol, rows in targets:  # one per target: _common.load keeps its body per directory
        work[(protocol, rows)] = root / "load" / f"{protocol}-{rows}"
        work[(protocol, rows)].mkdir(parents=True, exist_ok=True)
    print(f"\nwarm-up: {args.warmup:g} s per target at concurrency {max(args.concurrency)}")
    for protocol, rows in targets:
        c.load(dep.url, PATHS[protocol], cases[rows][protocol], max(args.concurrency), args.warmup, tool,
               work[(protocol, rows)])
    results: dict[tuple[int, str, int], list[dict[str, float]]] = {}
    for conc in args.concurrency:
        for rnd in range(args.rounds):
            for protocol, rows in (targets if rnd % 2 == 0 else list(reversed(targets))):
                server0, agent0, ours0 = c.cpu_of(server_procs), c.cpu_of([agent_proc]), c.cpu_of(ours)
                busy0, wall0 = c.busy_seconds(), time.monotonic()
                out = c.load(dep.url, PATHS[protocol], cases[rows][protocol], conc, args.seconds, tool,
                             work[(protocol, rows)])
                wall = time.monotonic() - wall0
                n = max(1, out["requests"])
                out["server_us"] = (c.cpu_of(server_procs) - server0) / n * 1e6
                out["agent_us"] = (c.cpu_of([agent_proc]) - agent0) / n * 1e6
                mine = c.cpu_of(ours) - ours0 + out["load_cpu_s"]  # what this run used is not "others"
                out["others_cores"] = max(0.0, c.busy_seconds() - busy0 - mine) / wall
                results.setdefault((conc, protocol, rows), []).append(out)
                print(f"  c={conc} round {rnd + 1} {protocol:<7} {rows} row(s) {out['rps']:7.1f} rps "
                      f"p50 {out['p50_ms']:6.2f} ms p99 {out['p99_ms']:6.2f} ms errors {int(out['errors'])} "
                      f"(others {out['others_cores']:.2f} cores)", flush=True)
    report(args, tool, results)


def report(args: argparse.Namespace, tool: str, results: dict) -> None:
    def med(conc: int, protocol: str, rows: int, key: str) -> float:
        return c.median([r[key] for r in results[(conc, protocol, rows)]])

    print(f"\nwine RandomForest (50 trees) on nbserve's stable URL, load: {tool}; medians of {args.rounds} "
          f"interleaved {args.seconds:g} s runs per target")
    header = (f"{'conc':>4} {'rows':>4} {'format':<8}| {'rps':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} | "
              f"{'server CPU us/req':>17} {'agent':>6} | {'others':>6}")
    print(header)
    print("-" * len(header))
    for conc in args.concurrency:
        for rows in args.rows:
            for protocol in PROTOCOLS:
                key = (conc, protocol, rows)
                errors = sum(int(r["errors"]) for r in results[key])
                print(f"{conc:>4} {rows:>4} {protocol:<8}| {med(*key, 'rps'):>7.1f} {med(*key, 'p50_ms'):>7.2f} "
                      f"{med(*key, 'p99_ms'):>7.2f} {errors:>6} | {med(*key, 'server_us'):>17.0f} "
                      f"{med(*key, 'agent_us'):>6.0f} | {med(*key, 'others_cores'):>6.2f}")
    print()
    for conc in args.concurrency:
        for rows in args.rows:
            base = (conc, "predict", rows)
            for protocol in PROTOCOLS[1:]:
                key = (conc, protocol, rows)
                ratio = med(*key, "rps") / med(*base, "rps")
                add50 = med(*key, "p50_ms") - med(*base, "p50_ms")
                add_cpu = med(*key, "server_us") - med(*base, "server_us")
                print(f"c={conc} {rows} row(s) {protocol:<6}/predict throughput {ratio:.3f}x (target >= "
                      f"{RPS_TARGET:g}x: {met(ratio >= RPS_TARGET)}); added p50 {add50:+.2f} ms; "
                      f"added server CPU {add_cpu:+.0f} us/req")
    print("server = the version's `bentoml serve` process tree (the middleware runs in it); agent = the "
          "stable URL's proxy; others = cores busy with processes not of this bench")


# -- the deployment ------------------------------------------------------------------------


def run(args: argparse.Namespace, tool: str, root: Path) -> None:
    import psutil

    import nbserve
    from endpoint import server_tree_of
    from nbserve._config import Home
    from nbserve._local import find_agent
    from runtime import wine_forest

    marker = str(root)
    home = Home.resolve()
    try:
        forest, X = wine_forest()
        t0 = time.monotonic()
        asked = {"runtime": args.runtime} if args.runtime else {}  # none: nbserve's default
        dep = nbserve.deploy(forest, NAME, X, progress=False, **asked)
        elapsed = time.monotonic() - t0
        version = dep.refresh().versions[-1]
        serving = dep.metadata()["model"]["runtime"]
        server_procs = server_tree_of(c.split_url(version["upstream_url"])[1], marker)
        agent = find_agent(home)
        assert agent is not None, "the agent is not running after deploy"
        agent_proc = psutil.Process(agent.pid)
        print(f"deployed {NAME} v{dep.version} in {elapsed:.1f} s, runtime {serving['name']}"
              f"{' (' + serving['converter'] + ')' if serving.get('converter') else ''}; stable URL {dep.url}, "
              f"upstream {version['upstream_url']} ({len(server_procs)} processes)")

        cases, answers = {}, {}
        for rows in args.rows:
            frame = X.iloc[[SAMPLE[i % len(SAMPLE)] for i in range(rows)]]
            cases[rows] = bodies(frame)
            want = forest.predict(frame).tolist()
            said = {}
            for protocol in PROTOCOLS:
                status, payload = c.request(dep.url, "POST", PATHS[protocol], cases[rows][protocol], timeout=30)
                if status != 200:
                    raise RuntimeError(f"{protocol} {PATHS[protocol]} answered {status}: {payload[:300]!r}")
                said[protocol] = predictions(protocol, json.loads(payload))
                if protocol == "predict":
                    answers[rows] = payload
            same = all(v == want for v in said.values())
            sizes = ", ".join(f"{p} {len(cases[rows][p])} B" for p in PROTOCOLS)
            print(f"{rows} row(s): {sizes} -> {said['predict']} (the forest: {want}); the same from all three: {same}")
            if not same:
                raise RuntimeError(f"the formats answered differently for {rows} row(s): {said} (forest {want})")

        if "call" in args.parts:
            bundle = {**version["metadata"], "deployment": NAME}
            call(args, bundle, cases, answers)
        if "http" in args.parts:
            http(args, tool, root, dep, cases, server_procs, agent_proc)
    finally:
        c.stop_agents([home], marker)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", choices=("call", "http"), default=["call", "http"])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 5], help="rows per request")
    ap.add_argument("--runtime", choices=("auto", "native", "onnx"), help="deploy's runtime= (default: nbserve's)")
    c.add_load_arguments(ap, seconds=5.0, rounds=3, warmup=2.0)
    args = ap.parse_args()
    tool = c.load_tool(args.load)
    print(f"machine: {c.machine_line()}")
    print(f"load: {c.load_tool_description(tool)}")
    with c.scratch("protocols", keep=args.keep) as root:
        others = c.foreign_servers(str(root))
        if others:
            print(f"note: {len(others)} other bentoml/nbserve processes share the machine")
        run(args, tool, root)
    print(f"machine at the end: {c.machine_line()}")


if __name__ == "__main__":
    main()
