"""Training method vs protection code, on the same chips: CE vs MCEL x none / SEC-DED / MSB.

Campaigns that differ only in their protection code (same profile, operating points,
encoding, layout, `--protect`, biases, seed, test set) form one comparison: chip i has the
same seed in each of them. Per (code, model): the cells stored per data cell, the lowest
safe operating point (`analysis.safe_point`, paired per chip against the nominal point of
the same campaign) and the energy saved there *net of the code's overhead*:
1 - overhead * E(point) / E(nominal), against the unprotected memory at nominal; and the
accuracy at every operating point. `plot_protection` draws accuracy vs knob for all of them
in one figure (colour = code, line style = model).
"""

from __future__ import annotations

import json
import math

import numpy as np

from analysis.results import Campaign, Results
from analysis.results import json_float as _f
from analysis.safe_point import lowest_safe_point
from memory_models.stats import interval as chip_interval

_IGNORED = ("protection", "mcelsim_version")  # settings a comparison may differ in


def _group_key(c: Campaign) -> str | None:
    if c.kind == "sensitivity" or not c.samples or c.profile is None:
        return None
    rest = {k: v for k, v in c.config.items() if k not in _IGNORED}
    return json.dumps(rest, sort_keys=True, default=str)


def comparison_groups(results: Results) -> list[list[Campaign]]:
    """Groups of >= 2 campaigns that differ only in their protection code (sorted: none first,
    then by overhead)."""
    groups: dict[str, list[Campaign]] = {}
    for c in results.campaigns:
        key = _group_key(c)
        if key is not None:
            groups.setdefault(key, []).append(c)
    out = []
    for cs in groups.values():
        by_code = {c.protection: c for c in cs}  # one campaign per code
        if len(by_code) >= 2:
            out.append(sorted(by_code.values(), key=lambda c: (
                c.protection != "none", max(map(c.cell_overhead, c.samples), default=1.0),
                c.protection)))
    return out


def protection_comparison(results: Results, group: list[Campaign], *,
                          max_drop_pp: float = 1.0, confidence: float = 0.95,
                          interval: str = "t") -> dict:
    """One comparison as JSON-ready data (accuracies in %, drops in pp); `interval` as in
    `analysis.safe_point.lowest_safe_point`."""
    labels = results.labels()
    first = group[0]
    prof = first.profile
    rows = []
    for c in group:
        for h, s in c.samples.items():
            model = results.models.get(h)
            over = c.cell_overhead(h)
            sp = lowest_safe_point(
                c.points.knob, c.points.ber, s.accuracy, nominal=prof.knob_nominal,
                harsher=prof.knob_harsher, energy=c.points.energy,
                clean_accuracy=model.clean_accuracy if model is not None else math.nan,
                max_drop_pp=max_drop_pp, confidence=confidence, overhead=over,
                interval=interval)
            acc = []
            for i in range(len(c.points)):
                iv = chip_interval(100.0 * s.accuracy[i], confidence, interval)
                acc.append({"knob": _f(c.points.knob[i]), "mean_pct": _f(iv.mean),
                            "half_width_pct": _f(iv.half_width), "n": iv.n,
                            "interval": iv.method})
            rows.append({
                "protection": c.protection, "campaign_id": c.campaign_id, "model": labels[h],
                "model_hash": h, "loss": model.loss if model is not None else "",
                "cell_overhead": over, "found": sp.row is not None, "safe_knob": _f(sp.knob),
                "ber": _f(sp.ber), "drop_upper_pp": _f(sp.drop_upper_pp),
                "net_energy_saving_pct": None if sp.energy_saving is None
                else _f(100.0 * sp.energy_saving),
                "accuracy": acc,
            })
    return {"profile": prof.name, "knob_name": prof.knob_name, "knob_unit": prof.knob_unit,
            "campaigns": [c.campaign_id for c in group], "chips": first.n_chips,
            "n_images": first.n_images, "encoding": first.encoding, "rows": rows}


