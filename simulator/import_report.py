"""What an import did, per layer: bit widths, weight scales, folded BatchNorm, accumulator
width, the fraction of weights clipped by PTQ. Rows are plain dicts (JSON for --json)."""

from __future__ import annotations

from typing import Any

import numpy as np

from simulator.network import IntegerNetwork
from simulator.ops import Conv, Linear

__all__ = ["layer_report", "format_report"]


def layer_report(model: Any, net: IntegerNetwork) -> list[dict[str, Any]]:
    """One row per conv / linear layer of `model` (a models.quant / models.graph network).

    weight_bits, scale_min / scale_max (weight scale per output channel, real units per code),
    folded_bn (None where unknown), acc_bits (32 or 64), in_bits / out_bits (bits of the
    layer's input and output codes), clipped (fraction of weights PTQ clipped; 0 otherwise).
    """
    from models.quant import QConv2d, QLinear

    info = {}
    graph = getattr(model, "graph", None)
    if isinstance(graph, dict):
        info = {"layers." + n["name"].replace(".", "_"): n.get("info", {}) for n in graph["nodes"]}
    ops = {op.module: op for op in net.ops if isinstance(op, Conv | Linear)}
    rows = []
    for name, mod in model.named_modules():
        if not isinstance(mod, QConv2d | QLinear) or name not in ops:
            continue
        op = ops[name]
        _, scale = mod.weight_codes()
        scale = scale.detach().cpu().numpy().astype(np.float64)
        src = op.src[0]
        lo, hi = net.value_range(src)
        meta = info.get(name, {})
        rows.append({
            "layer": meta.get("source", name.removeprefix("layers.")),
            "op": "conv" if isinstance(op, Conv) else "linear",
            "weight_shape": list(net.weights()[op.weight].shape),
            "weight_bits": int(net.weight_bits(op.weight)),
            "in_bits": _bits(lo, hi),
            "out_bits": _bits(op.lo, op.hi),
            "scale_min": float(scale.min()),
            "scale_max": float(scale.max()),
            "folded_bn": meta.get("folded_bn"),
            "acc_bits": int(np.dtype(op.acc_dtype).itemsize * 8),
            "clipped": float(meta.get("clipped", 0.0)),
        })  # fmt: skip
    return rows


def _bits(lo: int, hi: int) -> int:
    """Bits of a code range: unsigned where lo >= 0, else two's complement."""
    if lo >= 0:
        return max(1, int(hi).bit_length())
    return max(int(-lo - 1).bit_length(), int(hi).bit_length()) + 1


def format_report(rows: list[dict[str, Any]]) -> str:
    """The rows as a text table."""
    head = (f"{'layer':<28} {'op':<6} {'w bits':>6} {'in/out':>7} {'scale min':>10} "
            f"{'scale max':>10} {'BN folded':>9} {'acc':>5} {'clipped':>8}\n")  # fmt: skip
    lines = [head]
    for r in rows:
        bn = "-" if r["folded_bn"] is None else ("yes" if r["folded_bn"] else "no")
        io = f"{r['in_bits']}/{r['out_bits']}"
        lines.append(f"{r['layer'][:28]:<28} {r['op']:<6} {r['weight_bits']:>6} {io:>7} "
                     f"{r['scale_min']:>10.3g} {r['scale_max']:>10.3g} {bn:>9} "
                     f"{'int' + str(r['acc_bits']):>5} {r['clipped']:>8.2%}\n")  # fmt: skip
    return "".join(lines)
