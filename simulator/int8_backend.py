"""The int8 backend of the engine: Conv and Linear accumulators on oneDNN's int8 units.

Siblings: `simulator.kernels` (numba, the oracle) and `simulator.reference` (numpy);
`simulator.engine` picks per layer (`engine.plan`) and calls `conv` / `linear` here, which
return False wherever this backend cannot give the exact result, so that the caller runs
numba instead. torch is reached only through `simulator.gemm_int8`.

  conv      oneDNN's quantized convolution (`gemm_int8.conv2d`: exact float32 accumulators
            while |acc| <= 2^24, channels last) + `kernels._conv_requant_nhwc`, where its
            self-test for the layer's geometry passes; else int8 patches gathered by numba
            (`_pad_i8` + `_im2col_i8_s1` for stride 1, `_im2col_i8` otherwise) + the int8
            GEMM (`gemm_int8.matmul`) + `kernels._conv_requant`.
  linear    the int8 GEMM on rows of x (shifted into int8) + `kernels._linear_requant`.
Unsigned 8-bit codes a in [0, 255] enter the GEMM as a - 128 (`Plan.zero`); the exact
correction zero * sum_k w[o, k] joins the layer's int64 bias before requantization (one
pass over the weights of the channels computed, not over the accumulators); oneDNN's
convolution takes the codes as uint8 with a zero point instead.

Threads: each of the engine's threads (numba's thread count) takes a contiguous share of
the images through single-threaded kernels and GEMM calls (`_split_images`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from simulator import gemm_int8, kernels
from simulator.ops import Conv, weight_range

# int8 patches per conv GEMM call: small enough that patches, weights and accumulators of
# one call stay in a core's L2 cache (VGG3 conv2: 4 images of 196 x 576 codes).
_INT8_CONV_BYTES = 512 * 2**10
_INT8_LINEAR_ROWS = 1024  # images per linear GEMM call
_MIN_IMAGES_PER_THREAD = 8  # fewer images per engine thread are not worth a thread
_ONEDNN_IMAGES = 32  # images per oneDNN convolution call (VGG3 conv2: 342 GOP/s, 1 thread)


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a)


def ready(info, fan_in: int) -> bool:
    """Whether a layer with these import facts (`engine.LayerInput`) runs here: planned for
    int8, and the GEMM proven exact for its operand ranges on this CPU."""
    p = info.plan
    if p.backend != "int8":
        return False
    w_lo, w_hi = weight_range(info.w_bits)
    return gemm_int8.proven(w_lo, w_hi, info.lo - p.zero, info.hi - p.zero, fan_in)


def conv(op: Conv, x, w, rq, chans, chan_ptr, pooling, pdir, info, out) -> bool:
    """Conv + requantization (+ pooling) of the channels `chans` into out; rq: the kernels'
    requantization arguments (`engine._rq_args`), pooling: (pkh, pkw, psh, psw, pph, ppw).
    False where this backend does not apply (nothing written that matters)."""
    if not ready(info, int(np.prod(w.shape[1:]))):
        return False
    zp = _onednn_zp(op, info, w.shape, x.shape[2:], chans.size == w.shape[0])
    if zp is not None and _conv_onednn(op, x, w, rq, chans, pooling, pdir, zp, out):
        return True
    return _conv_patches(op, x, w, rq, chans, chan_ptr, pooling, pdir, info.plan.zero, out)


def linear(x, w, rq, chans, info, out) -> bool:
    """Linear + requantization of the channels `chans` into out (see `conv`)."""
    if not ready(info, x.shape[1]):
        return False
    z = info.plan.zero
    sums = _zero_sums(w, z, chans)
    sub, sign = _gathered(rq if sums is None else (rq[0] + sums, *rq[1:]), chans)
    w_sub = _c(w if chans.size == w.shape[0] else w[chans]).astype(np.int8, copy=False)

    def sink(n0, acc):
        row = np.empty(chans.size, np.int64)
        kernels._linear_requant(acc, n0, *sub, sign, chans, row, out)

    return _linear_int8(x, w_sub, z, sink)


def linear_acc(x, w, info) -> np.ndarray | None:
    """Exact accumulators x @ w.T as int64 (bias excluded), or None where this backend
    does not apply."""
    if not ready(info, x.shape[1]):
        return None
    o_n = w.shape[0]
    out = np.empty((x.shape[0], o_n), np.int64)
    sums = _zero_sums(w, info.plan.zero, np.arange(o_n))

    def sink(n0, acc):
        out[n0 : n0 + acc.shape[0]] = acc if sums is None else acc + sums

    return out if _linear_int8(x, _c(w.astype(np.int8)), info.plan.zero, sink) else None


def _conv_onednn(op: Conv, x, w, rq, chans, pooling, pdir, zp, out) -> bool:
    """Conv by oneDNN's quantized convolution (exact float32 accumulators, channels last)
    + numba requantization / pooling (`_conv_requant_nhwc`), images split over the engine's
    threads in chunks of _ONEDNN_IMAGES. Codes enter as uint8 x + zp. Returns False if
    oneDNN refuses (nothing trusted; the caller takes another path)."""
    packed = gemm_int8.pack_conv(w[chans], zp, op.stride, op.padding, op.groups)
    if packed is None:
        return False
    x = _c(x)
    sub, sign = _gathered(rq, chans)
    dirs = np.where(rq[1][chans] < 0, -pdir[chans], pdir[chans]).astype(np.float32)
    feat = int(np.prod(x.shape[1:]))

    def images(start: int, stop: int) -> bool:
        u8 = np.empty((min(_ONEDNN_IMAGES, stop - start), feat), np.uint8)
        best = np.empty(chans.size, np.float32)
        row = np.empty(chans.size, np.int64)
        for n0 in range(start, stop, _ONEDNN_IMAGES):
            m = min(stop, n0 + _ONEDNN_IMAGES) - n0
            kernels._to_u8(x[n0 : n0 + m].reshape(m, feat), zp, u8[:m])
            acc = gemm_int8.conv2d(u8[:m].reshape(m, *x.shape[1:]), packed)
            if acc is None:
                return False
            kernels._conv_requant_nhwc(acc, n0, *pooling, dirs, *sub, sign, chans, best, row,
                                       out)  # fmt: skip
        return True

    return all(_split_images(images, x.shape[0]))


def _onednn_zp(op: Conv, info, w_shape, hw, full: bool) -> int | None:
    """uint8 zero point for oneDNN's convolution of this layer, or None where it does not
    apply: accumulators that could pass 2^24 (float32 output), a channel subset of a grouped
    conv, padding as large as the kernel, or a geometry and operand ranges whose self-test
    failed on this CPU."""
    kh, kw = w_shape[2], w_shape[3]
    if not gemm_int8.has_conv() or (op.groups > 1 and not full):
        return None
    if op.padding[0] >= kh or op.padding[1] >= kw:  # outside what CNNs use (k // 2)
        return None
    zp = 128 - info.plan.zero  # u8 = x - zero + 128
    w_lo, w_hi = weight_range(info.w_bits)
    x_max = max(abs(info.lo), abs(info.hi))
    fan_in = int(np.prod(w_shape[1:]))
    if fan_in * x_max * max(-w_lo, w_hi) > gemm_int8.F32_EXACT:
        return None
    if not 0 <= info.lo + zp and info.hi + zp <= 255:
        return None
    proven = gemm_int8.proven_conv(w_lo, w_hi, info.lo, info.hi, zp, w_shape[1], kh, kw,
                                   tuple(op.stride), tuple(op.padding), op.groups,
                                   tuple(hw))  # fmt: skip
    return zp if proven else None


def _conv_patches(op: Conv, x, w, rq, chans, chan_ptr, pooling, pdir, zero, out) -> bool:
    """Conv by int8 patches + int8 GEMM + numba requantization / pooling.

    The images are split over the engine's threads (`_split_images`); each thread takes
    chunks whose int8 patches take <= _INT8_CONV_BYTES and, per chunk and group, computes
    acc [channels, images*positions] = w_g @ colt (int32, exact), then `_conv_requant`.
    Stride 1 gathers on the padded grid (`_pad_i8` + `_im2col_i8_s1`: contiguous copies,
    row pitch Wp), other strides element by element (`_im2col_i8`, pitch wo).
    Returns False (nothing trusted) if the GEMM is unavailable, so the caller runs numba.
    """
    o_n, cg, kh, kw = w.shape
    k_n = cg * kh * kw
    (sh, sw), (ph, pw) = op.stride, op.padding
    ho = (x.shape[2] + 2 * ph - kh) // sh + 1  # before pooling
    wo = (x.shape[3] + 2 * pw - kw) // sw + 1
    padded = sh == 1 and sw == 1
    pitch = x.shape[3] + 2 * pw if padded else wo
    p_n = ho * pitch
    step = max(1, _INT8_CONV_BYTES // (p_n * k_n))
    x = _c(x)
    w2 = _c(w).reshape(o_n, k_n)
    sums = _zero_sums(w2, zero, chans)
    rq = rq if sums is None else (rq[0] + sums, *rq[1:])
    groups = []
    for g in range(op.groups):
        sub = _c(chans[chan_ptr[g] : chan_ptr[g + 1]])
        if sub.size:
            groups.append((g, sub, _c(w2[sub]).astype(np.int8, copy=False)))
    pad_shape = (x.shape[1], x.shape[2] + 2 * ph + 1, pitch)

    def images(start: int, stop: int) -> bool:
        """Images [start, stop) in chunks of `step`, with this thread's own buffers."""
        m_max = min(step, stop - start)
        buf = np.empty(k_n * m_max * p_n, np.int8)
        if padded:  # border filled once with the padding code; `_pad_i8` writes interiors
            xpad_buf = np.full(m_max * int(np.prod(pad_shape)), -zero, np.int8)
        for n0 in range(start, stop, step):
            m = min(stop, n0 + step) - n0
            colt = buf[: k_n * m * p_n].reshape(k_n, m * p_n)
            if padded:
                xpad = xpad_buf[: m * int(np.prod(pad_shape))].reshape(m, *pad_shape)
                kernels._pad_i8(x, n0, ph, pw, zero, xpad)
            for g, sub, wg in groups:
                if padded:
                    kernels._im2col_i8_s1(xpad, g * cg, cg, kh, kw, ho, colt)
                else:
                    kernels._im2col_i8(x, n0, g * cg, cg, kh, kw, sh, sw, ph, pw, ho, wo,
                                       zero, colt)  # fmt: skip
                acc = gemm_int8.matmul(wg, colt)
                if acc is None:
                    return False
                kernels._conv_requant(acc, n0, ho, wo, pitch, *pooling, pdir, *rq, sub, out)
        return True

    return all(_split_images(images, x.shape[0]))


