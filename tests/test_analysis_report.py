"""The report (HTML + JSON) and the `mcelsim plot` / `mcelsim report` commands, bad inputs."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from scipy import stats as st
from store_fixture import CE, MCEL, create_schema, make_store

from analysis.report import summarize, write_report
from analysis.results import load_results
from simulator.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store") / "results.db")


@pytest.fixture(scope="module")
def content(store):
    return summarize(load_results(store.path))


def _camp(content, cid):
    return next(c for c in content["campaigns"] if c["campaign_id"] == cid)


def test_load_results_shapes(store):
    res = load_results(store.path)
    assert [c.campaign_id for c in res.campaigns] == [
        store.knob_campaign, store.ber_campaign, store.sensitivity_campaign]
    knob = res.campaigns[0]
    assert knob.samples[CE.model_hash].accuracy.shape == (len(knob.points), store.n_chips)
    assert knob.profile.knob_harsher == "lower" and knob.profile.illustrative
    assert knob.profile.citation.startswith("Synthetic")
    np.testing.assert_allclose(knob.points.energy, (knob.points.knob / 0.9) ** 2)
    assert np.isnan(res.campaigns[1].points.energy).all()
    m = knob.margins[(MCEL.model_hash, 0, 0)]
    assert m.dtype == np.float32 and m.size == store.n_images
    for h, loss in ((CE.model_hash, "ce"), (MCEL.model_hash, "mcel")):  # flat and nested
        m = res.models[h]
        assert (m.loss, m.arch, m.weight_bits, m.dataset) == (loss, "vgg3", 4, "fashion-mnist")
    assert res.models[MCEL.model_hash].margin == 32 and res.models[CE.model_hash].margin is None
    assert res.campaigns[2].n_chips == store.n_chips


def test_campaign_by_unique_prefix(store, capsys):
    assert load_results(store.path, campaign="knob").campaigns[0].campaign_id == "knob-sram"
    assert main(["plot", str(store.path), "--campaign", "", "--out", "x"]) == 2
    assert "unknown campaign id" in _one_error_line(capsys)


def test_paired_difference_equals_sql_join(store, content):
    """MCEL - CE joined on (campaign_id, point_index, chip_index), t-interval over chips."""
    con = sqlite3.connect(store.path)
    rows = con.execute(
        "SELECT a.point_index, a.accuracy - b.accuracy FROM samples a JOIN samples b "
        "ON a.campaign_id = b.campaign_id AND a.point_index = b.point_index "
        "AND a.chip_index = b.chip_index WHERE a.campaign_id = ? AND a.model_hash = ? "
        "AND b.model_hash = ? ORDER BY a.point_index, a.chip_index",
        (store.ber_campaign, MCEL.model_hash, CE.model_hash)).fetchall()
    con.close()
    pair = _camp(content, store.ber_campaign)["paired_differences"][0]
    assert (pair["a"], pair["b"]) == (MCEL.label, CE.label)  # MCEL first: diff = MCEL - CE
    for row in pair["points"]:
        d = 100 * np.array([r[1] for r in rows if r[0] == row["point_index"]])
        assert row["n"] == d.size == store.n_chips
        assert row["mean_pp"] == pytest.approx(d.mean())
        if d.std() > 0:
            lo, hi = st.t.interval(0.95, d.size - 1, loc=d.mean(), scale=st.sem(d))
            assert (row["ci_low_pp"], row["ci_high_pp"]) == (pytest.approx(lo), pytest.approx(hi))
            assert row["unpaired_half_width_pp"] > 0


def test_summary_content(store, content):
    assert content["analysis"]["max_drop_pp"] == 1.0
    knob = _camp(content, store.knob_campaign)
    assert knob["profile"]["knob_unit"] == "V" and knob["profile"]["illustrative"] is True
    s = knob["settings"]
    assert (s["encoding"], s["protect"], s["chips"], s["seed"]) == ("offset", "none", 6, 11)
    assert s["versions"] == ["0.1.0"]
    assert len(knob["points"]) == 9
    p0 = knob["points"][0]["models"][CE.label]
    assert p0["mean_pct"] == pytest.approx(100 * CE.clean_accuracy, abs=0.05)
    by_model = {sp["model"]: sp for sp in knob["safe_points"]}
    assert set(by_model) == {CE.label, MCEL.label}
    for sp in by_model.values():  # energy = (V/Vnom)^2 in the fixture
        assert sp["found"] and sp["energy_saving_pct"] == pytest.approx(
            100 * (1 - (sp["knob"] / 0.9) ** 2))
        assert sp["drop_upper_pp"] < 1.0
    assert by_model[MCEL.label]["knob"] <= by_model[CE.label]["knob"]  # MCEL goes lower
    models = {m["label"]: m for m in knob["models"]}
    assert models[CE.label]["clean_accuracy_pct"] == pytest.approx(90.5)
    assert models[MCEL.label]["reference_mean_margin"] > models[CE.label]["reference_mean_margin"]
    sens = _camp(content, store.sensitivity_campaign)["sensitivity"]
    assert [r["name"] for r in sens["bit"] if r["model"] == CE.label] == [
        "(all at once)", "0", "1", "2", "3"]
    every = next(r for r in sens["layer"] if r["model"] == MCEL.label)
    assert every["n"] == store.n_chips and every["mean_pp"] > 0
    json.dumps(content, allow_nan=False)  # no NaN leaks into the JSON


def test_write_report_html_and_json(store, tmp_path):
    rep = write_report(load_results(store.path), tmp_path, max_drop_pp=0.5)
    page = rep.html_path.read_text()
    for needle in ("Lowest safe operating point", "Paired difference", "Accuracy per operating",
                   "Sensitivity per layer", "illustrative", "offset", "clean accuracy (%)",
                   "mean margin", "energy saved", "Synthetic test profile", CE.label):
        assert needle in page, needle
    data = json.loads(rep.json_path.read_text())
    assert data["analysis"]["max_drop_pp"] == 0.5
    for c in data["campaigns"]:
        assert c["figures"]
        for f in c["figures"]:
            assert (tmp_path / f["path"]).is_file()
            assert f'src="{f["path"]}"' in page


def test_write_report_embedded(store, tmp_path):
    res = load_results(store.path, campaign=store.sensitivity_campaign)
    rep = write_report(res, tmp_path, embed=True)
    page = rep.html_path.read_text()
    assert page.count("data:image/png;base64,") == 2
    assert [c["campaign_id"] for c in rep.content["campaigns"]] == [store.sensitivity_campaign]


def test_cli_report_json(store, tmp_path, capsys):
    rc = main(["report", str(store.path), "--out", str(tmp_path / "rep"), "--json",
               "--campaign", store.knob_campaign, "--format", "svg"])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out)
    assert {"store", "analysis", "models", "campaigns", "html"} <= set(data)
    (camp,) = data["campaigns"]
    assert {"points", "paired_differences", "safe_points", "settings", "profile",
            "figures"} <= set(camp)
    assert all(f["path"].endswith(".svg") for f in camp["figures"])
    assert (tmp_path / "rep" / "report.html").is_file()


def test_cli_plot(store, tmp_path, capsys):
    rc = main(["plot", str(store.path), "--out", str(tmp_path / "figs"),
               "--campaign", store.ber_campaign, "--max-drop", "2"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    files = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert files == ["ber-iid_accuracy_vs_ber.png", "ber-iid_margins.png"]
    assert "2 figures" in out[-1]
    rc = main(["plot", str(store.path), "--out", str(tmp_path / "figs"), "--json",
               "--campaign", store.sensitivity_campaign, "--format", "svg"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and [f["name"] for f in data["figures"]] == [
        "sensitivity_layer", "sensitivity_bit"]
    assert all((tmp_path / "figs" / f"{store.sensitivity_campaign}_{f['name']}.svg").is_file()
               for f in data["figures"])
    assert data["safe_points"] == []  # a sensitivity campaign has no sweep


def test_incomplete_campaign_still_reports(tmp_path):
    """A store that is still being written: missing samples are NaN, never an error."""
    fx = make_store(tmp_path / "r.db", n_chips=3)
    con = sqlite3.connect(fx.path)
    con.execute("DELETE FROM samples WHERE campaign_id=? AND point_index>=5 AND chip_index=2",
                (fx.knob_campaign,))
    con.execute("DELETE FROM samples WHERE campaign_id=? AND point_index=8 AND model_hash=?",
                (fx.knob_campaign, CE.model_hash))
    con.commit()
    con.close()
    content = summarize(load_results(fx.path, campaign=fx.knob_campaign))
    pts = content["campaigns"][0]["points"]
    assert pts[6]["models"][CE.label]["n"] == 2
    assert pts[8]["models"][CE.label]["mean_pct"] is None
    assert content["campaigns"][0]["paired_differences"][0]["points"][6]["n"] == 2


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("command", ["plot", "report"])
def test_bad_inputs_exit_2(command, store, tmp_path, capsys):
    missing = tmp_path / "missing.db"
    assert main([command, str(missing)]) == 2
    line = _one_error_line(capsys)
    assert "missing.db" in line and "not found" in line and "mcelsim simulate" in line

    text = tmp_path / "notes.db"
    text.write_text("not a database\n")
    assert main([command, str(text)]) == 2
    line = _one_error_line(capsys)
    assert "notes.db" in line and "SQLite" in line and "mcelsim simulate" in line

    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    assert main([command, str(other)]) == 2
    line = _one_error_line(capsys)
    assert "other.db" in line and "not an mcelsim results store" in line

    empty = tmp_path / "empty.db"
    con = sqlite3.connect(empty)
    create_schema(con)
    con.commit()
    con.close()
    assert main([command, str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no campaigns" in _one_error_line(capsys)

    assert main([command, str(store.path), "--campaign", "nope"]) == 2
    line = _one_error_line(capsys)
    assert "nope" in line and store.knob_campaign in line

    with pytest.raises(SystemExit) as exc:  # refused by the parser: outside its range
        main([command, str(store.path), "--max-drop", "-1"])
    assert exc.value.code == 2 and "--max-drop" in _one_error_line(capsys)

    out_file = tmp_path / "a-file"
    out_file.write_text("")
    assert main([command, str(store.path), "--out", str(out_file)]) == 2
    assert "not a folder" in _one_error_line(capsys)

    with pytest.raises(SystemExit) as exc:
        main([command, str(store.path), "--format", "gif"])
    assert exc.value.code == 2
    _one_error_line(capsys)


def test_campaign_without_samples_and_nan_in_config(tmp_path, capsys):
    fx = make_store(tmp_path / "r.db", n_chips=2)
    con = sqlite3.connect(fx.path)
    con.execute("DELETE FROM samples WHERE campaign_id=?", (fx.ber_campaign,))
    con.execute("DELETE FROM margins WHERE campaign_id=?", (fx.ber_campaign,))
    con.execute("UPDATE campaigns SET config_json='{\"ci\": NaN}' WHERE campaign_id=?",
                (fx.knob_campaign,))
    con.commit()
    con.close()
    assert main(["report", str(fx.path), "--campaign", fx.ber_campaign]) == 2
    assert "holds no samples yet" in _one_error_line(capsys)
    content = summarize(load_results(fx.path, campaign=fx.knob_campaign))
    assert content["campaigns"][0]["settings"]["config"] == {"ci": None}
    json.dumps(content, allow_nan=False)


def test_wrong_schema_version_and_column(tmp_path, capsys):
    db = tmp_path / "v2.db"
    con = sqlite3.connect(db)
    create_schema(con)
    con.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    con.commit()
    con.close()
    assert main(["report", str(db)]) == 2
    assert "schema version" in _one_error_line(capsys)
    db = tmp_path / "col.db"
    con = sqlite3.connect(db)
    create_schema(con)
    con.execute("ALTER TABLE samples RENAME COLUMN accuracy TO acc")
    con.commit()
    con.close()
    assert main(["plot", str(db)]) == 2
    assert "samples.accuracy" in _one_error_line(capsys)


def test_store_from_the_real_writer(tmp_path, capsys):
    """A store created by simulator.store.ResultStore is accepted (empty -> clear message)."""
    from simulator.store import ResultStore

    db = tmp_path / "real.db"
    ResultStore(db).close()
    assert main(["report", str(db), "--out", str(tmp_path / "o")]) == 2
    assert "no campaigns" in _one_error_line(capsys)
