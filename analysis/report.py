"""The report: one JSON-ready summary of a results store, and a self-contained HTML page.

`summarize()` computes everything once (per-point mean ± t-interval per model, paired
model differences on common chips, lowest safe point + energy saving, sensitivity, clean
accuracy and margins, settings); `write_report()` draws the figures and renders that same
content as HTML (`analysis/templates/report.html`), so the page and `--json` never
disagree. Accuracies are in percent, differences and drops in percentage points (pp).
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np

from analysis.protection import comparison_groups, comparison_html, protection_comparison
from analysis.results import Campaign, Results
from analysis.results import json_float as _f
from analysis.safe_point import SafePoint, lowest_safe_point, reference_row
from memory_models.stats import Interval, interval, paired_interval, welch_difference

REPORT_NAME = "report.html"
JSON_NAME = "report.json"


def _interval(iv: Interval, unit: str) -> dict:
    return {
        f"mean_{unit}": _f(iv.mean), f"ci_low_{unit}": _f(iv.low), f"ci_high_{unit}": _f(iv.high),
        f"half_width_{unit}": _f(iv.half_width), f"std_{unit}": _f(iv.std), "n": iv.n,
        "interval": iv.method,
    }


def _pair_order(results: Results, a: str, b: str) -> tuple[str, str]:
    """Put an MCEL (or other margin) model first and a CE model second: diff = MCEL - CE."""
    la, lb = results.models[a].loss if a in results.models else "", (
        results.models[b].loss if b in results.models else "")
    if la == "ce" and lb != "ce":
        return b, a
    return a, b


def safe_points(
    results: Results, campaign: Campaign, *, max_drop_pp: float = 1.0, confidence: float = 0.95,
    interval: str = "t",
) -> dict[str, SafePoint]:
    """model_hash -> lowest safe point of that model in a sweep campaign ({} without one)."""
    prof = campaign.profile
    if prof is None or len(campaign.points) < 2:
        return {}
    out = {}
    for h, s in campaign.samples.items():
        model = results.models.get(h)
        out[h] = lowest_safe_point(
            campaign.points.knob, campaign.points.ber, s.accuracy,
            nominal=prof.knob_nominal, harsher=prof.knob_harsher, energy=campaign.points.energy,
            clean_accuracy=model.clean_accuracy if model is not None else math.nan,
            max_drop_pp=max_drop_pp, confidence=confidence, interval=interval,
            overhead=campaign.cell_overhead(h),
        )
    return out


def _model_entry(results: Results, h: str) -> dict:
    labels = results.labels()
    m = results.models.get(h)
    if m is None:
        return {"model_hash": h, "label": labels.get(h, h[:8])}
    return {
        "model_hash": h, "label": labels[h], "path": m.path, "loss": m.loss or None,
        "margin": m.margin, "arch": m.arch or None, "weight_bits": m.weight_bits,
        "inject_ber": m.inject_ber, "dataset": m.dataset or None,
        "clean_accuracy_pct": _f(100.0 * m.clean_accuracy),
        "clean_mean_margin": _f(m.clean_mean_margin), "n_images": m.n_images,
    }


def _campaign_summary(
    results: Results, camp: Campaign, max_drop_pp: float, confidence: float, method: str = "t"
) -> dict:
    labels = results.labels()
    pts = camp.points
    prof = camp.profile
    ref = None
    if prof is not None and len(pts):
        ref = reference_row(pts.knob, pts.ber, prof.knob_nominal)
    models = []
    for h in camp.model_hashes:
        entry = _model_entry(results, h)
        ms = [camp.margins[k] for k in sorted(camp.margins) if k[0] == h and ref is not None
              and k[1] == int(pts.point_index[ref])]
        entry["reference_mean_margin"] = _f(ms[0].mean()) if ms and ms[0].size else None
        if h in camp.samples and ref is not None:
            entry["reference_accuracy"] = _interval(
                interval(100.0 * camp.samples[h].accuracy[ref], confidence, method), "pct")
        models.append(entry)
    points = []
    for i in range(len(pts)):
        row = {
            "point_index": int(pts.point_index[i]), "knob": _f(pts.knob[i]),
            "ber": _f(pts.ber[i]), "p01": _f(pts.p01[i]), "p10": _f(pts.p10[i]),
            "sa0": _f(pts.sa0[i]), "sa1": _f(pts.sa1[i]), "energy": _f(pts.energy[i]),
            "models": {},
        }
        for h, s in camp.samples.items():
            entry = _interval(interval(100.0 * s.accuracy[i], confidence, method), "pct")
            entry["mean_margin"] = _f(np.nanmean(s.mean_margin[i])) if np.isfinite(
                s.mean_margin[i]).any() else None
            row["models"][labels[h]] = entry
        points.append(row)
    pairs = []
    for a, b in itertools.combinations(list(camp.samples), 2):
        a, b = _pair_order(results, a, b)
        sa, sb = camp.samples[a].accuracy, camp.samples[b].accuracy
        rows = []
        for i in range(len(pts)):
            paired = paired_interval(100.0 * sa[i], 100.0 * sb[i], confidence, method)
            unpaired = welch_difference(100.0 * sa[i], 100.0 * sb[i], confidence)
            rows.append({
                "point_index": int(pts.point_index[i]), "knob": _f(pts.knob[i]),
                "ber": _f(pts.ber[i]), **_interval(paired, "pp"),
                "unpaired_half_width_pp": _f(unpaired.half_width),
            })
        pairs.append({"a": labels[a], "b": labels[b], "difference": "a - b",
                      "paired_on": "chip_index (same chip seeds)", "points": rows})
    safe = []
    for h, sp in safe_points(results, camp, max_drop_pp=max_drop_pp,
                             confidence=confidence, interval=method).items():
        safe.append({
            "model": labels[h], "found": sp.row is not None,
            "point_index": None if sp.row is None else int(pts.point_index[sp.row]),
            "knob": _f(sp.knob), "ber": _f(sp.ber), "drop_mean_pp": _f(sp.drop_mean_pp),
            "drop_upper_pp": _f(sp.drop_upper_pp),
            "energy_saving_pct": None if sp.energy_saving is None else _f(100 * sp.energy_saving),
            "reference": sp.reference, "max_drop_pp": sp.max_drop_pp,
            "confidence": sp.confidence,
            "bound": next((c.bound for c in sp.checks if c.row == sp.row), None),
            "first_unsafe": next(({"knob": c.knob, "drop_mean_pp": _f(c.drop_mean_pp),
                                   "drop_upper_pp": _f(c.drop_upper_pp), "bound": c.bound}
                                  for c in sp.checks if not c.safe), None),
        })
    sens: dict[str, list] = {}
    for h, by_target in camp.sensitivity.items():
        model = results.models.get(h)
        clean = model.clean_accuracy if model is not None else math.nan
        for target, rows in by_target.items():
            s = camp.samples.get(h)
            if s is not None and len(pts):  # every layer / bit at once: the samples
                drop = interval(100.0 * (clean - s.accuracy[0]), confidence, method)
                acc = interval(100.0 * s.accuracy[0], confidence, method)
                sens.setdefault(target, []).append({
                    "model": labels[h], "name": "(all at once)", "ber": _f(pts.ber[0]),
                    **_interval(drop, "pp"), "accuracy_mean_pct": _f(acc.mean),
                    "accuracy_half_width_pct": _f(acc.half_width),
                })
            for k, name in enumerate(rows.names):
                drop = interval(100.0 * (clean - rows.accuracy[k]), confidence, method)
                acc = interval(100.0 * rows.accuracy[k], confidence, method)
                sens.setdefault(target, []).append({
                    "model": labels[h], "name": name, "ber": _f(rows.ber[k]),
                    **_interval(drop, "pp"), "accuracy_mean_pct": _f(acc.mean),
                    "accuracy_half_width_pct": _f(acc.half_width),
                })
    versions = sorted(set(camp.versions) | ({results.mcelsim_version}
                                             if results.mcelsim_version else set()))
    profile = None
    if prof is not None:
        profile = {
            "profile_hash": prof.profile_hash, "name": prof.name, "technology": prof.technology,
            "knob_name": prof.knob_name, "knob_unit": prof.knob_unit,
            "knob_nominal": _f(prof.knob_nominal), "knob_min": _f(prof.knob_min),
            "knob_max": _f(prof.knob_max), "knob_harsher": prof.knob_harsher,
            "illustrative": prof.illustrative, "citation": prof.citation or None,
            "description": prof.description or None, "provenance": prof.provenance,
            "iid": prof.is_iid,
        }
    return {
        "campaign_id": camp.campaign_id, "kind": camp.kind, "created": camp.created,
        "profile": profile,
        "settings": {
            "encoding": camp.encoding, "layout": camp.layout, "protect": camp.protect,
            "include_biases": camp.include_biases, "chips": camp.n_chips,
            "protection": camp.protection,
            "cell_overhead": {labels[h]: camp.cell_overhead(h) for h in camp.samples},
            "chip_index": [int(c) for c in camp.chip_index], "seed": camp.seed,
            "dataset": camp.dataset, "n_images": camp.n_images, "versions": versions,
            "config": camp.config,
        },
        "reference_point_index": None if ref is None else int(pts.point_index[ref]),
        "models": models, "points": points, "paired_differences": pairs,
        "safe_points": safe, "sensitivity": sens,
    }


def _jsonable(obj):
    """Replace non-finite floats (e.g. inside a stored config) with None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


