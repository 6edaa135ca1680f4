"""analysis.stats against scipy and hand computations; lowest safe point on known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from analysis.stats import (
    lowest_safe_point,
    paired_difference,
    reference_row,
    t_interval,
    upper_bound,
    welch_difference,
)


def test_t_interval_matches_scipy():
    x = np.random.default_rng(1).normal(0.8, 0.05, 12)
    iv = t_interval(x, 0.95)
    lo, hi = st.t.interval(0.95, x.size - 1, loc=x.mean(), scale=st.sem(x))
    assert iv.n == 12
    assert iv.mean == pytest.approx(x.mean())
    assert iv.std == pytest.approx(x.std(ddof=1))
    assert (iv.low, iv.high) == (pytest.approx(lo), pytest.approx(hi))
    iv99 = t_interval(x, 0.99)
    assert iv99.half_width > iv.half_width


def test_t_interval_by_hand_and_edge_cases():
    # n = 4, mean 2.5, s = sqrt(5/3), t_{0.975, 3} = 3.182446305284263
    iv = t_interval([1.0, 2.0, 3.0, 4.0, math.nan])
    assert iv.n == 4
    assert iv.half_width == pytest.approx(3.182446305284263 * math.sqrt(5 / 3) / 2)
    one = t_interval([0.7])
    assert one.mean == 0.7 and one.n == 1 and math.isnan(one.low) and math.isnan(one.high)
    none = t_interval([math.nan])
    assert none.n == 0 and math.isnan(none.mean)
    same = t_interval([0.5, 0.5, 0.5])
    assert same.low == same.high == 0.5
    with pytest.raises(ValueError):
        t_interval([1.0, 2.0], confidence=1.0)


def test_scaled_interval_to_percent():
    iv = t_interval([0.1, 0.2, 0.3]).scaled(100.0)
    assert iv.mean == pytest.approx(20.0)
    assert iv.half_width == pytest.approx(100.0 * t_interval([0.1, 0.2, 0.3]).half_width)


def test_paired_difference_matches_scipy_ttest_rel():
    rng = np.random.default_rng(2)
    chip = rng.normal(0.0, 0.05, 20)  # shared chip effect (common random numbers)
    a = 0.85 + chip + rng.normal(0, 0.005, 20)
    b = 0.80 + chip + rng.normal(0, 0.005, 20)
    iv = paired_difference(a, b)
    ci = st.ttest_rel(a, b).confidence_interval(0.95)
    assert iv.mean == pytest.approx(np.mean(a - b))
    assert (iv.low, iv.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    un = welch_difference(a, b)
    ci_w = st.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (un.low, un.high) == (pytest.approx(ci_w.low), pytest.approx(ci_w.high))
    # the point of pairing: far narrower than two independent intervals
    assert iv.half_width < un.half_width / 4


def test_paired_difference_drops_incomplete_pairs():
    a = np.array([0.9, 0.8, math.nan, 0.7])
    b = np.array([0.8, math.nan, 0.6, 0.65])
    iv = paired_difference(a, b)
    assert iv.n == 2 and iv.mean == pytest.approx((0.1 + 0.05) / 2)
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


def test_upper_bound_is_one_sided():
    x = np.array([0.2, 0.5, 0.3, 0.4, 0.6])
    expect = x.mean() + st.t.ppf(0.95, 4) * x.std(ddof=1) / math.sqrt(5)
    assert upper_bound(x, 0.95) == pytest.approx(expect)
    assert math.isnan(upper_bound([0.1]))


def test_reference_row_prefers_nominal_then_zero_ber():
    assert reference_row([0.7, 0.9, 0.8], [1e-3, 1e-9, 1e-6], 0.9) == 1
    assert reference_row([0.7, 0.8], [1e-3, 0.0], 0.9) == 1
    assert reference_row([0.7, 0.8], [1e-3, 1e-6], 0.9) is None


def _chips(ref: float, drops_pp: list[float], jitter_pp: float, n: int = 8) -> np.ndarray:
    """(points, chips) accuracies: reference row then one row per drop, with a chip jitter."""
    rng = np.random.default_rng(3)
    rows = [np.full(n, ref)]
    for d in drops_pp:
        rows.append(ref - (d + jitter_pp * rng.standard_normal(n)) / 100.0)
    return np.array(rows)


def test_lowest_safe_point_lower_is_harsher_with_energy():
    knob = np.array([1.0, 0.9, 0.8, 0.7, 0.6])
    acc = _chips(0.9, [0.1, 0.5, 3.0, 0.0], jitter_pp=0.05)  # 0.6 V: isolated lucky point
    sp = lowest_safe_point(knob, [0, 1e-6, 1e-4, 1e-2, 1e-1], acc, nominal=1.0,
                           harsher="lower", energy=knob**2, max_drop_pp=1.0)
    assert sp.row == 2 and sp.knob == pytest.approx(0.8)
    assert sp.energy_saving == pytest.approx(1 - 0.8**2)
    assert sp.drop_mean_pp == pytest.approx(np.mean(100 * (acc[0] - acc[2])))
    assert sp.drop_upper_pp == pytest.approx(upper_bound(100 * (acc[0] - acc[2])))
    assert "nominal" in sp.reference
    assert [c.safe for c in sp.checks] == [True, True, False]  # stops at the first failure


def test_lowest_safe_point_uses_nominal_energy_not_one():
    knob = np.array([0.9, 0.8])
    acc = _chips(0.9, [0.0], jitter_pp=0.0)
    sp = lowest_safe_point(knob, [0, 1e-5], acc, nominal=0.9, harsher="lower",
                           energy=np.array([2.0, 1.5]))
    assert sp.energy_saving == pytest.approx(0.25)


def test_lowest_safe_point_higher_is_harsher_unordered_grid():
    ber = np.array([1e-2, 0.0, 1e-3, 1e-4])  # not in order on purpose
    acc = np.empty((4, 6))
    base = _chips(0.9, [0.2, 0.6, 5.0], jitter_pp=0.05, n=6)  # ref, 1e-4, 1e-3, 1e-2
    acc[1], acc[3], acc[2], acc[0] = base
    sp = lowest_safe_point(ber, ber, acc, nominal=0.0, harsher="higher", max_drop_pp=1.0)
    assert sp.knob == pytest.approx(1e-3) and sp.row == 2
    assert sp.energy_saving is None  # i.i.d. sweep: no energy model
    tight = lowest_safe_point(ber, ber, acc, nominal=0.0, harsher="higher", max_drop_pp=0.5)
    assert tight.knob == pytest.approx(1e-4)


def test_no_point_is_safe():
    knob = np.array([0.9, 0.8, 0.7])
    acc = _chips(0.9, [2.0, 5.0], jitter_pp=0.1)
    sp = lowest_safe_point(knob, [0, 1e-4, 1e-3], acc, nominal=0.9, harsher="lower",
                           energy=(knob / 0.9) ** 2)
    assert sp.row is None and sp.knob is None and sp.energy_saving is None
    assert len(sp.checks) == 1 and not sp.checks[0].safe


def test_confidence_bound_not_the_mean_decides():
    knob = np.array([0.9, 0.8])
    # same mean drop 0.8 pp; a wide spread over chips fails the 1 pp test, a narrow one passes
    narrow = _chips(0.9, [0.8], jitter_pp=0.05)
    wide = np.array([narrow[0], narrow[0] - np.array([0.0, 1.6, 0.0, 1.6, 0.0, 1.6, 0.0, 1.6])
                     / 100.0])
    assert np.mean(100 * (wide[0] - wide[1])) == pytest.approx(0.8)
    kw = {"nominal": 0.9, "harsher": "lower", "max_drop_pp": 1.0}
    assert lowest_safe_point(knob, [0, 1e-4], narrow, **kw).knob == pytest.approx(0.8)
    assert lowest_safe_point(knob, [0, 1e-4], wide, **kw).knob is None
    one_chip = narrow[:, :1]  # one chip cannot show 95 % confidence
    assert lowest_safe_point(knob, [0, 1e-4], one_chip, **kw).knob is None


def test_without_reference_point_uses_clean_accuracy():
    knob = np.array([0.8, 0.7, 0.6])
    acc = np.array([[0.899, 0.898, 0.899, 0.898], [0.895, 0.894, 0.896, 0.895],
                    [0.80, 0.82, 0.79, 0.81]])
    sp = lowest_safe_point(knob, [1e-6, 1e-4, 1e-2], acc, nominal=0.9, harsher="lower",
                           energy=(knob / 0.9) ** 2, clean_accuracy=0.9)
    assert sp.knob == pytest.approx(0.7)
    assert "clean accuracy" in sp.reference
    assert sp.energy_saving == pytest.approx(1 - (0.7 / 0.9) ** 2)


def test_bad_arguments():
    with pytest.raises(ValueError):
        lowest_safe_point([1.0], [0.0], [[0.9]], nominal=1.0, harsher="up")
    with pytest.raises(ValueError):
        lowest_safe_point([1.0, 0.9], [0.0, 0.1], [[0.9]], nominal=1.0, harsher="lower")
