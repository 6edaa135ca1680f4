"""Run one IR op on the engine's backends (validation, buffers, channel subsets).

`run_op(op, inputs, net, chans=None)` returns the op's output for every image of
`inputs`; with `chans` (sorted output channels) only those channels of a Conv/Linear are
computed and the rest of the returned array is left as `base` (a copy of the clean output).

Backends of the Conv and Linear accumulators: siblings that compute the same integers.
  numba      `simulator.kernels`: fused dot products + requantization (+ pooling), any
             operand widths, int32 or int64 accumulators. The oracle (MCELSIM_GEMM=int).
  int8       `simulator.int8_backend`: oneDNN's exact int8 convolution and int8 x int8 ->
             int32 GEMM (VNNI), reached through `simulator.gemm_int8`; numba prepares the
             operands and requantizes.
  reference  `simulator.reference`, plain numpy int64 (`run_op_reference`, for tests).
Everything that is not an accumulator (requantization, pooling, add, faults, deltas) runs
on numba whatever the backend.

Which backend a layer uses is decided by `plan` from what the import knows (weight bits,
the input value's code range, fan-in), never from timing probes; the int8 backend then
runs only where its self-tests proved it exact on this CPU, and falls back to numba
wherever it cannot (the result is the same).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numba
import numpy as np

from simulator import int8_backend, kernels, reference
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


def _chunks() -> int:
    """Image chunks per parallel kernel call: a few per thread (load balance)."""
    return 4 * numba.get_num_threads()


def _wide(op) -> bool:
    """int64 accumulator for this layer (decided at import)."""
    return np.dtype(op.acc_dtype) == np.int64


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a)


def _rq_args(rq, bias: np.ndarray | None, c_n: int):
    """Requantization arguments of the kernels: int64 bias, mult, add, shift, lo, hi, sign."""
    b = np.zeros(c_n, np.int64) if bias is None else bias.astype(np.int64)
    return b, rq.mult, rq.add, rq.kernel_shift(), rq.lo, rq.hi, bool(rq.sign)


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
    rq = _rq_args(op.requant, bias, o_n)
    pooling = (*pk, *ps, *pp)
    if info is not None and int8_backend.conv(op, x, w, rq, chans, chan_ptr, pooling, pdir, info,
                                              out):  # fmt: skip
        return out
    kernels._conv2d(
        _c(x), _c(w).reshape(o_n, -1), *rq,
        op.stride[0], op.stride[1], op.padding[0], op.padding[1], op.groups,
        w.shape[2], w.shape[3], pk[0], pk[1], ps[0], ps[1], pp[0], pp[1], pdir,
        chan_ptr, chans, _wide(op), out, _chunks(),
    )  # fmt: skip
    return out


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
    args = _rq_args(op.requant, bias, o_n)
    if info is not None and int8_backend.linear(x, w, args, chans, info, out):
        return out
    if op.xnor:
        wb = wbits if wbits is not None else pack_signs(w)
        kernels._xnor_linear(pack_signs(x), wb, x.shape[1], *args, chans, out, _chunks())
    else:
        kernels._linear(_c(x), _c(w), *args, chans, _wide(op), out, _chunks())
    return out


def linear_acc(x: np.ndarray, w: np.ndarray, wide: bool = True,
               info: LayerInput | None = None) -> np.ndarray:  # fmt: skip
    """Exact accumulators x @ w.T as int64 (bias excluded): the int8 GEMM plus the zero
    correction where `info` allows it, else the linear kernel with an identity
    requantization (mult 1, add 0, shift 0, no clamp). wide=False accumulates in int32
    (only for layers whose import proved int32 cannot overflow)."""
    o_n = w.shape[0]
    if info is not None:
        acc = int8_backend.linear_acc(x, w, info)
        if acc is not None:
            return acc
    out = np.empty((x.shape[0], o_n), np.int64)
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
