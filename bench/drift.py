"""Drift report speed and memory: nbserve exact, nbserve with a cached profile, baselines.

    .venv/bin/python bench/drift.py                   # 1,000,000 x 20 vs a 100,000-row reference
    .venv/bin/python bench/drift.py --no-evidently    # skip the Evidently subprocess

Baselines, in the same run and on the same data:
- Evidently's ``Report([DataDriftPreset()])``, run in the separate venv ``bench/.venv-evidently``
  (create it with: python3 -m venv bench/.venv-evidently &&
  bench/.venv-evidently/bin/pip install evidently "pandas<3" pyarrow; Evidently 0.7 does not
  import beside pandas 3), on the same frames written to parquet in a temporary directory; only
  ``Report.run`` is timed, not the parquet read. If that venv is missing or Evidently fails, the
  table says so and the ratio is taken against the scipy baseline.
- per-column scipy: ``scipy.stats.wasserstein_distance`` + ``scipy.stats.ks_2samp``, always.

Times are wall clock (time.perf_counter), best of ``--repeat`` runs (median shown too).
Memory is the tracemalloc peak above the traced size before the call (numpy reports its buffers
to tracemalloc), measured in separate runs so tracing does not slow the timed ones; "data" is
``reference.nbytes + current.nbytes`` of the float64 frames. Targets are printed, never asserted.
The host has 2 cores shared with other work: figures can be noisy (load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nbserve._drift import DriftConfig, ReferenceProfile, drift_report  # noqa: E402

EVIDENTLY_PY = ROOT / "bench" / ".venv-evidently" / "bin" / "python"

EVIDENTLY_SCRIPT = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd
import evidently
from evidently import Report
from evidently.presets import DataDriftPreset
ref = pd.read_parquet(sys.argv[1])
cur = pd.read_parquet(sys.argv[2])
t0 = time.perf_counter()
snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
seconds = time.perf_counter() - t0
scores, drifted = {}, None
for metric in snapshot.dict()["metrics"]:
    name = metric["metric_name"]
    if name.startswith("ValueDrift(column="):
        scores[name[len("ValueDrift(column="):].split(",")[0]] = metric["value"]
    elif name.startswith("DriftedColumnsCount"):
        drifted = metric["value"]
print(json.dumps({"seconds": seconds, "evidently": evidently.__version__,
                  "pandas": pd.__version__, "scores": scores, "drifted": drifted}))
"""


def make_data(rows: int, ref_rows: int, features: int, seed: int = 0):
    """Numeric features of several shapes; every fourth one shifted in the current frame."""
    rng = np.random.default_rng(seed)

    def column(i: int, n: int, shifted: bool) -> np.ndarray:
        shape = i % 4
        s = 0.25 if shifted else 0.0
        if shape == 0:
            return rng.normal(s, 1.0, n)
        if shape == 1:
            return rng.lognormal(s, 0.8, n)
        if shape == 2:
            return rng.exponential(1.0 + s, n)
        return np.round(rng.normal(10 + s, 3.0, n), 1)  # ties: one decimal

    ref = pd.DataFrame({f"f{i:02d}": column(i, ref_rows, False) for i in range(features)})
    cur = pd.DataFrame({f"f{i:02d}": column(i, rows, i % 4 == 0) for i in range(features)})
    return ref, cur


def timed(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), result


def traced_peak(fn) -> int:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def scipy_baseline(ref: pd.DataFrame, cur: pd.DataFrame) -> dict:
    out = {}
    for col in ref.columns:
        a, b = ref[col].to_numpy(), cur[col].to_numpy()
        w = stats.wasserstein_distance(a, b) / np.std(a)
        ks = stats.ks_2samp(a, b)
        out[col] = (w, ks.statistic, ks.pvalue)
    return out


