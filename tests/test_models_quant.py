"""The QAT contract of models/quant.py: code ranges, scales, fake quant = codes * scale, STE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.fx

from models.quant import (
    InputQuant,
    LogitScale,
    QConv2d,
    QLinear,
    QuantAct,
    QuantTracer,
    act_range,
    quantize_weight,
    weight_qmax,
    weight_scale,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


BITS = (1, 2, 3, 4, 8)


def _layer(kind: str, bits: int, gran: str, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "conv":
        return QConv2d(3, 6, 3, weight_bits=bits, granularity=gran)
    return QLinear(20, 7, weight_bits=bits, granularity=gran)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("gran", ["channel", "tensor"])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_codes_within_declared_bits(kind, bits, gran):
    layer = _layer(kind, bits, gran)
    with torch.no_grad():  # spread the weights so every code can occur
        spread = torch.linspace(0.1, 3.0, layer.weight.shape[0])
        layer.weight.mul_(spread.reshape(-1, *[1] * (layer.weight.dim() - 1)))
    q, s = layer.weight_codes()
    assert q.dtype == torch.int8 and s.dtype == torch.float32
    assert s.shape == (layer.weight.shape[0],) and bool((s > 0).all())
    flat = q.reshape(q.shape[0], -1).numpy().astype(int)
    qmax = weight_qmax(bits)
    for row in flat:
        values = set(np.unique(row).tolist())
        if bits == 1:
            assert values <= {-1, 1}
        else:
            assert values <= set(range(-qmax, qmax + 1))
            assert len(values) <= 2**bits - 1
            if gran == "channel":  # each channel's largest |w| maps to qmax
                assert max(abs(v) for v in values) == qmax
    if gran == "tensor":
        assert torch.equal(s, s[:1].expand_as(s))
        if bits > 1:
            assert int(q.abs().max()) == qmax


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("gran", ["channel", "tensor"])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_fake_quant_equals_codes_times_scale(kind, bits, gran):
    layer = _layer(kind, bits, gran, seed=1)
    q, s = layer.weight_codes()
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    w_fq = layer.quantized_weight().detach()
    assert torch.equal(w_fq, q.float() * s.reshape(shape))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_scale_and_rounding_match_the_contract(bits):
    """Independent numpy formula: s = max|w|/qmax per channel, q = rint(w/s) (half to even)."""
    torch.manual_seed(2)
    layer = QLinear(16, 5, weight_bits=bits)
    w = layer.weight.detach().numpy().astype(np.float64)
    qmax = 2 ** (bits - 1) - 1
    s = (np.abs(w).max(axis=1) / qmax).astype(np.float32)
    q_ref = np.clip(np.rint(w / s[:, None].astype(np.float64)), -qmax, qmax)
    q, s_t = layer.weight_codes()
    np.testing.assert_allclose(s_t.numpy(), s, rtol=1e-6)
    # torch multiplies by 1/s in float32; allow a differing code only at an exact .5 tie
    diff = q.numpy().astype(np.float64) != q_ref
    frac = np.abs(np.abs(w / s[:, None]) % 1 - 0.5)
    assert np.all(frac[diff] < 1e-4)


def test_binarized_scale_is_mean_abs():
    torch.manual_seed(3)
    layer = QLinear(10, 4, weight_bits=1)
    _, s = layer.weight_codes()
    torch.testing.assert_close(s, layer.weight.detach().abs().mean(dim=1))
    layer_t = QLinear(10, 4, weight_bits=1, granularity="tensor")
    layer_t.weight.data.copy_(layer.weight.data)
    _, s_t = layer_t.weight_codes()
    torch.testing.assert_close(s_t, layer.weight.detach().abs().mean().expand(4))


def test_zero_channel_gets_scale_one():
    layer = QLinear(4, 3, weight_bits=4)
    with torch.no_grad():
        layer.weight[1].zero_()
    q, s = layer.weight_codes()
    assert s[1] == 1.0 and bool((q[1] == 0).all())


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weight_ste_gradient_is_identity(bits):
    torch.manual_seed(4)
    w = torch.randn(5, 7, requires_grad=True)
    g = torch.randn(5, 7)
    quantize_weight(w, bits, "channel").backward(g)
    torch.testing.assert_close(w.grad, g)  # every w is inside the clamp range


def test_binarized_ste_gradient_clipped():
    w = torch.tensor([[-2.0, -0.5, 0.0, 0.7, 1.0, 1.5]], requires_grad=True)
    quantize_weight(w, 1, "channel").sum().backward()
    s = w.detach().abs().mean()
    expected = torch.tensor([[0.0, 1.0, 1.0, 1.0, 1.0, 0.0]]) * s
    torch.testing.assert_close(w.grad, expected)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("signed", [True, False])
def test_quant_act_codes_and_gradient(bits, signed):
    act = QuantAct(bits, hi=2.0, signed=signed)
    qmin, qmax = act_range(bits, signed)
    assert act.scale == 2.0 / qmax
    x = torch.linspace(-3, 3, 601, requires_grad=True)
    y = act(x)
    codes = act.codes(x.detach())
    assert int(codes.min()) == qmin and int(codes.max()) == qmax
    torch.testing.assert_close(y.detach(), codes.float() * act.scale)
    ref = np.clip(np.rint(x.detach().numpy().astype(np.float64) / act.scale), qmin, qmax)
    assert np.mean(codes.numpy() == ref) > 0.99  # ties may differ by float rounding of 1/s
    y.sum().backward()
    lo = -2.0 if signed else 0.0
    inside = (x.detach() >= lo - act.scale / 2) & (x.detach() <= 2.0 + act.scale / 2)
    strict = (x.detach() > lo + 1e-3) & (x.detach() < 2.0 - 1e-3)
    assert bool((x.grad[strict] == 1).all()) and bool((x.grad[~inside] == 0).all())


def test_one_bit_act_is_sign_with_clipped_ste():
    act = QuantAct(1)
    x = torch.tensor([-2.0, -0.3, 0.0, 0.4, 3.0], requires_grad=True)
    y = act(x)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_input_quant_range_and_normalization():
    iq = InputQuant([0.2, 0.5], [0.25, 0.5], bits=8)
    assert iq.hi == pytest.approx(max(0.8 / 0.25, 0.2 / 0.25, 1.0, 1.0))
    img = torch.rand(3, 2, 4, 4)
    mean = torch.tensor([0.2, 0.5]).reshape(1, 2, 1, 1)
    std = torch.tensor([0.25, 0.5]).reshape(1, 2, 1, 1)
    expected = torch.fake_quantize_per_tensor_affine((img - mean) / std, iq.scale, 0, -127, 127)
    torch.testing.assert_close(iq(img), expected)
    assert int(iq.codes(torch.ones(1, 2, 1, 1)).max()) <= 127


def test_logit_scale_positive_and_argmax_invariant():
    ls = LogitScale(2.0)
    y = torch.randn(4, 5)
    torch.testing.assert_close(ls(y), 2.0 * y)
    assert torch.equal(ls(y).argmax(1), y.argmax(1))


def test_invalid_bits_rejected():
    with pytest.raises(ValueError):
        QLinear(3, 3, weight_bits=9)  # codes are int8
    with pytest.raises(ValueError):
        QLinear(3, 3, weight_bits=0)
    with pytest.raises(ValueError):
        QConv2d(3, 3, 3, granularity="row")
    with pytest.raises(ValueError):
        weight_scale(torch.ones(2, 2), 4, "row")


def test_weight_fault_hook_and_tracers():
    torch.manual_seed(5)
    model = torch.nn.Sequential(
        InputQuant([0.5], [0.5]), QConv2d(1, 2, 3, weight_bits=4), QuantAct(4),
        torch.nn.Flatten(), QLinear(2 * 26 * 26, 3, weight_bits=2), LogitScale(),
    )  # fmt: skip
    x = torch.rand(2, 1, 28, 28)
    ref = model(x)
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), ref)
    graph = QuantTracer().trace(model)
    leaves = [n.target for n in graph.nodes if n.op == "call_module"]
    assert leaves == ["0", "1", "2", "3", "4", "5"]
    model[1].weight_fault = lambda layer, w: w * 0
    assert not torch.equal(model(x), ref)
    model[1].weight_fault = None
    torch.testing.assert_close(model(x), ref)