def summarize(results: Results, *, max_drop_pp: float = 1.0, confidence: float = 0.95,
              interval: str = "t") -> dict:  # fmt: skip
    """Everything the report shows, as JSON-ready data (NaN -> None). interval: 't'
    (Student-t; BCa bootstrap where a normality test rejects the chips) or 'bootstrap';
    every interval records the method it used ("interval")."""
    return _jsonable({
        "store": str(results.path),
        "schema_version": results.schema_version,
        "mcelsim_version": results.mcelsim_version,
        "analysis": {
            "confidence": confidence,
            "max_drop_pp": max_drop_pp,
            "interval": (f"two-sided {confidence:.0%} Student-t interval over chips, BCa "
                         "bootstrap where a Shapiro-Wilk test rejects normality"
                         if interval == "t" else
                         f"two-sided {confidence:.0%} BCa bootstrap interval over chips"),
            "interval_method": interval,
            "safe_rule": (
                "lowest safe point: scanning from the nominal point towards the harsher "
                "knob values, the last point before the first one whose one-sided "
                f"{confidence:.0%} upper confidence bound of the mean accuracy drop (paired "
                f"per chip against the nominal point) reaches {max_drop_pp:g} pp"
            ),
            "energy_saving": "1 - E(point) / E(nominal), from the store's relative energy",
        },
        "models": [_model_entry(results, h) for h in results.models],
        "campaigns": [_campaign_summary(results, c, max_drop_pp, confidence, interval)
                      for c in results.campaigns],
        "protection_comparisons": [
            protection_comparison(results, g, max_drop_pp=max_drop_pp, confidence=confidence,
                                  interval=interval)
            for g in comparison_groups(results)],
    })


