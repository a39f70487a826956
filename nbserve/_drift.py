"""Data drift between a reference frame and a current frame: pure computation, no agent.

    from nbserve._drift import DriftConfig, ReferenceProfile, drift_report

    report = drift_report(reference_df, current_df)            # exact statistics
    profile = ReferenceProfile.build(reference_df)             # once per version
    report = drift_report(profile, current_df)                 # fast, bounded error

The report is a DataFrame with one row per reference column (see ``REPORT_COLUMNS``) and
``report.attrs`` = ``{"dataset_drift", "drift_share", "drifted_features", "features",
"n_reference", "n_current"}``.

One room on purpose (over 600 lines): the exact statistics, the profiled ones and the report share
one set of per-feature decision rules (``_decide``) and thresholds, which must not drift apart.

Column kinds
    A column is *numeric* when its dtype is numeric (not bool) and the reference has more than
    ``categorical_max_unique`` (default 5) distinct finite values; otherwise it is *categorical*
    (strings, bools, pandas categories, low-cardinality numbers). Datetime, timedelta, complex and
    other columns are *unsupported*. The kind is decided on the reference (and frozen in a profile).

Missing values
    NaN/None/NA (and +-inf for numeric columns, as Evidently does) are dropped per column before
    any statistic. ``n_reference``/``n_current`` in a row count the values actually used.

Rows that are not evaluated
    A reference column that is missing from the current frame, all-missing on either side,
    unsupported, or whose current values cannot be read as numbers, gets a row with
    ``method="n/a"``, NaN statistics and ``drifted=False``. Such rows do not count in
    ``features`` (the denominator of ``drift_share``). Current columns absent from the reference
    are ignored (there is nothing to compare them with).

Defaults (Evidently's ``DataDriftPreset``, ``method="auto"``)
    reference column with <= ``small_sample_max`` (1000) values: statistical tests
        numeric: two-sample Kolmogorov-Smirnov, drift when p < 0.05
        categorical: chi-square test of homogeneity, or the two-proportion Z-test when reference
        and current together hold <= 2 categories, drift when p < 0.05
    otherwise: effect sizes, never p-values alone (at large n any difference is "significant")
        numeric: Wasserstein distance / reference std (ddof=0), drift when >= 0.1
        categorical: Jensen-Shannon distance (base 2) over the union of categories, drift when >= 0.1
    dataset drift when drifted / evaluated features >= ``drift_share`` (0.5).

    Differences from Evidently, deliberately: the chi-square test is the two-sample test of
    homogeneity on the 2 x k table of counts (``scipy.stats.chi2_contingency(...,
    correction=False)``), where Evidently runs a goodness-of-fit test that treats the reference
    proportions as exact (and gives p = 0 for any category unseen in the reference); the
    Wasserstein normaliser is the reference std without Evidently's 0.001 floor (a numeric column
    has > 5 distinct values, so its std is > 0).

Statistics computed for every evaluated column (NaN where they do not apply)
    numeric: ``wasserstein_norm``, ``psi``, ``ks_stat``, ``ks_pvalue``, ``js_distance`` (on the
    PSI bins); ``chi2_pvalue`` is NaN.
    categorical: ``psi``, ``js_distance``, ``chi2_pvalue`` (over the union of categories);
    ``wasserstein_norm``, ``ks_stat``, ``ks_pvalue`` are NaN.
    PSI uses ``psi_bins`` (10) reference-quantile bins (outer bins open-ended; duplicate edges
    merged) for numeric columns and the categories for categorical ones; proportions are clipped
    below at ``psi_epsilon`` (1e-4): PSI = sum((q - p) * ln(q / p)).

Exact mode (a DataFrame reference, ``exact=True``, the default for a DataFrame)
    Wasserstein is the integral of |F - G| over the merged sorted samples, the algorithm of
    ``scipy.stats.wasserstein_distance``; the ECDF difference is accumulated in integer counts, so
    it agrees with scipy to rounding (~1e-12 relative). The KS statistic is the sup of |F - G| at
    the ends of tie blocks, as ``scipy.stats.ks_2samp``. The KS p-value is exactly scipy's
    ``method="auto"`` choice: when both samples have <= 10,000 values ``ks_2samp`` itself is
    called (exact distribution, falling back to asymptotic as scipy does); otherwise the
    asymptotic two-sided p-value ``kstwo.sf(D, round(n*m/(n+m)))``, which is what ``ks_2samp``
    computes for ``method="asymp"`` (and for ``"auto"`` at those sizes).

Profile mode (a ``ReferenceProfile``)
    A numeric column keeps ``bins`` (default 1000) reference quantiles plus min and max as bin
    edges (every distinct value when there are no more than ``bins + 1`` of them), the number of
    reference values <= each edge, and, per bin, the exact integral of the reference ECDF over it.
    The current column is histogrammed on those edges (a uniform-grid lookup that gives exactly
    ``np.searchsorted``'s bin index, or ``np.searchsorted`` itself for very heavy tails, then
    ``np.bincount``: no sort, no Python loop over rows), with the exact integral of its ECDF per
    bin. Then:

    * PSI and the numeric JS distance are exact (the PSI edges are among the stored quantiles),
      provided ``bins`` is a multiple of ``psi_bins`` (else the nearest stored quantiles are used).
    * KS statistic: the sup of |F - G| over the edges, a lower bound of the exact D, and
      ``D_exact - D_profile <= max reference mass of one bin`` (~1/bins for continuous data,
      0 when every reference value is an edge). The p-value is the asymptotic one from that D.
    * Wasserstein: the tails beyond the reference min/max are exact, and each bin contributes
      |integral of (F - G)|, which equals the integral of |F - G| unless F - G changes sign inside
      the bin. So the result is a lower bound, exact when no bin holds a crossing, and the error
      is at most 2 * sum over crossing bins of width * (reference mass + current mass in the bin)
      / reference std: in practice < 0.005 for 1000 bins (the tests hold it to 0.01).
    * Categorical columns keep their category counts: every statistic is exact.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

__all__ = ["DriftConfig", "ReferenceProfile", "drift_report", "REPORT_COLUMNS"]

REPORT_COLUMNS = (
    "feature", "kind", "method", "score", "threshold", "drifted",
    "wasserstein_norm", "psi", "ks_stat", "ks_pvalue", "js_distance", "chi2_pvalue",
    "n_reference", "n_current",
)

_NUMERIC_METHODS = ("wasserstein", "psi", "ks", "jensenshannon")
_CATEGORICAL_METHODS = ("psi", "jensenshannon", "chisquare", "z")
_METHODS = ("auto", "wasserstein", "psi", "ks", "jensenshannon", "chisquare", "z")
# scipy.stats.ks_2samp(method="auto") is exact up to this many values in the larger sample.
_KS_EXACT_MAX_N = 10_000
_PROFILE_FORMAT = "nbserve.drift.profile"
_PROFILE_VERSION = 1
_NA = float("nan")


@dataclass(frozen=True)
class DriftConfig:
    """How columns are compared. Every default follows Evidently's ``DataDriftPreset``.

    Methods: ``"auto"`` (see the module docstring), ``"wasserstein"``, ``"psi"``, ``"ks"``,
    ``"jensenshannon"`` (numeric or categorical), ``"chisquare"``, ``"z"`` (categorical only).
    ``feature_methods`` overrides the per-kind method for named columns. Distances drift when
    ``score >= threshold``; p-values drift when ``score < pvalue_threshold``.
    """

    numeric_method: str = "auto"
    categorical_method: str = "auto"
    feature_methods: Mapping[Any, str] = field(default_factory=dict)
    wasserstein_threshold: float = 0.1
    psi_threshold: float = 0.1
    jensenshannon_threshold: float = 0.1
    pvalue_threshold: float = 0.05
    drift_share: float = 0.5
    small_sample_max: int = 1000
    categorical_max_unique: int = 5
    psi_bins: int = 10
    psi_epsilon: float = 1e-4
    columns: Sequence[Any] | None = None
    threads: int | None = None  # worker threads over columns; None: min(4, cpu count)

    def __post_init__(self) -> None:
        for name in ("numeric_method", "categorical_method"):
            if getattr(self, name) not in _METHODS:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {_METHODS}")
        if self.numeric_method in ("chisquare", "z"):
            raise ValueError(f"numeric_method={self.numeric_method!r} applies to categories only")
        if self.categorical_method in ("wasserstein", "ks"):
            raise ValueError(
                f"categorical_method={self.categorical_method!r} applies to numbers only")
        for col, method in self.feature_methods.items():
            if method not in _METHODS:
                raise ValueError(f"feature_methods[{col!r}]={method!r}: expected one of {_METHODS}")
        if self.psi_bins < 2:
            raise ValueError("psi_bins must be >= 2")
        if not 0 < self.drift_share <= 1:
            raise ValueError("drift_share must be in (0, 1]")
        if self.psi_epsilon <= 0:
            raise ValueError("psi_epsilon must be > 0")

    def _method_for(self, feature: Any, kind: str, n_reference: int, n_categories: int) -> str:
        method = self.feature_methods.get(feature)
        if method is None:
            method = self.numeric_method if kind == "numeric" else self.categorical_method
        if method == "auto":
            small = n_reference <= self.small_sample_max
            if kind == "numeric":
                return "ks" if small else "wasserstein"
            if small:
                return "z" if n_categories <= 2 else "chisquare"
            return "jensenshannon"
        allowed = _NUMERIC_METHODS if kind == "numeric" else _CATEGORICAL_METHODS
        if method not in allowed:
            raise ValueError(f"method {method!r} does not apply to {kind} column {feature!r}")
        return method

    def _threshold(self, method: str) -> float:
        return {
            "wasserstein": self.wasserstein_threshold,
            "psi": self.psi_threshold,
            "jensenshannon": self.jensenshannon_threshold,
        }.get(method, self.pvalue_threshold)


# --------------------------------------------------------------------------------------------
# column helpers


def _kind_of_dtype(dtype: Any) -> str:
    """'number', 'category' or 'unsupported' from the dtype alone."""
    if pd.api.types.is_bool_dtype(dtype):
        return "category"
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        return "unsupported"
    if pd.api.types.is_complex_dtype(dtype):
        return "unsupported"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        return "category"
    return "unsupported"


def _as_float(series: pd.Series) -> np.ndarray:
    """The column as float64: a view when it already is one, else one copy."""
    return series.to_numpy(dtype=np.float64, na_value=np.nan, copy=False)


def _finite_sorted(values: np.ndarray) -> np.ndarray:
    """Sorted finite values (one copy: the sort's)."""
    s = np.sort(values)  # NaN sort last, after +inf
    lo = int(np.searchsorted(s, -np.inf, side="right"))
    hi = int(np.searchsorted(s, np.inf, side="left"))
    return s[lo:hi]


def _n_distinct_sorted(s: np.ndarray) -> int:
    return 0 if s.size == 0 else 1 + int(np.count_nonzero(s[1:] != s[:-1]))


def _value_counts(series: pd.Series) -> pd.Series:
    """Counts of the non-missing values, category order irrelevant, no zero counts."""
    vc = series.value_counts(dropna=True, sort=False)
    if isinstance(vc.index, pd.CategoricalIndex):
        vc.index = vc.index.astype(object)
    vc = vc[vc.to_numpy() > 0]
    return vc.astype(np.int64)


def _psi(p_ref: np.ndarray, p_cur: np.ndarray, eps: float) -> float:
    p = np.maximum(p_ref, eps)
    q = np.maximum(p_cur, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def _js(p_ref: np.ndarray, p_cur: np.ndarray) -> float:
    return float(jensenshannon(p_ref, p_cur, base=2))


def _ks_asymp_pvalue(d: float, n: int, m: int) -> float:
    en = float(n) * float(m) / (float(n) + float(m))
    return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def _psi_levels(psi_bins: int) -> np.ndarray:
    return np.arange(1, psi_bins) / psi_bins


def _row(feature: Any, kind: str, n_ref: int, n_cur: int, **stats_: float) -> dict:
    row = dict.fromkeys(REPORT_COLUMNS, _NA)
    row.update(feature=feature, kind=kind, method="n/a", threshold=_NA, drifted=False,
               n_reference=int(n_ref), n_current=int(n_cur))
    row.update(stats_)
    return row


def _decide(row: dict, feature: Any, config: DriftConfig, n_categories: int = 0) -> dict:
    method = config._method_for(feature, row["kind"], row["n_reference"], n_categories)
    score = {
        "wasserstein": row["wasserstein_norm"],
        "psi": row["psi"],
        "jensenshannon": row["js_distance"],
        "ks": row["ks_pvalue"],
        "chisquare": row["chi2_pvalue"],
        "z": row.pop("_z_pvalue", _NA),
    }[method]
    row.pop("_z_pvalue", None)
    threshold = config._threshold(method)
    if method in ("ks", "chisquare", "z"):
        drifted = bool(score < threshold)
    else:
        drifted = bool(score >= threshold)
    row.update(method=method, score=float(score), threshold=float(threshold), drifted=drifted)
    return row


# --------------------------------------------------------------------------------------------
# exact statistics


def _exact_wasserstein_ks(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """W1 and the KS statistic of two sorted finite samples, over their merged order.

    ``steps`` holds n*m*(F - G) just after each merged point: integers, exact in float64 up to
    2**53, so the only rounding is in the final dot product (as in scipy's own sum).
    """
    n, m = a.size, b.size
    pos_a = np.searchsorted(b, a, side="left")  # values of b strictly below a_i
    pos_a += np.arange(n)
    pos_b = np.searchsorted(a, b, side="right")  # values of a at or below b_j
    pos_b += np.arange(m)
    merged = np.empty(n + m)
    merged[pos_a] = a
    merged[pos_b] = b
    steps = np.empty(n + m)
    steps[pos_a] = m
    steps[pos_b] = -n
    del pos_a, pos_b
    np.cumsum(steps, out=steps)
    gaps = np.diff(merged)
    del merged
    head = steps[:-1]
    np.abs(head, out=head)
    w = float(np.dot(head, gaps)) / (float(n) * float(m))
    # the ECDFs are only evaluated once a whole tie block is in: where the next value differs
    ends = head[gaps > 0]
    d = float(ends.max()) / (float(n) * float(m)) if ends.size else 0.0
    return w, d


def _numeric_exact(feature: Any, ref: pd.Series, cur: pd.Series, config: DriftConfig) -> dict:
    a = _finite_sorted(_as_float(ref))
    try:
        cur_values = _as_float(cur)
    except (TypeError, ValueError):
        return _row(feature, "numeric", a.size, 0)
    b = _finite_sorted(cur_values)
    del cur_values
    n, m = a.size, b.size
    if n == 0 or m == 0:
        return _row(feature, "numeric", n, m)
    w, d = _exact_wasserstein_ks(a, b)
    std = float(np.std(a))
    if max(n, m) <= _KS_EXACT_MAX_N:
        res = stats.ks_2samp(a, b)  # scipy's own choice of exact or asymptotic
        d, pvalue = float(res.statistic), float(res.pvalue)
    else:
        pvalue = _ks_asymp_pvalue(d, n, m)
    edges = np.unique(np.quantile(a, _psi_levels(config.psi_bins)))
    ref_counts = np.diff(np.searchsorted(a, edges, side="right"), prepend=0, append=n)
    cur_counts = np.diff(np.searchsorted(b, edges, side="right"), prepend=0, append=m)
    p_ref, p_cur = ref_counts / n, cur_counts / m
    row = _row(feature, "numeric", n, m,
               wasserstein_norm=w / std if std > 0 else _NA,
               psi=_psi(p_ref, p_cur, config.psi_epsilon), ks_stat=d, ks_pvalue=pvalue,
               js_distance=_js(p_ref, p_cur))
    return _decide(row, feature, config)


def _categorical_stats(feature: Any, ref_counts: pd.Series, cur_counts: pd.Series,
                       config: DriftConfig) -> dict:
    n, m = int(ref_counts.sum()), int(cur_counts.sum())
    if n == 0 or m == 0:
        return _row(feature, "categorical", n, m)
    both = pd.concat([ref_counts.rename("r"), cur_counts.rename("c")], axis=1).fillna(0)
    r = both["r"].to_numpy(dtype=np.float64)
    c = both["c"].to_numpy(dtype=np.float64)
    p_ref, p_cur = r / n, c / m
    k = r.size
    if k < 2:
        chi2_p = 1.0
    else:
        chi2_p = float(stats.chi2_contingency(np.vstack([r, c]), correction=False).pvalue)
    z_p = _NA
    if k <= 2:
        # two-proportion Z-test (pooled), as Evidently's z_stat_test; z**2 is the 2x2 chi-square
        pooled = (r[0] + c[0]) / (n + m)
        if pooled <= 0 or pooled >= 1:
            z_p = 1.0
        else:
            z = (p_ref[0] - p_cur[0]) / math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / m))
            z_p = float(2 * stats.norm.sf(abs(z)))
    row = _row(feature, "categorical", n, m,
               psi=_psi(p_ref, p_cur, config.psi_epsilon), js_distance=_js(p_ref, p_cur),
               chi2_pvalue=chi2_p, _z_pvalue=z_p)
    return _decide(row, feature, config, n_categories=k)


def _reference_kind(series: pd.Series, config: DriftConfig) -> str:
    base = _kind_of_dtype(series.dtype)
    if base != "number":
        return "categorical" if base == "category" else "unsupported"
    values = _as_float(series)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "numeric"
    # a glance at the head settles most columns without hashing them all
    if pd.unique(finite[:1000]).size > config.categorical_max_unique:
        return "numeric"
    return "numeric" if pd.unique(finite).size > config.categorical_max_unique else "categorical"


def _categorical_series(series: pd.Series, numeric_source: bool) -> pd.Series:
    """A categorical column's values for counting; numbers drop +-inf like numeric columns."""
    if numeric_source and _kind_of_dtype(series.dtype) == "number":
        values = _as_float(series)
        return pd.Series(values[np.isfinite(values)])
    return series


def _exact_feature(feature: Any, ref: pd.Series, cur: pd.Series | None,
                   config: DriftConfig) -> dict:
    kind = _reference_kind(ref, config)
    if kind == "unsupported":
        return _row(feature, "unsupported", int(ref.notna().sum()),
                    0 if cur is None else int(cur.notna().sum()))
    if cur is None:
        return _row(feature, kind, int(ref.notna().sum()), 0)
    if kind == "numeric":
        return _numeric_exact(feature, ref, cur, config)
    numeric_source = _kind_of_dtype(ref.dtype) == "number"
    return _categorical_stats(feature, _value_counts(_categorical_series(ref, numeric_source)),
                              _value_counts(_categorical_series(cur, numeric_source)), config)


# --------------------------------------------------------------------------------------------
# the profile

# Binning a current column is the profile's hot loop. np.searchsorted on unsorted values costs a
# branchy binary search per value; a uniform grid over [min, max] gives each value a lower bound
# of its bin index in O(1), and a few vectorised "step right while the edge is below" passes
# finish it. The result is identical to np.searchsorted(edges, x, side="left"); when no grid of
# at most 2**18 cells keeps the passes <= _GRID_MAX_STEPS (very heavy tails), searchsorted is used.
_GRID_SIZES = (1 << 12, 1 << 14, 1 << 16, 1 << 18)
_GRID_MAX_STEPS = 4


@dataclass(frozen=True)
class _Grid:
    origin: float
    inv_width: float
    cells: int
    start: np.ndarray  # per cell: a lower bound of the bin index of any value in it
    steps: int  # passes that always suffice to reach the exact index
    edges_ext: np.ndarray  # the edges, then +inf

    @classmethod
    def build(cls, edges: np.ndarray) -> _Grid | None:
        last = edges.size - 1
        if last < 8 or not edges[-1] > edges[0]:
            return None
        for cells in _GRID_SIZES:
            width = (edges[-1] - edges[0]) / cells
            if not (width > 0 and np.isfinite(width)):
                return None
            points = edges[0] + np.arange(cells + 1) * width
            below = np.searchsorted(edges, points, side="left")  # edges < each grid point
            # a value mapped to cell c lies in [points[c-1], points[c+2]) whatever the rounding,
            # so below[c-1] is a lower bound of its index and below[c+2] an upper one
            padded = np.concatenate(([0], below, [last + 1]))  # padded[j] = below[j - 1]
            c = np.arange(cells)
            steps = int(np.max(padded[np.minimum(c + 3, cells + 2)] - padded[c]))
            if steps <= _GRID_MAX_STEPS:
                return cls(float(edges[0]), 1.0 / width, cells, padded[:cells].copy(), steps,
                           np.append(edges, np.inf))
        return None

    def index(self, x: np.ndarray) -> np.ndarray:
        """np.searchsorted(edges, x, side="left") for finite x."""
        t = x - self.origin
        t *= self.inv_width
        np.clip(t, 0, self.cells - 1, out=t)
        idx = self.start[t.astype(np.intp)]
        del t
        for _ in range(self.steps):
            idx += self.edges_ext[idx] < x
        return idx



@dataclass
class _NumericProfile:
    n: int
    std: float
    quantiles: np.ndarray  # bins + 1 values at levels k / bins (min and max included)
    edges: np.ndarray  # distinct sorted edges
    cum: np.ndarray  # reference values <= each edge (int64)
    integrals: np.ndarray  # per bin (edges[k-1], edges[k]]: integral of the ECDF count minus
    # the count at edges[k-1] over the bin, i.e. sum of (edges[k] - x) over x in the bin
    _grid: Any = field(default=False, repr=False, compare=False)  # False: not built yet

    def bin_index(self, x: np.ndarray) -> np.ndarray:
        if self._grid is False:
            self._grid = _Grid.build(self.edges)
        if self._grid is None:
            return np.searchsorted(self.edges, x, side="left")
        return self._grid.index(x)

    @classmethod
    def build(cls, a: np.ndarray, bins: int) -> _NumericProfile:
        n = a.size
        quantiles = np.quantile(a, np.arange(bins + 1) / bins)
        if _n_distinct_sorted(a) <= bins + 1:
            # every distinct value is an edge (F is then exact at and between edges); the
            # quantiles are edges too, so PSI bins always fall on edges
            edges = np.unique(np.concatenate([a, quantiles]))
        else:
            edges = np.unique(quantiles)
        cum = np.searchsorted(a, edges, side="right").astype(np.int64)
        prefix = np.concatenate(([0.0], np.cumsum(a)))
        # sum over x in (edges[k-1], edges[k]] of (edges[k] - x), k = 1..len(edges)-1
        counts = np.diff(cum)
        sums = np.diff(prefix[cum])
        integrals = counts * edges[1:] - sums
        np.maximum(integrals, 0.0, out=integrals)
        return cls(n=n, std=float(np.std(a)), quantiles=quantiles, edges=edges, cum=cum,
                   integrals=integrals)

    def to_dict(self) -> dict:
        return {"kind": "numeric", "n": self.n, "std": self.std,
                "quantiles": self.quantiles.tolist(), "edges": self.edges.tolist(),
                "cum_counts": self.cum.tolist(), "bin_integrals": self.integrals.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping) -> _NumericProfile:
        return cls(n=int(d["n"]), std=float(d["std"]),
                   quantiles=np.asarray(d["quantiles"], dtype=np.float64),
                   edges=np.asarray(d["edges"], dtype=np.float64),
                   cum=np.asarray(d["cum_counts"], dtype=np.int64),
                   integrals=np.asarray(d["bin_integrals"], dtype=np.float64))

    def compare(self, feature: Any, cur: pd.Series, config: DriftConfig) -> dict:
        try:
            values = _as_float(cur)
        except (TypeError, ValueError):
            return _row(feature, "numeric", self.n, 0)
        finite = np.isfinite(values)
        x = values if finite.all() else values[finite]
        del values, finite
        n, m = self.n, x.size
        if n == 0 or m == 0:
            return _row(feature, "numeric", n, m)
        edges = self.edges
        k_last = edges.size - 1
        # bin j holds (edges[j-1], edges[j]]; bin 0 is x <= edges[0]; bin K+1 is x > edges[K]
        idx = self.bin_index(x)
        counts = np.bincount(idx, minlength=k_last + 2)
        sums = np.bincount(idx, weights=x, minlength=k_last + 2)
        del idx
        anchor = np.append(edges, edges[-1])  # right end of each bin (K+1: the max, negated)
        gaps = counts * anchor - sums  # per bin: sum of (right end - x)
        cum_cur = np.cumsum(counts)[: k_last + 1].astype(np.float64)  # current <= each edge
        cum_ref = self.cum.astype(np.float64)
        f, g = cum_ref / n, cum_cur / m
        # KS over the edges (lower bound; see the module docstring)
        d = float(np.max(np.abs(f - g)))
        # Wasserstein: exact tails, |integral of F - G| per inner bin
        widths = np.diff(edges)
        int_f = f[:-1] * widths + self.integrals / n
        int_g = g[:-1] * widths + gaps[1 : k_last + 1] / m
        w = gaps[0] / m + float(np.sum(np.abs(int_f - int_g))) - gaps[k_last + 1] / m
        # PSI and JS on the reference-quantile bins, found among the stored edges
        bins = self.quantiles.size - 1
        if bins % config.psi_bins == 0:
            psi_q = self.quantiles[:: bins // config.psi_bins][1:-1]
        else:
            at = np.rint(_psi_levels(config.psi_bins) * bins).astype(np.int64)
            psi_q = self.quantiles[at]
        psi_edges = np.unique(psi_q)
        where = np.searchsorted(edges, psi_edges)  # every stored quantile is an edge
        ref_le, cur_le = self.cum[where], cum_cur[where]
        p_ref = np.diff(ref_le, prepend=0, append=n) / n
        p_cur = np.diff(cur_le, prepend=0, append=m) / m
        row = _row(feature, "numeric", n, m,
                   wasserstein_norm=w / self.std if self.std > 0 else _NA,
                   psi=_psi(p_ref, p_cur, config.psi_epsilon), ks_stat=d,
                   ks_pvalue=_ks_asymp_pvalue(d, n, m), js_distance=_js(p_ref, p_cur))
        return _decide(row, feature, config)


@dataclass
class _CategoricalProfile:
    counts: pd.Series
    numeric_source: bool

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def to_dict(self) -> dict:
        keys = [k.item() if isinstance(k, np.generic) else k for k in self.counts.index]
        return {"kind": "categorical", "numeric_source": self.numeric_source,
                "categories": keys, "counts": self.counts.astype(np.int64).tolist()}

    @classmethod
    def from_dict(cls, d: Mapping) -> _CategoricalProfile:
        counts = pd.Series(np.asarray(d["counts"], dtype=np.int64),
                           index=pd.Index(list(d["categories"]), dtype=object))
        return cls(counts=counts, numeric_source=bool(d.get("numeric_source", False)))

    def compare(self, feature: Any, cur: pd.Series, config: DriftConfig) -> dict:
        cur_counts = _value_counts(_categorical_series(cur, self.numeric_source))
        return _categorical_stats(feature, self.counts, cur_counts, config)


@dataclass
class _UnsupportedProfile:
    n: int

    def to_dict(self) -> dict:
        return {"kind": "unsupported", "n": self.n}

    def compare(self, feature: Any, cur: pd.Series, config: DriftConfig) -> dict:
        return _row(feature, "unsupported", self.n, int(cur.notna().sum()))


class ReferenceProfile:
    """A compact, JSON-able summary of a reference frame: enough for ``drift_report``.

    Built once per version (``ReferenceProfile.build(df)``); ``to_dict()`` / ``from_dict()``
    round-trip through JSON. Numeric columns keep ``bins`` quantiles (see the module docstring
    for the error this implies); categorical columns keep their category counts (so a column with
    very many categories makes a large profile). Column kinds are decided at build time with
    ``config.categorical_max_unique``.
    """

    def __init__(self, features: dict, n_rows: int, bins: int):
        self.features = features
        self.n_rows = int(n_rows)
        self.bins = int(bins)

    @classmethod
    def build(cls, reference: pd.DataFrame, bins: int = 1000,
              config: DriftConfig | None = None) -> ReferenceProfile:
        if bins < 2:
            raise ValueError("bins must be >= 2")
        config = config or DriftConfig()
        names = list(reference.columns) if config.columns is None else list(config.columns)
        features: dict = {}
        for name in names:
            series = reference[name]
            kind = _reference_kind(series, config)
            if kind == "numeric":
                features[name] = _NumericProfile.build(_finite_sorted(_as_float(series)), bins)
            elif kind == "categorical":
                numeric_source = _kind_of_dtype(series.dtype) == "number"
                features[name] = _CategoricalProfile(
                    _value_counts(_categorical_series(series, numeric_source)), numeric_source)
            else:
                features[name] = _UnsupportedProfile(int(series.notna().sum()))
        return cls(features, len(reference), bins)

    def to_dict(self) -> dict:
        return {"format": _PROFILE_FORMAT, "version": _PROFILE_VERSION, "n_rows": self.n_rows,
                "bins": self.bins,
                "features": [{"name": name, **prof.to_dict()}
                             for name, prof in self.features.items()]}

    @classmethod
    def from_dict(cls, d: Mapping) -> ReferenceProfile:
        if d.get("format") != _PROFILE_FORMAT or d.get("version") != _PROFILE_VERSION:
            raise ValueError(f"not a version-{_PROFILE_VERSION} nbserve drift profile")
        features: dict = {}
        for item in d["features"]:
            kind = item["kind"]
            if kind == "numeric":
                features[item["name"]] = _NumericProfile.from_dict(item)
            elif kind == "categorical":
                features[item["name"]] = _CategoricalProfile.from_dict(item)
            else:
                features[item["name"]] = _UnsupportedProfile(int(item["n"]))
        return cls(features, d["n_rows"], d["bins"])

    def __repr__(self) -> str:
        return (f"ReferenceProfile({len(self.features)} features, n_rows={self.n_rows}, "
                f"bins={self.bins})")


# --------------------------------------------------------------------------------------------
# the report


def drift_report(reference: pd.DataFrame | ReferenceProfile, current: pd.DataFrame,
                 config: DriftConfig | None = None, exact: bool | None = None) -> pd.DataFrame:
    """Compare ``current`` with ``reference`` column by column; see the module docstring.

    ``reference`` is a DataFrame (exact statistics by default; ``exact=False`` builds a profile
    first) or a ``ReferenceProfile`` (``exact`` must not be True). Columns are compared in
    parallel threads (``config.threads``); each works on one column at a time.
    """
    config = config or DriftConfig()
    if isinstance(reference, ReferenceProfile):
        if exact:
            raise ValueError("exact=True needs the reference DataFrame, not a ReferenceProfile")
        profile: ReferenceProfile | None = reference
        names = list(profile.features) if config.columns is None else list(config.columns)
        n_rows = profile.n_rows
    elif isinstance(reference, pd.DataFrame):
        profile = None if exact is None or exact else ReferenceProfile.build(reference,
                                                                            config=config)
        names = list(reference.columns) if config.columns is None else list(config.columns)
        n_rows = len(reference)
    else:
        raise TypeError("reference must be a pandas DataFrame or a ReferenceProfile")
    if not isinstance(current, pd.DataFrame):
        raise TypeError("current must be a pandas DataFrame")

    def one(name: Any) -> dict:
        cur = current[name] if name in current.columns else None
        if profile is None:
            return _exact_feature(name, reference[name], cur, config)
        prof = profile.features.get(name)
        if prof is None:
            raise KeyError(f"column {name!r} is not in the reference profile")
        if cur is None:
            kind = {"_NumericProfile": "numeric", "_CategoricalProfile": "categorical"}.get(
                type(prof).__name__, "unsupported")
            return _row(name, kind, prof.n, 0)
        return prof.compare(name, cur, config)

    threads = config.threads or min(4, os.cpu_count() or 1)
    threads = max(1, min(threads, len(names)))
    if threads == 1:
        rows = [one(name) for name in names]
    else:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="nbserve-drift") as pool:
            rows = list(pool.map(one, names))

    report = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    report = report.astype({"drifted": bool, "n_reference": np.int64, "n_current": np.int64})
    for col in ("score", "threshold", "wasserstein_norm", "psi", "ks_stat", "ks_pvalue",
                "js_distance", "chi2_pvalue"):
        report[col] = report[col].astype(np.float64)
    evaluated = int((report["method"] != "n/a").sum())
    drifted = int(report["drifted"].sum())
    share = drifted / evaluated if evaluated else 0.0
    report.attrs = {"dataset_drift": bool(evaluated > 0 and share >= config.drift_share),
                    "drift_share": float(share), "drifted_features": drifted,
                    "features": evaluated, "n_reference": int(n_rows),
                    "n_current": int(len(current))}
    return report
