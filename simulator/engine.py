"""Run one IR op with the numba kernels (validation, buffers, channel subsets).

`run_op(op, inputs, net, chans=None)` returns the op's output for every image of
`inputs`; with `chans` (sorted output channels) only those channels of a Conv/Linear are
computed and the rest of the returned array is left as `base` (a copy of the clean output).
The numpy twin is `run_op_reference`.

Conv and Linear accumulators come from one of two exact paths (`gemm_mode`): the numba
integer kernels, or float32 BLAS matrix products split along the fan-in so that every
float32 partial sum is an exactly representable integer (`_gemm_acc`). Both give the same
integers; which one is faster depends on the layer and the machine (`gemm_mode`).
"""

from __future__ import annotations

import os

import numba
import numpy as np

from simulator import kernels, reference
from simulator.ops import Add, Conv, Flatten, Linear, MaxPool, Op, Requantize, SumPool

GEMM: str | None = None
"""Accumulator path: "auto", "blas" or "int"; None reads $MCELSIM_GEMM (default "auto")."""
_GEMM_MODES = ("auto", "blas", "int")
_F32_EXACT = 2**24  # every integer of magnitude <= 2^24 is a float32
_BLAS_MIN_FAN_IN = 32  # auto: smaller fan-in stays on the numba kernel (conv1: 9)
_BLAS_MIN_KB = 16  # auto: fan-in blocks shorter than this stay on the numba kernel
_BLAS_MIN_OUT = 16  # auto: fewer output channels (fc2: 10) stay on the numba kernel
# Which layers auto sends to BLAS. Both off for now: on the shared 2-core AVX2 machine
# (benchmarks/results_engine.md) the float32 im2col (memory bound) plus sgemm was slower
# than `_conv2d` for VGG3's conv2, and sgemm for fc1, though faster in isolation (1.3-1.5x),
# left OpenBLAS's worker threads spinning after each call and slowed the numba layers
# around it more than it saved (whole pass 0.8x; 1.05x with OPENBLAS_NUM_THREADS=1).
_BLAS_AUTO_LINEAR = False
_BLAS_AUTO_CONV = False
_BLAS_BYTES = 64 * 2**20  # float32 columns (conv) or inputs (linear) per BLAS chunk


def gemm_mode() -> str:
    """The accumulator path in force: `GEMM` if set, else $MCELSIM_GEMM, else "auto".

    "int": numba integer kernels only. "blas": float32 BLAS wherever it is exact (not for
    XNOR layers, nor when a single product exceeds 2^24). "auto": BLAS where it pays
    (layers with fan-in >= 32, >= 16 outputs, fan-in blocks >= 16 long, of the kinds
    enabled by `_BLAS_AUTO_LINEAR` / `_BLAS_AUTO_CONV`; at present neither, see there),
    numba elsewhere. Results are identical.
    """
    mode = GEMM if GEMM is not None else os.environ.get("MCELSIM_GEMM", "auto")
    if mode not in _GEMM_MODES:
        raise ValueError(f"MCELSIM_GEMM / engine.GEMM must be one of {_GEMM_MODES}, got {mode!r}")
    return mode


def _absmax(a: np.ndarray) -> int:
    """max |a| as a Python int (np.abs would wrap -128 in int8)."""
    if a.size == 0:
        return 0
    return max(-int(a.min()), int(a.max()))