# ---- HTML ----------------------------------------------------------------------------


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _num(x, fmt: str = ".4g", none: str = "–") -> str:
    return none if x is None else format(x, fmt)


def _ber(x) -> str:
    if x is None:
        return "–"
    return "0" if x == 0 else f"{x:.2e}"


def _pm(mean, half, digits: int = 2) -> str:
    if mean is None:
        return "–"
    if half is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _boot(entry: dict | None, key: str = "interval") -> str:
    """A dagger after a number whose interval or bound is a BCa bootstrap."""
    return " †" if entry and entry.get(key) == "bootstrap" else ""


_DAGGER_NOTE = ("† BCa bootstrap (a Shapiro-Wilk test rejected normal chips, or --interval "
                "bootstrap); unmarked: Student-t.")


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _knob_head(c: dict) -> str:
    p = c["profile"]
    if p is None:
        return "knob"
    if p["iid"]:
        return "BER (knob)"
    return f"{p['knob_name']} ({p['knob_unit']})" if p["knob_unit"] else p["knob_name"]


def _describe(c: dict) -> str:
    """One sentence saying what the campaign is."""
    p, s, n = c["profile"], c["settings"], len(c["points"])
    models = ", ".join(m["label"] for m in c["models"])
    if c["kind"] == "sensitivity":
        ber = c["points"][0]["ber"] if c["points"] else None
        what = f"Per-layer and per-bit sensitivity at BER {_ber(ber)}"
    elif p is not None and not p["iid"]:
        ks = [pt["knob"] for pt in c["points"] if pt["knob"] is not None]
        rng = f" from {min(ks):.4g} to {max(ks):.4g} {p['knob_unit']}" if ks else ""
        what = f"Sweep of {p['knob_name']} on {p['name']}{rng} ({n} points)"
    else:
        bs = [pt["ber"] for pt in c["points"] if pt["ber"] is not None]
        rng = f" from {_ber(min(bs))} to {_ber(max(bs))}" if bs else ""
        what = f"i.i.d. bit-error sweep{rng} ({n} points)"
    return (f"{what}; {s['chips']} chips; {s['encoding'] or '?'} encoding; models: "
            f"{models or 'none yet'}.")


