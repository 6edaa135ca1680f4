"""Quantization-aware training layers, and the integer contract the simulator reproduces.

The PyTorch model computes in float with fake quantization; the integer engine in
`simulator` computes the same network with integers. This docstring is the contract
between them; `simulator`'s importer reads these modules and tests against it.

Rounding everywhere is round-half-to-even (`torch.round`, `np.rint`); every quantizer
has zero point 0.

Weights (`QConv2d`, `QLinear`), b = `weight_bits`:
  b >= 2  symmetric narrow range, q in [-(2^(b-1) - 1), 2^(b-1) - 1]
          (b=2 is ternary {-1, 0, 1}; 4 bits -> [-7, 7]; 8 bits -> [-127, 127]).
          scale s = max|w| / qmax, per output channel (`granularity="channel"`, the
          default) or one for the whole tensor (`granularity="tensor"`, as in the MCEL
          authors' framework); s = 1 where max|w| = 0.
          q = clamp(round(w / s), -qmax, qmax); the forward uses w_fq = q * s
          (torch.fake_quantize_per_{channel,tensor}_affine: straight-through gradient,
          zero outside the clamp range).
  b == 1  binarized: q = +1 where w >= 0 else -1; s = mean|w| (per channel or tensor).
          Forward w_fq = q * s, straight-through gradient clipped to |w| <= 1.
  `weight_codes()` returns (q as int8 [out, ...], s as float32 [out]) (a per-tensor scale
  is repeated per channel). Bits of q are what is stored in memory.
Bias: float in PyTorch; the integer engine stores it as int32 at the accumulator scale
  s_w[c] * s_in, rounded half to even.
Activations (`QuantAct`), b = `bits`, fixed range [lo, hi] with lo in {-hi, 0}:
  b >= 2  signed (lo = -hi): q in [-(2^(b-1) - 1), 2^(b-1) - 1], s = hi / qmax;
          unsigned (lo = 0): q in [0, 2^b - 1], s = hi / qmax.
          q = clamp(round(x / s), qmin, qmax), x_fq = q * s.
  b == 1  sign: q = +1 where x >= 0 else -1, s = 1 (binarized networks, XNOR-popcount);
          straight-through gradient clipped to |x| <= 1.
Input (`InputQuant`, first module of every zoo model): images in [0, 1], NCHW, float32;
  x = (image - mean[c]) / std[c], then a signed `QuantAct` with hi = max over channels of
  max(|0 - mean| / std, |1 - mean| / std) and `bits` (8 by default).
Every QConv2d / QLinear input is the output of a QuantAct or InputQuant, possibly through
  max/avg pooling, flatten or a residual add of two QuantAct outputs with the same scale.
  Between a conv/linear and the next QuantAct only per-channel monotone float ops may
  stand (bias, BatchNorm, Hardtanh/ReLU/ReLU6, max pooling, `LogitScale`); the integer
  engine folds them into one requantization per channel.
`LogitScale`: a learnable positive scalar that multiplies the logits (argmax unchanged).

Not part of the integer contract: `weight_bits` is limited to 1..8 (codes are int8);
`layer.weight_fault` (None by default) lets training replace w_fq by a corrupted copy
(`models.training.inject_bit_errors`); `QuantTracer` is a torch.fx tracer that keeps the
contract's modules as leaves, and `normalize_images` is a torch.fx leaf function, so that
plain `torch.fx.symbolic_trace` also works on every zoo model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

__all__ = [
    "weight_qmax",
    "act_range",
    "quantize_weight",
    "QuantAct",
    "InputQuant",
    "QConv2d",
    "QLinear",
    "LogitScale",
    "QUANT_MODULES",
    "QuantTracer",
]


MAX_WEIGHT_BITS = 8  # weight_codes() returns int8


def weight_qmax(bits: int) -> int:
    """Largest weight code for `bits` (1 for binarized weights)."""
    if bits < 1 or bits > 16:
        raise ValueError(f"weight bits must be in 1..16, got {bits}")
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


def act_range(bits: int, signed: bool) -> tuple[int, int]:
    """(qmin, qmax) of an activation code."""
    if bits == 1:
        return -1, 1
    if signed:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


class _SignSTE(torch.autograd.Function):
    """sign(x) in {-1, +1} (0 -> +1), gradient passed where |x| <= 1."""

    @staticmethod
    def forward(ctx, x):  # noqa: D102
        ctx.save_for_backward(x)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def _channel_reduce(w: torch.Tensor, how: str) -> torch.Tensor:
    flat = w.reshape(w.shape[0], -1).abs()
    return flat.amax(dim=1) if how == "max" else flat.mean(dim=1)


def weight_scale(w: torch.Tensor, bits: int, granularity: str) -> torch.Tensor:
    """float32 scale per output channel, shape [out] (per-tensor scales repeated)."""
    how = "mean" if bits == 1 else "max"
    w = w.detach()
    if granularity == "channel":
        s = _channel_reduce(w, how)
    elif granularity == "tensor":
        s = (w.abs().amax() if how == "max" else w.abs().mean()).expand(w.shape[0])
    else:
        raise ValueError(f"granularity must be 'channel' or 'tensor', got {granularity!r}")
    if bits > 1:
        s = s / weight_qmax(bits)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return s.to(torch.float32).contiguous()


def quantize_weight(w: torch.Tensor, bits: int, granularity: str = "channel") -> torch.Tensor:
    """Fake-quantized weight w_fq = q * s with a straight-through gradient (see contract)."""
    s = weight_scale(w, bits, granularity)
    shape = (-1,) + (1,) * (w.dim() - 1)
    if bits == 1:
        return _SignSTE.apply(w) * s.reshape(shape)
    qmax = weight_qmax(bits)
    zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, s, zero, 0, -qmax, qmax)


class _QuantWeightMixin:
    weight: torch.Tensor
    weight_bits: int
    granularity: str
    # Optional hook (training with injected bit errors): fn(layer, w_fq) -> w_fq used in the
    # forward. None (the default) is the contract's plain fake-quantized weight.
    weight_fault: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None

    def _init_quant(self, weight_bits: int, granularity: str) -> None:
        weight_qmax(weight_bits)
        if weight_bits > MAX_WEIGHT_BITS:
            raise ValueError(f"weight bits must be in 1..{MAX_WEIGHT_BITS}, got {weight_bits}")
        if granularity not in ("channel", "tensor"):
            raise ValueError(f"granularity must be 'channel' or 'tensor', got {granularity!r}")
        self.weight_bits = int(weight_bits)
        self.granularity = granularity
        self.weight_fault = None

    def quantized_weight(self) -> torch.Tensor:
        w = quantize_weight(self.weight, self.weight_bits, self.granularity)
        if self.weight_fault is not None:
            w = self.weight_fault(self, w)
        return w

    @torch.no_grad()
    def weight_codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(q int8 [out, ...], s float32 [out]) such that q * s is the forward weight."""
        s = weight_scale(self.weight, self.weight_bits, self.granularity)
        shape = (-1,) + (1,) * (self.weight.dim() - 1)
        w_fq = quantize_weight(self.weight, self.weight_bits, self.granularity)
        q = torch.round(w_fq / s.reshape(shape))
        return q.to(torch.int8), s


