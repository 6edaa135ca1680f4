"""Importer: clear errors for unsupported models, exact input quantization, no torch at import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from memory_models.usererror import UserInputError
from models import build_model
from models.quant import InputQuant, LogitScale, QConv2d, QLinear, QuantAct
from simulator.importer import import_checkpoint, import_torch
from simulator.ops import Conv, MaxPool


def test_simulator_imports_without_torch():
    code = (
        "import sys, simulator, simulator.network, simulator.ops, simulator.kernels, "
        "simulator.engine, simulator.reference\n"
        "from simulator import IntegerNetwork\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _small(*body, shape=(1, 8, 8)):
    torch.manual_seed(0)
    return nn.Sequential(InputQuant([0.5], [0.5]), *body).eval(), shape


def test_unsupported_layer_names_the_module():
    model, shape = _small(
        QConv2d(1, 4, 3, padding=1, bias=False), nn.GELU(), QuantAct(8), nn.Flatten(),
        QLinear(256, 10),
    )  # fmt: skip
    with pytest.raises(UserInputError, match=r"field '2'.*unsupported layer GELU"):
        import_torch(model, input_shape=shape)


class _Sigmoidal(nn.Module):
    def forward(self, x):
        return torch.sigmoid(x)


def test_unsupported_function_in_custom_module():
    model, shape = _small(
        QConv2d(1, 4, 3, padding=1, bias=False), _Sigmoidal(), QuantAct(8), nn.Flatten(),
        QLinear(256, 10),
    )  # fmt: skip
    with pytest.raises(UserInputError, match="unsupported function sigmoid"):
        import_torch(model, input_shape=shape)


def test_unquantized_conv_input():
    model, shape = _small(
        QConv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
        QConv2d(4, 4, 3, padding=1, bias=False), QuantAct(8), nn.Flatten(), QLinear(256, 10),
    )  # fmt: skip
    with pytest.raises(UserInputError, match=r"field '3'.*QConv2d is not quantized"):
        import_torch(model, input_shape=shape)
    no_input_quant = nn.Sequential(QConv2d(1, 4, 3), QuantAct(8)).eval()
    with pytest.raises(UserInputError, match="not quantized"):
        import_torch(no_input_quant, input_shape=shape)


class _BadResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(QConv2d(1, 2, 3, padding=1, bias=False), QuantAct(8, hi=1.0))
        self.b = nn.Sequential(QConv2d(1, 2, 3, padding=1, bias=False), QuantAct(8, hi=2.0))

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_residual_add_of_different_scales():
    model, shape = _small(_BadResidual(), nn.Flatten(), QLinear(128, 10))
    with pytest.raises(UserInputError, match="different scales"):
        import_torch(model, input_shape=shape)


def test_unknown_input_shape():
    model, _ = _small(nn.Flatten(), QLinear(64, 10))
    with pytest.raises(UserInputError, match="input_shape"):
        import_torch(model)
    net = import_torch(model, input_shape=(1, 8, 8))
    assert net.meta["input_shape"] == [1, 8, 8]


def test_negative_batchnorm_scale_turns_max_pooling_into_min():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    bn.weight.data = torch.tensor([1.0, -1.0, 0.5, -2.0])
    model = nn.Sequential(
        InputQuant([0.5], [0.5]), QConv2d(1, 4, 3, padding=1, bias=False), nn.MaxPool2d(2),
        bn, nn.Hardtanh(), QuantAct(8), nn.Flatten(), QLinear(64, 10), LogitScale(),
    ).eval()  # fmt: skip
    net = import_torch(model, input_shape=(1, 8, 8))
    conv = [op for op in net.ops if isinstance(op, Conv)][0]
    assert conv.pool is not None and not any(isinstance(op, MaxPool) for op in net.ops)
    np.testing.assert_array_equal(conv.pool_dir, [1, -1, 1, -1])
    images = np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32)
    x = net.quantize_input(images)
    logits = net.forward(x)
    np.testing.assert_array_equal(logits, net.reference_forward(x))
    with torch.no_grad():
        ref = model(torch.from_numpy(images)).numpy()
    assert np.mean(logits.argmax(1) == ref.argmax(1)) >= 0.95


@pytest.mark.parametrize(
    ("mean", "std", "bits", "flat"),
    [([0.5], [0.5], 8, False), ([0.2860], [0.3530], 8, False),
     ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616], 8, False),
     ([0.1307], [0.3081], 4, False), ([0.3], [0.7], 8, True)],
)  # fmt: skip
def test_quantize_input_equals_torch_input_quant(mean, std, bits, flat):
    c = len(mean)
    iq = InputQuant(mean, std, bits=bits)
    body = [nn.Flatten(), QLinear(c * 64, 10)] if not flat else [QLinear(c * 64, 10)]
    model = nn.Sequential(iq, *body).eval()
    shape = (c * 64,) if flat else (c, 8, 8)
    net = import_torch(model, input_shape=shape)
    rng = np.random.default_rng(7)
    images = rng.random((200, *shape), dtype=np.float32)
    # plus every 8-bit pixel value and exact ties of the grid
    images.reshape(-1)[:256] = np.arange(256, dtype=np.float32) / np.float32(255)
    got = net.quantize_input(images)
    want = iq.codes(torch.from_numpy(images)).numpy()
    np.testing.assert_array_equal(got, want)
    assert got.dtype == (np.int8 if bits <= 8 else np.int16)


def test_checkpoint_errors_and_round_trip(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        import_checkpoint(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserInputError):
        import_checkpoint(junk)
    from models import save_checkpoint

    torch.manual_seed(0)
    model = build_model("vgg3", width=0.125).eval()
    path = tmp_path / "vgg3.ckpt"
    save_checkpoint(path, model, {"loss": "ce"})
    net = import_checkpoint(path)
    assert net.meta.get("loss") == "ce"
    images = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    direct = import_torch(model)
    np.testing.assert_array_equal(
        net.forward(net.quantize_input(images)), direct.forward(direct.quantize_input(images))
    )


def test_importer_picks_int64_accumulators_where_int32_could_overflow():
    """16-bit activations x 8-bit weights x 2048 inputs: |acc| can reach 2^31 -> int64."""
    from simulator.ops import Linear

    torch.manual_seed(0)
    model = nn.Sequential(
        InputQuant([0.5], [0.5]), nn.Flatten(), QLinear(64, 2048, bias=False), nn.Hardtanh(),
        QuantAct(16), QLinear(2048, 10), QuantAct(8), QLinear(10, 10),
    ).eval()  # fmt: skip
    net = import_torch(model, input_shape=(1, 8, 8))
    lins = [op for op in net.ops if isinstance(op, Linear)]
    # 128*127*64 < 2^31; 128*32767*2048 >= 2^31; 128*127*10 < 2^31
    assert [np.dtype(op.acc_dtype) for op in lins] == [np.int32, np.int64, np.int32]
    x = net.quantize_input(np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32))
    worst = {lins[1].weight: np.full_like(net.weights()[lins[1].weight], -128)}
    bad = net.with_weights(worst)
    np.testing.assert_array_equal(bad.forward(x), bad.reference_forward(x))


@pytest.mark.parametrize("scale", [3e38, 1e30])
def test_finite_values_that_overflow_the_folding_name_the_layer(scale):
    """Values too large for the integer requantization (finite, so the checkpoint check lets
    them through) are refused with the layer's name instead of an overflow deep inside."""
    torch.manual_seed(0)
    model = build_model("mlp", width=1 / 32, weight_bits=4).eval()
    with torch.no_grad():
        model[3].weight[0] = scale  # the first BatchNorm's scale
    with pytest.raises(UserInputError, match="'2'.*folded requantization"):
        import_torch(model, source="m.ckpt")
