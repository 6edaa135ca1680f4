"""Post-training quantization of a float PyTorch CNN into a quantized graph (`models.graph`).

`quantize(model, calibration, ...)` -> IntegerNetwork, the same the importer builds for a
zoo model. Steps:
  1. torch.fx traces the float model (torch.nn modules stay leaves) and shapes are
     propagated with one calibration image.
  2. The walk writes the graph: BatchNorm right after a conv / linear is folded into its
     weights and bias (w' = w * g, b' = b * g + h with g = gamma / sqrt(var + eps)); a
     quantizer is placed wherever a conv / linear / pooling / flatten / add needs integer
     codes; the two inputs of a residual add share one quantizer (one scale).
  3. Calibration runs the float graph on the images and observes every quantizer's input:
     "minmax" (the largest |x|) or "percentile" (99.99th percentile of |x|, and the 99.9th
     of |w| per scale group for weights, which clips outliers).
  4. Weights: symmetric narrow range, s = max|w| / (2^(b-1) - 1) per output channel or per
     tensor, q = clamp(rint(w / s)); activations: unsigned [0, 2^b - 1] where the observed
     minimum is >= 0 (after ReLU), else signed [-(2^(b-1) - 1), 2^(b-1) - 1], s = range / qmax.
Input images are float32 NCHW in [0, 1]; `mean` / `std` (per channel) normalize them as
the model expects, then the input quantizer (`input_bits`) applies as for activations.
Supported: Conv2d (zero padding, no dilation), Linear, BatchNorm1d/2d, ReLU, ReLU6,
Hardtanh, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, Dropout, Identity, residual
`+`, torch.flatten(x, 1) and F.relu / relu6 / hardtanh / adaptive_avg_pool2d(x, 1).
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from memory_models.usererror import UserInputError
from simulator.network import IntegerNetwork
from simulator.ptq_observe import act_quant, calibrate, round_biases, weight_codes

__all__ = ["quantize", "quantize_model", "OBSERVERS"]

OBSERVERS = ("minmax", "percentile")
_SUPPORTED = ("Conv2d, Linear, BatchNorm, ReLU, ReLU6, Hardtanh, MaxPool2d, AvgPool2d, "
              "AdaptiveAvgPool2d(1), Flatten, Dropout, Identity, residual +")  # fmt: skip


def quantize(
    model: Any,
    calibration: np.ndarray,
    weight_bits: int = 4,
    act_bits: int = 8,
    granularity: str = "channel",
    observer: str = "minmax",
    input_bits: int = 8,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    num_classes: int | None = None,
) -> IntegerNetwork:
    """IntegerNetwork of the float `model` quantized after training (see the module doc).

    calibration: float32 images [N, C, H, W] in [0, 1]. net.meta["import_report"] lists
    per layer what was done (`simulator.import_report`).
    """
    from simulator.import_report import layer_report
    from simulator.importer import import_torch

    qmodel = quantize_model(model, calibration, weight_bits, act_bits, granularity, observer,
                            input_bits, mean, std, num_classes)  # fmt: skip
    net = import_torch(qmodel, meta={"input_shape": qmodel.graph["input_shape"]},
                       source=type(model).__name__)  # fmt: skip
    net.meta["import_report"] = layer_report(qmodel, net)
    return net


def quantize_model(model, calibration, weight_bits=4, act_bits=8, granularity="channel",
                   observer="minmax", input_bits=8, mean=None, std=None, num_classes=None):
    """The quantized `models.graph.GraphNet` (fake-quant PyTorch model) behind `quantize`."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    from models.graph import GraphNet, graph_config

    src = type(model).__name__
    _check_options(weight_bits, act_bits, input_bits, granularity, observer)
    images = np.asarray(calibration, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise UserInputError(src, "calibration", f"needs images [N, C, H, W], got shape "
                             f"{images.shape}", "pass a few hundred float32 images in [0, 1]")
    c = images.shape[1]
    mean = [0.0] * c if mean is None else [float(m) for m in mean]
    std = [1.0] * c if std is None else [float(s) for s in std]
    model.eval()
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as err:  # torch.fx raises many types for untraceable code
        raise UserInputError(src, None, f"torch.fx cannot trace the model ({err})",
                             "keep data-dependent Python control flow out of forward()") from err
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.from_numpy(images[:1]))
    walk = _Walk(gm, src, weight_bits)
    walk.run()
    stats = calibrate(walk, images, mean, std, observer)
    graph, tensors = walk.finish(stats, images.shape[1:], mean, std, act_bits, input_bits,
                                 granularity, observer)  # fmt: skip
    if num_classes is not None and graph["num_classes"] != num_classes:
        raise UserInputError(src, "num_classes", f"the model has {graph['num_classes']} "
                             f"outputs, expected {num_classes}",
                             "pass the weights that belong to this model and dataset")  # fmt: skip
    qmodel = GraphNet(graph)
    qmodel.load_state_dict(_state(qmodel, tensors), strict=True)
    qmodel.mcelsim_config = graph_config(graph, weight_bits=weight_bits, act_bits=act_bits)
    return qmodel.eval()