class QConv2d(_QuantWeightMixin, nn.Conv2d):
    """nn.Conv2d with `weight_bits`-bit weights (see the module contract)."""

    def __init__(self, *args, weight_bits: int = 8, granularity: str = "channel", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quant(weight_bits, granularity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._conv_forward(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:  # noqa: D102
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}, {self.granularity}"


class QLinear(_QuantWeightMixin, nn.Linear):
    """nn.Linear with `weight_bits`-bit weights (see the module contract)."""

    def __init__(self, *args, weight_bits: int = 8, granularity: str = "channel", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quant(weight_bits, granularity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:  # noqa: D102
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}, {self.granularity}"


class QuantAct(nn.Module):
    """Fixed-range activation quantizer: x -> q * s (see the module contract)."""

    def __init__(self, bits: int = 8, hi: float = 1.0, signed: bool = True):
        super().__init__()
        if bits < 1 or bits > 16:
            raise ValueError(f"activation bits must be in 1..16, got {bits}")
        self.bits = int(bits)
        self.signed = bool(signed) or bits == 1
        self.qmin, self.qmax = act_range(self.bits, self.signed)
        self.hi = float(hi)
        self.scale = 1.0 if bits == 1 else self.hi / self.qmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.bits == 1:
            return _SignSTE.apply(x)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, 0, self.qmin, self.qmax)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes (int32) of `x` under this quantizer."""
        return torch.round(self.forward(x) / self.scale).to(torch.int32)

    def extra_repr(self) -> str:  # noqa: D102
        return f"bits={self.bits}, range=[{-self.hi if self.signed else 0}, {self.hi}]"


def normalize_images(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(images - mean[c]) / std[c]; mean, std shaped [1, C, 1, 1].

    Flat images [N, C*H*W] (one channel) use channel 0. A leaf for torch.fx (see below).
    """
    if images.dim() == 2:  # flat images for an MLP: [N, C*H*W], one channel
        return (images - mean.reshape(1, -1)[:, :1]) / std.reshape(1, -1)[:, :1]
    return (images - mean) / std


# Keep the shape-dependent branch out of symbolic traces: one call_function node.
torch.fx.wrap("normalize_images")


class InputQuant(QuantAct):
    """Normalize [0, 1] images per channel, then quantize them signed to `bits` bits."""

    def __init__(self, mean: list[float], std: list[float], bits: int = 8):
        hi = max(max(abs(0 - m) / s, abs(1 - m) / s) for m, s in zip(mean, std, strict=True))
        super().__init__(bits=bits, hi=hi, signed=True)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return normalize_images(images, self.mean, self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return super().forward(self.normalize(images))

    def extra_repr(self) -> str:  # noqa: D102
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}, " + (
            super().extra_repr()
        )


class LogitScale(nn.Module):
    """Learnable positive scalar on the logits: y * exp(log_scale)."""

    def __init__(self, init: float = 1.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init), dtype=torch.float32))

    def forward(self, y: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return y * self.log_scale.exp()


# The modules of this contract, for importers that keep them whole in a torch.fx graph.
QUANT_MODULES = (QConv2d, QLinear, QuantAct, InputQuant, LogitScale)


class QuantTracer(torch.fx.Tracer):
    """torch.fx tracer that keeps the contract's modules (and modules with a true
    `mcelsim_leaf` attribute, e.g. `models.graph.ChannelAffine`) as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:  # noqa: D102
        if isinstance(m, QUANT_MODULES) or getattr(m, "mcelsim_leaf", False):
            return True
        return super().is_leaf_module(m, module_qualified_name)
