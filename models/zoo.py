"""Model zoo: QAT networks built only from the `models.quant` contract modules.

Every QConv2d / QLinear input is the output of a QuantAct or InputQuant, possibly through
pooling, flatten or a residual add of two QuantAct outputs with the same scale; between a
conv/linear and the next QuantAct stand only BatchNorm, max pooling, Hardtanh/ReLU6 or
`LogitScale`. Modules are plain `nn.Sequential` and two small blocks with standard torch
ops, so `torch.fx.symbolic_trace` works on every model.

Activation ranges: Hardtanh networks use signed `QuantAct(hi=1)`; MobileNetV2 uses ReLU6 with
unsigned `QuantAct(hi=6)` and signed `QuantAct(hi=BOTTLENECK_HI)` on its linear bottlenecks.
Input images are float32 NCHW in [0, 1]; `InputQuant` normalizes them with the dataset's
mean/std and quantizes them to `input_bits` bits.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from memory_models.usererror import UserInputError
from models.quant import InputQuant, LogitScale, QConv2d, QLinear, QuantAct

__all__ = ["ARCHITECTURES", "build_model", "model_config", "BasicBlock", "InvertedResidual"]

ARCHITECTURES = ("mlp", "vgg3", "vgg7", "resnet18", "mobilenetv2")

# Bounds of build_model's arguments: far beyond any model the simulator can run, and they
# keep a tampered checkpoint from asking for absurd allocations.
MAX_WIDTH = 64.0
MAX_CHANNELS = 1024
MAX_INPUT_SIZE = 1024
MAX_CLASSES = 100_000

BOTTLENECK_HI = 4.0  # range [-4, 4] of MobileNetV2's linear bottleneck activations


class _Q:
    """Shared layer options of one model (weight bits, activation bits, granularity)."""

    def __init__(self, weight_bits: int, act_bits: int, granularity: str):
        self.wb, self.ab, self.gran = weight_bits, act_bits, granularity

    def conv(self, cin, cout, k=3, stride=1, padding=None, groups=1, bias=False) -> QConv2d:
        pad = k // 2 if padding is None else padding
        return QConv2d(
            cin, cout, k, stride=stride, padding=pad, groups=groups, bias=bias,
            weight_bits=self.wb, granularity=self.gran,
        )  # fmt: skip

    def linear(self, cin, cout, bias=True) -> QLinear:
        return QLinear(cin, cout, bias=bias, weight_bits=self.wb, granularity=self.gran)

    def act(self, hi: float = 1.0, signed: bool = True) -> QuantAct:
        return QuantAct(self.ab, hi=hi, signed=signed)

    def hardtanh_q(self) -> list[nn.Module]:
        """Hardtanh followed by a signed QuantAct on [-1, 1]."""
        return [nn.Hardtanh(), self.act(1.0, True)]


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def _pooled(size: int, times: int) -> int:
    for _ in range(times):
        size //= 2
    if size < 1:
        raise ValueError("input size too small for this architecture")
    return size


def _conv_out(size: int, stride: int) -> int:
    """Spatial size after a 3x3 conv with padding 1 and `stride`."""
    return (size - 1) // stride + 1


def _mlp(q: _Q, cin: int, size: int, nc: int, width: float) -> list[nn.Module]:
    hidden = _ch(512, width)
    return [
        nn.Flatten(),
        q.linear(cin * size * size, hidden, bias=False), nn.BatchNorm1d(hidden), *q.hardtanh_q(),
        q.linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), *q.hardtanh_q(),
        q.linear(hidden, nc),
    ]  # fmt: skip


def _vgg3(q: _Q, cin: int, size: int, nc: int, width: float) -> list[nn.Module]:
    c, hidden = _ch(64, width), _ch(2048, width)
    s = _pooled(size, 2)
    return [
        q.conv(cin, c), nn.MaxPool2d(2), nn.BatchNorm2d(c), *q.hardtanh_q(),
        q.conv(c, c), nn.MaxPool2d(2), nn.BatchNorm2d(c), *q.hardtanh_q(),
        nn.Flatten(),
        q.linear(c * s * s, hidden, bias=False), nn.BatchNorm1d(hidden), *q.hardtanh_q(),
        q.linear(hidden, nc),
    ]  # fmt: skip


def _vgg7(q: _Q, cin: int, size: int, nc: int, width: float) -> list[nn.Module]:
    c1, c2, c3, hidden = _ch(128, width), _ch(256, width), _ch(512, width), _ch(1024, width)
    s = _pooled(size, 3)
    layers: list[nn.Module] = []
    for a, b, pool in ((cin, c1, False), (c1, c1, True), (c1, c2, False), (c2, c2, True),
                       (c2, c3, False), (c3, c3, True)):  # fmt: skip
        layers.append(q.conv(a, b))
        if pool:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.BatchNorm2d(b), *q.hardtanh_q()]
    return layers + [
        nn.Flatten(),
        q.linear(c3 * s * s, hidden, bias=False), nn.BatchNorm1d(hidden), *q.hardtanh_q(),
        q.linear(hidden, nc),
    ]  # fmt: skip


class BasicBlock(nn.Module):
    """ResNet basic block on QuantAct(hi=1) inputs.

    out = QuantAct(Hardtanh(branch(x) + shortcut(x))), where branch ends and shortcut ends
    in a QuantAct with the same bits and range (the identity shortcut is `x` itself, which
    is a QuantAct output already).
    """

    def __init__(self, q: _Q, cin: int, cout: int, stride: int):
        super().__init__()
        self.branch = nn.Sequential(
            q.conv(cin, cout, 3, stride), nn.BatchNorm2d(cout), *q.hardtanh_q(),
            q.conv(cout, cout, 3, 1), nn.BatchNorm2d(cout), q.act(1.0, True),
        )  # fmt: skip
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                q.conv(cin, cout, 1, stride, padding=0), nn.BatchNorm2d(cout), q.act(1.0, True)
            )
        else:
            self.shortcut = nn.Identity()
        self.post = nn.Sequential(*q.hardtanh_q())

    def forward(self, x):  # noqa: D102
        return self.post(self.branch(x) + self.shortcut(x))


def _resnet18(q: _Q, cin: int, size: int, nc: int, width: float) -> list[nn.Module]:
    widths = [_ch(w, width) for w in (64, 128, 256, 512)]
    layers: list[nn.Module] = [q.conv(cin, widths[0]), nn.BatchNorm2d(widths[0]), *q.hardtanh_q()]
    c, s = widths[0], size
    for i, w in enumerate(widths):
        for j in range(2):
            stride = 2 if (i > 0 and j == 0) else 1
            layers.append(BasicBlock(q, c, w, stride))
            c, s = w, _conv_out(s, stride)
    return layers + [nn.AdaptiveAvgPool2d(1), nn.Flatten(), q.linear(c, nc)]


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand, ReLU6] -> 3x3 depthwise, ReLU6 -> 1x1 linear project.

    Expanded activations are unsigned QuantAct(hi=6); the projection ends in a signed
    QuantAct(hi=BOTTLENECK_HI). With a residual (stride 1, cin == cout) the block returns
    QuantAct(Hardtanh(project(x) + x)) on the same signed range, so both addends share a scale.
    """

    def __init__(self, q: _Q, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [q.conv(cin, hid, 1, padding=0), nn.BatchNorm2d(hid), nn.ReLU6(),
                       q.act(6.0, False)]  # fmt: skip
        layers += [
            q.conv(hid, hid, 3, stride, groups=hid), nn.BatchNorm2d(hid), nn.ReLU6(),
            q.act(6.0, False),
            q.conv(hid, cout, 1, padding=0), nn.BatchNorm2d(cout), q.act(BOTTLENECK_HI, True),
        ]  # fmt: skip
        self.branch = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout
        self.post = (
            nn.Sequential(nn.Hardtanh(-BOTTLENECK_HI, BOTTLENECK_HI), q.act(BOTTLENECK_HI, True))
            if self.residual
            else nn.Identity()
        )

    def forward(self, x):  # noqa: D102
        if self.residual:
            return self.post(self.branch(x) + x)
        return self.branch(x)


# (expansion t, output channels c, repeats n, first stride s), CIFAR-style (stride-1 stem);
# a small MobileNetV2: the standard table with fewer repeats.
_MBV2_CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 2, 1),
             (6, 160, 2, 2), (6, 320, 1, 1))  # fmt: skip


