"""Kinds of input (issue #15): text and N-D arrays through nbserve vs a hand-written BentoML service.

    .venv/bin/python bench/kinds.py [--parts http validation] [--seconds 3] [--rounds 2]
                                    [--warmup 1] [--concurrency 1 8] [--timeit-rounds 7]
                                    [--load auto|wrk|python]

Two models, trained here on generated data (nothing is downloaded):

  text   make_pipeline(TfidfVectorizer(), LogisticRegression()) on 400 short generated
         reviews; a request is a ~1 KB batch of reviews
  array  make_pipeline(FunctionTransformer(np.reshape to (batch, 4096)), LogisticRegression())
         on random float32 "images" of shape (batch, 64, 64); a request is one 64x64 image as
         nested JSON lists (3 decimals). The issue asks for 64x64 PNGs: images (PIL, PNG bytes)
         are not a kind yet, so the N-D array kind stands in for them.

Part ``http``: each model is deployed with ``nbserve.deploy`` and, as the baseline, saved with
``bentoml.sklearn.save_model`` into a store of its own and served by plain ``bentoml serve`` of
the hand-written service in bench/_bento_kinds.py (``texts: list[str]``, ``images: np.ndarray``).
Same data in every request (the baseline's JSON key is ``texts``/``images``, nbserve's
``data``). Three targets, all on 127.0.0.1, one worker each:

  baseline  the hand-written BentoML service, plain ``bentoml serve``
  upstream  the agent's own ``bentoml serve`` of nbserve's Bento, hit on its port
  stable    nbserve's stable URL (the agent's proxy in front of "upstream")

Load comes from a separate process (wrk when installed, else bench/_common.py's Python
generator), closed loop at each concurrency, ``--rounds`` interleaved rounds (the order
reversed every other round), medians shown.

Part ``validation``: what checking a request by its kind costs, in this process on parsed JSON:
``Text(...).decode`` of the ~1 KB batch and ``Array(...).decode`` of the 64x64 request, timeit,
median of ``--timeit-rounds`` rounds of at least 0.2 s each; beside it the floor any server pays
to turn that JSON into an array (``np.asarray(data)``) and ``json.loads`` of the body, and what
the agent's monitor spends per request counting the body's rows (``_payload_rows``, a full parse).

Targets (printed, never asserted): stable >= 0.9x baseline throughput; decode <= 100 us per
request. Every process started here is stopped at the end, even on error.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import sys
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402  (sets BENTOML_DO_NOT_TRACK / UV_OFFLINE first)

TARGETS = ("baseline", "upstream", "stable")
MODELS = ("text", "array")
BASELINE_CLASS = {"text": "Reviews", "array": "Tiles"}
BASELINE_MODEL = {"text": "kinds-reviews", "array": "kinds-tiles"}  # the names bench/_bento_kinds.py loads
BASELINE_KEY = {"text": "texts", "array": "images"}
DEPLOYMENT = {"text": "reviews", "array": "tiles"}
RPS_TARGET = 0.9
DECODE_TARGET_US = 100.0
SIDE = 64

_GOOD = ["great", "lovely", "tasty", "friendly", "superb", "fresh", "cosy", "perfect"]
_BAD = ["cold", "rude", "bland", "noisy", "awful", "greasy", "slow", "stale"]
_NOUNS = ["pasta", "soup", "waiter", "bread", "wine", "service", "dessert", "pizza", "room", "coffee"]
_TAILS = ["", " tonight", " as always", ", would come back", ", never again", " for the price"]


# -- data and models ---------------------------------------------------------------------


def reviews(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """n short reviews (two adjective-noun phrases and a tail) and whether each was liked."""
    import numpy as np

    rng = np.random.default_rng(seed)
    texts, liked = [], []
    for _ in range(n):
        good = bool(rng.random() < 0.5)
        words = _GOOD if good else _BAD
        first, second = rng.choice(words, 2)
        nouns = rng.choice(_NOUNS, 2, replace=False)
        texts.append(f"{first} {nouns[0]} and {second} {nouns[1]}{rng.choice(_TAILS)}")
        liked.append(int(good))
    return texts, liked


def text_model() -> tuple[Any, list[str], list[str]]:
    """(fitted pipeline, deploy sample, a ~1 KB request batch)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts, liked = reviews(400)
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, liked)
    asked, _ = reviews(200, seed=1)
    batch: list[str] = []
    while len(json.dumps(batch)) < 1000:
        batch.append(asked[len(batch)])
    return model, texts, batch


