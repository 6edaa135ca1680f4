"""Fault sampling in O(number of faults), keyed so that every draw is reproducible.

The cell address space is cut into blocks of `BLOCK` = 2^20 cells. Every draw for block `b`
is keyed by (entropy, purpose, b, tier): its fault count by the numpy stream
`SeedSequence(entropy, spawn_key=(purpose + 100, [tier,] b // 1024))` (element b % 1024),
its positions and latent uniforms by the counter-based stream (entropy, purpose, b, tier).
So the faults of a cell range do not depend on which other ranges are read, in which
order, or how the address space is split into reads.

Within a block, the cells failing at rate r are an exact Bernoulli(r) subset: a binomial
count k ~ Bin(2^20, r) (drawn for 1024 blocks at a time from a keyed numpy stream), then k
distinct positions from the block's counter-based stream (numba kernel, O(k); see
`_kernels`). Never one random number per bit.

Nested (persistent) faults use fixed rate tiers: tier t holds the cells whose latent
uniform U lies in [2^(t-33), 2^(t-32)) (tier 0: [0, 2^-32)), each tier drawn from its own
stream conditional on the cell not being in a lower tier, with U itself drawn uniformly
inside the tier. A cell fails at threshold r iff U < r, so the set is exact, nested in r,
and independent of the order in which thresholds are asked for; generating it costs
O(cells with U < 2 r).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

BLOCK_SHIFT = 20
BLOCK = 1 << BLOCK_SHIFT  # cells per keyed block
N_TIERS = 33  # tier t upper edge 2^(t-32); tier 32 ends at 1

# stream purposes (first element of every spawn_key)
PERSISTENT = {"p01": 1, "p10": 2, "sa0": 3, "sa1": 4}
TRANSIENT = {"p01": 11, "p10": 12, "sa0": 13, "sa1": 14}
WEAK_COLUMNS = 21
WEAK_ROWS = 22
LINE_CHUNK = 1 << 16  # weak-line flags are drawn in chunks of 2^16 lines
COUNT_CHUNK = 1024  # per-block fault counts are drawn in chunks of 1024 blocks
COUNT_OFFSET = 100  # purpose of the count streams = purpose + COUNT_OFFSET


def stream(entropy: int, *key: int) -> np.random.Generator:
    """The generator of one keyed stream."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=key)))


def draw_base(rng: np.random.Generator) -> int:
    """One 63-bit entropy value from a caller's generator (keys the transient streams)."""
    return int(rng.integers(0, 2**63, dtype=np.int64))


def tier_edges(t: int) -> tuple[float, float]:
    """[lo, hi) of the latent uniform U held by tier t."""
    hi = 2.0 ** (t - 32)
    lo = 0.0 if t == 0 else 2.0 ** (t - 33)
    return lo, hi


def tier_of(rate: float) -> int:
    """Smallest tier whose upper edge is >= rate (rate in (0, 1])."""
    if rate <= 2.0**-32:
        return 0
    return min(N_TIERS - 1, int(math.ceil(math.log2(rate))) + 32)


@dataclass(frozen=True)
class Ranges:
    """Sorted, disjoint half-open cell ranges [lo, hi)."""

    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def of(cls, pairs: Sequence[tuple[int, int]]) -> Ranges:
        pairs = sorted((int(a), int(b)) for a, b in pairs if b > a)
        merged: list[list[int]] = []
        for a, b in pairs:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        arr = np.array(merged, dtype=np.int64).reshape(-1, 2)
        return cls(arr[:, 0].copy(), arr[:, 1].copy())

    def blocks(self) -> np.ndarray:
        """Indices of the blocks that overlap any range."""
        out = [np.arange(a >> BLOCK_SHIFT, ((b - 1) >> BLOCK_SHIFT) + 1)
               for a, b in zip(self.lo, self.hi)]
        return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)

    def contains(self, pos: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.lo, pos, side="right") - 1
        ok = i >= 0
        return ok & (pos < self.hi[np.maximum(i, 0)])