def _mobilenetv2(q: _Q, cin: int, size: int, nc: int, width: float) -> list[nn.Module]:
    c = _ch(32, width)
    layers: list[nn.Module] = [q.conv(cin, c), nn.BatchNorm2d(c), nn.ReLU6(), q.act(6.0, False)]
    # The stem's output is unsigned [0, 6]; the first block (t = 1) has no residual (32 != 16).
    for t, cout, n, s in _MBV2_CFG:
        w = _ch(cout, width)
        for i in range(n):
            layers.append(InvertedResidual(q, c, w, s if i == 0 else 1, t))
            c = w
    last = _ch(1280, width)
    layers += [
        q.conv(c, last, 1, padding=0), nn.BatchNorm2d(last), nn.ReLU6(), q.act(6.0, False),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), q.linear(last, nc),
    ]  # fmt: skip
    return layers


_BUILDERS = {
    "mlp": _mlp,
    "vgg3": _vgg3,
    "vgg7": _vgg7,
    "resnet18": _resnet18,
    "mobilenetv2": _mobilenetv2,
}


def model_config(
    arch: str,
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    weight_bits: int = 8,
    act_bits: int = 8,
    input_bits: int = 8,
    granularity: str = "channel",
    width: float = 1.0,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    logit_scale: bool = True,
) -> dict[str, Any]:
    """Validated, JSON-serializable build_model arguments (the dict stored in checkpoints).

    mean/std default to 0.5 per channel. Raises UserInputError for impossible values.
    """
    src = "build_model"
    if arch not in _BUILDERS:
        raise UserInputError(src, "arch", f"unknown architecture {arch!r}",
                             f"use one of {', '.join(ARCHITECTURES)}")  # fmt: skip
    for name, val, lo, hi in (("num_classes", num_classes, 2, MAX_CLASSES),
                              ("in_channels", in_channels, 1, MAX_CHANNELS),
                              ("input_size", input_size, 4, MAX_INPUT_SIZE)):  # fmt: skip
        if not isinstance(val, int | float) or int(val) != val or not lo <= val <= hi:
            raise UserInputError(src, name, f"must be an integer in {lo}..{hi}, got {val!r}",
                                 f"pass {name} in {lo}..{hi}")  # fmt: skip
    if weight_bits not in (1, 2, 3, 4, 5, 6, 7, 8):
        raise UserInputError(src, "weight_bits", f"must be in 1..8, got {weight_bits!r}",
                             "pass weight_bits in 1..8")  # fmt: skip
    for name, val in (("act_bits", act_bits), ("input_bits", input_bits)):
        if int(val) != val or not 1 <= val <= 16:
            raise UserInputError(src, name, f"must be in 1..16, got {val!r}",
                                 f"pass {name} in 1..16")  # fmt: skip
    if granularity not in ("channel", "tensor"):
        raise UserInputError(src, "granularity", f"must be 'channel' or 'tensor', "
                             f"got {granularity!r}", "pass 'channel' or 'tensor'")  # fmt: skip
    if not (isinstance(width, int | float) and math.isfinite(width) and 0 < width <= MAX_WIDTH):
        raise UserInputError(src, "width", f"must be a number in (0, {MAX_WIDTH:g}], "
                             f"got {width!r}", f"pass a width in (0, {MAX_WIDTH:g}]")  # fmt: skip
    mean = [0.5] * in_channels if mean is None else [float(m) for m in mean]
    std = [0.5] * in_channels if std is None else [float(s) for s in std]
    if len(mean) != in_channels or len(std) != in_channels or min(std) <= 0:
        raise UserInputError(src, "mean/std", f"need {in_channels} values each and std > 0",
                             "pass one mean and one positive std per input channel")  # fmt: skip
    min_size = {"mlp": 1, "vgg3": 4, "vgg7": 8, "resnet18": 8, "mobilenetv2": 8}[arch]
    if input_size < min_size:
        raise UserInputError(src, "input_size", f"{arch} needs input_size >= {min_size}",
                             "use larger images or another architecture")  # fmt: skip
    return {
        "arch": arch,
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "input_size": int(input_size),
        "weight_bits": int(weight_bits),
        "act_bits": int(act_bits),
        "input_bits": int(input_bits),
        "granularity": granularity,
        "width": float(width),
        "mean": mean,
        "std": std,
        "logit_scale": bool(logit_scale),
    }


