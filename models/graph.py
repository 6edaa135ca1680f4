"""Quantized graph: the one description every front end (PTQ, Brevitas, ONNX) produces.

A *graph* is a JSON-serializable dict; `GraphNet(graph)` builds it from the contract's
modules (`models.quant`), so the PyTorch importer (`simulator.importer.import_torch`)
lowers it exactly like a zoo model, and `save_checkpoint` / `load_checkpoint` store it as
an ordinary checkpoint (arch "graph", the graph in the model config, tensors in safetensors).

graph = {
  "input": {"mean": [C floats], "std": [C floats], "scale": s, "qmin": int, "qmax": int,
            "bits": b},             # q = clamp(rint(((image - mean) / std) / s), qmin, qmax)
  "input_shape": [C, H, W], "num_classes": K,
  "nodes": [{"name": str, "op": OP, "src": [names], ...attributes}],  # topological order
  "output": name,
  "rounding": "half-even" | "half-up",  # requantization ties (simulator.ops.ROUNDING)
}
The input value is named "input". Ops and their attributes:
  conv     in_channels, out_channels, kernel [kh, kw], stride, padding, groups, bits, bias
           (bool); tensors <name>.codes (int8 [O, I/g, kh, kw]), <name>.scale (float32 [O]),
           <name>.bias (float32 [O], real units). Weight = codes * scale per output channel.
  linear   in_features, out_features, bits, bias; tensors as conv (codes int8 [O, F]).
  quant    bits, scale, qmin, qmax: x -> clamp(rint(x / scale), qmin, qmax) * scale, zero point
           0 (an affine quantizer with zero point z is the range [qmin - z, qmax - z]).
  affine   channels; tensors <name>.gain, <name>.shift (float32 [C]): x * gain[c] + shift[c]
           (BatchNorm in eval mode, a constant Mul / Add).
  clamp    lo, hi (null = unbounded): ReLU, ReLU6, Hardtanh, Clip.
  maxpool  kernel, stride, padding.   avgpool  kernel, stride, padding (count_include_pad).
  gap      global average pooling to 1x1.   flatten  [N, C, H, W] -> [N, C*H*W].
  add      two sources with the same quantizer scale.
Each conv / linear node may carry "info" (a dict for the import report: "folded_bn",
"clipped" fraction of weights clipped by PTQ, "source" op name).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from memory_models.usererror import UserInputError
from models.quant import InputQuant, QConv2d, QLinear, QuantAct

__all__ = ["GraphNet", "CodeConv2d", "CodeLinear", "RangeAct", "ChannelAffine",
           "build_graph_model", "graph_config", "OPS"]  # fmt: skip

OPS = ("conv", "linear", "quant", "affine", "clamp", "maxpool", "avgpool", "gap", "flatten",
       "add")  # fmt: skip


class _CodeWeights:
    """Weights given as integer codes and a per-output-channel scale (not re-derived)."""

    codes: torch.Tensor
    scale: torch.Tensor

    def _init_codes(self, bits: int) -> None:
        self.weight.requires_grad_(False)
        self.register_buffer("codes", torch.zeros(self.weight.shape, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(self.weight.shape[0], dtype=torch.float32))
        self.granularity = "channel"

    def set_codes(self, codes: torch.Tensor, scale: torch.Tensor) -> None:
        self.codes.copy_(codes.to(torch.int8))
        self.scale.copy_(scale.to(torch.float32))
        self.weight.data.copy_(self.quantized_weight().detach())

    def quantized_weight(self) -> torch.Tensor:  # noqa: D102
        shape = (-1,) + (1,) * (self.codes.dim() - 1)
        w = self.codes.to(torch.float32) * self.scale.reshape(shape)
        if self.weight_fault is not None:
            w = self.weight_fault(self, w)
        return w

    @torch.no_grad()
    def weight_codes(self) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        return self.codes.clone(), self.scale.clone()


class CodeConv2d(_CodeWeights, QConv2d):
    """QConv2d whose weight is `codes * scale` (int8 codes, float32 scale per channel)."""

    def __init__(self, *args, weight_bits: int = 8, **kwargs):
        super().__init__(*args, weight_bits=weight_bits, **kwargs)
        self._init_codes(weight_bits)


class CodeLinear(_CodeWeights, QLinear):
    """QLinear whose weight is `codes * scale` (int8 codes, float32 scale per channel)."""

    def __init__(self, *args, weight_bits: int = 8, **kwargs):
        super().__init__(*args, weight_bits=weight_bits, **kwargs)
        self._init_codes(weight_bits)


class RangeAct(QuantAct):
    """QuantAct with a given scale and code range [qmin, qmax] (qmin <= 0 <= qmax)."""

    def __init__(self, bits: int, scale: float, qmin: int, qmax: int):
        super().__init__(bits=bits, hi=1.0, signed=qmin < 0)
        if bits > 1:
            self.scale, self.qmin, self.qmax = float(scale), int(qmin), int(qmax)
            self.hi = self.scale * max(abs(self.qmin), abs(self.qmax))


class RangeInput(InputQuant):
    """InputQuant with a given scale and code range."""

    def __init__(self, mean, std, bits: int, scale: float, qmin: int, qmax: int):
        super().__init__(list(mean), list(std), bits=bits)
        self.scale, self.qmin, self.qmax = float(scale), int(qmin), int(qmax)
        self.signed = self.qmin < 0
        self.hi = self.scale * max(abs(self.qmin), abs(self.qmax))


class ChannelAffine(nn.Module):
    """x * gain[c] + shift[c] per channel (dim 1); folded into requantization on import."""

    mcelsim_leaf = True  # one node for the importer's tracer

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("gain", torch.ones(channels))
        self.register_buffer("shift", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.gain.reshape(shape) + self.shift.reshape(shape)


def _module(node: dict[str, Any]) -> nn.Module | None:
    op = node["op"]
    if op == "conv":
        return CodeConv2d(node["in_channels"], node["out_channels"], tuple(node["kernel"]),
                          stride=tuple(node["stride"]), padding=tuple(node["padding"]),
                          groups=node["groups"], bias=node["bias"],
                          weight_bits=node["bits"])  # fmt: skip
    if op == "linear":
        return CodeLinear(node["in_features"], node["out_features"], bias=node["bias"],
                          weight_bits=node["bits"])  # fmt: skip
    if op == "quant":
        return RangeAct(node["bits"], node["scale"], node["qmin"], node["qmax"])
    if op == "affine":
        return ChannelAffine(node["channels"])
    if op == "clamp":
        lo = -float("inf") if node["lo"] is None else float(node["lo"])
        hi = float("inf") if node["hi"] is None else float(node["hi"])
        return nn.ReLU() if (lo, hi) == (0.0, float("inf")) else nn.Hardtanh(lo, hi)
    if op == "maxpool":
        return nn.MaxPool2d(tuple(node["kernel"]), tuple(node["stride"]), tuple(node["padding"]))
    if op == "avgpool":
        return nn.AvgPool2d(tuple(node["kernel"]), tuple(node["stride"]), tuple(node["padding"]))
    if op == "gap":
        return nn.AdaptiveAvgPool2d(1)
    if op == "flatten":
        return nn.Flatten()
    if op == "add":
        return None
    raise UserInputError("graph", node.get("name"), f"unknown op {op!r}",
                         f"use one of {', '.join(OPS)}")  # fmt: skip


def _key(name: str) -> str:
    return name.replace(".", "_")


class GraphNet(nn.Module):
    """Runs a quantized graph (see the module docstring) with fake quantization.

    Takes float32 NCHW images in [0, 1] and returns float logits; traced by torch.fx into
    the same modules the importer lowers.
    """

    def __init__(self, graph: dict[str, Any]):
        super().__init__()
        self.graph = copy.deepcopy(graph)
        inp = graph["input"]
        self.input_quant = RangeInput(inp["mean"], inp["std"], inp["bits"], inp["scale"],
                                      inp["qmin"], inp["qmax"])  # fmt: skip
        self.layers = nn.ModuleDict()
        self.steps: list[tuple[str, str, tuple[str, ...]]] = []
        for node in graph["nodes"]:
            mod = _module(node)
            if mod is not None:
                self.layers[_key(node["name"])] = mod
            self.steps.append((node["op"], node["name"], tuple(node["src"])))
        self.output = graph["output"]

    def layer(self, name: str) -> nn.Module:
        """The module of node `name`."""
        return self.layers[_key(name)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # noqa: D102
        env = {"input": self.input_quant(images)}
        for op, name, src in self.steps:
            if op == "add":
                env[name] = env[src[0]] + env[src[1]]
            else:
                env[name] = self.layers[_key(name)](env[src[0]])
        return env[self.output]


def graph_config(graph: dict[str, Any], *, weight_bits: int, act_bits: int) -> dict[str, Any]:
    """The checkpoint config (`model.mcelsim_config`) of a graph model."""
    c, h, w = graph["input_shape"]
    inp = graph["input"]
    return {"arch": "graph", "graph": graph, "num_classes": int(graph["num_classes"]),
            "in_channels": int(c), "input_size": int(h), "input_width": int(w),
            "weight_bits": int(weight_bits), "act_bits": int(act_bits),
            "input_bits": int(inp["bits"]), "granularity": "channel",
            "mean": list(inp["mean"]), "std": list(inp["std"])}  # fmt: skip


def build_graph_model(**cfg: Any) -> GraphNet:
    """GraphNet from a checkpoint config (`graph_config`); weights left at zero codes."""
    graph = cfg.get("graph")
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        raise UserInputError("build_model", "graph", "graph description missing or malformed",
                             "re-create the checkpoint with `mcelsim quantize`")  # fmt: skip
    try:
        model = GraphNet(graph)
    except (KeyError, TypeError, ValueError) as err:
        raise UserInputError("build_model", "graph", f"malformed graph description ({err})",
                             "re-create the checkpoint with `mcelsim quantize`") from err
    model.mcelsim_config = dict(cfg)
    return model