def array_model() -> tuple[Any, Any, list]:
    """(fitted pipeline, deploy sample (20, 64, 64) float32, one 64x64 request as JSON lists)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(0)
    images = rng.random((300, SIDE, SIDE), dtype=np.float32)
    labels = (images[:, : SIDE // 2].mean(axis=(1, 2)) > images[:, SIDE // 2 :].mean(axis=(1, 2))).astype(int)
    # np.reshape pickles by reference, so both stores load the model without this script
    flatten = FunctionTransformer(np.reshape, kw_args={"shape": (-1, SIDE * SIDE)})
    model = make_pipeline(flatten, LogisticRegression(max_iter=500)).fit(images, labels)
    request = np.round(rng.random((1, SIDE, SIDE)), 3).tolist()
    return model, images[:20], request


# -- part 2: per-request validation -------------------------------------------------------


def per_call_us(fn: Any, rounds: int) -> float:
    """Median over rounds of microseconds per call (each round runs >= 0.2 s)."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return statistics.median(t / number * 1e6 for t in timer.repeat(repeat=rounds, number=number))


def validation(args: argparse.Namespace) -> None:
    import numpy as np

    from nbserve._agent._monitor import _payload_rows
    from nbserve._kinds import Array, Text

    _model, text_sample, batch = text_model()
    _model, array_sample, image = array_model()
    text_body = json.dumps({"data": batch})
    array_body = json.dumps({"data": image})
    text_data, array_data = json.loads(text_body)["data"], json.loads(array_body)["data"]
    text_kind = Text(Text.describe(text_sample))
    array_kind = Array(Array.describe(array_sample))
    assert text_kind.decode(text_data) == batch and array_kind.decode(array_data).shape == (1, SIDE, SIDE)

    text_bytes = len(json.dumps(batch))
    rows = [  # (kind, what, call, is the target's figure)
        ("text", f"Text.decode, {len(batch)} reviews ({text_bytes} B of JSON)", lambda: text_kind.decode(text_data), True),
        ("text", f"json.loads of the body ({len(text_body)} B), for scale", lambda: json.loads(text_body), False),
        ("array", f"Array.decode, 1 x {SIDE}x{SIDE} float32", lambda: array_kind.decode(array_data), True),
        ("array", "np.asarray(data) alone (float64): the floor", lambda: np.asarray(array_data), False),
        ("array", f"json.loads of the body ({len(array_body)} B), for scale", lambda: json.loads(array_body), False),
        # not validation: what the agent's capture thread spends per request counting rows
        ("text", "agent: monitor _payload_rows(body)", lambda: _payload_rows(text_body.encode()), False),
        ("array", "agent: monitor _payload_rows(body)", lambda: _payload_rows(array_body.encode()), False),
    ]
    print(f"\nvalidation, in-process on parsed JSON (median of {args.timeit_rounds} timeit rounds):")
    figures = []
    for kind, label, fn, is_target in rows:
        us = per_call_us(fn, args.timeit_rounds)
        figures.append(us)
        mark = f"  (target <= {DECODE_TARGET_US:g} us: {met(us <= DECODE_TARGET_US)})" if is_target else ""
        print(f"  {kind:<5} {label:<52} {us:9.1f} us{mark}", flush=True)
    decode, floor = figures[2], figures[3]
    print(f"  array: the kind's checks add {decode - floor:.1f} us to the conversion any server does "
          f"({decode / floor:.2f}x); PNG requests are not a kind yet, so none were measured")


# -- part 1: throughput over HTTP ----------------------------------------------------------


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def save_baseline_model(model: Any, name: str, store: Path, root: Path) -> str:
    """``bentoml.sklearn.save_model`` in a fresh process with BENTOML_HOME=store (this process's
    bentoml may already have the agent's home resolved); returns the tag."""
    path = root / f"{name}.pkl"
    path.write_bytes(pickle.dumps(model))
    code = ("import pickle, sys, bentoml; "
            "print(bentoml.sklearn.save_model(sys.argv[1], pickle.loads(open(sys.argv[2], 'rb').read())).tag)")
    out = subprocess.run([c.PY, "-c", code, name, str(path)], capture_output=True, text=True, timeout=120,
                         env=c.child_env(BENTOML_HOME=str(store)), cwd=str(root))
    if out.returncode != 0:
        raise RuntimeError(f"saving {name} failed: {out.stderr[-800:]}")
    return out.stdout.strip().splitlines()[-1]


