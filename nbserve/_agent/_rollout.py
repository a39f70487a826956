"""Release checks: parity before traffic, shadow comparisons, and rollout gates.

The manager owns the state changes (canary on, promote, abort); this module holds what
decides them, as functions of plain data, so each rule is testable on its own.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._histogram import LatencyHistogram
from .._windows import parse_window
from ..errors import InvalidArgument

if TYPE_CHECKING:
    import pandas as pd

    from ._proxy import ShadowResult

PARITY_RTOL = 1e-6
PARITY_ATOL = 1e-9
PARITY_CHUNK_ROWS = 500


# -- parity ------------------------------------------------------------------------------


def compare_predictions(expected: list[Any], got: list[Any], inputs: "pd.DataFrame", *,
                        rtol: float = PARITY_RTOL, atol: float = PARITY_ATOL, examples: int = 10) -> dict[str, Any]:
    """Row by row: equal, or close for floats. The report names the differing rows."""
    differing = []
    for i, (want, have) in enumerate(zip(expected, got)):
        if not _same(want, have, rtol, atol):
            differing.append(i)
    if len(got) != len(expected):
        differing.extend(range(min(len(got), len(expected)), max(len(got), len(expected))))
    rows = []
    for i in differing[:examples]:
        rows.append({
            "row": i,
            "expected": _plain(expected[i]) if i < len(expected) else None,
            "served": _plain(got[i]) if i < len(got) else None,
            "input": json.loads(inputs.iloc[[i]].to_json(orient="records"))[0] if i < len(inputs) else None,
        })
    return {
        "status": "failed" if differing else "passed",
        "rows": len(expected),
        "mismatches": len(differing),
        "rtol": rtol,
        "atol": atol,
        "examples": rows,
    }


def _same(want: Any, have: Any, rtol: float, atol: float) -> bool:
    if isinstance(want, (list, tuple)) and isinstance(have, (list, tuple)):  # a vector per row
        return len(want) == len(have) and all(_same(w, h, rtol, atol) for w, h in zip(want, have))
    if isinstance(want, dict) and isinstance(have, dict):  # a record per row: a label and its score
        return want.keys() == have.keys() and all(_same(want[k], have[k], rtol, atol) for k in want)
    if isinstance(want, bool) or isinstance(have, bool):
        return want == have
    if isinstance(want, float) and math.isnan(want) and have is None:  # JSON writes NaN as null
        return True
    if isinstance(want, (int, float)) and isinstance(have, (int, float)):
        if math.isnan(want) and math.isnan(have):
            return True
        return abs(want - have) <= atol + rtol * abs(want)
    return want == have or str(want) == str(have)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# -- shadow --------------------------------------------------------------------------------


@dataclass
class ShadowStats:
    """How the shadow version answered the live requests mirrored to it."""

    version: int
    compared: int = 0
    differing: int = 0  # both answered 200, with different predictions
    errors: int = 0  # the live version answered 2xx, the shadow did not (or could not be reached)
    max_abs_diff: float = 0.0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    last_error: str | None = None

    def record(self, result: "ShadowResult") -> None:
        if not 200 <= result.live_status < 300:
            return  # nothing to compare a failed live answer with
        self.compared += 1
        self.latency.record(result.elapsed_ns / 1e9)
        if result.status != 200:
            self.errors += 1
            self.last_error = result.error or f"HTTP {result.status}: {result.body[:200]!r}"
            return
        try:
            live, shadow = json.loads(result.live_body), json.loads(result.body)
        except ValueError:
            self.differing += 1
            return
        if live == shadow:
            return
        self.differing += 1
        if isinstance(live, list) and isinstance(shadow, list) and len(live) == len(shadow):
            for a, b in zip(live, shadow):
                if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                    self.max_abs_diff = max(self.max_abs_diff, abs(a - b))

    def to_dict(self) -> dict[str, Any]:
        p50, p99 = self.latency.quantiles([0.5, 0.99])
        return {
            "version": self.version,
            "compared": self.compared,
            "differing": self.differing,
            "difference_rate": self.differing / self.compared if self.compared else None,
            "errors": self.errors,
            "error_rate": self.errors / self.compared if self.compared else None,
            "max_abs_diff": self.max_abs_diff,
            "p50_ms": None if p50 is None else p50 * 1e3,
            "p99_ms": None if p99 is None else p99 * 1e3,
            "last_error": self.last_error,
        }


# -- gates ---------------------------------------------------------------------------------

GATE_FIELDS = ("p99_ms", "error_rate", "drift_share", "min_requests", "window", "quality", "min_labels")
DEFAULT_GATES: dict[str, Any] = {"min_requests": 50, "window": "5m"}
# Quality gates are floors, except for error measures, where the figure is a ceiling.
LOWER_IS_BETTER = frozenset({"mae", "rmse"})


def check_gates(gates: dict[str, Any]) -> dict[str, Any]:
    """Validate gate settings; returns them with defaults filled in."""
    unknown = set(gates) - set(GATE_FIELDS)
    if unknown:
        raise InvalidArgument(f"unknown gate(s): {', '.join(sorted(unknown))}",
                              hint=f"gates: {', '.join(GATE_FIELDS)}")
    merged = {**DEFAULT_GATES, **{k: v for k, v in gates.items() if v is not None}}
    for key in ("p99_ms", "error_rate", "drift_share"):
        value = merged.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise InvalidArgument(f"gate {key} must be a number >= 0, got {value!r}")
    for key in ("error_rate", "drift_share"):
        if merged.get(key) is not None and merged[key] > 1:
            raise InvalidArgument(f"gate {key} is a share from 0 to 1, got {merged[key]!r}")
    minimum = merged["min_requests"]
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
        raise InvalidArgument(f"min_requests must be a whole number >= 1, got {minimum!r}")
    parse_window(merged["window"])
    quality = merged.get("quality")
    if quality is not None:
        from ._quality import METRICS

        if not isinstance(quality, dict) or not quality:
            raise InvalidArgument("gate quality maps metrics to limits, e.g. {'accuracy': 0.9}")
        for metric, limit in quality.items():
            if metric not in METRICS:
                raise InvalidArgument(f"unknown quality metric {metric!r}", hint=f"metrics: {', '.join(METRICS)}")
            if isinstance(limit, bool) or not isinstance(limit, (int, float)):
                raise InvalidArgument(f"quality gate {metric} needs a number, got {limit!r}")
        labels = merged.setdefault("min_labels", 50)
        if isinstance(labels, bool) or not isinstance(labels, int) or labels < 1:
            raise InvalidArgument(f"min_labels must be a whole number >= 1, got {labels!r}")
    return merged


def evaluate_gates(gates: dict[str, Any], figures: dict[str, Any]) -> tuple[str, list[str]]:
    """``("breach", reasons)``, ``("pass", [])`` once the window is over, else ``("waiting", [])``.

    Nothing is judged before ``min_requests`` requests reached the new version: a verdict
    on five requests would roll back (or promote) on noise.
    """
    gates = {**DEFAULT_GATES, **gates}
    if figures.get("requests", 0) < gates["min_requests"]:
        return "waiting", []
    reasons = []
    p99, limit = figures.get("p99_ms"), gates.get("p99_ms")
    if limit is not None and p99 is not None and p99 > limit:
        reasons.append(f"p99 {p99:.1f} ms > {limit:g} ms")
    rate, limit = figures.get("error_rate"), gates.get("error_rate")
    if limit is not None and rate is not None and rate > limit:
        reasons.append(f"error rate {rate:.1%} > {limit:.1%}")
    share, limit = figures.get("drift_share"), gates.get("drift_share")
    if limit is not None and share is not None and share > limit:
        reasons.append(f"drift share {share:.0%} > {limit:.0%}")
    quality = gates.get("quality") or {}
    measured = figures.get("quality") or {}
    labelled = figures.get("labelled", 0)
    if quality and labelled >= gates.get("min_labels", 50):
        for metric, limit in quality.items():
            value = measured.get(metric)
            if value is None:
                continue
            if metric in LOWER_IS_BETTER and value > limit:
                reasons.append(f"{metric} {value:.3g} > {limit:g} on {labelled} labelled rows")
            elif metric not in LOWER_IS_BETTER and value < limit:
                reasons.append(f"{metric} {value:.3g} < {limit:g} on {labelled} labelled rows")
    if reasons:
        return "breach", reasons
    if quality and labelled < gates.get("min_labels", 50):
        return "waiting", []  # a quality gate passes only once it could be judged
    if figures.get("age_seconds", 0.0) >= parse_window(gates["window"]):
        return "pass", []
    return "waiting", []