def _gathered(rq, chans: np.ndarray) -> tuple[list[np.ndarray], bool]:
    """The per-channel requantization arrays (bias, mult, add, shift, lo, hi) of `chans`,
    in order, as the channel-vectorized kernels take them; and the sign flag."""
    return [a[chans] for a in rq[:6]], rq[6]


def _zero_sums(w2: np.ndarray, zero: int, chans: np.ndarray) -> np.ndarray | None:
    """zero * sum_k w2[o, k] (int64 [O]) for the output channels `chans` (others 0)."""
    if zero == 0:
        return None
    out = np.zeros(w2.shape[0], np.int64)
    out[chans] = zero * w2[chans].sum(axis=1, dtype=np.int64)
    return out


def _as_int8(x: np.ndarray, zero: int) -> np.ndarray:
    """Codes x - zero as a contiguous int8 array (no copy when already int8 with zero 0)."""
    if zero == 0 and x.dtype == np.int8:
        return _c(x)
    out = np.empty(x.shape, np.int8)
    kernels._shift_i8(_c(x), zero, out)
    return out


def _linear_int8(x: np.ndarray, w_sub: np.ndarray, zero: int, sink) -> bool:
    """Exact int32 accumulators (x - zero) @ w_sub.T, split over the engine's threads, each
    in chunks of rows passed to sink(n0, acc [rows, len(w_sub)]) (disjoint rows). False
    (nothing passed on trust) if unavailable."""

    def rows(start: int, stop: int) -> bool:
        for n0 in range(start, stop, _INT8_LINEAR_ROWS):
            n1 = min(stop, n0 + _INT8_LINEAR_ROWS)
            acc = gemm_int8.matmul(_as_int8(x[n0:n1], zero), w_sub.T)
            if acc is None:
                return False
            sink(n0, acc)
        return True

    return all(_split_images(rows, x.shape[0]))


