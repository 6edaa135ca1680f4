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
            (binarized only), CE with 1 % injected errors, the activation and logit-scale
            ablation pairs; 2 000 test images, 20 chips. About 3 h on 2 cores
            (`--jobs 2 --threads 1` for training, `--workers 2` for simulation).
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

import numpy as np

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


def groups(available: list[dict]) -> dict[int, list[str]]:
    """The i.i.d. sweep's campaigns: per weight width, its per-channel, 8-bit-activation,
    logit-scaled models (CE, MCEL at every margin, MHL, CE with injected errors)."""
    out: dict[int, list[str]] = {}
    for r in available:
        if not any(t in r["name"] for t in ("tensor", "act16", "nols", "small")):
            out.setdefault(r["bits"], []).append(r["name"])
    return dict(sorted(out.items()))


def campaigns(scale: str, runs_dir: Path, available: list[dict], chips: int,
              limit: int | None, workers: int = 1) -> list[tuple[str, list[str]]]:
    """(title, mcelsim simulate argv) of every campaign of the scale."""
    base = ["--chips", str(chips), "--seed", "0", "--workers", str(workers), "--quiet",
            "--out", str(runs_dir / "results.db")]
    if limit:
        base += ["--limit", str(limit)]
    path = {r["name"]: str(ckpt_path(runs_dir, r["name"])) for r in available}

    def pick(*names: str) -> list[str]:
        return [path[n] for n in names if n in path]

    pair4 = pick("vgg3-ce-4b", "vgg3-mcel32-4b")
    out: list[tuple[str, list[str]]] = []
    for bits, names in groups(available).items():
        # binarized weights have one storage encoding (a sign bit)
        for enc in ("offset-binary",) if bits == 1 else ("offset-binary", "twos-complement"):
            # the margin sweep (m != 32) in the headline encoding only
            ms = [n for n in names if enc == "offset-binary" or "mcel" not in n
                  or n.startswith("vgg3-mcel32-")]
            out.append((f"iid {bits}-bit {enc}",
                        [*pick(*ms), "--ber", BERS, "--encoding", enc, *base]))
    # ablation at BER 1 % on 4-bit CE / MCEL (m = 32) pairs; the encoding rows (offset
    # binary, two's complement) come from the main sweep
    abl = ["--ber", ABLATION_BER, *base]
    out.append(("ablation sign-magnitude", [*pair4, "--encoding", "sign-magnitude", *abl]))
    out.append(("ablation biases",
                [*pair4, "--encoding", "offset-binary", "--include-biases", *abl]))
    # biases faulty, but the last layer (weights and bias) in reliable memory: is the
    # collapse with faulty biases the classifier's bias?
    out.append(("ablation biases protect-last",
                [*pair4, "--encoding", "offset-binary", "--include-biases", "--protect", "last",
                 *abl]))
    for tag in ("tensor", "act16", "nols"):
        models = pick(f"vgg3-ce-4b-{tag}", f"vgg3-mcel32-4b-{tag}")
        if not models:
            continue
        encs = ("offset-binary", "twos-complement") if tag == "tensor" else ("offset-binary",)
        for enc in encs:
            out.append((f"ablation {tag} {enc}", [*models, "--encoding", enc, *abl]))
    # memory profiles: the 4-bit CE / MCEL (m = 32) pair
    for prof, sweep in PROFILES:
        out.append((f"profile {prof}", [*pair4, "--profile", prof, "--sweep", sweep, *base]))
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
    if args.scale == "full":
        text = full_report(res, names, meta, args.limit)
        (args.runs / "report_full.md").write_text(text)
        print(text)
        return text
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


# ---------------------------------------------------------------------------------------
# the full-scale report: the tables and figures of benchmarks/README.md


def _method(name: str) -> str:
    """Human name of a grid run from its checkpoint name."""
    if "-inj1-" in name:
        return "CE + 1 % injection"
    if "mhl" in name:
        return "MHL (b = 128)"
    if "mcel" in name:
        return f"MCEL (m = {name.split('mcel')[1].split('-')[0]})"
    return "CE"


def _pct(iv) -> str:
    if iv.n == 0:
        return "-"
    if iv.n < 2:
        return f"{100 * iv.mean:.2f}"
    return f"{100 * iv.mean:.2f} ± {100 * iv.half_width:.2f}"


def _diff(iv) -> str:
    return f"{100 * iv.mean:+.2f} [{100 * iv.low:+.2f}, {100 * iv.high:+.2f}]"


