"""Exact int8 x int8 -> int32 matrix products on the CPU's dot-product units (oneDNN).

This is the one module of `simulator/` besides the PyTorch importer that imports torch: the
product is `torch._int_mm`, which reaches oneDNN's int8 GEMM (AVX-512 VNNI / AVX-VNNI
`vpdpbusd`, or AMX, where the CPU has them). numba cannot emit those instructions. torch
is imported on first use, so `import simulator` stays torch-free.

Exactness is proved, not assumed. Without VNNI, int8 GEMM libraries build u8 x s8 products
from `vpmaddubsw`, which saturates pairs of products to int16: wide operands would silently
give wrong sums. `proven(w_lo, w_hi, x_lo, x_hi, fan_in)` therefore runs a self-test on the
running CPU before a layer may use this path: worst-case operands of those ranges (every
code at its extremes, in uniform, alternating and random sign patterns, at the layer's full
fan-in) multiplied here and in int64 numpy; any difference and the layer stays on the numba
kernels. The verdict is cached per operand ranges and fan-in.

If torch or `torch._int_mm` is missing, or the call rejects a shape, `matmul` returns None
once with one warning and the path is switched off for the process: the caller falls back
to numba, never to a wrong answer.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings

import numpy as np

__all__ = ["available", "conv2d", "has_conv", "matmul", "pack_conv", "proven", "proven_conv",
           "set_threads", "single_threaded"]

log = logging.getLogger(__name__)

_state = {"broken": False, "conv_broken": False}


@functools.cache
def _torch():
    """The torch module, or None when it (or `torch._int_mm`) is not installed."""
    try:
        import torch
    except ImportError:
        return None
    if not hasattr(torch, "_int_mm"):
        return None
    # Weight codes are read-only arrays; torch warns on wrapping them though `_int_mm` only
    # reads its operands.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    return torch


def available() -> bool:
    """Whether the int8 GEMM can be used in this process (torch present, not switched off)."""
    return not _state["broken"] and _torch() is not None


# what each switch turns off, and what the callers use instead
_PATHS = {
    "broken": ("int8 GEMM backend", "the numba kernels (same results, slower)"),
    "conv_broken": ("oneDNN int8 convolution", "int8 patches and the int8 GEMM"),
}


def _switch_off(path: str, reason: str) -> None:
    """Turn `path` (a key of _PATHS) off for this process, with one warning."""
    if not _state[path]:
        _state[path] = True
        what, fallback = _PATHS[path]
        warnings.warn(f"{what} off for this process ({reason}); using {fallback}",
                      RuntimeWarning, stacklevel=3)  # fmt: skip


def set_threads(n: int) -> None:
    """Threads of torch's intra-op pool (oneDNN); no-op without torch."""
    torch = _torch()
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(max(1, int(n)))


@contextlib.contextmanager
def single_threaded():
    """torch's intra-op pool at one thread inside the block (restored after): the engine
    runs its GEMMs on its own threads, one call per thread, and a second pool working
    under them would oversubscribe the cores."""
    torch = _torch()
    if torch is None or torch.get_num_threads() == 1:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """a [M, K] int8 @ b [K, N] int8 -> int32 [M, N], exact, or None if unavailable.

    Every partial sum must fit int32 (the caller checks K * max|a| * max|b| < 2^31); the
    operand ranges must have passed `proven`. b may be a transposed view (no copy made).
    """
    torch = _torch()
    if torch is None or _state["broken"]:
        return None
    # A dimension of size 1 leaves numpy free to report any stride for it, and oneDNN then
    # misreads the operand's leading dimension (seen: wrong sums for a [1, N] view with
    # strides (1, 1)). A fresh copy has the standard strides.
    if 1 in a.shape:
        a = np.array(a, order="C")
    if 1 in b.shape:
        b = np.array(b, order="C")
    try:
        out = torch._int_mm(torch.from_numpy(a), torch.from_numpy(b))
    except (RuntimeError, TypeError, ValueError) as exc:  # a build that rejects the shape
        _switch_off("broken", f"torch._int_mm rejected {a.shape} x {b.shape}: {exc}")
        return None
    return out.numpy()


F32_EXACT = 2**24  # |acc| up to this converts to float32 exactly


def has_conv() -> bool:
    """Whether oneDNN's quantized convolution (`torch.ops.onednn.qconv2d_pointwise`) is
    reachable in this torch build."""
    torch = _torch()
    if torch is None or _state["broken"] or _state["conv_broken"]:
        return False
    ops = getattr(torch.ops, "onednn", None)
    return ops is not None and hasattr(ops, "qconv2d_pointwise") and hasattr(ops, "qconv_prepack")


def pack_conv(w: np.ndarray, zp: int, stride, padding, groups: int):
    """oneDNN's packed form of int8 weights [O, C/groups, kh, kw] for `conv2d`, or None."""
    torch = _torch()
    try:
        o_n = w.shape[0]
        ones = torch.ones(o_n, dtype=torch.float32)
        packed = torch.ops.onednn.qconv_prepack(
            torch.from_numpy(np.ascontiguousarray(w)), ones, 1.0, int(zp), list(stride),
            list(padding), [1, 1], int(groups), None,
        )  # fmt: skip
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        _switch_off("conv_broken", str(exc))
        return None
    return (packed, ones, torch.zeros(o_n, dtype=torch.int64), list(stride), list(padding),
            int(groups), int(zp))  # fmt: skip


