"""PyTorch QAT model -> IntegerNetwork (the only module of `simulator` that imports torch).

The model is captured with torch.fx (`models.quant.QuantTracer`, which keeps the contract's
modules whole) and its shapes propagated with one zero image. Then an abstract walk over
the graph folds everything between a conv/linear and its next QuantAct (bias, BatchNorm,
ReLU/ReLU6/Hardtanh, LogitScale, max pooling) into one per-channel requantization
(`simulator.ops.make_requant`). Max pooling between a layer and its QuantAct is done on the
output codes: max where the folded map increases, min where it decreases.

Supported modules: InputQuant, QuantAct, QConv2d (groups, stride, zero padding), QLinear,
BatchNorm1d/2d (eval statistics), ReLU, ReLU6, Hardtanh, MaxPool2d, AvgPool2d,
AdaptiveAvgPool2d (to sizes dividing the input), Flatten, Identity, Dropout, LogitScale,
residual `+` of two codes with the same scale, torch.flatten. Anything else raises
UserInputError naming the module.
"""

from __future__ import annotations

import math
import operator
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memory_models.usererror import UserInputError
from simulator.network import InputSpec, IntegerNetwork
from simulator.ops import (
    INT32_MAX,
    INT32_MIN,
    ROUNDING,
    Add,
    Conv,
    Flatten,
    Linear,
    MaxPool,
    Pool,
    Requantize,
    SumPool,
    acc_dtype_for,
    make_requant,
    weight_range,
)

__all__ = ["import_torch", "import_checkpoint"]

_FIX_QUANT = "put a QuantAct (or InputQuant) before every QConv2d / QLinear"


@dataclass
class _FloatIn:
    """The model's float input before InputQuant (flatten: flattened first)."""

    flatten: bool = False


@dataclass
class _Val:
    """An integer value of the IR: real = code * scale, codes in [lo, hi]."""

    v: int
    scale: float
    lo: int
    hi: int
    channels: int
    binary: bool = False  # codes are exactly ±1 (sign activations)


@dataclass
class _Pend:
    """A real-valued per-channel function of an integer value, not yet requantized.

    real[c] = clamp(alpha[c] * a + beta[c], clamp_lo[c], clamp_hi[c]) where `a` is the
    accumulator of `layer` (a pending Conv/Linear) or the value `src`; `pools` are max
    poolings applied on the way, with the sign of alpha at that moment.
    """

    module: str
    kind: str  # "conv", "linear" or "value"
    src: int
    alpha: np.ndarray
    beta: np.ndarray
    clamp_lo: np.ndarray
    clamp_hi: np.ndarray
    acc_bound: int
    layer: dict[str, Any] = field(default_factory=dict)
    pools: list[tuple[Pool, np.ndarray]] = field(default_factory=list)
    emitted: list[int] = field(default_factory=list)


def import_checkpoint(path: str | os.PathLike) -> IntegerNetwork:
    """IntegerNetwork from an mcelsim checkpoint (UserInputError for a bad file)."""
    if os.path.isdir(path):
        raise UserInputError(path, None, "is a folder, not a checkpoint file",
                             "pass the .ckpt file written by `mcelsim train`")
    if not os.path.isfile(path):
        raise UserInputError(path, None, "checkpoint file not found",
                             "check the path, or train one with `mcelsim train`")  # fmt: skip
    from models import load_checkpoint

    model, meta = load_checkpoint(path)
    return import_torch(model, meta=meta, source=str(path))


