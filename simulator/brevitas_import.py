"""Brevitas QAT models -> quantized graph (`models.graph`) -> IntegerNetwork.

Brevitas's own integer weight codes (`quant_weight().int()`), scales and bit widths are
taken as they are, not re-derived. Layers: QuantConv2d, QuantLinear (no input / output /
bias quantizer of their own), QuantIdentity, QuantReLU (ReLU then an unsigned quantizer),
QuantHardTanh (its quantizer's range is the clamp), plus the plain torch.nn layers the PTQ
front end reads (BatchNorm, pooling, flatten, residual `+` of two quantized values with one
scale). Brevitas rounds half to even (torch.round) and saturates to the integer range:
q = clamp(round(x / s) + z, qmin, qmax), with zero point z = 0 required (a non-zero or
learned per-channel zero point, a per-channel activation scale, or more than 8 weight bits
is a UserInputError). The first quantizer must take the [0, 1] images (a QuantIdentity).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memory_models.usererror import UserInputError
from simulator.network import IntegerNetwork
from simulator.ptq import _Walk

__all__ = ["import_brevitas", "brevitas_model"]


def import_brevitas(model: Any, input_shape: tuple[int, int, int],
                    rounding: str = "half-even") -> IntegerNetwork:  # fmt: skip
    """IntegerNetwork of a Brevitas model taking float32 [N, *input_shape] images in [0, 1].

    rounding: requantization ties "half-even" (Brevitas's torch.round, the default) or
    "half-up".
    """
    from simulator.import_report import layer_report
    from simulator.importer import import_torch

    qmodel = brevitas_model(model, input_shape)
    net = import_torch(qmodel, meta={"input_shape": list(input_shape)},
                       source=type(model).__name__, rounding=rounding)  # fmt: skip
    net.meta["import_report"] = layer_report(qmodel, net)
    return net


def brevitas_model(model: Any, input_shape: tuple[int, int, int]):
    """The `models.graph.GraphNet` computing `model`'s quantized forward."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    from models.graph import GraphNet, graph_config

    src = type(model).__name__
    model.eval()
    try:
        gm = torch.fx.GraphModule(model, _tracer().trace(model))
    except Exception as err:  # torch.fx raises many types for untraceable code
        raise UserInputError(src, None, f"torch.fx cannot trace the model ({err})",
                             "keep data-dependent control flow out of forward()") from err
    with torch.no_grad():
        ShapeProp(gm).propagate(torch.zeros((1, *input_shape)))
    walk = _BrevitasWalk(gm, src)
    walk.run()
    graph, tensors = walk.graph(input_shape)
    qmodel = GraphNet(graph)
    state = qmodel.state_dict()
    for name, arrays in tensors.items():
        for key, arr in arrays.items():
            k = f"layers.{name.replace('.', '_')}.{key}"
            state[k] = torch.as_tensor(arr).to(state[k].dtype)
    qmodel.load_state_dict(state, strict=True)
    for layer in qmodel.layers.values():
        if hasattr(layer, "set_codes"):
            layer.set_codes(layer.codes, layer.scale)
    bits = [n["bits"] for n in graph["nodes"] if n["op"] in ("conv", "linear")] or [8]
    acts = [n["bits"] for n in graph["nodes"] if n["op"] == "quant"] or [8]
    qmodel.mcelsim_config = graph_config(graph, weight_bits=max(bits), act_bits=max(acts))
    return qmodel.eval()


def _tracer():
    import torch
    from brevitas.nn.quant_layer import QuantNonLinearActLayer, QuantWeightBiasInputOutputLayer

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, name):  # noqa: D102
            if isinstance(m, QuantNonLinearActLayer | QuantWeightBiasInputOutputLayer):
                return True
            return super().is_leaf_module(m, name)

    return Tracer()


