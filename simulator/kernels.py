"""numba kernels of the integer engine (private; `simulator.network` validates and calls them).

Conventions shared by every kernel:

* Activations are signed integer codes (int8, int16 or int32), NCHW or [N, features].
  Weights are int8 (<= 8 bits) or int16 codes, [O, C/groups, kh, kw] or [O, F].
* Accumulation: dot products with a pinned accumulator (`_dot32`: int32, `_dot64`:
  int64), inputs widened in the inner loop. The importer picks int64 (`wide`) where the
  worst case |w|max * |x|max * fan_in reaches 2^31 (`ops.acc_dtype_for`), so the int32
  accumulator never wraps; int32 lets LLVM use 8-lane integer SIMD.
* Requantization (gemmlowp/TFLite style), per output channel c, all in int64:
      v = (acc + bias[c]) * mult[c] + add[c]
      code = clamp(v >> shift[c], lo[c], hi[c])        (arithmetic shift = floor division)
  `add` already holds the rounding half 2^(shift-1), so the shift rounds half up (toward
  +inf). Sign mode (1-bit activations): code = +1 if v >= 0 else -1.
  The importer bounds |acc + bias| * |mult| and |add| so that v never overflows int64.
* Max pooling on codes: `pdir[c]` = +1 takes the max, -1 the min (a channel whose
  requantization decreases: f(max a) = min f(a)). Padding is ignored (never wins).
* `prange` runs over `n_chunks` chunks of images (a few per thread, from the caller);
  each chunk writes only its own images' output. The kernels of the int8 GEMM path
  (`_pad_i8`, `_im2col_i8*`, `_shift_i8`, `_conv_requant`, `_linear_requant`) are
  single-threaded: the engine gives each of its threads a contiguous share of the images
  instead (`int8_backend._split_images`), so no parallel region opens per GEMM call.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from simulator._jit import NJIT, PARALLEL

__all__: list[str] = []  # private module: simulator.network is the public face

_LINEAR_BLOCK = 32  # images per block: each weight row is read once per block
_SMALL_FAN_IN = 32  # below this fan-in, conv accumulates vectorized over positions
_INT64_MIN = np.int64(np.iinfo(np.int64).min)
_INT64_MAX = np.int64(np.iinfo(np.int64).max)


@numba.njit(**NJIT)
def _shift_round(t, shift):
    """floor(t / 2^s), s = shift & 63 (`add` already holds the rounding half, so this rounds
    half up); where bit 6 of shift is set (`Requant.kernel_shift`), an exact tie (low s bits
    of t all zero) goes to the even code instead. Branchless, so loops calling it vectorize."""
    s = shift & 63
    q = t >> s
    return q - (q & 1) * ((shift >> 6) & ((t & ((np.int64(1) << s) - 1)) == 0))


@numba.njit(**NJIT)
def _requant_value(a, bias, mult, add, shift, lo, hi, sign):
    """One requantized code from accumulator `a` (int64 arithmetic)."""
    v = (np.int64(a) + np.int64(bias)) * np.int64(mult) + np.int64(add)
    if sign:
        return np.int64(1) if v >= 0 else np.int64(-1)
    v = _shift_round(v, shift)
    if v < lo:
        v = np.int64(lo)
    elif v > hi:
        v = np.int64(hi)
    return v


@numba.njit(**NJIT)
def _im2col(x, n, c0, cg, kh, kw, sh, sw, ph, pw, ho, wo, col):
    """col[p, (ci*kh + i)*kw + j] = x[n, c0+ci, oy*sh - ph + i, ox*sw - pw + j], p = oy*wo + ox.

    Patch-major (each patch contiguous, for dot products); 0 outside the image.
    """
    h = x.shape[2]
    w = x.shape[3]
    for oy in range(ho):
        for ox in range(wo):
            p = oy * wo + ox
            for ci in range(cg):
                for i in range(kh):
                    iy = oy * sh - ph + i
                    for j in range(kw):
                        ix = ox * sw - pw + j
                        k = (ci * kh + i) * kw + j
                        if iy < 0 or iy >= h or ix < 0 or ix >= w:
                            col[p, k] = 0
                        else:
                            col[p, k] = x[n, c0 + ci, iy, ix]


@numba.njit(locals={"s": numba.int32}, **NJIT)
def _dot32(a, b):
    """sum a[k] * b[k] in an int32 accumulator (callers prove it cannot overflow)."""
    s = 0
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@numba.njit(locals={"s": numba.int64}, **NJIT)
def _dot64(a, b):
    """sum a[k] * b[k] in an int64 accumulator."""
    s = 0
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


_I32 = numba.int32


@numba.njit(locals={"s00": _I32, "s01": _I32, "s10": _I32, "s11": _I32}, **NJIT)
def _dot2x2(a0, a1, b0, b1):
    """Four int32 dot products a_i . b_j sharing loads (register blocking).

    Left for reference: s_ij = _dot32(a_i, b_j).
    """
    s00 = 0
    s01 = 0
    s10 = 0
    s11 = 0
    for k in range(a0.shape[0]):
        x0 = a0[k]
        x1 = a1[k]
        y0 = b0[k]
        y1 = b1[k]
        s00 += x0 * y0
        s01 += x0 * y1
        s10 += x1 * y0
        s11 += x1 * y1
    return s00, s01, s10, s11


@numba.njit(**NJIT)
def _dots(w, o0, o1, col, p_n, wide, acc):
    """acc[r, p] = w[o_r] . col[p] for rows o0, o1 (o1 < 0: one row), all positions."""
    if wide:
        for p in range(p_n):
            acc[0, p] = _dot64(w[o0], col[p])
            if o1 >= 0:
                acc[1, p] = _dot64(w[o1], col[p])
        return
    if o1 < 0:
        for p in range(p_n):
            acc[0, p] = _dot32(w[o0], col[p])
        return
    for p in range(0, p_n - 1, 2):
        s00, s01, s10, s11 = _dot2x2(w[o0], w[o1], col[p], col[p + 1])
        acc[0, p] = s00
        acc[0, p + 1] = s01
        acc[1, p] = s10
        acc[1, p + 1] = s11
    if p_n % 2:
        acc[0, p_n - 1] = _dot32(w[o0], col[p_n - 1])
        acc[1, p_n - 1] = _dot32(w[o1], col[p_n - 1])


@numba.njit(**NJIT)
def _im2col_t(x, n, c0, cg, kh, kw, sh, sw, ph, pw, ho, wo, colt):
    """Position-major twin of `_im2col` for small fan-in: colt[k, p] (0 outside)."""
    h = x.shape[2]
    w = x.shape[3]
    for ci in range(cg):
        for i in range(kh):
            for j in range(kw):
                k = (ci * kh + i) * kw + j
                for oy in range(ho):
                    iy = oy * sh - ph + i
                    for ox in range(wo):
                        ix = ox * sw - pw + j
                        if iy < 0 or iy >= h or ix < 0 or ix >= w:
                            colt[k, oy * wo + ox] = 0
                        else:
                            colt[k, oy * wo + ox] = x[n, c0 + ci, iy, ix]


@numba.njit(**NJIT)
def _axpy_rows(w, o, colt, p_n, acc32, acc, r):
    """acc[r, p] = sum_k w[o, k] * colt[k, p], vectorized over positions (small fan-in)."""
    for p in range(p_n):
        acc32[p] = 0
    for k in range(colt.shape[0]):
        wv = np.int32(w[o, k])
        for p in range(p_n):
            acc32[p] += wv * np.int32(colt[k, p])
    for p in range(p_n):
        acc[r, p] = acc32[p]


@numba.njit(**NJIT)
def _requant_codes(vals, bias, mult, add, shift, lo, hi, sign, out):
    """out[i] = requantized vals[i] (int64 values, one channel): `_requant_value` over a
    row, with the mode tested once so the loop vectorizes."""
    if sign:
        for i in range(vals.shape[0]):
            v = (vals[i] + bias) * mult + add
            out[i] = 1 if v >= 0 else -1
        return
    if shift & 64:  # half to even
        for i in range(vals.shape[0]):
            out[i] = min(max(_shift_round((vals[i] + bias) * mult + add, shift), lo), hi)
        return
    for i in range(vals.shape[0]):  # half up: a plain shift (about 20 % faster)
        out[i] = min(max(((vals[i] + bias) * mult + add) >> shift, lo), hi)


@numba.njit(**NJIT)
def _pool_requant_row(acc, ho, wo, pitch, pkh, pkw, psh, psw, pph, ppw, d,
                      bias, mult, add, shift, lo, hi, sign, pooled, out, n, o):  # fmt: skip
    """Pool accumulators of one channel and image, position (y, x) at acc[y*pitch + x]
    (pitch >= wo), then requantize the winners into out[n, o]. pooled: int64 scratch of
    at least out.shape[2] * out.shape[3] values.

    `d` is the direction for the output codes (+1 max, -1 min). The requantization F is
    monotone with direction sign(mult), so pooling codes equals pooling accumulators with
    direction d * sign(mult) and requantizing once: F(max a) = max F(a) for increasing F,
    min F(a) for decreasing F. (Left for reference: requantize every position, then pool.)
    """
    da = -d if mult < 0 else d
    hp = out.shape[2]
    wq = out.shape[3]
    if pkh == 2 and pkw == 2 and psh == 2 and psw == 2 and pph == 0 and ppw == 0:
        # the common 2x2 / stride 2 window, unrolled, one loop per direction (vectorizes)
        for py in range(hp):
            r0 = 2 * py * pitch
            r1 = r0 + pitch
            row = pooled[py * wq : (py + 1) * wq]
            if da > 0:
                for px in range(wq):
                    row[px] = max(max(np.int64(acc[r0 + 2 * px]), np.int64(acc[r0 + 2 * px + 1])),
                                  max(np.int64(acc[r1 + 2 * px]), np.int64(acc[r1 + 2 * px + 1])))
            else:
                for px in range(wq):
                    row[px] = min(min(np.int64(acc[r0 + 2 * px]), np.int64(acc[r0 + 2 * px + 1])),
                                  min(np.int64(acc[r1 + 2 * px]), np.int64(acc[r1 + 2 * px + 1])))
    else:
        for py in range(hp):
            y0 = max(py * psh - pph, 0)
            y1 = min(py * psh - pph + pkh, ho)
            for px in range(wq):
                x0 = max(px * psw - ppw, 0)
                x1 = min(px * psw - ppw + pkw, wo)
                best = np.int64(acc[y0 * pitch + x0])
                for y in range(y0, y1):
                    for xx in range(x0, x1):
                        v = np.int64(acc[y * pitch + xx])
                        if da > 0:
                            best = v if v > best else best
                        else:
                            best = v if v < best else best
                pooled[py * wq + px] = best
    _requant_codes(pooled[: hp * wq], bias, mult, add, shift, lo, hi, sign,
                   out[n, o].reshape(-1))  # fmt: skip


@numba.njit(**NJIT)
def _requant_plane(acc, ho, wo, pitch, bias, mult, add, shift, lo, hi, sign, pooled, out, n, o):
    """Requantize every position of one channel and image (no pooling) into out[n, o];
    position (y, x) at acc[y*pitch + x]; pooled: int64 scratch of ho * wo values."""
    for y in range(ho):
        for xx in range(wo):
            pooled[y * wo + xx] = acc[y * pitch + xx]
    _requant_codes(pooled[: ho * wo], bias, mult, add, shift, lo, hi, sign, out[n, o].reshape(-1))


@numba.njit(**PARALLEL)
def _conv2d(
    x, w, bias, mult, add, shift, lo, hi, sign,
    sh, sw, ph, pw, groups, kh, kw,
    pkh, pkw, psh, psw, pph, ppw, pdir,
    chan_ptr, chans, wide, out, n_chunks,
):  # fmt: skip
    """Conv2d + requantization (+ optional fused max pooling) for the channels `chans`.

    x [N, C, H, W] codes; w [O, C/groups*kh*kw] (the weight tensor flattened per output
    channel); chans: output channels to compute, sorted, group g's in
    chans[chan_ptr[g]:chan_ptr[g+1]]. out [N, O, Ho', Wo'] (after pooling when pkh > 0);
    other channels of `out` are left untouched. im2col per image and group, then dot
    products blocked 2 channels x 2 positions (`_dot2x2`); fan-in < 32 instead accumulates
    vectorized over positions. Accumulator: int64 if `wide` else int32.
    """
    n_img = x.shape[0]
    h = x.shape[2]
    wd = x.shape[3]
    k_n = w.shape[1]
    cg = k_n // (kh * kw)
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (wd + 2 * pw - kw) // sw + 1
    p_n = ho * wo
    small = k_n < _SMALL_FAN_IN and not wide
    n_chunks = max(1, min(n_img, n_chunks))
    for t in prange(n_chunks):
        start = t * n_img // n_chunks
        stop = (t + 1) * n_img // n_chunks
        col = np.empty((0 if small else p_n, k_n), x.dtype)
        colt = np.empty((k_n, p_n if small else 0), x.dtype)
        acc32 = np.empty(p_n, np.int32)
        acc = np.empty((2, p_n), np.int64)
        pooled = np.empty(p_n, np.int64)
        for n in range(start, stop):
            for g in range(groups):
                a = chan_ptr[g]
                b = chan_ptr[g + 1]
                if a == b:
                    continue
                if small:
                    _im2col_t(x, n, g * cg, cg, kh, kw, sh, sw, ph, pw, ho, wo, colt)
                else:
                    _im2col(x, n, g * cg, cg, kh, kw, sh, sw, ph, pw, ho, wo, col)
                for ci in range(a, b, 2):
                    pair = ci + 1 < b
                    if small:
                        _axpy_rows(w, chans[ci], colt, p_n, acc32, acc, 0)
                        if pair:
                            _axpy_rows(w, chans[ci + 1], colt, p_n, acc32, acc, 1)
                    else:
                        _dots(w, chans[ci], chans[ci + 1] if pair else -1, col, p_n, wide, acc)
                    for r in range(2 if pair else 1):
                        o = chans[ci + r]
                        if pkh > 0:
                            _pool_requant_row(acc[r], ho, wo, wo, pkh, pkw, psh, psw, pph, ppw,
                                              pdir[o], bias[o], mult[o], add[o], shift[o],
                                              lo[o], hi[o], sign, pooled, out, n, o)  # fmt: skip
                        else:
                            _requant_plane(acc[r], ho, wo, wo, bias[o], mult[o], add[o],
                                           shift[o], lo[o], hi[o], sign, pooled, out, n,
                                           o)  # fmt: skip


@numba.njit(**PARALLEL)
def _linear(x, w, bias, mult, add, shift, lo, hi, sign, chans, wide, out, n_chunks):
    """y[n, o] = requant(sum_k x[n, k] * w[o, k]) for o in `chans`; x [N, F], w [O, F].

    Images are processed in blocks of 32 so each weight row is read once per block.
    Accumulator: int64 if `wide` else int32 (see the module docstring).
    """
    n_img = x.shape[0]
    n_chunks = max(1, min(n_img, n_chunks))
    c_n = chans.shape[0]
    for t in prange(n_chunks):
        start = t * n_img // n_chunks
        stop = (t + 1) * n_img // n_chunks
        acc = np.empty((2, _LINEAR_BLOCK), np.int64)
        for b0 in range(start, stop, _LINEAR_BLOCK):
            b1 = min(stop, b0 + _LINEAR_BLOCK)
            for ci in range(0, c_n, 2):
                pair = ci + 1 < c_n
                o0 = chans[ci]
                o1 = chans[ci + 1] if pair else o0
                if wide:
                    for n in range(b0, b1):
                        acc[0, n - b0] = _dot64(w[o0], x[n])
                        acc[1, n - b0] = _dot64(w[o1], x[n])
                else:
                    for n in range(b0, b1 - 1, 2):
                        s00, s01, s10, s11 = _dot2x2(w[o0], w[o1], x[n], x[n + 1])
                        acc[0, n - b0] = s00
                        acc[0, n + 1 - b0] = s01
                        acc[1, n - b0] = s10
                        acc[1, n + 1 - b0] = s11
                    if (b1 - b0) % 2:
                        acc[0, b1 - 1 - b0] = _dot32(w[o0], x[b1 - 1])
                        acc[1, b1 - 1 - b0] = _dot32(w[o1], x[b1 - 1])
                for r in range(2 if pair else 1):
                    o = chans[ci + r]
                    for n in range(b0, b1):
                        out[n, o] = _requant_value(
                            acc[r, n - b0], bias[o], mult[o], add[o], shift[o], lo[o], hi[o], sign
                        )


@numba.njit(**NJIT)
def _im2col_i8(x, n0, c0, cg, kh, kw, sh, sw, ph, pw, ho, wo, zero, colt):
    """Position-major int8 columns of images n0, n0+1, ... for the int8 GEMM path.

    colt[k, m*P + p] = x[n0+m, c0+ci, oy*sh - ph + i, ox*sw - pw + j] - zero, with
    k = (ci*kh + i)*kw + j, p = oy*wo + ox, P = ho*wo, and 0 - zero outside the image (the
    padding code is 0); as many images as colt has columns / P. The caller picks `zero` so
    that every x - zero fits int8. (Left for reference: `_im2col`, transposed and per image.)
    Each row k is written front to back, along ox with the in-image range [ox0, ox1)
    computed up front so the copy has no per-element branch.
    """
    p_n = ho * wo
    h = x.shape[2]
    w = x.shape[3]
    m_n = colt.shape[1] // p_n
    pad = np.int8(-zero)
    for k in range(colt.shape[0]):
        ci = k // (kh * kw)
        i = (k // kw) % kh
        j = k % kw
        # ix = ox*sw - pw + j in [0, w)  <=>  ox in [ox0, ox1)
        ox0 = min(wo, max(0, (pw - j + sw - 1) // sw))
        ox1 = max(ox0, min(wo, (w - 1 + pw - j) // sw + 1))
        for m in range(m_n):
            plane = x[n0 + m, c0 + ci]
            for oy in range(ho):
                iy = oy * sh - ph + i
                q = m * p_n + oy * wo
                if iy < 0 or iy >= h:
                    for ox in range(wo):
                        colt[k, q + ox] = pad
                    continue
                for ox in range(ox0):
                    colt[k, q + ox] = pad
                for ox in range(ox0, ox1):
                    colt[k, q + ox] = np.int8(plane[iy, ox * sw - pw + j] - zero)
                for ox in range(ox1, wo):
                    colt[k, q + ox] = pad


@numba.njit(**NJIT)
def _shift_i8(x, zero, out):
    """out[n, f] = x[n, f] - zero as int8 (the caller checks it fits)."""
    for n in range(x.shape[0]):
        for f in range(x.shape[1]):
            out[n, f] = np.int8(x[n, f] - zero)


@numba.njit(**NJIT)
def _conv_requant(acc, n0, ho, wo, pitch, pkh, pkw, psh, psw, pph, ppw, pdir,
                  bias, mult, add, shift, lo, hi, sign, chans, out):  # fmt: skip
    """Bias + requantization (+ fused max pooling if pkh > 0) of precomputed accumulators.

    acc [len(chans), M*ho*pitch] (int32 or int64, exact): row r holds channel chans[r] for
    images n0 .. n0+M-1, ho rows of `pitch` >= wo positions each (positions past wo are
    ignored). Writes out[n0+m, chans[r]] only; same arithmetic as `_conv2d` after its dot
    products.
    """
    p_n = ho * pitch
    for m in range(acc.shape[1] // p_n):
        n = n0 + m
        pooled = np.empty(ho * wo, np.int64)
        for r in range(chans.shape[0]):
            o = chans[r]
            a = acc[r, m * p_n : (m + 1) * p_n]
            if pkh > 0:
                _pool_requant_row(a, ho, wo, pitch, pkh, pkw, psh, psw, pph, ppw, pdir[o],
                                  bias[o], mult[o], add[o], shift[o], lo[o], hi[o], sign,
                                  pooled, out, n, o)  # fmt: skip
            else:
                _requant_plane(a, ho, wo, pitch, bias[o], mult[o], add[o], shift[o], lo[o],
                               hi[o], sign, pooled, out, n, o)  # fmt: skip


@numba.njit(**NJIT)
def _pad_i8(x, n0, ph, pw, zero, xpad):
    """xpad[m, c, ph + y, pw + x] = x[n0+m, c, y, x] - zero as int8, for the images of
    xpad [M, C, Hp + 1, Wp]. Only the interior is written: the caller fills xpad with
    -zero (the padding code 0, shifted) once, and the border never changes. The extra row
    lets every patch row of `_im2col_i8_s1` be one contiguous slice."""
    h = x.shape[2]
    w = x.shape[3]
    for m in range(xpad.shape[0]):
        for c in range(xpad.shape[1]):
            for y in range(h):
                row = xpad[m, c, ph + y, pw : pw + w]
                src = x[n0 + m, c, y]
                if zero == 0:
                    row[:] = src  # plain copy (no per-element conversion)
                else:
                    for xx in range(w):
                        row[xx] = np.int8(src[xx] - zero)


@numba.njit(**NJIT)
def _im2col_i8_s1(xpad, c0, cg, kh, kw, ho, colt):
    """Stride-1 int8 columns on the padded grid, one contiguous copy per row and image.

    With Wp = xpad.shape[3] and Pv = ho * Wp virtual positions t = oy*Wp + ox per image
    (ox in [0, Wp); only ox < wo = Wp - kw + 1 are real outputs):
        colt[k, m*Pv + t] = xpad[m, c0+ci].flat[t + i*Wp + j],  k = (ci*kh + i)*kw + j,
    which is xpad[m, c0+ci, oy + i, ox + j] for every real output position. Costs Wp/wo
    more GEMM columns than `_im2col_i8` but no per-element index arithmetic.
    """
    wp = xpad.shape[3]
    pv = ho * wp
    for k in range(colt.shape[0]):
        ci = k // (kh * kw)
        off = ((k // kw) % kh) * wp + k % kw
        for m in range(colt.shape[1] // pv):
            plane = xpad[m, c0 + ci].reshape(-1)
            colt[k, m * pv : (m + 1) * pv] = plane[off : off + pv]


@numba.njit(**NJIT)
def _requant_channels(vals, bias, mult, add, shift, lo, hi, sign, row):
    """row[r] = requantized vals[r] with channel r's parameters (arrays gathered per r),
    the mode tested once so the loop vectorizes. vals: any numeric array holding exact
    integers (int32 / int64 / float32); row: int64."""
    if sign:
        for r in range(row.shape[0]):
            v = (np.int64(vals[r]) + bias[r]) * mult[r] + add[r]
            row[r] = 1 if v >= 0 else -1
        return
    flags = np.int64(0)
    for r in range(row.shape[0]):
        flags |= shift[r]
    if flags & 64:  # some channel rounds half to even
        for r in range(row.shape[0]):
            v = _shift_round((np.int64(vals[r]) + bias[r]) * mult[r] + add[r], shift[r])
            row[r] = min(max(v, lo[r]), hi[r])
        return
    for r in range(row.shape[0]):  # half up: a plain shift (about 35 % faster)
        v = ((np.int64(vals[r]) + bias[r]) * mult[r] + add[r]) >> shift[r]
        row[r] = min(max(v, lo[r]), hi[r])


@numba.njit(**NJIT)
def _to_u8(x, zp, out):
    """out[n, f] = x[n, f] + zp as uint8 (the caller checks it fits), for oneDNN's
    quantized convolution (codes with zero point zp)."""
    for n in range(x.shape[0]):
        for f in range(x.shape[1]):
            out[n, f] = np.uint8(x[n, f] + zp)


@numba.njit(**NJIT)
def _conv_requant_nhwc(acc, n0, pkh, pkw, psh, psw, pph, ppw, dirs,
                       bias, mult, add, shift, lo, hi, sign, chans, best, row, out):  # fmt: skip
    """Requantize (+ max/min pooling if pkh > 0) channels-last accumulators.

    acc [M, Ho, Wo, R] float32 holding exact integers (oneDNN's convolution): channel r is
    output channel chans[r] of images n0 .. n0+M-1. bias .. hi are already gathered per
    r; dirs[r] = +1 pools the max, -1 the min of the accumulators (the direction of the
    code times the sign of the requantization, as in `_pool_requant_row`). Loops run over
    r innermost, so they vectorize across channels. best: float32 and row: int64 scratch
    of R values.
    """
    m_n, ho, wo, r_n = acc.shape
    hp = out.shape[2]
    wq = out.shape[3]
    for m in range(m_n):
        n = n0 + m
        for py in range(hp):
            for px in range(wq):
                if pkh > 0:
                    y0 = max(py * psh - pph, 0)
                    y1 = min(py * psh - pph + pkh, ho)
                    x0 = max(px * psw - ppw, 0)
                    x1 = min(px * psw - ppw + pkw, wo)
                    for r in range(r_n):
                        best[r] = dirs[r] * acc[m, y0, x0, r]
                    for y in range(y0, y1):
                        for xx in range(x0, x1):
                            for r in range(r_n):
                                best[r] = max(best[r], dirs[r] * acc[m, y, xx, r])
                    for r in range(r_n):
                        best[r] = dirs[r] * best[r]
                else:
                    for r in range(r_n):
                        best[r] = acc[m, py, px, r]
                _requant_channels(best, bias, mult, add, shift, lo, hi, sign, row)
                for r in range(r_n):
                    out[n, chans[r], py, px] = row[r]


@numba.njit(**NJIT)
def _linear_requant(acc, n0, bias, mult, add, shift, lo, hi, sign, chans, row, out):
    """out[n0+m, chans[r]] = requant(acc[m, r] + bias[r]) for precomputed exact accumulators
    acc [M, len(chans)] (int32 or int64). bias .. hi are gathered per r (length
    len(chans)); row: int64 scratch of len(chans) values. Each image's row is requantized
    by `_requant_channels` (vectorized), then scattered to its channels."""
    for m in range(acc.shape[0]):
        _requant_channels(acc[m], bias, mult, add, shift, lo, hi, sign, row)
        for r in range(chans.shape[0]):
            out[n0 + m, chans[r]] = row[r]


@numba.njit(**PARALLEL)
def _add_weight_deltas(acc, cols, ks, dws, x):
    """acc[n, cols[f]] += dws[f] * x[n, ks[f]] for every flip f and image n (int64 acc).

    Exact update of linear accumulators for changed weights: (w + dw) . x = w . x + dw * x_k.
    """
    for n in prange(acc.shape[0]):
        for f in range(cols.shape[0]):
            acc[n, cols[f]] += np.int64(dws[f]) * np.int64(x[n, ks[f]])


@numba.njit(**PARALLEL)
def _add_input_deltas(acc, x_new, x_old, wt):
    """acc[n, :] += (x_new[n, k] - x_old[n, k]) * wt[k, :] over the k where inputs changed.

    wt [F, O] is the transposed weight, so each changed input adds one contiguous row.
    """
    for n in prange(acc.shape[0]):
        for k in range(x_new.shape[1]):
            d = np.int64(x_new[n, k]) - np.int64(x_old[n, k])
            if d != 0:
                for o in range(acc.shape[1]):
                    acc[n, o] += d * wt[k, o]


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
    """`reps` int8 dot products widened to int32 (`_dot32`), for the machine's MAC peak.

    b is modified (one element per rep) so the compiler cannot hoist the dot product.
    """
    total = np.int64(0)
    for r in range(reps):
        b[r % b.shape[0]] = a[(r * 7) % a.shape[0]]
        total += _dot32(a, b)
    return total


@numba.njit(**PARALLEL)
def dot_peak_parallel(a, b, reps, out):
    """dot_peak on every row of a, b at once (one row per thread), out[t] its total."""
    for t in prange(out.shape[0]):
        out[t] = dot_peak(a[t], b[t], reps)
