"""Naive loop references for the integer engine's kernels (Python ints, no numpy maths).

Slow and obvious: every accumulator is an unbounded Python int, so these also show that
the fast kernels never overflow.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np


def requant_value(acc: int, bias: int, mult: int, add: int, shift: int, lo: int, hi: int,
                  sign: bool, half_even: bool = False) -> int:  # fmt: skip
    """((acc + bias) * mult + add) >> shift (floor), clamped; sign mode: ±1.

    half_even: `add` holds the half 2^(shift-1); the exact rational
    ((acc + bias) * mult + add - half) / 2^shift is rounded half to even instead
    (Python's round of a Fraction)."""
    v = (acc + bias) * mult + add
    if sign:
        return 1 if v >= 0 else -1
    if half_even and shift > 0:
        v = round(Fraction(v - 2 ** (shift - 1), 2**shift))
    else:
        v = v // (2**shift)  # floor division == arithmetic right shift
    return min(max(v, lo), hi)


def requant(x: np.ndarray, bias, rq) -> np.ndarray:
    """Per-channel requantization of x [N, C, ...] (channel axis 1)."""
    out = np.empty(x.shape, np.int64)
    for idx in np.ndindex(*x.shape):
        c = idx[1]
        b = 0 if bias is None else int(bias[c])
        m, a, s = int(rq.mult[c]), int(rq.add[c]), int(rq.shift[c])
        out[idx] = requant_value(int(x[idx]), b, m, a, s, int(rq.lo[c]), int(rq.hi[c]), rq.sign,
                                 rq.half_even)  # fmt: skip
    return out


def conv2d_acc(x, w, stride, padding, groups) -> np.ndarray:
    """Exact conv2d accumulators by seven nested loops; zero padding."""
    n_img, c_in, h, wd = x.shape
    o_n, cg, kh, kw = w.shape
    sh, sw = stride
    ph, pw = padding
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (wd + 2 * pw - kw) // sw + 1
    og = o_n // groups
    out = np.zeros((n_img, o_n, ho, wo), np.int64)
    for n in range(n_img):
        for o in range(o_n):
            g = o // og
            for oy in range(ho):
                for ox in range(wo):
                    s = 0
                    for ci in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                y = oy * sh - ph + i
                                xx = ox * sw - pw + j
                                if 0 <= y < h and 0 <= xx < wd:
                                    s += int(x[n, g * cg + ci, y, xx]) * int(w[o, ci, i, j])
                    out[n, o, oy, ox] = s
    return out


def linear_acc(x, w) -> np.ndarray:
    """Exact x @ w.T by loops."""
    out = np.zeros((x.shape[0], w.shape[0]), np.int64)
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            out[n, o] = sum(int(a) * int(b) for a, b in zip(x[n], w[o]))
    return out


def xnor_popcount_acc(x, w) -> np.ndarray:
    """±1 dot products the binarized way: F - 2 * (number of positions where signs differ)."""
    out = np.zeros((x.shape[0], w.shape[0]), np.int64)
    f_n = x.shape[1]
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            differ = sum(1 for a, b in zip(x[n], w[o]) if (a > 0) != (b > 0))
            out[n, o] = f_n - 2 * differ
    return out


def pool(x, kernel, stride, padding, direction=None, how="max") -> np.ndarray:
    """Max (direction +1) / min (-1) pooling ignoring padding, or window sums (how='sum')."""
    n_img, c_n, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((n_img, c_n, ho, wo), np.int64)
    for n in range(n_img):
        for c in range(c_n):
            for oy in range(ho):
                for ox in range(wo):
                    vals = [
                        int(x[n, c, oy * sh - ph + i, ox * sw - pw + j])
                        for i in range(kh)
                        for j in range(kw)
                        if 0 <= oy * sh - ph + i < h and 0 <= ox * sw - pw + j < wd
                    ]
                    if how == "sum":
                        out[n, c, oy, ox] = sum(vals)
                    elif direction[c] > 0:
                        out[n, c, oy, ox] = max(vals)
                    else:
                        out[n, c, oy, ox] = min(vals)
    return out
