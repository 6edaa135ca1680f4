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

__all__ = ["available", "matmul", "proven", "set_threads", "single_threaded"]

log = logging.getLogger(__name__)

_state = {"broken": False}


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


def _switch_off(reason: str) -> None:
    if not _state["broken"]:
        _state["broken"] = True
        warnings.warn(
            f"int8 GEMM backend off for this process ({reason}); using the numba kernels "
            "(same results, slower)",
            RuntimeWarning,
            stacklevel=3,
        )


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
        _switch_off(f"torch._int_mm rejected {a.shape} x {b.shape}: {exc}")
        return None
    return out.numpy()


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