WeightFn = Callable[[np.ndarray], np.ndarray]


def block_counts(entropy: int, purpose: int, blocks: np.ndarray, rate: float,
                 *extra: int) -> np.ndarray:
    """Binomial(2^20, rate) fault counts of the given blocks.

    Counts come from one stream per chunk of `COUNT_CHUNK` blocks, keyed
    (purpose + COUNT_OFFSET, *extra, chunk), so a block's count does not depend on which
    other blocks are asked for, and blocks without faults cost no stream of their own.
    """
    out = np.zeros(blocks.size, np.int64)
    if blocks.size == 0:
        return out
    chunks = blocks // COUNT_CHUNK
    for c in np.unique(chunks):
        counts = stream(entropy, purpose + COUNT_OFFSET, *extra, int(c)).binomial(
            BLOCK, rate, size=COUNT_CHUNK)
        sel = chunks == c
        out[sel] = counts[blocks[sel] % COUNT_CHUNK]
    return out


def entropy64(seed: int) -> int:
    """Any non-negative integer seed -> 64 bits of entropy (via SeedSequence's hash)."""
    return int(np.random.SeedSequence(int(seed)).generate_state(1, np.uint64)[0])


def block_cells(entropy: int, purpose: int, tier: int, blocks: np.ndarray, counts: np.ndarray,
                want_u: bool) -> tuple[np.ndarray, np.ndarray]:
    """counts[i] distinct uniform cells of block blocks[i] (global positions, sorted inside
    a block, blocks in the given order) and, with want_u, an i.i.d. uniform [0, 1) per cell.

    Keyed counter-based draws (`_kernels._block_positions`): O(cells), no per-block stream.
    """
    from memory_models._kernels import _block_positions

    sel = counts > 0
    blocks = np.ascontiguousarray(blocks[sel], dtype=np.int64)
    counts = np.ascontiguousarray(counts[sel], dtype=np.int64)
    total = int(counts.sum())
    pos = np.empty(total, np.int64)
    u = np.empty(total if want_u else 0, np.float64)
    if total:
        n = _block_positions(np.uint64(entropy64(entropy)), np.uint64(purpose), np.uint64(tier),
                             blocks, counts, BLOCK_SHIFT, want_u, pos, u)
        assert n == total
    return pos, u


