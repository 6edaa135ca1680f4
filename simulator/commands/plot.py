"""`mcelsim plot`: figures from a campaign results store (accuracy vs knob / BER, margins,
sensitivity), with confidence bands over chips and the lowest safe operating point.

Reads the store written by `mcelsim simulate`; draws with `analysis.plots`. The helpers
here (`add_common_arguments`, `load`, `prepare_out`) are shared with `mcelsim report`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from simulator.options import float_in


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `plot` and `report`."""
    p.add_argument("db", metavar="RESULTS_DB", help="results store written by mcelsim simulate")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (default: <RESULTS_DB stem>_<command> beside the store)")
    p.add_argument("--campaign", metavar="ID", default=None,
                   help="only this campaign (default: every campaign, one section each)")
    p.add_argument("--format", dest="fmt", default="png", choices=("png", "svg", "pdf"),
                   help="figure file format (default png)")
    p.add_argument("--max-drop", type=float_in(0, 100), default=1.0, metavar="PP",
                   help="lowest safe point: largest tolerated accuracy drop vs nominal, in "
                        "percentage points, at the chosen confidence (default 1.0)")
    p.add_argument("--confidence", type=float_in(0.5, 1, high_open=True), default=0.95,
                   help="confidence level of intervals and of the safe-point test (default 0.95)")
    p.add_argument("--interval", default="t", choices=("t", "bootstrap"),
                   help="intervals over chips: t (Student-t; BCa bootstrap where a normality "
                        "test rejects the chips, default) or bootstrap (BCa everywhere)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def load(args: argparse.Namespace):
    """Validate the shared options and read the store (UserInputError on bad input)."""
    from analysis.results import load_results
    from memory_models.usererror import UserInputError

    if not (math.isfinite(args.max_drop) and args.max_drop >= 0.0):
        raise UserInputError("--max-drop", None, f"must be >= 0 pp, got {args.max_drop}",
                             "pass a drop in percentage points, e.g. --max-drop 1.0")
    if not (0.5 <= args.confidence < 1.0):
        raise UserInputError("--confidence", None, f"must lie in [0.5, 1), got "
                             f"{args.confidence}", "e.g. --confidence 0.95")
    return load_results(args.db, campaign=args.campaign)


def prepare_out(args: argparse.Namespace, command: str) -> Path:
    """The output folder (created); UserInputError if it cannot be."""
    from memory_models.usererror import UserInputError, check_output_folder

    out = Path(args.out) if args.out else Path(args.db).with_name(
        f"{Path(args.db).stem}_{command}")
    check_output_folder(out, "--out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(out, "--out", f"cannot create the folder ({err.strerror})",
                             "pass a writable folder to --out") from None
    return out


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "plot",
        help="figures from a results store (accuracy vs knob/BER, margins, sensitivity)",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
    )
    add_common_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from analysis.plots import save_figures
    from analysis.report import safe_points

    results = load(args)
    out = prepare_out(args, "plots")
    sps = {c.campaign_id: safe_points(results, c, max_drop_pp=args.max_drop,
                                      confidence=args.confidence, interval=args.interval)
           for c in results.campaigns}  # fmt: skip
    figs = save_figures(results, out, fmt=args.fmt, confidence=args.confidence,
                        safe_points=sps, interval=args.interval)  # fmt: skip
    labels = results.labels()
    if args.json:
        payload = {
            "store": str(results.path), "out": str(out),
            "figures": [{"campaign_id": f.campaign_id, "name": f.name, "path": str(f.path),
                         "caption": f.caption} for f in figs],
            "safe_points": [
                {"campaign_id": cid, "model": labels[h], "knob": sp.knob, "ber": sp.ber,
                 "drop_upper_pp": sp.drop_upper_pp,
                 "bound": next((c.bound for c in sp.checks if c.row == sp.row), None),
                 "energy_saving_pct": None if sp.energy_saving is None
                 else 100.0 * sp.energy_saving}
                for cid, by_model in sps.items() for h, sp in by_model.items()
            ],
        }
        sys.stdout.write(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        return 0
    for f in figs:
        sys.stdout.write(f"{f.path}\n")
    sys.stdout.write(f"mcelsim plot: {len(figs)} figures in {out}\n")
    return 0
