"""The exact float32-BLAS accumulator path == the numba integer path == numpy reference.

`engine.GEMM` (or $MCELSIM_GEMM) forces a path; "blas" uses BLAS wherever it is exact, even
for fan-in blocks of a few products, so the block splitting is exercised on small layers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from naive import kernels as naive

from models import build_model
from simulator import engine
from simulator.importer import import_torch
from simulator.ops import (
    INT32_MAX,
    INT32_MIN,
    Conv,
    Linear,
    Pool,
    acc_dtype_for,
    make_requant,
    weight_range,
)

POOL = Pool((2, 2), (2, 2), (0, 0))
POOL3 = Pool((3, 3), (2, 2), (1, 1))  # generic (not unrolled) window, with padding


def _requant(rng, c_n, acc_bound, qmin=-127, qmax=127, sign=False, scale=1e-3):
    """Per-channel requantization; ~1/3 of the channels decrease (min pooling)."""
    alpha = rng.uniform(0.2, 2.0, c_n) * scale * np.where(rng.random(c_n) < 0.3, -1, 1)
    beta = rng.normal(0, 0.5, c_n)
    lo, hi = np.full(c_n, -np.inf), np.full(c_n, np.inf)
    return make_requant(alpha, beta, lo, hi, 1 / 64, qmin, qmax, acc_bound, sign)


def _both(fn, monkeypatch):
    """fn() under the integer path, then under the forced BLAS path."""
    got = []
    for mode in ("int", "blas"):
        monkeypatch.setattr(engine, "GEMM", mode)
        got.append(fn())
    return got


def _conv_op(rng, o_n, cg, groups, stride, padding, wmax, xmax, pool, qmin=-127, qmax=127):
    fan_in = cg * 9
    acc_dtype = acc_dtype_for(wmax, xmax, fan_in)
    return Conv((0,), qmin, qmax, 1.0, "conv", weight="w", stride=stride, padding=padding,
                groups=groups, requant=_requant(rng, o_n, wmax * xmax * fan_in + 2**31, qmin,
                                                qmax, scale=2**-10 / fan_in),
                acc_dtype=acc_dtype, pool=pool,
                pool_dir=np.where(rng.random(o_n) < 0.5, -1, 1).astype(np.int8)
                if pool else None)  # fmt: skip


# (name, weight bits, input code range, groups, in/group, out/group, stride, padding, pool)
CONV_CASES = [
    ("8bit-int8", 8, (-128, 127), 1, 64, 6, (1, 1), (1, 1), POOL),
    ("8bit-int16-wide", 8, (-32767, 32767), 1, 70, 4, (1, 1), (0, 1), None),
    ("4bit-u4", 4, (0, 15), 1, 20, 5, (2, 1), (1, 0), POOL3),
    ("groups", 8, (-127, 127), 3, 8, 2, (1, 2), (1, 1), POOL),
    ("depthwise", 8, (0, 255), 6, 1, 1, (2, 2), (1, 1), None),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_blas_equals_int_and_reference(case, monkeypatch):
    name, bits, (xlo, xhi), groups, cg, og, stride, padding, pool = case
    rng = np.random.default_rng(len(name))
    wlo, whi = weight_range(bits)
    x = rng.integers(xlo, xhi + 1, (3, groups * cg, 9, 10)).astype(
        np.int8 if xhi <= 127 and xlo >= -128 else np.int16
    )
    w = rng.integers(wlo, whi + 1, (groups * og, cg, 3, 3)).astype(np.int8)
    bias = rng.integers(-1000, 1000, groups * og).astype(np.int32)
    op = _conv_op(rng, groups * og, cg, groups, stride, padding, -wlo, max(-xlo, xhi), pool)
    if name == "8bit-int16-wide":
        assert engine._wide(op)
        assert engine._blas_block(x, w, cg * 9) < cg * 9  # several fan-in blocks
    ref = engine.run_op_reference(op, [x], w, bias)
    a, b = _both(lambda: engine.run_conv(op, x, w, bias), monkeypatch)
    np.testing.assert_array_equal(a, ref)
    np.testing.assert_array_equal(b, ref)
    # channel subsets keep `base` elsewhere, on both paths
    chans = np.sort(rng.choice(groups * og, size=max(1, groups * og // 2), replace=False))
    base = np.full_like(ref, 7)
    pa, pb = _both(lambda: engine.run_conv(op, x, w, bias, chans=chans, base=base), monkeypatch)
    want = base.copy()
    want[:, chans] = ref[:, chans]
    np.testing.assert_array_equal(pa, want)
    np.testing.assert_array_equal(pb, want)
    assert (base == 7).all()


def test_conv_blas_small_case_matches_naive_loops(monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (2, 4, 6, 5)).astype(np.int8)
    w = rng.integers(-128, 128, (6, 2, 3, 3)).astype(np.int8)
    bias = rng.integers(-1000, 1000, 6).astype(np.int32)
    op = _conv_op(rng, 6, 2, 2, (2, 1), (1, 1), 128, 128, None)
    monkeypatch.setattr(engine, "GEMM", "blas")
    slow = naive.requant(naive.conv2d_acc(x, w, (2, 1), (1, 1), 2), bias, op.requant)
    np.testing.assert_array_equal(engine.run_conv(op, x, w, bias), slow)


@pytest.mark.parametrize("pool", [None, POOL], ids=["nopool", "pool"])
def test_conv_blas_extreme_codes(pool, monkeypatch):
    """All weights -128, inputs at +-32767: int64 accumulators near their bound, exact."""
    rng = np.random.default_rng(1)
    cg = 64
    x = np.full((2, cg, 6, 6), 32767, np.int16)
    x[1, :, ::2] = -32767
    w = np.full((4, cg, 3, 3), -128, np.int8)
    op = _conv_op(rng, 4, cg, 1, (1, 1), (1, 1), 128, 32767, pool, INT32_MIN, INT32_MAX)
    assert engine._wide(op)
    acc = naive.conv2d_acc(x, w, (1, 1), (0, 0), 1)
    assert acc.min() < INT32_MIN  # the int32 path would wrap: int64 it is
    ref = engine.run_op_reference(op, [x], w, None)
    a, b = _both(lambda: engine.run_conv(op, x, w, None), monkeypatch)
    np.testing.assert_array_equal(a, ref)
    np.testing.assert_array_equal(b, ref)


def test_conv_blas_chunking_is_invisible(monkeypatch):
    """Tiny column budget: one image per BLAS chunk; same codes."""
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (5, 16, 7, 7)).astype(np.int8)
    w = rng.integers(-128, 128, (8, 16, 3, 3)).astype(np.int8)
    op = _conv_op(rng, 8, 16, 1, (1, 1), (1, 1), 128, 128, POOL)
    ref = engine.run_op_reference(op, [x], w, None)
    monkeypatch.setattr(engine, "GEMM", "blas")
    monkeypatch.setattr(engine, "_BLAS_BYTES", 1)
    np.testing.assert_array_equal(engine.run_conv(op, x, w, None), ref)


@pytest.mark.parametrize(
    "bits,act,f",
    [(8, (-128, 127), 3136), (8, (-32767, 32767), 300), (4, (0, 15), 200), (2, (-7, 7), 50)],
)
def test_linear_blas_equals_int_and_reference(bits, act, f, monkeypatch):
    rng = np.random.default_rng(f)
    wlo, whi = weight_range(bits)
    xlo, xhi = act
    x = rng.integers(xlo, xhi + 1, (11, f)).astype(np.int8 if xhi <= 127 else np.int16)
    x[0] = xhi  # extreme values: inputs at max, weights at -2^(b-1)
    w = rng.integers(wlo, whi + 1, (9, f)).astype(np.int8)
    w[0] = wlo
    bias = rng.integers(-(2**20), 2**20, 9).astype(np.int32)
    xmax = max(-xlo, xhi)
    rq = _requant(rng, 9, -wlo * xmax * f + 2**31, INT32_MIN, INT32_MAX, scale=1.0)
    op = Linear((0,), INT32_MIN, INT32_MAX, 1.0, "fc", weight="w", requant=rq,
                acc_dtype=acc_dtype_for(-wlo, xmax, f))  # fmt: skip
    monkeypatch.setattr(engine, "GEMM", "blas")
    if bits == 8:
        assert engine._blas_block(x, w, f) < f  # several fan-in blocks
    ref = engine.run_op_reference(op, [x], w, bias)
    a, b = _both(lambda: engine.run_linear(op, x, w, bias), monkeypatch)
    np.testing.assert_array_equal(a, ref)
    np.testing.assert_array_equal(b, ref)
    exact = x.astype(np.int64) @ w.astype(np.int64).T
    for wide in (True, engine._wide(op)):
        la, lb = _both(lambda wide=wide: engine.linear_acc(x, w, wide), monkeypatch)
        np.testing.assert_array_equal(la, exact)
        np.testing.assert_array_equal(lb, exact)
    chans = np.array([0, 3, 8])
    base = np.full_like(ref, -5)
    pa, pb = _both(lambda: engine.run_linear(op, x, w, bias, chans=chans, base=base), monkeypatch)
    want = base.copy()
    want[:, chans] = ref[:, chans]
    np.testing.assert_array_equal(pa, want)
    np.testing.assert_array_equal(pb, want)


def test_linear_blas_small_case_matches_naive_loops(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.integers(-32767, 32768, (4, 40)).astype(np.int16)
    w = rng.integers(-128, 128, (5, 40)).astype(np.int8)
    monkeypatch.setattr(engine, "GEMM", "blas")
    assert engine._blas_block(x, w, 40) <= 4  # 2^24 / (128 * 32767): blocks of 4
    np.testing.assert_array_equal(engine.linear_acc(x, w), naive.linear_acc(x, w))


def test_gemm_mode_switch(monkeypatch):
    monkeypatch.setattr(engine, "GEMM", None)
    monkeypatch.setenv("MCELSIM_GEMM", "int")
    assert engine.gemm_mode() == "int"
    monkeypatch.delenv("MCELSIM_GEMM")
    assert engine.gemm_mode() == "auto"
    monkeypatch.setenv("MCELSIM_GEMM", "fast")
    with pytest.raises(ValueError, match="MCELSIM_GEMM"):
        engine.gemm_mode()
    monkeypatch.setattr(engine, "GEMM", "auto")
    monkeypatch.setattr(engine, "_BLAS_AUTO_LINEAR", True)
    monkeypatch.setattr(engine, "_BLAS_AUTO_CONV", False)
    x = np.ones((2, 576), np.int8)
    w = np.ones((16, 576), np.int8)
    assert engine._blas_block(x, w, 576) == 576  # large fan-in: BLAS
    assert engine._blas_block(x, w[:10], 576) == 0  # 10 outputs (fc2): numba
    assert engine._blas_block(x, w, 576, conv=True) == 0  # auto conv: off
    assert engine._blas_block(x[:, :9], w[:, :9], 9) == 0  # conv1-like: numba
    assert engine._blas_block(x, w, 576, xnor=True) == 0  # XNOR popcount: numba
    x16 = np.full((2, 576), 32767, np.int16)
    assert engine._blas_block(x16, w * -128, 576) == 0  # blocks of 4: numba in auto
    monkeypatch.setattr(engine, "GEMM", "blas")
    assert engine._blas_block(x16, w * -128, 576) == 4
    assert engine._blas_block(np.full((1, 4), 2**24 + 1, np.int32), w[:, :4], 4) == 0  # inexact
    assert engine._blas_block(x, w, 576, conv=True) == 576


@pytest.mark.parametrize("bits", [4, 8])
def test_network_forward_identical_int_vs_blas(bits, monkeypatch):
    """Whole VGG3 (small width), clean and with corrupted weights: the same logits."""
    torch.manual_seed(0)
    model = build_model("vgg3", width=0.25, weight_bits=bits).eval()
    net = import_torch(model)
    rng = np.random.default_rng(bits)
    x = net.quantize_input(rng.random((6, 1, 28, 28), dtype=np.float32))
    bad = {}
    for name, w in net.weights().items():
        lo, hi = weight_range(net.weight_bits(name))
        w = w.copy()
        hit = rng.random(w.shape) < 0.05
        w[hit] = rng.integers(lo, hi + 1, int(hit.sum()))
        w.reshape(-1)[0] = lo
        bad[name] = w
    corrupted = net.with_weights(bad)
    monkeypatch.setattr(engine, "_BLAS_AUTO_LINEAR", True)  # auto: BLAS on fc1
    for mode in ("auto", "blas"):
        monkeypatch.setattr(engine, "GEMM", "int")
        want, want_bad = net.forward(x), corrupted.forward(x)
        monkeypatch.setattr(engine, "GEMM", mode)
        np.testing.assert_array_equal(net.forward(x), want)
        np.testing.assert_array_equal(corrupted.forward(x), want_bad)
        np.testing.assert_array_equal(net.forward(x, batch_size=4), want)
    np.testing.assert_array_equal(want, net.reference_forward(x))
