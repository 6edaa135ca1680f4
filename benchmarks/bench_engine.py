"""Integer engine speed: VGG3 over the Fashion-MNIST test set, side by side with PyTorch.

Measures, in one run and on the same cores (images/s, best of --repeats):
  ours clean          IntegerNetwork.forward (numba) over every test image
  torch clean         the PyTorch fake-quant model, torch.inference_mode, best batch size
  ours corrupted      with_weights(corrupted).forward — a full corrupted pass
  ours session        Session.logits(deltas) — recompute only what the flipped weights change
  torch corrupted     corrupt codes, dequantize, PyTorch forward (the usual way; the
                      `weight_fault` hook of models.quant supplies the corrupted weights)
  pytorchfi           pytorchfi.core.fault_injection.declare_weight_fi with the same faults
                      (values = dequantized corrupted codes), then the forward pass
and the machine's int8 multiply-accumulate peak (numba int8 dot products widened to int32,
L1-resident, every thread), with each dominant layer's share of it.

"ours" runs with the default accumulator path (auto, at present = int). The clean and full
corrupted passes and every layer are also timed side by side on each path: "int" (numba
integer kernels only), "auto" with BLAS switched on for the large Linear layers
(engine._BLAS_AUTO_LINEAR), and "blas" (exact float32 BLAS wherever exact, convolutions
too); wall and CPU time (process_time: every thread, numba's and BLAS's), and checked to
give identical logits. OpenBLAS uses its own thread pool (OPENBLAS_NUM_THREADS).

    .venv/bin/python benchmarks/bench_engine.py [--bits 4 8] [--ber 1e-4] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time

import numba
import numpy as np
import torch

from models import build_model
from models.datasets import load_dataset
from simulator import engine, kernels
from simulator.importer import import_torch
from simulator.ops import Conv, Linear


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def best_times(fn, repeats: int) -> tuple[float, float]:
    """(best wall time, CPU time of that run) over `repeats` runs."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - t, time.process_time() - c))
    return best


def both_paths(fn, repeats: int, modes=("int", "auto")) -> dict:
    """Time fn under each accumulator path (engine.GEMM; "auto" with BLAS on the large
    Linear layers); outputs must agree exactly."""
    res = {}
    outs = {}
    default = engine._BLAS_AUTO_LINEAR
    for mode in modes:
        engine.GEMM = mode
        engine._BLAS_AUTO_LINEAR = True
        outs[mode] = fn()
        res[f"{mode}_s"], res[f"{mode}_cpu_s"] = best_times(fn, repeats)
    engine.GEMM = None
    engine._BLAS_AUTO_LINEAR = default
    for mode in modes:
        assert np.array_equal(outs[modes[0]], outs[mode]), f"{mode} and {modes[0]} disagree"
    return res


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


def torch_forward(model, images: torch.Tensor, bs: int) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([model(images[s : s + bs]) for s in range(0, len(images), bs)]).numpy()


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


def measure_peak(threads: int, repeats: int) -> float:
    """int8 MAC/s of numba dot products on every thread (L1-resident vectors)."""
    rng = np.random.default_rng(0)
    k, reps = 4096, 20000
    a = rng.integers(-127, 128, (threads, k)).astype(np.int8)
    b = rng.integers(-127, 128, (threads, k)).astype(np.int8)
    out = np.zeros(threads, np.int64)
    kernels.dot_peak_parallel(a, b, 10, out)
    t = best_time(lambda: kernels.dot_peak_parallel(a, b, reps, out), repeats)
    return threads * k * reps / t


