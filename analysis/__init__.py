"""Analysis of campaign results: statistics over chips, figures, the HTML/JSON report.

Reads the SQLite results store written by `mcelsim simulate` with plain sqlite3; imports
numpy, scipy, matplotlib and, from `memory_models`, its statistics over chips and its
user-error type (never the simulator or torch). Names resolve lazily so `import analysis`
does not load matplotlib.

    from analysis import load_results, summarize, write_report
    res = load_results("results.db")             # or load_results(path, campaign="ID")
    content = summarize(res, max_drop_pp=1.0)    # JSON-ready dict (same as `report --json`)
    write_report(res, "out/")                    # out/report.html, report.json, figures
"""

from __future__ import annotations

import importlib

# public name -> module that defines it
_EXPORTS = {
    "load_results": "analysis.results",
    "Results": "analysis.results",
    "Campaign": "analysis.results",
    "t_interval": "memory_models.stats",
    "paired_difference": "memory_models.stats",
    "welch_difference": "memory_models.stats",
    "Interval": "memory_models.stats",
    "lowest_safe_point": "analysis.safe_point",
    "SafePoint": "analysis.safe_point",
    "save_figures": "analysis.plots",
    "campaign_figures": "analysis.plots",
    "safe_points": "analysis.report",
    "summarize": "analysis.report",
    "write_report": "analysis.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
