"""The results store: exact schema (a contract with analysis/), WAL, idempotent inserts,
export, bad files."""

from __future__ import annotations

import csv
import json
import sqlite3

import numpy as np
import pytest

from memory_models.usererror import UserInputError
from simulator.store import ResultStore, blob_margins, margins_blob

# The schema analysis/ reads with plain sqlite3 (the issue text), column by column.
CONTRACT = {
    "meta": ["key", "value"],
    "campaigns": ["campaign_id", "kind", "profile_hash", "encoding", "layout", "protect",
                  "include_biases", "seed", "dataset", "n_images", "config_json", "created"],
    "models": ["model_hash", "label", "path", "meta_json", "clean_accuracy",
               "clean_mean_margin", "n_images"],
    "profiles": ["profile_hash", "name", "technology", "knob_name", "knob_unit", "knob_nominal",
                 "knob_min", "knob_max", "knob_harsher", "illustrative", "profile_json"],
    "points": ["campaign_id", "point_index", "knob", "ber", "p01", "p10", "sa0", "sa1",
               "energy"],
    "samples": ["campaign_id", "model_hash", "point_index", "chip_index", "chip_seed",
                "n_images", "n_correct", "accuracy", "mean_margin", "n_faults",
                "n_changed_weights", "elapsed_s", "mcelsim_version", "created"],
    "margins": ["campaign_id", "model_hash", "point_index", "chip_index", "margins"],
    "sensitivity": ["campaign_id", "model_hash", "target", "name", "ber", "chip_index",
                    "accuracy", "n_images"],
}
PRIMARY_KEYS = {
    "meta": ["key"],
    "campaigns": ["campaign_id"],
    "models": ["model_hash"],
    "profiles": ["profile_hash"],
    "points": ["campaign_id", "point_index"],
    "samples": ["campaign_id", "model_hash", "point_index", "chip_index"],
    "margins": ["campaign_id", "model_hash", "point_index", "chip_index"],
    "sensitivity": ["campaign_id", "model_hash", "target", "name", "chip_index"],
}


def _sample(p: int, c: int, acc: float = 0.5) -> dict:
    return {"campaign_id": "c1", "model_hash": "m1", "point_index": p, "chip_index": c,
            "chip_seed": 7, "n_images": 10, "n_correct": int(acc * 10), "accuracy": acc,
            "mean_margin": 1.5, "n_faults": 3, "n_changed_weights": 2, "elapsed_s": 0.1,
            "mcelsim_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00"}


def test_schema_matches_the_contract(tmp_path):
    db = tmp_path / "r.db"
    ResultStore(db).close()
    con = sqlite3.connect(db)
    for table, cols in CONTRACT.items():
        info = con.execute(f"PRAGMA table_info({table})").fetchall()
        assert [r[1] for r in info][: len(cols)] == cols, table
        pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5] > 0]
        assert pk == PRIMARY_KEYS[table], table
    meta = dict(con.execute("SELECT key, value FROM meta"))
    assert meta["schema_version"] == "1"
    assert "mcelsim_version" in meta
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_inserts_are_idempotent_and_first_write_wins(tmp_path):
    with ResultStore(tmp_path / "r.db") as st:
        st.add_samples([_sample(0, 0, 0.5), _sample(0, 1, 0.7)])
        st.add_samples([_sample(0, 0, 0.9), _sample(1, 0, 0.3)])  # (0, 0) already there
        rows = st.table("samples")
        assert [(r["point_index"], r["chip_index"], r["accuracy"]) for r in rows] == [
            (0, 0, 0.5), (0, 1, 0.7), (1, 0, 0.3)]
        assert st.done_samples("c1") == {("m1", 0, 0): 0.5, ("m1", 0, 1): 0.7, ("m1", 1, 0): 0.3}
        assert st.done_samples("other") == {}


def test_margins_round_trip_float32_little_endian(tmp_path):
    m = np.array([0.5, -1.25, 3.0], np.float32)
    blob = margins_blob(m)
    assert blob == m.astype("<f4").tobytes()
    np.testing.assert_array_equal(blob_margins(blob), m)
    with ResultStore(tmp_path / "r.db") as st:
        st.write_batch(margins=[{"campaign_id": "c1", "model_hash": "m1", "point_index": 0,
                                 "chip_index": 0, "margins": blob}])
        np.testing.assert_array_equal(blob_margins(st.table("margins")[0]["margins"]), m)