def baseline_serve(kind: str, store: Path, root: Path) -> tuple[c.ProcessTree, str]:
    port = c.free_port()
    tree = c.ProcessTree(
        [c.PY, "-m", "bentoml", "serve", f"_bento_kinds:{BASELINE_CLASS[kind]}", "--working-dir", str(c.BENCH),
         "--host", c.HOST, "--port", str(port)],
        env=c.child_env(BENTOML_HOME=str(store), PYTHONUNBUFFERED="1"), cwd=root, log_path=root / f"baseline-{kind}.log",
    )
    return tree, f"http://{c.HOST}:{port}"


def http(args: argparse.Namespace, tool: str, root: Path) -> None:
    import psutil

    import nbserve
    from endpoint import server_tree_of
    from nbserve._config import Home
    from nbserve._local import find_agent, stop_agent

    marker = str(root)
    store = root / "baseline-bentoml"
    trees: dict[str, c.ProcessTree] = {}
    home = Home.resolve()
    try:
        built = {"text": text_model(), "array": array_model()}
        urls: dict[tuple[str, str], str] = {}
        for kind, (model, _sample, _req) in built.items():
            tag = save_baseline_model(model, BASELINE_MODEL[kind], store, root)
            trees[kind], url = baseline_serve(kind, store, root)
            urls[(kind, "baseline")] = url
            print(f"baseline {kind}: {tag} served by _bento_kinds:{BASELINE_CLASS[kind]} at {url} (pid {trees[kind].pid})")
        for kind, (model, sample, _req) in built.items():
            t0 = time.monotonic()
            dep = nbserve.deploy(model, DEPLOYMENT[kind], sample, progress=False)
            version = dep.refresh().versions[-1]
            urls[(kind, "stable")], urls[(kind, "upstream")] = dep.url, version["upstream_url"]
            print(f"deployed {DEPLOYMENT[kind]} v{dep.version} ({kind}) in {time.monotonic() - t0:.1f} s; "
                  f"stable URL {dep.url}, upstream {version['upstream_url']}")
        for kind, tree in trees.items():
            c.wait_until_ok(urls[(kind, "baseline")], "GET", "/readyz", timeout=180, alive=tree.alive)
            tree.refresh()
        agent = find_agent(home)
        assert agent is not None, "the agent is not running after deploy"
        agent_proc = psutil.Process(agent.pid)

        bodies, servers = {}, {}
        for kind, (_model, _sample, req) in built.items():
            ours = json.dumps({"data": req}).encode()
            bodies[(kind, "stable")] = bodies[(kind, "upstream")] = ours
            bodies[(kind, "baseline")] = json.dumps({BASELINE_KEY[kind]: req}).encode()
            upstream = server_tree_of(c.split_url(urls[(kind, "upstream")])[1], marker)
            servers[(kind, "upstream")] = servers[(kind, "stable")] = (lambda procs=upstream: procs)
            servers[(kind, "baseline")] = (lambda tree=trees[kind]: (tree.refresh(), list(tree.known.values()))[1])
            answers = {}
            for name in TARGETS:
                status, payload = c.request(urls[(kind, name)], "POST", "/predict", bodies[(kind, name)], timeout=30)
                if status != 200:
                    raise RuntimeError(f"{kind} {name} /predict answered {status}: {payload[:300]!r}")
                answers[name] = json.loads(payload)
            same = len({json.dumps(a) for a in answers.values()}) == 1
            print(f"{kind}: POST /predict, {len(ours)} B (baseline {len(bodies[(kind, 'baseline')])} B) -> "
                  f"{json.dumps(answers['stable'])[:50]}; same answer from all three: {same}")

        for tree in trees.values():
            tree.refresh()
        ours = c.our_processes(marker)  # servers, agent, the agent's servers: all name the scratch root
        results: dict[tuple[str, int, str], list[dict[str, float]]] = {}
        for kind in MODELS:
            def workdir(name: str) -> Path:  # one per body: _common.load keeps its script per directory
                path = root / "load" / f"{kind}-{'baseline' if name == 'baseline' else 'nbserve'}"
                path.mkdir(parents=True, exist_ok=True)
                return path

            for name in TARGETS:
                c.load(urls[(kind, name)], "/predict", bodies[(kind, name)], max(args.concurrency), args.warmup,
                       tool, workdir(name))
            for conc in args.concurrency:
                for rnd in range(args.rounds):
                    for name in (TARGETS if rnd % 2 == 0 else tuple(reversed(TARGETS))):
                        procs = servers[(kind, name)]()
                        everything = ours  # every process of this run: what it used is not "others"
                        server0, agent0, ours0 = c.cpu_of(procs), c.cpu_of([agent_proc]), c.cpu_of(everything)
                        busy0, wall0 = c.busy_seconds(), time.monotonic()
                        out = c.load(urls[(kind, name)], "/predict", bodies[(kind, name)], conc, args.seconds,
                                     tool, workdir(name))
                        wall = time.monotonic() - wall0
                        n = max(1, out["requests"])
                        out["server_us"] = (c.cpu_of(procs) - server0) / n * 1e6
                        out["agent_us"] = (c.cpu_of([agent_proc]) - agent0) / n * 1e6
                        mine = c.cpu_of(everything) - ours0 + out["load_cpu_s"]
                        out["others_cores"] = max(0.0, c.busy_seconds() - busy0 - mine) / wall
                        results.setdefault((kind, conc, name), []).append(out)
                        print(f"  {kind:<5} c={conc} round {rnd + 1} {name:<8} {out['rps']:7.1f} rps "
                              f"p50 {out['p50_ms']:6.2f} ms p99 {out['p99_ms']:6.2f} ms errors {int(out['errors'])} "
                              f"(others {out['others_cores']:.2f} cores)", flush=True)
        report(args, tool, results)
    finally:
        for kind, tree in trees.items():
            survivors = tree.stop()
            if survivors:
                print(f"warning: baseline {kind} processes survived SIGKILL: {survivors}")
        stop_agent(home)


