"""Model zoo: every architecture builds, traces with torch.fx, follows the integer contract,
trains a few steps on synthetic data and keeps its weights within the declared bit widths."""

from __future__ import annotations

import operator

import numpy as np
import pytest
import torch
import torch.fx
from torch import nn

from memory_models.usererror import UserInputError
from models import ARCHITECTURES, build_model, load_dataset, mcel_loss
from models.quant import InputQuant, LogitScale, QConv2d, QLinear, QuantAct, QuantTracer

pytestmark = pytest.mark.usefixtures("torch_one_thread")


SMALL = {"mlp": 0.25, "vgg3": 0.125, "vgg7": 0.0625, "resnet18": 0.0625, "mobilenetv2": 0.125}


def _model(arch: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return build_model(arch, width=SMALL[arch], **kw)


def test_architectures_registry():
    assert ARCHITECTURES == ("mlp", "vgg3", "vgg7", "resnet18", "mobilenetv2")
    with pytest.raises(UserInputError, match="unknown architecture"):
        build_model("alexnet")
    with pytest.raises(UserInputError, match="weight_bits"):
        build_model("vgg3", weight_bits=9)
    with pytest.raises(UserInputError, match="granularity"):
        build_model("vgg3", granularity="row")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_symbolic_trace_matches_model(arch):
    model = _model(arch, in_channels=3, input_size=32, num_classes=7).eval()
    x = torch.rand(2, 3, 32, 32)
    traced = torch.fx.symbolic_trace(model)
    out = model(x)
    assert out.shape == (2, 7)
    torch.testing.assert_close(traced(x), out)
    leaf = torch.fx.GraphModule(model, QuantTracer().trace(model))
    torch.testing.assert_close(leaf(x), out)


_PASS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity)
_BETWEEN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Hardtanh, nn.ReLU6, nn.ReLU, nn.MaxPool2d,
            LogitScale, nn.Identity)  # fmt: skip


def _quant_source(node, mods):
    """The QuantAct feeding `node` through pooling/flatten (None if there is none)."""
    while node.op == "call_module" and isinstance(mods[node.target], _PASS):
        node = node.args[0]
    if node.op == "call_module" and isinstance(mods[node.target], QuantAct):
        return mods[node.target]
    return None


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_contract_structure(arch):
    """Every conv/linear input is a QuantAct output (maybe pooled/flattened, or the add of two
    QuantActs with one scale); only per-channel monotone ops follow a conv before a QuantAct."""
    model = _model(arch, in_channels=3, input_size=32)
    graph = QuantTracer().trace(model)
    mods = dict(model.named_modules())
    assert isinstance(model[0], InputQuant) and isinstance(model[-1], LogitScale)
    n_layers = 0
    for node in graph.nodes:
        if node.op == "call_function" and node.target in (operator.add, torch.add):
            srcs = [_quant_source(a, mods) for a in node.args]
            assert all(s is not None for s in srcs), f"add {node} of non-QuantAct inputs"
            assert srcs[0].scale == srcs[1].scale and srcs[0].bits == srcs[1].bits
            cur = node  # the add is followed by an activation, then a QuantAct
            for want in ((nn.Hardtanh, nn.ReLU6, nn.ReLU), QuantAct):
                (cur,) = list(cur.users)
                assert cur.op == "call_module" and isinstance(mods[cur.target], want)
        if node.op != "call_module" or not isinstance(mods[node.target], QConv2d | QLinear):
            continue
        n_layers += 1
        (src,) = node.args
        if src.op == "call_function":  # residual add feeding a conv is checked above
            continue
        assert _quant_source(src, mods) is not None, f"{node.target} input is not quantized"
        # walk forward to the next QuantAct (or the end): only allowed ops in between
        cur = node
        while True:
            (nxt,) = list(cur.users)
            if nxt.op == "output":
                break
            m = mods.get(nxt.target) if nxt.op == "call_module" else None
            if isinstance(m, QuantAct):
                break
            assert isinstance(m, _BETWEEN), f"{nxt} between {node.target} and its QuantAct"
            cur = nxt
    assert n_layers >= 3


TRAIN_CASES = [(a, 4) for a in ARCHITECTURES] + [
    ("mlp", 1), ("vgg3", 1), ("vgg3", 2), ("vgg3", 8), ("resnet18", 2), ("mobilenetv2", 1),
]  # fmt: skip


@pytest.mark.parametrize("arch, bits", TRAIN_CASES)
def test_trains_on_synthetic_and_keeps_bit_widths(arch, bits):
    data = load_dataset("synthetic", "train", limit=16)
    model = _model(arch, weight_bits=bits, mean=data.mean, std=data.std)
    x, y = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(3):
        loss = mcel_loss(model(x), y, margin=4.0, L=20.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    layers = [m for m in model.modules() if isinstance(m, QConv2d | QLinear)]
    assert layers and all(m.weight_bits == bits for m in layers)
    for m in layers:
        q, s = m.weight_codes()
        flat = q.reshape(q.shape[0], -1)
        shape = (-1,) + (1,) * (m.weight.dim() - 1)
        assert torch.equal(m.quantized_weight().detach(), q.float() * s.reshape(shape))
        for row in flat:
            values = torch.unique(row)
            if bits == 1:
                assert set(values.tolist()) <= {-1, 1}
            else:
                assert len(values) <= 2**bits - 1
                assert int(values.abs().max()) <= 2 ** (bits - 1) - 1


@pytest.mark.parametrize("arch", ["vgg3", "resnet18"])
def test_tensor_granularity_and_act_bits(arch):
    model = _model(arch, granularity="tensor", act_bits=4, weight_bits=4)
    for m in model.modules():
        if isinstance(m, QConv2d | QLinear):
            _, s = m.weight_codes()
            assert torch.equal(s, s[:1].expand_as(s))
        if isinstance(m, QuantAct) and not isinstance(m, InputQuant):
            assert m.bits == 4
    assert model[0].bits == 8  # input bits stay at their own default


def test_vgg3_matches_the_paper_layout():
    model = build_model("vgg3", weight_bits=4)
    kinds = [type(m).__name__ for m in model]
    assert kinds == [
        "InputQuant", "QConv2d", "MaxPool2d", "BatchNorm2d", "Hardtanh", "QuantAct",
        "QConv2d", "MaxPool2d", "BatchNorm2d", "Hardtanh", "QuantAct", "Flatten",
        "QLinear", "BatchNorm1d", "Hardtanh", "QuantAct", "QLinear", "LogitScale",
    ]  # fmt: skip
    assert model[1].weight.shape == (64, 1, 3, 3) and model[6].weight.shape == (64, 64, 3, 3)
    assert model[12].weight.shape == (2048, 3136) and model[16].weight.shape == (10, 2048)
    assert model.mcelsim_config["arch"] == "vgg3"