def test_export_csv_and_json(tmp_path):
    with ResultStore(tmp_path / "r.db") as st:
        st.add_campaign({"campaign_id": "c1", "kind": "ber", "profile_hash": "iid"})
        st.add_model({"model_hash": "m1", "label": "tiny"})
        st.add_points("c1", [{"point_index": 0, "knob": 0.0, "ber": 0.0, "p01": 0.0, "p10": 0.0,
                              "sa0": 0.0, "sa1": 0.0, "energy": None}])
        st.add_samples([_sample(0, 0), _sample(0, 1)])
        st.add_sensitivity([{"campaign_id": "c1", "model_hash": "m1", "target": "bit",
                             "name": "3", "ber": 0.01, "chip_index": 0, "accuracy": 0.4,
                             "n_images": 10}])
        files = st.export(tmp_path / "out.csv")
        assert [f.name for f in files] == ["out.csv", "out.sensitivity.csv"]
        rows = list(csv.DictReader(open(files[0])))
        assert len(rows) == 2 and rows[0]["model_label"] == "tiny" and rows[0]["kind"] == "ber"
        assert rows[1]["chip_index"] == "1" and float(rows[1]["accuracy"]) == 0.5
        sens = list(csv.DictReader(open(files[1])))
        assert sens[0]["name"] == "3" and float(sens[0]["accuracy"]) == 0.4
        st.export(tmp_path / "out.json")
        doc = json.loads((tmp_path / "out.json").read_text())
        assert doc["meta"]["schema_version"] == "1"
        assert len(doc["samples"]) == 2 and doc["models"][0]["label"] == "tiny"
        with pytest.raises(UserInputError, match="export format"):
            st.export(tmp_path / "out.xlsx")


def test_not_a_store_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserInputError, match="not an mcelsim results database"):
        ResultStore(bad)
    with pytest.raises(UserInputError, match="folder .* does not exist"):
        ResultStore(tmp_path / "no" / "such" / "r.db")
    other = tmp_path / "v2.db"
    ResultStore(other).close()
    con = sqlite3.connect(other)
    con.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(UserInputError, match="schema_version"):
        ResultStore(other)


def _digest(path) -> bytes:
    import hashlib

    return hashlib.sha256(path.read_bytes()).digest()


def test_an_sqlite_file_of_another_program_is_refused_untouched(tmp_path):
    foreign = tmp_path / "app.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE users(name TEXT)")
    con.execute("INSERT INTO users VALUES ('ada')")
    con.commit()
    con.close()
    before = _digest(foreign)
    with pytest.raises(UserInputError, match="another program .*users.*never adds tables"):
        ResultStore(foreign)
    assert _digest(foreign) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no -wal / -shm left
    # a store of another schema version is refused before a table is added to it
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
    con.execute("INSERT INTO meta VALUES ('schema_version', '0')")
    con.commit()
    con.close()
    before = _digest(old)
    with pytest.raises(UserInputError, match="schema_version"):
        ResultStore(old)
    assert _digest(old) == before


def test_output_paths_are_checked_before_any_work(tmp_path):
    from simulator.store import check_export_path, check_store_path

    (tmp_path / "dir.db").mkdir()
    (tmp_path / "file").write_text("x")
    for path, pattern in ((tmp_path / "dir.db", "is a folder"),
                          (tmp_path / "file" / "r.db", "is a file, not a folder"),
                          (tmp_path / "missing" / "r.db", "does not exist"),
                          ("/proc/r.db", "cannot write")):  # fmt: skip
        with pytest.raises(UserInputError, match=pattern):
            check_store_path(path)
    assert check_store_path(tmp_path / "new.db") is False
    (tmp_path / "empty.db").write_bytes(b"")
    assert check_store_path(tmp_path / "empty.db") is False
    with pytest.raises(UserInputError, match="--export: unknown export format '.xlsx'"):
        check_export_path(tmp_path / "r.xlsx")
    with pytest.raises(UserInputError, match="--export: folder .* does not exist"):
        check_export_path(tmp_path / "missing" / "r.csv")
    assert check_export_path(tmp_path / "r.json") == tmp_path / "r.json"
