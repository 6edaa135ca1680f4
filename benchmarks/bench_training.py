"""Cost of training VGG3 (4-bit weights, Fashion-MNIST) with CE, MCEL and injected bit errors.

Each method trains the same fixed number of batches through `models.training.train` (same
seed, data, batch size and thread count; the data is loaded once beforehand and the test
evaluation is kept to a few images). Rounds interleave the methods (CE, MCEL, inject, CE,
...) so that load from other users of the machine spreads over all of them; the median
over rounds is reported. CPU time (this process) is the main figure because the machine
is shared; wall time is shown beside it. Ratios are relative to CE.

    .venv/bin/python benchmarks/bench_training.py                  # 20 batches x 3 rounds
    .venv/bin/python benchmarks/bench_training.py --batches 50 --rounds 5 --ber 0.01

Prints a Markdown table (for benchmarks/results_training.md); --json prints the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ber", type=float, default=0.01, help="injected per-bit flip rate")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from models.datasets import load_dataset
    from models.training import TrainConfig, train

    n = args.batches * args.batch_size
    train_data = load_dataset(args.dataset, "train", limit=n)
    test_data = load_dataset(args.dataset, "test", limit=16)
    methods = {
        "ce": dict(loss="ce"),
        "mcel": dict(loss="mcel", margin=32.0),
        "inject": dict(loss="ce", inject_ber=args.ber),
    }
    times: dict[str, dict[str, list[float]]] = {m: {"cpu": [], "wall": []} for m in methods}
    warm = load_dataset(args.dataset, "train", limit=2 * args.batch_size)
    for rnd in range(-1, args.rounds):  # round -1 warms up every path and is not counted
        for name, kw in methods.items():
            cfg = TrainConfig(dataset=args.dataset, arch="vgg3", weight_bits=4, epochs=1,
                              batch_size=args.batch_size, threads=args.threads, seed=0,
                              eval_batch_size=16, **kw)  # fmt: skip
            c0, w0 = time.process_time(), time.perf_counter()
            train(cfg, train_data=warm if rnd < 0 else train_data, test_data=test_data)
            if rnd >= 0:
                times[name]["cpu"].append(time.process_time() - c0)
                times[name]["wall"].append(time.perf_counter() - w0)
    med = {m: {k: statistics.median(v) for k, v in t.items()} for m, t in times.items()}
    result = {
        "command": "python benchmarks/bench_training.py " + " ".join(sys.argv[1:]),
        "batches": args.batches, "batch_size": args.batch_size, "rounds": args.rounds,
        "ber": args.ber, "threads": args.threads, "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": os.getloadavg(),
        "median_seconds": med,
        "cpu_ratio_vs_ce": {m: med[m]["cpu"] / med["ce"]["cpu"] for m in med},
        "wall_ratio_vs_ce": {m: med[m]["wall"] / med["ce"]["wall"] for m in med},
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"VGG3 4-bit, {args.dataset}, {args.batches} batches of {args.batch_size}, "
          f"{args.threads} thread(s), median of {args.rounds} rounds, "
          f"injected BER {args.ber}")  # fmt: skip
    print(f"load average at the end: {result['load_average']}\n")
    print("| method | CPU s / batch | CPU ratio vs CE | wall s / batch | wall ratio vs CE |")
    print("|---|---|---|---|---|")
    for m in methods:
        print(f"| {m} | {med[m]['cpu'] / args.batches:.3f} | "
              f"{result['cpu_ratio_vs_ce'][m]:.2f} | {med[m]['wall'] / args.batches:.3f} | "
              f"{result['wall_ratio_vs_ce'][m]:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