def plot_protection(results: Results, group: list[Campaign], *, confidence: float = 0.95):
    """Accuracy vs knob for every (code, model) of one comparison (a matplotlib Figure)."""
    from matplotlib.figure import Figure

    from analysis.plots import _OKABE, _style, model_styles
    from memory_models.stats import row_intervals

    colours = [_OKABE[k] for k in ("black", "blue", "vermillion", "green", "orange", "purple",
                                   "sky", "yellow")]
    hashes = list(dict.fromkeys(h for c in group for h in c.samples))
    styles = model_styles(results, hashes)
    prof = group[0].profile
    with _style():
        fig = Figure(figsize=(7.0, 4.4))
        ax = fig.add_subplot()
        for k, c in enumerate(group):
            colour = colours[k % len(colours)]
            order = np.argsort(c.points.knob)
            for h, s in c.samples.items():
                ivs = row_intervals(s.accuracy, confidence)
                mean = np.array([i.mean for i in ivs])[order] * 100.0
                lo = np.array([i.low for i in ivs])[order] * 100.0
                hi = np.array([i.high for i in ivs])[order] * 100.0
                st = styles[h]
                x = c.points.knob[order]
                ax.plot(x, mean, color=colour, linestyle=st.linestyle, marker=st.marker,
                        label=f"{st.label}, {c.protection} (x{c.cell_overhead(h):.3g} cells)")
                ax.fill_between(x, lo, hi, color=colour, alpha=0.12, linewidth=0)
        unit = f" ({prof.knob_unit})" if prof.knob_unit else ""
        ax.set_xlabel(f"{prof.knob_name.replace('_', ' ')}{unit}")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"Training method vs protection code — {prof.name}\n"
                     f"{group[0].n_chips} chips (same seeds), bands: {confidence:.0%} "
                     "t-interval over chips")
        ax.legend(loc="lower left", fontsize=8)
    return fig


def comparison_html(cmp: dict, out_dir, embed: bool) -> str:
    """The comparison's table (and figure, if drawn) as an HTML section."""
    from analysis.report import _e, _figure_html, _table

    unit = cmp["knob_unit"]
    knobs = sorted({a["knob"] for r in cmp["rows"] for a in r["accuracy"]
                    if a["knob"] is not None}, reverse=True)
    head = ["code", "model", "cells per data cell", f"lowest safe {cmp['knob_name']}",
            "BER there", "net energy saved"] + [f"acc. at {k:g} {unit} (%)" for k in knobs]
    rows = []
    for r in cmp["rows"]:
        acc = {a["knob"]: a for a in r["accuracy"]}
        cells = [
            _e(r["protection"]), _e(r["model"]), f"{r['cell_overhead']:.4g}",
            f"{r['safe_knob']:g} {_e(unit)}" if r["found"] else "none harsher than nominal",
            "–" if r["ber"] is None else f"{r['ber']:.2e}",
            "–" if r["net_energy_saving_pct"] is None else f"{r['net_energy_saving_pct']:.1f} %",
        ]
        for k in knobs:
            a = acc.get(k)
            cells.append("–" if a is None or a["mean_pct"] is None else
                         f"{a['mean_pct']:.2f} ± {a['half_width_pct'] or 0:.2f}")
        rows.append(cells)
    fig = cmp.get("figure")
    return (f"<section><h2>Training method vs protection code — {_e(cmp['profile'])}</h2>"
            f"<p class=note>Campaigns {_e(', '.join(cmp['campaigns']))}: the same chips "
            f"(seeds), {cmp['chips']} chips, {_e(cmp['n_images'])} images. Net energy saved "
            "= 1 − (cells per data cell) × E(point) / E(nominal), against the unprotected "
            "memory at nominal; the safe point is paired per chip against the nominal point "
            "of the same code.</p>" + _table(head, rows, "num")
            + (_figure_html(fig, out_dir, embed) if fig else "") + "</section>")