def import_torch(
    model: Any,
    meta: dict | None = None,
    input_shape: tuple[int, ...] | None = None,
    source: str | None = None,
    rounding: str | None = None,
) -> IntegerNetwork:
    """IntegerNetwork computing `model` (a `models.quant` QAT network) in integers.

    input_shape (C, H, W) or (F,) of one image: from the argument, meta["input_shape"] or
    the zoo's `model.mcelsim_config`. The model is put in eval mode. meta is stored on
    net.meta. rounding of requantization ties, "half-up" or "half-even" (ops.ROUNDING):
    by default the quantized graph's own (`models.graph`), else half-up. Raises
    UserInputError for an unsupported layer or an unquantized layer input.
    """
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    from models.quant import QuantTracer

    src_name = source or type(model).__name__
    model.eval()
    shape = _input_shape(model, meta, input_shape, src_name)
    try:
        graph = QuantTracer().trace(model)
    except Exception as err:  # torch.fx raises many types for untraceable code
        raise UserInputError(
            src_name,
            None,
            f"torch.fx cannot trace the model ({err})",
            "use modules from models.quant and plain torch.nn",
        ) from err
    gm = torch.fx.GraphModule(model, graph)
    with torch.no_grad():
        try:
            ShapeProp(gm).propagate(torch.zeros((1, *shape), dtype=torch.float32))
        except Exception as err:
            raise UserInputError(src_name, "input_shape", f"the model does not run on images "
                                 f"of shape {tuple(shape)} ({err})",
                                 "pass the right input_shape") from err  # fmt: skip
    if rounding is None:
        rounding = (getattr(model, "graph", None) or {}).get("rounding", "half-up")
    if rounding not in ROUNDING:
        raise UserInputError(src_name, "rounding", f"unknown rounding {rounding!r}",
                             f"use one of {', '.join(ROUNDING)}")  # fmt: skip
    with torch.no_grad():
        return _Builder(gm, src_name, dict(meta or {}), tuple(shape), rounding).build()


def _input_shape(model, meta, input_shape, src) -> tuple[int, ...]:
    if input_shape is not None:
        return tuple(int(s) for s in input_shape)
    if meta and meta.get("input_shape"):
        return tuple(int(s) for s in meta["input_shape"])
    cfg = getattr(model, "mcelsim_config", None)
    if cfg:
        return (int(cfg["in_channels"]), int(cfg["input_size"]), int(cfg["input_size"]))
    raise UserInputError(src, "input_shape", "the input shape of the model is unknown",
                         "pass input_shape=(C, H, W) to import_torch")  # fmt: skip


def _f64(t) -> np.ndarray:
    return t.detach().cpu().double().numpy().reshape(-1)


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


