"""The latency histogram: quantiles within 1% of the exact ones, lossless storage, merges."""

from __future__ import annotations

import numpy as np
import pytest

from nbserve._histogram import RELATIVE_ACCURACY, LatencyHistogram
from nbserve._windows import parse_window
from nbserve.errors import InvalidArgument

QUANTILES = [0.5, 0.9, 0.99, 0.999]


def _distributions(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "lognormal": rng.lognormal(mean=np.log(0.004), sigma=0.6, size=n),
        "exponential": rng.exponential(0.01, size=n) + 0.0005,
        "uniform": rng.uniform(0.001, 0.1, size=n),
        "bimodal": np.concatenate([rng.normal(0.003, 0.0003, n // 2).clip(1e-5),
                                   rng.normal(0.2, 0.02, n - n // 2).clip(1e-5)]),
    }


@pytest.mark.parametrize("name", ["lognormal", "exponential", "uniform", "bimodal"])
def test_quantiles_are_within_one_percent_of_exact_on_a_million_values(name: str) -> None:
    values = _distributions(1_000_000)[name]
    hist = LatencyHistogram()
    hist.record_many(values)
    assert hist.count == values.size
    for q, got in zip(QUANTILES, hist.quantiles(QUANTILES)):
        exact = np.quantile(values, q, method="lower")
        assert abs(got - exact) / exact <= 0.01, (name, q, got, exact)
        assert abs(got - exact) / exact <= RELATIVE_ACCURACY * 1.0001


def test_record_and_record_many_agree_and_mean_is_exact() -> None:
    values = _distributions(5_000)["lognormal"]
    one, many = LatencyHistogram(), LatencyHistogram()
    for v in values:
        one.record(float(v))
    many.record_many(values)
    assert one.counts == many.counts
    assert one.mean == pytest.approx(values.mean(), rel=1e-9)


def test_storage_round_trip_and_merge_equal_one_histogram_of_everything() -> None:
    values = _distributions(20_000)["bimodal"]
    left, right, whole = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    left.record_many(values[:7_000])
    right.record_many(values[7_000:])
    whole.record_many(values)
    restored = LatencyHistogram.from_bytes(left.to_bytes(), total=left.total)
    assert restored.counts == left.counts and restored.count == left.count
    merged = restored.merge(LatencyHistogram.from_bytes(right.to_bytes(), total=right.total))
    assert merged.counts == whole.counts
    assert merged.quantiles(QUANTILES) == whole.quantiles(QUANTILES)


def test_empty_and_tiny_values() -> None:
    hist = LatencyHistogram()
    assert hist.quantile(0.5) is None and hist.mean is None
    assert LatencyHistogram.from_bytes(hist.to_bytes()).count == 0
    hist.record(0.0)  # a zero latency is clamped, never a math error
    hist.record(1e-7)
    assert hist.count == 2 and hist.quantile(1.0) == pytest.approx(1e-7, rel=0.01)
    with pytest.raises(ValueError):
        hist.quantile(1.5)


def test_cumulative_counts_for_prometheus_buckets() -> None:
    hist = LatencyHistogram()
    hist.record_many([0.002] * 3 + [0.02] * 5 + [2.0])
    assert hist.cumulative_below([0.001, 0.005, 0.05, 10.0]) == [0, 3, 8, 9]


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5m", 300), ("1h", 3600), ("1.5d", 129600), (90, 90)])
def test_windows(text: object, seconds: float) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "m", "-1h", "0m", "1y", True])
def test_bad_windows_say_how_to_write_one(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        parse_window(bad)
