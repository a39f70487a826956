"""Promote and rollback under steady load: failed requests, and p99 during the switch.

    .venv/bin/python bench/rollout.py [--rate 80] [--seconds 24]

The iris RandomForest (v1) serves; a DecisionTree (v2) is deployed as a 10% canary. A
separate load process sends ``--rate`` requests/s (open loop: each request starts on its
schedule, whatever the previous ones do) for ``--seconds``, logging every answer. A third
of the way in, v2 is promoted; two thirds in, the deployment is rolled back to v1.
Reported: every failed request (non-200 or connection error; target 0), and the p99
within one second of each switch against the p99 of the steady stretches.
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


def load_process(url: str, rate: float, seconds: float, out: str) -> None:
    """Open-loop load: request i starts at t0 + i / rate on a pool of keep-alive clients."""
    import asyncio

    import httpx

    body = c.iris_body(1)

    async def main() -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits, trust_env=False) as client:
            records: list[tuple[float, float, int, str]] = []
            t0 = time.perf_counter()

            async def one(due: float) -> None:
                await asyncio.sleep(max(0.0, due - (time.perf_counter() - t0)))
                start = time.perf_counter()
                try:
                    r = await client.post("/predict", content=body, headers={"content-type": "application/json"})
                    status, version = r.status_code, r.headers.get("x-nbserve-version", "?")
                except httpx.HTTPError as exc:
                    status, version = 0, type(exc).__name__
                records.append((start - t0, (time.perf_counter() - start) * 1000, status, version))

            await asyncio.gather(*(one(i / rate) for i in range(int(rate * seconds))))
            Path(out).write_text(json.dumps(records))

    asyncio.run(main())


def p99(values: list[float]) -> float:
    return c.percentile(sorted(values), 99) if values else float("nan")


def run(args: argparse.Namespace) -> None:
    print(f"machine: {c.machine_line()}")
    with c.scratch("rollout", keep=args.keep) as root:
        marker = str(root)
        home = None
        try:
            import nbserve
            from nbserve._config import Home

            home = Home.resolve()
            model, X = c.iris_model(50)
            from sklearn.tree import DecisionTreeClassifier

            y = model.predict(X)
            tree = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y)
            dep = nbserve.deploy(model, "iris", X, progress=False)
            dep = nbserve.deploy(tree, "iris", X, canary=10, progress=False)
            out = root / "answers.json"
            proc = subprocess.Popen([c.PY, __file__, "load", dep.url, str(args.rate), str(args.seconds), str(out)],
                                    env=c.child_env())
            switches = {}
            time.sleep(args.seconds / 3)
            t = time.monotonic()
            dep.promote()
            switches["promote v2"] = (t, time.monotonic() - t)
            time.sleep(args.seconds / 3)
            t = time.monotonic()
            dep.rollback(to=1)
            switches["rollback to v1"] = (t, time.monotonic() - t)
            proc.wait(timeout=args.seconds + 120)
            records = json.loads(out.read_text())
        finally:
            if home is not None:
                from nbserve._local import stop_agent

                stop_agent(home)
            time.sleep(0.5)
            left = c.reap(marker)
        # The load's clock started ~ when the process did: align on the first promote offset.
        total = len(records)
        failed = [r for r in records if r[2] != 200]
        span = args.seconds
        marks = {"promote v2": span / 3, "rollback to v1": 2 * span / 3}
        near = lambda t: any(abs(t - m) <= 1.0 for m in marks.values())  # noqa: E731
        steady = [r[1] for r in records if r[2] == 200 and not near(r[0]) and r[0] > 1.0]
        print(f"{total} requests at {args.rate:g}/s for {args.seconds:g} s (open loop, separate process)")
        print(f"failed requests: {len(failed)} (target 0: {'met' if not failed else 'MISSED'})"
              + (f"; first: {failed[:3]}" if failed else ""))
        print(f"steady p99: {p99(steady):.2f} ms over {len(steady)} requests")
        for name, at in marks.items():
            window = [r[1] for r in records if r[2] == 200 and abs(r[0] - at) <= 1.0]
            versions = sorted({r[3] for r in records if abs(r[0] - at) <= 1.0})
            api_ms = switches[name][1] * 1000
            print(f"{name:<15} p99 within 1 s: {p99(window):.2f} ms ({p99(window) / p99(steady):.2f}x steady), "
                  f"{len(window)} requests, versions answering {versions}; the API call took {api_ms:.0f} ms")
        print("processes left behind: " + ("none" if not left else f"{len(left)} (killed now)"))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        load_process(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=80.0,
                    help="requests/s; keep it under what the model serves (~125/s for this one on 2 cores)")
    ap.add_argument("--seconds", type=float, default=24.0)
    ap.add_argument("--keep", action="store_true")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
