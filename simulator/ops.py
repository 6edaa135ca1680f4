"""The integer network's IR: one frozen dataclass per op, and the requantization builder.

A network is a list of ops; op i reads earlier values by index and produces value i + 1
(value 0 is the quantized input). Every value is an integer tensor (NCHW or [N, features])
whose real meaning is `value * scale` (one positive float per value, for information and
for the next layer's requantization) and whose worst-case range [lo, hi] is known at import.

Requantization (see `Requant`): a per-channel monotone map from an integer accumulator to
an output code, with an integer multiplier, an additive constant and a right shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
# Rounding of requantization ties: half up (toward +inf, gemmlowp) or half to even
# (ONNX QuantizeLinear, torch.round, Brevitas).
ROUNDING = ("half-up", "half-even")
# Budgets that keep (acc + bias) * mult + add inside int64 (see `make_requant`).
_PRODUCT_BITS = 60


def code_dtype(lo: int, hi: int) -> np.dtype:
    """Narrowest signed dtype (int8, int16, int32, int64) holding [lo, hi]."""
    for dt in (np.int8, np.int16, np.int32, np.int64):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise ValueError(f"range [{lo}, {hi}] does not fit in int64")


def weight_range(bits: int) -> tuple[int, int]:
    """Range a stored b-bit weight code can take (after bit errors): two's complement.

    1 bit: {-1, +1}; b >= 2: [-2^(b-1), 2^(b-1) - 1] (training uses only the narrow
    symmetric range, but a flipped bit can create -2^(b-1)).
    """
    if bits == 1:
        return -1, 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def acc_dtype_for(wmax: int, xmax: int, fan_in: int) -> np.dtype:
    """Accumulator dtype: int32 if wmax * xmax * fan_in < 2^31, else int64.

    wmax = max |weight code| over the whole b-bit range (2^(b-1)), xmax = max |input
    code| (worst case over the value's range), fan_in = inputs per output (C/groups*kh*kw
    or features). This is the worst case over any corrupted weights, decided at import.
    """
    bound = int(wmax) * int(xmax) * int(fan_in)
    if bound >= 2**62:
        raise ValueError(f"accumulator bound {bound} exceeds int64 budget")
    return np.dtype(np.int32) if bound <= INT32_MAX else np.dtype(np.int64)


@dataclass(frozen=True, eq=False)
class Requant:
    """Per-channel requantization (all int64 arrays of length C).

    code[c] = clamp(((acc + bias[c]) * mult[c] + add[c]) >> shift[c], lo[c], hi[c])
    `add` contains the rounding half 2^(shift-1): rounding is half up (toward +inf),
    the integer version of round(m * acc + b) with m = mult / 2^shift. half_even=True
    rounds exact ties to the even code instead (ONNX QuantizeLinear, torch.round, Brevitas):
    a tie is a sum whose low `shift` bits are all zero after adding the half; the kernels
    read the flag as bit 6 of `kernel_shift()`.
    sign=True (1-bit activations): code = +1 if (acc + bias) * mult + add >= 0 else -1.
    The bias (int32, at accumulator scale) belongs to the layer and is passed separately.
    """

    mult: np.ndarray
    add: np.ndarray
    shift: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    sign: bool = False
    half_even: bool = False

    def kernel_shift(self) -> np.ndarray:
        """shift with bit 6 set where ties round to even (the kernels' argument, int64)."""
        if not self.half_even:
            return self.shift
        return self.shift | np.where(self.shift > 0, 64, 0).astype(np.int64)

    @property
    def channels(self) -> int:
        return int(self.mult.shape[0])

    def out_range(self) -> tuple[int, int]:
        if self.sign:
            return -1, 1
        return int(self.lo.min()), int(self.hi.max())

    def direction(self) -> np.ndarray:
        """+1 where the map is non-decreasing in acc, -1 where it decreases (int8 [C])."""
        return np.where(self.mult < 0, -1, 1).astype(np.int8)


def make_requant(
    alpha: np.ndarray,
    beta: np.ndarray,
    clamp_lo: np.ndarray,
    clamp_hi: np.ndarray,
    out_scale: float,
    qmin: int,
    qmax: int,
    acc_bound: int,
    sign: bool = False,
    rounding: str = "half-up",
) -> Requant:
    """Integer requantization of y = clamp(alpha*acc + beta, clamp_lo, clamp_hi) (float64).

    Output code = clamp(round(y / out_scale), qmin, qmax) (or sign(y) when `sign`).
    acc_bound bounds |acc + bias|. The shift is the largest with |acc*mult| <= 2^60 and
    max(|qmin|, |qmax|) * 2^shift <= 2^60, so the int64 sum never overflows; a channel
    whose output is constant over |acc| <= acc_bound gets mult = 0. rounding: "half-up"
    (toward +inf) or "half-even" (see ROUNDING).
    """
    if rounding not in ROUNDING:
        raise ValueError(f"rounding must be one of {ROUNDING}, got {rounding!r}")
    alpha = np.asarray(alpha, np.float64)
    beta = np.asarray(beta, np.float64)
    c_n = alpha.shape[0]
    mult = np.zeros(c_n, np.int64)
    add = np.zeros(c_n, np.int64)
    shift = np.zeros(c_n, np.int64)
    lo = np.full(c_n, qmin, np.int64)
    hi = np.full(c_n, qmax, np.int64)
    big = max(abs(qmin), abs(qmax)) + 1
    for c in range(c_n):
        a, b = float(alpha[c]), float(beta[c])
        cl, ch = float(clamp_lo[c]), float(clamp_hi[c])
        if sign:
            mult[c], add[c] = _sign_threshold(a, b, cl, ch, acc_bound)
            continue
        # clamp(round(clamp(z, L, H) / s)) == clamp(round(z / s), round(L/s), round(H/s))
        lo[c] = _clip_round(cl / out_scale, qmin, qmax)
        hi[c] = _clip_round(ch / out_scale, qmin, qmax)
        m, bb = a / out_scale, b / out_scale
        if m == 0.0 or abs(bb) - abs(m) * acc_bound > big or not math.isfinite(m * acc_bound):
            const = bb if m == 0.0 else math.copysign(float(big), bb)
            mult[c], add[c], shift[c] = 0, min(max(_round_half_even(const), -big), big), 0
            continue
        sh = math.floor(_PRODUCT_BITS - math.log2(abs(m) * max(acc_bound, 1))) - 1
        sh = min(sh, _PRODUCT_BITS - math.ceil(math.log2(big + abs(bb) + 1)) - 1, 62)
        sh = max(sh, 0)
        mult[c] = round(m * 2.0**sh)
        half = (1 << (sh - 1)) if sh > 0 else 0
        add[c] = round(bb * 2.0**sh) + half
        shift[c] = sh
    return Requant(mult, add, shift, lo, hi, sign, half_even=rounding == "half-even")


def _round_half_even(v: float) -> int:
    return int(np.rint(v))


def _clip_round(v: float, qmin: int, qmax: int) -> int:
    if math.isnan(v):
        raise ValueError("NaN clamp bound")
    if v <= qmin:
        return qmin
    if v >= qmax:
        return qmax
    return min(max(_round_half_even(v), qmin), qmax)


def _sign_threshold(a: float, b: float, cl: float, ch: float, acc_bound: int) -> tuple[int, int]:
    """(mult, add) with +1 iff acc*mult + add >= 0, for sign(clamp(a*acc + b, cl, ch))."""
    if cl >= 0:
        return 0, 0  # always +1
    if ch < 0:
        return 0, -1  # always -1
    if a == 0.0:
        return (0, 0) if b >= 0 else (0, -1)
    t = -b / a
    if a > 0:  # acc >= t  <=>  acc >= ceil(t)
        thr = min(max(math.ceil(t), -acc_bound - 1), acc_bound + 1)
        return 1, -thr
    thr = min(max(math.floor(t), -acc_bound - 1), acc_bound + 1)  # acc <= floor(t)
    return -1, thr


@dataclass(frozen=True, eq=False)
class Pool:
    """Pooling window: kernel, stride, padding (height, width)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    @property
    def size(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        return (
            (h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1,
            (w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1,
        )


@dataclass(frozen=True, eq=False)
class Op:
    """Base: `src` value indices, output range [lo, hi], output real scale, source module."""

    src: tuple[int, ...]
    lo: int
    hi: int
    scale: float
    module: str

    @property
    def dtype(self) -> np.dtype:
        return code_dtype(self.lo, self.hi)


@dataclass(frozen=True, eq=False)
class Conv(Op):
    """Conv2d on codes + requantization (+ fused max/min pooling of the codes)."""

    weight: str = ""
    bias: str | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    requant: Requant | None = None
    acc_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.int32))
    pool: Pool | None = None
    pool_dir: np.ndarray | None = None  # int8 [O], +1 max / -1 min

    def out_hw(self, h: int, w: int, kh: int, kw: int) -> tuple[int, int]:
        ho = (h + 2 * self.padding[0] - kh) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - kw) // self.stride[1] + 1
        if self.pool is not None:
            return self.pool.out_hw(ho, wo)
        return ho, wo


@dataclass(frozen=True, eq=False)
class Linear(Op):
    """Fully connected layer on [N, F] codes + requantization. `xnor`: both operands ±1."""

    weight: str = ""
    bias: str | None = None
    requant: Requant | None = None
    acc_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.int32))
    xnor: bool = False


@dataclass(frozen=True, eq=False)
class Requantize(Op):
    """Standalone per-channel requantization of an integer value (after add / sum-pool)."""

    requant: Requant | None = None


@dataclass(frozen=True, eq=False)
class MaxPool(Op):
    """Max pooling of codes (min for channels with pool_dir = -1)."""

    pool: Pool | None = None
    pool_dir: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class SumPool(Op):
    """Average pooling before the division: window sums; the 1/size goes into `scale`."""

    pool: Pool | None = None
    global_: bool = False


@dataclass(frozen=True, eq=False)
class Add(Op):
    """Residual add of two codes with the same scale (exact integer sum)."""


@dataclass(frozen=True, eq=False)
class Flatten(Op):
    """[N, C, H, W] -> [N, C*H*W] (C-order, as torch.flatten(x, 1))."""


OP_NAMES = {
    Conv: "conv2d",
    Linear: "linear",
    Requantize: "requantize",
    MaxPool: "maxpool",
    SumPool: "sumpool",
    Add: "add",
    Flatten: "flatten",
}
