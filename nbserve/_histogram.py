"""Latency histograms with log-spaced buckets: bounded relative error, cheap to merge.

A value ``v > 0`` falls in bucket ``i = ceil(log(v) / log(gamma))`` with
``gamma = (1 + a) / (1 - a)``; reporting the bucket's midpoint ``2 gamma^i / (gamma + 1)``
is then within ``a`` (relative) of every value in it, so any quantile read from the
histogram is within ``a`` of the true order statistic (the DDSketch argument). With
``a = 0.5%`` a latency range of 1 us to 1000 s needs at most ~2,100 buckets, and in
practice a few hundred.

Recording is a dict increment (the agent's capture thread does it); merging panes is
numpy addition over dense arrays; storage is a zlib-compressed dense ``uint32`` array.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["RELATIVE_ACCURACY", "LatencyHistogram"]

RELATIVE_ACCURACY = 0.005
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
_MIN_VALUE = 1e-9  # values are seconds; anything below a nanosecond is a nanosecond
_HEADER = struct.Struct("<iI")  # offset (first bucket index), number of buckets


def bucket_of(value: float) -> int:
    return math.ceil(math.log(max(value, _MIN_VALUE)) / _LOG_GAMMA)


def bucket_value(index: int) -> float:
    """The value reported for a bucket: within RELATIVE_ACCURACY of all values in it."""
    return 2.0 * _GAMMA**index / (_GAMMA + 1.0)


class LatencyHistogram:
    """Counts of latencies (in seconds) per log bucket, plus count and sum."""

    __slots__ = ("counts", "count", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0.0

    def record(self, seconds: float, n: int = 1) -> None:
        index = bucket_of(seconds)
        counts = self.counts
        counts[index] = counts.get(index, 0) + n
        self.count += n
        self.total += seconds * n

    def record_many(self, values: "np.ndarray | Iterable[float]") -> None:
        """Vectorised record (for tests and benchmarks)."""
        import numpy as np

        arr = np.maximum(np.asarray(values, dtype=np.float64), _MIN_VALUE)
        if arr.size == 0:
            return
        idx = np.ceil(np.log(arr) / _LOG_GAMMA).astype(np.int64)
        uniq, cnt = np.unique(idx, return_counts=True)
        for i, c in zip(uniq.tolist(), cnt.tolist()):
            self.counts[i] = self.counts.get(i, 0) + c
        self.count += int(arr.size)
        self.total += float(arr.sum())

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        counts = self.counts
        for index, n in other.counts.items():
            counts[index] = counts.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        return self

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) in seconds, within RELATIVE_ACCURACY; None when empty."""
        return self.quantiles([q])[0]

    def quantiles(self, qs: Iterable[float]) -> list[float | None]:
        qs = list(qs)
        if not self.count:
            return [None] * len(qs)
        ordered = sorted(self.counts.items())
        out: list[float | None] = []
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile must be within [0, 1], got {q}")
            rank = q * (self.count - 1)  # 0-based rank of the lower order statistic
            seen = 0
            for index, n in ordered:
                seen += n
                if seen > rank:
                    out.append(bucket_value(index))
                    break
            else:  # pragma: no cover - rank < count always finds a bucket
                out.append(bucket_value(ordered[-1][0]))
        return out

    def cumulative_below(self, bounds: Iterable[float]) -> list[int]:
        """How many values are <= each bound (for Prometheus-style buckets)."""
        ordered = sorted(self.counts.items())
        result = []
        for bound in bounds:
            result.append(sum(n for index, n in ordered if bucket_value(index) <= bound))
        return result

    # -- storage ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        import numpy as np

        if not self.counts:
            return _HEADER.pack(0, 0)
        low, high = min(self.counts), max(self.counts)
        dense = np.zeros(high - low + 1, dtype="<u4")
        for index, n in self.counts.items():
            dense[index - low] = n
        return _HEADER.pack(low, dense.size) + zlib.compress(dense.tobytes(), 1)

    @classmethod
    def from_bytes(cls, blob: bytes, *, total: float = 0.0) -> "LatencyHistogram":
        import numpy as np

        hist = cls()
        low, size = _HEADER.unpack_from(blob)
        if size:
            dense = np.frombuffer(zlib.decompress(blob[_HEADER.size:]), dtype="<u4")
            nonzero = np.flatnonzero(dense)
            hist.counts = dict(zip((nonzero + low).tolist(), dense[nonzero].tolist()))
            hist.count = int(dense.sum())
        hist.total = total
        return hist

    def __repr__(self) -> str:
        p50, p99 = self.quantiles([0.5, 0.99])
        fmt = lambda v: "-" if v is None else f"{v * 1e3:.3f} ms"  # noqa: E731
        return f"LatencyHistogram(count={self.count}, p50={fmt(p50)}, p99={fmt(p99)})"
