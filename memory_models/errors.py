"""Error sources: `BitErrorModel` (i.i.d. per read) and `Chip` (one physical instance).

Both expose `fault_set(ranges, knob, rng, n_cells) -> FaultSet` for `MemoryImage.read`.
All rates are per cell, conditional on the stored bit (see `FlipRates`).
"""

from __future__ import annotations

from functools import partial
from os import PathLike

import numpy as np

from memory_models.image import corrupt_words
from memory_models.profile import FlipRates, Profile, load_profile
from memory_models.sampling import (
    LINE_CHUNK,
    PERSISTENT,
    TRANSIENT,
    WEAK_COLUMNS,
    WEAK_ROWS,
    FaultSet,
    NestedCells,
    Ranges,
    draw_base,
    iid_cells,
    setdiff_sorted,
    stream,
    union_sorted,
)
from memory_models.usererror import UserInputError


def _prob(v: float, name: str, source: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise UserInputError(source, name, f"{v!r} is not a number",
                             "pass a probability in [0, 1]") from None
    if not 0.0 <= x <= 1.0:  # also rejects NaN
        raise UserInputError(source, name, f"probability {x} outside [0, 1]",
                             "pass a probability in [0, 1]")
    return x


def _need_rng(rng, who: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{who}: rng must be a numpy Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    return rng


class BitErrorModel:
    """I.i.d. faults drawn anew at every read: each cell holding 0 reads 1 with p01, each
    holding 1 reads 0 with p10; independently a cell is stuck at 0 with sa0 or at 1 with sa1
    (stuck wins). Per bit, conditional on the stored bit."""

    def __init__(self, p01: float, p10: float, sa0: float = 0.0, sa1: float = 0.0) -> None:
        src = "BitErrorModel"
        self.p01, self.p10 = _prob(p01, "p01", src), _prob(p10, "p10", src)
        self.sa0, self.sa1 = _prob(sa0, "sa0", src), _prob(sa1, "sa1", src)
        if self.sa0 + self.sa1 > 1.0:
            raise UserInputError(src, "sa1", "sa0 + sa1 exceeds 1", "lower the stuck-at rates")

    @property
    def rates(self) -> FlipRates:
        return FlipRates(self.p01, self.p10, self.sa0, self.sa1)

    def __repr__(self) -> str:
        return (f"BitErrorModel(p01={self.p01:g}, p10={self.p10:g}, sa0={self.sa0:g}, "
                f"sa1={self.sa1:g})")

    def fault_set(self, ranges: Ranges, knob: float | None, rng: np.random.Generator,
                  n_cells: int | None = None) -> FaultSet:
        """Faults of one read inside `ranges` (one draw from `rng` keys all blocks)."""
        del knob, n_cells
        base = draw_base(_need_rng(rng, "BitErrorModel"))
        f01 = iid_cells(base, TRANSIENT["p01"], self.p01, ranges)
        f10 = iid_cells(base, TRANSIENT["p10"], self.p10, ranges)
        s0 = iid_cells(base, TRANSIENT["sa0"], self.sa0, ranges)
        s1 = np.zeros(0, np.int64)
        if self.sa1 > 0 and self.sa0 < 1:
            # P(sa1 and not sa0) = sa1 exactly
            s1 = setdiff_sorted(
                iid_cells(base, TRANSIENT["sa1"], self.sa1 / (1.0 - self.sa0), ranges), s0)
        return FaultSet(f01, f10, s0, s1)

    def corrupt(self, words: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
        """A corrupted copy of `words` (integer codes, any shape; bit j of word k is cell
        k*bits + j). Only bits 0..bits-1 are touched."""
        return corrupt_words(self, words, bits, None, rng, "BitErrorModel.corrupt")


class CellMap:
    """Per-cell rate multipliers of one chip: weak columns / rows and DRAM cell polarity.

    Cell i lies in array i // (rows*columns), row i // columns (global), column
    i % columns. Weak lines are drawn per chip in keyed chunks, so every array (bank) has
    its own weak columns (no map tiled over banks).
    """

    def __init__(self, profile: Profile, seed: int) -> None:
        self.profile, self.seed = profile, seed
        self.org, self.spatial, self.polarity = (profile.organization, profile.spatial,
                                                 profile.polarity)
        self.m_weak, self.m_norm = self.spatial.multipliers()
        self._chunks: dict[tuple[int, int], np.ndarray] = {}

    @property
    def clustered(self) -> bool:
        return self.spatial.mode != "iid"

    @property
    def polarized(self) -> bool:
        return self.polarity.mode != "none"

    @property
    def wmax(self) -> float:
        return max(self.m_weak, self.m_norm)

    def line_ids(self, pos: np.ndarray) -> np.ndarray:
        cols = self.org.columns
        if self.spatial.mode == "column":
            array = pos // (self.org.rows * cols)
            return array * cols + pos % cols  # global column id
        return pos // cols  # global row id

    def weak(self, pos: np.ndarray) -> np.ndarray:
        """True where the cell lies in a weak column / row of this chip."""
        purpose = WEAK_COLUMNS if self.spatial.mode == "column" else WEAK_ROWS
        line = self.line_ids(pos)
        chunk = line // LINE_CHUNK
        out = np.zeros(pos.shape, bool)
        if pos.size == 0:
            return out
        for c in range(int(chunk.min()), int(chunk.max()) + 1):
            key = (purpose, int(c))
            flags = self._chunks.get(key)
            if flags is None:
                flags = stream(self.seed, purpose, int(c)).random(LINE_CHUNK) < \
                    self.spatial.weak_fraction
                self._chunks[key] = flags
            sel = chunk == c
            if sel.any():
                out[sel] = flags[line[sel] % LINE_CHUNK]
        return out

    def multiplier(self, pos: np.ndarray) -> np.ndarray:
        if not self.clustered:
            return np.ones(pos.shape)
        return np.where(self.weak(pos), self.m_weak, self.m_norm)

    def true_cell(self, pos: np.ndarray) -> np.ndarray:
        """True cells store 1 as charge (leak 1->0); anti cells store 0 as charge."""
        mode, stripe = self.polarity.mode, self.polarity.stripe
        if mode in ("none", "all-true"):
            return np.ones(pos.shape, bool)
        if mode == "all-anti":
            return np.zeros(pos.shape, bool)
        line = pos // self.org.columns if mode == "alternating-rows" else pos % self.org.columns
        return (line // stripe) % 2 == 0

    def weight(self, direction: str, pos: np.ndarray) -> np.ndarray:
        """Rate multiplier of each cell for flips in `direction` ("p01" or "p10")."""
        m = self.multiplier(pos)
        if self.polarized:
            t = self.true_cell(pos)
            m = m * (t if direction == "p10" else ~t)
        return m

    def weight_fn(self, direction: str):
        """A picklable per-cell weight function for `direction`, or None if all are 1."""
        if not (self.clustered or self.polarized):
            return None
        return partial(self.weight, direction)


class Chip:
    """One physical memory instance of `n_bits` cells under a profile.

    Per cell and flip direction a latent uniform is drawn once from `seed`: the cell is a
    persistent fault at knob v iff U < f * p(v) * w (f = persistent fraction, w = its rate
    multiplier), so faults nest along the knob. Transient faults are drawn per read from
    the caller's `rng` at rate (p w - f p w)/(1 - f p w) on top, giving p w in total.
    Stuck-at cells are persistent: SA0 iff U_sa0 < sa0(v); SA1 iff not SA0 and
    U_sa1 < sa1(v)/(1 - sa0(v)). Weak cell sets are cached: a knob sweep reuses them.
    """

    def __init__(self, profile: Profile | str | PathLike[str], n_bits: int, seed: int) -> None:
        self.profile = load_profile(profile)
        if isinstance(n_bits, bool) or not isinstance(n_bits, int | np.integer) or n_bits < 0:
            raise UserInputError("Chip", "n_bits", f"{n_bits!r} is not a cell count",
                                 "pass a non-negative integer (img.n_bits)")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise UserInputError("Chip", "seed", f"{seed!r} is not a non-negative integer",
                                 "pass an integer seed >= 0")
        self.n_bits, self.seed = int(n_bits), int(seed)
        self.cells = CellMap(self.profile, self.seed)
        wmax = self.cells.wmax
        self._nested = {
            d: NestedCells(self.seed, PERSISTENT[d], self.n_bits, self.cells.weight_fn(d),
                           wmax if self.cells.weight_fn(d) is not None else 1.0)
            for d in ("p01", "p10")
        }
        for s in ("sa0", "sa1"):
            self._nested[s] = NestedCells(self.seed, PERSISTENT[s], self.n_bits)
        self._persistent_cache: dict[float, FaultSet] = {}

    def __repr__(self) -> str:
        return f"Chip({self.profile.name!r}, n_bits={self.n_bits}, seed={self.seed})"

    def persistent(self, knob: float, clamp: bool = False) -> FaultSet:
        """The chip's persistent faults at `knob` over all its cells (cached per knob)."""
        x = self.profile.check_knob(knob, clamp)
        hit = self._persistent_cache.get(x)
        if hit is not None:
            return hit
        r = self.profile.cell_rates(x)
        f = self.profile.persistent_fraction
        f01 = self._nested["p01"].cells(f * r.p01)
        f10 = self._nested["p10"].cells(f * r.p10)
        s0 = self._nested["sa0"].cells(r.sa0)
        s1 = np.zeros(0, np.int64)
        if r.sa1 > 0 and r.sa0 < 1:
            s1 = setdiff_sorted(self._nested["sa1"].cells(r.sa1 / (1.0 - r.sa0)), s0)
        fs = FaultSet(f01, f10, s0, s1)
        if len(self._persistent_cache) >= 4:  # bounded: a harsh knob holds many faults
            self._persistent_cache.pop(next(iter(self._persistent_cache)))
        self._persistent_cache[x] = fs
        return fs

    def _transient(self, direction: str, p: float, ranges: Ranges, base: int) -> np.ndarray:
        f = self.profile.persistent_fraction
        if p <= 0.0 or f >= 1.0:
            return np.zeros(0, np.int64)

        def q(w):  # transient rate of a cell with multiplier w, given not persistent
            tot = np.minimum(1.0, p * w)
            pers = np.minimum(1.0, f * p * w)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(pers < 1.0, (tot - pers) / (1.0 - pers), 0.0)

        wfn = self.cells.weight_fn(direction)
        if wfn is None:
            return iid_cells(base, TRANSIENT[direction], float(q(1.0)), ranges)
        rmax = float(q(self.cells.wmax))
        return iid_cells(base, TRANSIENT[direction], rmax, ranges, weight=wfn, rate_fn=q)

    def fault_set(self, ranges: Ranges, knob: float | None, rng: np.random.Generator | None,
                  n_cells: int | None = None) -> FaultSet:
        """Persistent plus this read's transient faults inside `ranges`."""
        if knob is None:
            raise UserInputError("Chip.read", "knob", "no knob value given",
                                 f"pass knob= in {self.profile.knob.unit}")
        if n_cells is not None and n_cells > self.n_bits:
            raise UserInputError("Chip", "n_bits",
                                 f"the memory image needs {n_cells} cells, the chip has "
                                 f"{self.n_bits}", "create the chip with n_bits=img.n_bits")
        x = self.profile.check_knob(knob)
        pers = self.persistent(x).restrict(ranges)
        f = self.profile.persistent_fraction
        r = self.profile.cell_rates(x)
        if f >= 1.0 or (r.p01 <= 0 and r.p10 <= 0):
            return pers
        base = draw_base(_need_rng(rng, "Chip.read"))
        t01 = self._transient("p01", r.p01, ranges, base)
        t10 = self._transient("p10", r.p10, ranges, base)
        return FaultSet(union_sorted(pers.f01, t01), union_sorted(pers.f10, t10), pers.s0,
                        pers.s1)

    def read(self, words: np.ndarray, bits: int, knob: float,
             rng: np.random.Generator | None) -> np.ndarray:
        """A corrupted copy of `words` stored from cell 0 (cell k*bits + j = bit j of word k)."""
        return corrupt_words(self, words, bits, knob, rng, "Chip.read")

    def expected_rates(self, knob: float) -> FlipRates:
        """The profile's array-average rates at `knob` (what reads converge to)."""
        return self.profile.rates(knob)
