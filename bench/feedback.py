"""Model quality from late labels: nbserve's feedback + quality against a naive pandas join.

    .venv/bin/python bench/feedback.py                    # 1,000,000 predictions and labels
    .venv/bin/python bench/feedback.py --n 100000         # a quick run
    .venv/bin/python bench/feedback.py --rounds 3         # interleaved rounds, best and median shown
    .venv/bin/python bench/feedback.py --order arrival    # one label order only (default: both)

Setup (not timed): a temporary ``metrics.sqlite`` made by ``Monitor`` holds ``--n`` sampled
requests of one deployment over 48 hours, written straight into the ``samples`` table with the
columns the capture thread writes (one executemany, one transaction): one row per request, an
iris-like JSON body, the prediction ``[0]`` or ``[1]``, request ids as the stable URL makes them
(``<8 hex>-<hex counter>``, a new prefix after an agent restart at hour 20). Version 1 serves the
first 24 hours, a 10% canary of version 2 the next 6, version 2 the rest. One label per request
(``"<request id>:0"``), ~85% agreeing with the prediction, written to a text file in two orders:
``arrival`` (each outcome known 0-60 min after its prediction, sent in the order they became
known) and ``shuffled`` (a random permutation of the 48 hours: the worst case for any store
keyed by request id).

Each side runs in its own child process (fresh interpreter, same imports: numpy, pandas,
scikit-learn, sqlite3, nbserve's monitor and quality modules) on a fresh copy of the store,
reads the labels file into two lists (ids, outcomes: the client's input, held by both sides),
then is timed:

- nbserve: ``Monitor.add_labels`` in batches of 10,000 (what ``Deployment.feedback`` POSTs; the
  ids go through ``parse_ids`` as ``Manager.feedback`` does), then
  ``quality_rows(monitor.labelled(name, since), bucket_seconds=3600)``.
- pandas (the baseline): ``pd.read_sql`` of the columns needed from ``samples``, a labels
  DataFrame (ids split at the last ``:``), ``merge`` on the request id, predictions parsed with
  ``json.loads`` per row (``Series.map``; a row-wise ``.apply(axis=1)`` is the more common
  spelling and several times slower), then ``groupby`` (hour, version) and the same
  scikit-learn functions (accuracy, precision, recall, f1) per group. It stores nothing;
  nbserve validates every label against the sampled requests and commits it to SQLite.

Times are wall clock (CPU time of the timed part is printed too: the machine is shared).
Memory: the child's peak RSS at the end minus its RSS after the imports and the labels lists,
with the high-water mark reset at that point (``5`` into /proc/self/clear_refs; otherwise the
import transients would hide the growth). The peak is read as VmHWM from /proc/self/status,
the counter ``getrusage(RUSAGE_SELF).ru_maxrss`` reports, except that ru_maxrss also keeps the
high-water mark the process had before exec (the parent's, copied by fork/vfork), which
clear_refs does not reset. SQLite's own allocations (page cache, sorter) count too;
tracemalloc would miss those. Both sides also run once on a store a tenth the size, to show
whether memory grows with the data.

Both sides' figures must agree: the bench prints the max |difference| over every (hour, version)
and metric, and whether the two have the same groups and labelled counts.

Targets (printed, never asserted): nbserve no slower than the pandas join; nbserve's memory
bounded (10x the data adds at most 8 MiB, or at most doubles the peak).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAME = "churn"
HOURS = 48
BATCH = 10_000  # Deployment.feedback's batch per POST
METRICS = ("accuracy", "precision", "recall", "f1")


# -- setup (parent, not timed) ------------------------------------------------------------


def make_store(tmp: Path, n: int, seed: int = 7) -> tuple[Path, dict[str, Path], float]:
    """metrics.sqlite with ``n`` sampled requests; a labels file per arrival order; the start
    of the data."""
    from nbserve._agent._monitor import Monitor

    db_path = tmp / "metrics.sqlite"
    Monitor(db_path).close()  # the schema and indexes exactly as the agent makes them
    rng = random.Random(seed)
    start = time.time() - HOURS * 3600
    step = HOURS * 3600 / n
    prefixes = [f"{rng.getrandbits(32):08x}-", f"{rng.getrandbits(32):08x}-"]
    restart_at = int(n * 20 / HOURS)  # the agent restarted at hour 20: a new id prefix
    samples, labels = [], []
    for i in range(n):
        ts = start + i * step + rng.random() * step
        hour = (ts - start) / 3600
        version = 1 if hour < 24 else (2 if hour >= 30 or rng.random() < 0.1 else 1)
        rid = f"{prefixes[i >= restart_at]}{(i if i < restart_at else i - restart_at) + 1:x}"
        pred = 1 if rng.random() < 0.3 else 0
        agree = rng.random() < (0.85 if version == 1 else 0.87)
        features = [round(rng.gauss(5.8, 0.8), 1), round(rng.gauss(3.0, 0.4), 1),
                    round(rng.gauss(3.7, 1.7), 1), round(rng.gauss(1.2, 0.7), 1)]
        request = json.dumps({"data": [dict(zip(("sepal_length", "sepal_width", "petal_length",
                                                 "petal_width"), features))]})
        samples.append((NAME, version, ts, "/predict", 200, 4.0 + rng.random() * 3, 1, request,
                        f"[{pred}]", rid))
        # the outcome becomes known 0-60 min after the prediction
        labels.append((ts + rng.random() * 3600, f"{rid}:0\t{pred if agree else 1 - pred}\n"))
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("BEGIN")
    db.executemany("INSERT INTO samples (deployment, version, ts, path, status, latency_ms, rows,"
                   " request, response, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", samples)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    del samples
    files = {"arrival": tmp / "labels-arrival.tsv", "shuffled": tmp / "labels-shuffled.tsv"}
    labels.sort()
    files["arrival"].write_text("".join(line for _, line in labels))
    rng.shuffle(labels)
    files["shuffled"].write_text("".join(line for _, line in labels))
    return db_path, files, start


# -- the two sides (each in a child process) ----------------------------------------------


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _maxrss_kib() -> int:
    """This process's peak RSS: VmHWM, the counter ru_maxrss reports, read from /proc because
    getrusage(RUSAGE_SELF).ru_maxrss also includes the high-water mark inherited at exec (the
    parent's, through subprocess's vfork) and cannot be reset; else ru_maxrss."""
    try:
        return _status_kib("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_high_water() -> bool:
    """Restart the peak from the current RSS (Linux: ``5`` into /proc/self/clear_refs), so the
    import transients do not hide the growth."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmHWM") <= _status_kib("VmRSS") + 1024
    except (OSError, KeyError):
        return False


