"""`mcelsim demo`: the whole job end to end on real Fashion-MNIST, sized for 2 CPU cores.

1. train a 4-bit VGG3 with cross-entropy and one with MCEL (m = 32), same seed and data;
2. simulate both on an SRAM undervolting profile (`sram-14nm`) and an approximate-DRAM
   profile at reduced supply voltage (`dram-voltage-b`), on the same chips;
3. on the first profile, the same chips again with the weights under a SEC-DED (72,64)
   code (check cells in the same faulty memory; other codes, e.g. `msb-tmr`, are one more
   `mcelsim simulate ... --protection CODE` into the same store);
4. write the HTML report and print where it is and the headline: the lowest safe operating
   point of CE vs MCEL and the energy it saves (net of a code's extra cells).

Every step is one of the ordinary subcommands (`train`, `simulate`, `report`) with the
options printed as it runs, so a user can rerun or change any of them. Every step resumes:
rerunning the demo reuses finished checkpoints and stored samples.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from pathlib import Path

from simulator.options import float_in, int_in

# (profile, sweep) pairs of the demo: from nominal down to where each profile's errors rise.
DEMO_PROFILES = (
    ("sram-14nm", "0.80:1.00:0.025"),
    ("dram-voltage-b", "1.025,1.05,1.075,1.1,1.15,1.2,1.25,1.3,1.35"),
)
MODELS = (("ce", ()), ("mcel", ("--margin", "32")))
# codes compared on the first profile (`--protection`), beside no code; each one repeats the
# profile's sweep (about 2 minutes on 2 cores), so the demo keeps one
DEMO_PROTECTION = ("secded-72-64",)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train CE and MCEL networks, simulate them on SRAM and DRAM, write the report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--epochs", type=int_in(1, 100_000), default=2,
                   help="training epochs (default 2)")
    p.add_argument(
        "--train-limit",
        type=int_in(0),
        default=20000,
        help="first N training images (default 20000; 0 = all 60000)",
    )
    p.add_argument("--width", type=float_in(0, 64, low_open=True), default=0.5,
                   help="VGG3 channel width (default 0.5)")
    p.add_argument("--weight-bits", type=int_in(1, 8), default=4, help="weight bits (default 4)")
    p.add_argument(
        "--test-limit", type=int_in(1), default=2000, help="test images per sample (default 2000)"
    )
    p.add_argument("--chips", type=int_in(1), default=8,
                   help="chips per operating point (default 8)")
    p.add_argument("--seed", type=int_in(0, 2**63 - 1), default=0,
                   help="seed of training and chips (default 0)")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (IDX files)")
    p.add_argument("--workers", type=int_in(1, 1024), default=None,
                   help="simulation worker processes")
    p.add_argument("--json", action="store_true", help="print the headline as JSON")
    p.set_defaults(run=run)


def _step(argv: list[str], quiet: bool) -> None:
    """Run one subcommand in this process; a failure stops the demo with its exit code."""
    from simulator.cli import main

    if quiet:  # --json: stdout carries only the demo's JSON
        with contextlib.redirect_stdout(sys.stderr):
            code = main(argv)
    else:
        sys.stderr.write(f"\n$ mcelsim {shlex.join(argv)}\n")
        code = main(argv)
    if code:
        raise SystemExit(code)


def _train_argv(args: argparse.Namespace, loss: str, extra: tuple[str, ...], out: Path):
    argv = ["train", "--dataset", "fashion-mnist", "--arch", "vgg3"]
    argv += ["--weight-bits", str(args.weight_bits), "--width", str(args.width)]
    argv += ["--loss", loss, *extra, "--epochs", str(args.epochs), "--seed", str(args.seed)]
    if args.train_limit:
        argv += ["--limit", str(args.train_limit)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    return argv + ["--out", str(out)]


def headline(summary: dict) -> list[dict]:
    """Lowest safe point and energy saved per (profile, model), from `analysis.summarize`."""
    rows = []
    for campaign in summary["campaigns"]:
        if campaign["settings"].get("protection", "none") != "none":
            continue  # codes: `protection_headline`
        profile = campaign["profile"] or {}
        clean = {m["label"]: m.get("clean_accuracy_pct") for m in campaign["models"]}
        for safe in campaign["safe_points"]:
            rows.append(
                {
                    "profile": profile.get("name"),
                    "knob": profile.get("knob_name"),
                    "unit": profile.get("knob_unit"),
                    "model": safe["model"],
                    "clean_accuracy_pct": clean.get(safe["model"]),
                    "safe_knob": safe["knob"] if safe["found"] else None,
                    "energy_saving_pct": safe["energy_saving_pct"] if safe["found"] else None,
                }
            )
    return rows


def run(args: argparse.Namespace) -> int:
    from analysis import load_results, summarize
    from memory_models.usererror import check_output_folder

    out = check_output_folder(args.out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    quiet = args.json
    ckpts = []
    for loss, extra in MODELS:
        ckpt = out / f"vgg3-{loss}-{args.weight_bits}b.ckpt"
        if ckpt.exists():  # a finished checkpoint from an earlier run of the demo
            if not quiet:
                sys.stderr.write(f"\nreusing {ckpt}\n")
        else:
            _step(_train_argv(args, loss, extra, ckpt), quiet)
        ckpts.append(str(ckpt))

    db = out / "results.db"
    runs = [(p, s, None) for p, s in DEMO_PROFILES]
    runs += [(*DEMO_PROFILES[0], code) for code in DEMO_PROTECTION]
    for profile, sweep, code in runs:
        argv = ["simulate", *ckpts, "--profile", profile, "--sweep", sweep]
        argv += ["--protection", code] if code else []
        argv += ["--chips", str(args.chips), "--seed", str(args.seed), "--out", str(db)]
        argv += ["--limit", str(args.test_limit)]
        if args.data_dir:
            argv += ["--data-dir", args.data_dir]
        if args.workers:
            argv += ["--workers", str(args.workers)]
        if quiet:
            argv += ["--quiet"]
        _step(argv, quiet)

    report_dir = out / "report"
    _step(["report", str(db), "--out", str(report_dir), "--embed"], quiet=True)
    summary = summarize(load_results(db))
    rows = headline(summary)
    codes = protection_headline(summary)
    if args.json:
        print(json.dumps({"report": str(report_dir / "report.html"), "headline": rows,
                          "protection": codes}, indent=2))
        return 0
    print(f"\nreport: {report_dir / 'report.html'}")
    print("lowest safe operating point (accuracy drop < 1 point at 95 % confidence):")
    for r in rows:
        clean = r["clean_accuracy_pct"]
        model = r["model"] + ("" if clean is None else f" ({clean:.1f} % clean)")
        where = "none" if r["safe_knob"] is None else f"{r['safe_knob']:g} {r['unit']}"
        saved = r["energy_saving_pct"]
        saved = "" if saved is None else f", {saved:.0f} % energy saved"
        print(f"  {r['profile']:<16} {model:<36} {where}{saved}")
    if codes:
        print("with a code in the same faulty memory (energy net of its extra cells):")
    for r in codes:
        where = "none" if r["safe_knob"] is None else f"{r['safe_knob']:g} {r['unit']}"
        saved = r["net_energy_saving_pct"]
        saved = "" if saved is None else f", {saved:.0f} % energy saved"
        print(f"  {r['profile']:<16} {r['model'] + ', ' + r['protection']:<36} {where}{saved}")
    return 0


def protection_headline(summary: dict) -> list[dict]:
    """Lowest safe point and net energy saved per (code, model), from the comparisons."""
    return [{"profile": c["profile"], "unit": c["knob_unit"], "protection": r["protection"],
             "model": r["model"], "safe_knob": r["safe_knob"] if r["found"] else None,
             "net_energy_saving_pct": r["net_energy_saving_pct"] if r["found"] else None}
            for c in summary.get("protection_comparisons", []) for r in c["rows"]
            if r["protection"] != "none"]