def _check_options(weight_bits, act_bits, input_bits, granularity, observer) -> None:
    if weight_bits not in range(2, 9):
        raise UserInputError("quantize", "weight_bits", f"must be in 2..8, got {weight_bits}",
                             "pick weight_bits between 2 and 8")
    for name, v in (("act_bits", act_bits), ("input_bits", input_bits)):
        if v not in range(2, 17):
            raise UserInputError("quantize", name, f"must be in 2..16, got {v}",
                                 f"pick {name} between 2 and 16")
    if granularity not in ("channel", "tensor"):
        raise UserInputError("quantize", "granularity", f"unknown {granularity!r}",
                             "use 'channel' or 'tensor'")  # fmt: skip
    if observer not in OBSERVERS:
        raise UserInputError("quantize", "observer", f"unknown {observer!r}",
                             f"use one of {', '.join(OBSERVERS)}")  # fmt: skip


def _state(qmodel, tensors: dict[str, Any]) -> dict[str, Any]:
    import torch

    from models.graph import CodeConv2d, CodeLinear

    state = qmodel.state_dict()
    for name, arrays in tensors.items():
        prefix = "layers." + name.replace(".", "_") + "."
        for key, arr in arrays.items():
            state[prefix + key] = torch.as_tensor(arr).to(state[prefix + key].dtype)
    for name, mod in qmodel.layers.items():
        if isinstance(mod, CodeConv2d | CodeLinear):
            shape = (-1,) + (1,) * (mod.codes.dim() - 1)
            w = state[f"layers.{name}.codes"].float() * state[f"layers.{name}.scale"].reshape(shape)
            state[f"layers.{name}.weight"] = w
    return state