class _Grid:
    """The store's samples by (model name, campaign kind/settings, BER), for one image count."""

    def __init__(self, res, names: dict[str, str], n_images: int):
        self.res, self.names = res, names
        self.by_name = {n: h for h, n in names.items()}
        self.camps = [c for c in res.campaigns if c.n_images == n_images]

    def acc(self, name: str, ber: float, encoding: str = "offset-binary", biases=False,
            protect: str = "") -> np.ndarray | None:
        """Per-chip accuracies of model `name` at i.i.d. `ber`, or None."""
        h = self.by_name.get(name)
        for c in self.camps:
            if (c.kind != "ber" or c.encoding != encoding or c.include_biases != biases
                    or (c.protect or "") != protect or h not in c.samples):
                continue
            hit = np.flatnonzero(np.isclose(c.points.ber, ber))
            if hit.size:
                row = c.samples[h].accuracy[int(hit[0])]
                if np.isfinite(row).any():
                    return row
        return None

    def paired(self, a: str, b: str, ber: float, **kw):
        """Paired interval of acc(b) - acc(a) on their common chips, or None."""
        from analysis import paired_difference

        x, y = self.acc(b, ber, **kw), self.acc(a, ber, **kw)
        if x is None or y is None:
            return None
        ok = np.isfinite(x) & np.isfinite(y)
        return paired_difference(x[ok], y[ok]) if ok.sum() > 1 else None