def _read_labels(path: Path) -> tuple[list[str], list[int]]:
    ids, ys = [], []
    with path.open() as fh:
        for line in fh:
            rid, y = line.split("\t")
            ids.append(rid)
            ys.append(int(y))
    return ids, ys


def side_nbserve(db_path: Path, ids: list[str], ys: list[int], since: float) -> dict:
    from nbserve._agent._monitor import Monitor
    from nbserve._agent._quality import parse_ids, quality_rows

    monitor = Monitor(db_path)
    totals: dict[str, int] = {}
    t0 = time.perf_counter()
    for lo in range(0, len(ids), BATCH):  # what Manager.feedback does per POST
        items = [(rid, row, y) for (rid, row), y in zip(parse_ids(ids[lo:lo + BATCH]), ys[lo:lo + BATCH],
                                                        strict=True)]
        report = monitor.add_labels(NAME, items)
        for key, value in report.items():
            if isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
    t1 = time.perf_counter()
    task, rows = quality_rows(monitor.labelled(NAME, since), bucket_seconds=3600)
    t2 = time.perf_counter()
    monitor.close()
    return {"phases": {"add_labels": t1 - t0, "labelled + quality_rows": t2 - t1}, "seconds": t2 - t0,
            "task": task, "report": totals,
            "rows": [{k: r[k] for k in ("time", "version", "labelled", *METRICS)} for r in rows]}


