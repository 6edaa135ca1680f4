"""numba kernels of memory_models (private; `memory_models.sampling` validates and calls them).

Random numbers here come from a counter-based generator: draw i of stream `key` is
SplitMix64(key + i * GOLDEN) (the SplitMix64 sequence started at `key`), and the key of a
(entropy, purpose, block, tier) stream is built by chaining the same mix. No state is
shared between streams, so any block can be drawn alone, in any order, on any thread.
All arithmetic is uint64 and wraps modulo 2^64 by design.
"""

from __future__ import annotations

import numba
import numpy as np

# numba flags of this package, in one place (never fastmath: results must be bit-exact)
NJIT = {"cache": True, "nogil": True}

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64 increment
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_ONE = np.uint64(1)
_INV53 = 1.0 / 9007199254740992.0  # 2^-53


@numba.njit(**NJIT)
def _mix(z):
    """SplitMix64 finalizer of a uint64 (a bijection with full avalanche)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@numba.njit(**NJIT)
def _stream_key(entropy, purpose, block, tier):
    """Key of stream (entropy, purpose, block, tier); all arguments uint64."""
    k = _mix(entropy + GOLDEN)
    k = _mix(k + (purpose + _ONE) * GOLDEN)
    k = _mix(k + (block + _ONE) * GOLDEN)
    return _mix(k + (tier + _ONE) * GOLDEN)


@numba.njit(**NJIT)
def _block_positions(entropy, purpose, tier, blocks, counts, block_shift, want_u,
                     out_pos, out_u):
    """Distinct random cells of each block: block blocks[i] gets counts[i] cells.

    Offsets are the top `block_shift` bits of successive draws, a repeat within the block
    being redrawn (the first k distinct values of an i.i.d. uniform sequence form a uniform
    k-subset). With want_u, each cell then gets a uniform in [0, 1) from the next draws
    (53-bit). Writes global positions (block << block_shift | offset) to out_pos (int64),
    sorted (blocks in the given order, cells ascending inside a block), and each cell's
    uniform to out_u; returns the number written. Without uniforms the sorted cells are
    read off the block's bitmap of taken offsets (O(block / 64 + cells), no sort).
    """
    size = np.int64(1) << block_shift
    seen = np.zeros(size >> 6, np.uint64)  # bitmap of offsets taken in this block
    top = np.uint64(64 - block_shift)
    o = 0
    for i in range(blocks.size):
        key = _stream_key(entropy, purpose, np.uint64(blocks[i]), tier)
        base = np.int64(blocks[i]) << block_shift
        ctr = np.uint64(0)
        start = o
        for _ in range(counts[i]):
            while True:
                ctr += _ONE
                off = _mix(key + ctr * GOLDEN) >> top  # top bits: exactly uniform
                w = np.int64(off >> np.uint64(6))
                bit = _ONE << (off & np.uint64(63))
                if (seen[w] & bit) == np.uint64(0):
                    seen[w] |= bit
                    break
            out_pos[o] = base + np.int64(off)
            o += 1
        if not want_u:
            o = _bitmap_cells(seen, base, out_pos, start)  # sorted; clears the bitmap
            continue
        for j in range(start, o):
            ctr += _ONE
            out_u[j] = np.float64(_mix(key + ctr * GOLDEN) >> np.uint64(11)) * _INV53
        for j in range(start, o):  # clear the bitmap for the next block
            seen[(out_pos[j] - base) >> 6] = np.uint64(0)
        order = np.argsort(out_pos[start:o])  # a cell keeps its uniform
        out_pos[start:o] = out_pos[start:o][order]
        out_u[start:o] = out_u[start:o][order]
    return o


@numba.njit(**NJIT)
def _popcount64(v):
    """Number of set bits of a uint64 (SWAR)."""
    v = v - ((v >> _ONE) & np.uint64(0x5555555555555555))
    v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
    v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (v * np.uint64(0x0101010101010101)) >> np.uint64(56)


@numba.njit(**NJIT)
def _bitmap_cells(seen, base, out_pos, o):
    """Write base + offset for every set bit of `seen`, ascending, from out_pos[o]; clear
    `seen`; return the new end. (Left for reference: np.sort of the drawn offsets.)"""
    for w in range(seen.size):
        word = seen[w]
        if word == np.uint64(0):
            continue
        seen[w] = np.uint64(0)
        while word != np.uint64(0):
            low = word & (~word + _ONE)  # lowest set bit
            out_pos[o] = base + (np.int64(w) << 6) + np.int64(_popcount64(low - _ONE))
            o += 1
            word ^= low
    return o


@numba.njit(**NJIT)
def _region_events(codes, f01, f10, s0, s1, start, word_layout, bits, stride, per_word, plane,
                   n, ev_k, ev_bit, counts):
    """Merge the sorted fault lists of one region and list the bits that read differently.

    f01 / f10 / s0 / s1: sorted global cells inside the region. A stuck cell reads its stuck
    value (s0 wins over s1; they are disjoint anyway); otherwise a cell holding 0 in f01
    reads 1 and a cell holding 1 in f10 reads 0. For every bit that changes, writes the
    weight index to ev_k and 1 << j to ev_bit (int64), in cell order. counts (int64[6]):
    faulty cells, flip01, flip10, sa0, sa1, changed bits. Returns the number of events.
    Cells are mapped as in `image.Region.weight_bit`; padding cells are skipped.
    """
    i0 = 0
    i1 = 0
    i2 = 0
    i3 = 0
    big = np.int64(1) << 62
    e = 0
    while True:
        c0 = f01[i0] if i0 < f01.size else big
        c1 = f10[i1] if i1 < f10.size else big
        c2 = s0[i2] if i2 < s0.size else big
        c3 = s1[i3] if i3 < s1.size else big
        c = min(min(c0, c1), min(c2, c3))  # next faulty cell
        if c == big:
            break
        in01 = c0 == c
        in10 = c1 == c
        ins0 = c2 == c
        ins1 = c3 == c
        i0 += in01
        i1 += in10
        i2 += ins0
        i3 += ins1
        off = c - start
        if word_layout:
            word = off // stride
            within = off - word * stride
            slot = within // bits
            j = within - slot * bits
            k = word * per_word + slot
            if slot >= per_word or k >= n:
                continue  # padding cell of a word
        else:
            j = off // plane
            k = off - j * plane
            if k >= n or j >= bits:
                continue  # padding cell of a plane
        counts[0] += 1
        stored = (np.int64(codes[k]) >> j) & 1  # the bit this cell holds
        kind = -1
        if ins0:
            if stored == 1:
                kind = 3
        elif ins1:
            if stored == 0:
                kind = 4
        elif in01 and stored == 0:
            kind = 1
        elif in10 and stored == 1:
            kind = 2
        if kind > 0:
            counts[kind] += 1
            counts[5] += 1
            ev_k[e] = k
            ev_bit[e] = np.int64(1) << j
            e += 1
    return e