class _Builder:
    def __init__(self, gm, source: str, meta: dict, input_shape: tuple[int, ...],
                 rounding: str = "half-up"):  # fmt: skip
        self.gm = gm
        self.rounding = rounding
        self.source = source
        self.meta = meta
        self.input_shape = input_shape
        self.modules = dict(gm.named_modules())
        self.ops: list = []
        self.weights: dict[str, np.ndarray] = {}
        self.biases: dict[str, np.ndarray] = {}
        self.bits: dict[str, int] = {}
        self.input_spec: InputSpec | None = None
        self.logit_scale = 1.0
        self.num_classes = 0

    # --------------------------------------------------------------- helpers
    def fail(self, where: str, problem: str, fix: str | None = None):
        raise UserInputError(self.source, where, problem,
                             fix or "build the model from the models.quant contract modules "
                             "(see models/quant.py)")  # fmt: skip

    def emit(self, op) -> int:
        self.ops.append(op)
        return len(self.ops)

    @staticmethod
    def shape_of(node) -> tuple[int, ...]:
        tm = node.meta.get("tensor_meta")
        return tuple(tm.shape) if tm is not None else ()

    def as_pend(self, state, name: str, channels: int) -> _Pend:
        if isinstance(state, _Pend):
            return state
        if isinstance(state, _Val):
            c = channels
            xmax = max(abs(state.lo), abs(state.hi))
            return _Pend(
                name, "value", state.v, np.full(c, state.scale), np.zeros(c),
                np.full(c, -np.inf), np.full(c, np.inf), xmax,
            )  # fmt: skip
        self.fail(name, "float input reaches a float op before InputQuant",
                  "start the model with InputQuant")  # fmt: skip

    def need_val(self, state, name: str, what: str) -> _Val:
        if isinstance(state, _Val):
            return state
        self.fail(name, f"input of {what} is not quantized", _FIX_QUANT)

    # ------------------------------------------------------------- the walk
    def build(self) -> IntegerNetwork:
        env: dict[Any, Any] = {}
        out_state = None
        out_node = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if env:
                    self.fail(node.name, "the model takes more than one input")
                env[node] = _FloatIn()
            elif node.op == "call_module":
                env[node] = self.call_module(node, env)
            elif node.op == "call_function":
                env[node] = self.call_function(node, env)
            elif node.op == "call_method":
                env[node] = self.call_method(node, env)
            elif node.op == "output":
                out_node = node.args[0]
                out_state = env.get(out_node)
            else:
                self.fail(node.name, f"unsupported graph node {node.op} {node.target}")
        if self.input_spec is None:
            self.fail("InputQuant", "the model has no InputQuant", "start it with InputQuant")
        self.finish_logits(out_state, out_node)
        meta = dict(self.meta)
        meta.setdefault("input_shape", list(self.input_shape))
        meta["rounding"] = self.rounding
        return IntegerNetwork(
            self.ops, self.input_spec, self.weights, self.biases, self.bits,
            float(self.logit_scale), int(self.num_classes), meta,
        )  # fmt: skip

    def arg(self, node, env, i=0):
        a = node.args[i]
        if a not in env:
            self.fail(node.name, f"unsupported argument {a!r}")
        return env[a]

    def call_module(self, node, env):
        from torch import nn

        from models.graph import ChannelAffine
        from models.quant import InputQuant, LogitScale, QConv2d, QLinear, QuantAct

        name = str(node.target)
        mod = self.modules[name]
        x = self.arg(node, env)
        out_shape = self.shape_of(node)
        channels = out_shape[1] if len(out_shape) > 1 else 1
        if isinstance(mod, InputQuant):
            return self.input_quant(mod, x, name)
        if isinstance(mod, QuantAct):
            return self.quant_act(mod, x, name, channels)
        if isinstance(mod, QConv2d):
            return self.conv(mod, x, name, node)
        if isinstance(mod, QLinear):
            return self.linear(mod, x, name)
        if isinstance(mod, nn.Identity | nn.Dropout):
            return x
        if isinstance(mod, nn.BatchNorm1d | nn.BatchNorm2d):
            if mod.running_mean is None:
                self.fail(name, "BatchNorm without running statistics",
                          "use track_running_stats=True")  # fmt: skip
            inv = 1.0 / np.sqrt(_f64(mod.running_var) + float(mod.eps))
            g = inv * (_f64(mod.weight) if mod.weight is not None else 1.0)
            h = (_f64(mod.bias) if mod.bias is not None else 0.0) - _f64(mod.running_mean) * g
            return self.affine(self.as_pend(x, name, channels), g, h)
        if isinstance(mod, ChannelAffine):  # models.graph: BatchNorm / constant Mul, Add
            return self.affine(self.as_pend(x, name, channels), _f64(mod.gain), _f64(mod.shift))
        if isinstance(mod, LogitScale):
            try:
                e = math.exp(float(mod.log_scale.detach()))
            except OverflowError:
                e = math.inf  # refused when the layer is folded (not finite)
            p = self.as_pend(x, name, channels)
            return self.affine(p, np.full(p.alpha.shape, e), np.zeros(p.alpha.shape))
        if isinstance(mod, nn.ReLU6):
            return self.clamp(self.as_pend(x, name, channels), 0.0, 6.0)
        if isinstance(mod, nn.ReLU):
            return self.clamp(self.as_pend(x, name, channels), 0.0, np.inf)
        if isinstance(mod, nn.Hardtanh):
            return self.clamp(self.as_pend(x, name, channels), mod.min_val, mod.max_val)
        if isinstance(mod, nn.MaxPool2d):
            if _pair(mod.dilation) != (1, 1) or mod.ceil_mode or mod.return_indices:
                self.fail(name, "MaxPool2d with dilation, ceil_mode or return_indices",
                          "use plain max pooling")  # fmt: skip
            pool = Pool(_pair(mod.kernel_size), _pair(mod.stride or mod.kernel_size),
                        _pair(mod.padding))  # fmt: skip
            return self.maxpool(x, pool, name, channels)
        if isinstance(mod, nn.AvgPool2d):
            if mod.ceil_mode or (not mod.count_include_pad and _pair(mod.padding) != (0, 0)):
                self.fail(name, "AvgPool2d with ceil_mode or count_include_pad=False",
                          "use plain average pooling")  # fmt: skip
            pool = Pool(_pair(mod.kernel_size), _pair(mod.stride or mod.kernel_size),
                        _pair(mod.padding))  # fmt: skip
            div = mod.divisor_override or pool.size
            return self.sumpool(x, pool, div, name, global_=False)
        if isinstance(mod, nn.AdaptiveAvgPool2d):
            in_shape = self.shape_of(node.args[0])
            h, w = in_shape[2], in_shape[3]
            oh, ow = _pair(mod.output_size if mod.output_size is not None else (h, w))
            if h % oh or w % ow:
                self.fail(name, f"AdaptiveAvgPool2d from {h}x{w} to {oh}x{ow} has unequal "
                          "windows", "use an output size dividing the input")  # fmt: skip
            pool = Pool((h // oh, w // ow), (h // oh, w // ow), (0, 0))
            return self.sumpool(x, pool, pool.size, name, global_=(oh, ow) == (1, 1))
        if isinstance(mod, nn.Flatten):
            if mod.start_dim != 1 or mod.end_dim != -1:
                self.fail(name, "Flatten other than start_dim=1, end_dim=-1")
            return self.flatten(x, name)
        self.fail(name, f"unsupported layer {type(mod).__name__}",
                  "use the layers of models.quant and the torch.nn ops listed in "
                  "simulator.importer")  # fmt: skip

    def call_function(self, node, env):
        import torch
        from torch.nn import functional as F

        name = node.name
        fn = node.target
        if fn in (operator.add, torch.add, operator.iadd):
            a, b = (env.get(a) for a in node.args[:2])
            return self.add(a, b, name)
        if fn is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start != 1:
                self.fail(name, "torch.flatten other than start_dim=1")
            return self.flatten(self.arg(node, env), name)
        shape = self.shape_of(node)
        channels = shape[1] if len(shape) > 1 else 1
        if fn in (F.relu, torch.relu):
            return self.clamp(self.as_pend(self.arg(node, env), name, channels), 0.0, np.inf)
        if fn is F.relu6:
            return self.clamp(self.as_pend(self.arg(node, env), name, channels), 0.0, 6.0)
        if fn is F.hardtanh:
            lo = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
            hi = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
            return self.clamp(self.as_pend(self.arg(node, env), name, channels), lo, hi)
        self.fail(name, f"unsupported function {getattr(fn, '__name__', fn)}",
                  "use the layers of models.quant and plain torch.nn modules")  # fmt: skip

    def call_method(self, node, env):
        name = node.name
        if node.target == "flatten" and tuple(node.args[1:2]) == (1,):
            return self.flatten(self.arg(node, env), name)
        if node.target == "relu":
            shape = self.shape_of(node)
            return self.clamp(self.as_pend(self.arg(node, env), name, shape[1]), 0.0, np.inf)
        self.fail(name, f"unsupported tensor method .{node.target}()",
                  "use nn.Flatten / torch.flatten(x, 1)")  # fmt: skip

    # ------------------------------------------------------------- op rules
    def input_quant(self, mod, x, name):
        if not isinstance(x, _FloatIn):
            self.fail(name, "InputQuant must take the model's input images")
        if self.input_spec is not None:
            self.fail(name, "more than one InputQuant")
        mean = mod.mean.detach().cpu().numpy().astype(np.float32).reshape(-1)
        std = mod.std.detach().cpu().numpy().astype(np.float32).reshape(-1)
        self.input_spec = InputSpec(mean, std, float(mod.scale), int(mod.qmin), int(mod.qmax),
                                    flatten=x.flatten)  # fmt: skip
        channels = 1 if x.flatten or len(self.input_shape) < 3 else int(self.input_shape[0])
        return _Val(0, float(mod.scale), int(mod.qmin), int(mod.qmax), channels,
                    binary=mod.bits == 1)  # fmt: skip

    def quant_act(self, mod, x, name, channels):
        p = self.as_pend(x, name, channels)
        sign = mod.bits == 1
        out_scale = 1.0 if sign else float(mod.scale)
        return self.finish(p, out_scale, int(mod.qmin), int(mod.qmax), sign, name)

    def conv(self, mod, x, name, node):
        if isinstance(x, _FloatIn) and self.input_spec is None:
            self.fail(name, "input of QConv2d is not quantized (float images)", _FIX_QUANT)
        x = self.need_val(x, name, "QConv2d")
        if isinstance(mod.padding, str) or mod.padding_mode != "zeros":
            self.fail(name, "QConv2d needs numeric zero padding", "use padding=int")
        if _pair(mod.dilation) != (1, 1):
            self.fail(name, "dilated convolution is not supported")
        codes, s_w = mod.weight_codes()
        w_name = f"{name}.weight"
        fan_in = int(np.prod(codes.shape[1:]))
        layer = dict(
            module=name, weight=w_name, src=x.v, stride=_pair(mod.stride),
            padding=_pair(mod.padding), groups=int(mod.groups),
        )  # fmt: skip
        return self.layer_pend(mod, x, name, codes, s_w, fan_in, "conv", layer)

    def linear(self, mod, x, name):
        x = self.need_val(x, name, "QLinear")
        codes, s_w = mod.weight_codes()
        layer = dict(module=name, weight=f"{name}.weight", src=x.v,
                     xnor=bool(mod.weight_bits == 1 and x.binary))  # fmt: skip
        return self.layer_pend(mod, x, name, codes, s_w, int(codes.shape[1]), "linear", layer)

    def layer_pend(self, mod, x, name, codes, s_w, fan_in, kind, layer):
        bits = int(mod.weight_bits)
        w_name = layer["weight"]
        dt = np.int8 if bits <= 8 else np.int16
        self.weights[w_name] = np.ascontiguousarray(codes.cpu().numpy().astype(dt))
        self.bits[w_name] = bits
        s_w = _f64(s_w)
        alpha = s_w * x.scale
        wmax = max(abs(v) for v in weight_range(bits))
        xmax = max(abs(x.lo), abs(x.hi))
        try:
            layer["acc_dtype"] = acc_dtype_for(wmax, xmax, fan_in)
        except ValueError as err:
            self.fail(name, str(err), "use fewer bits")
        acc_bound = wmax * xmax * fan_in
        layer["bias"] = None
        layer["logit_bound"] = np.full(alpha.shape[0], float(acc_bound))
        if mod.bias is not None:
            b_name = f"{name}.bias"
            b = np.rint(_f64(mod.bias) / alpha)
            if np.any(np.abs(b) > INT32_MAX):
                self.fail(name, "bias does not fit int32 at the accumulator scale",
                          "retrain with weight decay or smaller biases")  # fmt: skip
            self.biases[b_name] = b.astype(np.int32)
            layer["bias"] = b_name
            layer["logit_bound"] = layer["logit_bound"] + np.abs(b)
            acc_bound += 2**31  # a corrupted bias can be any int32
        c = alpha.shape[0]
        return _Pend(name, kind, x.v, alpha, np.zeros(c), np.full(c, -np.inf),
                     np.full(c, np.inf), acc_bound, layer)  # fmt: skip

    def affine(self, p: _Pend, g, h) -> _Pend:
        """Apply y -> g * y + h per channel to a pending function."""
        c = max(p.alpha.shape[0], np.shape(g)[0] if np.ndim(g) else 1)
        g = np.broadcast_to(np.asarray(g, np.float64), (c,))
        h = np.broadcast_to(np.asarray(h, np.float64), (c,))
        alpha = np.broadcast_to(p.alpha, (c,)) * g
        beta = np.broadcast_to(p.beta, (c,)) * g + h
        with np.errstate(invalid="ignore"):
            l1 = np.broadcast_to(p.clamp_lo, (c,)) * g + h
            h1 = np.broadcast_to(p.clamp_hi, (c,)) * g + h
        lo = np.where(g >= 0, l1, h1)
        hi = np.where(g >= 0, h1, l1)
        zero = g == 0  # constant channel: y = h
        lo = np.where(zero, -np.inf, lo)
        hi = np.where(zero, np.inf, hi)
        return _Pend(p.module, p.kind, p.src, alpha, beta, lo, hi, p.acc_bound, p.layer,
                     list(p.pools))  # fmt: skip

    @staticmethod
    def clamp(p: _Pend, lo: float, hi: float) -> _Pend:
        """clamp(clamp(z, L, H), lo, hi) = clamp(z, clip(L, lo, hi), clip(H, lo, hi))."""
        return _Pend(p.module, p.kind, p.src, p.alpha, p.beta, np.clip(p.clamp_lo, lo, hi),
                     np.clip(p.clamp_hi, lo, hi), p.acc_bound, p.layer, list(p.pools))  # fmt: skip

    def maxpool(self, x, pool: Pool, name: str, channels: int):
        if isinstance(x, _Val):
            op = MaxPool((x.v,), x.lo, x.hi, x.scale, name, pool=pool,
                         pool_dir=np.ones(channels, np.int8))  # fmt: skip
            return _Val(self.emit(op), x.scale, x.lo, x.hi, x.channels, x.binary)
        if isinstance(x, _Pend):
            if x.kind == "linear":
                self.fail(name, "max pooling after a linear layer")
            d = np.where(x.alpha < 0, -1, 1).astype(np.int8)
            p = _Pend(x.module, x.kind, x.src, x.alpha, x.beta, x.clamp_lo, x.clamp_hi,
                      x.acc_bound, x.layer, list(x.pools) + [(pool, d)])  # fmt: skip
            return p
        self.fail(name, "max pooling of float images", "pool after InputQuant")

    def sumpool(self, x, pool: Pool, div: int, name: str, global_: bool):
        x = self.need_val(x, name, "average pooling")
        lo, hi = x.lo * pool.size, x.hi * pool.size
        op = SumPool((x.v,), lo, hi, x.scale / div, name, pool=pool, global_=global_)
        return _Val(self.emit(op), x.scale / div, lo, hi, x.channels)

    def flatten(self, x, name: str):
        if isinstance(x, _FloatIn):
            return _FloatIn(flatten=True)
        x = self.need_val(x, name, "flatten (flatten after the QuantAct)")
        op = Flatten((x.v,), x.lo, x.hi, x.scale, name)
        return _Val(self.emit(op), x.scale, x.lo, x.hi, 1, x.binary)

    def add(self, a, b, name: str):
        if not (isinstance(a, _Val) and isinstance(b, _Val)):
            self.fail(name, "residual add of values that are not QuantAct outputs",
                      "end both branches with a QuantAct of the same range")  # fmt: skip
        if not math.isclose(a.scale, b.scale, rel_tol=1e-6):
            self.fail(name, f"residual add of different scales {a.scale} and {b.scale}",
                      "give both QuantActs the same bits and range")  # fmt: skip
        lo, hi = a.lo + b.lo, a.hi + b.hi
        op = Add((a.v, b.v), lo, hi, a.scale, name)
        return _Val(self.emit(op), a.scale, lo, hi, max(a.channels, b.channels))

    # ---------------------------------------------------------- requantize
    def finish(self, p: _Pend, out_scale, qmin, qmax, sign, name, logits=False) -> _Val:
        """Emit the pending layer (or a Requantize) with its requantization, then pools."""
        finite = (np.isfinite(p.alpha).all() and np.isfinite(p.beta).all()
                  and not np.isnan(p.clamp_lo).any() and not np.isnan(p.clamp_hi).any()
                  and math.isfinite(out_scale) and out_scale > 0)
        try:
            if not finite:
                raise ValueError("not finite")
            rq = make_requant(p.alpha, p.beta, p.clamp_lo, p.clamp_hi, out_scale, qmin, qmax,
                              p.acc_bound, sign, self.rounding)  # fmt: skip
        except (ValueError, OverflowError):
            self.fail(p.module, "folded requantization is not finite or overflows (a weight, "
                      "batch-norm or scale value of this layer is out of range)",
                      "retrain or re-export the model; check it for NaN or huge values")
        lo, hi = rq.out_range()
        pools = [(pool, d1 * rq.direction()) for pool, d1 in p.pools]
        L = p.layer
        if p.kind == "conv":
            if p.emitted:
                self.fail(p.module, "a layer's output feeds two quantizers",
                          "quantize each layer output once")  # fmt: skip
            fused = pools.pop(0) if pools else (None, None)
            op = Conv((L["src"],), lo, hi, out_scale, p.module, weight=L["weight"],
                      bias=L["bias"], stride=L["stride"], padding=L["padding"],
                      groups=L["groups"], requant=rq, acc_dtype=L["acc_dtype"],
                      pool=fused[0], pool_dir=fused[1])  # fmt: skip
        elif p.kind == "linear":
            if p.emitted:
                self.fail(p.module, "a layer's output feeds two quantizers",
                          "quantize each layer output once")  # fmt: skip
            op = Linear((L["src"],), lo, hi, out_scale, p.module, weight=L["weight"],
                        bias=L["bias"], requant=rq, acc_dtype=L["acc_dtype"],
                        xnor=L["xnor"])  # fmt: skip
        else:
            op = Requantize((p.src,), lo, hi, out_scale, name, requant=rq)
        v = self.emit(op)
        p.emitted.append(v)
        channels = rq.channels
        for pool, d in pools:
            v = self.emit(MaxPool((v,), lo, hi, out_scale, name, pool=pool, pool_dir=d))
        return _Val(v, out_scale, lo, hi, channels, binary=sign)

    def finish_logits(self, state, node) -> None:
        shape = self.shape_of(node) if node is not None else ()
        if len(shape) != 2:
            self.fail("output", f"the model's output has shape {shape}, expected [N, classes]")
        self.num_classes = int(shape[1])
        p = self.as_pend(state, "output", self.num_classes)
        alpha = np.abs(p.alpha)
        nz = alpha[alpha > 0]
        finest = float(nz.min()) if nz.size else 1.0
        # the clean network's worst case (corrupted biases saturate at int32 instead)
        bound = p.layer.get("logit_bound", p.acc_bound)
        span = float(np.max(alpha * bound + np.abs(p.beta)))
        scale = max(finest, span / 2**30)
        self.logit_scale = scale
        out = self.finish(p, scale, INT32_MIN, INT32_MAX, False, "output")
        if self.ops[out.v - 1].dtype != np.int32:
            self.ops[out.v - 1] = _widen(self.ops[out.v - 1])


def _widen(op):
    """Make the logits op's declared range int32 (its codes already fit)."""
    from dataclasses import replace

    return replace(op, lo=INT32_MIN, hi=INT32_MAX)
