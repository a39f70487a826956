"""How long from ``nbserve.deploy(...)`` to the first prediction, vs doing it by hand?

    .venv/bin/python bench/deploy.py [--repeat 3] [--modes bare warm cold]

Three ways to go from a fitted model in memory to a first successful prediction:

  bare   the baseline, by hand with BentoML: ``bentoml.sklearn.save_model`` +
         ``bentoml.build(..., python={"packages": [pins], "lock_packages": False})`` of a
         minimal hand-written service + ``python -m bentoml serve`` + poll ``POST /predict``
         (every 20 ms) until it answers 200
  warm   ``nbserve.deploy(model, name, X)`` with the agent already running (and primed by
         one untimed deploy, so the agent has imported bentoml), then poll
         ``POST {stable URL}/predict`` until 200
  cold   the same with no agent running: the deploy starts the agent too

The model is the iris RandomForest (50 trees). Every trial is a fresh Python process
that trains the model first (as a notebook would have), then starts the clock *before*
``import bentoml`` / ``import nbserve``: both sides pay the bentoml import once.
Each trial gets a fresh client BENTOML_HOME; cold trials a fresh NBSERVE_HOME each.
Trials are interleaved (bare, warm, cold, then rotated) so drift hits all alike; the
table shows medians of ``--repeat`` trials and the ratio to bare. nbserve's own steps
(from its progress reporter) are shown too, to say where the time goes.

Target (printed, never asserted): nbserve <= 1.5x the bare baseline.
Every process started here is stopped at the end, even on error.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402  (sets BENTOML_DO_NOT_TRACK / UV_OFFLINE first)

RATIO_TARGET = 1.5
MODES = ("bare", "warm", "cold")

BARE_SERVICE = '''\
import typing as t

import bentoml
import numpy as np
import pandas as pd
from bentoml.validators import DataframeSchema


@bentoml.service(name="iris_bare", logging={{"access": {{"enabled": False}}}})
class IrisBare:
    model_ref = bentoml.models.BentoModel({model_tag!r})

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)

    @bentoml.api
    def predict(self, data: t.Annotated[pd.DataFrame, DataframeSchema(orient="records")]) -> np.ndarray:
        return np.asarray(self.model.predict(data))
'''


# -- trials (each in a fresh process) -----------------------------------------------------


def trial_bare(workdir: Path) -> dict:
    import os

    model, _X = c.iris_model(50)
    body = c.iris_body(1)
    packages = c.pins()
    tree = None
    t0 = time.monotonic()
    try:
        import bentoml

        t_import = time.monotonic()
        tag = str(bentoml.sklearn.save_model("iris_bare", model).tag)
        t_saved = time.monotonic()
        ctx = workdir / "ctx"
        ctx.mkdir(parents=True)
        (ctx / "service.py").write_text(BARE_SERVICE.format(model_tag=tag))
        bento = bentoml.build(
            "service:IrisBare", name="iris_bare", build_ctx=str(ctx), models=[tag],
            python={"packages": packages, "lock_packages": False},
        )
        t_built = time.monotonic()
        tree, url = c.bentoml_serve(
            str(bento.tag), bentoml_home=Path(os.environ["BENTOML_HOME"]), cwd=workdir,
            log_path=workdir / "serve.log",
        )
        first = c.wait_until_ok(url, "POST", "/predict", body, timeout=180, interval=0.02,
                                alive=tree.alive)
        tree.refresh()
    finally:
        if tree is not None:
            tree.stop()
    return {
        "total": first - t0,
        "steps": {
            "import bentoml": t_import - t0,
            "save_model": t_saved - t_import,
            "build": t_built - t_saved,
            "serve -> 1st prediction": first - t_built,
        },
    }


def trial_nbserve(name: str, stop_after: bool) -> dict:
    model, X = c.iris_model(50)
    body = c.iris_body(1)
    t0 = time.monotonic()
    import nbserve
    import nbserve._api as api

    class Recording(api.Progress):  # nbserve records step times even with progress=False
        last: "Recording | None" = None

        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            super().__init__(*args, **kwargs)
            Recording.last = self

    api.Progress = Recording
    dep = nbserve.deploy(model, name, X, progress=False)
    t_returned = time.monotonic()
    first = c.wait_until_ok(dep.url, "POST", "/predict", body, timeout=60, interval=0.02)
    steps: dict[str, float] = {}
    rows = Recording.last.rows if Recording.last else []
    for i, row in enumerate(rows):
        key, started = row[0], row[3]
        ended = row[4] if len(row) > 4 else (rows[i + 1][3] if i + 1 < len(rows) else t_returned)
        steps[key] = steps.get(key, 0.0) + (ended - started)
    steps.pop("live", None)
    steps["1st prediction"] = first - t_returned
    if stop_after:
        dep.stop()  # frees the cores for the next trial; outside the timing
    return {"total": first - t0, "steps": steps}


# -- orchestration ------------------------------------------------------------------------


def run_trial(mode: str, root: Path, index: int, nbhome: Path) -> dict:
    workdir = root / f"{mode}-{index}"
    workdir.mkdir(parents=True)
    env = c.child_env(NBSERVE_HOME=str(nbhome), BENTOML_HOME=str(workdir / "client-bentoml"))
    cmd = [c.PY, str(Path(__file__).resolve()), "trial", mode, f"iris-{mode}{index}", str(workdir)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(workdir), timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} trial {index} failed:\n{out.stdout[-1500:]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def orchestrate(args: argparse.Namespace) -> None:
    from nbserve._config import Home
    from nbserve._local import start_agent, stop_agent

    with c.scratch("deploy", keep=args.keep) as root:
        marker = str(root)
        print(f"machine: {c.machine_line()}")
        others = c.foreign_servers(marker)
        if others:
            print(f"note: {len(others)} other bentoml/nbserve processes share the machine")
        warm_home = Home.resolve(root / "warm-home")
        homes = [warm_home]
        results: dict[str, list[dict]] = {m: [] for m in args.modes}
        try:
            if "warm" in args.modes:
                t0 = time.monotonic()
                start_agent(warm_home)
                print(f"agent for warm trials started in {time.monotonic() - t0:.1f} s; priming it with "
                      "one untimed deploy", flush=True)
                prime = run_trial("warm", root, 0, warm_home.root)
                print(f"  priming deploy (agent's first): {prime['total']:.2f} s", flush=True)
            for i in range(1, args.repeat + 1):
                order = args.modes[i - 1:] + args.modes[:i - 1]  # rotate the order each round
                for mode in order:
                    nbhome = warm_home if mode == "warm" else Home.resolve(root / f"cold-home-{i}")
                    if mode == "cold":
                        homes.append(nbhome)
                    try:
                        result = run_trial(mode, root, i, nbhome.root)
                    finally:
                        if mode == "cold":
                            stop_agent(nbhome)
                        if mode == "bare":
                            left = c.reap(str(root / f"bare-{i}"))
                            if left:
                                print(f"  warning: bare trial left {left}")
                    results[mode].append(result)
                    steps = ", ".join(f"{k} {v:.2f}" for k, v in result["steps"].items())
                    print(f"  trial {i} {mode:<5} {result['total']:6.2f} s   ({steps})", flush=True)
            report(args, results)
        finally:
            c.stop_agents(homes, marker)


def report(args: argparse.Namespace, results: dict[str, list[dict]]) -> None:
    print()
    print(f"model in memory -> first successful prediction, iris RandomForest (50 trees), "
          f"medians of {args.repeat} fresh-process trials")
    bare = c.median([r["total"] for r in results["bare"]]) if results.get("bare") else None
    header = f"{'mode':<6}| {'median s':>8} {'min s':>6} {'max s':>6} | {'vs bare':>7}"
    print(header)
    print("-" * len(header))
    for mode in args.modes:
        totals = [r["total"] for r in results[mode]]
        ratio = c.median(totals) / bare if bare and mode != "bare" else None
        verdict = ""
        if ratio is not None:
            verdict = f"  (target <= {RATIO_TARGET}x: {'met' if ratio <= RATIO_TARGET else 'MISSED'})"
        print(f"{mode:<6}| {c.median(totals):>8.2f} {min(totals):>6.2f} {max(totals):>6.2f} | "
              f"{(f'{ratio:.2f}x' if ratio else '-'):>7}{verdict}")
    print()
    for mode in args.modes:
        keys = list(dict.fromkeys(k for r in results[mode] for k in r["steps"]))
        parts = [f"{k} {c.median([r['steps'].get(k, 0.0) for r in results[mode]]):.2f}" for k in keys]
        print(f"{mode} steps (median s): " + ", ".join(parts))
    print("nbserve steps: checking = connect to (or start) the agent + predict on the sample; "
          "dependencies includes `import bentoml`; building includes export_bento; uploading = the "
          "agent imports the archive; starting + health = bentoml serve until /readyz")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "trial":
        mode, name, workdir = sys.argv[2], sys.argv[3], Path(sys.argv[4])
        result = trial_bare(workdir) if mode == "bare" else trial_nbserve(name, stop_after=mode == "warm")
        print(json.dumps(result))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="trials per mode")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (logs) afterwards")
    orchestrate(ap.parse_args())


if __name__ == "__main__":
    main()
