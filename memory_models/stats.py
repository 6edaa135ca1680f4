"""Statistics over chips, on `scipy.stats`: t-intervals, paired and Welch differences, upper
bounds, the stopping rule of adaptive chips, and BCa bootstrap intervals.

Chips are the Monte-Carlo unit: each chip is one independent draw of persistent faults,
so intervals are Student-t intervals over chips (n - 1 degrees of freedom). Two models
evaluated on the same chip seeds (common random numbers) are compared by the paired
difference per chip, whose interval is far narrower than two independent intervals.
Non-finite entries (samples not written yet) are ignored; pairs need both members.

At high BER accuracy over chips can be bimodal (a chip either loses a high bit of a
critical weight or not); the symmetric t-interval is then too narrow on the side of the
rare mode, and `bootstrap_interval` / `paired_bootstrap_difference` (BCa) hold their level
better. No interval can show a mode that no chip of the sample hit.

This module lives in `memory_models`, the package that both the campaign driver
(`simulator`) and the report (`analysis`) import, so that neither imports the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

__all__ = [
    "INTERVALS",
    "Interval",
    "bootstrap_interval",
    "interval",
    "normality_rejected",
    "paired_interval",
    "needs_more_chips",
    "paired_bootstrap_difference",
    "paired_difference",
    "row_intervals",
    "t_interval",
    "upper_bound",
    "upper_bound_method",
    "welch_difference",
]


@dataclass(frozen=True)
class Interval:
    """Mean of n values with a two-sided confidence interval [low, high].

    With n = 1 the standard deviation and both bounds are NaN (one chip shows no spread);
    with n = 0 everything is NaN. Units are those of the values.
    """

    mean: float
    std: float  # sample standard deviation (ddof = 1); NaN when n < 2
    n: int
    low: float
    high: float
    confidence: float
    method: str = "t"  # 't' (Student-t) or 'bootstrap' (BCa)

    @property
    def width(self) -> float:
        """Full width high - low."""
        return self.high - self.low

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units (e.g. factor 100 for fractions -> percent)."""
        return Interval(
            self.mean * factor, self.std * abs(factor), self.n,
            min(self.low * factor, self.high * factor),
            max(self.low * factor, self.high * factor), self.confidence, self.method,
        )  # fmt: skip

    def to_dict(self) -> dict:
        """JSON-safe dict as campaigns report it (non-finite numbers become None)."""

        def clean(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "n": self.n,
            "mean": clean(self.mean),
            "std": clean(self.std),
            "ci_lo": clean(self.low),
            "ci_hi": clean(self.high),
            "ci_level": self.confidence,
            "ci_method": self.method,
        }


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def t_interval(values, confidence: float = 0.95) -> Interval:
    """Mean and two-sided Student-t interval of the finite entries of `values`."""
    _check_confidence(confidence)
    x = _finite(values)
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, 0, math.nan, math.nan, confidence)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, 1, math.nan, math.nan, confidence)
    std = float(x.std(ddof=1))
    half = float(_st.t.ppf(0.5 + confidence / 2.0, n - 1)) * std / math.sqrt(n)
    return Interval(mean, std, n, mean - half, mean + half, confidence)


def paired_difference(a, b, confidence: float = 0.95) -> Interval:
    """t-interval of the per-pair difference a - b (pairs where both are finite).

    a[i] and b[i] are one chip (the same chip seed) under two models.
    """
    return t_interval(_differences(a, b), confidence)


