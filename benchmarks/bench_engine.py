"""Integer engine speed: numba vs the int8 GEMM backend vs raw torch._int_mm vs PyTorch.

Everything in one run, on the same cores, as ratios (best of --repeats; wall time
`perf_counter` beside CPU time `process_time`, which counts every thread of the process:
numba's, oneDNN's and torch's). For each model and weight width (--bits, default 4 and 8):

  whole clean pass   IntegerNetwork.forward over every image with
                       numba   engine.GEMM = "int"  (numba kernels only: the oracle)
                       int8    engine.GEMM = "auto" (int8 GEMM where exact and fan-in >= 32)
                     logits asserted identical; PyTorch fake-quant in eval mode under
                     torch.inference_mode at its best batch size (--torch-batch); the sum of
                     the layers' raw int_mm times (the floor for a GEMM-bound pass).
  per layer          every Conv/Linear op on the first --layer-images images (default 1024,
                     one engine batch), inputs from a clean pass: numba, auto (and forced
                     GEMM="int8" where auto keeps numba), outputs asserted identical, and raw
                     `torch._int_mm` on the same GEMM shapes with random int8 operands (the
                     practical peak): conv M = out channels / groups, K = fan-in, N = images
                     x output positions, once in the engine's chunks of images and once in
                     one call (<= 512 MiB of operand per call); linear M = images, K =
                     fan-in, N = outputs, B a transposed view as in the engine. GMAC/s and
                     the backend as % of the better raw int_mm.
  corrupted (VGG3)   i.i.d. flips of the two's complement weight bits at each --ber: a full
                     corrupted pass (numba and auto, identical), `Session.logits` (median
                     over --chips), the PyTorch way (corrupt codes, dequantize, fake-quant
                     forward through the `weight_fault` hook) and pytorchfi (first BER only,
                     if installed: pip install '.[bench]').
and the numba int8 dot-product peak (`kernels.dot_peak_parallel`, L1-resident).

Models: VGG3 full width on the Fashion-MNIST test images (--images; the trained checkpoint
--vgg3-ckpt if present, else `build_model` with BatchNorm statistics from a few train-mode
batches of training images: the output says which) and ResNet-18 for 32x32 RGB
(`build_model("resnet18", in_channels=3, input_size=32)`, BatchNorm set the same way) on
--resnet-images synthetic images (`synthetic-rgb`). numba and torch run --threads threads
(default: every core this process may use).

    .venv/bin/python benchmarks/bench_engine.py --json bench_engine.json --write
    .venv/bin/python benchmarks/bench_engine.py --images 500 --resnet-images 64 --repeats 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
import torch

from models import build_model
from models.datasets import load_dataset
from simulator import engine, gemm_int8, int8_backend, kernels
from simulator.importer import import_torch
from simulator.ops import Conv, Linear

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("results_engine.md")
BEGIN, END = "<!-- bench_engine.py:begin -->", "<!-- bench_engine.py:end -->"
FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
         "amx_tile", "amx_int8", "amx_bf16")  # fmt: skip
ONE_CALL_BYTES = 512 * 2**20  # raw int_mm "one call": at most this much B operand per call
# The engine's GEMM chunking (mirrored for raw int_mm "engine chunks").
CONV_BYTES = int8_backend._INT8_CONV_BYTES
LINEAR_ROWS = int8_backend._INT8_LINEAR_ROWS


# ----------------------------------------------------------------------------- timing
def best_times(fn, repeats: int) -> tuple[float, float]:
    """(best wall time, CPU time of that run) over `repeats` runs of fn()."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - t, time.process_time() - c))
    return best


def timed(fn, repeats: int) -> dict:
    w, c = best_times(fn, repeats)
    return {"wall_s": w, "cpu_s": c}


def with_gemm(mode: str, fn):
    """fn() with engine.GEMM = mode (restored afterwards)."""
    old = engine.GEMM
    engine.GEMM = mode
    try:
        return fn()
    finally:
        engine.GEMM = old