def _figure_html(fig: dict, out_dir: Path, embed: bool) -> str:
    path = Path(fig["path"])
    caption = _e(fig["caption"])
    ext = path.suffix.lstrip(".")
    mime = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}[ext]
    if embed:
        src = f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    else:
        src = _e(path.relative_to(out_dir).as_posix() if path.is_relative_to(out_dir)
                 else path.as_posix())
    if ext == "pdf":
        media = (f'<object data="{src}" type="application/pdf" width="100%" height="480">'
                 f'<a href="{src}">{_e(path.name)}</a></object>')
    else:
        media = f'<img src="{src}" alt="{_e(fig["name"])}">'
    return f"<figure>{media}<figcaption>{caption}</figcaption></figure>"


def _section(c: dict, out_dir: Path, embed: bool, confidence: float) -> str:
    conf = f"{confidence:.0%}".replace("%", "\u202f%")
    parts = []
    cid = _e(c["campaign_id"])
    parts.append(f'<section id="{cid}"><h2>Campaign {cid} <span class="kind">{_e(c["kind"])}'
                 "</span></h2>")
    p = c["profile"]
    s = c["settings"]
    parts.append(f'<p class="lead">{_e(_describe(c))}</p>')
    if p is not None:
        flag = ('<span class="flag">illustrative</span>' if p["illustrative"]
                else '<span class="ok">sourced</span>')
        if p["iid"]:
            prof_rows = [["profile", "i.i.d. bit errors (knob = per-bit error rate)"]]
        else:
            unit = p["knob_unit"]
            prof_rows = [
                ["profile", f"{_e(p['name'])} ({_e(p['technology'])}) {flag}"],
                ["knob", f"{_e(p['knob_name'])} in {_e(unit) or 'no unit'}; nominal "
                         f"{_num(p['knob_nominal'])} {_e(unit)}, range {_num(p['knob_min'])}"
                         f"–{_num(p['knob_max'])} {_e(unit)}; harsher = {_e(p['knob_harsher'])}"],
                ["citation", _e(p["citation"] or "none recorded")],
            ]
            if p.get("description"):
                prof_rows.append(["description", _e(p["description"])])
            if p.get("provenance"):
                prof_rows.append(["provenance", _e(", ".join(
                    f"{k}: {v}" for k, v in p["provenance"].items()))])
    else:
        prof_rows = [["profile", "not recorded"]]
    set_rows = [
        ["encoding", _e(s["encoding"] or "–")], ["layout", _e(s["layout"] or "–")],
        ["protect", _e(s["protect"] or "none")],
        ["protection code", _e(s.get("protection") or "none") + "".join(
            f"; {_e(m)}: {v:.4g} cells per data cell"
            for m, v in (s.get("cell_overhead") or {}).items() if v != 1.0)],
        ["include biases", "yes" if s["include_biases"] else "no"],
        ["chips", f"{s['chips']}"], ["seed", _e(s["seed"])],
        ["dataset", f"{_e(s['dataset'] or '–')}, {_e(s['n_images'])} images"],
        ["mcelsim versions", _e(", ".join(s["versions"]) or "–")],
        ["created", _e(c["created"] or "–")],
    ]
    parts.append('<div class="cols">' + _table(["", ""], prof_rows, "kv")
                 + _table(["setting", "value"], set_rows, "kv") + "</div>")

    # Models: clean accuracy and margins.
    mrows = []
    for m in c["models"]:
        ref = m.get("reference_accuracy")
        loss = m.get("loss") or "–"
        if m.get("inject_ber"):
            loss += f" + injected BER {m['inject_ber']:g}"
        mrows.append([
            _e(m["label"]), _e(m.get("arch") or "–"), _e(loss), _num(m.get("margin"), "g"),
            _e(m.get("weight_bits") or "–"), _num(m.get("clean_accuracy_pct"), ".2f"),
            _num(m.get("clean_mean_margin"), ".3g"), _num(m.get("reference_mean_margin"), ".3g"),
            _pm(ref["mean_pct"], ref["half_width_pct"]) if ref else "–",
        ])
    parts.append("<h3>Models</h3>" + _table(
        ["model", "arch", "loss", "margin m", "weight bits", "clean accuracy (%)",
         "clean mean logit margin", "mean margin at reference point",
         "accuracy at reference point (%)"], mrows))

    # Safe points.
    if c["safe_points"]:
        srows = []
        unit = p["knob_unit"] if p else ""
        for sp in c["safe_points"]:
            fu = sp["first_unsafe"]
            srows.append([
                _e(sp["model"]),
                f"{_num(sp['knob'])} {_e(unit)}" if sp["found"] else
                '<span class="flag">none harsher than the reference</span>',
                _ber(sp["ber"]), _num(sp["drop_mean_pp"], ".2f"),
                _num(sp["drop_upper_pp"], ".2f") + _boot(sp, "bound"),
                "–" if sp["energy_saving_pct"] is None else f"{sp['energy_saving_pct']:.1f} %",
                "–" if fu is None else f"{_num(fu['knob'])} (upper bound "
                                       f"{_num(fu['drop_upper_pp'], '.2f')} pp"
                                       f"{_boot(fu, 'bound')})",
                _e(sp["reference"]),
            ])
        sp0 = c["safe_points"][0]
        parts.append(
            f"<h3>Lowest safe operating point (drop &lt; {sp0['max_drop_pp']:g} pp at "
            f"{sp0['confidence']:.0%} confidence)</h3>" + _table(
                ["model", _knob_head(c), "BER", "mean drop (pp)", "upper bound of drop (pp)",
                 "energy saved vs nominal (net of check cells)", "first unsafe point",
                 "reference"], srows)
            + f"<p class=note>{_DAGGER_NOTE}</p>")

    # Per-point accuracy.
    labels = [m["label"] for m in c["models"] if any(m["label"] in pt["models"]
                                                    for pt in c["points"])]
    if labels and c["points"]:
        prow = []
        for pt in c["points"]:
            cells = [str(pt["point_index"]), _num(pt["knob"]), _ber(pt["ber"]),
                     _num(pt["energy"], ".3f")]
            for lab in labels:
                e = pt["models"].get(lab)
                cells.append("–" if e is None else
                             f"{_pm(e['mean_pct'], e['half_width_pct'])}{_boot(e)} "
                             f"<small>(n={e['n']})</small>")
            prow.append(cells)
        parts.append(
            f"<h3>Accuracy per operating point (%, mean ± {conf} interval half-width over "
            "chips)</h3>"
            + _table(["#", _knob_head(c), "BER", "rel. energy"] + labels, prow, "num")
            + f"<p class=note>{_DAGGER_NOTE}</p>")

    # Paired differences.
    for pair in c["paired_differences"]:
        drows = []
        for r in pair["points"]:
            ratio = (r["unpaired_half_width_pp"] / r["half_width_pp"]
                     if r["half_width_pp"] and r["unpaired_half_width_pp"] else None)
            drows.append([
                str(r["point_index"]), _num(r["knob"]), _ber(r["ber"]),
                _pm(r["mean_pp"], r["half_width_pp"]),
                f"[{_num(r['ci_low_pp'], '.2f')}, {_num(r['ci_high_pp'], '.2f')}]{_boot(r)}",
                _num(r["unpaired_half_width_pp"], ".2f"),
                "–" if ratio is None else f"{ratio:.1f}×", str(r["n"]),
            ])
        parts.append(
            f"<h3>Paired difference {_e(pair['a'])} − {_e(pair['b'])} (pp, same chips)</h3>"
            "<p class=note>Both models were evaluated on the same chip seeds (common random "
            "numbers); the interval is over the per-chip differences. The independent "
            f"(Welch) half-width is shown to compare. {_DAGGER_NOTE}</p>"
            + _table(["#", _knob_head(c), "BER", "mean diff ± half-width", "CI",
                      "independent half-width", "narrower by", "chips"], drows, "num"))

    # Sensitivity.
    for target, rows in c["sensitivity"].items():
        srows = [[_e(r["model"]), _e(r["name"]), _ber(r["ber"]),
                  _pm(r["mean_pp"], r["half_width_pp"]) + _boot(r),
                  _pm(r["accuracy_mean_pct"], r["accuracy_half_width_pct"]), str(r["n"])]
                 for r in rows]
        what = "layer" if target == "layer" else "bit position (0 = LSB)"
        parts.append(f"<h3>Sensitivity per {_e(what)}</h3>" + _table(
            ["model", target, "BER", "accuracy drop vs clean (pp)", "accuracy (%)", "chips"],
            srows, "num"))

    figs = c.get("figures", [])
    if figs:
        parts.append("<h3>Figures</h3>" + "".join(_figure_html(f, out_dir, embed) for f in figs))
    parts.append("</section>")
    return "\n".join(parts)


