"""The standard campaign, run whole, and one sample against the PyTorch way.

The standard campaign: a 21-point i.i.d. BER sweep (0 to 2 %, symmetric, offset-binary
4-bit weights) x 20 chips x the 4-bit VGG3 CE / MCEL (m = 32) pair x all 10 000
Fashion-MNIST test images = 840 samples. Three measurements:

  campaign   `mcelsim simulate CE MCEL --ber 0:0.02:0.001 --chips 20 --workers W` as a user
             runs it (a fresh store; engine auto, MCELSIM_GEMM as in the environment):
             wall time and CPU time (all processes), samples stored, and per-sample time
             from the store.
  sample     in this process, on the same reads (chip c at BER b, the CE model): one sample
             our way (fault sampling + decoding + `Session.logits`) against the PyTorch way
             (the same read's codes dequantized into the QAT model, `weight_fault` hook,
             fake-quant forward in inference mode at its best batch size), wall and CPU.
  overhead   one sample's parts in a worker (one thread) at BER 1e-3 and 2e-2: fault
             sampling, decoding, the forward, scoring (the store is written by the parent).
  identical  the same small campaign with MCELSIM_GEMM=int (numba only) and auto into two
             stores; every stored sample must be identical.

    .venv/bin/python benchmarks/bench_campaign.py campaign --workers 2
    .venv/bin/python benchmarks/bench_campaign.py sample --reads 6
    .venv/bin/python benchmarks/bench_campaign.py overhead
    .venv/bin/python benchmarks/bench_campaign.py identical --images 2000 --chips 2

Checkpoints: runs/vgg3-ce-4b.ckpt and runs/vgg3-mcel-4b.ckpt (`mcelsim train ... --epochs 2`,
see results_training.md). `--json` prints the numbers; the CPU (lscpu) is in every output.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CKPTS = [ROOT / "runs" / "vgg3-ce-4b.ckpt", ROOT / "runs" / "vgg3-mcel-4b.ckpt"]
MCELSIM = str(Path(sys.executable).parent / "mcelsim")


def cpu_info() -> dict:
    """Model name, cores and the dot-product features of this CPU (from lscpu)."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    feats = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return {"model": fields.get("Model name", "?").strip(), "cpus": os.cpu_count(),
            "features": feats}  # fmt: skip


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_cli(args: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run `mcelsim` with args; (wall s, CPU s of it and its workers)."""
    c0, t0 = children_cpu(), time.perf_counter()
    subprocess.run([MCELSIM, *args], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, children_cpu() - c0


def campaign(a) -> dict:
    db = Path(a.out)
    if db.exists():
        db.unlink()  # a fresh run: resuming would time only what is missing
    db.parent.mkdir(parents=True, exist_ok=True)
    opts = [*map(str, CKPTS), "--ber", a.points, "--chips", str(a.chips), "--limit",
            str(a.images), "--workers", str(a.workers), "--out", str(db), "--quiet"]  # fmt: skip
    wall, cpu = run_cli(["simulate", *opts])
    con = sqlite3.connect(db)
    n, mean_s, busy = con.execute(
        "select count(*), avg(elapsed_s), sum(elapsed_s) from samples").fetchone()
    per_ber = con.execute("select point_index, avg(elapsed_s) from samples "
                          "group by point_index order by point_index").fetchall()  # fmt: skip
    con.close()
    return {"command": "mcelsim simulate " + " ".join(opts), "samples": n, "wall_s": wall,
            "cpu_s": cpu, "wall_s_per_sample": wall / n, "cpu_s_per_sample": cpu / n,
            "mean_sample_s_in_worker": mean_s, "sum_sample_s": busy,
            "sample_s_by_point": [s for _, s in per_ber],
            "gemm": os.environ.get("MCELSIM_GEMM", "auto")}  # fmt: skip


def _timed(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def sample(a) -> dict:
    import torch

    import memory_models as mm
    from models import load_checkpoint
    from models.datasets import load_dataset
    from simulator import deploy
    from simulator.importer import import_checkpoint

    torch.set_num_threads(os.cpu_count() or 1)
    net = import_checkpoint(CKPTS[0])
    model, _ = load_checkpoint(CKPTS[0])
    ds = load_dataset("fashion-mnist", split="test", limit=a.images)
    x = net.quantize_input(ds.images)
    timg = torch.from_numpy(ds.images)
    dep = deploy(net)
    session, build_s, _ = _timed(lambda: net.session(x))
    layers = [m for m in model.modules() if hasattr(m, "weight_codes")]

    def torch_way(r, bs):
        """Dequantize the read's codes into the QAT model, then its fake-quant forward."""
        for name, layer in zip(net.weight_names, layers, strict=True):
            q, s = layer.weight_codes()
            q = q.to(torch.float32)
            if name in r.deltas:
                idx, vals = r.deltas[name]
                q.view(-1)[torch.from_numpy(idx)] = torch.from_numpy(vals.astype(np.float32))
            w = (q * s.reshape((-1,) + (1,) * (q.dim() - 1))).contiguous()
            layer.weight_fault = lambda lay, w_fq, w=w: w
        with torch.inference_mode():
            out = torch.cat([model(timg[i : i + bs]) for i in range(0, len(timg), bs)])
        return out.numpy()

    reads = [(c, ber) for ber in (1e-3, 1e-2, 2e-2) for c in range(a.reads // 3 or 1)]

    def read(ber, c):
        src = mm.BitErrorModel(p01=ber, p10=ber)
        return dep.read(src, np.random.default_rng([0, c, int(ber * 1e6)]))

    def ours(ber, c):
        r = read(ber, c)
        return r, session.logits(r.deltas)

    # warm up both paths (kernels, oneDNN primitives) and pick torch's best batch size
    r0 = read(1e-2, 99)
    session.logits(r0.deltas)
    best_bs = min((256, 1024), key=lambda bs: _timed(lambda: torch_way(r0, bs))[1])
    rows = []
    for c, ber in reads:
        (r, got), w_ours, c_ours = _timed(lambda c=c, ber=ber: ours(ber, c))
        theirs, w_torch, c_torch = _timed(lambda c=c, ber=ber: torch_way(read(ber, c), best_bs))
        agree = float(np.mean(got.argmax(1) == theirs.argmax(1)))
        rows.append({"chip": c, "ber": ber, "changed_weights": r.counts["changed_weights"],
                     "ours_wall_s": w_ours, "ours_cpu_s": c_ours, "torch_wall_s": w_torch,
                     "torch_cpu_s": c_torch, "ratio_wall": w_torch / w_ours,
                     "argmax_agreement": agree})  # fmt: skip
    for layer in layers:
        layer.weight_fault = None
    return {"images": int(len(x)), "session_build_s": build_s, "torch_batch": best_bs,
            "threads": torch.get_num_threads(), "reads": rows,
            "median_ratio_wall": float(np.median([r["ratio_wall"] for r in rows]))}  # fmt: skip


def overhead(a) -> dict:
    """One sample's parts as a campaign worker runs them (one thread): fault sampling
    (`MemoryImage.read`), decoding (`DeployedNetwork.filter`), the forward
    (`Session.logits`), scoring; best of --repeats reads per BER."""
    import numba
    import torch

    import memory_models as mm
    from models.datasets import load_dataset
    from simulator import deploy
    from simulator.importer import import_checkpoint
    from simulator.sample import score

    numba.set_num_threads(1)
    torch.set_num_threads(1)
    net = import_checkpoint(CKPTS[0])
    ds = load_dataset("fashion-mnist", split="test", limit=a.images)
    x = net.quantize_input(ds.images)
    dep = deploy(net)
    session = net.session(x)
    out = {}
    for ber in (1e-3, 2e-2):
        src = mm.BitErrorModel(p01=ber, p10=ber)
        best = None
        for rep in range(a.repeats + 1):  # the first run warms up
            rng = np.random.default_rng([1, rep])
            t = [time.perf_counter()]
            res = dep.image.read(src, rng)
            t.append(time.perf_counter())
            r = dep.filter(res.changes, faults=res.counts.get("faults"))
            t.append(time.perf_counter())
            logits = session.logits(r.deltas)
            t.append(time.perf_counter())
            score(logits, ds.labels, net.logit_scale)
            t.append(time.perf_counter())
            parts = dict(zip(("read", "decode", "forward", "score"), np.diff(t), strict=True))
            if rep and (best is None or sum(parts.values()) < sum(best.values())):
                best = parts
        total = sum(best.values())
        out[str(ber)] = {**{k: float(v) for k, v in best.items()}, "total": total,
                         "not_forward_fraction": 1 - best["forward"] / total,
                         "changed_weights": r.counts["changed_weights"]}  # fmt: skip
    return out


def identical(a) -> dict:
    out = {}
    for mode in ("int", "auto"):
        db = ROOT / "runs" / "bench" / f"identical-{mode}.db"
        if db.exists():
            db.unlink()
        db.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MCELSIM_GEMM": mode}
        opts = [*map(str, CKPTS), "--ber", a.points, "--chips", str(a.chips), "--limit",
                str(a.images), "--workers", str(a.workers), "--out", str(db),
                "--quiet"]  # fmt: skip
        wall, cpu = run_cli(["simulate", *opts], env)
        con = sqlite3.connect(db)
        rows = con.execute("select model_hash, point_index, chip_index, n_correct, "
                           "mean_margin, n_faults, n_changed_weights from samples "
                           "order by 1, 2, 3").fetchall()  # fmt: skip
        margins = con.execute("select model_hash, point_index, chip_index, margins from "
                              "margins order by 1, 2, 3").fetchall()  # fmt: skip
        con.close()
        out[mode] = {"wall_s": wall, "cpu_s": cpu, "rows": rows, "margins": margins}
    same = out["int"]["rows"] == out["auto"]["rows"] and (
        out["int"]["margins"] == out["auto"]["margins"])
    return {"samples": len(out["auto"]["rows"]), "identical": same,
            "int_wall_s": out["int"]["wall_s"], "auto_wall_s": out["auto"]["wall_s"],
            "int_cpu_s": out["int"]["cpu_s"], "auto_cpu_s": out["auto"]["cpu_s"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("campaign", "sample", "overhead", "identical"))
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--chips", type=int, default=20)
    ap.add_argument("--points", default="0:0.02:0.001", help="BER sweep (21 points)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--reads", type=int, default=6, help="sample: reads compared")
    ap.add_argument("--repeats", type=int, default=3, help="overhead: reads per BER")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "standard.db"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if not all(p.is_file() for p in CKPTS):
        sys.stderr.write(f"bench_campaign: checkpoints missing: {CKPTS}; train them first "
                         "(benchmarks/results_training.md)\n")  # fmt: skip
        return 2
    fn = {"campaign": campaign, "sample": sample, "overhead": overhead,
          "identical": identical}[a.what]
    res = {"cpu": cpu_info(), "load_before": os.getloadavg(), a.what: fn(a),
           "load_after": os.getloadavg()}  # fmt: skip
    if a.json:
        sys.stdout.write(json.dumps(res, indent=1) + "\n")
        return 0
    w = sys.stdout.write
    w(f"CPU: {res['cpu']['model']}, {res['cpu']['cpus']} cores, "
      f"{' '.join(res['cpu']['features'])}\n")
    r = res[a.what]
    if a.what == "campaign":
        w(f"{r['samples']} samples: wall {r['wall_s']:.0f} s ({r['wall_s'] / 60:.1f} min), CPU "
          f"{r['cpu_s']:.0f} s; per sample wall {r['wall_s_per_sample']:.3f} s, CPU "
          f"{r['cpu_s_per_sample']:.3f} s, in-worker mean {r['mean_sample_s_in_worker']:.3f} "
          f"s\n  {r['command']}\n")  # fmt: skip
    elif a.what == "sample":
        w(f"{r['images']} images, {r['threads']} threads, torch batch {r['torch_batch']}, "
          f"session built in {r['session_build_s']:.1f} s\n")
        w("| chip | BER | changed weights | ours wall (s) | ours CPU (s) | PyTorch wall (s) | "
          "PyTorch CPU (s) | PyTorch / ours | argmax agreement |\n")
        w("|---|---|---|---|---|---|---|---|---|\n")
        for x in r["reads"]:
            w(f"| {x['chip']} | {x['ber']:g} | {x['changed_weights']} | {x['ours_wall_s']:.3f} | "
              f"{x['ours_cpu_s']:.3f} | {x['torch_wall_s']:.3f} | {x['torch_cpu_s']:.3f} | "
              f"{x['ratio_wall']:.1f}x | {x['argmax_agreement']:.4f} |\n")  # fmt: skip
        w(f"median PyTorch / ours (wall): {r['median_ratio_wall']:.1f}x\n")
    elif a.what == "overhead":
        w("| BER | changed weights | read (s) | decode (s) | forward (s) | score (s) | "
          "not forward |\n|---|---|---|---|---|---|---|\n")
        for ber, x in r.items():
            w(f"| {float(ber):g} | {x['changed_weights']} | {x['read']:.3f} | "
              f"{x['decode']:.3f} | {x['forward']:.3f} | {x['score']:.3f} | "
              f"{100 * x['not_forward_fraction']:.1f} % |\n")  # fmt: skip
    else:
        w(f"{r['samples']} samples, MCELSIM_GEMM=int vs auto identical: {r['identical']}; "
          f"wall int {r['int_wall_s']:.0f} s, auto {r['auto_wall_s']:.0f} s\n")
    w(f"load average before {res['load_before'][0]:.1f}, after {res['load_after'][0]:.1f}\n")
    return 0 if a.what != "identical" or r["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