def _blas_block(x: np.ndarray, w: np.ndarray, k_n: int, xnor: bool = False,
                conv: bool = False) -> int:  # fmt: skip
    """Fan-in block length for the BLAS path, or 0 to use the numba kernel.

    Exactness: x and w hold integer codes; with kb * max|w| * max|x| <= 2^24, every product
    and every partial sum of at most kb products has magnitude <= 2^24, so it is an integer
    that float32 represents exactly. Each rounding step of a float32 sum (or fused
    multiply-add) of such values is then exact whatever order or blocking BLAS uses, and
    each block's result is the exact integer dot product. Blocks are added in integers.
    max|w| is of the codes actually passed (possibly corrupted), max|x| of these inputs.
    """
    mode = gemm_mode()
    if mode == "int" or xnor or k_n == 0:
        return 0
    prod = _absmax(w) * _absmax(x)
    kb = k_n if prod == 0 else min(k_n, _F32_EXACT // prod)
    if kb < 1:
        return 0
    if mode == "auto" and (
        k_n < _BLAS_MIN_FAN_IN
        or kb < _BLAS_MIN_KB
        or w.shape[0] < _BLAS_MIN_OUT
        or not (_BLAS_AUTO_CONV if conv else _BLAS_AUTO_LINEAR)
    ):
        return 0
    return kb


def _gemm_acc(a: np.ndarray, bt: np.ndarray, kb: int, dtype) -> np.ndarray:
    """Exact integer a @ bt [M, N] (dtype) from float32 a [M, K], bt [K, N] holding integer
    codes: one float32 BLAS product per fan-in block of length kb (exact, see
    `_blas_block`), blocks summed in `dtype` (int32 only where the layer's import proved
    the full sum fits). Called outside any prange: BLAS uses its own thread pool.
    """
    k_n = a.shape[1]
    acc = (a[:, :kb] @ bt[:kb]).astype(dtype)
    for k0 in range(kb, k_n, kb):
        acc += (a[:, k0 : k0 + kb] @ bt[k0 : k0 + kb]).astype(dtype)
    return acc


def _chunks() -> int:
    """Image chunks per parallel kernel call: a few per thread (load balance)."""
    return 4 * numba.get_num_threads()


def _wide(op) -> bool:
    """int64 accumulator for this layer (decided at import)."""
    return np.dtype(op.acc_dtype) == np.int64


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a)


def _rq_args(rq, bias: np.ndarray | None, c_n: int):
    b = np.zeros(c_n, np.int64) if bias is None else bias.astype(np.int64)
    return b, rq.mult, rq.add, rq.shift, rq.lo, rq.hi, bool(rq.sign)


def conv_out_shape(op: Conv, x_shape, w_shape) -> tuple[int, int, int, int]:
    ho, wo = op.out_hw(x_shape[2], x_shape[3], w_shape[2], w_shape[3])
    return (x_shape[0], w_shape[0], ho, wo)


def run_conv(op: Conv, x, w, bias, chans=None, base=None) -> np.ndarray:
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
    og = o_n // op.groups
    chan_ptr = np.searchsorted(chans, np.arange(op.groups + 1) * og).astype(np.int64)
    pool = op.pool
    pk, ps, pp = (pool.kernel, pool.stride, pool.padding) if pool else ((0, 0), (1, 1), (0, 0))
    pdir = op.pool_dir if op.pool_dir is not None else np.ones(o_n, np.int8)
    kb = _blas_block(x, w, int(np.prod(w.shape[1:])), conv=True)
    if kb:
        _conv_blas(op, x, w, bias, chans.astype(np.int64), chan_ptr, pk, ps, pp, pdir, kb, out)
        return out
    kernels._conv2d(
        _c(x), _c(w).reshape(o_n, -1), *_rq_args(op.requant, bias, o_n),
        op.stride[0], op.stride[1], op.padding[0], op.padding[1], op.groups,
        w.shape[2], w.shape[3], pk[0], pk[1], ps[0], ps[1], pp[0], pp[1], pdir,
        chan_ptr, _c(chans.astype(np.int64)), _wide(op), out, _chunks(),
    )  # fmt: skip
    return out


