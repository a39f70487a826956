"""nbserve._drift against real scipy: exact agreement, profile error bounds, defaults, config."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from nbserve._drift import REPORT_COLUMNS, DriftConfig, ReferenceProfile, drift_report

REL = 1e-9


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _samples(dist: str, n: int, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    if dist == "normal":
        return rng.normal(shift, 1.0, n)
    if dist == "lognormal":
        return rng.lognormal(shift, 1.0, n)
    if dist == "discrete":  # discrete-ish: many ties, a few dozen distinct values
        return np.round(rng.normal(shift, 1.0, n) * 4) / 4
    raise AssertionError(dist)


def _row(report: pd.DataFrame, feature) -> pd.Series:
    return report.set_index("feature").loc[feature]


def _psi_reference(a: np.ndarray, b: np.ndarray, bins: int = 10, eps: float = 1e-4):
    """PSI and JS on reference-decile bins, written independently of the module."""
    edges = np.unique(np.quantile(a, np.arange(1, bins) / bins))
    full = np.concatenate(([-np.inf], edges, [np.inf]))
    p = np.array([np.sum((a > lo) & (a <= hi)) for lo, hi in zip(full[:-1], full[1:])]) / a.size
    q = np.array([np.sum((b > lo) & (b <= hi)) for lo, hi in zip(full[:-1], full[1:])]) / b.size
    pc, qc = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((qc - pc) * np.log(qc / pc))), float(jensenshannon(p, q, base=2))


# ---------------------------------------------------------------------------------------------
# exact mode agrees with scipy


@pytest.mark.parametrize("dist", ["normal", "lognormal", "discrete"])
@pytest.mark.parametrize("sizes", [(30_000, 60_000), (800, 3_000)])
def test_exact_numeric_matches_scipy(dist, sizes):
    n, m = sizes
    rng = _rng(1)
    a, b = _samples(dist, n, rng), _samples(dist, m, rng, shift=0.1)
    report = drift_report(pd.DataFrame({"x": a}), pd.DataFrame({"x": b}))
    row = _row(report, "x")
    w = stats.wasserstein_distance(a, b) / np.std(a)
    ks = stats.ks_2samp(a, b)  # method="auto": exact at (800, 3000), asymptotic at 30k/60k
    assert row.wasserstein_norm == pytest.approx(w, rel=REL)
    assert row.ks_stat == pytest.approx(ks.statistic, rel=REL)
    assert row.ks_pvalue == pytest.approx(ks.pvalue, rel=REL, abs=1e-300)
    psi, js = _psi_reference(a, b)
    assert row.psi == pytest.approx(psi, rel=REL)
    assert row.js_distance == pytest.approx(js, rel=REL)
    assert np.isnan(row.chi2_pvalue)
    assert (row.n_reference, row.n_current) == (n, m)


def test_exact_large_ks_pvalue_is_scipy_asymp():
    rng = _rng(2)
    a, b = rng.normal(size=20_000), rng.normal(0.03, 1, size=40_000)
    row = _row(drift_report(pd.DataFrame({"x": a}), pd.DataFrame({"x": b})), "x")
    asymp = stats.ks_2samp(a, b, method="asymp")
    assert row.ks_pvalue == pytest.approx(asymp.pvalue, rel=REL)
    assert 1e-9 < row.ks_pvalue < 0.9  # a p-value in the interesting range, not a 0 or 1


def test_exact_categorical_matches_scipy_with_unseen_categories():
    rng = _rng(3)
    ref = pd.Series(rng.choice(list("abcd"), size=5_000, p=[0.4, 0.3, 0.2, 0.1]))
    cur = pd.Series(rng.choice(list("abcde"), size=7_000, p=[0.35, 0.3, 0.2, 0.1, 0.05]))
    row = _row(drift_report(pd.DataFrame({"c": ref}), pd.DataFrame({"c": cur})), "c")
    keys = list("abcde")
    r = ref.value_counts().reindex(keys, fill_value=0).to_numpy()
    c = cur.value_counts().reindex(keys, fill_value=0).to_numpy()
    assert row.kind == "categorical"
    assert row.js_distance == pytest.approx(jensenshannon(r / r.sum(), c / c.sum(), base=2),
                                            rel=REL)
    chi = stats.chi2_contingency(np.vstack([r, c]), correction=False)
    assert row.chi2_pvalue == pytest.approx(chi.pvalue, rel=REL, abs=1e-300)
    p, q = np.maximum(r / r.sum(), 1e-4), np.maximum(c / c.sum(), 1e-4)
    assert row.psi == pytest.approx(np.sum((q - p) * np.log(q / p)), rel=REL)
    assert row.psi > 0.05  # the unseen "e" weighs in through the epsilon
    assert np.isnan(row.wasserstein_norm) and np.isnan(row.ks_stat)


def test_binary_uses_z_test_which_equals_the_2x2_chi_square():
    rng = _rng(4)
    ref = pd.DataFrame({"flag": rng.random(600) < 0.3})
    cur = pd.DataFrame({"flag": rng.random(900) < 0.38})
    row = _row(drift_report(ref, cur), "flag")
    assert row.method == "z"
    r = np.array([(~ref.flag).sum(), ref.flag.sum()])
    c = np.array([(~cur.flag).sum(), cur.flag.sum()])
    chi = stats.chi2_contingency(np.vstack([r, c]), correction=False)
    assert row.score == pytest.approx(chi.pvalue, rel=1e-9)
    assert row.chi2_pvalue == pytest.approx(chi.pvalue, rel=1e-9)
    assert row.drifted == (chi.pvalue < 0.05)


# ---------------------------------------------------------------------------------------------
# profile mode: bounded error


@pytest.mark.parametrize("dist", ["normal", "lognormal", "discrete"])
@pytest.mark.parametrize("shift", [0.0, 0.05, 0.5])
def test_profile_within_tolerance_of_exact(dist, shift):
    rng = _rng(5)
    ref = pd.DataFrame({"x": _samples(dist, 50_000, rng)})
    cur = pd.DataFrame({"x": _samples(dist, 120_000, rng, shift=shift)})
    exact = _row(drift_report(ref, cur), "x")
    profile = ReferenceProfile.build(ref)  # 1000 quantiles
    approx = _row(drift_report(profile, cur), "x")
    # Wasserstein and KS are lower bounds with a stated bound on the gap
    assert -1e-9 <= exact.wasserstein_norm - approx.wasserstein_norm < 0.01
    gap = exact.ks_stat - approx.ks_stat
    assert -1e-12 <= gap <= 0.002
    # PSI and JS are exact (the PSI edges are among the stored quantiles)
    assert approx.psi == pytest.approx(exact.psi, rel=1e-9, abs=1e-12)
    assert approx.js_distance == pytest.approx(exact.js_distance, rel=1e-9, abs=1e-12)
    assert approx.drifted == exact.drifted
    assert approx.method == exact.method == "wasserstein"


def test_profile_ks_gap_within_one_bin_of_mass_with_few_bins():
    # with 20 bins the error is visible, and bounded by one bin of reference mass (1/20)
    rng = _rng(6)
    ref = pd.DataFrame({"x": rng.normal(size=20_000)})
    cur = pd.DataFrame({"x": rng.normal(0.3, 1.3, size=20_000)})
    exact = _row(drift_report(ref, cur), "x")
    approx = _row(drift_report(ReferenceProfile.build(ref, bins=20), cur), "x")
    assert -1e-12 <= exact.ks_stat - approx.ks_stat <= 1 / 20 + 1e-12
    assert -1e-9 <= exact.wasserstein_norm - approx.wasserstein_norm < 0.05


def test_profile_is_exact_when_every_reference_value_is_an_edge():
    rng = _rng(7)
    ref = pd.DataFrame({"x": rng.integers(0, 40, 10_000).astype(float)})
    cur = pd.DataFrame({"x": rng.integers(2, 42, 30_000).astype(float)})
    exact = _row(drift_report(ref, cur), "x")
    approx = _row(drift_report(ReferenceProfile.build(ref), cur), "x")
    assert approx.ks_stat == pytest.approx(exact.ks_stat, abs=1e-12)
    assert approx.wasserstein_norm == pytest.approx(exact.wasserstein_norm, rel=1e-9)


def test_profile_categorical_is_exact_and_exact_false_builds_a_profile():
    rng = _rng(8)
    ref = pd.DataFrame({"c": rng.choice(["x", "y", "z"], 3_000), "v": rng.normal(size=3_000)})
    cur = pd.DataFrame({"c": rng.choice(["x", "y", "w"], 4_000), "v": rng.normal(size=4_000)})
    exact = drift_report(ref, cur).set_index("feature")
    via_profile = drift_report(ref, cur, exact=False).set_index("feature")
    from_profile = drift_report(ReferenceProfile.build(ref), cur).set_index("feature")
    cols = ["js_distance", "chi2_pvalue", "psi"]
    np.testing.assert_allclose(via_profile.loc["c", cols].astype(float),
                               exact.loc["c", cols].astype(float), rtol=1e-12)
    pd.testing.assert_frame_equal(via_profile, from_profile)
    assert via_profile.loc["v", "ks_stat"] != exact.loc["v", "ks_stat"]  # really approximate
    with pytest.raises(ValueError):
        drift_report(ReferenceProfile.build(ref), cur, exact=True)


def test_profile_round_trips_through_json():
    rng = _rng(9)
    ref = pd.DataFrame({
        "num": rng.normal(size=2_000),
        "ints": rng.integers(0, 3, 2_000),
        "flag": rng.random(2_000) < 0.5,
        "s": rng.choice(["a", "b", "c", "d", "e", "f"], 2_000),
        "cat": pd.Categorical(rng.choice(["lo", "hi"], 2_000)),
        "when": pd.date_range("2024-01-01", periods=2_000, freq="h"),
    })
    cur = ref.sample(frac=1.0, random_state=1).reset_index(drop=True)
    cur["num"] += 0.3
    profile = ReferenceProfile.build(ref)
    wire = json.dumps(profile.to_dict())
    back = ReferenceProfile.from_dict(json.loads(wire))
    pd.testing.assert_frame_equal(drift_report(profile, cur), drift_report(back, cur))
    assert json.loads(json.dumps(back.to_dict())) == json.loads(wire)
    report = drift_report(back, cur).set_index("feature")
    assert report.loc["ints", "kind"] == "categorical"
    assert report.loc["when", "method"] == "n/a"
    assert report.loc["num", "drifted"] and not report.loc["s", "drifted"]
    with pytest.raises(ValueError):
        ReferenceProfile.from_dict({"format": "something else"})


# ---------------------------------------------------------------------------------------------
# defaults, decisions and config


def test_small_reference_uses_tests_large_uses_distances():
    rng = _rng(10)

    def frames(n):
        ref = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(list("abc"), n),
                            "b": rng.random(n) < 0.5})
        cur = pd.DataFrame({"x": rng.normal(size=3_000), "c": rng.choice(list("abc"), 3_000),
                            "b": rng.random(3_000) < 0.5})
        return ref, cur

    small = drift_report(*frames(1_000)).set_index("feature")["method"].to_dict()
    large = drift_report(*frames(1_001)).set_index("feature")["method"].to_dict()
    assert small == {"x": "ks", "c": "chisquare", "b": "z"}
    assert large == {"x": "wasserstein", "c": "jensenshannon", "b": "jensenshannon"}
    cfg = DriftConfig(small_sample_max=5_000)
    assert drift_report(*frames(2_000), config=cfg).set_index("feature").loc["x", "method"] == "ks"


@pytest.mark.parametrize("n_ref", [500, 20_000])
def test_shifted_data_drifts_and_same_distribution_does_not(n_ref):
    rng = _rng(11)
    ref = pd.DataFrame({"x": rng.normal(size=n_ref), "c": rng.choice(list("abcd"), n_ref)})
    same = pd.DataFrame({"x": rng.normal(size=50_000), "c": rng.choice(list("abcd"), 50_000)})
    moved = pd.DataFrame({"x": rng.normal(0.5, 1, 50_000),
                          "c": rng.choice(list("abcd"), 50_000, p=[0.55, 0.15, 0.15, 0.15])})
    for reference in (ref, ReferenceProfile.build(ref)):
        calm = drift_report(reference, same)
        assert not calm["drifted"].any(), calm
        assert calm.attrs["dataset_drift"] is False
        loud = drift_report(reference, moved)
        assert loud["drifted"].all(), loud
        assert loud.attrs["dataset_drift"] is True


def test_large_n_decides_on_effect_size_not_p_value():
    # a tiny shift at large n: KS p-value is ~0 but the effect is small, so no drift
    rng = _rng(12)
    ref = pd.DataFrame({"x": rng.normal(size=100_000)})
    cur = pd.DataFrame({"x": rng.normal(0.03, 1, 200_000)})
    row = _row(drift_report(ref, cur), "x")
    assert row.ks_pvalue < 1e-6
    assert row.method == "wasserstein" and not row.drifted
    forced = _row(drift_report(ref, cur, DriftConfig(numeric_method="ks")), "x")
    assert forced.method == "ks" and forced.drifted and forced.threshold == 0.05


def test_dataset_drift_flips_at_the_share():
    rng = _rng(13)
    n = 5_000
    ref = pd.DataFrame({f"f{i}": rng.normal(size=n) for i in range(4)})
    cur = pd.DataFrame({f"f{i}": rng.normal(size=n) for i in range(4)})
    cur["f0"] += 1.0
    one = drift_report(ref, cur)
    assert one.attrs["drifted_features"] == 1 and one.attrs["drift_share"] == 0.25
    assert one.attrs["dataset_drift"] is False
    cur["f1"] += 1.0
    two = drift_report(ref, cur)
    assert two.attrs["drift_share"] == 0.5 and two.attrs["dataset_drift"] is True
    assert drift_report(ref, cur, DriftConfig(drift_share=0.51)).attrs["dataset_drift"] is False
    assert two.attrs == {"dataset_drift": True, "drift_share": 0.5, "drifted_features": 2,
                         "features": 4, "n_reference": n, "n_current": n}


def test_config_overrides_methods_and_thresholds():
    rng = _rng(14)
    ref = pd.DataFrame({"x": rng.normal(size=5_000), "y": rng.normal(size=5_000),
                        "c": rng.choice(list("abc"), 5_000)})
    cur = pd.DataFrame({"x": rng.normal(0.2, 1, 5_000), "y": rng.normal(0.2, 1, 5_000),
                        "c": rng.choice(list("abc"), 5_000, p=[0.4, 0.3, 0.3])})
    base = drift_report(ref, cur).set_index("feature")
    cfg = DriftConfig(numeric_method="psi", categorical_method="chisquare",
                      feature_methods={"y": "jensenshannon"}, psi_threshold=0.01,
                      jensenshannon_threshold=0.5)
    rep = drift_report(ref, cur, cfg).set_index("feature")
    assert rep.loc["x", "method"] == "psi" and rep.loc["x", "score"] == base.loc["x", "psi"]
    assert rep.loc["x", "threshold"] == 0.01 and rep.loc["x", "drifted"]
    assert rep.loc["y", "method"] == "jensenshannon" and not rep.loc["y", "drifted"]
    assert rep.loc["c", "method"] == "chisquare"
    assert rep.loc["c", "score"] == base.loc["c", "chi2_pvalue"] and rep.loc["c", "drifted"]
    high = drift_report(ref, cur, DriftConfig(wasserstein_threshold=0.5)).set_index("feature")
    assert base.loc["x", "drifted"] and not high.loc["x", "drifted"]
    only = drift_report(ref, cur, DriftConfig(columns=["c"]))
    assert only["feature"].tolist() == ["c"]
    with pytest.raises(ValueError):
        DriftConfig(numeric_method="chisquare")
    with pytest.raises(ValueError):
        DriftConfig(categorical_method="wasserstein")
    with pytest.raises(ValueError):
        DriftConfig(numeric_method="nope")
    with pytest.raises(ValueError):
        drift_report(ref, cur, DriftConfig(feature_methods={"c": "ks"}))


def test_kind_follows_distinct_values_in_the_reference():
    rng = _rng(15)
    ref = pd.DataFrame({"five": rng.integers(0, 5, 3_000), "six": rng.integers(0, 6, 3_000)})
    rep = drift_report(ref, ref).set_index("feature")
    assert rep.loc["five", "kind"] == "categorical" and rep.loc["six", "kind"] == "numeric"
    rep = drift_report(ref, ref, DriftConfig(categorical_max_unique=10)).set_index("feature")
    assert rep.loc["six", "kind"] == "categorical"


# ---------------------------------------------------------------------------------------------
# missing values and missing columns


def test_nans_and_infinities_are_dropped():
    rng = _rng(16)
    a, b = rng.normal(size=4_000), rng.normal(0.1, 1, 6_000)
    a_dirty, b_dirty = a.copy(), b.copy()
    a_dirty[::7] = np.nan
    b_dirty[::5] = np.nan
    b_dirty[1::50] = np.inf
    c = pd.Series(rng.choice(["u", "v", "w"], 6_000), dtype=object)
    c_dirty = c.copy()
    c_dirty[::3] = None
    ref = pd.DataFrame({"x": a_dirty, "c": c[:4_000]})
    cur = pd.DataFrame({"x": b_dirty, "c": c_dirty})
    for reference in (ref, ReferenceProfile.build(ref)):
        rep = drift_report(reference, cur).set_index("feature")
        keep_a, keep_b = np.isfinite(a_dirty), np.isfinite(b_dirty)
        assert rep.loc["x", "n_reference"] == keep_a.sum()
        assert rep.loc["x", "n_current"] == keep_b.sum()
        assert rep.loc["c", "n_current"] == c_dirty.notna().sum()
        assert np.isfinite(rep[["score", "psi", "js_distance"]].to_numpy(dtype=float)).all()
    clean = _row(drift_report(ref, cur), "x")
    w = stats.wasserstein_distance(a_dirty[keep_a], b_dirty[keep_b]) / np.std(a_dirty[keep_a])
    assert clean.wasserstein_norm == pytest.approx(w, rel=REL)


def test_missing_and_empty_columns_are_reported_not_evaluated():
    rng = _rng(17)
    ref = pd.DataFrame({"x": rng.normal(size=3_000), "gone": rng.normal(size=3_000),
                        "empty": rng.normal(size=3_000), "c": rng.choice(list("ab"), 3_000)})
    cur = pd.DataFrame({"x": rng.normal(3, 1, 3_000), "empty": np.full(3_000, np.nan),
                        "c": pd.Series([None] * 3_000, dtype=object), "extra": 1.0})
    for reference in (ref, ReferenceProfile.build(ref)):
        rep = drift_report(reference, cur)
        assert list(rep.columns) == list(REPORT_COLUMNS)
        assert rep["feature"].tolist() == ["x", "gone", "empty", "c"]  # "extra" is ignored
        na = rep.set_index("feature").loc[["gone", "empty", "c"]]
        assert (na["method"] == "n/a").all() and not na["drifted"].any()
        assert na["score"].isna().all() and (na["n_current"] == 0).all()
        assert rep.attrs["features"] == 1 and rep.attrs["drifted_features"] == 1
        assert rep.attrs["dataset_drift"] is True


def test_report_dtypes():
    rng = _rng(18)
    ref = pd.DataFrame({"x": rng.normal(size=100), "c": rng.choice(list("ab"), 100)})
    rep = drift_report(ref, ref)
    assert rep["drifted"].dtype == bool
    assert rep["n_reference"].dtype == np.int64 and rep["score"].dtype == np.float64
    assert rep.loc[rep.feature == "x", "ks_pvalue"].item() == pytest.approx(1.0)


@pytest.mark.parametrize("dist", ["normal", "lognormal", "discrete", "heavy"])
def test_profile_binning_equals_searchsorted(dist):
    # the grid lookup must give np.searchsorted's index for every value, edges and their
    # neighbouring floats included, and fall back to it when the tails are too heavy for a grid
    from nbserve._drift import _Grid

    rng = _rng(19)
    if dist == "heavy":
        ref, cur = rng.pareto(0.5, 20_000), rng.pareto(0.5, 50_000)
    else:
        ref, cur = _samples(dist, 20_000, rng), _samples(dist, 50_000, rng, shift=0.3)
    prof = ReferenceProfile.build(pd.DataFrame({"x": ref})).features["x"]
    edges = prof.edges
    probe = np.concatenate([cur, edges, np.nextafter(edges, np.inf),
                            np.nextafter(edges, -np.inf), [-1e300, 1e300, 0.0]])
    np.testing.assert_array_equal(prof.bin_index(probe),
                                  np.searchsorted(edges, probe, side="left"))
    assert (_Grid.build(edges) is None) == (dist == "heavy")


def test_profile_handles_current_values_beyond_the_reference_range():
    # a wider current puts ~8% of its mass below the reference min and ~8% above its max: the
    # tails are integrated exactly, so the profile still matches the exact Wasserstein closely
    rng = _rng(20)
    ref = pd.DataFrame({"x": rng.normal(size=20_000)})
    cur = pd.DataFrame({"x": rng.normal(0.0, 3.0, 60_000)})
    exact = _row(drift_report(ref, cur), "x")
    approx = _row(drift_report(ReferenceProfile.build(ref), cur), "x")
    assert exact.wasserstein_norm > 1.0
    assert -1e-9 <= exact.wasserstein_norm - approx.wasserstein_norm < 0.01
    assert -1e-12 <= exact.ks_stat - approx.ks_stat <= 0.002
