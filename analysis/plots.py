"""Figures of a results store: accuracy vs knob and vs BER with chip confidence bands,
logit-margin distributions, per-layer and per-bit sensitivity.

Uses matplotlib's object API (`Figure`, no pyplot state, no backend switch), so it is
safe in scripts, tests and threads. Every function returns a `Figure`; `save_figures`
writes them. Accuracy is shown in percent, bands are two-sided t-intervals over chips.
Palette: Okabe-Ito (colour-blind safe); CE-trained models are drawn dashed with circles,
MCEL-trained models solid with squares, so the two stay apart in grey-scale too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

from analysis.results import Campaign, Results
from analysis.safe_point import SafePoint, reference_row
from memory_models.stats import interval as chip_interval

# Okabe & Ito (2008) colour-blind safe palette, split by loss family.
_OKABE = {
    "black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7",
}
_FAMILY_COLOURS = {
    "ce": ("vermillion", "orange", "purple"),
    "mcel": ("blue", "green", "sky"),
    "other": ("black", "purple", "yellow", "orange", "sky"),
}
_FAMILY_STYLE = {"ce": ("--", "o"), "mcel": ("-", "s"), "mhl": ("-.", "^"), "other": (":", "D")}
BER_COLOUR = "#707070"

RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "legend.fontsize": 9,
    "legend.framealpha": 0.9,
    "axes.spines.top": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.8,
    "lines.markersize": 5,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
}
FORMATS = ("png", "svg", "pdf")


@contextmanager
def _style():
    with mpl.rc_context(RC):
        yield


@dataclass(frozen=True)
class ModelStyle:
    """How one model is drawn in every figure."""

    label: str
    colour: str
    linestyle: str
    marker: str
    family: str  # 'ce', 'mcel', 'mhl' or 'other'


def model_styles(results: Results, hashes: Sequence[str]) -> dict[str, ModelStyle]:
    """Consistent colour / line / marker per model (by loss family, then store order)."""
    labels = results.labels()
    used: dict[str, int] = {}
    out = {}
    for h in hashes:
        info = results.models.get(h)
        loss = info.loss if info is not None else ""
        family = loss if loss in ("ce", "mcel", "mhl") else "other"
        colours = _FAMILY_COLOURS.get(family, _FAMILY_COLOURS["other"])
        k = used.get(family, 0)
        used[family] = k + 1
        ls, marker = _FAMILY_STYLE[family]
        out[h] = ModelStyle(
            labels.get(h, h[:8]), _OKABE[colours[k % len(colours)]], ls, marker, family
        )
    return out


def _knob_label(campaign: Campaign) -> str:
    prof = campaign.profile
    if prof is None:
        return "knob"
    name = prof.knob_name.replace("_", " ")
    return f"{name} ({prof.knob_unit})" if prof.knob_unit else name


def _title(campaign: Campaign, what: str) -> str:
    prof = campaign.profile
    where = ""
    if prof is not None and not prof.is_iid:
        where = f" — {prof.name}" + (" (illustrative profile)" if prof.illustrative else "")
    elif prof is not None:
        where = " — i.i.d. bit errors"
    return f"{what}{where}\ncampaign {campaign.campaign_id}, {campaign.n_chips} chips, " \
        f"{campaign.encoding or '?'} encoding"


def _summary(matrix: np.ndarray, confidence: float,
             method: str = "t") -> tuple[np.ndarray, ...]:  # fmt: skip
    ivs = [chip_interval(row, confidence, method) for row in np.asarray(matrix, np.float64)]
    mean = np.array([i.mean for i in ivs]) * 100.0
    lo = np.array([i.low for i in ivs]) * 100.0
    hi = np.array([i.high for i in ivs]) * 100.0
    return mean, lo, hi


def _band_note(confidence: float, method: str = "t") -> str:
    if method == "bootstrap":
        return f"bands: {confidence:.0%} BCa bootstrap interval over chips"
    return f"bands: {confidence:.0%} t-interval over chips (bootstrap where not normal)"


def plot_accuracy_vs_knob(
    results: Results,
    campaign: Campaign,
    *,
    confidence: float = 0.95,
    safe_points: dict[str, SafePoint] | None = None,
    interval: str = "t",
) -> Figure:
    """Accuracy (%) vs the profile's knob, one curve + band per model, BER on a right axis.

    The lowest safe point of each model (if given) is marked with a star.
    """
    pts = campaign.points
    order = np.argsort(pts.knob, kind="stable")
    x = pts.knob[order]
    styles = model_styles(results, list(campaign.samples))
    unit = f" {campaign.profile.knob_unit}" if campaign.profile and campaign.profile.knob_unit \
        else ""
    with _style():
        fig = Figure(figsize=(7.0, 5.0), layout="constrained")
        ax = fig.add_subplot()
        ax2 = ax.twinx()
        ax2.grid(False)
        ax2.spines["top"].set_visible(False)
        ber = pts.ber[order]
        pos = np.isfinite(ber) & (ber > 0)
        ber_line = None
        if pos.any():
            (ber_line,) = ax2.plot(
                x[pos], ber[pos], color=BER_COLOUR, ls=":", marker=".", lw=1.3,
                label="bit error rate (right axis)", zorder=1,
            )
            ax2.set_yscale("log")
        ax2.set_ylabel("bit error rate (per bit)", color=BER_COLOUR)
        ax2.tick_params(axis="y", colors=BER_COLOUR, which="both")
        ax.set_zorder(ax2.get_zorder() + 1)  # accuracy curves in front of the BER curve
        ax.patch.set_visible(False)
        for h, s in campaign.samples.items():
            st = styles[h]
            mean, lo, hi = _summary(s.accuracy[order], confidence, interval)
            ax.fill_between(x, lo, hi, color=st.colour, alpha=0.2, lw=0)
            ax.plot(x, mean, color=st.colour, ls=st.linestyle, marker=st.marker, label=st.label)
            sp = (safe_points or {}).get(h)
            if sp is not None and sp.row is not None:
                y = mean[np.flatnonzero(order == sp.row)[0]]
                saving = ("" if sp.energy_saving is None
                          else f" (−{sp.energy_saving:.0%} energy)")
                ax.plot(
                    [sp.knob], [y], marker="*", ms=15, color=st.colour, mec="black", mew=0.6,
                    ls="none", zorder=5,
                    label=f"{st.label} safe to {sp.knob:.4g}{unit}{saving}",
                )
        prof = campaign.profile
        if prof is not None and math.isfinite(prof.knob_nominal):
            ax.axvline(prof.knob_nominal, color="black", lw=0.9, ls="-.", alpha=0.6)
            ax.annotate(
                "nominal", (prof.knob_nominal, 0.5), xycoords=("data", "axes fraction"),
                xytext=(-3, 0), textcoords="offset points", ha="right", va="center",
                rotation=90, fontsize=8.5,
            )
            arrow = "← harsher" if prof.knob_harsher == "lower" else "harsher →"
            ax.annotate(
                arrow, (0.02 if prof.knob_harsher == "lower" else 0.98, 0.02),
                xycoords="axes fraction", ha="left" if prof.knob_harsher == "lower" else "right",
                va="bottom", fontsize=8.5, color="0.3",
            )
        ax.set_xlabel(_knob_label(campaign))
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(_title(campaign, "Accuracy vs operating point"))
        handles, labels = ax.get_legend_handles_labels()
        if ber_line is not None:
            handles.append(ber_line)
            labels.append(ber_line.get_label())
        title = _band_note(confidence, interval)
        done = [sp for sp in (safe_points or {}).values() if sp.row is not None]
        if done:
            title += (f"; ★ lowest safe point: drop < {done[0].max_drop_pp:g} pp "
                      f"at {done[0].confidence:.0%} confidence")
        fig.legend(handles, labels, loc="outside lower center", ncols=2, title=title,
                   title_fontsize=8.5, frameon=False)
    return fig


def _break_marks(ax_left, ax_right) -> None:
    """Diagonal marks where the x axis is broken between the zero panel and the log axis."""
    d = 0.012
    kw = {"color": "k", "clip_on": False, "lw": 0.9}
    ax_left.plot([1 - 4 * d, 1 + 4 * d], [-d, d], transform=ax_left.transAxes, **kw)
    ax_right.plot([-d, d], [-d, d], transform=ax_right.transAxes, **kw)


def plot_accuracy_vs_ber(
    results: Results,
    campaign: Campaign,
    *,
    confidence: float = 0.95,
    safe_points: dict[str, SafePoint] | None = None,
    interval: str = "t",
) -> Figure:
    """Accuracy (%) vs bit error rate on a log x axis, one curve + band per model.

    Zero-BER points (the clean reference) cannot sit on a log axis: they are drawn in a
    narrow panel at "0" left of a broken axis, with their chip interval as error bars.
    The lowest safe point of each model (if given) is marked with a star.
    """
    pts = campaign.points
    ber = pts.ber
    order = np.argsort(ber, kind="stable")
    order = order[np.isfinite(ber[order])]
    zero = order[ber[order] == 0.0][:1]  # one clean point is enough (all are fault-free)
    pos = order[ber[order] > 0.0]
    styles = model_styles(results, list(campaign.samples))
    with _style():
        fig = Figure(figsize=(7.0, 4.4), layout="constrained")
        if zero.size:
            gs = fig.add_gridspec(1, 2, width_ratios=(1, 9), wspace=0.0)
            ax0 = fig.add_subplot(gs[0])
            ax = fig.add_subplot(gs[1], sharey=ax0)
        else:
            ax0 = None
            ax = fig.add_subplot()
        for h, s in campaign.samples.items():
            st = styles[h]
            mean, lo, hi = _summary(s.accuracy[pos], confidence, interval)
            ax.fill_between(ber[pos], lo, hi, color=st.colour, alpha=0.2, lw=0)
            ax.plot(ber[pos], mean, color=st.colour, ls=st.linestyle, marker=st.marker,
                    label=st.label)
            sp = (safe_points or {}).get(h)
            if sp is not None and sp.row is not None and sp.row in pos:
                y = mean[np.flatnonzero(pos == sp.row)[0]]
                ax.plot([ber[sp.row]], [y], marker="*", ms=15, color=st.colour, mec="black",
                        mew=0.6, ls="none", zorder=5,
                        label=f"{st.label} safe to BER {ber[sp.row]:.2g}")
            if ax0 is not None:
                m0, lo0, hi0 = _summary(s.accuracy[zero], confidence, interval)
                err = np.nan_to_num(np.array([[m0[0] - lo0[0]], [hi0[0] - m0[0]]]))
                ax0.errorbar([0.0], m0, yerr=err, color=st.colour, marker=st.marker, ls="none",
                             capsize=3)
        ax.set_xscale("log")
        if pos.size:
            ax.set_xlim(ber[pos].min() / 1.6, ber[pos].max() * 1.6)
        ax.set_xlabel("bit error rate (per bit, log scale)")
        if ax0 is not None:
            ax0.set_xlim(-1.0, 1.0)
            ax0.set_xticks([0.0], ["0"])
            ax0.set_ylabel("test accuracy (%)")
            ax0.spines["right"].set_visible(False)
            ax0.spines["top"].set_visible(False)
            ax.spines["left"].set_visible(False)
            ax.tick_params(axis="y", which="both", left=False, labelleft=False)
            ax0.grid(True, axis="y")
            ax0.grid(False, axis="x")
            ax0.set_title("clean", fontsize=8.5)
            _break_marks(ax0, ax)
        else:
            ax.set_ylabel("test accuracy (%)")
        ax.set_title(_title(campaign, "Accuracy vs bit error rate"))
        title = _band_note(confidence, interval)
        done = [sp for sp in (safe_points or {}).values() if sp.row is not None]
        if done:
            title += f"\n★ lowest safe point: drop < {done[0].max_drop_pp:g} pp"
        ax.legend(loc="lower left", title=title, title_fontsize=8.5)
    return fig


def _margin_points(campaign: Campaign) -> list[int]:
    """Point indices that hold margins, the clean/nominal one first, at most four."""
    have = sorted({p for (_, p, _) in campaign.margins})
    if not have:
        return []
    ref = None
    if campaign.profile is not None and len(campaign.points):
        row = reference_row(campaign.points.knob, campaign.points.ber,
                            campaign.profile.knob_nominal)
        ref = None if row is None else int(campaign.points.point_index[row])
    first = ref if ref in have else have[0]
    rest = [p for p in have if p != first]
    if len(rest) > 3:  # spread the others over the sweep (in BER order)
        def ber_of(p: int) -> float:
            try:
                b = campaign.points.ber[campaign.points.row(p)]
            except KeyError:
                return math.inf
            return float(b) if np.isfinite(b) else math.inf

        rest.sort(key=ber_of)
        rest = [rest[int(round(i))] for i in np.linspace(0, len(rest) - 1, 3)]
    return [first] + rest


def _margins_of(campaign: Campaign, model_hash: str, point: int) -> np.ndarray | None:
    chips = sorted(c for (h, p, c) in campaign.margins if h == model_hash and p == point)
    if not chips:
        return None
    m = campaign.margins[(model_hash, point, chips[0])]
    return m[np.isfinite(m)]


def _point_name(campaign: Campaign, point: int) -> str:
    try:
        row = campaign.points.row(point)
    except KeyError:
        return f"point {point}"
    prof = campaign.profile
    ber = campaign.points.ber[row]
    if prof is not None and not prof.is_iid:
        unit = f" {prof.knob_unit}" if prof.knob_unit else ""
        return f"{campaign.points.knob[row]:.4g}{unit}\nBER {ber:.2g}"
    return f"BER {ber:.2g}" if ber > 0 else "clean (BER 0)"


def plot_margins(results: Results, campaign: Campaign) -> Figure | None:
    """Logit-margin distributions per model: histogram at the clean point, violins per point.

    Margin = true-class logit minus the best other logit (float logit units); negative
    means misclassified. Uses the first chip that has margins at each point. None if the
    campaign stored no margins.
    """
    points = _margin_points(campaign)
    if not points:
        return None
    hashes = [h for h in campaign.model_hashes if any(k[0] == h for k in campaign.margins)]
    styles = model_styles(results, hashes)
    with _style():
        fig = Figure(figsize=(10.0, 4.2), layout="constrained")
        ax_h, ax_v = fig.subplots(1, 2, width_ratios=(1, 1.25))
        clean = {h: _margins_of(campaign, h, points[0]) for h in hashes}
        clean = {h: m for h, m in clean.items() if m is not None and m.size}
        if clean:
            allm = np.concatenate(list(clean.values()))
            lo, hi = np.percentile(allm, [0.5, 99.5])
            bins = np.linspace(min(lo, 0.0), hi, 60)
            for h, m in clean.items():
                st = styles[h]
                ax_h.hist(m, bins=bins, density=True, histtype="step", color=st.colour,
                          ls=st.linestyle, lw=1.8, label=f"{st.label} (mean {m.mean():.3g})")
                ax_h.hist(m, bins=bins, density=True, histtype="stepfilled", color=st.colour,
                          alpha=0.12)
            ax_h.axvline(0.0, color="black", lw=0.9, ls="-.",
                         label="margin 0 (left of it: misclassified)")
            ax_h.legend(loc="upper right")
        ax_h.set_xlabel("logit margin (true − best other logit)")
        ax_h.set_ylabel("density")
        ax_h.set_title(f"Margin distribution, {_point_name(campaign, points[0])}".replace(
            "\n", ", "))
        n = len(hashes)
        width = 0.8 / max(n, 1)
        for k, h in enumerate(hashes):
            st = styles[h]
            data, pos = [], []
            for j, p in enumerate(points):
                m = _margins_of(campaign, h, p)
                if m is not None and m.size > 1:
                    data.append(m)
                    pos.append(j + (k - (n - 1) / 2) * width)
            if not data:
                continue
            parts = ax_v.violinplot(data, positions=pos, widths=width * 0.95,
                                    showmedians=True, showextrema=False)
            for body in parts["bodies"]:
                body.set_facecolor(st.colour)
                body.set_edgecolor(st.colour)
                body.set_alpha(0.45)
                body.set_linestyle(st.linestyle)
            parts["cmedians"].set_color("black")
            ax_v.plot([], [], color=st.colour, lw=6, alpha=0.6, label=st.label)
        ax_v.axhline(0.0, color="black", lw=0.9, ls="-.")
        ax_v.set_xticks(range(len(points)), [_point_name(campaign, p) for p in points])
        ax_v.set_ylabel("logit margin")
        ax_v.set_title("Margins per operating point (first chip; line = median)")
        ax_v.grid(False, axis="x")
        ax_v.legend(loc="best")
        fig.suptitle(_title(campaign, "Logit margins").split("\n")[0], fontsize=11)
    return fig


def sensitivity_summary(
    results: Results, campaign: Campaign, target: str, confidence: float = 0.95,
    interval: str = "t",
) -> dict[str, dict]:
    """model_hash -> {'names', 'ber', 'drop' (list of Interval in pp), 'accuracy' (pp)}.

    Drop = the model's clean accuracy minus the accuracy with errors only in that layer /
    bit position, per chip, in percentage points (NaN if the clean accuracy is unknown).
    """
    out = {}
    for h, by_target in campaign.sensitivity.items():
        rows = by_target.get(target)
        if rows is None:
            continue
        model = results.models.get(h)
        clean = model.clean_accuracy if model is not None else math.nan
        drops = [chip_interval(100.0 * (clean - a), confidence, interval) for a in rows.accuracy]
        accs = [chip_interval(100.0 * a, confidence, interval) for a in rows.accuracy]
        # The same reads with every layer / bit exposed: the campaign's own samples.
        s = campaign.samples.get(h)
        full = s.accuracy[0] if s is not None and len(campaign.points) else np.array([])
        out[h] = {"names": rows.names, "ber": rows.ber, "drop": drops, "accuracy": accs,
                  "all_drop": chip_interval(100.0 * (clean - full), confidence, interval),
                  "all_accuracy": chip_interval(100.0 * full, confidence, interval)}
    return out


def plot_sensitivity(
    results: Results, campaign: Campaign, target: str, *, confidence: float = 0.95,
    interval: str = "t",
) -> Figure | None:
    """Grouped bars: accuracy drop (pp, vs clean) when only one layer / bit position is hit.

    target: 'layer' or 'bit'. Error bars: t-interval over chips. None if no rows.
    """
    summ = sensitivity_summary(results, campaign, target, confidence, interval)
    if not summ:
        return None
    names: list[str] = []
    for v in summ.values():
        names += [n for n in v["names"] if n not in names]
    if target == "bit":
        names.sort(key=lambda n: (0, float(n)) if re.fullmatch(r"-?\d+(\.\d+)?", n) else (1, 0))
    styles = model_styles(results, list(summ))
    use_drop = all(
        any(math.isfinite(i.mean) for i in v["drop"]) for v in summ.values()
    )
    n = len(summ)
    width = 0.8 / n
    bers = sorted({float(b) for v in summ.values() for b in v["ber"] if np.isfinite(b)})
    with _style():
        fig = Figure(figsize=(max(5.5, 1.0 + 0.75 * len(names) * max(1, n / 2)), 4.0),
                     layout="constrained")
        ax = fig.add_subplot()
        for k, (h, v) in enumerate(summ.items()):
            st = styles[h]
            ivs = dict(zip(v["names"], v["drop" if use_drop else "accuracy"]))
            xs = np.arange(len(names)) + (k - (n - 1) / 2) * width
            means = np.array([ivs[nm].mean if nm in ivs else np.nan for nm in names])
            errs = np.array([ivs[nm].half_width if nm in ivs else np.nan for nm in names])
            ax.bar(xs, means, width=width * 0.92, color=st.colour, alpha=0.85,
                   hatch="//" if st.family == "ce" else None, edgecolor="white", lw=0.5,
                   label=st.label)
            ax.errorbar(xs, means, yerr=np.nan_to_num(errs), fmt="none", ecolor="black",
                        capsize=2.5, lw=1.0)
            full = v["all_drop" if use_drop else "all_accuracy"]
            if math.isfinite(full.mean):
                ax.axhline(full.mean, color=st.colour, ls=st.linestyle, lw=1.2, alpha=0.9,
                           label=f"{st.label}: all {target}s at once")
        ax.set_xticks(range(len(names)), names)
        ax.grid(False, axis="x")
        ax.axhline(0.0, color="black", lw=0.8)
        if target == "bit":
            ax.set_xlabel("bit position of the stored weight code (0 = LSB)")
        else:
            ax.set_xlabel("layer (errors injected into this layer only)")
        ax.set_ylabel("accuracy drop vs clean (pp)" if use_drop else "test accuracy (%)")
        at = ", ".join(f"{b:.2g}" for b in bers) if bers else "?"
        what = "Per-layer" if target == "layer" else "Per-bit-position"
        n_chips = max(r[target].chip_index.size for r in campaign.sensitivity.values()
                      if target in r)
        ax.set_title(f"{what} sensitivity at BER {at}\ncampaign {campaign.campaign_id}, "
                     f"{n_chips} chips, error bars: {confidence:.0%} t-interval")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2,
                   frameon=False)
    return fig


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "campaign"


@dataclass(frozen=True)
class FigureFile:
    """One written figure."""

    campaign_id: str
    name: str  # 'accuracy_vs_knob', 'accuracy_vs_ber', 'margins', 'sensitivity_layer', ...
    path: Path
    caption: str


def campaign_figures(
    results: Results,
    campaign: Campaign,
    *,
    confidence: float = 0.95,
    safe_points: dict[str, SafePoint] | None = None,
    interval: str = "t",
) -> dict[str, tuple[Figure, str]]:
    """name -> (figure, caption) for every figure that applies to this campaign."""
    out: dict[str, tuple[Figure, str]] = {}
    has_curve = bool(campaign.samples) and len(campaign.points) > 1
    is_knob = campaign.profile is not None and not campaign.profile.is_iid
    band = _band_note(confidence, interval)
    if has_curve and is_knob:
        out["accuracy_vs_knob"] = (
            plot_accuracy_vs_knob(results, campaign, confidence=confidence,
                                  safe_points=safe_points, interval=interval),
            f"Accuracy vs operating point with the bit error rate on the right axis; {band}; "
            "stars: lowest safe point.",
        )
    if has_curve and np.isfinite(campaign.points.ber).any():
        out["accuracy_vs_ber"] = (
            plot_accuracy_vs_ber(results, campaign, confidence=confidence,
                                 safe_points=safe_points, interval=interval),
            f"Accuracy vs bit error rate (log axis; the clean point sits left of the break); "
            f"{band}.",
        )
    fig = plot_margins(results, campaign)
    if fig is not None:
        out["margins"] = (fig, "Logit-margin distributions (true-class logit minus the best "
                               "other logit); negative = misclassified.")
    for target in ("layer", "bit"):
        fig = plot_sensitivity(results, campaign, target, confidence=confidence,
                               interval=interval)
        if fig is not None:
            what = "layer" if target == "layer" else "bit position"
            out[f"sensitivity_{target}"] = (
                fig, f"Accuracy drop vs clean when only one {what} is exposed to errors; "
                     f"error {band.replace('bands: ', 'bars: ')}.")
    return out


def model_groups(results: Results, campaign: Campaign) -> list[tuple[str, Campaign]]:
    """The campaign split by the weight width of its models, as (name suffix, campaign with
    only those models' rows); one group with an empty suffix when all widths agree.

    A campaign's id does not name its models, so two runs of `simulate` with the same
    settings on 4-bit and on 2-bit models share one campaign: their curves belong in
    separate figures, as the report's tables keep them apart by label and width.
    """
    widths: dict[int | None, list[str]] = {}
    for h in campaign.model_hashes:
        info = results.models.get(h)
        widths.setdefault(info.weight_bits if info is not None else None, []).append(h)
    if len(widths) < 2:
        return [("", campaign)]
    groups = []
    for bits in sorted(widths, key=lambda b: (b is None, b or 0)):
        keep = set(widths[bits])
        part = replace(
            campaign,
            samples={h: s for h, s in campaign.samples.items() if h in keep},
            margins={k: v for k, v in campaign.margins.items() if k[0] in keep},
            sensitivity={h: v for h, v in campaign.sensitivity.items() if h in keep},
        )
        groups.append((f"_{bits}bit" if bits is not None else "_unknown_bits", part))
    return groups


def save_figures(
    results: Results,
    out_dir: str | Path,
    *,
    fmt: str = "png",
    confidence: float = 0.95,
    safe_points: dict[str, dict[str, SafePoint]] | None = None,
    interval: str = "t",
) -> list[FigureFile]:
    """Write every figure of every campaign in `results` to `out_dir` as `fmt` files.

    File names: `<campaign_id>_<figure>.<fmt>`, or `<campaign_id>_<figure>_<b>bit.<fmt>`
    per weight width when a campaign holds models of several widths (`model_groups`).
    safe_points: campaign_id -> model_hash -> SafePoint, marked on the knob plots.
    interval: 't' or 'bootstrap' bands (`memory_models.stats.interval`).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for camp in results.campaigns:
        for suffix, part in model_groups(results, camp):
            figs = campaign_figures(results, part, confidence=confidence, interval=interval,
                                    safe_points=(safe_points or {}).get(camp.campaign_id))
            for name, (fig, caption) in figs.items():
                path = out / f"{_safe_name(camp.campaign_id)}_{name}{suffix}.{fmt}"
                if suffix:
                    caption = f"{suffix.strip('_').replace('bit', '-bit')} weights. {caption}"
                with _style():
                    fig.savefig(path, format=fmt, metadata=_metadata(fmt))
                written.append(FigureFile(camp.campaign_id, name + suffix, path, caption))
    return written


def _metadata(fmt: str) -> dict | None:
    # Reproducible files: no creation date / software stamp that changes between runs.
    if fmt == "png":
        return {"Software": None}
    if fmt == "svg":
        return {"Date": None}
    if fmt == "pdf":
        return {"CreationDate": None}
    return None
