"""Brevitas QAT models: the integer engine equals Brevitas's own quantized forward."""

from __future__ import annotations

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
from brevitas.quant import ShiftedUint8ActPerTensorFloat
from torch import nn

from memory_models.usererror import UserInputError
from simulator import import_brevitas

pytestmark = pytest.mark.usefixtures("torch_one_thread")


class Residual(nn.Module):
    """Two branches ending in one shared quantizer (one scale), added, then requantized."""

    def __init__(self, c):
        super().__init__()
        self.conv = qnn.QuantConv2d(c, c, 3, padding=1, bias=False, weight_bit_width=4)
        self.bn = nn.BatchNorm2d(c)
        self.out_q = qnn.QuantIdentity(bit_width=8)
        self.relu = qnn.QuantReLU(bit_width=8)

    def forward(self, x):  # x: the output of self.out_q's twin below (same scale by design)
        return self.relu(self.out_q(self.bn(self.conv(x))) + x)


def _brevitas_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        qnn.QuantIdentity(bit_width=8),
        qnn.QuantConv2d(1, 8, 3, padding=1, bias=False, weight_bit_width=4), nn.BatchNorm2d(8),
        qnn.QuantReLU(bit_width=4), nn.MaxPool2d(2),
        qnn.QuantConv2d(8, 8, 3, padding=1, bias=False, weight_bit_width=4), nn.BatchNorm2d(8),
        qnn.QuantHardTanh(bit_width=8, max_val=1.0, min_val=-1.0),
        nn.AvgPool2d(2), nn.Flatten(),
        qnn.QuantLinear(8 * 7 * 7, 10, bias=True, weight_bit_width=4),
    )  # fmt: skip


def _ready(model, shape=(1, 28, 28)):
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(64, *shape))
    return model.eval()


def test_brevitas_4bit_model_equals_brevitas_forward():
    model = _ready(_brevitas_net())
    net = import_brevitas(model, (1, 28, 28))
    x = np.random.default_rng(0).random((1000, 1, 28, 28), dtype=np.float32)
    codes = net.quantize_input(x)
    logits = net.forward(codes)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.mean(logits.argmax(1) == ref.argmax(1)) >= 0.999
    # every hidden code equals Brevitas's: the HardTanh quantizer's integer codes
    model[7].return_quant_tensor = True
    with torch.no_grad():
        hard = model[:8](torch.from_numpy(x)).int().numpy()
    model[7].return_quant_tensor = False
    vals = [codes]
    for i, op in enumerate(net.ops):
        vals.append(net.run_op(i, [vals[j] for j in op.src]))
    same = [v for v in vals if v.shape == hard.shape]
    assert same and np.array_equal(same[-1], hard)
    # weight codes are Brevitas's own (not re-derived), 4 bits
    w = net.weights()["layers._1.weight"]
    np.testing.assert_array_equal(w, model[1].quant_weight().int().numpy())
    rows = net.meta["import_report"]
    assert [r["weight_bits"] for r in rows] == [4, 4, 4] and not any(r["folded_bn"] for r in rows)


def test_residual_add_of_quantized_values():
    torch.manual_seed(1)
    block = Residual(4)
    model = _ready(nn.Sequential(
        qnn.QuantIdentity(bit_width=8), qnn.QuantConv2d(1, 4, 3, padding=1, weight_bit_width=4,
                                                        bias=False),
        nn.BatchNorm2d(4), block.out_q, block, nn.Flatten(), qnn.QuantLinear(4 * 28 * 28, 10,
                                                                              weight_bit_width=4),
    ))  # fmt: skip
    net = import_brevitas(model, (1, 28, 28))
    x = np.random.default_rng(2).random((300, 1, 28, 28), dtype=np.float32)
    logits = net.forward(net.quantize_input(x))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.mean(logits.argmax(1) == ref.argmax(1)) >= 0.99


@pytest.mark.parametrize("layer, needle", [
    (qnn.QuantIdentity(act_quant=ShiftedUint8ActPerTensorFloat), "zero point"),
    (qnn.QuantSigmoid(bit_width=8), "unsupported Brevitas layer QuantSigmoid"),
    (nn.GELU(), "unsupported layer GELU"),
])  # fmt: skip
def test_unhandled_brevitas_features_are_user_errors(layer, needle):
    torch.manual_seed(0)
    model = _ready(nn.Sequential(
        qnn.QuantIdentity(bit_width=8), qnn.QuantConv2d(1, 4, 3, padding=1, weight_bit_width=4,
                                                        bias=False),
        layer, qnn.QuantIdentity(bit_width=8), nn.Flatten(),
        qnn.QuantLinear(4 * 28 * 28, 10, weight_bit_width=4),
    ))  # fmt: skip
    with pytest.raises(UserInputError, match=needle):
        import_brevitas(model, (1, 28, 28))


def test_float_input_to_a_quant_layer_is_a_user_error():
    model = nn.Sequential(qnn.QuantConv2d(1, 4, 3, weight_bit_width=4), nn.Flatten(),
                          qnn.QuantLinear(4 * 26 * 26, 10, weight_bit_width=4)).eval()  # fmt: skip
    with pytest.raises(UserInputError, match="needs quantized input codes"):
        import_brevitas(model, (1, 28, 28))