# ----------------------------------------------------------------------------- machine
def cpu_info() -> dict:
    """lscpu model name and the SIMD / dot-product flags that matter for int8 GEMM."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        out = ""
    fields = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
    flags = fields.get("Flags", "").split()
    if not flags and os.path.exists("/proc/cpuinfo"):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    return {
        "model_name": fields.get("Model name") or platform.processor() or platform.machine(),
        "flags": {f: f in flags for f in FLAGS},
        "cores": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def threading_info() -> dict:
    """Thread pools in play (after a numba parallel run): they share the cores."""
    backend = next((ln.split(":", 1)[1].strip() for ln in torch.__config__.parallel_info()
                    .splitlines() if ln.startswith("ATen parallel backend")), "?")  # fmt: skip
    return {
        "numba_layer": numba.threading_layer(),
        "torch_backend": backend,
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS",
                                               "NUMBA_THREADING_LAYER", "MCELSIM_GEMM")},
    }  # fmt: skip


def measure_peak(threads: int, repeats: int) -> float:
    """int8 MAC/s of numba dot products on every thread (L1-resident vectors)."""
    rng = np.random.default_rng(0)
    k, reps = 4096, 20000
    a = rng.integers(-127, 128, (threads, k)).astype(np.int8)
    b = rng.integers(-127, 128, (threads, k)).astype(np.int8)
    out = np.zeros(threads, np.int64)
    kernels.dot_peak_parallel(a, b, 10, out)
    wall, _ = best_times(lambda: kernels.dot_peak_parallel(a, b, reps, out), repeats)
    return threads * k * reps / wall


# ----------------------------------------------------------------------------- models
def set_bn_stats(model, images: np.ndarray, batches: int = 4, bs: int = 256) -> None:
    """BatchNorm running statistics = the average over a few train-mode batches."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for b in range(batches):
            chunk = images[b * bs : (b + 1) * bs]
            if len(chunk):
                model(torch.from_numpy(chunk))
    model.eval()


def vgg3_model(bits: int, ckpt_pattern: str, data) -> tuple:
    """(model, meta, source text) for VGG3 with `bits`-bit weights."""
    path = ROOT / ckpt_pattern.format(bits=bits)
    if path.is_file():
        from models import load_checkpoint

        model, meta = load_checkpoint(path)
        got = meta.get("model", {}).get("weight_bits")
        if meta.get("model", {}).get("arch") == "vgg3" and got == bits:
            return model.eval(), meta, f"trained checkpoint {path.relative_to(ROOT)}"
    torch.manual_seed(0)
    model = build_model("vgg3", weight_bits=bits, mean=data.mean, std=data.std)
    train = load_dataset("fashion-mnist", "train", limit=1024)
    set_bn_stats(model, train.images)
    return model, None, (f"untrained build_model (no {path.relative_to(ROOT)}), BatchNorm "
                         "statistics from 4 train-mode batches of 256 training images")  # fmt: skip


