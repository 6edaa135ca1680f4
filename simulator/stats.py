"""Small statistics for Monte-Carlo campaigns: mean, standard deviation, Student-t intervals.

Pure Python + numpy (the simulator may not import scipy). The Student-t quantile comes from
the regularized incomplete beta function (continued fraction, Numerical Recipes `betacf`)
inverted by bisection; it agrees with `scipy.stats.t.ppf` to about 1e-10.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Summary", "t_quantile", "summarize", "paired_difference"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t distribution with `df` degrees of freedom (df > 0, 0 < p < 1)."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2.0
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Summary:
    """Mean of n samples with its sample standard deviation (ddof=1) and a t interval.

    With n = 1 the standard deviation is NaN and the interval is (-inf, inf); with n = 0
    everything is NaN. `width` = hi - lo (the full width of the interval).
    """

    n: int
    mean: float
    std: float
    lo: float
    hi: float
    level: float = 0.95

    @property
    def width(self) -> float:
        return self.hi - self.lo

    @property
    def half_width(self) -> float:
        return 0.5 * self.width

    def to_dict(self) -> dict:
        """JSON-safe dict (non-finite numbers become None)."""

        def clean(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "n": self.n,
            "mean": clean(self.mean),
            "std": clean(self.std),
            "ci_lo": clean(self.lo),
            "ci_hi": clean(self.hi),
            "ci_level": self.level,
        }


def summarize(values: Iterable[float], level: float = 0.95) -> Summary:
    """Mean, sample standard deviation and the two-sided Student-t `level` interval."""
    x = np.asarray(list(values), dtype=np.float64)
    n = int(x.size)
    if n == 0:
        nan = math.nan
        return Summary(0, nan, nan, nan, nan, level)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, math.nan, -math.inf, math.inf, level)
    std = float(x.std(ddof=1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half, level)


def paired_difference(
    a: Mapping[int, float], b: Mapping[int, float], level: float = 0.95
) -> Summary:
    """Summary of a[k] - b[k] over the keys (chips) present in both mappings.

    Paired over the same chips (common random numbers), so the interval is usually much
    narrower than the difference of two independent intervals.
    """
    keys = sorted(set(a) & set(b))
    return summarize((a[k] - b[k] for k in keys), level)