def _conv_blas(op: Conv, x, w, bias, chans, chan_ptr, pk, ps, pp, pdir, kb, out) -> None:
    """Conv by float32 im2col + exact blocked BLAS (`_gemm_acc`) + numba requant/pool.

    Images go in chunks whose float32 columns take <= _BLAS_BYTES; per chunk and group,
    acc [channels, images*positions] = w_g @ colt, then `_conv_requant`.
    """
    o_n, cg, kh, kw = w.shape
    k_n = cg * kh * kw
    n_img = x.shape[0]
    (sh, sw), (ph, pw) = op.stride, op.padding
    ho = (x.shape[2] + 2 * ph - kh) // sh + 1  # before pooling
    wo = (x.shape[3] + 2 * pw - kw) // sw + 1
    p_n = ho * wo
    step = max(1, min(n_img, _BLAS_BYTES // (4 * p_n * k_n)))
    x = _c(x)
    w2 = _c(w).reshape(o_n, k_n)
    rq = _rq_args(op.requant, bias, o_n)
    dtype = np.int64 if _wide(op) else np.int32
    groups = []
    for g in range(op.groups):
        sub = _c(chans[chan_ptr[g] : chan_ptr[g + 1]])
        if sub.size:
            groups.append((g, sub, w2[sub].astype(np.float32)))
    colt = np.empty((k_n, step * p_n), np.float32)
    for n0 in range(0, n_img, step):
        c = colt[:, : (min(n_img, n0 + step) - n0) * p_n]
        for g, sub, wf in groups:
            kernels._im2col_f32(x, n0, g * cg, cg, kh, kw, sh, sw, ph, pw, ho, wo, c)
            acc = _gemm_acc(wf, c, kb, dtype)
            kernels._conv_requant(acc, n0, ho, wo, pk[0], pk[1], ps[0], ps[1], pp[0], pp[1],
                                  pdir, *rq, sub, out)  # fmt: skip


def pack_signs(x: np.ndarray) -> np.ndarray:
    """uint64 [N, ceil(F/64)] sign bits of ±1 codes (bit = 1 for +1)."""
    out = np.zeros((x.shape[0], (x.shape[1] + 63) // 64), np.uint64)
    kernels._pack_signs(_c(x), out)
    return out


def run_linear(op: Linear, x, w, bias, chans=None, base=None, wbits=None) -> np.ndarray:
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"{op.module}: input shape {x.shape} does not match weights {w.shape}")
    o_n = w.shape[0]
    if chans is None:
        chans = np.arange(o_n, dtype=np.int64)
        out = np.empty((x.shape[0], o_n), op.dtype)
    else:
        out = base.copy() if base is not None else np.zeros((x.shape[0], o_n), op.dtype)
    args = _rq_args(op.requant, bias, o_n)
    chans = _c(chans.astype(np.int64))
    kb = _blas_block(x, w, x.shape[1], op.xnor)
    if kb:
        dtype = np.int64 if _wide(op) else np.int32
        wf = w[chans].astype(np.float32)
        for n0, acc in _linear_blas(x, wf, kb, dtype):
            kernels._linear_requant(acc, n0, *args, chans, out)
    elif op.xnor:
        wb = wbits if wbits is not None else pack_signs(w)
        kernels._xnor_linear(pack_signs(x), wb, x.shape[1], *args, chans, out, _chunks())
    else:
        kernels._linear(_c(x), _c(w), *args, chans, _wide(op), out, _chunks())
    return out


def _linear_blas(x: np.ndarray, wf: np.ndarray, kb: int, dtype):
    """Yield (n0, exact accumulators [rows, O]) of x @ wf.T over row chunks of x whose
    float32 copy takes <= _BLAS_BYTES (`_gemm_acc`)."""
    step = max(1, _BLAS_BYTES // (4 * max(1, x.shape[1])))
    for n0 in range(0, x.shape[0], step):
        xf = x[n0 : n0 + step].astype(np.float32)
        yield n0, _gemm_acc(xf, wf.T, kb, dtype)


def linear_acc(x: np.ndarray, w: np.ndarray, wide: bool = True) -> np.ndarray:
    """Exact accumulators x @ w.T as int64 (bias excluded): exact blocked BLAS
    (`_gemm_acc`) or the linear kernel with an identity requantization (mult 1, add 0,
    shift 0, no clamp). wide=False accumulates in int32 (only for layers whose import
    proved int32 cannot overflow)."""
    kb = _blas_block(x, w, x.shape[1])
    if kb:
        out = np.empty((x.shape[0], w.shape[0]), np.int64)
        wf = w.astype(np.float32)
        for n0, acc in _linear_blas(x, wf, kb, np.int64):
            out[n0 : n0 + acc.shape[0]] = acc
        return out
    o_n = w.shape[0]
    one = np.ones(o_n, np.int64)
    zero = np.zeros(o_n, np.int64)
    big = np.iinfo(np.int64)
    out = np.empty((x.shape[0], o_n), np.int64)
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
