"""Op-level bit-exactness: numba kernels == numpy reference == naive loops (tests/naive)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import kernels as naive

from simulator import engine, reference
from simulator.ops import (
    INT32_MAX,
    INT32_MIN,
    Add,
    Conv,
    Linear,
    MaxPool,
    Pool,
    Requantize,
    SumPool,
    acc_dtype_for,
    make_requant,
    weight_range,
)

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)

# activation code ranges: int8 signed, 8-bit unsigned (int16 storage), 16-bit, sign
ACT_RANGES = [(-127, 127), (0, 255), (-32767, 32767), (-1, 1), (-7, 7)]


def _codes(rng, lo, hi, shape):
    if (lo, hi) == (-1, 1):
        return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)
    dt = np.int8 if lo >= -128 and hi <= 127 else np.int16
    return rng.integers(lo, hi + 1, size=shape).astype(dt)


def _weights(rng, bits, shape):
    lo, hi = weight_range(bits)
    if bits == 1:
        return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)
    return rng.integers(lo, hi + 1, size=shape).astype(np.int8)


def _requant(rng, c_n, acc_bound, qmin, qmax, sign=False, scale=1e-3):
    alpha = rng.uniform(0.2, 2.0, c_n) * scale * np.where(rng.random(c_n) < 0.3, -1, 1)
    alpha[rng.random(c_n) < 0.1] = 0.0
    beta = rng.normal(0, 0.5, c_n)
    lo = np.where(rng.random(c_n) < 0.5, -np.inf, rng.uniform(-1, 0, c_n))
    hi = np.where(rng.random(c_n) < 0.5, np.inf, rng.uniform(0, 1, c_n))
    return make_requant(alpha, beta, lo, hi, 1 / 64, qmin, qmax, acc_bound, sign)


@st.composite
def conv_case(draw):
    seed = draw(st.integers(0, 2**31))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.integers(1, 3))
    og = draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    h, w = draw(st.integers(kh, 8)), draw(st.integers(kw, 8))
    bits = draw(st.sampled_from([1, 2, 4, 8]))
    act = draw(st.sampled_from(ACT_RANGES))
    pool = draw(st.booleans())
    sign = draw(st.booleans()) and not pool
    n = draw(st.integers(1, 3))
    return seed, groups, cg, og, (kh, kw), (sh, sw), (ph, pw), (h, w), bits, act, pool, sign, n


@SETTINGS
@given(conv_case())
def test_conv2d_matches_reference_and_naive(case):
    seed, groups, cg, og, k, s, p, hw, bits, act, pool, sign, n = case
    rng = np.random.default_rng(seed)
    x = _codes(rng, act[0], act[1], (n, groups * cg, *hw))
    w = _weights(rng, bits, (groups * og, cg, *k))
    bias = rng.integers(-1000, 1000, groups * og).astype(np.int32)
    fan_in = cg * k[0] * k[1]
    wmax = 2 ** (bits - 1) if bits > 1 else 1
    xmax = max(abs(act[0]), abs(act[1]))
    rq = _requant(rng, groups * og, wmax * xmax * fan_in + 2**31, -127, 127, sign)
    ho = (hw[0] + 2 * p[0] - k[0]) // s[0] + 1
    wo = (hw[1] + 2 * p[1] - k[1]) // s[1] + 1
    the_pool = Pool((2, 2), (2, 2), (0, 0)) if pool and ho >= 2 and wo >= 2 else None
    pdir = np.where(rng.random(groups * og) < 0.5, -1, 1).astype(np.int8)
    op = Conv((0,), -127, 127, 1.0, "conv", weight="w", stride=s, padding=p, groups=groups,
              requant=rq, acc_dtype=acc_dtype_for(wmax, xmax, fan_in), pool=the_pool,
              pool_dir=pdir if the_pool else None)  # fmt: skip
    fast = engine.run_conv(op, x, w, bias)
    ref = engine.run_op_reference(op, [x], w, bias)
    slow = naive.requant(naive.conv2d_acc(x, w, s, p, groups), bias, rq)
    if the_pool is not None:
        slow = naive.pool(slow, (2, 2), (2, 2), (0, 0), pdir)
    np.testing.assert_array_equal(fast, ref)
    np.testing.assert_array_equal(fast, slow)
    # a subset of channels recomputes exactly those channels
    chans = np.sort(rng.choice(groups * og, size=max(1, og // 2), replace=False))
    base = np.zeros_like(fast)
    part = engine.run_conv(op, x, w, bias, chans=chans, base=base)
    np.testing.assert_array_equal(part[:, chans], fast[:, chans])
    others = np.setdiff1d(np.arange(groups * og), chans)
    assert not part[:, others].any()


@SETTINGS
@given(
    st.integers(0, 2**31),
    st.integers(1, 9),
    st.integers(1, 150),
    st.integers(1, 7),
    st.sampled_from([1, 2, 4, 8]),
    st.sampled_from(ACT_RANGES),
)
def test_linear_matches_reference_and_naive(seed, n, f, o, bits, act):
    rng = np.random.default_rng(seed)
    x = _codes(rng, act[0], act[1], (n, f))
    w = _weights(rng, bits, (o, f))
    bias = rng.integers(-(2**31), 2**31 - 1, o).astype(np.int32)
    wmax = 2 ** (bits - 1) if bits > 1 else 1
    xmax = max(abs(act[0]), abs(act[1]))
    rq = _requant(rng, o, wmax * xmax * f + 2**31, INT32_MIN, INT32_MAX, scale=1.0)
    xnor = bits == 1 and act == (-1, 1)
    op = Linear((0,), INT32_MIN, INT32_MAX, 1.0, "fc", weight="w", requant=rq,
                acc_dtype=acc_dtype_for(wmax, xmax, f), xnor=xnor)  # fmt: skip
    fast = engine.run_linear(op, x, w, bias)
    ref = engine.run_op_reference(op, [x], w, bias)
    acc = naive.xnor_popcount_acc(x, w) if xnor else naive.linear_acc(x, w)
    np.testing.assert_array_equal(naive.linear_acc(x, w), acc)
    np.testing.assert_array_equal(fast, ref)
    np.testing.assert_array_equal(fast, naive.requant(acc, bias, rq))


def test_int64_accumulator_is_chosen_and_exact():
    """16-bit codes x 8-bit weights x 4096 inputs overflow int32: int64 is chosen, exact."""
    f = 4096
    assert acc_dtype_for(128, 32767, f) == np.int64
    assert acc_dtype_for(128, 127, 9 * 64) == np.int32
    assert acc_dtype_for(128, 127, 131072) == np.int32  # 2^7 * 127 * 2^17 < 2^31
    assert acc_dtype_for(128, 128, 131072) == np.int64  # = 2^31
    x = np.full((2, f), 32767, np.int16)
    x[1] = -32767
    w = np.full((3, f), -128, np.int8)
    rq = make_requant(np.ones(3), np.zeros(3), np.full(3, -np.inf), np.full(3, np.inf), 1.0,
                      INT32_MIN, INT32_MAX, 128 * 32767 * f)  # fmt: skip
    op = Linear((0,), INT32_MIN, INT32_MAX, 1.0, "fc", weight="w", requant=rq,
                acc_dtype=acc_dtype_for(128, 32767, f))  # fmt: skip
    out = engine.run_linear(op, x, w, None)
    exact = -128 * 32767 * f  # -2^7 * 32767 * 2^12 < -2^31: saturates to int32 min
    assert exact < INT32_MIN
    assert out[0, 0] == INT32_MIN and out[1, 0] == INT32_MAX
    np.testing.assert_array_equal(out, engine.run_op_reference(op, [x], w, None))


@SETTINGS
@given(st.integers(0, 2**31), st.floats(1e-6, 1e3), st.floats(-50, 50), st.booleans())
def test_requant_rounds_half_up_and_is_monotone(seed, m, b, negative):
    """The integer requantization equals floor(m*a + b + 1/2) up to the multiplier's rounding."""
    rng = np.random.default_rng(seed)
    m = -m if negative else m
    bound = 10**6
    rq = make_requant(np.array([m]), np.array([b]), np.array([-np.inf]), np.array([np.inf]),
                      1.0, -(2**15), 2**15, bound)  # fmt: skip
    acc = np.sort(rng.integers(-bound, bound, 2000)).reshape(1, 1, -1)
    got = reference.requant(acc, None, rq).ravel()
    want = np.clip(np.floor(m * acc.ravel().astype(np.float64) + b + 0.5), -(2**15), 2**15)
    # exact up to ties: the relative error of mult / 2^shift is below 2^-28
    assert np.all(np.abs(got - want) <= 1)
    assert np.mean(got == want) > 0.99
    step = np.diff(got)
    assert np.all(step <= 0) if m < 0 else np.all(step >= 0)


