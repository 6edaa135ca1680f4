"""Report and plots: which interval each number uses (t, or BCa bootstrap where normality
fails / on request), no margin for CE models, figures per weight width."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from store_fixture import CE, MCEL, make_store

from analysis import load_results, summarize
from analysis.plots import model_groups, save_figures
from analysis.report import safe_points
from memory_models.stats import interval, normality_rejected


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "r.db", n_chips=8, n_images=500)


def _entries(content):
    """Every interval dict of a summary: per-point accuracies and paired differences."""
    for c in content["campaigns"]:
        for pt in c["points"]:
            yield from pt["models"].values()
        for pair in c["paired_differences"]:
            yield from pair["points"]


def test_every_interval_says_its_method(store):
    res = load_results(store.path)
    auto = summarize(res)
    boot = summarize(res, interval="bootstrap")
    assert "bootstrap where a Shapiro-Wilk" in auto["analysis"]["interval"]
    assert boot["analysis"]["interval_method"] == "bootstrap"
    methods = [e["interval"] for e in _entries(auto) if e["n"] > 1]
    assert set(methods) <= {"t", "bootstrap"} and "t" in methods
    assert {e["interval"] for e in _entries(boot) if e["n"] > 1 and e["std_pct" if "std_pct"
            in e else "std_pp"]} == {"bootstrap"}  # fmt: skip
    # each automatic choice is the normality test's verdict on that point's chips
    camp = res.campaigns[0]
    c0 = auto["campaigns"][0]
    for i, pt in enumerate(c0["points"]):
        for h, s in camp.samples.items():
            e = pt["models"][res.labels()[h]]
            x = 100.0 * s.accuracy[i]
            assert e["interval"] == ("bootstrap" if normality_rejected(x) else "t")
            assert e["ci_low_pct"] == pytest.approx(interval(x).low)
    for sp in c0["safe_points"]:
        assert sp["bound"] in (None, "t", "bootstrap")


def test_safe_point_bound_switches_to_the_bootstrap_on_bimodal_drops(tmp_path):
    fx = make_store(tmp_path / "b.db", n_chips=20, n_images=500)
    con = sqlite3.connect(fx.path)
    # one chip in five loses 30 points at every faulty point: bimodal drops
    con.execute("UPDATE samples SET accuracy = accuracy - 0.3 WHERE campaign_id=? AND "
                "point_index > 0 AND chip_index % 5 = 0", (fx.knob_campaign,))
    con.commit()
    con.close()
    res = load_results(fx.path, campaign=fx.knob_campaign)
    sps = safe_points(res, res.campaigns[0], max_drop_pp=50.0)
    for sp in sps.values():  # the nearest faulty point: 4 chips of 20 lose 30 points
        assert sp.checks[0].bound == "bootstrap" and sp.checks[0].row == 1
    t_only = safe_points(res, res.campaigns[0], max_drop_pp=50.0, interval="bootstrap")
    assert {c.bound for sp in t_only.values() for c in sp.checks} == {"bootstrap"}


def test_no_margin_for_ce_models(store):
    con = sqlite3.connect(store.path)
    meta = {"arch": "vgg3", "loss": {"name": "ce", "margin": None, "L": None, "mhl_b": None},
            "margin": None, "train": {"loss": "ce", "margin": 32.0, "mhl_b": 128.0}}
    con.execute("UPDATE models SET meta_json=? WHERE model_hash=?",
                (json.dumps(meta), CE.model_hash))
    con.commit()
    con.close()
    res = load_results(store.path)
    assert res.models[CE.model_hash].margin is None
    assert res.models[MCEL.model_hash].margin == 32.0
    content = summarize(res)
    by_label = {m["label"]: m for m in content["models"]}
    assert by_label[CE.label]["margin"] is None and by_label[MCEL.label]["margin"] == 32.0


def test_figures_are_drawn_per_weight_width(store, tmp_path):
    con = sqlite3.connect(store.path)
    meta = json.loads(con.execute("SELECT meta_json FROM models WHERE model_hash=?",
                                  (MCEL.model_hash,)).fetchone()[0])
    meta["model"]["weight_bits"] = 2
    con.execute("UPDATE models SET meta_json=? WHERE model_hash=?",
                (json.dumps(meta), MCEL.model_hash))
    con.commit()
    con.close()
    res = load_results(store.path, campaign=store.knob_campaign)
    groups = model_groups(res, res.campaigns[0])
    assert [(s, sorted(c.samples)) for s, c in groups] == [
        ("_2bit", [MCEL.model_hash]), ("_4bit", [CE.model_hash])]
    for _, part in groups:
        assert {k[0] for k in part.margins} == set(part.samples)
    figs = save_figures(res, tmp_path / "figs")
    names = sorted(f.name for f in figs)
    assert "accuracy_vs_knob_2bit" in names and "accuracy_vs_knob_4bit" in names
    assert all(f.path.exists() for f in figs)
    assert next(f for f in figs if f.name == "accuracy_vs_knob_2bit").caption.startswith(
        "2-bit weights.")
    # one width: names as before
    one = load_results(make_store(tmp_path / "one.db", n_chips=3, n_images=200).path)
    assert all(len(model_groups(one, c)) == 1 for c in one.campaigns)
    names = [f.name for f in save_figures(one, tmp_path / "one", fmt="svg")]
    assert names and not any(re.search(r"_\d+bit$", n) for n in names)
