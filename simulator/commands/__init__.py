"""One module per `mcelsim` subcommand: `add_parser(subparsers)` and `run(args) -> int`.

`add_parser` must set `run` as the parser default (`p.set_defaults(run=run)`) and import
nothing heavy at module level.
"""