def _differences(a, b) -> np.ndarray:
    """a - b over the pairs where both are finite."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal shapes, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok] - b[ok]


def welch_difference(a, b, confidence: float = 0.95) -> Interval:
    """Interval of mean(a) - mean(b) treating a and b as independent (Welch's t).

    Shown beside `paired_difference` to make the gain from common random numbers visible.
    `std` is NaN (two samples have no single spread); n = the smaller sample size.
    """
    _check_confidence(confidence)
    a, b = _finite(a), _finite(b)
    if a.size == 0 or b.size == 0:
        return Interval(math.nan, math.nan, 0, math.nan, math.nan, confidence)
    mean = float(a.mean() - b.mean())
    n = int(min(a.size, b.size))
    if a.size < 2 or b.size < 2:
        return Interval(mean, math.nan, n, math.nan, math.nan, confidence)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Interval(mean, math.nan, n, mean, mean, confidence)
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(_st.t.ppf(0.5 + confidence / 2.0, dof)) * se
    return Interval(mean, math.nan, n, mean - half, mean + half, confidence)


def row_intervals(matrix, confidence: float = 0.95) -> list[Interval]:
    """One t-interval per row of a (points x chips) matrix."""
    m = np.asarray(matrix, dtype=np.float64)
    return [t_interval(row, confidence) for row in m]


def upper_bound(values, confidence: float = 0.95, method: str = "t") -> float:
    """One-sided upper confidence bound of the mean: mean + t_{conf, n-1} * s / sqrt(n), or
    the upper end of a two-sided BCa bootstrap interval at level 2 conf - 1 where `method`
    is 'bootstrap' or normality is rejected (see `upper_bound_method`).

    NaN with fewer than two finite values (no confidence can be claimed from one chip).
    """
    _check_confidence(confidence)
    x = _finite(values)
    if x.size < 2:
        return math.nan
    if _method_for(x, method) == "bootstrap":
        level = 2.0 * confidence - 1.0  # the two-sided level whose upper end is one-sided
        return float(x.mean()) if level <= 0.0 else bootstrap_interval(x, level).high
    return float(
        x.mean() + _st.t.ppf(confidence, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    )


def upper_bound_method(values, method: str = "t") -> str:
    """Which bound `upper_bound(values, method=method)` uses: 't' or 'bootstrap'."""
    return _method_for(values, method)


def needs_more_chips(values, width: float, confidence: float = 0.95,
                     method: str = "t") -> bool:  # fmt: skip
    """Stopping rule of adaptive chips: True while the interval of `values` (one value per
    chip; `interval`, so a bootstrap where normality is rejected) is at least `width` wide
    (full width, units of the values).

    One chip bounds nothing, so it always needs more; no value at all needs none (there is
    nothing at that point to extend).
    """
    iv = interval(values, confidence, method)
    return iv.n == 1 or iv.width >= width


def bootstrap_interval(
    values, confidence: float = 0.95, *, n_resamples: int = 2000, seed: int = 0
) -> Interval:
    """Mean and two-sided BCa bootstrap interval (`scipy.stats.bootstrap`) of the finite
    entries of `values`, resampling chips.

    Deterministic: the resamples come from `seed`. As `t_interval`, n < 2 gives NaN bounds;
    equal values give the point itself.
    """
    iv = t_interval(values, confidence)
    if iv.n < 2 or iv.std == 0.0:  # no spread: every resample has the same mean
        return iv
    res = _st.bootstrap(
        (_finite(values),), np.mean, confidence_level=confidence, n_resamples=n_resamples,
        method="BCa", random_state=np.random.default_rng(seed),
    )  # fmt: skip
    ci = res.confidence_interval
    return Interval(iv.mean, iv.std, iv.n, float(ci.low), float(ci.high), confidence,
                    "bootstrap")


def paired_bootstrap_difference(
    a, b, confidence: float = 0.95, *, n_resamples: int = 2000, seed: int = 0
) -> Interval:
    """BCa bootstrap interval of the mean per-pair difference a - b: a chip is resampled
    with both of its values (pairs where both are finite)."""
    return bootstrap_interval(_differences(a, b), confidence, n_resamples=n_resamples, seed=seed)


# Interval methods a user can pick (`--interval`): 't' switches to the bootstrap by itself
# where a normality test rejects the chips' values (`interval(..., "t")` reports which one
# it used); 'bootstrap' uses it everywhere.
INTERVALS = ("t", "bootstrap")
NORMALITY_ALPHA = 0.05  # Shapiro-Wilk level below which chips are not treated as normal


def normality_rejected(values, alpha: float = NORMALITY_ALPHA) -> bool:
    """Whether a Shapiro-Wilk test rejects normality of the finite entries of `values` at
    level `alpha` (False with fewer than 3 values or no spread: nothing to test)."""
    x = _finite(values)
    if x.size < 3 or float(np.ptp(x)) == 0.0:
        return False
    return bool(_st.shapiro(x).pvalue < alpha)


def _method_for(x, method: str) -> str:
    if method not in INTERVALS:
        raise ValueError(f"interval method must be one of {INTERVALS}, got {method!r}")
    return "bootstrap" if method == "bootstrap" or normality_rejected(x) else "t"


def interval(values, confidence: float = 0.95, method: str = "t") -> Interval:
    """Two-sided interval of the mean: Student-t, or BCa bootstrap when `method` is
    'bootstrap' or when normality is rejected (heavy-tailed, bimodal chips). The result's
    `method` says which one was used."""
    if _method_for(values, method) == "bootstrap":
        return bootstrap_interval(values, confidence)
    return t_interval(values, confidence)


def paired_interval(a, b, confidence: float = 0.95, method: str = "t") -> Interval:
    """`interval` of the per-chip differences a - b (pairs where both are finite)."""
    return interval(_differences(a, b), confidence, method)