def test_sign_requant_thresholds_exactly():
    """sign(clamp(a*acc + b)) as an integer threshold, both directions and constant cases."""
    acc = np.arange(-50, 51).reshape(1, 1, -1)
    for a, b, lo, hi in [(0.5, 3.2, -np.inf, np.inf), (-0.25, 1.0, -1, 1), (0.0, -2.0, -1, 1),
                         (1.0, 0.0, 0.5, 1.0), (1.0, 5.0, -3.0, -0.5)]:  # fmt: skip
        rq = make_requant([a], [b], [lo], [hi], 1.0, -1, 1, 100, sign=True)
        got = reference.requant(acc, None, rq).ravel()
        want = np.where(np.clip(a * acc.ravel() + b, lo, hi) >= 0, 1, -1)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, naive.requant(acc, None, rq).ravel())


@SETTINGS
@given(st.integers(0, 2**31), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
       st.integers(0, 1), st.integers(3, 9), st.sampled_from(ACT_RANGES))  # fmt: skip
def test_pooling_add_requantize(seed, c, k, s, p, hw, act):
    rng = np.random.default_rng(seed)
    p = min(p, k // 2)
    x = _codes(rng, act[0], act[1], (2, c, hw, hw + 1))
    pool = Pool((k, k), (s, s), (p, p))
    pdir = np.where(rng.random(c) < 0.5, -1, 1).astype(np.int8)
    mp = MaxPool((0,), act[0], act[1], 1.0, "mp", pool=pool, pool_dir=pdir)
    fast = engine.run_simple(mp, [x])
    np.testing.assert_array_equal(fast, engine.run_op_reference(mp, [x]))
    np.testing.assert_array_equal(fast, naive.pool(x, (k, k), (s, s), (p, p), pdir))
    sp = SumPool((0,), act[0] * k * k, act[1] * k * k, 1.0, "sp", pool=pool)
    fast = engine.run_simple(sp, [x])
    np.testing.assert_array_equal(fast, engine.run_op_reference(sp, [x]))
    np.testing.assert_array_equal(fast, naive.pool(x, (k, k), (s, s), (p, p), how="sum"))
    gp = SumPool((0,), act[0] * hw * (hw + 1), act[1] * hw * (hw + 1), 1.0, "gp",
                 pool=Pool((hw, hw + 1), (1, 1), (0, 0)), global_=True)  # fmt: skip
    fast = engine.run_simple(gp, [x])
    np.testing.assert_array_equal(fast[:, :, 0, 0], x.astype(np.int64).sum(axis=(2, 3)))
    np.testing.assert_array_equal(fast, engine.run_op_reference(gp, [x]))
    y = _codes(rng, act[0], act[1], x.shape)
    add = Add((0, 1), 2 * act[0], 2 * act[1], 1.0, "add")
    fast = engine.run_simple(add, [x, y])
    np.testing.assert_array_equal(fast, x.astype(np.int64) + y)
    rq = _requant(rng, c, 2 * max(abs(act[0]), abs(act[1])), -127, 127, scale=0.05)
    req = Requantize((0,), -127, 127, 1.0, "rq", requant=rq)
    fast = engine.run_simple(req, [x])
    np.testing.assert_array_equal(fast, engine.run_op_reference(req, [x]))
    np.testing.assert_array_equal(fast, naive.requant(x, None, rq))


def test_constant_and_saturating_channels():
    """alpha = 0 gives a constant; a huge offset saturates to the clamp bound."""
    rq = make_requant([0.0, 1e-3, 1e-3], [2.4, 1e9, -1e9], [-np.inf] * 3, [np.inf] * 3,
                      1.0, -127, 127, 10**6)  # fmt: skip
    acc = np.array([[[-(10**6), 0, 10**6]] * 3]).reshape(1, 3, 3)
    out = reference.requant(acc, None, rq)
    np.testing.assert_array_equal(out[0], [[2, 2, 2], [127, 127, 127], [-127, -127, -127]])


@pytest.mark.parametrize("bad", ["shape", "groups"])
def test_conv_rejects_mismatched_input(bad):
    w = np.ones((4, 2, 3, 3), np.int8)
    rq = make_requant(np.ones(4), np.zeros(4), [-np.inf] * 4, [np.inf] * 4, 1.0, -127, 127, 99)
    op = Conv((0,), -127, 127, 1.0, "c", weight="w", requant=rq,
              groups=2 if bad == "groups" else 1)  # fmt: skip
    x = np.zeros((1, 3, 5, 5), np.int8)
    with pytest.raises(ValueError, match="does not match"):
        engine.run_conv(op, x, w, None)
