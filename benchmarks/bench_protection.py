"""Protection codes: what a SEC-DED sample costs, and MCEL vs ECC on the same chips.

  cost    one sample with and without a SEC-DED (72,64) code at BER 1e-4 and 1e-2, in
          this process, same run, alternating: the read (fault sampling + decoding of
          every faulty code word) and the whole sample (read + `Session.logits` over the
          test images + scoring), median over reads; the ratios are the result.
  table   `mcelsim simulate CE MCEL --profile P --sweep ... --protection C` for P in
          sram-14nm, dram-voltage-b and C in none, secded-72-64, msb-tmr (20 chips, the
          same chip seeds), then `mcelsim report --json`, and writes the comparison as
          markdown (lowest safe point, net energy saved, accuracy per point).

    .venv/bin/python benchmarks/bench_protection.py cost --reads 5 --images 500
    .venv/bin/python benchmarks/bench_protection.py table --chips 20 --limit 200 --workers 2

Checkpoints: runs/vgg3-ce-4b.ckpt and runs/vgg3-mcel-4b.ckpt (benchmarks/results_mcel.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_campaign import CKPTS, MCELSIM, ROOT, cpu_info  # noqa: E402

PROFILES = (("sram-14nm", "0.825:1.00:0.025"),
            ("dram-voltage-b", "1.025,1.05,1.075,1.1,1.15,1.2,1.25,1.3,1.35"))
CODES = ("none", "secded-72-64", "msb-tmr")


def cost(args) -> dict:
    import memory_models as mm
    from models.datasets import load_dataset
    from simulator.deployment import deploy
    from simulator.importer import import_checkpoint
    from simulator.sample import _ModelState, score

    net = import_checkpoint(CKPTS[0])
    ds = load_dataset("fashion-mnist", split="test", limit=args.images)
    deps = {c: deploy(net, protection=c, profile="sram-14nm") for c in ("none", "secded-72-64")}
    states = {c: _ModelState(d, ds.images, ds.labels) for c, d in deps.items()}
    for st in states.values():  # build the session and compile every kernel first
        st.logits(st.dep.read(mm.BitErrorModel(1e-2, 1e-2), np.random.default_rng(0)), "auto")
    rows = []
    for ber in (1e-4, 1e-2):
        src = mm.BitErrorModel(ber, ber)
        t_read = {c: [] for c in deps}
        t_sample = {c: [] for c in deps}
        changed = {c: [] for c in deps}
        for i in range(args.reads):
            for c, st in states.items():  # alternate: both see the same machine load
                t0 = time.perf_counter()
                r = st.dep.read(src, np.random.default_rng([1, i]))
                t1 = time.perf_counter()
                score(st.logits(r, "auto"), st.labels, float(net.logit_scale))
                t2 = time.perf_counter()
                t_read[c].append(t1 - t0)
                t_sample[c].append(t2 - t0)
                changed[c].append(r.counts["changed_weights"])
        med = {c: (statistics.median(t_read[c]), statistics.median(t_sample[c])) for c in deps}
        rows.append({
            "ber": ber, "images": args.images,
            "read_s": {c: med[c][0] for c in deps}, "sample_s": {c: med[c][1] for c in deps},
            "read_ratio": med["secded-72-64"][0] / med["none"][0],
            "sample_ratio": med["secded-72-64"][1] / med["none"][1],
            "changed_weights": {c: statistics.median(changed[c]) for c in deps},
        })
    return {"cpu": cpu_info(), "rows": rows}


def table(args) -> dict:
    db = Path(args.out)
    db.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for profile, sweep in PROFILES:
        for code in CODES:
            cmd = [MCELSIM, "simulate", *map(str, CKPTS), "--profile", profile, "--sweep", sweep,
                   "--protection", code, "--chips", str(args.chips), "--limit", str(args.limit),
                   "--workers", str(args.workers), "--seed", "0", "--out", str(db), "--quiet"]
            print("$", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    rep = subprocess.run([MCELSIM, "report", str(db), "--out", str(db.parent / "report"),
                          "--json"], check=True, capture_output=True, text=True, cwd=ROOT)
    content = json.loads(rep.stdout)
    return {"cpu": cpu_info(), "wall_s": wall, "comparisons": content["protection_comparisons"]}


def markdown(doc: dict) -> str:
    lines = []
    for cmp in doc["comparisons"]:
        unit = cmp["knob_unit"]
        knobs = sorted({a["knob"] for r in cmp["rows"] for a in r["accuracy"]}, reverse=True)
        lines += [f"#### {cmp['profile']} ({cmp['chips']} chips, {cmp['n_images']} images)", "",
                  "| code | model | cells / data cell | lowest safe point | net energy saved | "
                  + " | ".join(f"{k:g} {unit}" for k in knobs) + " |",
                  "|---|---|---|---|---|" + "---|" * len(knobs)]
        for r in cmp["rows"]:
            acc = {a["knob"]: a for a in r["accuracy"]}
            safe = f"{r['safe_knob']:g} {unit}" if r["found"] else "none"
            e = r["net_energy_saving_pct"]
            cells = [f"{acc[k]['mean_pct']:.2f} ± {acc[k]['half_width_pct'] or 0:.2f}"
                     for k in knobs]
            lines.append(f"| {r['protection']} | {r['model']} | {r['cell_overhead']:.4g} | "
                         f"{safe} | {'-' if e is None else f'{e:.1f} %'} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("cost", "table"))
    p.add_argument("--reads", type=int, default=5)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--chips", type=int, default=20)
    p.add_argument("--limit", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "runs" / "protection" / "results.db"))
    args = p.parse_args()
    doc = cost(args) if args.mode == "cost" else table(args)
    print(json.dumps(doc, indent=1))
    if args.mode == "table":
        print(markdown(doc))


if __name__ == "__main__":
    main()
