"""How exact are the latency histogram's quantiles, and what do they cost?

    .venv/bin/python bench/histogram.py [--n 1000000]

For 10^6 latencies from four distributions (lognormal, exponential, uniform, bimodal),
the histogram's p50, p99 and p99.9 against the exact order statistics (numpy, the
baseline, which keeps every value), plus the memory of both and the cost of recording.
Target (printed, never asserted): <= 1% relative error at p50, p99, p99.9.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from nbserve._histogram import LatencyHistogram

QS = (0.5, 0.99, 0.999)
TARGET = 0.01


def distributions(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {
        "lognormal": rng.lognormal(np.log(0.004), 0.6, n),
        "exponential": rng.exponential(0.01, n) + 0.0005,
        "uniform": rng.uniform(0.001, 0.1, n),
        "bimodal": np.concatenate([rng.normal(0.003, 3e-4, n // 2).clip(1e-5),
                                   rng.normal(0.2, 0.02, n - n // 2).clip(1e-5)]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    args = ap.parse_args()
    print(f"{args.n:,} values per distribution; relative error of the histogram's quantile vs exact")
    print(f"{'distribution':<12}| {'p50':>8} {'p99':>8} {'p99.9':>8} | {'buckets':>7} {'stored B':>8} "
          f"{'exact B':>9} | {'record ns':>9} {'exact q ms':>10} {'hist q ms':>9}")
    worst = 0.0
    for name, values in distributions(args.n).items():
        hist = LatencyHistogram()
        hist.record_many(values)
        errors = []
        t0 = time.perf_counter()
        exact = np.quantile(values, QS, method="lower")
        exact_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        approx = hist.quantiles(QS)
        hist_ms = (time.perf_counter() - t0) * 1e3
        for e, a in zip(exact, approx):
            errors.append(abs(a - e) / e)
        worst = max(worst, *errors)
        one = LatencyHistogram()
        sample = values[:200_000].tolist()
        t0 = time.perf_counter_ns()
        for v in sample:
            one.record(v)
        record_ns = (time.perf_counter_ns() - t0) / len(sample)
        print(f"{name:<12}| {errors[0]:>8.3%} {errors[1]:>8.3%} {errors[2]:>8.3%} | {len(hist.counts):>7} "
              f"{len(hist.to_bytes()):>8} {values.nbytes:>9} | {record_ns:>9.0f} {exact_ms:>10.1f} {hist_ms:>9.2f}")
    print(f"worst relative error {worst:.3%} (target <= {TARGET:.0%}: {'met' if worst <= TARGET else 'MISSED'}); "
          "exact B = the baseline keeping every value as float64")


if __name__ == "__main__":
    main()
