"""The `mcelsim` command line: argument parsing only; the work lives in the packages.

Each subcommand is a module in `simulator.commands` exposing `add_parser(subparsers)` and
`run(args) -> int`. Heavy imports (torch, matplotlib, numba kernels) happen inside `run`,
so `mcelsim --help` is instant. A `UserInputError` anywhere becomes one line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from memory_models.usererror import UserInputError

# Subcommand name -> module in simulator.commands (order = order in --help).
COMMANDS = {
    "profiles": "profiles",
    "train": "train",
    "quantize": "quantize",
    "simulate": "simulate",
    "plot": "plot",
    "report": "report",
    "demo": "demo",
}


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (argparse's default also prints usage)."""

    def error(self, message: str) -> None:  # noqa: D102
        # Every line names the option, what is wrong and the fix; range errors carry their
        # own fix (simulator.options), the rest point to the command's help.
        if "invalid choice" in message:
            message += "; fix: use one of the values listed"
        elif "; fix: " not in message:
            message += f"; fix: see `{self.prog} --help`"
        sys.stderr.write(f"{self.prog}: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mcelsim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMANDS.values():
        mod = importlib.import_module(f"simulator.commands.{module}")
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserInputError as err:
        sys.stderr.write(f"mcelsim {args.command}: {err.line()}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("mcelsim: interrupted; completed work is saved\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