def build_model(arch: str, **kwargs: Any) -> nn.Sequential:
    """Build a zoo network (train mode, fresh weights from torch's global RNG).

    arch: one of ARCHITECTURES. kwargs (see `model_config`): num_classes=10, in_channels=1,
    input_size=28 (square images), weight_bits=8 (1 = binarized), act_bits=8, input_bits=8,
    granularity="channel"|"tensor", width=1.0 (channel multiplier), mean/std (per channel
    normalization, default 0.5), logit_scale=True (end with a learnable `LogitScale`; False
    leaves the logits unscaled, for the logit-scale ablation). The model takes float32 NCHW
    images in [0, 1] and returns float logits [N, num_classes]; `model.mcelsim_config` holds
    the full config.
    """
    if arch == "graph":  # a quantized graph (PTQ, Brevitas, ONNX import): models.graph
        from models.graph import build_graph_model

        return build_graph_model(**kwargs)
    cfg = model_config(arch, **kwargs)
    q = _Q(cfg["weight_bits"], cfg["act_bits"], cfg["granularity"])
    body = _BUILDERS[arch](
        q, cfg["in_channels"], cfg["input_size"], cfg["num_classes"], cfg["width"]
    )
    tail = [LogitScale()] if cfg["logit_scale"] else []
    model = nn.Sequential(
        InputQuant(cfg["mean"], cfg["std"], bits=cfg["input_bits"]), *body, *tail
    )
    model.mcelsim_config = cfg
    return model