def render_html(content: dict, out_dir: Path, *, embed: bool = False) -> str:
    """The report page for `content` (from `summarize`, with 'figures' per campaign)."""
    template = Template(
        resources.files("analysis").joinpath("templates/report.html").read_text("utf-8"))
    a = content["analysis"]
    toc = "".join(f'<li><a href="#{_e(c["campaign_id"])}">{_e(c["campaign_id"])}</a> '
                  f'({_e(c["kind"])})</li>' for c in content["campaigns"])
    sections = "\n".join(_section(c, out_dir, embed, a["confidence"])
                         for c in content["campaigns"])
    sections = "\n".join([comparison_html(p, out_dir, embed)
                          for p in content.get("protection_comparisons", [])] + [sections])
    return template.substitute(
        title=_e(f"mcelsim report — {Path(content['store']).name}"),
        store=_e(content["store"]),
        mcelsim_version=_e(content["mcelsim_version"] or "unknown"),
        schema_version=_e(content["schema_version"]),
        interval=_e(a["interval"]),
        safe_rule=_e(a["safe_rule"]),
        energy_rule=_e(a["energy_saving"]),
        toc=toc,
        sections=sections,
    )


@dataclass(frozen=True)
class Report:
    """What `write_report` produced."""

    html_path: Path
    json_path: Path
    content: dict  # the JSON content (same as --json)