def conv2d(x_u8: np.ndarray, packed) -> np.ndarray | None:
    """Exact accumulators of a convolution of uint8 codes x_u8 [N, C, H, W] (real value
    x_u8 - zp) with packed int8 weights: float32 [N, Ho, Wo, O] (channels last), each the
    int32 accumulator converted to float32, exact while |acc| <= 2^24 (the caller checks
    the bound; every scale is 1). None if oneDNN refuses (then the caller falls back)."""
    torch = _torch()
    w, ones, zeros, stride, padding, groups, zp = packed
    try:
        out = torch.ops.onednn.qconv2d_pointwise(
            torch.from_numpy(x_u8), 1.0, zp, w, ones, zeros, None, stride, padding, [1, 1],
            groups, 1.0, 0, torch.float32, "none", [], "",
        )  # fmt: skip
    except (RuntimeError, TypeError, ValueError) as exc:
        _switch_off("conv_broken", str(exc))
        return None
    return out.permute(0, 2, 3, 1).numpy()  # NHWC memory, as an [N, Ho, Wo, O] array


@functools.cache
def proven_conv(w_lo: int, w_hi: int, x_lo: int, x_hi: int, zp: int, cg: int, kh: int,
                kw: int, stride: tuple, padding: tuple, groups: int,
                hw: tuple) -> bool:  # fmt: skip
    """Whether `conv2d` is exact on this CPU for one layer's geometry (cg x kh x kw windows,
    stride, padding, groups, input height and width hw), weights in [w_lo, w_hi] and codes
    in [x_lo, x_hi] fed as x + zp in uint8: worst-case operands on a few images of that
    size (every window, borders included) against an int64 numpy convolution. Seen
    failing: oneDNN 3.12 with groups = 2 and padding = kernel height gives wrong sums."""
    if not has_conv():
        return False
    k = cg * kh * kw
    rng = np.random.default_rng([w_lo + 128, w_hi + 128, x_lo + 256, x_hi + 256, k, groups])
    h, w_ = hw
    n_img, o_g = 4, 4  # images; output channels per group
    x = _worst_cases(x_lo, x_hi, groups * cg * h * w_, n_img, rng).astype(np.int64)
    x = x.reshape(n_img, groups * cg, h, w_)
    w = _worst_cases(w_lo, w_hi, k, groups * o_g, rng).reshape(groups * o_g, cg, kh, kw)
    packed = pack_conv(w, zp, stride, padding, groups)
    if packed is None:
        return False
    got = conv2d((x + zp).astype(np.uint8), packed)
    if got is None:
        return False
    ok = bool(np.array_equal(got.astype(np.int64), _conv_nhwc(x, w, stride, padding, groups)))
    if not ok:
        log.info("oneDNN int8 convolution not exact on this CPU for weights [%d, %d], "
                 "inputs [%d, %d], window %dx%dx%d, stride %s, padding %s, groups %d: int8 "
                 "patches + GEMM used instead", w_lo, w_hi, x_lo, x_hi, cg, kh, kw, stride,
                 padding, groups)  # fmt: skip
    return ok


def _conv_nhwc(x: np.ndarray, w: np.ndarray, stride, padding, groups: int) -> np.ndarray:
    """Plain int64 convolution (zero padding), channels last: the self-test's reference."""
    n_img, c_n, h, w_ = x.shape
    o_n, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    ho = (h + 2 * padding[0] - kh) // stride[0] + 1
    wo = (w_ + 2 * padding[1] - kw) // stride[1] + 1
    og = o_n // groups
    out = np.empty((n_img, ho, wo, o_n), np.int64)
    for g in range(groups):
        wg = w[g * og : (g + 1) * og].reshape(og, -1).T.astype(np.int64)
        for i in range(ho):
            for j in range(wo):
                y0, x0 = i * stride[0], j * stride[1]
                win = xp[:, g * cg : (g + 1) * cg, y0 : y0 + kh, x0 : x0 + kw]
                out[:, i, j, g * og : (g + 1) * og] = win.reshape(n_img, -1) @ wg
    return out


def _worst_cases(lo: int, hi: int, k: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """int8 [rows, k] operands with every code at an extreme of [lo, hi]."""
    pats = [
        np.full(k, lo), np.full(k, hi),                        # uniform extremes
        np.where(np.arange(k) % 2 == 0, lo, hi),               # alternating
        np.where(np.arange(k) % 2 == 0, hi, lo),
        np.where(np.arange(k) % 4 < 2, lo, hi),                # pairs of equal signs
    ]  # fmt: skip
    while len(pats) < rows:
        pats.append(np.where(rng.random(k) < 0.5, lo, hi))
    return np.stack(pats[:rows]).astype(np.int8)


@functools.cache
def proven(w_lo: int, w_hi: int, x_lo: int, x_hi: int, fan_in: int) -> bool:
    """Whether `matmul` is exact on this CPU for weights in [w_lo, w_hi], inputs in
    [x_lo, x_hi] (both within int8) and `fan_in` products per output (self-test, cached)."""
    if not available():
        return False
    rng = np.random.default_rng([w_lo + 128, w_hi + 128, x_lo + 128, x_hi + 128, fan_in])
    a = _worst_cases(x_lo, x_hi, fan_in, 32, rng)  # inputs: rows of A
    b = _worst_cases(w_lo, w_hi, fan_in, 24, rng)  # weights: columns of B
    got = matmul(a, b.T)
    if got is None:
        return False
    want = a.astype(np.int64) @ b.T.astype(np.int64)
    ok = bool(np.array_equal(got, want))
    if not ok:
        log.warning(
            "int8 GEMM not exact on this CPU for weights [%d, %d], inputs [%d, %d], fan-in %d "
            "(saturating 16-bit intermediate sums?): numba kernels used for such layers",
            w_lo, w_hi, x_lo, x_hi, fan_in,
        )  # fmt: skip
    return ok
