"""`mcelsim report`: a self-contained HTML report of a results store (figures, per-point
mean ± confidence interval per model, paired model differences on common chips, lowest safe
operating point and its energy saving, clean accuracy and margins, profile and settings).

`--json` prints the same content as JSON. Reads the store written by `mcelsim simulate`.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> None:
    from simulator.commands.plot import add_common_arguments

    p = subparsers.add_parser(
        "report",
        help="HTML (and --json) report of a results store",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
    )
    add_common_arguments(p)
    p.add_argument("--embed", action="store_true",
                   help="embed the figures in report.html (base64), so the page alone is "
                        "complete (the figure files are still written beside it)")
    p.set_defaults(run=run)


def _summary_lines(content: dict) -> list[str]:
    lines = []
    for c in content["campaigns"]:
        prof = c["profile"] or {}
        unit = prof.get("knob_unit") or ""
        for sp in c["safe_points"]:
            if not sp["found"]:
                where = "no point harsher than the reference is safe"
            else:
                side = "highest" if prof.get("knob_harsher") == "higher" else "lowest"
                where = f"{side} safe {prof.get('knob_name', 'knob')} {sp['knob']:.4g} {unit}"
                if sp["energy_saving_pct"] is not None:
                    where += f", {sp['energy_saving_pct']:.1f} % energy saved"
            lines.append(f"{c['campaign_id']}: {sp['model']}: {where.strip()}")
    return lines


def run(args: argparse.Namespace) -> int:
    from analysis.report import write_report
    from simulator.commands.plot import load, prepare_out

    results = load(args)
    out = prepare_out(args, "report")
    rep = write_report(results, out, fmt=args.fmt, max_drop_pp=args.max_drop,
                       confidence=args.confidence, embed=args.embed, interval=args.interval)
    if args.json:
        payload = dict(rep.content)
        payload["html"] = str(rep.html_path)
        sys.stdout.write(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        return 0
    for line in _summary_lines(rep.content):
        sys.stdout.write(line + "\n")
    sys.stdout.write(f"mcelsim report: wrote {rep.html_path}\n")
    return 0
