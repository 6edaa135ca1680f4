"""Run one IR op with the numba kernels (validation, buffers, channel subsets).

`run_op(op, inputs, net, chans=None)` returns the op's output for every image of
`inputs`; with `chans` (sorted output channels) only those channels of a Conv/Linear are
computed and the rest of the returned array is left as `base` (a copy of the clean output).
The numpy twin is `run_op_reference`.
"""

from __future__ import annotations

import numba
import numpy as np

from simulator import kernels, reference
from simulator.ops import Add, Conv, Flatten, Linear, MaxPool, Op, Requantize, SumPool


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
    kernels._conv2d(
        _c(x), _c(w).reshape(o_n, -1), *_rq_args(op.requant, bias, o_n),
        op.stride[0], op.stride[1], op.padding[0], op.padding[1], op.groups,
        w.shape[2], w.shape[3], pk[0], pk[1], ps[0], ps[1], pp[0], pp[1], pdir,
        chan_ptr, _c(chans.astype(np.int64)), _wide(op), out, _chunks(),
    )  # fmt: skip
    return out


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
    if op.xnor:
        wb = wbits if wbits is not None else pack_signs(w)
        kernels._xnor_linear(pack_signs(x), wb, x.shape[1], *args, chans, out, _chunks())
    else:
        kernels._linear(_c(x), _c(w), *args, chans, _wide(op), out, _chunks())
    return out


def linear_acc(x: np.ndarray, w: np.ndarray, wide: bool = True) -> np.ndarray:
    """Exact accumulators x @ w.T as int64 (bias excluded), via the linear kernel with an
    identity requantization (mult 1, add 0, shift 0, no clamp). wide=False accumulates in
    int32 (only for layers whose import proved int32 cannot overflow)."""
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
