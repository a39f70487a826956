"""Kinds of input (issue #15): text, N-D arrays and images through nbserve vs a hand-written BentoML service.

    .venv/bin/python bench/kinds.py [--parts http validation] [--models text array image]
                                    [--seconds 3] [--rounds 2] [--warmup 1] [--concurrency 1 8]
                                    [--timeit-rounds 7] [--load auto|wrk|python]

Three models, trained here on generated data (nothing is downloaded):

  text   make_pipeline(TfidfVectorizer(), LogisticRegression()) on 400 short generated
         reviews; a request is a ~1 KB batch of reviews
  array  make_pipeline(FunctionTransformer(np.reshape to (batch, 4096)), LogisticRegression())
         on random float32 of shape (batch, 64, 64); a request is one 64x64 array as nested
         JSON lists (3 decimals)
  image  make_pipeline(FunctionTransformer(bench/_image_model.py's pixels), LogisticRegression())
         on 300 generated 64x64 RGB PIL images (a colour, a gradient, noise; the label: more
         red than blue); pixels turns a list of PIL images into (batch, 12288) float32 in [0, 1].
         nbserve's sample is a list of PIL images (the ``images`` kind); a request is one
         64x64 PNG file sent as multipart/form-data (``curl -F data=@a.png``)

Part ``http``: each model is deployed with ``nbserve.deploy`` and, as the baseline, saved with
``bentoml.sklearn.save_model`` into a store of its own and served by plain ``bentoml serve`` of
the hand-written service in bench/_bento_kinds.py (``texts: list[str]``, ``images: np.ndarray``,
``image: PIL.Image.Image``). Same data in every request: the baseline's JSON key is
``texts``/``images`` and its form field ``image`` (BentoML names a file field after the
argument), nbserve's are ``data``. The image model's function lives in a module beside the
bench: nbserve carries it in the model by value (its server is not given bench/ on its path),
the baseline imports it from its working dir. Three targets, all on 127.0.0.1, one worker each:

  baseline  the hand-written BentoML service, plain ``bentoml serve``
  upstream  the agent's own ``bentoml serve`` of nbserve's Bento, hit on its port
  stable    nbserve's stable URL (the agent's proxy in front of "upstream")

All three must give the same answer to the request before anything is timed. Load comes from a
separate process (wrk when installed, else bench/_common.py's Python generator), closed loop at
each concurrency, ``--rounds`` interleaved rounds (the order reversed every other round), medians
shown.

Part ``validation``: what checking a request by its kind costs, in this process on parsed JSON:
``Text(...).decode`` of the ~1 KB batch, ``Array(...).decode`` of the 64x64 request and
``Images(...).decode`` of one 64x64 PNG as base64 JSON (what a multipart request becomes in
nbserve's server), timeit, median of ``--timeit-rounds`` rounds of at least 0.2 s each; beside
each the floor any server pays to turn that JSON into what the model takes (``np.asarray(data)``;
Pillow's open + convert("RGB") + np.asarray of the decoded base64) and ``json.loads`` of the body.
And what the agent's monitor spends per request counting rows: today the model server reports
them in an ``x-nbserve-rows`` header (``Monitor._count`` of such a record, measured on a scratch
database), and ``_payload_rows`` (a full ``json.loads`` of the body), which is now run only for
versions that do not report the header.

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
MODELS = ("text", "array", "image")
BASELINE_CLASS = {"text": "Reviews", "array": "Tiles", "image": "Pictures"}
# the names bench/_bento_kinds.py loads
BASELINE_MODEL = {"text": "kinds-reviews", "array": "kinds-tiles", "image": "kinds-pictures"}
BASELINE_KEY = {"text": "texts", "array": "images", "image": "image"}  # its argument's name
DEPLOYMENT = {"text": "reviews", "array": "tiles", "image": "pictures"}
BOUNDARY = "nbserve-bench-kinds"
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


def picture(rng: Any) -> Any:
    """A 64x64 RGB PIL image: a random colour, a random gradient across it, a little noise
    (a PNG of ~9 KB, the size of a real thumbnail rather than of pure noise or a flat colour)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:SIDE, 0:SIDE] / (SIDE - 1)
    pixels = rng.random(3) + (rng.random(3) - 0.5) * ((x + y) / 2)[..., None] + rng.normal(0, 0.04, (SIDE, SIDE, 3))
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8), "RGB")