def full_report(res, names: dict[str, str], meta: dict[str, dict], n_images: int) -> str:
    """The markdown of the full-scale results (tables) and its figures."""
    from analysis import t_interval

    g = _Grid(res, names, n_images)
    out = [f"Scale: {n_images} test images per sample, 95 % t-intervals over chips "
           "(± half-width); differences are paired on the same chips.", ""]
    grid = train_runs("full", False)
    main = [r for r in grid if not any(t in r["name"] for t in ("tensor", "act16", "nols"))]
    def order(r: dict) -> tuple:
        kind = {"ce": 0, "mcel": 1, "mhl": 2}[r["loss"]] + 3 * ("-inj1-" in r["name"])
        margin = int(r["name"].split("mcel")[1].split("-")[0]) if r["loss"] == "mcel" else 0
        return r["bits"], kind, margin

    main.sort(key=order)

    # models and accuracy under i.i.d. flips
    out += ["### Models and accuracy under i.i.d. symmetric flips (offset binary)", "",
            "| bits | method | clean acc. (float, 10k) % | "
            f"clean acc. (integer, {n_images}) % | mean logit margin | BER 0.5 % | BER 1 % | "
            "BER 2 % | BER 1 %, two's compl. | train time (min) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in main:
        h = g.by_name.get(r["name"])
        if h is None:
            continue
        info, m = res.models[h], meta.get(r["name"], {})
        cells = [_pct(t_interval(v)) if (v := g.acc(r["name"], b)) is not None else "-"
                 for b in (0.005, 0.01, 0.02)]
        tc = g.acc(r["name"], 0.01, encoding="twos-complement")
        cells.append("(binary)" if r["bits"] == 1 else _pct(t_interval(tc)) if tc is not None
                     else "-")
        fl = f"{100 * m['test_accuracy']:.2f}" if "test_accuracy" in m else "-"
        tt = f"{m['train_seconds'] / 60:.1f}" if "train_seconds" in m else "-"
        out.append(f"| {r['bits']} | {_method(r['name'])} | {fl} | "
                   f"{100 * info.clean_accuracy:.2f} | {info.clean_mean_margin:.2f} | "
                   + " | ".join(cells) + f" | {tt} |")
    out.append("")

    # each method against CE of the same width, paired
    out += ["### Against CE of the same width (percentage points, paired 95 % CI)", "",
            "| bits | method | BER 0.5 % | BER 1 % | BER 2 % | BER 1 %, two's compl. |",
            "|---|---|---|---|---|---|"]
    for r in main:
        ce = f"vgg3-ce-{r['bits']}b"
        if r["name"] == ce or ce not in g.by_name or r["name"] not in g.by_name:
            continue
        cells = []
        for b, enc in ((0.005, "offset-binary"), (0.01, "offset-binary"),
                       (0.02, "offset-binary"), (0.01, "twos-complement")):
            if r["bits"] == 1 and enc != "offset-binary":
                cells.append("(binary)")
                continue
            d = g.paired(ce, r["name"], b, encoding=enc)
            cells.append(_diff(d) if d else "-")
        out.append(f"| {r['bits']} | {_method(r['name'])} − CE | " + " | ".join(cells) + " |")
    out.append("")

    # setup ablation at BER 1 %, 4-bit CE / MCEL (m = 32)
    rows: list[dict] = []
    out += ["### Setup ablation: 4-bit VGG3, BER 1 %, CE vs MCEL (m = 32)", "",
            "| setting | CE acc. % | MCEL acc. % | MCEL − CE (pp, paired) | chips |",
            "|---|---|---|---|---|"]
    settings = [
        ("per channel, offset binary, biases reliable (headline)", "", {}),
        ("per channel, two's complement", "", {"encoding": "twos-complement"}),
        ("per channel, sign-magnitude", "", {"encoding": "sign-magnitude"}),
        ("per tensor, offset binary", "-tensor", {}),
        ("per tensor, two's complement", "-tensor", {"encoding": "twos-complement"}),
        ("biases (32-bit) in faulty memory too", "", {"biases": True}),
        ("biases faulty, last layer reliable", "", {"biases": True, "protect": "last"}),
        ("activations 16-bit (quantization nearly off)", "-act16", {}),
        ("no learnable logit scale", "-nols", {}),
    ]
    for text, tag, kw in settings:
        a, b = f"vgg3-ce-4b{tag}", f"vgg3-mcel32-4b{tag}"
        d = g.paired(a, b, 0.01, **kw)
        if d is None:
            continue
        ya, yb = g.acc(a, 0.01, **kw), g.acc(b, 0.01, **kw)
        rows.append({"setting": text, "diff": 100 * d.mean, "low": 100 * d.low,
                     "high": 100 * d.high, "n": d.n})
        out.append(f"| {text} | {_pct(t_interval(ya))} | {_pct(t_interval(yb))} | "
                   f"{_diff(d)} | {d.n} |")
    out.append("")
    FIGURES.mkdir(parents=True, exist_ok=True)
    if rows:
        ablation_figure(rows, FIGURES / "ablation_ber1.png")

    # memory profiles: lowest safe operating point
    from analysis import safe_points

    prof_rows = []
    for c in g.camps:
        if c.kind != "knob" or c.profile is None:
            continue
        for h, sp in safe_points(res, c, max_drop_pp=1.0).items():
            if names.get(h) not in ("vgg3-ce-4b", "vgg3-mcel32-4b"):
                continue  # the pair the profile campaigns are run for
            k = c.points.knob
            harsh = int(np.argmin(k) if c.profile.knob_harsher == "lower" else np.argmax(k))
            prof_rows.append((c.profile.name, c.profile.knob_name, c.profile.knob_unit,
                              names.get(h, h[:8]), sp, c.samples[h].accuracy[harsh],
                              k[harsh]))
    if prof_rows:
        out += ["### Memory profiles: lowest safe operating point (mean drop < 1 point at "
                "95 % confidence)", "",
                "| profile | model | lowest safe point | BER there | drop (pp, mean / upper) "
                "| energy saving | accuracy at the harshest point % |",
                "|---|---|---|---|---|---|---|"]
        for prof, knob, unit, name, sp, harsh_acc, harsh_k in prof_rows:
            where = f"{sp.knob:g} {unit}" if sp.knob is not None else "none below nominal"
            ber = f"{sp.ber:.2e}" if sp.ber is not None else "-"
            drop = (f"{sp.drop_mean_pp:.2f} / {sp.drop_upper_pp:.2f}"
                    if sp.drop_mean_pp is not None else "-")
            es = f"{100 * sp.energy_saving:.1f} %" if sp.energy_saving is not None else "-"
            harsh = f"{_pct(t_interval(harsh_acc))} ({harsh_k:g} {unit})"
            out.append(f"| {prof} ({knob}) | {name} | {where} | {ber} | {drop} | {es} | "
                       f"{harsh} |")
        out.append("")
    _full_figures(g, main)
    return "\n".join(out) + "\n"


def _full_figures(g: _Grid, main: list[dict]) -> None:
    """Accuracy vs BER per width, and the 4-bit margin sweep (into benchmarks/figures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis import t_interval

    bers = [float(b) for b in BERS.split(",")]
    widths = sorted({r["bits"] for r in main})
    fig, axes = plt.subplots(1, len(widths), figsize=(4 * len(widths), 3.6), sharey=True,
                             squeeze=False)
    styles = {"CE": ("#000000", "-"), "MCEL (m = 32)": ("#0072b2", "-"),
              "CE + 1 % injection": ("#d55e00", "--"), "MHL (b = 128)": ("#009e73", ":")}
    for ax, bits in zip(axes[0], widths, strict=True):
        for r in (r for r in main if r["bits"] == bits and _method(r["name"]) in styles):
            pts = [(100 * b, t_interval(v)) for b in bers
                   if (v := g.acc(r["name"], b)) is not None]
            if not pts:
                continue
            x = [p[0] for p in pts]
            mean = [100 * p[1].mean for p in pts]
            lo = [100 * (p[1].low if p[1].n > 1 else p[1].mean) for p in pts]
            hi = [100 * (p[1].high if p[1].n > 1 else p[1].mean) for p in pts]
            color, ls = styles[_method(r["name"])]
            ax.plot(x, mean, ls, color=color, marker="o", ms=3, label=_method(r["name"]))
            ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
        ax.set_title(f"{bits}-bit weights" + (" (binarized)" if bits == 1 else ""),
                     fontsize=10)
        ax.set_xlabel("bit error rate (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0][0].set_ylabel("test accuracy (%), 95 % CI over chips")
    fig.suptitle("VGG3 Fashion-MNIST, i.i.d. symmetric flips, offset binary", fontsize=10)
    fig.tight_layout()
    fig.savefig(FIGURES / "mcel_ber_sweep.png", dpi=90)
    plt.close(fig)

    # margin sweep at 4 bits
    ms = [(0, "vgg3-ce-4b")] + [(m, f"vgg3-mcel{m}-4b") for m in MARGINS]
    pts = [(m, n, g.res.models[g.by_name[n]]) for m, n in ms if n in g.by_name]
    if len(pts) < 3:
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for enc, color in (("offset-binary", "#0072b2"), ("twos-complement", "#d55e00")):
        xs, ys, es = [], [], []
        for m, n, _ in pts:
            v = g.acc(n, 0.01, encoding=enc)
            if v is None:
                continue
            iv = t_interval(v)
            xs.append(m)
            ys.append(100 * iv.mean)
            es.append(100 * iv.half_width if iv.n > 1 else 0)
        a1.errorbar(xs, ys, yerr=es, color=color, marker="o", capsize=3,
                    label=f"BER 1 %, {enc}")
    a1.plot([m for m, _, _ in pts], [100 * i.clean_accuracy for _, _, i in pts], "k--",
            marker="s", ms=3, label="clean (integer)")
    a1.set_xscale("symlog", linthresh=8)
    a1.set_xticks([0, 8, 16, 32, 64, 128], ["CE", "8", "16", "32", "64", "128"])
    a1.set_xlabel("MCEL margin m (0 = CE)")
    a1.set_ylabel("accuracy (%)")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    a2.plot([m for m, _, _ in pts], [i.clean_mean_margin for _, _, i in pts], marker="o")
    a2.set_xscale("symlog", linthresh=8)
    a2.set_xticks([0, 8, 16, 32, 64, 128], ["CE", "8", "16", "32", "64", "128"])
    a2.set_xlabel("MCEL margin m (0 = CE)")
    a2.set_ylabel("mean logit margin (clean, float units)")
    a2.grid(alpha=0.3)
    fig.suptitle("4-bit VGG3 Fashion-MNIST: the margin sweep", fontsize=10)
    fig.tight_layout()
    fig.savefig(FIGURES / "mcel_margin_sweep.png", dpi=90)
    plt.close(fig)


def stage_figures(args) -> None:
    """`mcelsim plot` of every campaign into RUNS/plots; into benchmarks/figures: the
    ablation figure (reduced scale; the full scale's come from its tables stage) and the
    accuracy-vs-knob plot of each memory-profile campaign at this scale's image count."""
    out = args.runs / "plots"
    argv = ["plot", str(args.runs / "results.db"), "--out", str(out)]
    for cid in args.campaign:
        run_cmd([*argv, "--campaign", cid], args.dry_run)
    if not args.campaign:
        run_cmd(argv, args.dry_run)
    if args.dry_run:
        return
    from analysis import load_results

    FIGURES.mkdir(parents=True, exist_ok=True)
    summary = args.runs / "summary_ber1.json"
    if args.scale == "reduced" and summary.exists():
        ablation_figure(json.loads(summary.read_text()), FIGURES / "ablation_ber1.png")
    for c in load_results(args.runs / "results.db").campaigns:
        png = out / f"{c.campaign_id}_accuracy_vs_knob.png"
        if c.kind == "knob" and c.profile and c.n_images == args.limit and png.exists():
            shutil.copyfile(png, FIGURES / f"{c.profile.name.replace('-', '')}_accuracy.png")
    log(f"figures in {out}; copies in {FIGURES}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=("full", "reduced"), default="reduced")
    p.add_argument("--stage", choices=("all", "train", "simulate", "tables", "figures"),
                   default="all")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "mcel")
    p.add_argument("--chips", type=int, default=None,
                   help="chips per point (default: 20 full, 10 reduced)")
    p.add_argument("--limit", type=int, default=None,
                   help="test images per sample (default: the first 2 000)")
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
    if args.limit is None:
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
