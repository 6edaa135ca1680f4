"""Export a zoo QAT model to an ONNX QuantizeLinear / DequantizeLinear (QDQ) graph.

torch's TorchScript exporter (`torch.onnx.export(dynamo=False)`) turns
`torch.fake_quantize_per_{tensor,channel}_affine` into QuantizeLinear + DequantizeLinear,
but only for the int8 range [-128, 127] and uint8 [0, 255]. The contract's narrower ranges
(e.g. [-127, 127], or [-7, 7] for 4 bits) are written as a Clip to [qmin * s, qmax * s]
before a full-range quantizer, which rounds to exactly the same codes. Weights are exported
as their fake-quantized floats q * s followed by a per-channel QDQ with the same scale
(the quantizer gives back q). The ONNX model therefore computes the zoo model's codes;
onnxruntime and `simulator.import_onnx` both read it.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn
from torch.nn import functional as F

from models.quant import InputQuant, LogitScale, QConv2d, QLinear, QuantAct

__all__ = ["export_onnx"]

OPSET = 13


def _fq_act(x: torch.Tensor, scale: float, qmin: int, qmax: int) -> torch.Tensor:
    lo, hi = (-128, 127) if qmin < 0 else (0, 255)
    if (qmin, qmax) != (lo, hi):
        x = torch.clamp(x, qmin * scale, qmax * scale)
    return torch.fake_quantize_per_tensor_affine(x, scale, 0, lo, hi)


class _Act(nn.Module):
    def __init__(self, q: QuantAct):
        super().__init__()
        if q.bits == 1 or q.bits > 8:
            raise ValueError("ONNX QDQ export needs 2..8-bit activations")
        self.scale, self.qmin, self.qmax = float(q.scale), int(q.qmin), int(q.qmax)

    def forward(self, x):  # noqa: D102
        return _fq_act(x, self.scale, self.qmin, self.qmax)


class _Input(_Act):
    def __init__(self, q: InputQuant):
        super().__init__(q)
        self.register_buffer("mean", q.mean.clone())
        self.register_buffer("std", q.std.clone())

    def forward(self, x):  # noqa: D102
        return super().forward((x - self.mean) / self.std)


class _Layer(nn.Module):
    def __init__(self, layer: QConv2d | QLinear):
        super().__init__()
        if layer.weight_bits == 1:
            raise ValueError("ONNX QDQ export needs 2..8-bit weights")
        self.layer = layer
        codes, scale = layer.weight_codes()
        shape = (-1,) + (1,) * (codes.dim() - 1)
        self.register_buffer("w", codes.float() * scale.reshape(shape))
        self.register_buffer("scale", scale.float())

    def forward(self, x):  # noqa: D102
        zero = torch.zeros(self.scale.shape[0], dtype=torch.int32)
        w = torch.fake_quantize_per_channel_affine(self.w, self.scale, zero, 0, -128, 127)
        m = self.layer
        if isinstance(m, QConv2d):
            return F.conv2d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)
        return F.linear(x, w, m.bias)


class _Scale(nn.Module):
    def __init__(self, m: LogitScale):
        super().__init__()
        self.register_buffer("k", m.log_scale.detach().exp().reshape(()))

    def forward(self, x):  # noqa: D102
        return x * self.k


def _replace(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, InputQuant):
            setattr(module, name, _Input(child))
        elif isinstance(child, QuantAct):
            setattr(module, name, _Act(child))
        elif isinstance(child, QConv2d | QLinear):
            setattr(module, name, _Layer(child))
        elif isinstance(child, LogitScale):
            setattr(module, name, _Scale(child))
        else:
            _replace(child)


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...]) -> None:
    """Write `model` (models.quant layers, 2..8 bits) as a QDQ ONNX file, batch axis dynamic."""
    import warnings

    view = copy.deepcopy(model).eval()
    _replace(view)
    x = torch.zeros((1, *input_shape), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(view, (x,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}})  # fmt: skip


def quantize_biases(path: str | os.PathLike) -> int:
    """Rewrite float Conv / Gemm biases of a QDQ file as int32 at scale s_x * s_w[c].

    The int32 bias is what integer kernels add (and what mcelsim stores); with it,
    onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear into its integer
    QLinearConv. Returns the number of biases rewritten.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t)
              for n in g.node if n.op_type == "Constant"}  # fmt: skip

    def value(name):
        return numpy_helper.to_array(inits[name]) if name in inits else consts.get(name)

    producer = {o: n for n in g.node for o in n.output}
    new_nodes, count = [], 0
    for node in g.node:
        dqs = [producer.get(i) for i in node.input[:2]]
        ok = node.op_type in ("Conv", "Gemm") and len(node.input) == 3 and node.input[2] in inits
        if ok and all(d is not None and d.op_type == "DequantizeLinear" for d in dqs):
            s_x, s_w = value(dqs[0].input[1]), value(dqs[1].input[1])
            bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            if s_x is not None and s_w is not None and s_x.size == 1:
                scale = (np.float32(s_x) * s_w.astype(np.float32)).astype(np.float32)
                scale = np.broadcast_to(scale, bias.shape).astype(np.float32)
                codes = np.rint(bias / scale.astype(np.float64)).astype(np.int32)
                base = node.input[2] + "_int32"
                g.initializer.extend([numpy_helper.from_array(codes, base),
                                      numpy_helper.from_array(scale, base + "_scale")])
                new_nodes.append(helper.make_node("DequantizeLinear", [base, base + "_scale"],
                                                  [base + "_dq"], axis=0))  # fmt: skip
                node.input[2] = base + "_dq"
                count += 1
        new_nodes.append(node)
    del g.node[:]
    g.node.extend(new_nodes)
    onnx.save(model, str(path))
    return count