def png(img: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def image_model() -> tuple[Any, list, bytes]:
    """(fitted pipeline, deploy sample (20 PIL images), one 64x64 PNG file as the request)."""
    import numpy as np
    from _image_model import pixels  # bench/, on the path: a helper file beside the "notebook"
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(0)
    images = [picture(rng) for _ in range(300)]
    labels = [int(np.asarray(img)[..., 0].mean() > np.asarray(img)[..., 2].mean()) for img in images]
    model = make_pipeline(FunctionTransformer(pixels), LogisticRegression(max_iter=500)).fit(images, labels)
    return model, images[:20], png(picture(rng))


BUILDERS = {"text": text_model, "array": array_model, "image": image_model}


def multipart(field: str, filename: str, data: bytes, mime: str = "image/png") -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data POST of one file, as ``curl -F field=@file``."""
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {mime}\r\n\r\n")
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def request_bodies(kind: str, req: Any) -> dict[str, tuple[bytes, str]]:
    """(body, content type) per target: the same data, under each service's own name for it."""
    if kind == "image":
        ours, baseline = multipart("data", "a.png", req), multipart(BASELINE_KEY[kind], "a.png", req)
    else:
        ours = json.dumps({"data": req}).encode(), c.JSON
        baseline = json.dumps({BASELINE_KEY[kind]: req}).encode(), c.JSON
    return {"baseline": baseline, "upstream": ours, "stable": ours}


# -- part 2: per-request validation -------------------------------------------------------


def per_call_us(fn: Any, rounds: int) -> float:
    """Median over rounds of microseconds per call (each round runs >= 0.2 s)."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return statistics.median(t / number * 1e6 for t in timer.repeat(repeat=rounds, number=number))


def monitor_count_us(rounds: int) -> float:
    """Microseconds the agent's capture thread spends on one request whose model server said
    its rows (``x-nbserve-rows``): ``Monitor._count`` of an unsampled record, as the proxy hands
    it over, on a scratch database. The same for every body: it never reads it."""
    import tempfile

    from nbserve._agent._monitor import Monitor
    from nbserve._agent._proxy import RequestRecord

    with tempfile.TemporaryDirectory(prefix="nbserve-bench-kinds-monitor-") as tmp:
        monitor = Monitor(Path(tmp) / "metrics.db")  # never started: no thread, only the counting
        try:
            rec = RequestRecord(label="1", method="POST", path="/predict", status=200,
                                started_ns=time.perf_counter_ns(), elapsed_ns=2_000_000, request_bytes=9000,
                                body=b"", response=None, rows=1)
            return per_call_us(lambda: monitor._count("bench", rec, time.time(), time.perf_counter_ns()), rounds)
        finally:
            monitor.close()


# each: (its JSON body, rows of (kind, what, call, role)); role "target" is the figure


def text_rows() -> tuple[str, list]:
    from nbserve._kinds import Text

    _model, sample, batch = text_model()
    body = json.dumps({"data": batch})
    data, kind = json.loads(body)["data"], Text(Text.describe(sample))
    assert kind.decode(data) == batch
    return body, [
        ("text", f"Text.decode, {len(batch)} reviews ({len(json.dumps(batch))} B of JSON)",
         lambda: kind.decode(data), "target"),
        ("text", f"json.loads of the body ({len(body)} B), for scale", lambda: json.loads(body), ""),
    ]


def array_rows() -> tuple[str, list]:
    import numpy as np

    from nbserve._kinds import Array

    _model, sample, image = array_model()
    body = json.dumps({"data": image})
    data, kind = json.loads(body)["data"], Array(Array.describe(sample))
    assert kind.decode(data).shape == (1, SIDE, SIDE)
    return body, [
        ("array", f"Array.decode, 1 x {SIDE}x{SIDE} float32", lambda: kind.decode(data), "target"),
        ("array", "np.asarray(data) alone (float64): the floor", lambda: np.asarray(data), "floor"),
        ("array", f"json.loads of the body ({len(body)} B), for scale", lambda: json.loads(body), ""),
    ]


def image_rows() -> tuple[str, list]:
    import base64
    import io

    import numpy as np
    from PIL import Image

    from nbserve._kinds import Images

    _model, sample, file = image_model()
    body = json.dumps({"data": [base64.b64encode(file).decode("ascii")]})
    data, kind = json.loads(body)["data"], Images(Images.describe(sample))
    decoded = kind.decode(data)
    assert decoded[0].size == (SIDE, SIDE) and decoded[0].mode == "RGB"

    def floor() -> Any:  # what any server does to hand a model the pixels of a base64 PNG
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data[0]))).convert("RGB"))

    return body, [
        ("image", f"Images.decode, 1 x {SIDE}x{SIDE} RGB PNG ({len(file)} B, base64)",
         lambda: kind.decode(data), "target"),
        ("image", "b64decode+PIL open+convert(RGB)+np.asarray: the floor", floor, "floor"),
        ("image", f"json.loads of the body ({len(body)} B), for scale", lambda: json.loads(body), ""),
    ]


def validation(args: argparse.Namespace) -> None:
    from nbserve._agent._monitor import _payload_rows

    rows, bodies = [], {}
    for name, rows_of in (("text", text_rows), ("array", array_rows), ("image", image_rows)):
        if name in args.models:
            bodies[name], more = rows_of()
            rows += more
    # not validation: what the agent's capture thread spends per request counting rows
    rows.append(("any", "agent: monitor counts rows from x-nbserve-rows", None, ""))
    for name, body in bodies.items():  # older versions: the agent parses every body (up to 1 MiB)
        raw = body.encode()
        rows.append((name, "agent: _payload_rows(body), versions w/o x-nbserve-rows",
                     lambda raw=raw: _payload_rows(raw), ""))

    print(f"\nvalidation, in-process on parsed JSON (median of {args.timeit_rounds} timeit rounds):")
    figures: dict[tuple[str, str], float] = {}
    for kind_name, label, fn, role in rows:
        us = monitor_count_us(args.timeit_rounds) if fn is None else per_call_us(fn, args.timeit_rounds)
        figures[(kind_name, role)] = us
        mark = f"  (target <= {DECODE_TARGET_US:g} us: {met(us <= DECODE_TARGET_US)})" if role == "target" else ""
        print(f"  {kind_name:<5} {label:<58} {us:9.1f} us{mark}", flush=True)
    for kind_name in ("array", "image"):
        if (kind_name, "floor") in figures:
            us, floor_us = figures[(kind_name, "target")], figures[(kind_name, "floor")]
            print(f"  {kind_name}: the kind's checks add {us - floor_us:+.1f} us to the conversion any server "
                  f"does ({us / floor_us:.2f}x)")
    print("  the agent counts rows from the model server's x-nbserve-rows header, unparsed; _payload_rows runs "
          "only for versions built before it (and for answers given before the body was read)")


# -- part 1: throughput over HTTP ----------------------------------------------------------


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def save_baseline_model(model: Any, name: str, store: Path, root: Path) -> str:
    """``bentoml.sklearn.save_model`` in a fresh process with BENTOML_HOME=store (this process's
    bentoml may already have the agent's home resolved); returns the tag. It runs in bench/, so
    the image model's ``_image_model.pixels`` unpickles (and is saved by reference, as
    ``bentoml.sklearn`` does, for the baseline's service to import from its working dir)."""
    path = root / f"{name}.pkl"
    path.write_bytes(pickle.dumps(model))
    code = ("import pickle, sys, bentoml; "
            "print(bentoml.sklearn.save_model(sys.argv[1], pickle.loads(open(sys.argv[2], 'rb').read())).tag)")
    out = subprocess.run([c.PY, "-c", code, name, str(path)], capture_output=True, text=True, timeout=120,
                         env=c.child_env(BENTOML_HOME=str(store)), cwd=str(c.BENCH))
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
        built = {kind: BUILDERS[kind]() for kind in args.models}
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
            elapsed = time.monotonic() - t0
            saved = dep.metadata()["model"]  # the image model's bench/_image_model.py goes in by value
            by_value = f", code saved by value: {', '.join(saved['code_by_value'])}" if saved.get("code_by_value") else ""
            print(f"deployed {DEPLOYMENT[kind]} v{dep.version} ({kind}) in {elapsed:.1f} s, saved as "
                  f"{saved['flavor']}{by_value}; stable URL {dep.url}, upstream {version['upstream_url']}")
        for kind, tree in trees.items():
            c.wait_until_ok(urls[(kind, "baseline")], "GET", "/readyz", timeout=180, alive=tree.alive)
            tree.refresh()
        agent = find_agent(home)
        assert agent is not None, "the agent is not running after deploy"
        agent_proc = psutil.Process(agent.pid)

        bodies, servers = {}, {}  # bodies: (bytes, content type) per (kind, target)
        for kind, (_model, _sample, req) in built.items():
            bodies.update({(kind, name): body for name, body in request_bodies(kind, req).items()})
            upstream = server_tree_of(c.split_url(urls[(kind, "upstream")])[1], marker)
            servers[(kind, "upstream")] = servers[(kind, "stable")] = (lambda procs=upstream: procs)
            servers[(kind, "baseline")] = (lambda tree=trees[kind]: (tree.refresh(), list(tree.known.values()))[1])
            answers = {}
            for name in TARGETS:
                body, content_type = bodies[(kind, name)]
                status, payload = c.request(urls[(kind, name)], "POST", "/predict", body, 30, content_type)
                if status != 200:
                    raise RuntimeError(f"{kind} {name} /predict answered {status}: {payload[:300]!r}")
                answers[name] = json.loads(payload)
            same = len({json.dumps(a) for a in answers.values()}) == 1
            print(f"{kind}: POST /predict, {len(bodies[(kind, 'stable')][0])} B "
                  f"(baseline {len(bodies[(kind, 'baseline')][0])} B) {bodies[(kind, 'stable')][1].split(';')[0]} -> "
                  f"{json.dumps(answers['stable'])[:50]}; same answer from all three: {same}")
            if not same:
                raise RuntimeError(f"{kind}: the targets answered differently: {answers}")

        for tree in trees.values():
            tree.refresh()
        ours = c.our_processes(marker)  # servers, agent, the agent's servers: all name the scratch root
        results: dict[tuple[str, int, str], list[dict[str, float]]] = {}
        for kind in args.models:
            def workdir(name: str) -> Path:  # one per body: _common.load keeps its script per directory
                path = root / "load" / f"{kind}-{'baseline' if name == 'baseline' else 'nbserve'}"
                path.mkdir(parents=True, exist_ok=True)
                return path

            for name in TARGETS:
                c.load(urls[(kind, name)], "/predict", bodies[(kind, name)][0], max(args.concurrency), args.warmup,
                       tool, workdir(name), bodies[(kind, name)][1])
            for conc in args.concurrency:
                for rnd in range(args.rounds):
                    for name in (TARGETS if rnd % 2 == 0 else tuple(reversed(TARGETS))):
                        procs = servers[(kind, name)]()
                        everything = ours  # every process of this run: what it used is not "others"
                        server0, agent0, ours0 = c.cpu_of(procs), c.cpu_of([agent_proc]), c.cpu_of(everything)
                        busy0, wall0 = c.busy_seconds(), time.monotonic()
                        out = c.load(urls[(kind, name)], "/predict", bodies[(kind, name)][0], conc, args.seconds,
                                     tool, workdir(name), bodies[(kind, name)][1])
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
    for kind in args.models:
        for conc in args.concurrency:
            for name in TARGETS:
                errors = sum(int(r["errors"]) for r in results[(kind, conc, name)])
                print(f"{kind:<5} {conc:>4} {name:<9}| {med(kind, conc, name, 'rps'):>7.1f} "
                      f"{med(kind, conc, name, 'p50_ms'):>7.2f} {med(kind, conc, name, 'p99_ms'):>7.2f} "
                      f"{errors:>6} | {med(kind, conc, name, 'server_us'):>17.0f} "
                      f"{med(kind, conc, name, 'agent_us'):>6.0f} | {med(kind, conc, name, 'others_cores'):>6.2f}")
    print()
    for kind in args.models:
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
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="which models (all by default)")
    c.add_load_arguments(ap, seconds=3.0, rounds=2, warmup=1.0)
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