def layer_rates(net, x: np.ndarray, repeats: int) -> list[dict]:
    """MAC/s of each conv/linear op of the clean forward (inputs from a clean pass)."""
    values = net.run_values(x)
    rows = []
    for i, op in enumerate(net.ops):
        if not isinstance(op, Conv | Linear):
            continue
        xs = [values[s] for s in op.src]
        w = net.weights()[op.weight]
        y = values[i + 1]
        positions = int(np.prod(y.shape[2:])) if y.ndim == 4 else 1
        if isinstance(op, Conv) and op.pool is not None:
            positions *= op.pool.size
        macs = w.size * positions * x.shape[0]
        row = {"layer": op.module, "macs_per_image": macs // x.shape[0]}
        t = both_paths(lambda i=i, xs=xs: net.run_op(i, xs), repeats, ("int", "auto", "blas"))
        for mode in ("int", "auto", "blas"):
            row[f"mac_s_{mode}"] = macs / t[f"{mode}_s"]
            row[f"mac_cpu_s_{mode}"] = macs / t[f"{mode}_cpu_s"]
        row["mac_s"] = row["mac_s_auto"]
        rows.append(row)
    return rows


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--ber", type=float, nargs="+", default=[1e-4, 1e-5],
                    help="bit error rates of the corrupted runs")  # fmt: skip
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--chips", type=int, default=3, help="corrupted samples for the session")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", "test", limit=args.images)
    images = data.images
    timg = torch.from_numpy(images)
    n = len(images)
    peak = measure_peak(args.threads, args.repeats)
    results = {"images": n, "threads": args.threads, "peak_mac_s": peak,
               "source": data.source, "runs": []}  # fmt: skip
    for bits in args.bits:
        torch.manual_seed(0)
        model = build_model("vgg3", weight_bits=bits, mean=data.mean, std=data.std).eval()
        net = import_torch(model)
        x = net.quantize_input(images)
        net.forward(x[:64])  # compile / load the numba cache
        r = {"bits": bits}
        for mode in ("int", "blas", None):  # compile / load every path's kernels
            engine.GEMM = mode
            net.forward(x[:64])
        r["paths_clean"] = both_paths(
            lambda net=net, x=x: net.forward(x), args.repeats, ("int", "auto", "blas")
        )
        r["ours_clean_s"] = r["paths_clean"]["int_s"]  # the default path (auto = int)
        r["torch_bs"], r["torch_clean_s"] = min(
            ((bs, best_time(lambda bs=bs, m=model: torch_forward(m, timg, bs), args.repeats))
             for bs in (250, 1000, 2500)),
            key=lambda p: p[1],
        )  # fmt: skip
        t = time.perf_counter()
        session = net.session(x)
        r["session_build_s"] = time.perf_counter() - t
        r["session_mb"] = session.nbytes / 2**20
        r["ber"] = []
        for bi, ber in enumerate(args.ber):
            rng = np.random.default_rng(1234 + bits + bi)
            e = {"ber": ber}
            chips = [flip_bits(net, ber, rng) for _ in range(args.chips)]
            e["flips_per_chip"] = float(
                np.mean([sum(len(d[0]) for d in c.values()) for c in chips])
            )
            bad = net.with_weights(applied(net, chips[0]))
            e["paths_corrupt"] = both_paths(lambda bad=bad, x=x: bad.forward(x), args.repeats)
            e["ours_corrupt_s"] = e["paths_corrupt"]["int_s"]
            session.logits(chips[0])  # compile / load the delta kernels
            times = []
            for c in chips:
                t = time.perf_counter()
                got = session.logits(c)
                times.append(time.perf_counter() - t)
            assert np.array_equal(got, net.with_weights(applied(net, chips[-1])).forward(x))
            e["ours_session_s"] = float(np.median(times))
            layers = dequantized(net, model, chips[0])
            for layer, w in layers.items():
                layer.weight_fault = lambda lay, w_fq, w=w: w
            e["torch_corrupt_s"] = best_time(
                lambda m=model, bs=r["torch_bs"]: torch_forward(m, timg, bs), args.repeats
            )
            for layer in layers:
                layer.weight_fault = None
            e["pytorchfi_s"], e["pytorchfi_note"] = (
                run_pytorchfi(model, net, chips[0], timg, r["torch_bs"])
                if bi == 0
                else (None, "pytorchfi measured at the first BER only")
            )
            r["ber"].append(e)
        r["layers"] = layer_rates(net, x[:1000], args.repeats)
        results["runs"].append(r)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(report(results))