def write_report(
    results: Results,
    out_dir: str | Path,
    *,
    fmt: str = "png",
    max_drop_pp: float = 1.0,
    confidence: float = 0.95,
    embed: bool = False,
    interval: str = "t",
) -> Report:
    """Draw the figures into `out_dir` and write `report.html` and `report.json` there."""
    from analysis.plots import save_figures  # matplotlib only when figures are drawn

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    content = summarize(results, max_drop_pp=max_drop_pp, confidence=confidence,
                        interval=interval)  # fmt: skip
    sps = {c.campaign_id: safe_points(results, c, max_drop_pp=max_drop_pp,
                                      confidence=confidence, interval=interval)
           for c in results.campaigns}  # fmt: skip
    figs = save_figures(results, out, fmt=fmt, confidence=confidence, safe_points=sps,
                        interval=interval)  # fmt: skip
    for c in content["campaigns"]:
        c["figures"] = [
            {"name": f.name, "path": f.path.name, "caption": f.caption}
            for f in figs if f.campaign_id == c["campaign_id"]
        ]
    for cmp, group in zip(content["protection_comparisons"], comparison_groups(results)):
        from analysis.plots import _metadata, _safe_name, _style
        from analysis.protection import plot_protection

        path = out / f"protection_{_safe_name(cmp['profile'])}_{cmp['campaigns'][0]}.{fmt}"
        with _style():
            plot_protection(results, group, confidence=confidence).savefig(
                path, format=fmt, metadata=_metadata(fmt))
        cmp["figure"] = {"name": path.stem, "path": path.name, "caption": (
            "Accuracy vs operating point per training method and protection code, same "
            f"chips; bands: {confidence:.0%} t-interval over chips.")}
    page_content = json.loads(json.dumps(content))
    for cmp in page_content["protection_comparisons"]:
        cmp["figure"]["path"] = str(out / cmp["figure"]["path"])
    for c in page_content["campaigns"]:
        for f in c["figures"]:
            f["path"] = str(out / f["path"])
    html_path = out / REPORT_NAME
    html_path.write_text(render_html(page_content, out, embed=embed), encoding="utf-8")
    json_path = out / JSON_NAME
    json_path.write_text(json.dumps(content, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return Report(html_path, json_path, content)
