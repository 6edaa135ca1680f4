"""Every figure renders from the synthetic store, with the curves, bands and axes it promises."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from store_fixture import CE, MCEL, make_store

from analysis.plots import (
    campaign_figures,
    model_styles,
    plot_accuracy_vs_ber,
    plot_accuracy_vs_knob,
    plot_margins,
    plot_sensitivity,
    save_figures,
)
from analysis.report import safe_points
from analysis.results import load_results


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store") / "results.db")


@pytest.fixture(scope="module")
def results(store):
    return load_results(store.path)


def _camp(results, cid):
    return next(c for c in results.campaigns if c.campaign_id == cid)


def _model_lines(ax):
    return [ln for ln in ax.get_lines() if ln.get_label() in (CE.label, MCEL.label)]


def _bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_styles_tell_ce_from_mcel(results):
    st = model_styles(results, [CE.model_hash, MCEL.model_hash])
    ce, mc = st[CE.model_hash], st[MCEL.model_hash]
    assert ce.colour != mc.colour and ce.linestyle != mc.linestyle and ce.marker != mc.marker
    assert (ce.family, mc.family) == ("ce", "mcel")


def test_accuracy_vs_knob(results, store):
    camp = _camp(results, store.knob_campaign)
    sps = safe_points(results, camp)
    fig = plot_accuracy_vs_knob(results, camp, safe_points=sps)
    ax, ax2 = fig.axes[0], fig.axes[1]
    lines = _model_lines(ax)
    assert len(lines) == 2  # one curve per model
    assert all(len(ln.get_xdata()) == len(camp.points) for ln in lines)
    assert len(_bands(ax)) == 2  # one confidence band per model
    assert ax2.get_yscale() == "log" and "bit error rate" in ax2.get_ylabel()  # secondary axis
    assert "(V)" in ax.get_xlabel() and "%" in ax.get_ylabel()
    ber_line = ax2.get_lines()[0]
    np.testing.assert_allclose(np.sort(ber_line.get_xdata()), np.sort(camp.points.knob))
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert len(stars) == 2 and {s.get_xdata()[0] for s in stars} == {
        sps[CE.model_hash].knob, sps[MCEL.model_hash].knob}
    # mean curve is the chip mean in percent
    order = np.argsort(camp.points.knob)
    ce = next(ln for ln in lines if ln.get_label() == CE.label)
    np.testing.assert_allclose(
        ce.get_ydata(), 100 * np.nanmean(camp.samples[CE.model_hash].accuracy[order], axis=1))
    assert fig.legends  # legend present


def test_accuracy_vs_ber_log_axis_and_zero_panel(results, store):
    camp = _camp(results, store.ber_campaign)
    sps = safe_points(results, camp)
    fig = plot_accuracy_vs_ber(results, camp, safe_points=sps)
    ax0, ax = fig.axes
    stars = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_marker() == "*")
    assert stars == sorted(sp.ber for sp in sps.values() if sp.row is not None and sp.ber > 0)
    assert stars  # the fixture's MCEL model is safe beyond BER 0
    assert ax.get_xscale() == "log"
    assert len(_model_lines(ax)) == 2 and len(_bands(ax)) == 2
    assert all(np.all(ln.get_xdata() > 0) for ln in _model_lines(ax))
    assert [t.get_text() for t in ax0.get_xticklabels()] == ["0"]  # the clean point
    assert len(ax0.containers) == 2  # one error bar per model at BER 0
    assert ax.get_legend() is not None


def test_accuracy_vs_ber_without_zero_point(results, store):
    camp = _camp(results, store.knob_campaign)  # SRAM sweep: every BER > 0
    fig = plot_accuracy_vs_ber(results, camp)
    assert len(fig.axes) == 1 and fig.axes[0].get_xscale() == "log"
    assert len(_model_lines(fig.axes[0])) == 2


def test_margins_histogram_and_violins(results, store):
    camp = _camp(results, store.knob_campaign)
    fig = plot_margins(results, camp)
    ax_h, ax_v = fig.axes
    assert len(ax_h.patches) >= 4  # step + filled histogram per model
    assert {t.get_text().split(" (")[0] for t in ax_h.get_legend().get_texts()} >= {
        CE.label, MCEL.label}
    bodies = [c for c in ax_v.collections if isinstance(c, PolyCollection)]
    assert len(bodies) == 2 * 2  # 2 models x 2 points with margins
    assert plot_margins(results, _camp(results, store.sensitivity_campaign)) is None


@pytest.mark.parametrize("target,names", [("layer", ["conv1", "conv2", "fc1", "fc2"]),
                                          ("bit", ["0", "1", "2", "3"])])
def test_sensitivity_bars(results, store, target, names):
    camp = _camp(results, store.sensitivity_campaign)
    fig = plot_sensitivity(results, camp, target)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert len(ax.patches) == 2 * len(names)  # one bar per model and name
    assert "pp" in ax.get_ylabel()
    heights = np.array([p.get_height() for p in ax.patches[: len(names)]])  # first model
    sens = camp.sensitivity[CE.model_hash][target]
    np.testing.assert_allclose(heights, 100 * (CE.clean_accuracy - sens.accuracy.mean(axis=1)))
    full = [ln for ln in ax.get_lines() if ln.get_label().endswith(f"all {target}s at once")]
    assert len(full) == 2  # reference line per model: every layer / bit at once
    assert full[0].get_ydata()[0] == pytest.approx(
        100 * (CE.clean_accuracy - np.mean(camp.samples[CE.model_hash].accuracy[0])))
    assert plot_sensitivity(results, _camp(results, store.knob_campaign), target) is None


def test_campaign_figures_pick_what_applies(results, store):
    names = {c.campaign_id: set(campaign_figures(results, c)) for c in results.campaigns}
    assert names[store.knob_campaign] == {"accuracy_vs_knob", "accuracy_vs_ber", "margins"}
    assert names[store.ber_campaign] == {"accuracy_vs_ber", "margins"}
    assert names[store.sensitivity_campaign] == {"sensitivity_layer", "sensitivity_bit"}


@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_save_figures_writes_files(store, tmp_path, fmt, magic):
    res = load_results(store.path, campaign=store.ber_campaign)
    files = save_figures(res, tmp_path, fmt=fmt)
    assert {f.name for f in files} == {"accuracy_vs_ber", "margins"}
    for f in files:
        assert f.path.suffix == f".{fmt}" and f.path.read_bytes()[:5].startswith(magic[:4])
    with pytest.raises(ValueError):
        save_figures(res, tmp_path, fmt="gif")


def test_knob_plot_when_higher_is_harsher(tmp_path):
    """A refresh-interval-like knob: harsher = 'higher'; the arrow and the safe point follow."""
    fx = make_store(tmp_path / "r.db", n_chips=3)
    con = sqlite3.connect(fx.path)
    con.execute("UPDATE profiles SET knob_harsher='higher', knob_nominal=0.65, knob_name="
                "'refresh interval', knob_unit='s' WHERE profile_hash='p-sram'")
    con.commit()
    con.close()
    res = load_results(fx.path, campaign=fx.knob_campaign)
    camp = res.campaigns[0]
    sps = safe_points(res, camp)
    # accuracy only rises above 0.65 in this data: every point is safe, the answer is the top
    assert {sp.knob for sp in sps.values()} == {0.9}
    fig = plot_accuracy_vs_knob(res, camp, safe_points=sps)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "harsher →" in texts and "nominal" in texts
    assert fig.axes[0].get_xlabel() == "refresh interval (s)"