def side_pandas(db_path: Path, ids: list[str], ys: list[int], since: float) -> dict:
    import pandas as pd
    from sklearn import metrics as m

    t0 = time.perf_counter()
    with sqlite3.connect(db_path) as db:
        samples = pd.read_sql("SELECT ts, version, response, request_id FROM samples"
                              " WHERE deployment = ? AND ts >= ?", db, params=(NAME, since))
    labels = pd.DataFrame({"id": ids, "y_true": ys})
    parts = labels["id"].str.rsplit(":", n=1)
    labels["request_id"], labels["row"] = parts.str[0], parts.str[1].astype(int)
    t1 = time.perf_counter()
    joined = samples.merge(labels, on="request_id", how="inner")
    # json.loads per row through Series.map, then the labelled row of each prediction list
    # (a row-wise ``joined.apply(..., axis=1)`` is the more common spelling and ~10x slower).
    predictions = joined["response"].map(json.loads)
    joined["y_pred"] = [p[r] for p, r in zip(predictions, joined["row"])]
    joined["hour"] = (joined["ts"] // 3600 * 3600).astype(int)
    t2 = time.perf_counter()
    rows = []
    for (hour, version), g in joined.groupby(["hour", "version"], sort=True):
        t, p = g["y_true"].to_numpy(), g["y_pred"].to_numpy()
        rows.append({"time": int(hour), "version": int(version), "labelled": len(g),
                     "accuracy": float(m.accuracy_score(t, p)),
                     "precision": float(m.precision_score(t, p, zero_division=0)),
                     "recall": float(m.recall_score(t, p, zero_division=0)),
                     "f1": float(m.f1_score(t, p, zero_division=0))})
    t3 = time.perf_counter()
    return {"phases": {"read_sql + labels frame": t1 - t0, "merge + json.loads": t2 - t1,
                       "groupby + metrics": t3 - t2}, "seconds": t3 - t0, "task": "classification",
            "rows": rows}


def child(side: str, db_path: Path, labels_path: Path, since: float, profile: str | None) -> None:
    import gc

    import numpy  # noqa: F401 - the same imports on both sides before the baseline
    import pandas  # noqa: F401
    import sklearn.metrics  # noqa: F401

    import nbserve._agent._monitor  # noqa: F401
    import nbserve._agent._quality  # noqa: F401

    ids, ys = _read_labels(labels_path)
    gc.collect()
    reset = _reset_high_water()
    base = _maxrss_kib()
    fn = side_nbserve if side == "nbserve" else side_pandas
    if profile:
        import cProfile

        prof = cProfile.Profile()
        out = prof.runcall(fn, db_path, ids, ys, since)
        prof.dump_stats(profile)
    else:
        cpu = time.process_time()
        out = fn(db_path, ids, ys, since)
        out["cpu"] = time.process_time() - cpu
    out["base_mib"] = base / 1024
    out["reset"] = reset
    out["peak_added_mib"] = (_maxrss_kib() - base) / 1024
    print("NBSERVE_BENCH " + json.dumps(out))


def run_child(side: str, pristine: Path, work: Path, labels_path: Path, since: float, *,
              profile: str | None = None) -> dict:
    """One side in a fresh interpreter, on a fresh copy of the store (no labels yet)."""
    shutil.copyfile(pristine, work)
    for suffix in ("-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", side, "--db", str(work), "--labels", str(labels_path),
           "--since", repr(since)]
    if profile:
        cmd += ["--profile", profile]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("NBSERVE_BENCH ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{side} child failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(line.split(" ", 1)[1])


# -- parent -------------------------------------------------------------------------------


def agreement(a: list[dict], b: list[dict]) -> tuple[bool, float]:
    ka = {(r["time"], r["version"]): r for r in a}
    kb = {(r["time"], r["version"]): r for r in b}
    same = ka.keys() == kb.keys() and all(ka[k]["labelled"] == kb[k]["labelled"] for k in ka)
    diff = max((abs(ka[k][m] - kb[k][m]) for k in ka.keys() & kb.keys() for m in METRICS
                if ka[k][m] is not None and kb[k][m] is not None), default=float("nan"))
    return same, diff


def _phases(out: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in out["phases"].items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="sampled requests and labels")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (each side once per order)")
    ap.add_argument("--order", choices=("both", "arrival", "shuffled"), default="both",
                    help="labels sent in arrival order (0-60 min after each prediction) or shuffled")
    ap.add_argument("--profile", metavar="DIR", help="write cProfile stats of each side into DIR")
    ap.add_argument("--child", choices=("nbserve", "pandas"), help=argparse.SUPPRESS)
    ap.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--labels", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--since", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.db, args.labels, args.since,
              args.profile and str(Path(args.profile) / f"{args.child}.prof"))
        return

    import pandas as pd
    import sklearn

    orders = ("arrival", "shuffled") if args.order == "both" else (args.order,)
    print(f"feedback bench: {args.n:,} sampled predictions of one deployment over {HOURS} h, two versions;"
          f" {args.n:,} labels in batches of {BATCH:,}, order: {', '.join(orders)}; {os.cpu_count()} cores,"
          f" load avg {os.getloadavg()[0]:.2f}")
    print(f"python {sys.version.split()[0]}, pandas {pd.__version__}, scikit-learn {sklearn.__version__}, "
          f"sqlite {sqlite3.sqlite_version}")
    results: dict[tuple[str, str], list[dict]] = {}
    small: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="nbserve-bench-feedback-") as tmp:
        t0 = time.perf_counter()
        pristine, label_files, start = make_store(Path(tmp), args.n)
        print(f"setup (not timed): {time.perf_counter() - t0:.1f} s, metrics.sqlite "
              f"{pristine.stat().st_size / 2**20:.0f} MiB")
        work = Path(tmp) / "run" / "metrics.sqlite"
        work.parent.mkdir()
        since = start - 3600
        for r in range(args.rounds):
            sides = ("nbserve", "pandas") if r % 2 == 0 else ("pandas", "nbserve")
            for order in orders:
                for side in sides:
                    out = run_child(side, pristine, work, label_files[order], since,
                                    profile=args.profile if r == 0 and order == orders[-1] else None)
                    results.setdefault((order, side), []).append(out)
                    print(f"  round {r + 1} {order:<8} {side:<8} {out['seconds']:7.2f} s (CPU "
                          f"{out.get('cpu', float('nan')):.2f} s), peak added {out['peak_added_mib']:6.0f} MiB"
                          f"  ({_phases(out)})", flush=True)
        # Memory against size: a store a tenth the size (predictions and labels), each side once.
        tenth = max(1, args.n // 10)
        (Path(tmp) / "small").mkdir()
        small_store, small_labels, small_start = make_store(Path(tmp) / "small", tenth)
        for side in ("nbserve", "pandas"):
            small[side] = run_child(side, small_store, work, small_labels[orders[-1]], small_start - 3600)
            print(f"  {tenth:,} predictions, {orders[-1]} labels: {side:<8} {small[side]['seconds']:7.2f} s, "
                  f"peak added {small[side]['peak_added_mib']:6.0f} MiB", flush=True)

    print()
    print("| labels order | side | best s | median s | CPU s (best round) | peak added MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for order in orders:
        for side, label in (("nbserve", "nbserve: add_labels + labelled + quality_rows"),
                            ("pandas", "pandas: read_sql + merge + json.loads + groupby")):
            outs = results[(order, side)]
            secs = [o["seconds"] for o in outs]
            mem = max(o["peak_added_mib"] for o in outs)
            cpu = min(outs, key=lambda o: o["seconds"]).get("cpu", float("nan"))
            print(f"| {order} | {label} | {min(secs):.2f} | {statistics.median(secs):.2f} | {cpu:.2f} "
                  f"| {mem:.0f} |")
    print()
    for order in orders:
        for side in ("nbserve", "pandas"):
            best = min(results[(order, side)], key=lambda o: o["seconds"])
            print(f"{order} {side} phases (best round, s): {_phases(best)}")
    for order in orders:
        nb, pd_ = results[(order, "nbserve")][-1], results[(order, "pandas")][-1]
        same, diff = agreement(nb["rows"], pd_["rows"])
        print(f"{order}: add_labels report " + ", ".join(f"{k} {v:,}" for k, v in nb["report"].items())
              + f"; {len(nb['rows'])} (hour, version) groups, same groups and labelled counts as pandas: "
              f"{same}, max |metric difference| {diff:.1e}")
    outs = [o for v in results.values() for o in v] + list(small.values())
    reset = all(o["reset"] for o in outs)
    print(f"child RSS after imports + labels lists: {min(o['base_mib'] for o in outs):.0f}-"
          f"{max(o['base_mib'] for o in outs):.0f} MiB; peak = VmHWM (ru_maxrss) growth over it, "
          + ("high-water mark reset there (/proc/self/clear_refs)" if reset else
             "high-water mark NOT reset (no /proc/self/clear_refs): growth is understated"))

    print("\ntargets (printed, not asserted):")
    for order in orders:
        nb_s = min(o["seconds"] for o in results[(order, "nbserve")])
        pd_s = min(o["seconds"] for o in results[(order, "pandas")])
        print(f"  no slower than pandas, {order} labels: nbserve {nb_s:.2f} s vs pandas {pd_s:.2f} s, "
              f"{pd_s / nb_s:.2f}x ({'met' if nb_s <= pd_s else 'missed'})")
    # Bounded: 10x the data adds at most 8 MiB or at most doubles the peak (a cost per row grows ~10x).
    print(f"  bounded memory ({orders[-1]} labels; {tenth:,} -> {args.n:,} predictions and labels; bounded = "
          f"10x the data adds <= 8 MiB or <= 2x):")
    for side in ("nbserve", "pandas"):
        lo_mib = small[side]["peak_added_mib"]
        hi_mib = max(o["peak_added_mib"] for o in results[(orders[-1], side)])
        ok = hi_mib - lo_mib <= 8 or hi_mib <= 2 * lo_mib
        print(f"    {side}: {lo_mib:.0f} -> {hi_mib:.0f} MiB ({'met' if ok else 'missed'})")
    nb_hi = max(o["peak_added_mib"] for o in results[(orders[-1], "nbserve")])
    pd_hi = max(o["peak_added_mib"] for o in results[(orders[-1], "pandas")])
    print(f"  nbserve's peak is {nb_hi / pd_hi:.2f}x pandas'")
    print(f"load avg at the end {os.getloadavg()[0]:.2f}; processes left behind: none "
          f"(each child was waited for)")


if __name__ == "__main__":
    main()
