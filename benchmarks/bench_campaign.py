"""Wall time of a whole deployment campaign: incremental sessions vs a full forward per sample.

The campaign of the issue: a 21-point i.i.d. BER sweep (0 to 2 %, symmetric, offset-binary
4-bit weights) x CHIPS chips x 2 models (VGG3, 4-bit weights, Fashion-MNIST test set).
All paths run through `run_campaign` (serial, in this process, every sample stored in a
throw-away SQLite file) and must store identical samples; only `CampaignSpec.engine`
differs:
  session  `net.session(x)` once per model, then `session.logits(deltas)` per sample
           (recomputes only the output channels whose weights changed and, downstream, only
           the images whose activations changed);
  forward  `dep.corrupted_network(r).forward(x)` per sample (full integer forward);
  auto     session when a read changes at most AUTO_SESSION_FRACTION of the weights, else
           forward (the campaign default).
Deployment and fault sampling are the same in both and included in the time.

    .venv/bin/python benchmarks/bench_campaign.py                     # defaults below
    .venv/bin/python benchmarks/bench_campaign.py --images 10000 --chips 20   # full scale

Models: the given checkpoints (default runs/vgg3-ce-4b.ckpt runs/vgg3-mcel-4b.ckpt); where
they are missing, untrained VGG3 4-bit networks (seeds 0, 1) stand in and the output says so.
Prints a Markdown table (for benchmarks/results_campaign.md) and, with --json, the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = [ROOT / "runs" / "vgg3-ce-4b.ckpt", ROOT / "runs" / "vgg3-mcel-4b.ckpt"]


def _models(paths: list[Path]):
    from simulator.campaign import model_entry

    if all(p.is_file() for p in paths):
        from simulator.importer import import_checkpoint

        return [model_entry(import_checkpoint(p), path=p) for p in paths], "trained checkpoints"
    import torch

    from models.zoo import build_model
    from simulator.importer import import_torch

    out = []
    for seed in range(len(paths)):
        torch.manual_seed(seed)
        m = build_model("vgg3", weight_bits=4)
        m.eval()
        out.append(model_entry(import_torch(m), label=f"vgg3-untrained-{seed}"))
    return out, "untrained VGG3 (checkpoints missing)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path, default=DEFAULT_MODELS)
    ap.add_argument("--images", type=int, default=1000, help="test images (default 1000)")
    ap.add_argument("--chips", type=int, default=2, help="chips per point (default 2)")
    ap.add_argument("--points", default="0:0.02:0.001", help="BER sweep (21 points)")
    ap.add_argument("--forward-chips", type=int, default=None,
                    help="chips for the full-forward path (default = --chips)")
    ap.add_argument("--engines", default="session,forward,auto",
                    help="CampaignSpec.engine values to time (session and forward required)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import numba

    from models.datasets import load_dataset
    from simulator.campaign import CampaignSpec, TestSet, parse_sweep, run_campaign
    from simulator.store import ResultStore

    entries, kind = _models(args.models)
    ds = load_dataset("fashion-mnist", split="test", limit=args.images)
    test = TestSet("fashion-mnist", ds.images, ds.labels)
    points = parse_sweep(args.points, "--points")
    # warm-up: compile every kernel variant once (full and per-channel), outside the timing
    from memory_models import BitErrorModel
    from simulator.deployment import deploy

    net = entries[0].net
    x = net.quantize_input(test.images[:8])
    dep = deploy(net)
    r = dep.read(BitErrorModel(1e-3, 1e-3), np.random.default_rng(0))
    net.session(x).logits(r.deltas)
    dep.corrupted_network(r).forward(x)

    results = {}
    tables = {}
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for engine in engines:
        chips = args.forward_chips or args.chips if engine == "forward" else args.chips
        spec = CampaignSpec(kind="ber", points=points, chips=chips, engine=engine)
        with tempfile.TemporaryDirectory() as tmp:
            with ResultStore(os.path.join(tmp, "bench.db")) as store:
                t0, c0 = time.perf_counter(), time.process_time()
                res = run_campaign(spec, entries, test, store)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                tables[engine] = {
                    (r["model_hash"], r["point_index"], r["chip_index"]): (
                        r["n_correct"], r["mean_margin"], r["n_faults"])
                    for r in store.table("samples")
                }
        n = max(1, res.n_computed)
        results[engine] = {"wall_s": wall, "cpu_s": cpu, "samples": res.n_computed,
                           "chips": chips, "s_per_sample": wall / n, "cpu_s_per_sample": cpu / n}
    common = set.intersection(*(set(t) for t in tables.values()))
    identical = all(len({t[k] for t in tables.values()}) == 1 for k in common)
    ratio = results["forward"]["s_per_sample"] / results["session"]["s_per_sample"]
    cpu_ratio = results["forward"]["cpu_s_per_sample"] / results["session"]["cpu_s_per_sample"]
    full = len(points) * 20 * 2
    doc = {
        "models": kind, "labels": [e.label for e in entries], "images": int(len(test.labels)),
        "points": len(points), "results": results, "identical_on_common_samples": identical,
        "common_samples": len(common), "forward_over_session": ratio,
        "forward_over_session_cpu": cpu_ratio, "load_average": os.getloadavg(),
        "extrapolated_full_campaign_s": {
            e: results[e]["s_per_sample"] * full * 10000 / len(test.labels) for e in results},
        "cpus": os.cpu_count(), "numba_threads": numba.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        return 0
    w = sys.stdout.write
    w(f"VGG3 4-bit, {kind}; {doc['images']} test images; {len(points)}-point BER sweep; "
      f"{os.cpu_count()} CPUs, numba threads {doc['numba_threads']}\n\n")
    w("| path | chips | samples | wall (s) | wall s / sample | CPU s / sample | "
      "extrapolated wall, 21x20x2 at 10k images |\n")
    w("|---|---|---|---|---|---|---|\n")
    for e, r in results.items():
        w(f"| {e} | {r['chips']} | {r['samples']} | {r['wall_s']:.1f} | "
          f"{r['s_per_sample']:.3f} | {r['cpu_s_per_sample']:.3f} | "
          f"{doc['extrapolated_full_campaign_s'][e] / 3600:.2f} h |\n")
    load = ", ".join(f"{v:.1f}" for v in doc["load_average"])
    w(f"\nforward / session per sample: wall {ratio:.2f}x, CPU {cpu_ratio:.2f}x; samples "
      f"identical on the {len(common)} common keys: {identical}; load average {load}\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
