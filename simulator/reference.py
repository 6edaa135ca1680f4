"""Plain-numpy reference of every op (int64 throughout): the engine is tested against it.

Same integers as the numba kernels, computed the obvious vectorized way: conv as im2col
+ int64 matmul, pooling with sliding windows. Used by `IntegerNetwork.reference_forward`.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from simulator.ops import Pool, Requant


def requant(acc: np.ndarray, bias: np.ndarray | None, rq: Requant) -> np.ndarray:
    """Requantize acc [N, C, ...] per channel (axis 1); int64 result."""
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    v = acc.astype(np.int64)
    if bias is not None:
        v = v + bias.astype(np.int64).reshape(shape)
    v = v * rq.mult.reshape(shape) + rq.add.reshape(shape)
    if rq.sign:
        return np.where(v >= 0, 1, -1).astype(np.int64)
    shift = rq.shift.reshape(shape)
    q = v >> shift
    if rq.half_even:  # an exact tie (v's low `shift` bits all zero after adding the half)
        tie = ((v & ((np.int64(1) << shift) - 1)) == 0) & (shift > 0)
        q = q - (q & 1) * tie
    return np.clip(q, rq.lo.reshape(shape), rq.hi.reshape(shape))


def _windows(x: np.ndarray, pool: Pool, fill: int) -> np.ndarray:
    """[N, C, Ho, Wo, kh, kw] windows of x padded with `fill`."""
    (ph, pw), (kh, kw), (sh, sw) = pool.padding, pool.kernel, pool.stride
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))
    return win[:, :, ::sh, ::sw]


def conv_acc(x: np.ndarray, w: np.ndarray, stride, padding, groups: int) -> np.ndarray:
    """Exact int64 conv2d accumulators [N, O, Ho, Wo] (zero padding)."""
    x = x.astype(np.int64)
    o_n, cg, kh, kw = w.shape
    win = _windows(x, Pool((kh, kw), tuple(stride), tuple(padding)), 0)  # N,C,Ho,Wo,kh,kw
    n, _, ho, wo = win.shape[:4]
    og = o_n // groups
    out = np.empty((n, o_n, ho, wo), np.int64)
    for g in range(groups):
        cols = win[:, g * cg : (g + 1) * cg]  # N, cg, Ho, Wo, kh, kw
        cols = cols.transpose(0, 2, 3, 1, 4, 5).reshape(n, ho * wo, cg * kh * kw)
        wg = w[g * og : (g + 1) * og].reshape(og, -1).astype(np.int64)
        out[:, g * og : (g + 1) * og] = (cols @ wg.T).transpose(0, 2, 1).reshape(n, og, ho, wo)
    return out


def pool_codes(x: np.ndarray, pool: Pool, direction: np.ndarray) -> np.ndarray:
    """Max pooling where direction[c] = +1, min pooling where -1 (padding never wins)."""
    x = x.astype(np.int64)
    big = np.iinfo(np.int64)
    mx = _windows(x, pool, big.min).max(axis=(4, 5))
    mn = _windows(x, pool, big.max).min(axis=(4, 5))
    return np.where(direction.reshape(1, -1, 1, 1) > 0, mx, mn)


def sum_pool(x: np.ndarray, pool: Pool) -> np.ndarray:
    """Window sums (zero padding contributes 0)."""
    return _windows(x.astype(np.int64), pool, 0).sum(axis=(4, 5))


def conv2d(x, w, bias, rq: Requant, stride, padding, groups, pool=None, pool_dir=None):
    """Conv2d + requantization (+ max/min pooling of the codes), int64 result."""
    codes = requant(conv_acc(x, w, stride, padding, groups), bias, rq)
    if pool is not None:
        codes = pool_codes(codes, pool, pool_dir)
    return codes


def linear(x: np.ndarray, w: np.ndarray, bias, rq: Requant) -> np.ndarray:
    """y = requant(x @ w.T) with exact int64 accumulators; x [N, F], w [O, F]."""
    return requant(x.astype(np.int64) @ w.astype(np.int64).T, bias, rq)