def report(res: dict) -> str:
    n = res["images"]
    lines = [
        f"images: {n} ({res['source']}), threads: {res['threads']}, int8 MAC peak (numba dot, "
        f"all threads): {res['peak_mac_s'] / 1e9:.1f} GMAC/s",
        "",
        "| bits | ours clean img/s | torch clean img/s (bs) | clean ratio |",
        "|---|---|---|---|",
    ]
    for r in res["runs"]:
        lines.append(
            f"| {r['bits']} | {n / r['ours_clean_s']:.0f} | {n / r['torch_clean_s']:.0f} "
            f"({r['torch_bs']}) | {r['torch_clean_s'] / r['ours_clean_s']:.2f}x |"
        )
    lines += [
        "",
        "Accumulator paths, same run (identical logits, checked): int = numba integer "
        "kernels only, auto = exact float32 BLAS on the large Linear layers (numba elsewhere), "
        "blas = BLAS wherever exact (also the convolutions); CPU s = process_time",
        "",
        "| bits | pass, path | int img/s | path img/s | wall speed-up | int CPU s | "
        "path CPU s | CPU speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        rows = [("clean", r["paths_clean"])]
        rows += [(f"corrupted BER {e['ber']:g}", e["paths_corrupt"]) for e in r["ber"]]
        for name, p in rows:
            for mode in ("auto", "blas"):
                if f"{mode}_s" not in p:
                    continue
                lines.append(
                    f"| {r['bits']} | {name}, {mode} | {n / p['int_s']:.0f} | "
                    f"{n / p[f'{mode}_s']:.0f} | {p['int_s'] / p[f'{mode}_s']:.2f}x | "
                    f"{p['int_cpu_s']:.1f} | {p[f'{mode}_cpu_s']:.1f} | "
                    f"{p['int_cpu_s'] / p[f'{mode}_cpu_s']:.2f}x |"
                )
    lines += [
        "",
        "| bits | BER | flipped weights | ours full corrupted img/s | ours session img/s | "
        "torch corrupted img/s | pytorchfi img/s | session / torch corrupted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        for e in r["ber"]:
            fi = f"{n / e['pytorchfi_s']:.0f}" if e["pytorchfi_s"] else "n/a"
            lines.append(
                f"| {r['bits']} | {e['ber']:g} | {e['flips_per_chip']:.0f} | "
                f"{n / e['ours_corrupt_s']:.0f} | {n / e['ours_session_s']:.0f} | "
                f"{n / e['torch_corrupt_s']:.0f} | {fi} | "
                f"{e['torch_corrupt_s'] / e['ours_session_s']:.1f}x |"
            )
    lines.append("")
    for r in res["runs"]:
        notes = "; ".join(e["pytorchfi_note"] for e in r["ber"][:1] if e["pytorchfi_note"])
        lines.append(
            f"{r['bits']}-bit: session build {r['session_build_s']:.2f} s, "
            f"{r['session_mb']:.0f} MiB" + (f"; {notes}" if notes else "")
        )
        for lay in r["layers"]:
            lines.append(
                f"  {lay['layer']}: {lay['macs_per_image'] / 1e6:.2f} MMAC/image, "
                f"auto {lay['mac_s'] / 1e9:.1f} GMAC/s = {lay['mac_s'] / res['peak_mac_s']:.0%} "
                f"of peak; int / blas {lay['mac_s_int'] / 1e9:.1f} / "
                f"{lay['mac_s_blas'] / 1e9:.1f} GMAC/s; per CPU second: int / blas "
                f"{lay['mac_cpu_s_int'] / 1e9:.1f} / {lay['mac_cpu_s_blas'] / 1e9:.1f} GMAC"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