def report(args: argparse.Namespace, tool: str, results: dict) -> None:
    def med(kind: str, conc: int, name: str, key: str) -> float:
        return c.median([r[key] for r in results[(kind, conc, name)]])

    print(f"\nload: {tool}; medians of {args.rounds} interleaved {args.seconds:g} s runs per target")
    header = (f"{'kind':<5} {'conc':>4} {'target':<9}| {'rps':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} | "
              f"{'server CPU us/req':>17} {'agent':>6} | {'others':>6}")
    print(header)
    print("-" * len(header))
    for kind in MODELS:
        for conc in args.concurrency:
            for name in TARGETS:
                errors = sum(int(r["errors"]) for r in results[(kind, conc, name)])
                print(f"{kind:<5} {conc:>4} {name:<9}| {med(kind, conc, name, 'rps'):>7.1f} "
                      f"{med(kind, conc, name, 'p50_ms'):>7.2f} {med(kind, conc, name, 'p99_ms'):>7.2f} "
                      f"{errors:>6} | {med(kind, conc, name, 'server_us'):>17.0f} "
                      f"{med(kind, conc, name, 'agent_us'):>6.0f} | {med(kind, conc, name, 'others_cores'):>6.2f}")
    print()
    for kind in MODELS:
        for conc in args.concurrency:
            ratio = med(kind, conc, "stable", "rps") / med(kind, conc, "baseline", "rps")
            add50 = med(kind, conc, "stable", "p50_ms") - med(kind, conc, "baseline", "p50_ms")
            proxy = med(kind, conc, "stable", "rps") / med(kind, conc, "upstream", "rps")
            service = med(kind, conc, "upstream", "rps") / med(kind, conc, "baseline", "rps")
            print(f"{kind:<5} c={conc}: stable/baseline throughput {ratio:.2f}x (target >= {RPS_TARGET}x: "
                  f"{met(ratio >= RPS_TARGET)}), added p50 {add50:+.2f} ms; "
                  f"upstream/baseline {service:.2f}x (the generated service), stable/upstream {proxy:.2f}x (the proxy)")
    print("baseline = hand-written BentoML service (bench/_bento_kinds.py), plain `bentoml serve`; upstream = "
          "the agent's `bentoml serve` of nbserve's Bento hit on its port; others = cores busy with processes "
          "not of this bench")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", choices=("http", "validation"), default=["http", "validation"])
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per concurrency")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per target first")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--timeit-rounds", type=int, default=7, help="timeit rounds (>= 0.2 s each) per figure")
    ap.add_argument("--load", choices=("auto", "wrk", "python"), default="auto",
                    help="load generator: wrk if installed (auto), or the Python one")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (logs) afterwards")
    args = ap.parse_args()
    print(f"machine: {c.machine_line()}")
    if "http" in args.parts:
        tool = c.load_tool(args.load)
        print(f"load: {c.load_tool_description(tool)}")
        with c.scratch("kinds", keep=args.keep) as root:
            others = c.foreign_servers(str(root))
            if others:
                print(f"note: {len(others)} other bentoml/nbserve processes share the machine")
            try:
                http(args, tool, root)
            finally:
                time.sleep(0.5)
                left = c.reap(str(root))
                print("processes left behind: " + ("none" if not left else f"{len(left)} (killed now):"))
                for line in left:
                    print(f"  {line}")
    if "validation" in args.parts:
        validation(args)


if __name__ == "__main__":
    main()
