"""Statistics over chips: t-intervals, paired differences, the lowest safe operating point.

Chips are the Monte-Carlo unit: each chip is one independent draw of persistent faults,
so intervals are Student-t intervals over chips (n - 1 degrees of freedom). Two models
evaluated on the same chip seeds (common random numbers) are compared by the paired
difference per chip, whose interval is far narrower than two independent intervals.
NaN entries (samples not written yet) are ignored; pairs need both members.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as _st


@dataclass(frozen=True)
class Interval:
    """Mean of n values with a two-sided t confidence interval (NaN bounds when n < 2)."""

    mean: float
    std: float  # sample standard deviation (ddof = 1); NaN when n < 2
    n: int
    low: float
    high: float
    confidence: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units (e.g. factor 100 for fractions -> percent)."""
        return Interval(
            self.mean * factor, self.std * abs(factor), self.n,
            min(self.low * factor, self.high * factor),
            max(self.low * factor, self.high * factor), self.confidence,
        )


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def t_interval(values, confidence: float = 0.95) -> Interval:
    """Mean and two-sided Student-t interval of the finite entries of `values`."""
    _check_confidence(confidence)
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
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
    """t-interval of the per-pair difference a - b (pairs where both are finite)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal shapes, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    return t_interval(a[ok] - b[ok], confidence)


def welch_difference(a, b, confidence: float = 0.95) -> Interval:
    """Interval of mean(a) - mean(b) treating a and b as independent (Welch's t).

    Shown beside `paired_difference` to make the gain from common random numbers visible.
    `std` is NaN (two samples have no single spread); n = the smaller sample size.
    """
    _check_confidence(confidence)
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
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


def upper_bound(values, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of the mean: mean + t_{conf, n-1} * s / sqrt(n).

    NaN with fewer than two finite values (no confidence can be claimed from one chip).
    """
    _check_confidence(confidence)
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size < 2:
        return math.nan
    return float(
        x.mean() + _st.t.ppf(confidence, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    )


def reference_row(knob, ber, nominal: float) -> int | None:
    """Row of the campaign's reference point: the nominal knob value, else a zero-BER point."""
    knob = np.asarray(knob, dtype=np.float64)
    ber = np.asarray(ber, dtype=np.float64)
    if math.isfinite(nominal):
        hits = np.flatnonzero(np.isclose(knob, nominal, rtol=1e-9, atol=1e-12))
        if hits.size:
            return int(hits[0])
    hits = np.flatnonzero(ber == 0.0)
    return int(hits[0]) if hits.size else None


@dataclass(frozen=True)
class PointCheck:
    """The safety test at one operating point (drops in percentage points)."""

    row: int
    knob: float
    drop_mean_pp: float
    drop_upper_pp: float  # one-sided upper confidence bound of the paired drop
    n: int
    safe: bool


@dataclass(frozen=True)
class SafePoint:
    """The lowest safe operating point of one model in one campaign.

    `row` / `knob` are None when no point harsher than the reference passes the test.
    `energy_saving` is 1 - E(point) / E(nominal) as a fraction (None without an energy model).
    """

    row: int | None
    knob: float | None
    ber: float | None
    drop_mean_pp: float | None
    drop_upper_pp: float | None
    energy_saving: float | None
    max_drop_pp: float
    confidence: float
    reference: str  # what the drop is measured against
    checks: tuple[PointCheck, ...] = field(default=())


def _harshness_order(knob: np.ndarray, harsher: str) -> np.ndarray:
    return np.argsort(-knob if harsher == "lower" else knob, kind="stable")


def lowest_safe_point(
    knob,
    ber,
    accuracy,
    *,
    nominal: float,
    harsher: str,
    energy=None,
    clean_accuracy: float = math.nan,
    max_drop_pp: float = 1.0,
    confidence: float = 0.95,
) -> SafePoint:
    """Harshest operating point whose accuracy drop stays below `max_drop_pp` at `confidence`.

    knob, ber: (n_points,) operating points; accuracy: (n_points, n_chips) fractions.
    harsher: 'lower' (undervolting: lower knob = more errors) or 'higher'.
    Drop per chip = reference accuracy - accuracy at the point, in percentage points. The
    reference is the nominal point (or a zero-BER point) on the same chip, so the drop is
    paired; without one, it is the model's `clean_accuracy`. A point is safe when the
    one-sided upper `confidence` bound of the mean drop is below `max_drop_pp` (one chip
    cannot show that). Scanning from the reference towards harsher values, the answer is
    the last point before the first unsafe one, so an isolated lucky point further out is
    not reported. energy: (n_points,) relative energy per access; the saving is
    1 - E(point) / E(nominal point), with E(nominal) = 1 when the grid lacks it.
    """
    if harsher not in ("lower", "higher"):
        raise ValueError(f"harsher must be 'lower' or 'higher', got {harsher!r}")
    if not max_drop_pp >= 0.0:
        raise ValueError(f"max_drop_pp must be >= 0, got {max_drop_pp}")
    knob = np.asarray(knob, dtype=np.float64)
    ber = np.asarray(ber, dtype=np.float64)
    acc = np.asarray(accuracy, dtype=np.float64)
    if acc.ndim != 2 or acc.shape[0] != knob.size:
        raise ValueError(f"accuracy must be (n_points, n_chips), got {acc.shape}")
    energy = (
        np.full(knob.size, np.nan) if energy is None else np.asarray(energy, dtype=np.float64)
    )
    ref = reference_row(knob, ber, nominal)
    if ref is not None:
        ref_acc = acc[ref]
        kind = "nominal point" if np.isclose(knob[ref], nominal) else "zero-BER point"
        reference = f"{kind} ({knob[ref]:.6g}), paired per chip"
        ref_knob = knob[ref]
    else:
        ref_acc = np.full(acc.shape[1], clean_accuracy)
        reference = "clean accuracy of the model (no reference point in the grid)"
        ref_knob = nominal
    sign = -1.0 if harsher == "lower" else 1.0
    order = _harshness_order(knob, harsher)
    if math.isfinite(ref_knob):  # only points harsher than the reference are candidates
        order = [int(i) for i in order if sign * (knob[i] - ref_knob) > 0]
    checks = []
    best = None
    for i in order:
        drops = 100.0 * (ref_acc - acc[i])
        ok = np.isfinite(drops)
        up = upper_bound(drops, confidence)
        mean = float(drops[ok].mean()) if ok.any() else math.nan
        safe = math.isfinite(up) and up < max_drop_pp
        checks.append(PointCheck(i, float(knob[i]), mean, up, int(ok.sum()), safe))
        if not safe:
            break
        best = checks[-1]
    if best is None:
        return SafePoint(
            None, None, None, None, None, None, max_drop_pp, confidence, reference, tuple(checks)
        )
    e_nom = 1.0
    nom = np.flatnonzero(np.isclose(knob, nominal, rtol=1e-9, atol=1e-12))
    if nom.size and np.isfinite(energy[nom[0]]) and energy[nom[0]] > 0:
        e_nom = float(energy[nom[0]])
    e = energy[best.row]
    saving = float(1.0 - e / e_nom) if np.isfinite(e) else None
    return SafePoint(
        best.row, best.knob, float(ber[best.row]), best.drop_mean_pp, best.drop_upper_pp,
        saving, max_drop_pp, confidence, reference, tuple(checks),
    )