def iid_cells(entropy: int, purpose: int, rate: float, ranges: Ranges,
              weight: WeightFn | None = None,
              rate_fn: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Sorted global positions inside `ranges` of cells failing independently.

    Without `weight`, every cell fails with `rate`. With it, candidates are drawn at `rate`
    (which must bound every cell's rate) and a candidate at cell i is kept with probability
    rate_fn(weight(i)) / rate (exact thinning).
    """
    if rate <= 0.0:
        return np.zeros(0, np.int64)
    rate = min(rate, 1.0)
    blocks = ranges.blocks()
    counts = block_counts(entropy, purpose, blocks, rate)
    pos, u = block_cells(entropy, purpose, 0, blocks, counts, weight is not None)
    keep = ranges.contains(pos)
    if weight is not None:
        keep &= u * rate < rate_fn(weight(pos))
    return pos[keep]  # block_cells returns sorted cells; the filter keeps the order


class NestedCells:
    """The cells of one chip whose latent U_i < thr * w(i), for any threshold thr, nested.

    `weight(pos)` gives each cell's rate multiplier (spatial clustering, polarity; 0 = this
    fault kind cannot occur there) and `wmax` bounds it. Tiers are generated on demand and
    cached; `cells(thr)` returns sorted global positions in [0, n_bits).
    """

    def __init__(self, entropy: int, purpose: int, n_bits: int,
                 weight: WeightFn | None = None, wmax: float = 1.0) -> None:
        self.entropy, self.purpose, self.n_bits = int(entropy), int(purpose), int(n_bits)
        self.weight, self.wmax = weight, float(wmax)
        self.n_blocks = (self.n_bits + BLOCK - 1) >> BLOCK_SHIFT
        self.done = -1  # highest tier generated
        self._below = np.zeros(0, np.int64)  # sorted cells of all generated tiers
        self._tiers: list[tuple[np.ndarray, np.ndarray]] = []  # per tier: (global pos, e)

    def _generate(self, t: int) -> None:
        lo, hi = tier_edges(t)
        c = (hi - lo) / (1.0 - lo)  # P(U < hi | U >= lo)
        blocks = np.arange(self.n_blocks, dtype=np.int64)
        counts = block_counts(self.entropy, self.purpose, blocks, c, t)
        g, u = block_cells(self.entropy, self.purpose, t, blocks, counts, True)
        u = lo + (hi - lo) * u  # U of a tier-t cell is uniform on [lo, hi)
        order = np.argsort(g, kind="stable")  # sorted needles: searchsorted stays cache-local
        g, u = g[order], u[order]
        below = self._below
        if below.size and g.size:
            j = np.minimum(np.searchsorted(below, g), below.size - 1)
            fresh = below[j] != g  # drop cells already in a lower tier
            g, u = g[fresh], u[fresh]
        inside = g < self.n_bits
        g, u = g[inside], u[inside]
        # merge two sorted, disjoint runs (timsort: linear)
        self._below = np.sort(np.concatenate([below, g]), kind="stable") if g.size else below
        self.done = t
        if self.weight is not None and g.size:
            w = self.weight(g)
            with np.errstate(divide="ignore"):
                e = np.where(w > 0, u / np.where(w > 0, w, 1.0), np.inf)
        else:
            e = u
        self._tiers.append((g, e))

    def cells(self, thr: float) -> np.ndarray:
        """Sorted global positions of the cells failing at threshold `thr` (a rate)."""
        if thr <= 0.0 or self.n_bits == 0:
            return np.zeros(0, np.int64)
        need = tier_of(min(1.0, thr * self.wmax))
        while self.done < need:
            self._generate(self.done + 1)
        parts = []
        for g, e in self._tiers[: need + 1]:
            parts.append(g if (e.size and e.max() < thr) else g[e < thr])
        out = np.concatenate(parts)
        out.sort(kind="stable")
        return out

    @property
    def cached_cells(self) -> int:
        return int(sum(g.size for g, _ in self._tiers))


@dataclass(frozen=True)
class FaultSet:
    """Faulty cells of one read, as sorted global positions.

    f01: cells that read 1 if they hold 0; f10: read 0 if they hold 1; s0 / s1: stuck at
    0 / 1 (disjoint; a stuck cell ignores f01 / f10).
    """

    f01: np.ndarray
    f10: np.ndarray
    s0: np.ndarray
    s1: np.ndarray

    @classmethod
    def empty(cls) -> FaultSet:
        z = np.zeros(0, np.int64)
        return cls(z, z, z, z)

    def restrict(self, ranges: Ranges) -> FaultSet:
        return FaultSet(*(a[ranges.contains(a)] for a in (self.f01, self.f10, self.s0, self.s1)))


def union_sorted(*arrays: np.ndarray) -> np.ndarray:
    """Sorted union of sorted unique int64 arrays (np.union1d without its hash pass)."""
    parts = [a for a in arrays if a.size]
    if not parts:
        return np.zeros(0, np.int64)
    if len(parts) == 1:
        return parts[0]
    out = np.sort(np.concatenate(parts), kind="stable")  # timsort merges the sorted runs
    keep = np.ones(out.size, bool)
    keep[1:] = out[1:] != out[:-1]
    return out[keep]


def setdiff_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elements of sorted a not in sorted b (both unique)."""
    if a.size == 0 or b.size == 0:
        return a
    j = np.minimum(np.searchsorted(b, a), b.size - 1)
    return a[b[j] != a]
