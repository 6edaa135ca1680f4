"""`mcelsim simulate`: deployment campaigns over chips and operating points, into SQLite.

Examples:
  mcelsim simulate ce.ckpt mcel.ckpt --profile sram-14nm --sweep 0.80:1.00:0.01 --chips 20 \\
      --out results.db
  mcelsim simulate ce.ckpt mcel.ckpt --ber 0:0.02:0.002 --p01-ratio 1 --out results.db
  mcelsim simulate mcel.ckpt --sensitivity --sensitivity-ber 0.01 --out results.db
  mcelsim simulate --out results.db --export results.csv     # export only (.csv or .json)

Rerunning the same command resumes: samples already in --out are not recomputed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from simulator.options import float_in, int_in

MAX_CHIPS = 1_000_000  # = simulator.spec.MAX_CHIPS (kept here: --help imports nothing heavy)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="run a deployment campaign (chips x operating points x models) into SQLite",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("models", nargs="*", metavar="MODEL.ckpt",
                   help="checkpoints (or QDQ .onnx models, with --dataset) to deploy")
    what = p.add_argument_group("operating points (one of --sweep, --ber, --sensitivity)")
    what.add_argument("--profile", help="memory profile name or .toml path (with --sweep)")
    what.add_argument("--sweep", metavar="A:B:STEP",
                      help="knob values of --profile: START:STOP:STEP (inclusive) or a,b,c")
    what.add_argument("--ber", metavar="A:B:STEP",
                      help="i.i.d. bit error rates, (p01 + p10) / 2, e.g. 0:0.02:0.002")
    what.add_argument("--p01-ratio", type=float_in(0), default=1.0, metavar="R",
                      help="p01 = R * p10 for --ber / --sensitivity (1 = symmetric)")
    what.add_argument("--sensitivity", action="store_true",
                      help="per-layer and per-bit-position sensitivity at --sensitivity-ber")
    what.add_argument("--sensitivity-ber", type=float_in(0, 1), default=0.01, metavar="BER",
                      help="bit error rate of the sensitivity analysis (default 0.01)")
    dep = p.add_argument_group("deployment")
    dep.add_argument("--encoding", default="offset-binary",
                     choices=["offset-binary", "twos-complement", "sign-magnitude"],
                     help="weight storage encoding (default offset-binary)")
    dep.add_argument("--layout", default="word", help="memory layout (default word)")
    dep.add_argument("--protect", action="append", default=[], metavar="WHAT",
                     help="keep in reliable memory: layer:<name>, first, last, bit:msb, "
                     "bit:<j> (comma list or repeated)")
    dep.add_argument("--protection", default="none", metavar="SCHEME",
                     help="code stored with the data in the faulty memory: none, "
                     "secded-72-64, secded-39-32, secded-137-128, parity, msb-dup, msb-tmr; "
                     "options ,interleave=D ,double=keep|zero ,word=W ,bits=M ,layers=A+B")
    dep.add_argument("--include-biases", action="store_true",
                     help="also store biases (32-bit two's complement) in the faulty memory")
    mc = p.add_argument_group("Monte Carlo")
    mc.add_argument("--chips", type=int_in(1, MAX_CHIPS), default=20,
                    help="chips per point (default 20)")
    mc.add_argument("--seed", type=int_in(0, 2**63 - 1), default=0,
                    help="campaign seed (default 0)")
    mc.add_argument("--ci", type=float_in(0, 1, low_open=True), metavar="WIDTH",
                    help="adaptive: add --chips chips until every 95%% interval is narrower "
                    "than WIDTH (accuracy, 0..1)")
    mc.add_argument("--interval", default="t", choices=("t", "bootstrap"),
                    help="confidence intervals over chips: t (Student-t; BCa bootstrap where a "
                    "normality test rejects the chips, default) or bootstrap (BCa everywhere); "
                    "also what --ci measures")
    mc.add_argument("--max-chips", type=int_in(1, MAX_CHIPS),
                    help="cap for --ci (default max(10*chips, 200))")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", help="test set (default: the checkpoint's)")
    data.add_argument("--data-dir", help="where the dataset files are")
    data.add_argument("--limit", type=int_in(1), metavar="N", help="use the first N test images")
    run_ = p.add_argument_group("execution and output")
    run_.add_argument("--out", default="results.db", help="SQLite results file (default "
                      "results.db); rerunning resumes")
    run_.add_argument("--workers", type=int_in(1, 1024), default=None,
                      help="local worker processes (default: all cores; 1 = in-process)")
    run_.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                      help="run on an existing Dask distributed cluster")
    run_.add_argument("--engine", default="auto", choices=["auto", "session", "forward"],
                      help="evaluation per sample: incremental session, full forward, or auto "
                      "(default); results are identical")
    run_.add_argument("--export", metavar="FILE", help="write the store to FILE (.csv/.json)")
    run_.add_argument("--quiet", action="store_true", help="no progress bar")
    run_.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def _spec_from_args(args):
    from memory_models.protection import parse_protection
    from memory_models.usererror import UserInputError
    from simulator.campaign import CampaignSpec, parse_sweep

    modes = [m for m, on in (("--sweep", args.sweep is not None), ("--ber", args.ber is not None),
                             ("--sensitivity", args.sensitivity)) if on]  # fmt: skip
    if len(modes) != 1:
        raise UserInputError("simulate", None,
                             "give exactly one of --sweep, --ber, --sensitivity"
                             + (f" (got {', '.join(modes)})" if modes else ""),
                             "e.g. --profile sram-14nm --sweep 0.80:1.00:0.01")  # fmt: skip
    protect = tuple(sorted({p.strip() for a in args.protect for p in a.split(",") if p.strip()}))
    common = dict(chips=args.chips, seed=args.seed, encoding=args.encoding, layout=args.layout,
                  protect=protect, include_biases=args.include_biases, ci=args.ci,
                  max_chips=args.max_chips, p01_ratio=args.p01_ratio,
                  engine=args.engine, interval=args.interval,
                  protection=parse_protection(args.protection).key)  # fmt: skip
    if args.sweep is not None:
        if not args.profile:
            raise UserInputError("--sweep", None, "needs a memory profile",
                                 "add --profile NAME (see `mcelsim profiles list`)")
        return CampaignSpec(kind="knob", profile=args.profile,
                            points=parse_sweep(args.sweep, "--sweep"), **common)
    if args.profile:
        raise UserInputError("--profile", None, "is used with --sweep only",
                             "drop --profile for i.i.d. --ber / --sensitivity runs")
    if args.ber is not None:
        return CampaignSpec(kind="ber", points=parse_sweep(args.ber, "--ber"), **common)
    return CampaignSpec(kind="sensitivity", points=(float(args.sensitivity_ber),), **common)


def _dataset_name(meta: dict) -> str | None:
    ds = meta.get("dataset")
    if isinstance(ds, dict):
        return ds.get("name")
    return ds if isinstance(ds, str) else None


def _load_models(paths: list[str]):
    from pathlib import Path

    from memory_models.usererror import UserInputError

    for path in paths:
        if Path(path).is_dir():
            raise UserInputError(path, None, "is a folder, not a checkpoint file",
                                 "pass the .ckpt file written by `mcelsim train`")
        if not Path(path).is_file():
            raise UserInputError(path, None, "checkpoint file not found",
                                 "check the path, or train one with `mcelsim train`")
    entries = []
    labels: dict[str, int] = {}
    from models.checkpoint import read_checkpoint_meta
    from simulator.campaign import model_entry
    from simulator.importer import import_checkpoint

    for path in paths:
        if str(path).endswith(".onnx"):  # a QDQ ONNX model (simulator.onnx_import)
            from simulator.onnx_import import import_onnx

            net = import_onnx(path)
            meta = {"source": {"onnx": str(path)}}
        else:
            meta = read_checkpoint_meta(path)
            meta.pop("_sha256", None)
            net = import_checkpoint(path)
        label = Path(path).stem
        labels[label] = labels.get(label, 0) + 1
        if labels[label] > 1:
            label = f"{label}-{labels[label]}"
        entries.append(model_entry(net, label=label, path=path, meta=meta))
    return entries


def _print_summary(res, out) -> None:
    w = sys.stdout.write
    w(f"campaign {res.campaign_id} ({res.kind}) -> {out}: {res.n_computed} samples computed, "
      f"{res.n_reused} reused\n")
    for m in res.models:
        w(f"  {m['label']} [{m['model_hash']}]: clean accuracy {m['clean_accuracy']:.4f}, "
          f"mean margin {m['clean_mean_margin']:.3f}, {m['n_bits']} bits in memory"
          + (f" ({m['check_cells']} of them check cells)" if m.get("check_cells") else "")
          + "\n")
    if res.kind == "sensitivity":
        w(f"{'model':<20} {'target':<6} {'name':<20} {'chips':>5} {'acc':>7} {'95% CI':>17}\n")
        for s in res.sensitivity:
            w(f"{s['label'][:20]:<20} {s['target']:<6} {s['name'][:20]:<20} {s['n']:>5} "
              f"{_f(s['mean'])} {_ci(s)}\n")
    knob = "BER" if res.kind != "knob" else "knob"
    head = f"{'knob':>10} {'BER':>10}" if res.kind == "knob" else f"{'BER':>10}"
    w(f"{'model':<20} {head} {'chips':>5} {'acc':>7} {'std':>7} {'95% CI':>17}\n")
    for s in res.summary:
        at = f"{s['knob']:>10.4g} {s['ber']:>10.3g}" if res.kind == "knob" else f"{s['ber']:>10.3g}"
        w(f"{s['label'][:20]:<20} {at} {s['n']:>5} {_f(s['mean'])} {_f(s['std'])} {_ci(s)}\n")
    w("95% CI: t = Student-t, boot = BCa bootstrap (--interval bootstrap, or where a "
      "Shapiro-Wilk test rejects normal chips)\n")
    if res.paired:
        w("paired difference (same chips), a - b:\n")
        for s in res.paired:
            w(f"  {s['a'][:16]} - {s['b'][:16]} at {knob} {s['knob']:.4g}: {_f(s['mean'])} "
              f"{_ci(s)} (n={s['n']})\n")


def _f(v) -> str:
    return f"{v:>7.4f}" if v is not None else f"{'-':>7}"


def _ci(s) -> str:
    if s["ci_lo"] is None:
        return f"{'-':>17}     "
    mark = " boot" if s.get("ci_method") == "bootstrap" else " t   "
    return f"[{s['ci_lo']:.4f}, {s['ci_hi']:.4f}]{mark}"


def run(args) -> int:
    from memory_models.usererror import UserInputError
    from simulator.campaign import TestSet, check_test_set, run_campaign, validate_spec
    from simulator.store import ResultStore, check_export_path, check_store_path

    if args.export:
        check_export_path(args.export)
    if not args.models:
        if not args.export:
            raise UserInputError("simulate", "models", "no checkpoint given",
                                 "pass MODEL.ckpt (or --export FILE to export --out)")
        if not os.path.isfile(args.out):
            raise UserInputError(args.out, None, "results file not found", "check --out")
        with ResultStore(args.out, readonly=True) as store:
            files = store.export(args.export)
        if args.json:
            sys.stdout.write(json.dumps({"exported": [str(f) for f in files]}) + "\n")
        else:
            sys.stdout.write("".join(f"wrote {f}\n" for f in files))
        return 0

    spec = _spec_from_args(args)
    prof = None
    if spec.kind == "knob":
        import memory_models as mm

        prof = mm.load_profile(spec.profile)
    validate_spec(spec, prof)
    for opt, v in (("--workers", args.workers), ("--limit", args.limit)):
        if v is not None and v < 1:
            raise UserInputError(opt, None, f"must be at least 1, got {v}", f"pass {opt} 1 or more")
    if args.scheduler is not None and not args.scheduler.startswith(("tcp://", "tls://")):
        raise UserInputError("--scheduler", args.scheduler, "not a scheduler address",
                             "write tcp://HOST:PORT")

    check_store_path(args.out)
    entries = _load_models(args.models)
    dataset = args.dataset
    if dataset is None:
        names = {_dataset_name(e.meta) for e in entries}
        if len(names) != 1 or None in names:
            raise UserInputError("--dataset", None, "the checkpoints do not name one common "
                                 f"dataset ({', '.join(sorted(map(str, names)))})",
                                 "pass --dataset NAME")  # fmt: skip
        dataset = names.pop()
    from models.datasets import load_dataset

    ds = load_dataset(dataset, split="test", data_dir=args.data_dir, limit=args.limit)
    test = TestSet(dataset, ds.images, ds.labels)
    check_test_set(entries, test)
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    with ResultStore(args.out) as store:
        res = run_campaign(spec, entries, test, store, workers=workers,
                           scheduler=args.scheduler, progress=not args.quiet)  # fmt: skip
        files = store.export(args.export) if args.export else []
    if args.json:
        doc = res.to_dict()
        doc["out"] = str(args.out)
        doc["exported"] = [str(f) for f in files]
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    else:
        _print_summary(res, args.out)
        for f in files:
            sys.stdout.write(f"wrote {f}\n")
    return 0
