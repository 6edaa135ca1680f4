"""Naive, obviously-correct references for memory_models (slow: Python loops per bit)."""

from __future__ import annotations

import numpy as np


def encode(value: int, bits: int, encoding: str) -> int:
    """One value -> its code, from the textbook definitions."""
    if encoding == "binary":
        assert value in (-1, 1)
        return 1 if value == 1 else 0
    if encoding == "twos-complement":
        return value + (1 << bits) if value < 0 else value
    if encoding == "offset-binary":
        return value + (1 << (bits - 1))
    if encoding == "sign-magnitude":
        sign = 1 if value < 0 else 0
        return (sign << (bits - 1)) + abs(value)
    raise ValueError(encoding)


def decode(code: int, bits: int, encoding: str) -> int:
    """One code -> its value."""
    if encoding == "binary":
        return 1 if code & 1 else -1
    if encoding == "twos-complement":
        return code - (1 << bits) if code >= (1 << (bits - 1)) else code
    if encoding == "offset-binary":
        return code - (1 << (bits - 1))
    if encoding == "sign-magnitude":
        mag = code % (1 << (bits - 1))
        return -mag if code >= (1 << (bits - 1)) else mag
    raise ValueError(encoding)


def cell_of(layout: str, k: int, j: int, bits: int, word_bits: int | None, n: int,
            row: int) -> int:
    """Offset of bit j of weight k inside its region, by counting."""
    if layout == "word":
        if word_bits is None or bits > word_bits:
            return k * bits + j
        per_word = word_bits // bits
        return (k // per_word) * word_bits + (k % per_word) * bits + j
    plane = n
    while plane % row:
        plane += 1
    return j * plane + k


def read_codes(codes: np.ndarray, bits: int, start: int, cell, f01, f10, s0, s1) -> np.ndarray:
    """Apply faults bit by bit: stuck cells read their stuck value; otherwise a cell holding
    0 in f01 reads 1 and a cell holding 1 in f10 reads 0. `cell(k, j)` gives the offset."""
    f01, f10, s0, s1 = (set(int(x) for x in a) for a in (f01, f10, s0, s1))
    out = codes.copy()
    for k in range(codes.size):
        code = int(codes[k])
        new = 0
        for j in range(bits):
            c = start + cell(k, j)
            bit = (code >> j) & 1
            if c in s0:
                bit = 0
            elif c in s1:
                bit = 1
            elif bit == 0 and c in f01:
                bit = 1
            elif bit == 1 and c in f10:
                bit = 0
            new |= bit << j
        out[k] = new
    return out


def cell_geometry(pos: int, rows: int, columns: int) -> tuple[int, int, int]:
    """(array, row within array, column) of a cell address."""
    array = pos // (rows * columns)
    rest = pos - array * rows * columns
    return array, rest // columns, rest % columns


_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def splitmix(z: int) -> int:
    """SplitMix64 finalizer on Python ints (mod 2^64)."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def block_cells(entropy: int, purpose: int, tier: int, block: int, k: int,
                block_shift: int = 20) -> tuple[list[int], list[float]]:
    """k distinct cells of one block and their uniforms, one draw at a time."""
    key = splitmix(entropy + _GOLDEN)
    for x in (purpose, block, tier):
        key = splitmix(key + (x + 1) * _GOLDEN)
    ctr, taken, cells = 0, set(), []
    while len(cells) < k:
        ctr += 1
        off = splitmix(key + ctr * _GOLDEN) >> (64 - block_shift)
        if off not in taken:
            taken.add(off)
            cells.append((block << block_shift) + off)
    us = []
    for _ in range(k):
        ctr += 1
        us.append((splitmix(key + ctr * _GOLDEN) >> 11) * 2.0**-53)
    return cells, us
