"""PTQ observers: calibration of the float graph, weight and activation quantizer choice,
bias rounding (see `simulator.ptq` for the steps and the conventions)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ACT_PERCENTILE", "WEIGHT_PERCENTILE", "act_quant", "weight_codes", "calibrate",
           "round_biases"]  # fmt: skip

ACT_PERCENTILE = 99.99
WEIGHT_PERCENTILE = 99.9


def round_biases(nodes, tensors, input_scale: float) -> None:
    """Biases onto their accumulator grid s_in * s_w[c] (the int32 bias integer kernels
    add), so that the fake-quant model and the integer network add the same bias."""
    scale = {"input": input_scale}
    for node in nodes:
        src = scale.get(node["src"][0]) if node["src"] else None
        if node["op"] == "quant":
            scale[node["name"]] = node["scale"]
        elif node["op"] in ("maxpool", "flatten", "add"):
            scale[node["name"]] = src
        elif node["op"] == "avgpool":
            scale[node["name"]] = src / (node["kernel"][0] * node["kernel"][1])
        elif node["op"] == "gap":
            scale[node["name"]] = src / node["area"]
        elif node["op"] in ("conv", "linear"):
            t = tensors[node["name"]]
            alpha = src * t["scale"].astype(np.float64)
            t["bias"] = np.rint(t["bias"] / alpha) * alpha


def act_quant(lo: float, hi: float, bits: int) -> dict[str, Any]:
    """Quantizer for observed range [lo, hi]: unsigned where lo >= 0, else signed narrow."""
    if lo >= 0:
        qmin, qmax, span = 0, 2**bits - 1, hi
    else:
        qmin, qmax, span = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1, max(-lo, hi)
    scale = float(np.float32(span / qmax)) if span > 0 else 1.0
    return {"bits": int(bits), "scale": scale, "qmin": qmin, "qmax": qmax}


def weight_codes(w: np.ndarray, bits: int, granularity: str, observer: str):
    """(int8 codes, float32 scale per output channel, fraction of weights clipped)."""
    qmax = 2 ** (bits - 1) - 1
    flat = np.abs(w.reshape(w.shape[0], -1))
    if observer == "percentile":
        if granularity == "channel":
            t = np.percentile(flat, WEIGHT_PERCENTILE, axis=1)
        else:
            t = np.full(w.shape[0], np.percentile(flat, WEIGHT_PERCENTILE))
    else:
        t = flat.max(axis=1) if granularity == "channel" else np.full(w.shape[0], flat.max())
    scale = (t / qmax).astype(np.float32)
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    ratio = w.reshape(w.shape[0], -1) / scale.astype(np.float64)[:, None]
    clipped = float(np.mean(np.abs(np.rint(ratio)) > qmax))
    codes = np.clip(np.rint(ratio), -qmax, qmax).astype(np.int8).reshape(w.shape)
    return codes, scale, clipped


def calibrate(walk, images: np.ndarray, mean, std, observer: str, batch: int = 256):
    """{quantizer name: (lo, hi)} observed on the float graph (see the module doc)."""
    import torch
    from torch.nn import functional as F

    m = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
    w = {k: {n: torch.from_numpy(np.asarray(a, np.float32)) for n, a in d.items()}
         for k, d in walk.float_w.items()}  # fmt: skip
    lows: dict[str, list[float]] = {}
    samples: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, len(images), batch):
            env = {"input": (torch.from_numpy(images[start : start + batch]) - m) / s}
            for node in walk.nodes:
                op, x = node["op"], env[node["src"][0]]
                p = w.get(node["name"])
                if op == "conv":
                    y = F.conv2d(x, p["weight"], p["bias"], node["stride"], node["padding"],
                                 1, node["groups"])  # fmt: skip
                elif op == "linear":
                    y = F.linear(x, p["weight"], p["bias"])
                elif op == "affine":
                    shape = (1, -1) + (1,) * (x.dim() - 2)
                    y = x * p["gain"].reshape(shape) + p["shift"].reshape(shape)
                elif op == "clamp":
                    lo = -float("inf") if node["lo"] is None else node["lo"]
                    hi = float("inf") if node["hi"] is None else node["hi"]
                    y = torch.clamp(x, lo, hi)
                elif op == "maxpool":
                    y = F.max_pool2d(x, node["kernel"], node["stride"], node["padding"])
                elif op == "avgpool":
                    y = F.avg_pool2d(x, node["kernel"], node["stride"], node["padding"])
                elif op == "gap":
                    y = F.adaptive_avg_pool2d(x, 1)
                elif op == "flatten":
                    y = torch.flatten(x, 1)
                elif op == "add":
                    y = x + env[node["src"][1]]
                else:  # quant: observe, pass the float value on
                    y = x
                    lows.setdefault(node["name"], []).append(float(x.min()))
                    a = x.abs().reshape(-1).numpy()
                    step = max(1, a.size // 100_000)
                    samples.setdefault(node["name"], []).append(
                        a[::step] if observer == "percentile" else a.max(keepdims=True))
                env[node["name"]] = y
    stats = {}
    for q, vals in samples.items():
        allv = np.concatenate(vals)
        hi = float(np.percentile(allv, ACT_PERCENTILE) if observer == "percentile" else allv.max())
        lo = min(lows[q])
        stats[q] = (max(lo, -hi), hi)
    return stats
