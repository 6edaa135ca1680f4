"""Reproduce the MCEL headline (VGG3, Fashion-MNIST) and the setup ablation with mcelsim.

Scripted, seeded and resumable. Every step is an ordinary `mcelsim` command (printed before
it runs, so each result can be rerun by hand); training outputs go to RUNS/ckpt/ and every
campaign to one store, RUNS/results.db (RUNS = runs/mcel, git-ignored).

Stages (run in this order; each may be run alone; rerunning skips finished work):
  train     train the checkpoints of the grid; a checkpoint that exists is skipped
            (`mcelsim train` itself resumes from <out>.partial)
  simulate  i.i.d. BER campaigns (offset binary and two's complement), the 1 % BER
            ablation (granularity, encoding, biases) and the SRAM / DRAM profile sweeps;
            the campaign store resumes every sample already stored
  tables    markdown tables from the store (analysis.load_results) -> RUNS/tables.md
  figures   `mcelsim plot` -> RUNS/plots/, a few PNGs copied to benchmarks/figures/

Scales:
  full      the grid of issue 6: weights at 1, 2, 4, 8 bits; CE, MCEL m in {8..128}, MHL
            (binarized only), CE with 1 % injected errors; 10 000 test images, 20 chips.
            Estimated wall time on 2 shared cores: see benchmarks/results_mcel.md (days).
  reduced   what fits a shared 2-core machine in about an hour: the 4-bit CE / MCEL (m=32)
            pair (per channel and per tensor scales), 2 000 test images, --chips chips.

    .venv/bin/python benchmarks/reproduce_mcel.py --scale reduced            # all stages
    .venv/bin/python benchmarks/reproduce_mcel.py --scale reduced --stage tables
    .venv/bin/python benchmarks/reproduce_mcel.py --scale full --dry-run     # list commands
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MCELSIM = [str(ROOT / ".venv" / "bin" / "mcelsim")]
BERS = "0,0.005,0.01,0.02"
ABLATION_BER = "0.01"
# (profile, sweep): the knob ranges where each profile's errors rise (as in `mcelsim demo`)
PROFILES = (("sram-14nm", "0.80:1.00:0.025"), ("dram-voltage-b", "1.025:1.15:0.025"))
MARGINS = (8, 16, 32, 64, 128)
FIGURES = Path(__file__).resolve().parent / "figures"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------
# the grid


def train_runs(scale: str, with_2bit: bool) -> list[dict]:
    """Training runs: name, mcelsim train options (without --out), existing file to reuse."""
    common = ["--dataset", "fashion-mnist", "--arch", "vgg3", "--seed", "0"]
    runs: list[dict] = []

    def add(name: str, bits: int, loss: str, extra: list[str], reuse: str | None = None,
            budget: list[str] | None = None) -> None:
        opts = [*common, "--weight-bits", str(bits), "--loss", loss, *extra,
                *(budget or ["--epochs", "2"])]
        runs.append({"name": name, "opts": opts, "reuse": reuse, "bits": bits,
                     "loss": loss})

    # The team's 4-bit checkpoints (2 epochs, 60k images): reused, never retrained here.
    add("vgg3-ce-4b", 4, "ce", [], "runs/vgg3-ce-4b.ckpt")
    add("vgg3-mcel32-4b", 4, "mcel", ["--margin", "32"], "runs/vgg3-mcel-4b.ckpt")
    add("vgg3-ce-4b-tensor", 4, "ce", ["--granularity", "tensor"],
        "runs/vgg3-ce-4b-tensor.ckpt")
    add("vgg3-mcel32-4b-tensor", 4, "mcel", ["--margin", "32", "--granularity", "tensor"],
        "runs/vgg3-mcel-4b-tensor.ckpt")
    if scale == "reduced":
        if with_2bit:
            small = ["--limit", "20000", "--epochs", "1"]
            add("vgg3-ce-2b-small", 2, "ce", [], budget=small)
            add("vgg3-mcel32-2b-small", 2, "mcel", ["--margin", "32"], budget=small)
        return runs
    # full: ordered by priority (a run cut short loses the least important models last)
    for bits in (1, 2, 8):  # the bit-width table: CE and MCEL (m = 32) at every width
        add(f"vgg3-ce-{bits}b", bits, "ce", [])
        add(f"vgg3-mcel32-{bits}b", bits, "mcel", ["--margin", "32"])
    add("vgg3-ce-inj1-4b", 4, "ce", ["--inject-ber", "0.01"])
    for m in MARGINS:  # the margin sweep at the headline width
        if m != 32:
            add(f"vgg3-mcel{m}-4b", 4, "mcel", ["--margin", str(m)])
    add("vgg3-mhl128-1b", 1, "mhl", ["--mhl-b", "128"])  # the binarized baseline
    # setup ablation that needs training: activation quantization nearly off (16-bit
    # activations, the widest `mcelsim train` accepts) and no learnable logit scale
    add("vgg3-ce-4b-act16", 4, "ce", ["--act-bits", "16"])
    add("vgg3-mcel32-4b-act16", 4, "mcel", ["--margin", "32", "--act-bits", "16"])
    add("vgg3-ce-4b-nols", 4, "ce", ["--no-logit-scale"])
    add("vgg3-mcel32-4b-nols", 4, "mcel", ["--margin", "32", "--no-logit-scale"])
    for bits in (1, 2, 8):  # injection training at the other widths
        add(f"vgg3-ce-inj1-{bits}b", bits, "ce", ["--inject-ber", "0.01"])
    return runs


def ckpt_path(runs_dir: Path, name: str) -> Path:
    return runs_dir / "ckpt" / f"{name}.ckpt"


def campaigns(scale: str, runs_dir: Path, available: list[dict], chips: int,
              limit: int | None, workers: int = 1) -> list[tuple[str, list[str]]]:
    """(title, mcelsim simulate argv) of every campaign of the scale."""
    base = ["--chips", str(chips), "--seed", "0", "--workers", str(workers), "--quiet",
            "--out", str(runs_dir / "results.db")]
    if limit:
        base += ["--limit", str(limit)]
    path = {r["name"]: str(ckpt_path(runs_dir, r["name"])) for r in available}
    channel = [p for n, p in path.items() if "tensor" not in n and "act16" not in n]
    tensor = [p for n, p in path.items() if "tensor" in n]
    pair4 = [path[n] for n in ("vgg3-ce-4b", "vgg3-mcel32-4b") if n in path]
    out: list[tuple[str, list[str]]] = []
    for enc in ("offset-binary", "twos-complement"):
        out.append((f"iid {enc}", [*channel, "--ber", BERS, "--encoding", enc, *base]))
    # ablation at BER 1 % on the 4-bit pair (encoding and granularity rows of the main
    # sweep are reused: offset binary / two's complement / per tensor)
    out.append(("ablation sign-magnitude",
                [*pair4, "--ber", ABLATION_BER, "--encoding", "sign-magnitude", *base]))
    out.append(("ablation biases",
                [*pair4, "--ber", ABLATION_BER, "--encoding", "offset-binary",
                 "--include-biases", *base]))
    # biases faulty, but the last layer (weights and bias) in reliable memory: is the
    # collapse with faulty biases the classifier's bias?
    out.append(("ablation biases protect-last",
                [*pair4, "--ber", ABLATION_BER, "--encoding", "offset-binary",
                 "--include-biases", "--protect", "last", *base]))
    if tensor:
        for enc in ("offset-binary", "twos-complement"):
            out.append((f"ablation per-tensor {enc}",
                        [*tensor, "--ber", ABLATION_BER, "--encoding", enc, *base]))
    act = [p for n, p in path.items() if "act16" in n]
    if act:
        out.append(("ablation act16", [*act, "--ber", ABLATION_BER, *base]))
    # profiles: per bit width CE, MCEL m=32, CE with injected errors and MHL (binarized)
    key = [p for n, p in path.items() if "tensor" not in n and "act16" not in n
           and ("-ce-" in n or "mcel32-" in n or "mhl" in n)]
    for prof, sweep in PROFILES:
        models = key if scale == "full" else pair4
        out.append((f"profile {prof}", [*models, "--profile", prof, "--sweep", sweep, *base]))
    return out


# ---------------------------------------------------------------------------------------
# stages


def run_cmd(argv: list[str], dry: bool, stdout: Path | None = None) -> int:
    log("$ " + shlex.join(["mcelsim", *argv]))
    if dry:
        return 0
    if stdout is None:
        return subprocess.call([*MCELSIM, *argv], cwd=ROOT)
    with open(stdout, "w") as fh:
        return subprocess.call([*MCELSIM, *argv], cwd=ROOT, stdout=fh)


def stage_train(args, runs: list[dict]) -> list[dict]:
    """Train (or link) every run; returns the runs whose checkpoint exists."""
    (args.runs / "ckpt").mkdir(parents=True, exist_ok=True)
    ready: list[dict] = []
    todo: list[dict] = []
    for r in runs:
        ck = ckpt_path(args.runs, r["name"])
        if r["reuse"]:
            src = ROOT / r["reuse"]
            if args.dry_run:
                if src.exists() or ck.exists():
                    ready.append(r)
                continue
            if src.exists() and not ck.exists():
                ck.symlink_to(src)
            meta = src.with_suffix(".json")
            dest = ck.with_suffix(".json")
            if ck.exists() and meta.exists() and meta.stat().st_size and (
                    not dest.exists() or not dest.stat().st_size):
                shutil.copyfile(meta, ck.with_suffix(".json"))
            if ck.exists():
                ready.append(r)
            else:
                log(f"skip {r['name']}: {r['reuse']} does not exist (yet)")
            continue
        if ck.exists():
            ready.append(r)
            continue
        if args.stage in ("train", "all"):
            todo.append(r)

    def train_one(r: dict) -> dict | None:
        ck = ckpt_path(args.runs, r["name"])
        argv = ["train", *r["opts"], "--threads", str(args.threads), "--no-progress",
                "--json", "--out", str(ck)]
        rc = run_cmd(argv, args.dry_run, None if args.dry_run else ck.with_suffix(".json"))
        if rc != 0:
            log(f"train {r['name']} failed with status {rc}")
        return r if rc == 0 and (args.dry_run or ck.exists()) else None

    # --jobs runs in parallel (each with --threads torch threads), in the grid's order
    with ThreadPoolExecutor(max_workers=1 if args.dry_run else args.jobs) as pool:
        done = list(pool.map(train_one, todo))
    ready += [r for r in done if r is not None]
    order = {r["name"]: i for i, r in enumerate(runs)}
    return sorted(ready, key=lambda r: order[r["name"]])


def stage_simulate(args, ready: list[dict]) -> None:
    for title, argv in campaigns(args.scale, args.runs, ready, args.chips, args.limit,
                                 args.workers):
        if args.only and not any(o in title for o in args.only):
            continue
        log(f"campaign: {title}")
        rc = run_cmd(["simulate", *argv], args.dry_run)
        if rc != 0:
            log(f"campaign {title} failed with status {rc}")


def _fmt_ci(values, confidence: float = 0.95) -> str:
    from analysis import t_interval

    v = [x for x in values if not math.isnan(x)]
    if not v:
        return "-"
    iv = t_interval(v, confidence)
    half = (iv.high - iv.low) / 2 if len(v) > 1 else float("nan")
    half_txt = f" ± {100 * half:.2f}" if not math.isnan(half) else ""
    return f"{100 * iv.mean:.2f}{half_txt} (n={len(v)})"


def _train_meta(runs_dir: Path) -> dict[str, dict]:
    """Training json (from `mcelsim train --json`) by checkpoint sha256 prefix-free name."""
    out = {}
    for js in sorted((runs_dir / "ckpt").glob("*.json")):
        try:
            out[js.stem] = json.loads(js.read_text())
        except ValueError:
            continue
    return out


def stage_tables(args) -> str:
    """Markdown tables of every campaign in the store (also written to RUNS/tables.md)."""
    import hashlib

    import numpy as np

    from analysis import load_results, paired_difference

    db = args.runs / "results.db"
    res = load_results(db)
    digests = {hashlib.sha256(ck.read_bytes()).hexdigest(): ck.stem
               for ck in sorted((args.runs / "ckpt").glob("*.ckpt"))}
    # the store keys models by a prefix of the checkpoint's sha256
    names = {h: n for h in res.models for d, n in digests.items() if d.startswith(h)}
    meta = _train_meta(args.runs)
    lines = ["## Models", "",
             "| model | bits | loss | scale | clean acc. (10k, %) | mean logit margin "
             "(10k) | clean acc. (store images, %) | clean MLM (store) | train time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for h, info in res.models.items():
        name = names.get(h, info.label)
        m = meta.get(name, {})
        cfg = m.get("config", {})
        loss = info.loss + (f" m={info.margin:g}" if info.loss in ("mcel", "mhl")
                            and info.margin else "")
        lines.append(
            f"| {name} | {info.weight_bits} | {loss} | {cfg.get('granularity', '?')} | "
            f"{100 * m['test_accuracy']:.2f} | {m['mean_logit_margin']:.2f} | "
            if m else f"| {name} | {info.weight_bits} | {loss} | ? | - | - | ")
        lines[-1] += (f"{100 * info.clean_accuracy:.2f} | {info.clean_mean_margin:.2f} | "
                      f"{m.get('train_seconds', float('nan')):.0f} |")
    lines.append("")
    for camp in res.campaigns:
        if camp.kind == "sensitivity":
            continue
        prof = camp.profile
        what = ("i.i.d. BER" if camp.kind == "ber" else
                f"profile {prof.name if prof else '?'} ({prof.knob_name if prof else ''})")
        lines += [f"## Campaign {camp.campaign_id}: {what}, encoding {camp.encoding}, "
                  f"biases {'in faulty memory' if camp.include_biases else 'reliable'}, "
                  f"{camp.n_images} images, {camp.n_chips} chips", ""]
        knob = camp.points.ber if camp.kind == "ber" else camp.points.knob
        head = "BER (%)" if camp.kind == "ber" else f"{prof.knob_name if prof else 'knob'}"
        hs = list(camp.samples)
        lines.append(f"| {head} | " + " | ".join(
            f"{names.get(h, res.models[h].label)} acc. % (95 % CI) | MLM"
            for h in hs) + " |")
        lines.append("|---|" + "---|---|" * len(hs))
        for i in range(len(camp.points)):
            k = 100 * knob[i] if camp.kind == "ber" else knob[i]
            row = [f"{k:g}"]
            for h in hs:
                s = camp.samples[h]
                mlm = np.nanmean(s.mean_margin[i]) if np.isfinite(s.mean_margin[i]).any() \
                    else float("nan")
                row += [_fmt_ci(list(s.accuracy[i])), f"{mlm:.2f}"]
            lines.append("| " + " | ".join(row) + " |")
        # paired MCEL - CE difference on common chips
        ce = [h for h in hs if res.models[h].loss == "ce"]
        mc = [h for h in hs if res.models[h].loss == "mcel"]
        for a in ce:
            for b in mc:
                if res.models[a].weight_bits != res.models[b].weight_bits:
                    continue
                na, nb = names.get(a, a[:8]), names.get(b, b[:8])
                if ("tensor" in na) != ("tensor" in nb):
                    continue
                lines += ["", f"Paired difference {nb} − {na} (percentage points, 95 % CI, "
                          "same chips):", ""]
                for i in range(len(camp.points)):
                    x, y = camp.samples[b].accuracy[i], camp.samples[a].accuracy[i]
                    ok = np.isfinite(x) & np.isfinite(y)
                    if ok.sum() < 2:
                        continue
                    d = paired_difference(x[ok], y[ok])
                    k = 100 * knob[i] if camp.kind == "ber" else knob[i]
                    lines.append(f"- {head} {k:g}: {100 * d.mean:+.2f} "
                                 f"[{100 * d.low:+.2f}, {100 * d.high:+.2f}] "
                                 f"(n={int(ok.sum())})")
        lines.append("")
    rows: list[dict] = []
    lines += _summary_at(res, names, 0.01, rows)
    head = _headline(res, names, ("vgg3-ce-4b", "vgg3-mcel32-4b"))
    (args.runs / "headline.md").write_text("\n".join(head) + "\n")
    lines += ["## Headline pair per BER and encoding", "", *head]
    (args.runs / "summary_ber1.json").write_text(json.dumps(rows, indent=1))
    text = "\n".join(lines) + "\n"
    (args.runs / "tables.md").write_text(text)
    print(text)
    return text


def _headline(res, names: dict[str, str], pair: tuple[str, str]) -> list[str]:
    """CE vs MCEL of `pair` (checkpoint names) per BER, one column group per encoding, over
    the i.i.d. sweeps with reliable biases and no protection."""
    import numpy as np

    from analysis import paired_difference

    by_name = {n: h for h, n in names.items()}
    if not all(n in by_name for n in pair):
        return []
    a, b = (by_name[n] for n in pair)
    camps = [c for c in res.campaigns if c.kind == "ber" and not c.include_biases
             and not c.protect and a in c.samples and b in c.samples
             and len(c.points) > 1]
    if not camps:
        return []
    head = "| BER (%) | " + " | ".join(
        f"CE {c.encoding} | MCEL {c.encoding} | MCEL − CE {c.encoding} (pp)" for c in camps)
    lines = [f"{head} |", "|---|" + "---|---|---|" * len(camps)]
    for i in range(len(camps[0].points)):
        row = [f"{100 * camps[0].points.ber[i]:g}"]
        for c in camps:
            x, y = c.samples[b].accuracy[i], c.samples[a].accuracy[i]
            ok = np.isfinite(x) & np.isfinite(y)
            d = paired_difference(x[ok], y[ok]) if ok.sum() > 1 else None
            row += [_fmt_ci(list(y[ok])), _fmt_ci(list(x[ok])),
                    f"{100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]"
                    if d else "-"]
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def _summary_at(res, names: dict[str, str], ber: float,
                rows: list[dict] | None = None) -> list[str]:
    """One row per (i.i.d. campaign, CE / MCEL pair) at `ber`: the ablation table (markdown
    lines); the paired differences are also appended to `rows` when given."""
    rows = [] if rows is None else rows
    import numpy as np

    from analysis import paired_difference

    lines = [f"## Summary at BER {100 * ber:g} % (every i.i.d. campaign, CE / MCEL pairs)", "",
             "| setting | CE | CE acc. % | MCEL | MCEL acc. % | MCEL − CE (pp, paired 95 % CI)"
             " | drop from clean CE / MCEL (pp) | MLM CE / MCEL | chips |",
             "|---|---|---|---|---|---|---|---|---|"]
    for camp in res.campaigns:
        if camp.kind != "ber":
            continue
        hit = np.flatnonzero(np.isclose(camp.points.ber, ber))
        if not hit.size:
            continue
        i = int(hit[0])
        hs = list(camp.samples)
        for a in (h for h in hs if res.models[h].loss == "ce"):
            for b in (h for h in hs if res.models[h].loss == "mcel"):
                na, nb = names.get(a, a[:8]), names.get(b, b[:8])
                if (res.models[a].weight_bits != res.models[b].weight_bits
                        or ("tensor" in na) != ("tensor" in nb)):
                    continue
                x, y = camp.samples[b].accuracy[i], camp.samples[a].accuracy[i]
                ok = np.isfinite(x) & np.isfinite(y)
                if ok.sum() < 2:
                    continue
                d = paired_difference(x[ok], y[ok])
                gran = "per tensor" if "tensor" in na else "per channel"
                setting = (f"{res.models[a].weight_bits}-bit, {gran}, {camp.encoding}, biases "
                           f"{'faulty' if camp.include_biases else 'reliable'}"
                           + (f", protect {camp.protect}" if camp.protect else ""))
                mlm = (np.nanmean(camp.samples[a].mean_margin[i]),
                       np.nanmean(camp.samples[b].mean_margin[i]))
                rows.append({"setting": setting, "diff": 100 * d.mean, "low": 100 * d.low,
                             "high": 100 * d.high, "n": int(ok.sum())})
                lines.append(
                    f"| {setting} | {na} | {_fmt_ci(list(y[ok]))} | {nb} | "
                    f"{_fmt_ci(list(x[ok]))} | {100 * d.mean:+.2f} [{100 * d.low:+.2f}, "
                    f"{100 * d.high:+.2f}] | "
                    f"{100 * (res.models[a].clean_accuracy - np.mean(y[ok])):.2f} / "
                    f"{100 * (res.models[b].clean_accuracy - np.mean(x[ok])):.2f} | "
                    f"{mlm[0]:.2f} / {mlm[1]:.2f} | {int(ok.sum())} |")
    return [*lines, ""]


def ablation_figure(rows: list[dict], path: Path) -> None:
    """Horizontal bars: MCEL - CE accuracy at BER 1 % per setting, paired 95 % CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    y = list(range(len(rows)))[::-1]
    d = [r["diff"] for r in rows]
    err = [[r["diff"] - r["low"] for r in rows], [r["high"] - r["diff"] for r in rows]]
    ax.barh(y, d, xerr=err, color=["#0072b2" if v >= 0 else "#d55e00" for v in d],
            capsize=3)
    ax.set_yticks(y, [f"{r['setting']} (n={r['n']})" for r in rows], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.axvline(15, color="grey", ls="--", lw=0.8)
    ax.text(15, y[0] + 0.5, "paper: +15", fontsize=8, ha="center", color="grey")
    ax.set_xlabel("MCEL (m=32) − CE at BER 1 % (points, paired 95 % CI)")
    ax.set_title("VGG3 Fashion-MNIST: when does MCEL matter?", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def stage_figures(args) -> None:
    """`mcelsim plot` of every campaign into RUNS/plots; the ablation figure into figures/."""
    out = args.runs / "plots"
    argv = ["plot", str(args.runs / "results.db"), "--out", str(out)]
    for cid in args.campaign:
        run_cmd([*argv, "--campaign", cid], args.dry_run)
    if not args.campaign:
        run_cmd(argv, args.dry_run)
    if args.dry_run:
        return
    FIGURES.mkdir(parents=True, exist_ok=True)
    summary = args.runs / "summary_ber1.json"
    if summary.exists():
        ablation_figure(json.loads(summary.read_text()), FIGURES / "ablation_ber1.png")
    log(f"figures in {out}; ablation figure in {FIGURES}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=("full", "reduced"), default="reduced")
    p.add_argument("--stage", choices=("all", "train", "simulate", "tables", "figures"),
                   default="all")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "mcel")
    p.add_argument("--chips", type=int, default=None,
                   help="chips per point (default: 20 full, 10 reduced)")
    p.add_argument("--limit", type=int, default=None,
                   help="test images (default: all 10 000 full, 2 000 reduced)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training run")
    p.add_argument("--jobs", type=int, default=1,
                   help="training runs at once (2 on 2 cores, with --threads 1)")
    p.add_argument("--workers", type=int, default=1,
                   help="simulate worker processes (results do not depend on it)")
    p.add_argument("--with-2bit", action="store_true",
                   help="reduced scale: also train a small 2-bit CE / MCEL pair")
    p.add_argument("--only", action="append", default=[],
                   help="simulate only campaigns whose title contains this text")
    p.add_argument("--campaign", action="append", default=[],
                   help="figures: plot only these campaign ids (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    if args.chips is None:
        args.chips = 20 if args.scale == "full" else 10
    if args.limit is None and args.scale == "reduced":
        args.limit = 2000
    args.runs = args.runs.resolve()
    runs = train_runs(args.scale, args.with_2bit)
    if args.stage in ("all", "train", "simulate"):
        ready = stage_train(args, runs)
        if args.stage in ("all", "simulate"):
            stage_simulate(args, ready)
    if args.dry_run and args.stage in ("all", "tables"):
        log("tables: from the store, nothing to print in a dry run")
    elif args.stage in ("all", "tables"):
        stage_tables(args)
    if args.stage in ("all", "figures"):
        stage_figures(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
