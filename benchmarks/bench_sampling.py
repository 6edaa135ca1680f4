"""Fault sampling speed: memory_models vs the naive one-uniform-per-bit mask, in one run.

    .venv/bin/python benchmarks/bench_sampling.py            # print the table
    .venv/bin/python benchmarks/bench_sampling.py --write    # also write results_sampling.md

For n = 10^8 cells at p = 1e-4 and 1e-2 it times (best of --repeat):
  naive       rng.random(n) < p                       (the mask only, no positions)
  positions   exact Bernoulli(p) fault positions, keyed blocks (memory_models.sampling)
  corrupt     BitErrorModel(p, p).corrupt on n/8 uint8 words (copy + apply included)
  chip first  Chip(sram-14nm, n).read of n/8 words at the knob where BER = p (draws the
              chip's weak cells; a fresh chip)
  chip again  the same chip re-read at that knob (cached weak cells, new transient draws)
Speed-ups are naive time / our time, measured in the same process.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import brentq

from memory_models import BitErrorModel, Chip, load_profile
from memory_models.sampling import Ranges, iid_cells


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=float, default=1e8, help="cells (default 1e8)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="write benchmarks/results_sampling.md")
    args = ap.parse_args(argv)
    n = int(args.bits)
    prof = load_profile("sram-14nm")
    words = np.random.default_rng(0).integers(0, 256, size=n // 8).astype(np.uint8)
    rows = []
    for p in (1e-4, 1e-2):
        rng = np.random.default_rng(1)
        t_naive = best(lambda: rng.random(n) < p, args.repeat)  # noqa: B023
        ranges = Ranges.of([(0, n)])
        t_pos = best(lambda: iid_cells(12345, 11, p, ranges), args.repeat)  # noqa: B023
        model = BitErrorModel(p, p)
        t_cor = best(lambda: model.corrupt(words, 8, rng), args.repeat)  # noqa: B023
        knob = brentq(lambda v: prof.rates(v).ber - p, prof.knob.min, prof.knob.max)  # noqa: B023
        firsts = []
        for s in range(args.repeat):
            chip = Chip(prof, n, seed=s)
            t = time.perf_counter()
            chip.read(words, 8, knob, rng)
            firsts.append(time.perf_counter() - t)
        t_again = best(lambda: chip.read(words, 8, knob, rng), args.repeat)  # noqa: B023
        faults = iid_cells(12345, 11, p, ranges).size
        rows.append((p, faults, t_naive, t_pos, t_cor, min(firsts), t_again, knob))

    head = ("| p | faults | naive mask (s) | positions (s) | speed-up | corrupt (s) | speed-up "
            "| chip first (s) | speed-up | chip again (s) | speed-up |")
    lines = [head, "|" + "---|" * 11]
    for p, f, tn, tp, tc, t1, t2, _ in rows:
        lines.append(f"| {p:g} | {f} | {tn:.3f} | {tp:.4f} | {tn / tp:.0f}x | {tc:.4f} | "
                     f"{tn / tc:.0f}x | {t1:.3f} | {tn / t1:.0f}x | {t2:.4f} | {tn / t2:.0f}x |")
    table = "\n".join(lines)
    sys.stdout.write(table + "\n")
    if args.write:
        import os

        text = f"""# Fault sampling: memory_models vs the naive mask

Command: `.venv/bin/python benchmarks/bench_sampling.py --write` (n = {n:.0e} cells, best of
{args.repeat}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy
{np.__version__}, shared with other jobs). Naive: `rng.random(n) < p` (mask only).
Speed-up = naive time / ours, same process. Target: >= 20x at p = 1e-4.

{table}

- positions: exact Bernoulli(p) fault positions: a binomial count per keyed block of 2^20
  cells, then distinct positions from the block's counter-based stream (numba kernel).
- corrupt: `BitErrorModel(p, p).corrupt` of n/8 uint8 words, including the output copy.
- chip first / again: `Chip(sram-14nm, n)` read at the knob where BER = p (first:
  draws the chip's weak cells; again: cached weak cells, fresh transient draws).
  Knob values: {", ".join(f"{r[7]:.4f} V/Vmin for p = {r[0]:g}" for r in rows)}.
"""
        Path(__file__).with_name("results_sampling.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
