"""Run one IR op on the engine's backends (validation, buffers, channel subsets).

`run_op(op, inputs, net, chans=None)` returns the op's output for every image of
`inputs`; with `chans` (sorted output channels) only those channels of a Conv/Linear are
computed and the rest of the returned array is left as `base` (a copy of the clean output).

Backends of the Conv and Linear accumulators: siblings that compute the same integers.
  numba      `simulator.kernels`: fused dot products + requantization (+ pooling), any
             operand widths, int32 or int64 accumulators. The oracle (MCELSIM_GEMM=int).
  int8       `simulator.gemm_int8`: oneDNN's exact int8 x int8 -> int32 GEMM (VNNI); numba
             gathers int8 patches (`kernels._im2col_i8`, no float im2col) and requantizes.
  reference  `simulator.reference`, plain numpy int64 (`run_op_reference`, for tests).
Everything that is not an accumulator (requantization, pooling, add, faults, deltas) runs
on numba whatever the backend.

Which backend a layer uses is decided by `plan` from what the import knows (weight bits,
the input value's code range, fan-in), never from timing probes, and the int8 path runs
only after `gemm_int8.proven` showed it exact for those operand ranges on this CPU.
Unsigned 8-bit codes a in [0, 255] enter the int8 GEMM as a - 128 (`Plan.zero`); the
exact correction zero * sum_k w[o, k] is added to the layer's int64 bias before
requantization, so it costs one pass over the weights, not over the accumulators.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np

from simulator import gemm_int8, kernels, reference
from simulator.ops import (
    INT32_MAX,
    Add,
    Conv,
    Flatten,
    Linear,
    MaxPool,
    Op,
    Requantize,
    SumPool,
    weight_range,
)

GEMM: str | None = None
"""Accumulator backend: "auto", "int8" or "int"; None reads $MCELSIM_GEMM (default "auto")."""
_GEMM_MODES = ("auto", "int8", "int")
# auto: a fan-in below this stays on numba. With a few products per output the GEMM is
# bound by writing int32 accumulators (VGG3's conv1, fan-in 9: 3.5 GMAC/s on oneDNN against
# about 12 on the numba kernel, benchmarks/results_engine.md); depthwise convs likewise.
_INT8_MIN_FAN_IN = 32
# int8 patches per conv GEMM call: small enough that patches, weights and accumulators of
# one call stay in a core's L2 cache (VGG3 conv2: 4 images of 196 x 576 codes).
_INT8_CONV_BYTES = 512 * 2**10
_INT8_LINEAR_ROWS = 1024  # images per linear GEMM call
_MIN_IMAGES_PER_THREAD = 8  # fewer images per engine thread are not worth a thread
_ONEDNN_IMAGES = 32  # images per oneDNN convolution call (VGG3 conv2: 342 GOP/s, 1 thread)


def gemm_mode() -> str:
    """The backend switch in force: `GEMM` if set, else $MCELSIM_GEMM, else "auto".

    "int": numba kernels only. "int8": the int8 GEMM wherever it is exact (see `plan`).
    "auto": the int8 GEMM where it is exact and pays (fan-in >= 32), numba elsewhere.
    Results are identical.
    """
    mode = GEMM if GEMM is not None else os.environ.get("MCELSIM_GEMM", "auto")
    if mode not in _GEMM_MODES:
        raise ValueError(f"MCELSIM_GEMM / engine.GEMM must be one of {_GEMM_MODES}, got {mode!r}")
    return mode


@dataclass(frozen=True)
class Plan:
    """How one Conv/Linear layer computes its accumulators.

    backend: "int8" or "numba"; zero: the int8 backend feeds input codes x - zero (so that
    they fit int8); why: the reason, for reports and tests.
    """

    backend: str
    zero: int = 0
    why: str = ""


NUMBA = Plan("numba", why="default")


def plan(op: Op, w_bits: int, in_lo: int, in_hi: int, fan_in: int) -> Plan:
    """Backend of layer `op` from import facts: weight bits, input code range, fan-in.

    int8 needs: not XNOR, weights of <= 8 bits, input codes spanning <= 256 values (shifted
    by `zero` into [-128, 127]), and fan_in * max|x - zero| * max|w| < 2^31 so that the
    int32 GEMM accumulator cannot overflow whatever the (corrupted) weights.
    """
    mode = gemm_mode()
    if mode == "int":
        return Plan("numba", why="MCELSIM_GEMM=int")
    if getattr(op, "xnor", False):
        return Plan("numba", why="binarized XNOR-popcount layer")
    if w_bits > 8:
        return Plan("numba", why=f"{w_bits}-bit weights do not fit int8")
    if in_hi - in_lo > 255:
        return Plan("numba", why=f"input codes [{in_lo}, {in_hi}] do not fit 8 bits")
    zero = 0 if -128 <= in_lo and in_hi <= 127 else in_lo + 128
    x_max = max(abs(in_lo - zero), abs(in_hi - zero))
    w_lo, w_hi = weight_range(w_bits)
    if fan_in * x_max * max(-w_lo, w_hi) > INT32_MAX:
        return Plan("numba", why="int32 GEMM accumulator could overflow")
    if mode == "auto" and fan_in < _INT8_MIN_FAN_IN:
        return Plan("numba", why=f"fan-in {fan_in} < {_INT8_MIN_FAN_IN}: memory bound")
    return Plan("int8", zero=zero, why="operands fit int8")


def _int8_ready(p: Plan | None, w_bits: int, in_lo: int, in_hi: int, fan_in: int) -> bool:
    """Whether the int8 path runs now: planned, and proven exact on this CPU."""
    if p is None or p.backend != "int8":
        return False
    w_lo, w_hi = weight_range(w_bits)
    return gemm_int8.proven(w_lo, w_hi, in_lo - p.zero, in_hi - p.zero, fan_in)


def _chunks() -> int:
    """Image chunks per parallel kernel call: a few per thread (load balance)."""
    return 4 * numba.get_num_threads()


def _wide(op) -> bool:
    """int64 accumulator for this layer (decided at import)."""
    return np.dtype(op.acc_dtype) == np.int64


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a)


def _rq_args(rq, bias: np.ndarray | None, c_n: int, zero_sums: np.ndarray | None = None):
    """Requantization arguments; `zero_sums` (zero * sum_k w[o, k], int64) joins the bias."""
    b = np.zeros(c_n, np.int64) if bias is None else bias.astype(np.int64)
    if zero_sums is not None:
        b = b + zero_sums
    return b, rq.mult, rq.add, rq.shift, rq.lo, rq.hi, bool(rq.sign)


def _zero_sums(w2: np.ndarray, zero: int, chans: np.ndarray) -> np.ndarray | None:
    """zero * sum_k w2[o, k] (int64 [O]) for the output channels `chans` (others 0)."""
    if zero == 0:
        return None
    out = np.zeros(w2.shape[0], np.int64)
    out[chans] = zero * w2[chans].sum(axis=1, dtype=np.int64)
    return out


@dataclass(frozen=True)
class LayerInput:
    """What the engine knows of a Conv/Linear input besides its codes (from the import)."""

    w_bits: int
    lo: int
    hi: int
    plan: Plan


def conv_out_shape(op: Conv, x_shape, w_shape) -> tuple[int, int, int, int]:
    ho, wo = op.out_hw(x_shape[2], x_shape[3], w_shape[2], w_shape[3])
    return (x_shape[0], w_shape[0], ho, wo)


def run_conv(op: Conv, x, w, bias, chans=None, base=None, info: LayerInput | None = None):
    """Conv + requantization (+ fused pooling) of codes x [N, C, H, W] with weights w.

    info: the layer's import facts; without it (direct calls) the numba kernels run.
    """
    if x.ndim != 4 or x.shape[1] != w.shape[1] * op.groups:
        raise ValueError(
            f"{op.module}: input shape {x.shape} does not match weights {w.shape} "
            f"with groups={op.groups}"
        )
    o_n = w.shape[0]
    shape = conv_out_shape(op, x.shape, w.shape)
    if min(shape[2:]) <= 0:
        raise ValueError(f"{op.module}: input {x.shape[2:]} too small for this layer")
    if chans is None:
        chans = np.arange(o_n, dtype=np.int64)
        out = np.empty(shape, op.dtype)
    else:
        out = base.copy() if base is not None else np.zeros(shape, op.dtype)
    chans = _c(chans.astype(np.int64))
    og = o_n // op.groups
    chan_ptr = np.searchsorted(chans, np.arange(op.groups + 1) * og).astype(np.int64)
    pool = op.pool
    pk, ps, pp = (pool.kernel, pool.stride, pool.padding) if pool else ((0, 0), (1, 1), (0, 0))
    pdir = op.pool_dir if op.pool_dir is not None else np.ones(o_n, np.int8)
    fan_in = int(np.prod(w.shape[1:]))
    if info is not None and _int8_ready(info.plan, info.w_bits, info.lo, info.hi, fan_in):
        zp = _onednn_zp(op, info, w.shape, x.shape[2:], chans.size == o_n)
        if zp is not None and _conv_onednn(op, x, w, bias, chans, pk, ps, pp, pdir, zp, out):
            return out
        if _conv_int8(op, x, w, bias, chans, chan_ptr, pk, ps, pp, pdir, info.plan.zero, out):
            return out
    kernels._conv2d(
        _c(x), _c(w).reshape(o_n, -1), *_rq_args(op.requant, bias, o_n),
        op.stride[0], op.stride[1], op.padding[0], op.padding[1], op.groups,
        w.shape[2], w.shape[3], pk[0], pk[1], ps[0], ps[1], pp[0], pp[1], pdir,
        chan_ptr, chans, _wide(op), out, _chunks(),
    )  # fmt: skip
    return out


def _conv_onednn(op: Conv, x, w, bias, chans, pk, ps, pp, pdir, zp, out) -> bool:
    """Conv by oneDNN's quantized convolution (exact float32 accumulators, channels last)
    + numba requantization / pooling (`_conv_requant_nhwc`), images split over the engine's
    threads in chunks of _ONEDNN_IMAGES. Codes enter as uint8 x + zp. Returns False if
    oneDNN refuses (nothing trusted; the caller takes another path)."""
    packed = gemm_int8.pack_conv(w[chans], zp, op.stride, op.padding, op.groups)
    if packed is None:
        return False
    x = _c(x)
    b, mult, add, shift, lo, hi, sign = _rq_args(op.requant, bias, w.shape[0])
    sub = [a[chans] for a in (b, mult, add, shift, lo, hi)]
    dirs = np.where(mult[chans] < 0, -pdir[chans], pdir[chans]).astype(np.float32)
    feat = int(np.prod(x.shape[1:]))

    def images(start: int, stop: int) -> bool:
        u8 = np.empty((min(_ONEDNN_IMAGES, stop - start), feat), np.uint8)
        best = np.empty(chans.size, np.float32)
        for n0 in range(start, stop, _ONEDNN_IMAGES):
            m = min(stop, n0 + _ONEDNN_IMAGES) - n0
            kernels._to_u8(x[n0 : n0 + m].reshape(m, feat), zp, u8[:m])
            acc = gemm_int8.conv2d(u8[:m].reshape(m, *x.shape[1:]), packed)
            if acc is None:
                return False
            kernels._conv_requant_nhwc(acc, n0, pk[0], pk[1], ps[0], ps[1], pp[0], pp[1], dirs,
                                       *sub, sign, chans, best, out)  # fmt: skip
        return True

    return all(_split_images(images, x.shape[0]))


def _onednn_zp(op: Conv, info: LayerInput, w_shape, hw, full: bool) -> int | None:
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


def _conv_int8(op: Conv, x, w, bias, chans, chan_ptr, pk, ps, pp, pdir, zero, out) -> bool:
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
    rq = _rq_args(op.requant, bias, o_n, _zero_sums(w2, zero, chans))
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
                kernels._conv_requant(acc, n0, ho, wo, pitch, pk[0], pk[1], ps[0], ps[1],
                                      pp[0], pp[1], pdir, *rq, sub, out)  # fmt: skip
        return True

    return all(_split_images(images, x.shape[0]))


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
        _POOL.clear()
        _POOL[t] = ThreadPoolExecutor(max_workers=t, thread_name_prefix="mcelsim-int8")
    return _POOL[t]


def pack_signs(x: np.ndarray) -> np.ndarray:
    """uint64 [N, ceil(F/64)] sign bits of ±1 codes (bit = 1 for +1)."""
    out = np.zeros((x.shape[0], (x.shape[1] + 63) // 64), np.uint64)
    kernels._pack_signs(_c(x), out)
    return out


def run_linear(op: Linear, x, w, bias, chans=None, base=None, wbits=None,
               info: LayerInput | None = None) -> np.ndarray:  # fmt: skip
    """Linear + requantization of codes x [N, F]; info as in `run_conv`."""
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"{op.module}: input shape {x.shape} does not match weights {w.shape}")
    o_n = w.shape[0]
    if chans is None:
        chans = np.arange(o_n, dtype=np.int64)
        out = np.empty((x.shape[0], o_n), op.dtype)
    else:
        out = base.copy() if base is not None else np.zeros((x.shape[0], o_n), op.dtype)
    chans = _c(chans.astype(np.int64))
    if info is not None and _int8_ready(info.plan, info.w_bits, info.lo, info.hi, x.shape[1]):
        z = info.plan.zero
        args = _rq_args(op.requant, bias, o_n, _zero_sums(w, z, chans))
        w_sub = _c(w if chans.size == o_n else w[chans]).astype(np.int8, copy=False)
        if _linear_int8(x, w_sub, z, lambda n0, acc: kernels._linear_requant(
                acc, n0, *args, chans, out)):  # fmt: skip
            return out
    args = _rq_args(op.requant, bias, o_n)
    if op.xnor:
        wb = wbits if wbits is not None else pack_signs(w)
        kernels._xnor_linear(pack_signs(x), wb, x.shape[1], *args, chans, out, _chunks())
    else:
        kernels._linear(_c(x), _c(w), *args, chans, _wide(op), out, _chunks())
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


def linear_acc(x: np.ndarray, w: np.ndarray, wide: bool = True,
               info: LayerInput | None = None) -> np.ndarray:  # fmt: skip
    """Exact accumulators x @ w.T as int64 (bias excluded): the int8 GEMM plus the zero
    correction where `info` allows it, else the linear kernel with an identity
    requantization (mult 1, add 0, shift 0, no clamp). wide=False accumulates in int32
    (only for layers whose import proved int32 cannot overflow)."""
    o_n = w.shape[0]
    out = np.empty((x.shape[0], o_n), np.int64)
    if info is not None and _int8_ready(info.plan, info.w_bits, info.lo, info.hi, x.shape[1]):
        z = info.plan.zero
        sums = _zero_sums(w, z, np.arange(o_n))
        w8 = _c(w.astype(np.int8))

        def sink(n0, acc):
            out[n0 : n0 + acc.shape[0]] = acc if sums is None else acc + sums

        if _linear_int8(x, w8, z, sink):
            return out
    one = np.ones(o_n, np.int64)
    zero = np.zeros(o_n, np.int64)
    big = np.iinfo(np.int64)
    kernels._linear(_c(x), _c(w), zero, one, zero, zero, np.full(o_n, big.min),
                    np.full(o_n, big.max), False, np.arange(o_n, dtype=np.int64), bool(wide), out,
                    _chunks())  # fmt: skip
    return out


def run_simple(op: Op, xs: list[np.ndarray]) -> np.ndarray:
    """Ops without weights: Requantize, MaxPool, SumPool, Add, Flatten."""
    x = xs[0]
    if isinstance(op, Flatten):
        return x.reshape(x.shape[0], -1)
    if isinstance(op, Add):
        a, b = xs
        if a.shape != b.shape:
            raise ValueError(f"{op.module}: residual add of shapes {a.shape} and {b.shape}")
        out = np.empty(a.shape, op.dtype)
        kernels._add(_c(a).reshape(a.shape[0], -1), _c(b).reshape(a.shape[0], -1),
                     out.reshape(a.shape[0], -1))  # fmt: skip
        return out
    if isinstance(op, Requantize):
        rq = op.requant
        out = np.empty(x.shape, op.dtype)
        n, c = x.shape[:2]
        kernels._requant(_c(x).reshape(n, c, -1), *_rq_args(rq, None, c), out.reshape(n, c, -1))
        return out
    if isinstance(op, MaxPool | SumPool):
        p = op.pool
        if op.global_ if isinstance(op, SumPool) else False:
            kh, kw, sh, sw, ph, pw = x.shape[2], x.shape[3], 1, 1, 0, 0
        else:
            (kh, kw), (sh, sw), (ph, pw) = p.kernel, p.stride, p.padding
        ho = (x.shape[2] + 2 * ph - kh) // sh + 1
        wo = (x.shape[3] + 2 * pw - kw) // sw + 1
        out = np.empty((x.shape[0], x.shape[1], ho, wo), op.dtype)
        if isinstance(op, MaxPool):
            kernels._maxpool(_c(x), kh, kw, sh, sw, ph, pw, op.pool_dir, out)
        else:
            kernels._sumpool(_c(x), kh, kw, sh, sw, ph, pw, out)
        return out
    raise TypeError(f"unknown op {type(op).__name__}")


def run_op_reference(op: Op, xs: list[np.ndarray], w=None, bias=None) -> np.ndarray:
    """The same op computed by `simulator.reference` (numpy, int64), cast to op.dtype."""
    x = xs[0]
    if isinstance(op, Conv):
        y = reference.conv2d(
            x, w, bias, op.requant, op.stride, op.padding, op.groups, op.pool, op.pool_dir
        )
    elif isinstance(op, Linear):
        y = reference.linear(x, w, bias, op.requant)
    elif isinstance(op, Flatten):
        y = x.reshape(x.shape[0], -1)
    elif isinstance(op, Add):
        y = xs[0].astype(np.int64) + xs[1].astype(np.int64)
    elif isinstance(op, Requantize):
        y = reference.requant(x, None, op.requant)
    elif isinstance(op, MaxPool):
        y = reference.pool_codes(x, op.pool, op.pool_dir)
    elif isinstance(op, SumPool):
        pool = op.pool
        if op.global_:
            y = x.astype(np.int64).sum(axis=(2, 3), keepdims=True)
        else:
            y = reference.sum_pool(x, pool)
    else:
        raise TypeError(f"unknown op {type(op).__name__}")
    return y.astype(op.dtype)
