"""ONNX QuantizeLinear / DequantizeLinear (QDQ) graphs -> quantized graph -> IntegerNetwork.

`import_onnx(path)` reads the file with the `onnx` package and writes the same graph
description (`models.graph`) the PTQ and Brevitas front ends write; the PyTorch importer
lowers it. Semantics (ONNX operator spec):
  QuantizeLinear    q = saturate(round_half_even(x / s) + z), int8 / uint8 (int4 / uint4)
  DequantizeLinear  x = (q - z) * s
A Q -> DQ pair on activations is a quantizer with zero point 0 on the range
[qmin - z, qmax - z] (exact: q - z = clamp(round(x / s), qmin - z, qmax - z)). Weights are a
DQ of a constant (or of Q of a constant, folded here with the spec's rounding) with zero
point 0, scale per output channel or per tensor; their bit width is the narrowest two's
complement range holding the codes (4 bits for codes in [-8, 7]). Sub / Div / Mul / Add by
constants before the first Q become the input normalization; after it, per-channel affine
maps. QLinearConv / QLinearMatMul are read as their Q / DQ equivalent.
Supported ops: SUPPORTED. Anything else is a UserInputError naming the node and its op.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from memory_models.usererror import UserInputError
from simulator.network import IntegerNetwork

__all__ = ["import_onnx", "onnx_model", "SUPPORTED"]

SUPPORTED = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "Conv",
             "Gemm", "MatMul", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
             "Add", "Sub", "Mul", "Div", "BatchNormalization", "Flatten", "Reshape", "Identity",
             "Constant", "Dropout", "Transpose (of weights)")  # fmt: skip
_FIX = f"use only {', '.join(SUPPORTED)}"


def import_onnx(path: str | os.PathLike, rounding: str = "half-even") -> IntegerNetwork:
    """IntegerNetwork of a QDQ ONNX model; net.meta["import_report"] says what was done.

    rounding: requantization ties "half-even" (the ONNX spec's QuantizeLinear, the default)
    or "half-up".
    """
    from simulator.import_report import layer_report
    from simulator.importer import import_torch

    model = onnx_model(path)
    net = import_torch(model, meta={"input_shape": model.graph["input_shape"]},
                       source=str(path), rounding=rounding)  # fmt: skip
    net.meta["import_report"] = layer_report(model, net)
    return net


def onnx_model(path: str | os.PathLike):
    """The `models.graph.GraphNet` (fake-quant PyTorch model) of a QDQ ONNX file."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as err:
        raise UserInputError(path, None, "the onnx package is not installed",
                             "pip install 'mcelsim[onnx]'") from err  # fmt: skip
    if not os.path.isfile(path):
        raise UserInputError(path, None, "ONNX file not found", "check the path")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as err:  # onnx raises DecodeError, ValidationError, ...
        raise UserInputError(path, None, f"not a valid ONNX model ({str(err).splitlines()[0]})",
                             "export it again (torch.onnx.export)") from err  # fmt: skip
    reader = _Reader(str(path), proto, numpy_helper)
    graph, tensors = reader.run()
    from models.graph import GraphNet, graph_config

    model = GraphNet(graph)
    state = model.state_dict()
    for name, arrays in tensors.items():
        for key, arr in arrays.items():
            k = f"layers.{name.replace('.', '_')}.{key}"
            state[k] = _torch(arr).to(state[k].dtype)
    model.load_state_dict(state, strict=True)
    for layer in model.layers.values():
        if hasattr(layer, "set_codes"):
            layer.set_codes(layer.codes, layer.scale)
    bits = [n["bits"] for n in graph["nodes"] if n["op"] in ("conv", "linear")]
    acts = [n["bits"] for n in graph["nodes"] if n["op"] == "quant"] or [8]
    model.mcelsim_config = graph_config(graph, weight_bits=max(bits or [8]), act_bits=max(acts))
    return model.eval()


def _torch(arr):
    import torch

    return torch.from_numpy(np.ascontiguousarray(arr))


# TensorProto element type -> code range: UINT8, INT8, UINT4, INT4
_RANGES = {2: (0, 255), 3: (-128, 127), 21: (0, 15), 22: (-8, 7)}


class _Reader:
    """Walks the ONNX nodes (topologically sorted) into graph nodes.

    Values: ("const", array) | ("image", mean, std) | ("f", name) float graph value |
    ("q", name, scale) quantized graph value | ("qc", src value, scale, zp, qmin, qmax, bits)
    a QuantizeLinear output not dequantized yet | ("w", codes, scale) a quantized weight.
    """

    def __init__(self, path: str, proto, numpy_helper):
        self.path, self.proto, self.nh = path, proto, numpy_helper
        self.env: dict[str, tuple] = {}
        self.nodes: list[dict[str, Any]] = []
        self.tensors: dict[str, dict[str, np.ndarray]] = {}
        self.input: dict[str, Any] | None = None
        self.count = 0

    def fail(self, node, problem, fix=_FIX):
        where = f"node {node.name or '?'} ({node.op_type})" if node is not None else None
        raise UserInputError(self.path, where, problem, fix)

    def emit(self, node: dict[str, Any]) -> str:
        self.count += 1
        node["name"] = node.get("name") or f"n{self.count}"
        self.nodes.append(node)
        return node["name"]

    def const(self, node, name: str) -> np.ndarray:
        v = self.env.get(name)
        if v is None or v[0] != "const":
            self.fail(node, f"input {name!r} must be a constant")
        return v[1]

    def run(self):
        g = self.proto.graph
        for init in g.initializer:
            self.env[init.name] = ("const", self.nh.to_array(init))
        inputs = [i for i in g.input if i.name not in self.env]
        if len(inputs) != 1:
            self.fail(None, f"the model has {len(inputs)} inputs, expected one image tensor")
        dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
        if len(dims) != 4 or min(dims[1:]) < 1:
            self.fail(None, f"input {inputs[0].name!r} has shape {dims}, expected [N, C, H, W]",
                      "export with a fixed C, H, W")  # fmt: skip
        self.shape = dims[1:]
        c = dims[1]
        self.env[inputs[0].name] = ("image", np.zeros(c), np.ones(c), -np.inf, np.inf)
        for node in g.node:
            if not hasattr(self, "op_" + node.op_type) or node.domain not in ("", "ai.onnx"):
                self.fail(node, f"unsupported op {node.op_type}")
            out = getattr(self, "op_" + node.op_type)(node, _attrs(node, self.nh))
            if out is not None:
                self.env[node.output[0]] = out
        if len(g.output) != 1:
            self.fail(None, f"the model has {len(g.output)} outputs, expected one logits tensor")
        last = self.env.get(g.output[0].name)
        if last is None or last[0] not in ("f", "q"):
            self.fail(None, "the output is not computed from the input")
        if self.input is None:
            self.fail(None, "the input images are never quantized (no QuantizeLinear)",
                      "quantize the input with QuantizeLinear / DequantizeLinear")  # fmt: skip
        out_node = next(n for n in self.nodes if n["name"] == last[1])
        classes = next((n["out_features"] for n in reversed(self.nodes) if n["op"] == "linear"),
                       None)  # fmt: skip
        if classes is None:
            self.fail(None, "no Gemm / MatMul gives the logits")
        del out_node
        graph = {"input": self.input, "input_shape": [int(d) for d in self.shape],
                 "num_classes": int(classes), "nodes": self.nodes, "output": last[1],
                 "rounding": "half-even"}
        return graph, self.tensors

    def value(self, node, i=0, kinds=("f", "q")):
        name = node.input[i]
        v = self.env.get(name)
        if v is None:
            self.fail(node, f"input {name!r} is not produced by a supported node")
        if v[0] == "qc":  # a QuantizeLinear output used without DequantizeLinear
            self.fail(node, "takes quantized codes without a DequantizeLinear",
                      "put a DequantizeLinear before it")  # fmt: skip
        if v[0] not in kinds:
            self.fail(node, f"input {name!r} has the wrong kind ({v[0]})")
        return v

    # ----------------------------------------------------------- constants
    def op_Constant(self, node, a):
        if "value" not in a:
            self.fail(node, "Constant without a tensor value")
        return ("const", a["value"])

    def op_Identity(self, node, a):
        return self.env.get(node.input[0]) or self.fail(node, "unknown input")

    op_Dropout = op_Identity

    def op_Transpose(self, node, a):
        w = self.env.get(node.input[0])
        if w is None or w[0] != "w" or w[1].ndim != 2 or list(a.get("perm", [1, 0])) != [1, 0]:
            self.fail(node, "Transpose of anything but a 2-D quantized weight")
        _, codes, s, axis = w
        return ("w", codes.T, s, 1 - axis % 2)

    # ------------------------------------------------------ quantization
    def op_QuantizeLinear(self, node, a):
        s, z, lo, hi, bits = self.qparams(node, 1, a)
        x = self.env.get(node.input[0])
        if x is None:
            self.fail(node, "unknown input")
        if x[0] == "const":  # fold: the spec's rounding, half to even
            axis = int(a.get("axis", 1))
            q = np.clip(np.rint(x[1] / _bcast(s, x[1].ndim, axis)) + _bcast(z, x[1].ndim, axis),
                        lo, hi)  # fmt: skip
            return ("const", q.astype(np.int32), ("q", s, z, axis, bits))
        if np.ndim(s) or np.ndim(z):
            self.fail(node, "per-channel activation quantizer", "use one scale per tensor")
        return ("qc", x, float(s), int(z), lo, hi, bits)

    def qparams(self, node, i, a):
        s = self.const(node, node.input[i]).astype(np.float64)
        if len(node.input) > i + 1 and node.input[i + 1]:
            zt = self.env[node.input[i + 1]]
            z, dtype = zt[1].astype(np.int64), _dtype_of(self.proto, node.input[i + 1], zt[1])
        else:
            z, dtype = np.zeros_like(s, np.int64), 3  # uint8 by default
        if dtype not in _RANGES:
            self.fail(node, f"zero point type {dtype} not supported", "use int8 / uint8")
        lo, hi = _RANGES[dtype]
        return s, z, lo, hi, 8 if dtype in (2, 3) else 4

    def op_DequantizeLinear(self, node, a):
        x = self.env.get(node.input[0])
        s, z, _, _, _ = self.qparams(node, 1, a)
        if x is None:
            self.fail(node, "unknown input")
        if x[0] == "const":  # a quantized weight (or bias): codes with zero point 0
            if np.any(z != 0):
                self.fail(node, "weights with a non-zero zero point", "quantize weights symmetric")
            axis = int(a.get("axis", 1))
            codes = x[1].astype(np.int64)
            return ("w", codes, s, axis)
        if x[0] != "qc":
            self.fail(node, "DequantizeLinear of a value that is not quantized")
        _, src, qs, qz, lo, hi, bits = x
        if np.ndim(s) or not np.isclose(float(s), qs, rtol=1e-7) or int(z) != qz:
            self.fail(node, "DequantizeLinear with other parameters than its QuantizeLinear")
        return self.quantizer(node, src, qs, lo - qz, hi - qz, bits)

    def quantizer(self, node, src, scale, qmin, qmax, bits):
        if src[0] == "image":
            if self.input is not None:
                self.fail(node, "the input images are quantized twice")
            _, mean, std, lo, hi = src  # clamp then round == round then clamp to round(bound)
            qmin = max(qmin, int(np.rint(lo / scale))) if np.isfinite(lo) else qmin
            qmax = min(qmax, int(np.rint(hi / scale))) if np.isfinite(hi) else qmax
            self.input = {"mean": [float(m) for m in mean], "std": [float(v) for v in std],
                          "scale": scale, "qmin": int(qmin), "qmax": int(qmax), "bits": bits}
            return ("q", "input", scale)
        if src[0] not in ("f", "q"):
            self.fail(node, "QuantizeLinear of an unsupported value")
        name = self.emit({"op": "quant", "src": [src[1]], "bits": bits, "scale": scale,
                          "qmin": int(qmin), "qmax": int(qmax)})  # fmt: skip
        return ("q", name, scale)

    # ---------------------------------------------------------- layers
    def weight(self, node, i, out_axis):
        w = self.env.get(node.input[i])
        if w is None or w[0] != "w":
            self.fail(node, "weights are not quantized (no DequantizeLinear of a constant)",
                      "quantize the weights with QuantizeLinear / DequantizeLinear")  # fmt: skip
        _, codes, s, axis = w
        o = codes.shape[out_axis]
        if np.ndim(s) and (s.shape[0] != o or axis % codes.ndim != out_axis):
            self.fail(node, "weight scales are not per output channel or per tensor")
        scale = np.broadcast_to(s, (o,)).astype(np.float32)
        lo, hi = int(codes.min()), int(codes.max())
        bits = max(2, 1 + max(hi.bit_length(), (-lo - 1).bit_length() if lo < 0 else 0))
        if bits > 8:
            self.fail(node, f"weight codes in [{lo}, {hi}] do not fit 8 bits")
        return codes, scale, bits

    def bias(self, node, i):
        if len(node.input) <= i or not node.input[i]:
            return None
        b = self.env.get(node.input[i])
        if b is not None and b[0] == "w":
            return (b[1] * b[2]).astype(np.float64).reshape(-1)
        return self.const(node, node.input[i]).astype(np.float64).reshape(-1)

    def op_Conv(self, node, a):
        x = self.value(node, 0, ("q",))
        codes, scale, bits = self.weight(node, 1, 0)
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or pads[:2] != pads[2:]:
            self.fail(node, f"padding {pads} is not symmetric", "use explicit symmetric pads")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            self.fail(node, "dilated convolution")
        b = self.bias(node, 2)
        g = int(a.get("group", 1))
        name = self.emit({"op": "conv", "src": [x[1]], "in_channels": codes.shape[1] * g,
                          "out_channels": codes.shape[0], "kernel": list(codes.shape[2:]),
                          "stride": list(a.get("strides", [1, 1])), "padding": pads[:2],
                          "groups": g, "bits": bits, "bias": b is not None,
                          "info": {"source": node.name or node.op_type}})  # fmt: skip
        self.layer_tensors(name, codes, scale, b)
        return ("f", name)

    def layer_tensors(self, name, codes, scale, bias):
        t = {"codes": codes.astype(np.int8), "scale": scale}
        if bias is not None:
            t["bias"] = bias.astype(np.float32)
        self.tensors[name] = t

    def linear(self, node, x, codes, scale, bits, b):
        name = self.emit({"op": "linear", "src": [x[1]], "in_features": codes.shape[1],
                          "out_features": codes.shape[0], "bits": bits, "bias": b is not None,
                          "info": {"source": node.name or node.op_type}})  # fmt: skip
        self.layer_tensors(name, codes, scale, b)
        return ("f", name)

    def op_Gemm(self, node, a):
        x = self.value(node, 0, ("q",))
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            self.fail(node, "Gemm with transA, alpha or beta", "export a plain Linear")
        trans = bool(a.get("transB", 0))
        codes, scale, bits = self.weight(node, 1, 0 if trans else 1)
        codes = codes if trans else codes.T
        return self.linear(node, x, np.ascontiguousarray(codes), scale, bits, self.bias(node, 2))

    def op_MatMul(self, node, a):
        x = self.value(node, 0, ("q",))
        codes, scale, bits = self.weight(node, 1, 1)
        return self.linear(node, x, np.ascontiguousarray(codes.T), scale, bits, None)

    def op_QLinearConv(self, node, a):
        return self.qlinear(node, a, self.op_Conv, 3)

    def op_QLinearMatMul(self, node, a):
        return self.qlinear(node, a, self.op_MatMul, 3)

    def qlinear(self, node, a, layer, w_at):
        """x, x_s, x_z, w, w_s, w_z, y_s, y_z[, bias]: DQ(x), DQ(w), layer, Q(y)."""
        from types import SimpleNamespace as NS

        x = self.env.get(node.input[0])
        if x is None or x[0] != "qc":
            self.fail(node, "input is not the output of a QuantizeLinear")
        xq = self.op_DequantizeLinear(NS(input=[node.input[0], node.input[1], node.input[2]],
                                         name=node.name, op_type="DequantizeLinear"), {})
        w = self.op_DequantizeLinear(NS(input=list(node.input[w_at: w_at + 3]), name=node.name,
                                        op_type="DequantizeLinear"), a)  # fmt: skip
        tmp_x, tmp_w = f"{node.output[0]}#x", f"{node.output[0]}#w"
        self.env[tmp_x], self.env[tmp_w] = xq, w
        inner = [tmp_x, tmp_w] + ([node.input[8]] if len(node.input) > 8 else [])
        if len(inner) == 3:  # int32 bias at scale x_s * w_s
            b = self.const(node, inner[2]).astype(np.float64)
            self.env[inner[2]] = ("const", b * xq[2] * np.broadcast_to(w[2], b.shape))
        y = layer(NS(input=inner, name=node.name, op_type=node.op_type), a)
        s, z, lo, hi, bits = self.qparams(node, 6, a)
        return ("qc", y, float(s), int(z), lo, hi, bits)

    # ------------------------------------------------------- elementwise
    def op_Relu(self, node, a):
        x = self.image_clamp(node, 0.0, None)
        if x is not None:
            return x
        x = self.value(node)
        return ("f", self.emit({"op": "clamp", "src": [x[1]], "lo": 0.0, "hi": None}))

    def image_clamp(self, node, lo, hi):
        """A clamp of the normalized images before their quantizer narrows its code range."""
        x = self.env.get(node.input[0])
        if x is None or x[0] != "image":
            return None
        _, mean, std, l0, h0 = x
        return ("image", mean, std, max(l0, -np.inf if lo is None else lo),
                min(h0, np.inf if hi is None else hi))

    def op_Clip(self, node, a):
        x = self.value(node) if self.env.get(node.input[0], ("",))[0] != "image" else None
        lo, hi = a.get("min"), a.get("max")
        if len(node.input) > 1 and node.input[1]:
            lo = float(self.const(node, node.input[1]))
        if len(node.input) > 2 and node.input[2]:
            hi = float(self.const(node, node.input[2]))
        lo = None if lo is None or lo <= -3e38 else float(lo)
        hi = None if hi is None or hi >= 3e38 else float(hi)
        img = self.image_clamp(node, lo, hi)
        if img is not None:
            return img
        return ("f", self.emit({"op": "clamp", "src": [x[1]], "lo": lo, "hi": hi}))

    def op_BatchNormalization(self, node, a):
        x = self.value(node)
        gamma, beta, mean, var = (self.const(node, n).astype(np.float64) for n in node.input[1:5])
        g = gamma / np.sqrt(var + float(a.get("epsilon", 1e-5)))
        return self.affine(x, g, beta - mean * g)

    def affine(self, x, gain, shift):
        c = max(np.size(gain), np.size(shift))
        name = self.emit({"op": "affine", "src": [x[1]], "channels": int(c)})
        self.tensors[name] = {"gain": np.broadcast_to(gain, (c,)).astype(np.float32),
                              "shift": np.broadcast_to(shift, (c,)).astype(np.float32)}
        return ("f", name)

    def arith(self, node, op):
        vals = [self.env.get(n) for n in node.input]
        if any(v is None for v in vals):
            self.fail(node, "unknown input")
        if op == "Add" and all(v[0] == "q" for v in vals):
            if not np.isclose(vals[0][2], vals[1][2], rtol=1e-6):
                self.fail(node, f"Add of values with different scales {vals[0][2]:.6g} and "
                          f"{vals[1][2]:.6g}", "quantize both addends with one scale")
            return ("q", self.emit({"op": "add", "src": [vals[0][1], vals[1][1]]}), vals[0][2])
        consts = [i for i, v in enumerate(vals) if v[0] == "const"]
        if len(consts) != 1 or (op in ("Sub", "Div") and consts != [1]):
            self.fail(node, f"{op} of two computed values", "only by a constant, or Add of "
                      "two dequantized values with one scale")  # fmt: skip
        x, k = vals[1 - consts[0]], vals[consts[0]][1].astype(np.float64)
        k = _per_channel(node, self, k)
        if x[0] == "image":
            _, mean, std, lo, hi = x
            if np.isfinite(lo) or np.isfinite(hi):
                self.fail(node, "arithmetic on the images after a clamp")
            if op == "Sub":
                return ("image", mean + k * std, std, lo, hi)
            if op == "Add":
                return ("image", mean - k * std, std, lo, hi)
            return ("image", mean, std * k if op == "Div" else std / k, lo, hi)
        x = self.value(node, 1 - consts[0])
        if op in ("Mul", "Div"):
            g = k if op == "Mul" else 1.0 / k
            return self.affine(x, g, np.zeros_like(g))
        return self.affine(x, np.ones_like(k), k if op == "Add" else -k)

    def op_Add(self, node, a):
        return self.arith(node, "Add")

    def op_Sub(self, node, a):
        return self.arith(node, "Sub")

    def op_Mul(self, node, a):
        return self.arith(node, "Mul")

    def op_Div(self, node, a):
        return self.arith(node, "Div")

    # --------------------------------------------------------- shapes
    def pool_attrs(self, node, a):
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:] or a.get("ceil_mode", 0) or any(d != 1 for d in
                                                                a.get("dilations", [1, 1])):
            self.fail(node, "pooling with asymmetric pads, ceil_mode or dilation")
        k = list(a["kernel_shape"])
        return {"kernel": k, "stride": list(a.get("strides", [1, 1])), "padding": pads[:2]}

    def op_MaxPool(self, node, a):
        if len(node.output) > 1 and node.output[1]:
            self.fail(node, "MaxPool with indices")
        x = self.value(node)
        return (x[0], self.emit({"op": "maxpool", "src": [x[1]], **self.pool_attrs(node, a)}),
                *x[2:])  # fmt: skip

    def op_AveragePool(self, node, a):
        x = self.value(node, 0, ("q",))
        attrs = self.pool_attrs(node, a)
        if any(attrs["padding"]) and not a.get("count_include_pad", 0):
            self.fail(node, "AveragePool with padding and count_include_pad=0")
        return ("q", self.emit({"op": "avgpool", "src": [x[1]], **attrs}), x[2])

    def op_GlobalAveragePool(self, node, a):
        x = self.value(node, 0, ("q",))
        return ("q", self.emit({"op": "gap", "src": [x[1]]}), x[2])

    def op_Flatten(self, node, a):
        if int(a.get("axis", 1)) != 1:
            self.fail(node, "Flatten with axis other than 1")
        x = self.value(node, 0, ("q",))
        return ("q", self.emit({"op": "flatten", "src": [x[1]]}), x[2])

    def op_Reshape(self, node, a):
        shape = [int(v) for v in self.const(node, node.input[1]).reshape(-1)]
        if len(shape) != 2 or shape[1] != -1 and shape[0] not in (0, -1):
            self.fail(node, f"Reshape to {shape}", "only flattening to [N, -1]")
        return self.op_Flatten(node, {})


def _attrs(node, nh) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for at in node.attribute:
        v = helper.get_attribute_value(at)
        out[at.name] = nh.to_array(v) if hasattr(v, "data_type") else v
    return out


def _dtype_of(proto, name: str, arr: np.ndarray) -> int:
    """TensorProto element type of a constant (initializer, or numpy dtype of a Constant)."""
    for init in proto.graph.initializer:
        if init.name == name:
            return int(init.data_type)
    return {np.dtype(np.uint8): 2, np.dtype(np.int8): 3}.get(arr.dtype, 0)


def _bcast(v, ndim: int, axis: int):
    v = np.asarray(v)
    if v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return v.reshape(shape)


def _per_channel(node, reader, k: np.ndarray) -> np.ndarray:
    """A scalar, [C] or [1, C, 1, 1] constant as a per-channel vector (or scalar)."""
    if k.size == 1:
        return k.reshape(())
    squeezed = [d for d in k.shape if d != 1]
    if len(squeezed) != 1 or (k.ndim >= 2 and k.shape[1] != k.size and k.ndim != 1):
        reader.fail(node, f"constant of shape {list(k.shape)} is not per channel")
    return k.reshape(-1)
