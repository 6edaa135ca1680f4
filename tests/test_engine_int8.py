"""The int8 GEMM backend == the numba engine == the numpy reference, bit for bit.

`engine.GEMM = "int8"` forces the int8 GEMM wherever its operands allow it (even tiny
fan-ins), so every op shape below exercises it; "int" is the numba oracle.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine_models import ZOO, _images, corrupt, make_model

from simulator import engine, gemm_int8
from simulator.importer import import_torch
from simulator.ops import Conv, Linear, Pool, acc_dtype_for, make_requant, weight_range

POOLS = {
    "none": None,
    "2x2": Pool((2, 2), (2, 2), (0, 0)),
    "3x3": Pool((3, 3), (2, 2), (1, 1)),  # generic (not unrolled) window, with padding
}
# input code ranges: signed / unsigned 4 and 8 bits, and the full int8 range
ACT_RANGES = [(-7, 7), (0, 15), (-127, 127), (0, 255), (-128, 127)]


_HAS_CONV = gemm_int8.has_conv


@pytest.fixture(autouse=True)
def _fresh_backend():
    """Each test starts with the real torch, an empty self-test cache and the path on."""
    _reset()
    yield
    _reset()


def _reset():
    gemm_int8._state.update(broken=False, conv_broken=False)
    gemm_int8.proven.cache_clear()
    gemm_int8.proven_conv.cache_clear()
    gemm_int8._torch.cache_clear()


def _requant(rng, c_n, acc_bound, qmin, qmax, scale):
    """Per-channel requantization; ~1/3 of the channels decrease (min pooling)."""
    alpha = rng.uniform(0.2, 2.0, c_n) * scale * np.where(rng.random(c_n) < 0.3, -1, 1)
    beta = rng.normal(0, 0.5, c_n)
    lo, hi = np.full(c_n, -np.inf), np.full(c_n, np.inf)
    return make_requant(alpha, beta, lo, hi, 1 / 64, qmin, qmax, acc_bound)


def _weights(rng, shape, bits):
    lo, hi = weight_range(bits)
    if bits == 1:
        return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)
    w = rng.integers(lo, hi + 1, shape).astype(np.int8)
    w.reshape(-1)[0] = lo  # the most negative code (a flipped bit can make it)
    return w


def _inputs(rng, shape, lo, hi, noncontig):
    x = rng.integers(lo, hi + 1, shape)
    x.reshape(-1)[:3] = [lo, hi, lo][: x.size]
    dt = np.int8 if -128 <= lo and hi <= 127 else np.int16
    x = x.astype(dt)
    if noncontig:  # a strided view of a larger array
        big = np.zeros((shape[0] * 2, *shape[1:]), dt)
        big[::2] = x
        x = big[::2]
    return x


def _info(op, w, bits, lo, hi):
    fan_in = int(np.prod(w.shape[1:]))
    return engine.LayerInput(bits, lo, hi, engine.plan(op, bits, lo, hi, fan_in))


def _modes(fn, monkeypatch):
    """fn() under the numba oracle and under the forced int8 backend."""
    got = []
    for mode in ("int", "int8"):
        monkeypatch.setattr(engine, "GEMM", mode)
        got.append(fn())
    return got


conv_cases = st.fixed_dictionaries({
    "bits": st.sampled_from([1, 2, 4, 8]),
    "act": st.sampled_from(ACT_RANGES),
    "groups": st.sampled_from([1, 2, 3]),
    "cg": st.integers(1, 9),
    "og": st.integers(1, 5),
    "k": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "stride": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "padding": st.tuples(st.integers(0, 2), st.integers(0, 2)),
    "hw": st.tuples(st.integers(3, 11), st.integers(3, 11)),
    "pool": st.sampled_from(sorted(POOLS)),
    "n": st.integers(1, 7),
    "noncontig": st.booleans(),
    "onednn": st.booleans(),  # oneDNN's int8 convolution, or int8 patches + int8 GEMM
    "seed": st.integers(0, 2**16),
})  # fmt: skip


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(case=conv_cases)
def test_conv_int8_equals_numba_and_reference(case, monkeypatch):
    monkeypatch.setattr(gemm_int8, "has_conv", lambda: case["onednn"] and _HAS_CONV())
    rng = np.random.default_rng(case["seed"])
    (kh, kw), (h, w_), g = case["k"], case["hw"], case["groups"]
    o_n, c_n = case["og"] * g, case["cg"] * g
    lo, hi = case["act"]
    pool = POOLS[case["pool"]]
    ho = (h + 2 * case["padding"][0] - kh) // case["stride"][0] + 1
    wo = (w_ + 2 * case["padding"][1] - kw) // case["stride"][1] + 1
    if ho < 1 or wo < 1 or (pool is not None and min(pool.out_hw(ho, wo)) < 1):
        return
    bits = case["bits"]
    w = _weights(rng, (o_n, case["cg"], kh, kw), bits)
    fan_in = case["cg"] * kh * kw
    wmax = max(-weight_range(bits)[0], weight_range(bits)[1])
    xmax = max(-lo, hi)
    pdir = np.where(rng.random(o_n) < 0.5, -1, 1).astype(np.int8) if pool else None
    op = Conv((0,), -127, 127, 1.0, "conv", weight="w", stride=case["stride"],
              padding=case["padding"], groups=g,
              requant=_requant(rng, o_n, wmax * xmax * fan_in + 2**31, -127, 127,
                               2**-8 / fan_in),
              acc_dtype=acc_dtype_for(wmax, xmax, fan_in), pool=pool,
              pool_dir=pdir)  # fmt: skip
    x = _inputs(rng, (case["n"], c_n, h, w_), lo, hi, case["noncontig"])
    bias = rng.integers(-(2**12), 2**12, o_n).astype(np.int32)
    info = _info(op, w, bits, lo, hi)
    monkeypatch.setattr(engine, "GEMM", "int8")
    assert engine.plan(op, bits, lo, hi, fan_in).backend == "int8"
    a, b = _modes(lambda: engine.run_conv(op, x, w, bias, info=info), monkeypatch)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, engine.run_op_reference(op, [x], w, bias))
    # a channel subset onto a base (the session's partial recompute)
    chans = np.sort(rng.choice(o_n, size=max(1, o_n // 2), replace=False)).astype(np.int64)
    base = np.full_like(a, 3)
    pa, pb = _modes(lambda: engine.run_conv(op, x, w, bias, chans=chans, base=base, info=info),
                    monkeypatch)  # fmt: skip
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(pa[:, chans], a[:, chans])


linear_cases = st.fixed_dictionaries({
    "bits": st.sampled_from([1, 2, 4, 8]),
    "act": st.sampled_from(ACT_RANGES),
    "f": st.integers(1, 300),
    "o": st.integers(1, 40),
    "n": st.integers(1, 9),
    "noncontig": st.booleans(),
    "seed": st.integers(0, 2**16),
})  # fmt: skip


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(case=linear_cases)
def test_linear_int8_equals_numba_and_reference(case, monkeypatch):
    rng = np.random.default_rng(case["seed"])
    bits, (lo, hi), f, o_n = case["bits"], case["act"], case["f"], case["o"]
    w = _weights(rng, (o_n, f), bits)
    wmax = max(-weight_range(bits)[0], weight_range(bits)[1])
    xmax = max(-lo, hi)
    op = Linear((0,), -127, 127, 1.0, "fc", weight="w",
                requant=_requant(rng, o_n, wmax * xmax * f + 2**31, -127, 127, 2**-8 / f),
                acc_dtype=acc_dtype_for(wmax, xmax, f))  # fmt: skip
    x = _inputs(rng, (case["n"], f), lo, hi, case["noncontig"])
    bias = rng.integers(-(2**12), 2**12, o_n).astype(np.int32)
    info = _info(op, w, bits, lo, hi)
    a, b = _modes(lambda: engine.run_linear(op, x, w, bias, info=info), monkeypatch)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, engine.run_op_reference(op, [x], w, bias))
    chans = np.sort(rng.choice(o_n, size=max(1, o_n // 3), replace=False)).astype(np.int64)
    base = np.full_like(a, -5)
    pa, pb = _modes(lambda: engine.run_linear(op, x, w, bias, chans=chans, base=base,
                                              info=info), monkeypatch)  # fmt: skip
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(pa[:, chans], a[:, chans])
    # the session's clean accumulators, bias excluded, with the zero-point correction
    want = x.astype(np.int64) @ w.T.astype(np.int64)
    la, lb = _modes(lambda: engine.linear_acc(x, w, True, info), monkeypatch)
    np.testing.assert_array_equal(la, want)
    np.testing.assert_array_equal(lb, want)


def _linear_op(f, o_n, bits=8, lo=-127, hi=127):
    wmax = 2 ** (bits - 1)
    rng = np.random.default_rng(0)
    return Linear((0,), -127, 127, 1.0, "fc", weight="w",
                  requant=_requant(rng, o_n, wmax * 128 * f + 2**31, -127, 127, 2**-8 / f),
                  acc_dtype=acc_dtype_for(wmax, max(-lo, hi), f))  # fmt: skip


def test_plan_decides_from_import_facts(monkeypatch):
    op = _linear_op(576, 64)
    monkeypatch.setattr(engine, "GEMM", "auto")
    assert engine.plan(op, 4, -127, 127, 576) == engine.Plan("int8", 0, "operands fit int8")
    assert engine.plan(op, 8, 0, 255, 576).zero == 128  # unsigned 8-bit: a - 128
    assert engine.plan(op, 4, 0, 15, 576).zero == 0  # fits int8 as it is
    assert engine.plan(op, 4, -127, 127, 9).backend == "numba"  # small fan-in (conv1)
    assert engine.plan(op, 16, -127, 127, 576).backend == "numba"  # weights > 8 bits
    assert engine.plan(op, 4, -255, 255, 576).backend == "numba"  # input > 8 bits
    assert engine.plan(op, 8, -128, 127, 2**17).backend == "numba"  # int32 could overflow
    assert engine.plan(op, 8, -128, 127, 2**17 - 1).backend == "int8"
    xnor = Linear((0,), -1, 1, 1.0, "fc", weight="w", requant=op.requant, xnor=True)
    assert engine.plan(xnor, 1, -1, 1, 576).backend == "numba"
    monkeypatch.setattr(engine, "GEMM", "int8")
    assert engine.plan(op, 4, -127, 127, 9).backend == "int8"
    monkeypatch.setattr(engine, "GEMM", "int")
    assert engine.plan(op, 4, -127, 127, 576).backend == "numba"


def test_gemm_mode_switch(monkeypatch):
    monkeypatch.setattr(engine, "GEMM", None)
    monkeypatch.setenv("MCELSIM_GEMM", "int8")
    assert engine.gemm_mode() == "int8"
    monkeypatch.delenv("MCELSIM_GEMM")
    assert engine.gemm_mode() == "auto"
    monkeypatch.setenv("MCELSIM_GEMM", "blas")
    with pytest.raises(ValueError, match="MCELSIM_GEMM"):
        engine.gemm_mode()


def test_self_test_proves_this_cpu_for_extreme_operands():
    assert gemm_int8.available()
    assert gemm_int8.proven(-128, 127, -128, 127, 3136)
    assert gemm_int8.proven(-8, 7, -127, 127, 576)
    assert gemm_int8.proven(-1, 1, -128, 127, 1)


@pytest.mark.parametrize("m, k, n", [(32, 1, 24), (1, 5, 7), (9, 4, 1), (1, 1, 1)])
def test_matmul_with_unit_dimensions(m, k, n):
    """Size-1 dimensions (one image, fan-in 1, one changed channel) with the operand
    layouts the engine passes (B as a transposed view of the weights)."""
    rng = np.random.default_rng(k)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    want = a.astype(np.int64) @ w.T.astype(np.int64)
    np.testing.assert_array_equal(gemm_int8.matmul(a, w.T), want)
    np.testing.assert_array_equal(gemm_int8.matmul(a, np.ascontiguousarray(w.T)), want)


class _SaturatingTorch:
    """A stand-in for torch whose _int_mm saturates each pair of products to int16, as
    `vpmaddubsw` does on CPUs without VNNI."""

    @staticmethod
    def from_numpy(a):
        return a

    @staticmethod
    def get_num_threads():
        return 1

    @staticmethod
    def _int_mm(a, b):
        a64 = np.asarray(a, np.int64)
        b64 = np.asarray(b, np.int64)
        k = a64.shape[1]
        out = np.zeros((a64.shape[0], b64.shape[1]), np.int64)
        for k0 in range(0, k, 2):
            pair = a64[:, k0 : k0 + 2] @ b64[k0 : k0 + 2]
            out += np.clip(pair, -(2**15), 2**15 - 1)
        return torch.from_numpy(out.astype(np.int32))


def test_saturating_cpu_fails_the_self_test_and_falls_back(monkeypatch):
    monkeypatch.setattr(gemm_int8, "_torch", functools.cache(lambda: _SaturatingTorch))
    assert not gemm_int8.proven(-128, 127, -128, 127, 64)  # 2 * 128 * 128 > 2^15 - 1
    assert gemm_int8.proven(-8, 7, -127, 127, 64)  # 4-bit weights never saturate
    op = _linear_op(64, 8)
    rng = np.random.default_rng(2)
    w = _weights(rng, (8, 64), 8)
    w[:] = -128
    x = np.full((20, 64), -127, np.int8)
    info = _info(op, w, 8, -127, 127)
    want = engine.run_op_reference(op, [x], w, None)
    monkeypatch.setattr(engine, "GEMM", "int8")
    np.testing.assert_array_equal(engine.run_linear(op, x, w, None, info=info), want)


class _RejectingTorch(_SaturatingTorch):
    @staticmethod
    def _int_mm(a, b):
        raise RuntimeError("_int_mm: self.size(0) needs to be greater than 16")


def test_rejected_shape_warns_once_and_uses_numba(monkeypatch):
    monkeypatch.setattr(gemm_int8, "_torch", functools.cache(lambda: _RejectingTorch))
    op = _linear_op(64, 8)
    w = _weights(np.random.default_rng(3), (8, 64), 4)
    x = np.random.default_rng(4).integers(-127, 128, (5, 64)).astype(np.int8)
    info = engine.LayerInput(4, -127, 127, engine.Plan("int8"))
    gemm_int8.proven.cache_clear()
    with pytest.warns(RuntimeWarning, match="int8 GEMM backend off"):
        assert gemm_int8.matmul(x, w.T) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        got = engine.run_linear(op, x, w, None, info=info)
    np.testing.assert_array_equal(got, engine.run_op_reference(op, [x], w, None))
    assert not gemm_int8.available()


def test_missing_torch_means_numba(monkeypatch):
    monkeypatch.setattr(gemm_int8, "_torch", functools.cache(lambda: None))
    assert not gemm_int8.available()
    assert not gemm_int8.proven(-8, 7, -127, 127, 64)
    assert gemm_int8.matmul(np.zeros((2, 2), np.int8), np.zeros((2, 2), np.int8)) is None


@pytest.fixture(scope="module", params=sorted(ZOO))
def zoo_net(request):
    model = make_model(request.param, weight_bits=4 if request.param == "vgg3" else 8)
    net = import_torch(model)
    return net, net.quantize_input(_images(model, 10))


def test_zoo_models_every_backend_identical(zoo_net, monkeypatch):
    """Clean and corrupted networks, whole passes and sessions, all backends: the same."""
    net, x = zoo_net
    bad = net.with_weights(corrupt(net, 0.05, seed=7))
    got = {}
    for mode in ("int", "auto", "int8"):
        monkeypatch.setattr(engine, "GEMM", mode)
        got[mode] = (net.forward(x), bad.forward(x), net.forward(x, batch_size=3))
    for mode in ("auto", "int8"):
        for a, b in zip(got["int"], got[mode], strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got["int"][0], net.reference_forward(x))
    np.testing.assert_array_equal(got["int"][1], bad.reference_forward(x))
    if any(net.layer_input(i).plan.backend == "int8" for i, op in enumerate(net.ops)
           if isinstance(op, Conv | Linear)):  # fmt: skip
        monkeypatch.setattr(engine, "GEMM", "auto")
        assert "int8" in {net.layer_input(i).plan.backend for i, op in enumerate(net.ops)
                          if isinstance(op, Conv | Linear)}  # fmt: skip


def test_zero_point_correction_after_a_chip_read(monkeypatch):
    """A layer fed unsigned 8-bit codes (a - 128 in the GEMM, + 128 * sum_k w added back):
    a read that changes a handful of its weights gives the numba result, in a session
    and in a whole pass."""
    model = make_model("mobilenetv2", weight_bits=8)
    net = import_torch(model)
    x = net.quantize_input(_images(model, 8))
    monkeypatch.setattr(engine, "GEMM", "int8")
    layers = [i for i, op in enumerate(net.ops) if isinstance(op, Conv | Linear)]
    shifted = [i for i in layers if net.layer_input(i).plan.zero == 128]
    assert shifted, "MobileNetV2 has layers fed by unsigned 8-bit (ReLU6) codes"
    rng = np.random.default_rng(5)
    deltas, applied = {}, {}
    for i in shifted[:3]:
        name = net.ops[i].weight
        w = net.weights()[name]
        idx = np.sort(rng.choice(w.size, size=4, replace=False)).astype(np.int64)
        vals = np.array([-128, 127, -128, 127])
        deltas[name] = (idx, vals)
        new = w.copy()
        new.reshape(-1)[idx] = vals
        applied[name] = new
    session = net.session(x)
    got = session.logits(deltas)
    whole = net.with_weights(applied).forward(x)
    monkeypatch.setattr(engine, "GEMM", "int")
    want = net.with_weights(applied).forward(x)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(whole, want)
