"""numba kernels of the integer engine (private; `simulator.network` validates and calls them).

Conventions shared by every kernel:

* Activations are signed integer codes (int8, int16 or int32), NCHW or [N, features].
  Weights are int8 (<= 8 bits) or int16 codes, [O, C/groups, kh, kw] or [O, F].
* Accumulation: the sum of products runs in scalar int64 and is stored in an accumulator
  buffer whose dtype (`acc_proto.dtype`, int32 or int64) the importer chose from the worst
  case |w|max * |x|max * fan_in (`ops.acc_dtype_for`). Since that bound is checked, the
  stored int32 never wraps and the result equals exact integer arithmetic; int32 buffers
  let LLVM use 8-lane integer SIMD.
* Requantization (gemmlowp/TFLite style), per output channel c, all in int64:
      v = (acc + bias[c]) * mult[c] + add[c]
      code = clamp(v >> shift[c], lo[c], hi[c])        (arithmetic shift = floor division)
  `add` already holds the rounding half 2^(shift-1), so the shift rounds half up (toward
  +inf). Sign mode (1-bit activations): code = +1 if v >= 0 else -1.
  The importer bounds |acc + bias| * |mult| and |add| so that v never overflows int64.
* Max pooling on codes: `pdir[c]` = +1 takes the max, -1 the min (a channel whose
  requantization decreases: f(max a) = min f(a)). Padding is ignored (never wins).
* `prange` runs over `n_chunks` chunks of images (a few per thread, from the caller);
  each chunk writes only its own images' output.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from simulator._jit import NJIT, PARALLEL

__all__: list[str] = []  # private module: simulator.network is the public face

_CHANNEL_BLOCK = 4  # output channels computed together (one im2col row feeds 4 rows)


@numba.njit(**NJIT)
def _requant_value(a, bias, mult, add, shift, lo, hi, sign):
    """One requantized code from accumulator `a` (int64 arithmetic)."""
    v = (np.int64(a) + np.int64(bias)) * np.int64(mult) + np.int64(add)
    if sign:
        return np.int64(1) if v >= 0 else np.int64(-1)
    v = v >> shift  # arithmetic shift: floor(v / 2^shift); `add` holds the rounding half
    if v < lo:
        v = np.int64(lo)
    elif v > hi:
        v = np.int64(hi)
    return v


@numba.njit(**NJIT)
def _im2col(x, n, c0, cg, kh, kw, sh, sw, ph, pw, ho, wo, col):
    """col[(ci*kh + i)*kw + j, p] = x[n, c0 + ci, y*sh - ph + i, x*sw - pw + j] (0 outside)."""
    h = x.shape[2]
    w = x.shape[3]
    for ci in range(cg):
        for i in range(kh):
            for j in range(kw):
                k = (ci * kh + i) * kw + j
                for oy in range(ho):
                    iy = oy * sh - ph + i
                    base = oy * wo
                    if iy < 0 or iy >= h:
                        for ox in range(wo):
                            col[k, base + ox] = 0
                        continue
                    for ox in range(wo):
                        ix = ox * sw - pw + j
                        if ix < 0 or ix >= w:
                            col[k, base + ox] = 0
                        else:
                            col[k, base + ox] = x[n, c0 + ci, iy, ix]


@numba.njit(**NJIT)
def _pool_row(row, ho, wo, pkh, pkw, psh, psw, pph, ppw, d, out, n, o):
    """Max (d > 0) or min (d < 0) pooling of one requantized channel `row` [ho*wo]."""
    po_h = out.shape[2]
    po_w = out.shape[3]
    for py in range(po_h):
        for px in range(po_w):
            best = np.int64(0)
            first = True
            for i in range(pkh):
                y = py * psh - pph + i
                if y < 0 or y >= ho:
                    continue
                for j in range(pkw):
                    xx = px * psw - ppw + j
                    if xx < 0 or xx >= wo:
                        continue
                    v = row[y * wo + xx]
                    if first or (d > 0 and v > best) or (d < 0 and v < best):
                        best = v
                        first = False
            out[n, o, py, px] = best


@numba.njit(**PARALLEL)
def _conv2d(
    x, w, bias, mult, add, shift, lo, hi, sign,
    sh, sw, ph, pw, groups,
    pkh, pkw, psh, psw, pph, ppw, pdir,
    chan_ptr, chans, acc_proto, out, n_chunks,
):  # fmt: skip
    """Conv2d + requantization (+ optional fused max pooling) for the channels `chans`.

    x [N, C, H, W] codes; w [O, C/groups, kh, kw]; chans: output channels to compute,
    sorted, group g's channels in chans[chan_ptr[g]:chan_ptr[g+1]]. out [N, O, Ho', Wo']
    (Ho', Wo' after pooling when pkh > 0); other channels of `out` are left untouched.
    Accumulator: acc_proto.dtype (int32 or int64), see the module docstring.
    """
    n_img = x.shape[0]
    h = x.shape[2]
    wd = x.shape[3]
    o_per_g = w.shape[0] // groups
    cg = w.shape[1]
    kh = w.shape[2]
    kw = w.shape[3]
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (wd + 2 * pw - kw) // sw + 1
    p_n = ho * wo
    k_n = cg * kh * kw
    n_chunks = max(1, min(n_img, n_chunks))
    for t in prange(n_chunks):
        start = t * n_img // n_chunks
        stop = (t + 1) * n_img // n_chunks
        col = np.empty((k_n, p_n), x.dtype)
        acc = np.empty((_CHANNEL_BLOCK, p_n), acc_proto.dtype)
        row = np.empty(p_n, np.int64)
        for n in range(start, stop):
            for g in range(groups):
                a = chan_ptr[g]
                b = chan_ptr[g + 1]
                if a == b:
                    continue
                _im2col(x, n, g * cg, cg, kh, kw, sh, sw, ph, pw, ho, wo, col)
                for blk in range(a, b, _CHANNEL_BLOCK):
                    nb = min(_CHANNEL_BLOCK, b - blk)
                    acc[:, :] = 0
                    for r in range(nb):
                        o = chans[blk + r]
                        for ci in range(cg):
                            for i in range(kh):
                                for j in range(kw):
                                    wv = np.int64(w[o, ci, i, j])
                                    if wv == 0:
                                        continue
                                    k = (ci * kh + i) * kw + j
                                    for p in range(p_n):
                                        acc[r, p] += wv * col[k, p]
                    for r in range(nb):
                        o = chans[blk + r]
                        for p in range(p_n):
                            row[p] = _requant_value(
                                acc[r, p], bias[o], mult[o], add[o], shift[o], lo[o], hi[o], sign
                            )
                        if pkh > 0:
                            _pool_row(row, ho, wo, pkh, pkw, psh, psw, pph, ppw, pdir[o], out, n, o)
                        else:
                            for p in range(p_n):
                                out[n, o, p // wo, p % wo] = row[p]
        _ = o_per_g


@numba.njit(**PARALLEL)
def _linear(x, w, bias, mult, add, shift, lo, hi, sign, chans, acc_proto, out, n_chunks):
    """y[n, o] = requant(sum_k x[n, k] * w[o, k]) for o in `chans`; x [N, F], w [O, F].

    Images are processed in blocks of 8 so each weight row is read once per block.
    Accumulator: acc_proto.dtype (int32 or int64), see the module docstring.
    """
    n_img = x.shape[0]
    f_n = x.shape[1]
    n_chunks = max(1, min(n_img, n_chunks))
    for t in prange(n_chunks):
        start = t * n_img // n_chunks
        stop = (t + 1) * n_img // n_chunks
        acc = np.empty(1, acc_proto.dtype)
        for b0 in range(start, stop, 8):
            b1 = min(stop, b0 + 8)
            for oi in range(chans.shape[0]):
                o = chans[oi]
                for n in range(b0, b1):
                    acc[0] = 0
                    s = acc[0]
                    for k in range(f_n):
                        s += x[n, k] * w[o, k]
                    out[n, o] = _requant_value(
                        s, bias[o], mult[o], add[o], shift[o], lo[o], hi[o], sign
                    )


@numba.njit(**PARALLEL)
def _requant(x, bias, mult, add, shift, lo, hi, sign, out):
    """out[n, c, s] = requant_c(x[n, c, s]); x, out [N, C, S] (any integer dtypes)."""
    n_img = x.shape[0]
    for n in prange(n_img):
        for c in range(x.shape[1]):
            for s in range(x.shape[2]):
                out[n, c, s] = _requant_value(
                    x[n, c, s], bias[c], mult[c], add[c], shift[c], lo[c], hi[c], sign
                )


@numba.njit(**PARALLEL)
def _maxpool(x, kh, kw, sh, sw, ph, pw, pdir, out):
    """Max (pdir[c] = +1) or min (-1) pooling of codes; x [N, C, H, W]; padding ignored."""
    n_img = x.shape[0]
    h = x.shape[2]
    wd = x.shape[3]
    for n in prange(n_img):
        for c in range(x.shape[1]):
            d = pdir[c]
            for py in range(out.shape[2]):
                for px in range(out.shape[3]):
                    best = np.int64(0)
                    first = True
                    for i in range(kh):
                        y = py * sh - ph + i
                        if y < 0 or y >= h:
                            continue
                        for j in range(kw):
                            xx = px * sw - pw + j
                            if xx < 0 or xx >= wd:
                                continue
                            v = np.int64(x[n, c, y, xx])
                            if first or (d > 0 and v > best) or (d < 0 and v < best):
                                best = v
                                first = False
                    out[n, c, py, px] = best


@numba.njit(**PARALLEL)
def _sumpool(x, kh, kw, sh, sw, ph, pw, out):
    """Window sums of codes (average pooling before its division); zero padding adds 0."""
    n_img = x.shape[0]
    h = x.shape[2]
    wd = x.shape[3]
    for n in prange(n_img):
        for c in range(x.shape[1]):
            for py in range(out.shape[2]):
                for px in range(out.shape[3]):
                    s = np.int64(0)
                    for i in range(kh):
                        y = py * sh - ph + i
                        if y < 0 or y >= h:
                            continue
                        for j in range(kw):
                            xx = px * sw - pw + j
                            if 0 <= xx < wd:
                                s += x[n, c, y, xx]
                    out[n, c, py, px] = s


@numba.njit(**PARALLEL)
def _add(a, b, out):
    """out = a + b elementwise; a, b, out [N, M] (out wide enough: checked at import)."""
    for n in prange(a.shape[0]):
        for i in range(a.shape[1]):
            out[n, i] = np.int64(a[n, i]) + np.int64(b[n, i])


@numba.njit(**PARALLEL)
def _xnor_linear(xbits, wbits, f_n, bias, mult, add, shift, lo, hi, sign, chans, out, n_chunks):
    """Binarized linear layer by XNOR-popcount: x and w in {-1, +1}, packed 64 per word.

    Bit 1 means +1. sum_k x_k w_k = F - 2 * popcount(x XOR w) (padding bits are 0 in both,
    so they never count). Accumulator: int64 scalar (|acc| <= F).
    """
    n_img = xbits.shape[0]
    n_words = xbits.shape[1]
    n_chunks = max(1, min(n_img, n_chunks))
    for t in prange(n_chunks):
        start = t * n_img // n_chunks
        stop = (t + 1) * n_img // n_chunks
        for oi in range(chans.shape[0]):
            o = chans[oi]
            for n in range(start, stop):
                diff = np.int64(0)
                for k in range(n_words):
                    diff += _popcount64(xbits[n, k] ^ wbits[o, k])
                acc = np.int64(f_n) - 2 * diff
                out[n, o] = _requant_value(
                    acc, bias[o], mult[o], add[o], shift[o], lo[o], hi[o], sign
                )


@numba.njit(**NJIT)
def _popcount64(v):
    """Number of set bits of a uint64 (SWAR; LLVM turns it into popcnt)."""
    v = v - ((v >> np.uint64(1)) & np.uint64(0x5555555555555555))
    v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
    v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((v * np.uint64(0x0101010101010101)) >> np.uint64(56))


@numba.njit(**PARALLEL)
def _pack_signs(x, out):
    """Pack rows of {-1, +1} codes into uint64 words, bit k%64 of word k//64 = (x_k > 0)."""
    for n in prange(x.shape[0]):
        for wi in range(out.shape[1]):
            word = np.uint64(0)
            for b in range(64):
                k = wi * 64 + b
                if k < x.shape[1] and x[n, k] > 0:
                    word |= np.uint64(1) << np.uint64(b)
            out[n, wi] = word


@numba.njit(**NJIT)
def dot_peak(a, b, reps):
    """int8 dot products widened to int32 (for measuring the machine's MAC peak)."""
    total = np.int64(0)
    for _ in range(reps):
        s = np.int32(0)
        for k in range(a.shape[0]):
            s += np.int32(a[k]) * np.int32(b[k])
        total += s
    return total


@numba.njit(**PARALLEL)
def dot_peak_parallel(a, b, reps, out):
    """dot_peak on every thread at once (out[t] per thread)."""
    for t in prange(out.shape[0]):
        total = np.int64(0)
        for r in range(reps):
            s = np.int32(r)
            for k in range(a.shape[1]):
                s += np.int32(a[t, k]) * np.int32(b[t, k])
            total += s
        out[t] = total