def _split_images(fn, n_img: int) -> list:
    """[fn(start, stop)] over contiguous image ranges, one per engine thread (numba's thread
    count), run on a thread pool with the int8 GEMM single-threaded in each.

    Coarse on purpose: the int8 path's kernels and GEMM calls are short (a few images
    each), and a parallel region per call waits, every time, for threads that other
    processes on a shared machine hold (10-40x slower on 2 loaded cores). Each range
    writes only its own images' outputs.
    """
    t = max(1, min(numba.get_num_threads(), n_img // _MIN_IMAGES_PER_THREAD))
    bounds = [i * n_img // t for i in range(t + 1)]
    with gemm_int8.single_threaded():
        if t == 1:
            return [fn(0, n_img)]
        futures = [_thread_pool(t).submit(fn, a, b) for a, b in zip(bounds, bounds[1:])]
        return [f.result() for f in futures]


_POOL: dict[int, ThreadPoolExecutor] = {}


def _thread_pool(t: int) -> ThreadPoolExecutor:
    if t not in _POOL:
        for old in _POOL.values():  # the thread count changed: let the old threads end
            old.shutdown(wait=False)
        _POOL.clear()
        _POOL[t] = ThreadPoolExecutor(max_workers=t, thread_name_prefix="mcelsim-int8")
    return _POOL[t]
