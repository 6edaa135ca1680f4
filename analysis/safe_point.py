"""The lowest safe operating point of a model in a sweep campaign.

A point is safe when the one-sided upper confidence bound of the mean accuracy drop per
chip, paired against the campaign's reference point on the same chip, stays below a
threshold (intervals: `memory_models.stats`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from memory_models.stats import upper_bound, upper_bound_method


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
    bound: str = "t"  # how drop_upper_pp was bounded: 't' or 'bootstrap' (BCa)


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
    interval: str = "t",
    overhead: float = 1.0,
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
    interval: 't' bounds the drop with Student-t, or with the BCa bootstrap where a
    normality test rejects the per-chip drops; 'bootstrap' always uses the bootstrap.
    overhead: cells stored per data cell (a protection code's check cells); the energy of
    the point scales with it, so the saving is net of the code against the unprotected
    memory at nominal: 1 - overhead * E(point) / E(nominal point).
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
        up = upper_bound(drops, confidence, method=interval)
        mean = float(drops[ok].mean()) if ok.any() else math.nan
        safe = math.isfinite(up) and up < max_drop_pp
        checks.append(PointCheck(i, float(knob[i]), mean, up, int(ok.sum()), safe,
                                 upper_bound_method(drops, interval)))  # fmt: skip
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
    saving = float(1.0 - overhead * e / e_nom) if np.isfinite(e) else None
    return SafePoint(
        best.row, best.knob, float(ber[best.row]), best.drop_mean_pp, best.drop_upper_pp,
        saving, max_drop_pp, confidence, reference, tuple(checks),
    )