def run_evidently(ref: pd.DataFrame, cur: pd.DataFrame, timeout: float) -> dict:
    if not EVIDENTLY_PY.exists():
        return {"error": f"{EVIDENTLY_PY.relative_to(ROOT)} not found"}
    with tempfile.TemporaryDirectory(prefix="nbserve-drift-bench-") as tmp:
        ref_path, cur_path = Path(tmp, "reference.parquet"), Path(tmp, "current.parquet")
        ref.to_parquet(ref_path)
        cur.to_parquet(cur_path)
        try:
            proc = subprocess.run(
                [str(EVIDENTLY_PY), "-c", EVIDENTLY_SCRIPT, str(ref_path), str(cur_path)],
                capture_output=True, text=True, timeout=timeout,
                env={**os.environ, "DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"})
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s", "timeout": timeout}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"error": f"exit {proc.returncode}: {tail[0]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--ref-rows", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-evidently", action="store_true")
    ap.add_argument("--evidently-timeout", type=float, default=150.0)
    args = ap.parse_args()

    ref, cur = make_data(args.rows, args.ref_rows, args.features)
    data_bytes = int(ref.memory_usage(index=False).sum() + cur.memory_usage(index=False).sum())
    config = DriftConfig()
    threads = config.threads or min(4, os.cpu_count() or 1)
    print(f"drift bench: current {args.rows:,} x {args.features}, reference {args.ref_rows:,} "
          f"rows, float64; data {data_bytes / 2**20:.0f} MiB; {os.cpu_count()} cores, "
          f"{threads} worker threads; load avg {os.getloadavg()[0]:.2f}")
    print(f"numpy {np.__version__}, pandas {pd.__version__}, python {sys.version.split()[0]}")

    # -- nbserve ------------------------------------------------------------------------
    drift_report(ref.iloc[:1000], cur.iloc[:1000])  # import/first-call costs out of the way
    ex_best, ex_med, exact = timed(lambda: drift_report(ref, cur), args.repeat)
    t0 = time.perf_counter()
    profile = ReferenceProfile.build(ref)
    build_s = time.perf_counter() - t0
    wire = json.dumps(profile.to_dict())
    t0 = time.perf_counter()
    profile = ReferenceProfile.from_dict(json.loads(wire))
    load_s = time.perf_counter() - t0
    pr_best, pr_med, approx = timed(lambda: drift_report(profile, cur), args.repeat)
    ex_mem = traced_peak(lambda: drift_report(ref, cur))
    pr_mem = traced_peak(lambda: drift_report(profile, cur))
    build_mem = traced_peak(lambda: ReferenceProfile.build(ref))

    # -- baselines ----------------------------------------------------------------------
    t0 = time.perf_counter()
    sp = scipy_baseline(ref, cur)
    scipy_s = time.perf_counter() - t0
    ev = {"error": "skipped (--no-evidently)"} if args.no_evidently else run_evidently(
        ref, cur, args.evidently_timeout)

    # -- agreement ----------------------------------------------------------------------
    e, a = exact.set_index("feature"), approx.set_index("feature")
    d_w_scipy = max(abs(e.loc[c, "wasserstein_norm"] - sp[c][0]) / sp[c][0] for c in sp)
    d_ks_scipy = max(abs(e.loc[c, "ks_stat"] - sp[c][1]) for c in sp)
    d_w_prof = float((e["wasserstein_norm"] - a["wasserstein_norm"]).abs().max())
    d_ks_prof = float((e["ks_stat"] - a["ks_stat"]).abs().max())

    rows = [
        ("nbserve exact", f"{ex_best:.2f}", f"{ex_med:.2f}", f"{ex_mem / 2**20:.0f}"),
        ("nbserve profile build (once per version)", f"{build_s:.2f}", "", f"{build_mem / 2**20:.0f}"),
        ("nbserve profile from JSON", f"{load_s:.3f}", "", ""),
        ("nbserve with cached profile", f"{pr_best:.2f}", f"{pr_med:.2f}", f"{pr_mem / 2**20:.0f}"),
        ("scipy per column (wasserstein + ks_2samp)", f"{scipy_s:.2f}", "", ""),
    ]
    if "seconds" in ev:
        rows.append((f"Evidently {ev['evidently']} DataDriftPreset (pandas {ev['pandas']})",
                     f"{ev['seconds']:.2f}", "", ""))
    else:
        rows.append(("Evidently DataDriftPreset", "n/a", "", ""))
    print()
    print(f"| {'what':<58} | {'best s':>7} | {'median s':>8} | {'peak added MiB':>14} |")
    print(f"| {'-' * 58} | {'-' * 6}: | {'-' * 7}: | {'-' * 13}: |")
    for what, best, med, mem in rows:
        print(f"| {what:<58} | {best:>7} | {med:>8} | {mem:>14} |")
    if "error" in ev:
        print(f"\nEvidently: {ev['error']}; the speed-up target is taken against scipy instead.")
    print(f"\nprofile JSON: {len(wire) / 2**10:.0f} KiB for {args.features} features; "
          f"drifted features: exact {int(e['drifted'].sum())}, profile {int(a['drifted'].sum())}"
          + (f", Evidently {ev['drifted']['count']:.0f}" if "seconds" in ev else ""))
    print(f"agreement: exact vs scipy max rel. Wasserstein diff {d_w_scipy:.1e}, max KS diff "
          f"{d_ks_scipy:.1e}; profile vs exact max |dW_norm| {d_w_prof:.1e}, max |dKS| "
          f"{d_ks_prof:.1e}")
    if "seconds" in ev and ev["scores"]:
        d_ev = max(abs(e.loc[c, "score"] - s) / max(abs(s), 1e-12) for c, s in ev["scores"].items())
        print(f"agreement: exact vs Evidently max rel. score diff {d_ev:.1e} "
              f"({len(ev['scores'])} columns)")

    baseline_s = ev["seconds"] if "seconds" in ev else scipy_s
    baseline = "Evidently" if "seconds" in ev else "scipy per column"
    print("\ntargets (printed, not asserted):")
    print(f"  exact <= 3 s: {ex_best:.2f} s ({ex_best / 3:.2f} of the budget)")
    print(f"  cached profile <= 1 s: {pr_best:.2f} s ({pr_best / 1:.2f} of the budget)")
    print(f"  peak added memory <= 2x data ({2 * data_bytes / 2**20:.0f} MiB): exact "
          f"{ex_mem / data_bytes:.2f}x, profile {pr_mem / data_bytes:.2f}x, build "
          f"{build_mem / data_bytes:.2f}x of the data")
    print(f"  >= 20x faster than {baseline} ({baseline_s:.1f} s): exact {baseline_s / ex_best:.0f}x, "
          f"cached profile {baseline_s / pr_best:.0f}x")
    print(f"load avg at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
