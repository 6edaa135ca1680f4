"""analysis.safe_point: the reference row and the lowest safe point on known cases."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.safe_point import lowest_safe_point, reference_row
from memory_models.stats import upper_bound


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