class _Walk:
    """Walks the float fx graph and writes graph nodes with float weights.

    Each fx value maps to (graph value name, kind, group): kind "q" for integer codes (group:
    the quantizer group whose scale they carry) or "f" for a float value; every quantizer
    belongs to a group (union-find), and the inputs of an add are merged into one.
    """

    def __init__(self, gm, src: str, weight_bits: int):
        self.gm, self.src, self.wb = gm, src, weight_bits
        self.modules = dict(gm.named_modules())
        self.nodes: list[dict[str, Any]] = []
        self.float_w: dict[str, dict[str, np.ndarray]] = {}
        self.parent: dict[str, str] = {}  # quantizer group union-find
        self.users: dict[str, int] = {}
        self.quantized: dict[str, str] = {}  # float value -> its quantizer
        self.fold_bn = True  # BatchNorm right after a conv / linear goes into its weights
        self.output = ""

    def fail(self, node, problem, fix=f"use the supported layers: {_SUPPORTED}"):
        where = str(node.target) if node.op == "call_module" else node.name
        raise UserInputError(self.src, where, problem, fix)

    def group(self, q: str) -> str:
        while self.parent[q] != q:
            q = self.parent[q]
        return q

    def emit(self, node: dict[str, Any]) -> str:
        self.nodes.append(node)
        for s in node["src"]:
            self.users[s] = self.users.get(s, 0) + 1
        return node["name"]

    def quant(self, val, fx_node, tie: str | None = None):
        """The quantizer of float value `val` (one per value), in the group of `tie`."""
        name = val[0]
        if name not in self.quantized:
            q = self.emit({"name": f"{fx_node.name}_q{len(self.nodes)}", "op": "quant",
                           "src": [name]})  # fmt: skip
            self.parent[q] = q
            self.quantized[name] = q
        q = self.quantized[name]
        if tie is not None:
            self.parent[self.group(q)] = self.group(tie)
        return (q, "q", q)

    def need_q(self, val, fx_node):
        return val if val[1] == "q" else self.quant(val, fx_node)

    def run(self) -> None:
        env: dict[Any, Any] = {}
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if env:
                    self.fail(node, "the model takes more than one input")
                env[node] = ("input", "q", "input")
                self.parent["input"] = "input"
            elif node.op == "output":
                val = env.get(node.args[0])
                if val is None:
                    self.fail(node, "the output is not a single tensor")
                self.output = val[0]
            elif node.op == "call_module":
                env[node] = self.module(node, env)
            elif node.op in ("call_function", "call_method"):
                env[node] = self.function(node, env)
            else:
                self.fail(node, f"unsupported graph node {node.op} {node.target}")

    def arg(self, node, env, i=0):
        a = node.args[i]
        if a not in env:
            self.fail(node, f"unsupported argument {a!r}")
        return env[a]

    def module(self, node, env):
        from torch import nn

        mod = self.modules[str(node.target)]
        name = node.name  # unique even where a module is called twice; info has the target
        x = self.arg(node, env)
        if isinstance(mod, nn.Conv2d):
            plain = not isinstance(mod.padding, str) and mod.padding_mode == "zeros"
            if not plain or mod.dilation != (1, 1):
                self.fail(node, "Conv2d with string padding, non-zero padding mode or dilation",
                          "use numeric zero padding and no dilation")  # fmt: skip
            x = self.need_q(x, node)
            out = self.emit({"name": name, "op": "conv", "src": [x[0]],
                             "in_channels": mod.in_channels, "out_channels": mod.out_channels,
                             "kernel": list(mod.kernel_size), "stride": list(mod.stride),
                             "padding": list(mod.padding), "groups": mod.groups,
                             "bits": self.wb, "bias": True,
                             "info": {"folded_bn": False, "source": str(node.target)}})  # fmt: skip
            self.float_w[name] = _weights(mod)
            return (out, "f", None)
        if isinstance(mod, nn.Linear):
            x = self.need_q(x, node)
            out = self.emit({"name": name, "op": "linear", "src": [x[0]],
                             "in_features": mod.in_features, "out_features": mod.out_features,
                             "bits": self.wb, "bias": True,
                             "info": {"folded_bn": False, "source": str(node.target)}})  # fmt: skip
            self.float_w[name] = _weights(mod)
            return (out, "f", None)
        if isinstance(mod, nn.BatchNorm1d | nn.BatchNorm2d):
            return self.batchnorm(mod, node, x)
        if isinstance(mod, nn.ReLU6):
            return self.clamp(x, name, 0.0, 6.0)
        if isinstance(mod, nn.ReLU):
            return self.clamp(x, name, 0.0, None)
        if isinstance(mod, nn.Hardtanh):
            return self.clamp(x, name, float(mod.min_val), float(mod.max_val))
        if isinstance(mod, nn.Identity | nn.Dropout):
            return x
        if isinstance(mod, nn.MaxPool2d):
            if mod.dilation not in (1, (1, 1)) or mod.ceil_mode:
                self.fail(node, "MaxPool2d with dilation or ceil_mode", "use plain max pooling")
            return self.pool(x, name, "maxpool", mod.kernel_size, mod.stride, mod.padding)
        if isinstance(mod, nn.AvgPool2d):
            if mod.ceil_mode or not mod.count_include_pad or mod.divisor_override:
                self.fail(node, "AvgPool2d with ceil_mode, count_include_pad=False or a divisor")
            x = self.need_q(x, node)
            return self.pool(x, name, "avgpool", mod.kernel_size, mod.stride, mod.padding)
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            return self.gap(node, x, mod.output_size)
        if isinstance(mod, nn.Flatten):
            if mod.start_dim != 1 or mod.end_dim != -1:
                self.fail(node, "Flatten other than start_dim=1, end_dim=-1")
            return self.flatten(node, x, name)
        self.fail(node, f"unsupported layer {type(mod).__name__}")

    def function(self, node, env):
        import torch
        from torch.nn import functional as F

        fn, name = node.target, node.name
        if fn in (operator.add, operator.iadd, torch.add, "add", "add_"):
            a, b = self.arg(node, env, 0), self.arg(node, env, 1)
            return self.add(node, a, b)
        x = self.arg(node, env)
        if fn in (F.relu, torch.relu, "relu", "relu_"):
            return self.clamp(x, name, 0.0, None)
        if fn is F.relu6:
            return self.clamp(x, name, 0.0, 6.0)
        if fn is F.hardtanh:
            lo = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
            hi = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
            return self.clamp(x, name, float(lo), float(hi))
        if fn in (torch.flatten, "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start != 1 or len(node.args) > 2:
                self.fail(node, "flatten other than flatten(x, 1)", "use torch.flatten(x, 1)")
            return self.flatten(node, x, name)
        if fn is F.adaptive_avg_pool2d:
            return self.gap(node, x, node.args[1] if len(node.args) > 1 else None)
        if fn in (F.dropout, "contiguous"):
            return x
        what = getattr(fn, "__name__", fn)
        self.fail(node, f"unsupported {'method .' if node.op == 'call_method' else 'function '}"
                  f"{what}")  # fmt: skip

    def batchnorm(self, mod, node, x):
        if mod.running_mean is None:
            self.fail(node, "BatchNorm without running statistics", "use track_running_stats=True")
        inv = 1.0 / np.sqrt(_np(mod.running_var) + float(mod.eps))
        g = inv * (_np(mod.weight) if mod.weight is not None else 1.0)
        h = (_np(mod.bias) if mod.bias is not None else 0.0) - _np(mod.running_mean) * g
        last = self.nodes[-1] if self.nodes else None
        follows_layer = last is not None and last["name"] == x[0] and last["op"] in ("conv",
                                                                                   "linear")
        if self.fold_bn and follows_layer and self.users.get(x[0], 0) == 0:
            w = self.float_w[x[0]]
            w["weight"] = w["weight"] * g.reshape((-1,) + (1,) * (w["weight"].ndim - 1))
            w["bias"] = w["bias"] * g + h
            last["info"]["folded_bn"] = True
            return x
        out = self.emit({"name": node.name, "op": "affine", "src": [x[0]],
                         "channels": int(g.shape[0])})  # fmt: skip
        self.float_w[out] = {"gain": g, "shift": h}
        return (out, "f", None)

    def clamp(self, x, name, lo, hi):
        out = self.emit({"name": name, "op": "clamp", "src": [x[0]], "lo": lo, "hi": hi})
        return (out, "f", None)

    def pool(self, x, name, op, kernel, stride, padding):
        k = _pair(kernel)
        out = self.emit({"name": name, "op": op, "src": [x[0]], "kernel": k,
                         "stride": _pair(stride or kernel), "padding": _pair(padding)})
        return (out, x[1], x[2]) if op == "maxpool" else (out, "q", x[2])

    def gap(self, node, x, size):
        if size not in (1, (1, 1), [1, 1]):
            self.fail(node, f"adaptive average pooling to {size}", "pool to 1 (global)")
        x = self.need_q(x, node)
        shape = node.args[0].meta["tensor_meta"].shape
        return (self.emit({"name": node.name, "op": "gap", "src": [x[0]],
                           "area": int(shape[2] * shape[3])}), "q", x[2])  # fmt: skip

    def flatten(self, node, x, name):
        x = self.need_q(x, node)
        return (self.emit({"name": name, "op": "flatten", "src": [x[0]]}), "q", x[2])

    def add(self, node, a, b):
        """Both inputs quantized in one group (one scale); the input images keep theirs."""
        for x in (a, b):
            if x[1] == "q" and self.group(x[2]) == "input":
                self.fail(node, "residual add of the input images", "add after the first layer")
        if a[1] == "q" and b[1] == "q":
            self.parent[self.group(b[2])] = self.group(a[2])
        elif a[1] == "q":
            b = self.quant(b, node, tie=a[2])
        elif b[1] == "q":
            a = self.quant(a, node, tie=b[2])
        else:
            a = self.quant(a, node)
            b = self.quant(b, node, tie=a[2])
        out = self.emit({"name": node.name, "op": "add", "src": [a[0], b[0]]})
        return (out, "q", a[2])

    # ------------------------------------------------------------ finish
    def finish(self, stats, shape, mean, std, act_bits, input_bits, granularity, observer):
        """(graph, tensors) with quantizer scales from `stats` and weight codes."""
        ranges: dict[str, list[float]] = {}
        for q, (lo, hi) in stats.items():
            g = self.group(q)
            r = ranges.setdefault(g, [0.0, 0.0])
            r[0], r[1] = min(r[0], lo), max(r[1], hi)
        tensors: dict[str, dict[str, np.ndarray]] = {}
        for node in self.nodes:
            if node["op"] == "quant":
                lo, hi = ranges[self.group(node["name"])]
                node.update(act_quant(lo, hi, act_bits))
            elif node["op"] in ("conv", "linear"):
                codes, scale, clipped = weight_codes(self.float_w[node["name"]]["weight"],
                                                      self.wb, granularity, observer)
                node["info"]["clipped"] = clipped
                tensors[node["name"]] = {"codes": codes, "scale": scale,
                                         "bias": self.float_w[node["name"]]["bias"]}
            elif node["op"] == "affine":
                tensors[node["name"]] = {"gain": self.float_w[node["name"]]["gain"],
                                         "shift": self.float_w[node["name"]]["shift"]}
        lo_in = min((0.0 - m) / s for m, s in zip(mean, std, strict=True))
        hi_in = max((1.0 - m) / s for m, s in zip(mean, std, strict=True))
        inp = {"mean": mean, "std": std, **act_quant(lo_in, hi_in, input_bits)}
        round_biases(self.nodes, tensors, inp["scale"])
        out_node = next(n for n in self.nodes if n["name"] == self.output)
        classes = out_node.get("out_features") or out_node.get("channels")
        if out_node["op"] not in ("linear", "affine", "add") or not classes:
            raise UserInputError(self.src, self.output, "the model does not end with a linear "
                                 "layer giving [N, classes] logits", "end the model with "
                                 "nn.Linear (or a 1x1 conv) to the classes")  # fmt: skip
        graph = {"input": inp, "input_shape": [int(s) for s in shape],
                 "num_classes": int(classes), "nodes": self.nodes, "output": self.output,
                 "rounding": "half-even"}  # ties as torch's fake quantization rounds them
        return graph, tensors


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy().reshape(-1)


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(v[0]), int(v[1])]


def _weights(mod) -> dict[str, np.ndarray]:
    w = mod.weight.detach().cpu().double().numpy()
    b = _np(mod.bias) if mod.bias is not None else np.zeros(w.shape[0])
    return {"weight": w, "bias": b}
