"""argparse value types with their documented ranges: a value outside is refused by the
parser (exit 2, one line naming the option, the value and the range) before any work.

    p.add_argument("--chips", type=int_in(1), ...)          # integer >= 1
    p.add_argument("--ci", type=float_in(0, 1, low_open=True), ...)   # 0 < x <= 1
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["float_in", "int_in"]


def _range_text(low, high, low_open: bool = False, high_open: bool = False) -> str:
    def num(v) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    if high is None:
        return f"{'>' if low_open else '>='} {num(low)}"
    if low is None:
        return f"{'<' if high_open else '<='} {num(high)}"
    return f"in {'(' if low_open else '['}{num(low)}, {num(high)}{')' if high_open else ']'}"


def int_in(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An integer in [low, high] (None: unbounded on that side)."""
    where = _range_text(low, high)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an integer; fix: pass an integer {where}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{value} is out of range; fix: pass an integer {where}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(
    low: float | None = None, high: float | None = None, *, low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], float]:
    """A finite number in the interval from low to high (open ends where asked)."""
    where = _range_text(low, high, low_open, high_open)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a number; fix: pass a number {where}") from None
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or below or above:
            raise argparse.ArgumentTypeError(
                f"{text} is out of range; fix: pass a number {where}")
        return value

    parse.__name__ = "number"
    return parse
