"""Campaign statistics and small campaign helpers (no engine needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from memory_models.usererror import UserInputError
from simulator.campaign import ber_rates, chip_seed, parse_sweep, point_rng
from simulator.stats import paired_difference, summarize, t_quantile


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 19, 30, 99, 1000, 10**6])
@pytest.mark.parametrize("p", [0.5, 0.6, 0.9, 0.975, 0.995, 0.025])
def test_t_quantile_matches_scipy(df, p):
    assert t_quantile(p, df) == pytest.approx(sps.t.ppf(p, df), rel=1e-9, abs=1e-12)


def test_summarize_matches_scipy_interval():
    x = np.random.default_rng(3).normal(0.8, 0.05, size=17)
    s = summarize(x)
    lo, hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert s.n == 17 and s.mean == pytest.approx(x.mean()) and s.std == pytest.approx(x.std(ddof=1))
    assert (s.lo, s.hi) == (pytest.approx(lo, rel=1e-10), pytest.approx(hi, rel=1e-10))
    assert s.width == pytest.approx(hi - lo)
    one = summarize([0.7])
    assert one.n == 1 and math.isnan(one.std) and one.width == math.inf
    assert one.to_dict()["ci_lo"] is None and one.to_dict()["mean"] == 0.7
    assert summarize([]).n == 0


def test_paired_difference_uses_common_chips_only():
    a = {0: 0.9, 1: 0.8, 2: 0.85, 3: 0.1}
    b = {0: 0.8, 1: 0.75, 2: 0.7}
    d = paired_difference(a, b)
    assert d.n == 3
    assert d.mean == pytest.approx(np.mean([0.1, 0.05, 0.15]))
    diffs = np.array([0.1, 0.05, 0.15])
    lo, hi = sps.t.interval(0.95, 2, loc=diffs.mean(), scale=sps.sem(diffs))
    assert (d.lo, d.hi) == (pytest.approx(lo), pytest.approx(hi))


def test_parse_sweep():
    assert parse_sweep("0.80:1.00:0.01") == tuple(round(0.8 + i * 0.01, 12) for i in range(21))
    assert parse_sweep("0:0.02:0.002", "--ber")[-1] == 0.02
    assert len(parse_sweep("0:0.02:0.002", "--ber")) == 11
    assert parse_sweep("0.9,0.8, 1.0") == (0.8, 0.9, 1.0)
    assert parse_sweep("0.85") == (0.85,)
    for bad in ("0.8:1.0", "a:b:c", "1:0:0.1", "0:1:0", "0:1:-1", "", "nan", "0:inf:1"):
        with pytest.raises(UserInputError):
            parse_sweep(bad)


def test_ber_rates_and_seeds():
    assert ber_rates(0.01) == pytest.approx((0.01, 0.01))
    p01, p10 = ber_rates(0.01, 3.0)
    assert p01 == pytest.approx(3 * p10) and (p01 + p10) / 2 == pytest.approx(0.01)
    assert ber_rates(0.02, 0.0) == pytest.approx((0.0, 0.04))
    seeds = [chip_seed(0, c) for c in range(50)]
    assert len(set(seeds)) == 50 and all(0 <= s < 2**63 for s in seeds)
    assert chip_seed(0, 3) == chip_seed(0, 3) != chip_seed(1, 3)
    a = point_rng(5, 2, 7).random(4)
    np.testing.assert_array_equal(a, np.random.default_rng([5, 2, 7]).random(4))