def _f(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


class _BrevitasWalk(_Walk):
    """The PTQ walk with Brevitas layers: quantizers and weight codes come from the model."""

    def __init__(self, gm, src: str):
        super().__init__(gm, src, 8)
        self.fold_bn = False  # BatchNorm is folded exactly at requantization, not into codes
        self.input: dict[str, Any] | None = None
        self.tensors: dict[str, dict[str, np.ndarray]] = {}

    def quant(self, val, fx_node, tie=None):
        self.fail(fx_node, "needs quantized input codes, got a float value",
                  "put a QuantIdentity / QuantReLU / QuantHardTanh before it")  # fmt: skip

    def add(self, node, a, b):
        if a[1] != "q" or b[1] != "q":
            self.fail(node, "residual add of values that are not quantized",
                      "end both branches with a Brevitas quantizer of one scale")  # fmt: skip
        return (self.emit({"name": node.name, "op": "add", "src": [a[0], b[0]]}), "q", a[2])

    def module(self, node, env):
        import brevitas.nn as qnn

        mod = self.modules[str(node.target)]
        name = node.name  # unique even where a module is called twice; info has the target
        if isinstance(mod, qnn.QuantConv2d | qnn.QuantLinear):
            return self.layer(mod, node, env, name)
        if isinstance(mod, qnn.QuantIdentity | qnn.QuantReLU | qnn.QuantHardTanh):
            x = self.arg(node, env)
            if isinstance(mod, qnn.QuantReLU):
                x = self.clamp(x, name + "_relu", 0.0, None)
            return self.act(mod, node, x, name)
        if type(mod).__module__.startswith("brevitas"):
            self.fail(node, f"unsupported Brevitas layer {type(mod).__name__}",
                      "use QuantConv2d, QuantLinear, QuantIdentity, QuantReLU, QuantHardTanh")
        return super().module(node, env)

    def act(self, mod, node, x, name):
        aq = mod.act_quant
        if not aq.is_quant_enabled:
            self.fail(node, "activation quantization disabled", "enable it (bit_width 2..8)")
        scale, zero, bits = _f(aq.scale()), _f(aq.zero_point()), int(_f(aq.bit_width()))
        if scale.size != 1 or np.any(zero != 0):
            self.fail(node, "per-channel scale or non-zero zero point in an activation quantizer",
                      "use a per-tensor scale and zero point 0")  # fmt: skip
        signed = bool(aq.is_signed)
        narrow = bool(aq.is_narrow_range)
        if signed:
            qmin, qmax = -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
        else:
            qmin, qmax = 0, 2**bits - 1 - int(narrow)
        s = float(scale.reshape(()))
        if x[0] == "input":
            if self.input is not None:
                self.fail(node, "the images are quantized twice")
            self.input = {"mean": [0.0] * self.channels, "std": [1.0] * self.channels,
                          "scale": s, "qmin": qmin, "qmax": qmax, "bits": bits}
            return ("input", "q", "input")
        q = self.emit({"name": name, "op": "quant", "src": [x[0]], "bits": bits, "scale": s,
                       "qmin": qmin, "qmax": qmax})  # fmt: skip
        self.parent[q] = q
        return (q, "q", q)

    def layer(self, mod, node, env, name):
        import brevitas.nn as qnn

        x = self.arg(node, env)
        if x[1] != "q":
            self.quant(x, node)
        for what in ("input_quant", "output_quant", "bias_quant"):
            if getattr(mod, what).is_quant_enabled:
                self.fail(node, f"{what} inside the layer is not supported",
                          "quantize with separate QuantIdentity / QuantReLU layers and a "
                          "float bias")  # fmt: skip
        qw = mod.quant_weight()
        codes = qw.int().detach().cpu().numpy().astype(np.int64)
        bits = int(_f(qw.bit_width))
        if np.any(_f(qw.zero_point) != 0):
            self.fail(node, "weights with non-zero zero points", "quantize weights symmetric")
        if bits > 8 or bits < 2:
            self.fail(node, f"{bits}-bit weights", "use 2..8 weight bits")
        o = codes.shape[0]
        scale = np.broadcast_to(_f(qw.scale).reshape(-1), (o,)).astype(np.float32)
        if _f(qw.scale).size not in (1, o):
            self.fail(node, "weight scale is neither per tensor nor per output channel")
        bias = mod.bias is not None
        attrs: dict[str, Any]
        if isinstance(mod, qnn.QuantConv2d):
            if isinstance(mod.padding, str) or tuple(mod.dilation) != (1, 1):
                self.fail(node, "string padding or dilation", "use numeric padding")
            attrs = {"op": "conv", "in_channels": mod.in_channels,
                     "out_channels": mod.out_channels, "kernel": list(mod.kernel_size),
                     "stride": list(mod.stride), "padding": list(mod.padding),
                     "groups": mod.groups}  # fmt: skip
        else:
            attrs = {"op": "linear", "in_features": mod.in_features,
                     "out_features": mod.out_features}  # fmt: skip
        out = self.emit({"name": name, "src": [x[0]], **attrs, "bits": bits, "bias": bias,
                         "info": {"folded_bn": False, "source": str(node.target)}})  # fmt: skip
        t = {"codes": codes.astype(np.int8), "scale": scale}
        if bias:
            t["bias"] = _f(mod.bias).astype(np.float32)
        self.tensors[name] = t
        return (out, "f", None)

    def graph(self, input_shape):
        if self.input is None:
            raise UserInputError(self.src, None, "the images are never quantized",
                                 "start the model with a QuantIdentity")  # fmt: skip
        for name, w in self.float_w.items():  # BatchNorm / affine tensors from the walk
            if "gain" in w:
                self.tensors[name] = {"gain": w["gain"], "shift": w["shift"]}
        out = next(n for n in self.nodes if n["name"] == self.output)
        classes = next((n["out_features"] for n in reversed(self.nodes) if n["op"] == "linear"),
                       None)  # fmt: skip
        if classes is None or out["op"] not in ("linear", "affine", "quant"):
            raise UserInputError(self.src, None, "the model does not end with a QuantLinear",
                                 "end the network with a Brevitas QuantLinear giving the logits")
        graph = {"input": self.input, "input_shape": list(input_shape),
                 "num_classes": int(classes), "nodes": self.nodes, "output": self.output,
                 "rounding": "half-even"}
        return graph, self.tensors

    @property
    def channels(self) -> int:
        return int(next(iter(self.gm.graph.nodes)).meta["tensor_meta"].shape[1])