def resnet_images(n: int):
    data = load_dataset("synthetic-rgb", "train")
    reps = -(-n // len(data.images))
    return data, np.ascontiguousarray(np.concatenate([data.images] * reps)[:n])


def resnet_model(bits: int, data) -> tuple:
    torch.manual_seed(0)
    model = build_model("resnet18", in_channels=3, input_size=32, weight_bits=bits,
                        mean=data.mean, std=data.std)  # fmt: skip
    set_bn_stats(model, data.images)
    return model, None, ("untrained build_model, BatchNorm statistics from 4 train-mode "
                         "batches of 256 synthetic-rgb images")  # fmt: skip


# ----------------------------------------------------------------------------- raw int_mm
def gemm_shape(op, x_shape, w_shape) -> dict:
    """The layer's GEMM as the int8 backend computes it (per image for N / rows)."""
    if isinstance(op, Conv):
        o_n, cg, kh, kw = w_shape
        (sh, sw), (ph, pw) = op.stride, op.padding
        ho = (x_shape[2] + 2 * ph - kh) // sh + 1  # before any fused pooling
        wo = (x_shape[3] + 2 * pw - kw) // sw + 1
        k_n = cg * kh * kw
        pitch = x_shape[3] + 2 * pw if (sh, sw) == (1, 1) else wo  # engine's padded grid
        return {"kind": "conv", "groups": op.groups, "M": o_n // op.groups, "K": k_n,
                "N_per_image": ho * wo, "grid_per_image": ho * pitch,
                "macs_per_image": o_n * k_n * ho * wo}  # fmt: skip
    return {"kind": "linear", "groups": 1, "M_per_image": 1, "K": w_shape[1], "N": w_shape[0],
            "macs_per_image": w_shape[0] * w_shape[1]}  # fmt: skip


def describe(op, x_shape, w_shape) -> str:
    """Short text of a Conv/Linear op: 'conv 64->64 3x3 +pool', 'linear 3136->2048'."""
    if isinstance(op, Conv):
        text = f"conv {x_shape[1]}->{w_shape[0]} {w_shape[2]}x{w_shape[3]}"
        text += f" /{op.stride[0]}" if op.stride != (1, 1) else ""
        text += f" g{op.groups}" if op.groups > 1 else ""
        return text + (" +pool" if op.pool is not None else "")
    return f"linear {w_shape[1]}->{w_shape[0]}" + (" xnor" if op.xnor else "")


def raw_int_mm(g: dict, n: int, repeats: int, rng) -> dict:
    """Best times of torch._int_mm on the layer's GEMM for n images: in the engine's chunks
    and in one call (<= ONE_CALL_BYTES of B per call). Random int8 operands."""

    def rand(*shape):
        return torch.from_numpy(rng.integers(-8, 8, shape, dtype=np.int8))

    def calls_conv(step):  # step images per call
        a = rand(g["M"], g["K"])
        full, rem = divmod(n, step)
        calls = [(a, rand(g["K"], step * g["N_per_image"]))] * (full * g["groups"])
        if rem:
            calls += [(a, rand(g["K"], rem * g["N_per_image"]))] * g["groups"]
        return calls

    def calls_linear(rows):
        b = rand(g["N"], g["K"]).t()  # transposed view, as the engine passes w.T
        full, rem = divmod(n, rows)
        calls = [(rand(rows, g["K"]), b)] * full
        if rem:
            calls.append((rand(rem, g["K"]), b))
        return calls

    if g["kind"] == "conv":
        engine_step = max(1, min(n, CONV_BYTES // (g["grid_per_image"] * g["K"])))
        one_step = max(1, min(n, ONE_CALL_BYTES // (g["N_per_image"] * g["K"])))
        variants = {"engine_chunks": (calls_conv, engine_step), "one_call": (calls_conv, one_step)}
    else:
        one_rows = max(1, min(n, ONE_CALL_BYTES // g["K"]))
        variants = {"engine_chunks": (calls_linear, min(n, LINEAR_ROWS)),
                    "one_call": (calls_linear, one_rows)}  # fmt: skip
    out = {}
    for name, (make, step) in variants.items():
        calls = make(step)

        def run(calls=calls):
            for a, b in calls:
                torch._int_mm(a, b)

        for a, b in {(a.shape, b.shape): (a, b) for a, b in calls}.values():
            torch._int_mm(a, b)  # warm up oneDNN for each shape
        out[name] = {"images_per_call": step, "calls": len(calls), **timed(run, repeats)}
        del calls
    return out


# ----------------------------------------------------------------------------- per layer
def auto_path(net, i: int, fan_in: int, hw, mode: str = "auto") -> tuple[str, str]:
    """(backend that runs under `mode`, why) for Conv/Linear op i."""

    def get():
        info = net.layer_input(i)
        p = info.plan
        if p.backend != "int8":
            return "numba", p.why
        if not int8_backend.ready(info, fan_in):
            return "numba", "int8 planned but not proven exact on this CPU"
        op = net.ops[i]
        how = ""
        if isinstance(op, Conv):
            w = net.weights()[op.weight]
            dnn = int8_backend._onednn_zp(op, info, w.shape, hw, True) is not None
            how = ", oneDNN conv" if dnn else ", int8 patches + GEMM"
        return "int8", p.why + how + (f", zero point {p.zero}" if p.zero else "")

    return with_gemm(mode, get)


def layer_rows(net, x: np.ndarray, repeats: int, rng) -> tuple[list[dict], dict]:
    """Per Conv/Linear op: numba / auto (/ forced int8) / raw int_mm; plus the other ops'
    total time. Streams through the network keeping only live values."""
    last = {}
    for i, op in enumerate(net.ops):
        for s in op.src:
            last[s] = i
    values = {0: x}
    n = x.shape[0]
    rows, other = [], {"wall_s": 0.0, "cpu_s": 0.0, "ops": 0}
    for i, op in enumerate(net.ops):
        xs = [values[s] for s in op.src]
        if not isinstance(op, Conv | Linear):
            y = net.run_op(i, xs)
            t = timed(lambda i=i, xs=xs: net.run_op(i, xs), repeats)
            other["wall_s"] += t["wall_s"]
            other["cpu_s"] += t["cpu_s"]
            other["ops"] += 1
        else:
            w = net.weights()[op.weight]
            g = gemm_shape(op, xs[0].shape, w.shape)
            fan_in = int(np.prod(w.shape[1:]))
            row = {"layer": op.module, "what": describe(op, xs[0].shape, w.shape),
                   "weight_shape": list(w.shape), "gemm": g, "macs": g["macs_per_image"] * n,
                   "images": n}  # fmt: skip
            hw = xs[0].shape[2:]
            row["auto_backend"], row["auto_why"] = auto_path(net, i, fan_in, hw)
            modes = ["int", "auto"]
            forced = auto_path(net, i, fan_in, hw, "int8")[0]
            if row["auto_backend"] == "numba" and forced == "int8":
                modes.append("int8")  # what forcing the int8 GEMM would give
            outs = {}
            for mode in modes:
                run = lambda i=i, xs=xs: net.run_op(i, xs)  # noqa: E731
                outs[mode] = with_gemm(mode, run)  # warm up: compile, self-test
                row[mode] = with_gemm(mode, lambda run=run: timed(run, repeats))
                assert np.array_equal(outs[mode], outs["int"]), f"{op.module}: {mode} != int"
            row["identical"] = True
            row["int_mm"] = raw_int_mm(g, n, repeats, rng)
            y = outs["int"]
            rows.append(row)
        values[i + 1] = y
        for s in set(op.src):
            if last[s] == i:
                values.pop(s, None)
    return rows, other


# ----------------------------------------------------------------------------- PyTorch side
def torch_forward(model, images: torch.Tensor, bs: int) -> None:
    with torch.inference_mode():
        for s in range(0, len(images), bs):
            model(images[s : s + bs])


def torch_best(model, timg: torch.Tensor, sizes, repeats: int) -> dict:
    """PyTorch fake-quant pass (eval, inference_mode) at each batch size; best by wall."""
    model.eval()
    per = {}
    for bs in sizes:
        torch_forward(model, timg[: min(len(timg), bs)], bs)  # warm up
        per[bs] = timed(lambda bs=bs: torch_forward(model, timg, bs), repeats)
    bs = min(per, key=lambda b: per[b]["wall_s"])
    return {"best_batch": bs, **per[bs], "by_batch": {str(b): t for b, t in per.items()}}


def flip_bits(net, ber: float, rng: np.random.Generator):
    """i.i.d. bit flips of the two's complement codes: {name: (flat idx, new codes)}."""
    deltas = {}
    for name, w in net.weights().items():
        bits = net.weight_bits(name)
        n_flips = rng.binomial(w.size * bits, ber)
        if n_flips == 0:
            continue
        cells = rng.choice(w.size * bits, size=n_flips, replace=False)
        idx, bit = cells // bits, cells % bits
        new = w.reshape(-1).astype(np.int64).copy()
        for i, b in zip(idx, bit):  # few flips; plain loop
            if bits == 1:
                new[i] = -new[i]
                continue
            u = (new[i] & ((1 << bits) - 1)) ^ (1 << b)  # flip bit b of the stored word
            new[i] = u - (1 << bits) if u >= 1 << (bits - 1) else u  # back to signed
        uniq = np.unique(idx)
        deltas[name] = (uniq.astype(np.int64), new[uniq])
    return deltas


def applied(net, deltas):
    """{name: full corrupted code array} from deltas."""
    out = {}
    for name, (idx, vals) in deltas.items():
        w = net.weights()[name].copy()
        w.reshape(-1)[idx] = vals
        out[name] = w
    return out


def dequantized(net, model, deltas):
    """{layer module: corrupted w_fq tensor} for the weight_fault hook / pytorchfi."""
    layers = [m for m in model.modules() if hasattr(m, "weight_codes")]
    out = {}
    for name, layer in zip(net.weight_names, layers, strict=True):
        q, s = layer.weight_codes()
        q = q.to(torch.float32)
        if name in deltas:
            idx, vals = deltas[name]
            q.view(-1)[torch.from_numpy(idx)] = torch.from_numpy(vals.astype(np.float32))
        out[layer] = (q * s.reshape((-1,) + (1,) * (q.dim() - 1))).contiguous()
    return out


def run_pytorchfi(model, net, deltas, images, bs):
    try:
        from pytorchfi.core import fault_injection
    except ImportError as err:
        return None, f"pytorchfi not installed ({err}); pip install '.[bench]'"
    layers = dequantized(net, model, deltas)
    args = {"layer_num": [], "k": [], "dim1": [], "dim2": [], "dim3": [], "value": []}
    for li, (name, layer) in enumerate(zip(net.weight_names, layers, strict=True)):
        if name not in deltas:
            continue
        w = layers[layer]
        for flat in deltas[name][0]:
            pos = np.unravel_index(int(flat), tuple(w.shape))
            pos = tuple(int(p) for p in pos) + (None,) * (4 - len(pos))
            args["layer_num"].append(li)
            args["k"].append(pos[0])
            args["dim1"].append(pos[1])
            args["dim2"].append(pos[2])
            args["dim3"].append(pos[3])
            args["value"].append(float(w[tuple(p for p in pos if p is not None)]))
    try:
        t = time.perf_counter()
        fi = fault_injection(
            model, bs, input_shape=list(images.shape[1:]),
            layer_types=[torch.nn.Conv2d, torch.nn.Linear], use_cuda=False,
        )  # fmt: skip
        corrupted = fi.declare_weight_fi(**args)
        corrupted.eval()
        torch_forward(corrupted, images, bs)
        return time.perf_counter() - t, ""
    except Exception as err:  # report why pytorchfi cannot run, measure the rest
        return None, f"pytorchfi failed: {type(err).__name__}: {err}"


def corrupted_runs(net, model, x, timg, torch_bs, args) -> list[dict]:
    """Full corrupted pass (numba vs auto), session, PyTorch way, pytorchfi, per BER."""
    out = []
    if not args.ber:
        return out
    t, c = time.perf_counter(), time.process_time()
    session = net.session(x)
    build = {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c,
             "mib": session.nbytes / 2**20}  # fmt: skip
    for bi, ber in enumerate(args.ber):
        rng = np.random.default_rng(1234 + bi)
        chips = [flip_bits(net, ber, rng) for _ in range(args.chips)]
        e = {"ber": ber, "session_build": build,
             "flips_per_chip": float(np.mean([sum(len(d[0]) for d in c.values())
                                              for c in chips]))}  # fmt: skip
        bad = net.with_weights(applied(net, chips[0]))
        ref = with_gemm("int", lambda bad=bad: bad.forward(x))
        got = with_gemm("auto", lambda bad=bad: bad.forward(x))
        assert np.array_equal(ref, got), "corrupted pass: auto != int"
        for mode in ("int", "auto"):
            e[f"full_{mode}"] = with_gemm(mode, lambda bad=bad: timed(lambda: bad.forward(x),
                                                                       args.repeats))  # fmt: skip
        session.logits(chips[0])  # compile / load the delta kernels
        walls, cpus = [], []
        for ch in chips:
            t, c = time.perf_counter(), time.process_time()
            got = session.logits(ch)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        assert np.array_equal(got, net.with_weights(applied(net, chips[-1])).forward(x))
        e["session"] = {"wall_s": float(np.median(walls)), "cpu_s": float(np.median(cpus))}
        layers = dequantized(net, model, chips[0])
        for layer, w in layers.items():
            layer.weight_fault = lambda lay, w_fq, w=w: w
        e["torch_corrupt"] = timed(lambda: torch_forward(model, timg, torch_bs), args.repeats)
        for layer in layers:
            layer.weight_fault = None
        e["pytorchfi_s"], e["pytorchfi_note"] = (
            run_pytorchfi(model, net, chips[0], timg, torch_bs)
            if bi == 0
            else (None, "pytorchfi measured at the first BER only")
        )
        out.append(e)
    return out


# ----------------------------------------------------------------------------- one model
def bench_model(name: str, bits: int, model, meta, source: str, images: np.ndarray,
                data_text: str, args, rng) -> dict:  # fmt: skip
    net = import_torch(model, meta=meta)
    x = net.quantize_input(images)
    n = len(x)
    for mode in ("int", "auto", "int8"):  # compile / load kernels, run the self-tests
        with_gemm(mode, lambda: net.forward(x[:64]))
    r = {"model": name, "bits": bits, "source": source, "data": data_text, "images": n}
    logits = {m: with_gemm(m, lambda: net.forward(x)) for m in ("int", "auto")}
    assert np.array_equal(logits["int"], logits["auto"]), f"{name} {bits}-bit: auto != int"
    r["identical"] = True
    print(f"{name} {bits}-bit: int8 backend (auto) and numba (int) logits identical "
          f"({n} images)", flush=True)  # fmt: skip
    r["pass"] = {m: with_gemm(m, lambda: timed(lambda: net.forward(x), args.repeats))
                 for m in ("int", "auto")}  # fmt: skip
    timg = torch.from_numpy(images)
    r["torch"] = torch_best(model, timg, args.torch_batch, args.repeats)
    xl = x[: args.layer_images]
    r["layers"], r["other_ops"] = layer_rows(net, xl, args.repeats, rng)
    r["layer_images"] = len(xl)
    r["macs_per_image"] = sum(row["gemm"]["macs_per_image"] for row in r["layers"])
    if name == "vgg3":
        r["corrupt"] = corrupted_runs(net, model, x, timg, r["torch"]["best_batch"], args)
    return r


# ----------------------------------------------------------------------------- report
def _g(macs: float, t: dict) -> str:
    return f"{macs / t['wall_s'] / 1e9:.1f} / {macs / t['cpu_s'] / 1e9:.1f}"


def _raw_best(row: dict) -> dict:
    return min(row["int_mm"].values(), key=lambda t: t["wall_s"])


def report_run(r: dict) -> str:
    n, nl = r["images"], r["layer_images"]
    p_int, p_auto, tq = r["pass"]["int"], r["pass"]["auto"], r["torch"]
    macs = r["macs_per_image"] * n
    scale = n / nl  # per-layer times (nl images) -> the pass's n images
    floor = {k: sum(_raw_best(row)[k] for row in r["layers"]) * scale
             for k in ("wall_s", "cpu_s")}  # fmt: skip
    title = {"vgg3": "VGG3", "resnet18": "ResNet-18"}.get(r["model"], r["model"])
    lines = [
        f"### {title}, {r['bits']}-bit weights: {n} {r['data']}",
        "",
        f"Model: {r['source']}. {r['macs_per_image'] / 1e6:.2f} MMAC per image. Logits of "
        f"the int8 backend and numba: identical ({n} images, asserted).",
        "",
        "| whole clean pass | images/s | wall s | CPU s | GMAC/s wall / CPU | "
        "vs numba (wall / CPU) | vs torch fake-quant (wall / CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, t in (
        ("numba (GEMM=int)", p_int),
        ("int8 backend (GEMM=auto)", p_auto),
        (f"PyTorch fake-quant, inference_mode, batch {tq['best_batch']}", tq),
        ("raw int_mm floor (sum of the layers' GEMMs)", floor),
    ):
        lines.append(
            f"| {label} | {n / t['wall_s']:.0f} | {t['wall_s']:.2f} | {t['cpu_s']:.2f} | "
            f"{_g(macs, t)} | {p_int['wall_s'] / t['wall_s']:.2f}x / "
            f"{p_int['cpu_s'] / t['cpu_s']:.2f}x | {tq['wall_s'] / t['wall_s']:.2f}x / "
            f"{tq['cpu_s'] / t['cpu_s']:.2f}x |"
        )
    by_bs = ", ".join(f"{b}: {n / t['wall_s']:.0f}" for b, t in tq["by_batch"].items())
    lines += [
        "",
        f"PyTorch images/s by batch size: {by_bs}.",
        "",
        f"Per layer, first {nl} images (GMAC/s wall / CPU; int_mm: raw `torch._int_mm` on "
        "the same GEMM shape, engine chunks | one call; % = int8 backend wall rate / the "
        "better raw int_mm):",
        "",
        "| layer | GEMM M x K x N | MMAC/img | auto runs | numba | int8 backend (auto) | "
        "int_mm engine chunks | int_mm one call | % of int_mm | vs numba |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["layers"]:
        g, m = row["gemm"], row["macs"]
        if g["kind"] == "conv":
            shape = f"{g['M']} x {g['K']} x {nl}*{g['N_per_image']}"
            shape = f"{g['groups']} x ({shape})" if g["groups"] > 1 else shape
        else:
            shape = f"{nl} x {g['K']} x {g['N']}"
        runs = row["auto_backend"]
        if runs == "numba":
            runs += f" ({row['auto_why']})"
            if "int8" in row:
                runs += f"; forced int8: {_g(m, row['int8'])}"
        raw = _raw_best(row)
        lines.append(
            f"| {row['layer']}: {row['what']} | {shape} | {g['macs_per_image'] / 1e6:.2f} | "
            f"{runs} | "
            f"{_g(m, row['int'])} | {_g(m, row['auto'])} | "
            f"{_g(m, row['int_mm']['engine_chunks'])} | {_g(m, row['int_mm']['one_call'])} | "
            f"{raw['wall_s'] / row['auto']['wall_s']:.0%} | "
            f"{row['int']['wall_s'] / row['auto']['wall_s']:.2f}x |"
        )
    sums = {k: sum(row[k]["wall_s"] for row in r["layers"]) for k in ("int", "auto")}
    raw_sum = sum(_raw_best(row)["wall_s"] for row in r["layers"])
    o = r["other_ops"]
    big = [
        row for row in r["layers"] if row["gemm"]["macs_per_image"] >= 0.05 * r["macs_per_image"]
    ]
    lines += [
        "",
        f"Sum over the Conv/Linear ops ({nl} images): numba {sums['int']:.3f} s, int8 backend "
        f"{sums['auto']:.3f} s, raw int_mm {raw_sum:.3f} s (backend at "
        f"{raw_sum / sums['auto']:.0%} of int_mm); the {o['ops']} other ops (requantize, pool, "
        f"add, flatten) {o['wall_s']:.3f} s wall / {o['cpu_s']:.3f} s CPU.",
        "",
        "Targets (issue 10): clean pass >= 3x PyTorch fake-quant: "
        + _verdict(tq["wall_s"] / p_auto["wall_s"], 3.0, "x")
        + "; layers with >= 5 % of the MACs at >= 70 % of raw int_mm: "
        + (
            "; ".join(
                f"{row['layer']} "
                + _verdict(_raw_best(row)["wall_s"] / row["auto"]["wall_s"], 0.7, "%")
                for row in big
            )
            or "none"
        )
        + ".",
    ]
    if r.get("corrupt"):
        lines += ["", *report_corrupt(r)]
    return "\n".join(lines)


def _verdict(got: float, want: float, unit: str) -> str:
    fmt = (lambda v: f"{v:.0%}") if unit == "%" else (lambda v: f"{v:.2f}x")
    if got >= want:
        return f"{fmt(got)} (met)"
    short = f"{(want - got) * 100:.0f} points" if unit == "%" else f"{want / got:.2f}x"
    return f"{fmt(got)} (missed by {short})"


def report_corrupt(r: dict) -> list[str]:
    n = r["images"]
    b = r["corrupt"][0]["session_build"]
    lines = [
        f"Corrupted passes (i.i.d. flips of the two's complement weight bits; session built "
        f"once: {b['wall_s']:.2f} s wall, {b['mib']:.0f} MiB; session time = median over "
        "chips; full passes identical under int and auto):",
        "",
        "| BER | flipped weights / chip | full numba img/s | full int8 backend img/s | "
        "session img/s | torch corrupted img/s | pytorchfi img/s | session / torch corrupted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in r["corrupt"]:
        fi = f"{n / e['pytorchfi_s']:.0f}" if e["pytorchfi_s"] else "n/a"
        lines.append(
            f"| {e['ber']:g} | {e['flips_per_chip']:.0f} | {n / e['full_int']['wall_s']:.0f} | "
            f"{n / e['full_auto']['wall_s']:.0f} | {n / e['session']['wall_s']:.0f} | "
            f"{n / e['torch_corrupt']['wall_s']:.0f} | {fi} | "
            f"{e['torch_corrupt']['wall_s'] / e['session']['wall_s']:.1f}x |"
        )
    notes = [e["pytorchfi_note"] for e in r["corrupt"][:1] if e["pytorchfi_note"]]
    if notes:
        lines += ["", f"pytorchfi: {notes[0]}"]
    return lines


def report_header(res: dict) -> str:
    cpu = res["cpu"]
    have = [f for f, ok in cpu["flags"].items() if ok]
    lack = [f for f, ok in cpu["flags"].items() if not ok]
    v = res["versions"]
    th = res["threading"]
    return "\n".join([
        f"CPU: {cpu['model_name']} ({cpu['cores']} cores); flags: {' '.join(have) or 'none'}"
        f" (absent: {' '.join(lack) or 'none'}); torch CPU capability "
        f"{cpu['torch_cpu_capability']}",
        f"threads: numba {res['threads']['numba']}, torch {res['threads']['torch']}; load "
        f"average at start {res['loadavg'][0]:.1f}; torch {v['torch']}, numba {v['numba']}, "
        f"numpy {v['numpy']}; int8 GEMM available: {res['int8_available']}; "
        f"best of {res['repeats']} runs; {res['started']}",
        f"thread pools: numba {th['numba_layer']}, torch {th['torch_backend']}; environment: "
        + (", ".join(f"{k}={v}" for k, v in th["env"].items() if v is not None) or "defaults")
        + f"; numba int8 dot-product peak {res['numba_dot_peak_mac_s'] / 1e9:.1f} GMAC/s",
    ])  # fmt: skip


def write_results(text: str, command: str) -> None:
    """Replace (or append) the generated section of results_engine.md."""
    section = (f"{BEGIN}\n## Backends side by side (generated by bench_engine.py)\n\n"
               f"Command: `{command}`\n\n{text}\n{END}")  # fmt: skip
    old = RESULTS.read_text() if RESULTS.exists() else "# Integer engine speed\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + section + rest.split(END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(new)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["vgg3", "resnet18"],
                    choices=["vgg3", "resnet18"])  # fmt: skip
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--images", type=int, default=10000, help="Fashion-MNIST test images (VGG3)")
    ap.add_argument("--resnet-images", type=int, default=1000, help="synthetic 32x32 RGB images")
    ap.add_argument(
        "--layer-images",
        type=int,
        default=1024,
        help="images of the per-layer measurements (default: one engine batch)",
    )
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--torch-batch", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument(
        "--ber",
        type=float,
        nargs="*",
        default=[1e-4, 1e-5],
        help="bit error rates of the corrupted VGG3 runs (none: skip them)",
    )
    ap.add_argument("--chips", type=int, default=3, help="corrupted samples per BER (session)")
    ap.add_argument(
        "--vgg3-ckpt",
        default="runs/vgg3-ce-{bits}b.ckpt",
        help="trained VGG3 checkpoint, {bits} = weight bits (relative to the repo)",
    )
    ap.add_argument("--json", metavar="PATH", help="write every number as JSON")
    ap.add_argument(
        "--write",
        action="store_true",
        help=f"replace (or append) the generated section of {RESULTS.name}",
    )
    args = ap.parse_args(argv)

    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    gemm_int8.set_threads(args.threads)
    res = {
        "command": " ".join([".venv/bin/python", "benchmarks/bench_engine.py", *sys.argv[1:]]),
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_info(),
        "threads": {"numba": numba.get_num_threads(), "torch": torch.get_num_threads()},
        "loadavg": list(os.getloadavg()),
        "versions": {"torch": torch.__version__, "numba": numba.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "int8_available": gemm_int8.available(),
        "repeats": args.repeats,
        "args": vars(args),
    }  # fmt: skip
    res["numba_dot_peak_mac_s"] = measure_peak(args.threads, args.repeats)
    res["threading"] = threading_info()
    print(report_header(res), flush=True)
    res["runs"] = []
    texts = []
    rng = np.random.default_rng(0)
    if "vgg3" in args.models:
        data = load_dataset("fashion-mnist", "test", limit=args.images)
        text = f"Fashion-MNIST test images ({data.source})"
        for bits in args.bits:
            model, meta, source = vgg3_model(bits, args.vgg3_ckpt, data)
            res["runs"].append(bench_model("vgg3", bits, model, meta, source, data.images,
                                           text, args, rng))  # fmt: skip
            texts.append(report_run(res["runs"][-1]))
            print("\n" + texts[-1], flush=True)
    if "resnet18" in args.models:
        data, images = resnet_images(args.resnet_images)
        for bits in args.bits:
            model, meta, source = resnet_model(bits, data)
            res["runs"].append(bench_model("resnet18", bits, model, meta, source, images,
                                           "synthetic 32x32 RGB images (synthetic-rgb)", args,
                                           rng))  # fmt: skip
            texts.append(report_run(res["runs"][-1]))
            print("\n" + texts[-1], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    if args.write:
        write_results(report_header(res) + "\n\n" + "\n\n".join(texts), res["command"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
