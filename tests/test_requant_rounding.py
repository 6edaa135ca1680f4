"""Requantization ties: half up (toward +inf) or half to even, in every backend."""

from __future__ import annotations

import numpy as np
import pytest
from naive import kernels as naive

from simulator import engine, kernels, reference
from simulator.ops import Conv, Linear, acc_dtype_for, make_requant


def _ties_requant(c_n: int, rounding: str, bound: int = 10**5):
    """Multipliers 1/2, 1/4, -3/8 ... and offsets on the half grid: many exact ties."""
    alpha = np.array([0.5, 0.25, -0.375, 1.5, 0.125, -0.5, 0.75, 2.0][:c_n])
    beta = np.array([0.0, 0.5, -0.25, 0.0, 0.375, 1.5, -0.5, 0.0][:c_n])
    inf = np.full(c_n, np.inf)
    return make_requant(alpha, beta, -inf, inf, 1.0, -(2**20), 2**20, bound, rounding=rounding)


@pytest.mark.parametrize("rounding", ["half-up", "half-even"])
def test_every_backend_rounds_ties_as_asked(rounding):
    rq = _ties_requant(8, rounding)
    assert rq.half_even == (rounding == "half-even")
    acc = np.arange(-300, 301).reshape(1, 1, -1).repeat(8, axis=1)
    mult, add, shift = (a.reshape(1, -1, 1) for a in (rq.mult, rq.add, rq.shift))
    # the exact real values m * acc + b (powers of two: no rounding in float64)
    y = (mult * acc + add - (1 << (shift - 1))) / 2.0**shift
    want = np.rint(y) if rounding == "half-even" else np.floor(y + 0.5)
    ties = np.mean(np.abs(y - np.floor(y)) == 0.5)
    assert ties > 0.2  # the case exercises ties
    np.testing.assert_array_equal(reference.requant(acc, None, rq), want)
    np.testing.assert_array_equal(naive.requant(acc, None, rq), want)
    # numba: per value (`_requant`), per row (`_requant_codes`), gathered channels
    out = np.empty(acc.shape, np.int64)
    kernels._requant(acc, *engine._rq_args(rq, None, 8), out)
    np.testing.assert_array_equal(out, want)
    b, mult, add, shift, lo, hi, sign = engine._rq_args(rq, None, 8)
    for c in range(8):
        row = np.empty(acc.shape[2], np.int64)
        kernels._requant_codes(acc[0, c].astype(np.int64), b[c], mult[c], add[c], shift[c],
                               lo[c], hi[c], sign, row)  # fmt: skip
        np.testing.assert_array_equal(row, want[0, c])
    for k in range(acc.shape[2]):
        row = np.empty(8, np.int64)
        kernels._requant_channels(acc[0, :, k].astype(np.int64), b, mult, add, shift, lo, hi,
                                  sign, row)  # fmt: skip
        np.testing.assert_array_equal(row, want[0, :, k])


def test_half_even_differs_from_half_up_only_on_ties():
    acc = np.arange(-300, 301).reshape(1, 1, -1).repeat(8, axis=1)
    up = reference.requant(acc, None, _ties_requant(8, "half-up"))
    even = reference.requant(acc, None, _ties_requant(8, "half-even"))
    assert np.all((up - even == 0) | (up - even == 1))
    assert np.all(even[up != even] % 2 == 0)


@pytest.mark.parametrize("rounding", ["half-up", "half-even"])
def test_layers_with_ties_agree_across_engines(rounding):
    """Conv and linear (numba, int8 GEMM where it applies, numpy) and the naive loops."""
    rng = np.random.default_rng(3)
    x = rng.integers(-127, 128, (4, 3, 6, 6)).astype(np.int8)
    w = rng.integers(-7, 8, (8, 3, 3, 3)).astype(np.int8)
    rq = _ties_requant(8, rounding, bound=8 * 127 * 27)
    op = Conv((0,), -(2**20), 2**20, 1.0, "c", weight="w", padding=(1, 1), requant=rq,
              acc_dtype=acc_dtype_for(8, 127, 27))  # fmt: skip
    want = naive.requant(naive.conv2d_acc(x, w, (1, 1), (1, 1), 1), None, rq)
    np.testing.assert_array_equal(engine.run_conv(op, x, w, None), want)
    np.testing.assert_array_equal(engine.run_op_reference(op, [x], w, None), want)
    xf = x.reshape(4, -1)
    wf = rng.integers(-7, 8, (8, xf.shape[1])).astype(np.int8)
    lin = Linear((0,), -(2**20), 2**20, 1.0, "l", weight="w", requant=_ties_requant(
        8, rounding, bound=8 * 127 * xf.shape[1]), acc_dtype=acc_dtype_for(8, 127, xf.shape[1]))
    want = naive.requant(naive.linear_acc(xf, wf), None, lin.requant)
    np.testing.assert_array_equal(engine.run_linear(lin, xf, wf, None), want)
