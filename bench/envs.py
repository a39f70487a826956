"""What does a version that needs an environment of its own add to a deploy, and what disk
does a further environment cost?

    .venv/bin/python bench/envs.py [--repeat 3] [--keep]

Deploy to first prediction (``nbserve.deploy(...)`` until ``POST {stable URL}/predict`` answers
200), each a new deployment on a running agent (primed by one untimed deploy):

  same    the baseline, today's path: the version's pins are the agent's, it runs there
  cold    ``packages=["scikit-learn==1.5.2"]``: an environment of its own, uv's cache empty
          (the agent runs with UV_CACHE_DIR at a new, empty directory: every wheel downloaded)
  warm    a new set with the same wheels (the pins of ``cold`` plus threadpoolctl at the version
          uv resolved there): a new environment, every wheel in uv's cache
  third   ``packages=["scikit-learn==1.6.1"]``: a new environment, one new wheel
  reuse   ``warm``'s set again, as a new deployment: the environment is there already (what a
          rollback, a restart or a second deploy of a set costs)

The model is a class of this script (pickled by value, numpy and pandas only), so it runs
under any scikit-learn; the pins alone decide where it runs. Each round has a new agent home
and a new empty uv cache (in the scratch dir, on the same filesystem as the environments so uv
hard-links); the modes run in the order above, ``same`` again after ``warm``; medians over
rounds. Where the time goes comes from the version's events (``environment_ready`` seconds,
``deployed`` ready_seconds: ``bentoml serve`` until healthy).

Disk, per round: the first environment (``cold``) alone, then what the second (``warm``) and
the third add: ``du -sk first second third`` in one call (du counts a hard-linked file once,
where it first sees it, so each figure after the first is what that environment adds) beside
nbserve's own figure (``disk_usage``'s second figure: single-link files, at build and again after serving,
when the first ``bentoml serve`` has written its bytecode), and how much uv's cache grew.

Targets (printed, never asserted): warm adds <= 2 s over same; the second and third
environment's own disk <= 10% of the first's. Every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402  (sets BENTOML_DO_NOT_TRACK / UV_OFFLINE first)

OLD, THIRD = "1.5.2", "1.6.1"
ADDED_TARGET_S = 2.0
DISK_TARGET = 0.10
MODES = ("same", "cold", "warm", "third", "reuse")


class Petals:
    """Setosa or not, from the petal length: numpy and pandas only."""

    def predict(self, X):
        import numpy as np

        return (np.asarray(X["petal_length"]) > 2.5).astype(int)


def deploy_to_first_prediction(name: str, X, body: bytes, packages: list[str] | None) -> dict:
    import nbserve

    t0 = time.monotonic()
    dep = nbserve.deploy(Petals(), name, X, progress=False, packages=packages)
    returned = time.monotonic()
    first = c.wait_until_ok(dep.url, "POST", "/predict", body, timeout=120, interval=0.02)
    events = dep.events()
    data = {kind: d for kind, d in zip(events["kind"], events["data"])}
    result = {
        "total": first - t0,
        "environment": dep.versions[-1]["environment"],
        "steps": {
            "environment": float((data.get("environment_ready") or {}).get("seconds", 0.0)),
            "serve ready": float((data.get("deployed") or {}).get("ready_seconds", 0.0)),
            "1st prediction": first - returned,
        },
    }
    result["steps"]["rest"] = result["total"] - sum(result["steps"].values())
    dep.stop()  # frees the cores for the next mode; outside the timing
    return result


def installed_version(env: Path, dist: str) -> str:
    found = sorted(env.glob(f"lib/python*/site-packages/{dist}-*.dist-info"))
    if not found:
        raise RuntimeError(f"{dist} is not in {env}")
    return found[0].name[len(dist) + 1:-len(".dist-info")]


def du_kib(*paths: Path) -> list[int]:
    """``du -sk`` of the paths in one call: a file hard-linked into several counts where first seen."""
    out = subprocess.run(["du", "-sk", *map(str, paths)], capture_output=True, text=True, check=True)
    return [int(line.split()[0]) for line in out.stdout.splitlines()]


def linked_share(env: Path) -> float:
    """The share of the environment's files that have another link (uv's cache)."""
    total = linked = 0
    for root, _dirs, files in os.walk(env):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            total += 1
            linked += st.st_nlink > 1
    return linked / total if total else 0.0


def run_round(index: int, root: Path, X, body: bytes, homes: list) -> tuple[dict, dict]:
    from nbserve import admin
    from nbserve._agent._envs import disk_usage
    from nbserve._config import Home
    from nbserve._local import start_agent

    home = Home.resolve(root / f"home-{index}")
    homes.append(home)
    cache = root / f"uv-cache-{index}"
    cache.mkdir()
    os.environ["NBSERVE_HOME"] = str(home.root)
    saved = os.environ.get("UV_CACHE_DIR")
    os.environ["UV_CACHE_DIR"] = str(cache)  # the agent's uv (it inherits our environment)
    try:
        start_agent(home)
    finally:
        if saved is None:
            os.environ.pop("UV_CACHE_DIR", None)
        else:
            os.environ["UV_CACHE_DIR"] = saved
    deploy_to_first_prediction(f"prime{index}", X, body, None)

    results: dict[str, list[dict]] = {m: [] for m in MODES}
    cache_kib: dict[str, int] = {}

    def one(mode: str, packages: list[str] | None, tag: str = "") -> dict:
        result = deploy_to_first_prediction(f"{mode}{tag}{index}", X, body, packages)
        results[mode].append(result)
        steps = ", ".join(f"{k} {v:.2f}" for k, v in result["steps"].items())
        print(f"  round {index} {mode:<5} {result['total']:6.2f} s  env {result['environment']:<16}  ({steps})",
              flush=True)
        cache_kib[mode] = du_kib(cache)[0]
        return result

    one("same", None)
    first = one("cold", [f"scikit-learn=={OLD}"])["environment"]
    pool = installed_version(home.root / "envs" / first, "threadpoolctl")
    warm_set = [f"scikit-learn=={OLD}", f"threadpoolctl=={pool}"]
    second = one("warm", warm_set)["environment"]
    one("same", None, "again")
    third = one("third", [f"scikit-learn=={THIRD}"])["environment"]
    one("reuse", warm_set)

    envs = [home.root / "envs" / key for key in (first, second, third)]
    at_build = {e["environment"]: e.get("bytes") for e in admin.environments()}
    disk = {
        "alone_kib": [du_kib(env)[0] for env in envs],
        "own_kib": du_kib(*envs),
        "nbserve_at_build": [at_build.get(env.name) for env in envs],
        "nbserve_now": [disk_usage(env)[1] for env in envs],
        "linked_share": [linked_share(env) for env in envs],
        "cache_growth_kib": [cache_kib["cold"], cache_kib["warm"] - cache_kib["cold"],
                             cache_kib["third"] - cache_kib["warm"]],
        "same_fs": os.stat(cache).st_dev == os.stat(envs[0]).st_dev,
        "pyc": [sum(1 for _ in env.rglob("*.pyc")) for env in envs],
    }
    return results, disk


def orchestrate(args: argparse.Namespace) -> None:
    from nbserve._local import stop_agent

    model_X = c.iris_model(5)[1]
    body = c.iris_body(1)
    with c.scratch("envs", keep=args.keep) as root:
        marker = str(root)
        print(f"machine: {c.machine_line()}")
        # the first `bentoml serve` from a new environment imports from source; whether it may
        # write its bytecode there decides what every later start of that environment costs
        print(f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}")
        others = c.foreign_servers(marker)
        if others:
            print(f"note: {len(others)} other bentoml/nbserve processes share the machine")
        homes: list = []
        results: dict[str, list[dict]] = {m: [] for m in MODES}
        disks: list[dict] = []
        try:
            for i in range(1, args.repeat + 1):
                round_results, disk = run_round(i, root, model_X, body, homes)
                for mode, found in round_results.items():
                    results[mode] += found
                disks.append(disk)
                stop_agent(homes[-1])  # every server of the round; the next round starts clean
            report(args, results, disks)
        finally:
            c.stop_agents(homes, marker)


def report(args: argparse.Namespace, results: dict[str, list[dict]], disks: list[dict]) -> None:
    same = c.median([r["total"] for r in results["same"]])
    print()
    print(f"deploy -> first prediction, a new deployment each, medians over {args.repeat} round(s) "
          f"(same: {len(results['same'])} trials)")
    header = (f"{'mode':<6}| {'median s':>8} {'min s':>6} {'max s':>6} | {'vs same':>7} {'added s':>8} "
              "| steps (median s)")
    print(header)
    print("-" * len(header))
    for mode in MODES:
        totals = [r["total"] for r in results[mode]]
        median = c.median(totals)
        keys = list(dict.fromkeys(k for r in results[mode] for k in r["steps"]))
        steps = ", ".join(f"{k} {c.median([r['steps'][k] for r in results[mode]]):.2f}" for k in keys)
        ratio = "-" if mode == "same" else f"{median / same:.2f}x"
        added = "-" if mode == "same" else f"{median - same:+.2f}"
        print(f"{mode:<6}| {median:>8.2f} {min(totals):>6.2f} {max(totals):>6.2f} | {ratio:>7} {added:>8} | {steps}")
    warm_added = c.median([r["total"] for r in results["warm"]]) - same
    print(f"warm adds {warm_added:+.2f} s over same (target <= {ADDED_TARGET_S:.0f} s: "
          f"{'met' if warm_added <= ADDED_TARGET_S else 'MISSED'})")

    print()
    print("disk, MiB (median over rounds): first = cold's environment, second = warm's (same wheels), "
          f"third = scikit-learn {THIRD}")
    header = (f"{'env':<7}| {'du alone':>8} {'du own':>7} {'own/1st':>7} | {'beyond new wheels':>17} | "
              f"{'nbserve at build':>16} {'nbserve now':>11} | {'linked':>6} | {'cache grew':>10}")
    print(header)
    print("-" * len(header))
    mib = 1024.0

    def med(key: str, i: int) -> float:
        values = [d[key][i] for d in disks if d[key][i] is not None]
        return c.median(values) if values else float("nan")

    first_alone = med("alone_kib", 0)
    verdicts, beyond_verdicts = [], []
    for i, label in enumerate(("first", "second", "third")):
        own = med("own_kib", i)
        share = "-" if i == 0 else f"{own / first_alone:.1%}"
        # the wheels only this environment has are new bytes no link can share: uv's cache grew by them
        beyond = max(own - med("cache_growth_kib", i), 0.0)
        beyond_share = "-" if i == 0 else f"{beyond / mib:.1f} {beyond / first_alone:>6.1%}"
        if i:
            verdicts.append(own / first_alone <= DISK_TARGET)
            beyond_verdicts.append(beyond / first_alone <= DISK_TARGET)
        print(f"{label:<7}| {med('alone_kib', i) / mib:>8.1f} {own / mib:>7.1f} {share:>7} | {beyond_share:>17} | "
              f"{med('nbserve_at_build', i) / 2**20:>16.1f} {med('nbserve_now', i) / 2**20:>11.1f} | "
              f"{med('linked_share', i):>6.0%} | {med('cache_growth_kib', i) / mib:>10.1f}")
    print(f"bytecode files after serving (first, second, third; median): "
          f"{', '.join(str(int(med('pyc', i))) for i in range(3))}")
    print(f"second and third environment's own disk <= {DISK_TARGET:.0%} of the first "
          f"(du own vs du alone): {'met' if all(verdicts) else 'MISSED'}; beyond the wheels new to each: "
          f"{'met' if all(beyond_verdicts) else 'MISSED'}")
    print("du alone: the environment by itself (what it would cost without uv's cache); du own: what it adds "
          "after the ones above it (one du call); nbserve: files with a single link (`nbserve envs list`), "
          "at build and after serving (bytecode written by the first bentoml serve); beyond new wheels: du own "
          "less what uv's cache grew by for it (the new wheels' bytes); linked: share of its "
          "files hard-linked with uv's cache" + ("" if all(d["same_fs"] for d in disks)
                                                  else " (NOTE: the cache is on another filesystem)"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="rounds (each: new agent home, new empty uv cache)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (logs, environments) afterwards")
    orchestrate(ap.parse_args())


if __name__ == "__main__":
    main()
