"""Campaigns: identical results serially, on local processes and on Dask; resume; campaign
ids; adaptive chips; sensitivity semantics; margins and clean accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from memory_models.usererror import UserInputError
from simulator.campaign import CampaignSpec, TestSet, model_entry, run_campaign, score
from simulator.store import ResultStore, blob_margins

VOLATILE = ("elapsed_s", "created")


def _tiny_net(seed: int):
    import torch

    from models.zoo import build_model
    from simulator.importer import import_torch

    torch.manual_seed(seed)
    model = build_model("mlp", width=1 / 32, weight_bits=4, input_size=8)
    model.eval()
    return import_torch(model)


@pytest.fixture(scope="module")
def models():
    return [model_entry(_tiny_net(0), label="a"), model_entry(_tiny_net(1), label="b")]


@pytest.fixture(scope="module")
def test_set():
    rng = np.random.default_rng(0)
    return TestSet("unit", rng.random((48, 1, 8, 8)).astype(np.float32),
                   rng.integers(0, 10, 48).astype(np.int64))


def _tables(db) -> dict:
    with ResultStore(db) as st:
        out = {}
        for t in ("samples", "margins", "points", "sensitivity", "clean_margins", "profiles"):
            out[t] = [{k: v for k, v in r.items() if k not in VOLATILE} for r in st.table(t)]
        out["campaigns"] = [{k: v for k, v in r.items() if k != "created"}
                            for r in st.table("campaigns")]
        out["models"] = st.table("models")
    return out


def _run(db, spec, models, test_set, **kw):
    with ResultStore(db) as st:
        return run_campaign(spec, models, test_set, st, **kw)


KNOB = CampaignSpec(kind="knob", profile="sram-14nm", points=(0.78, 0.8, 0.9), chips=3,
                    include_biases=True)
BER = CampaignSpec(kind="ber", points=(0.0, 0.01, 0.05), chips=3, p01_ratio=2.0,
                   encoding="twos-complement")


def test_serial_processes_and_dask_store_identical_tables(tmp_path, models, test_set):
    from distributed import LocalCluster

    serial = _run(tmp_path / "s.db", KNOB, models, test_set)
    assert serial.n_computed == 2 * 3 * 3
    _run(tmp_path / "p.db", KNOB, models, test_set, workers=2)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, host="127.0.0.1",
                      protocol="tcp", dashboard_address=None) as cluster:
        _run(tmp_path / "d.db", KNOB, models, test_set, scheduler=cluster.scheduler_address)
        _run(tmp_path / "d.db", BER, models, test_set, scheduler=cluster.scheduler_address)
    _run(tmp_path / "s.db", BER, models, test_set)
    s, p, d = _tables(tmp_path / "s.db"), _tables(tmp_path / "p.db"), _tables(tmp_path / "d.db")
    knob_id = serial.campaign_id
    assert [r for r in s["samples"] if r["campaign_id"] == knob_id] == p["samples"]
    assert s == d
    assert len(s["samples"]) == 2 * 2 * 3 * 3
    # faults grow as the voltage drops; the same chip seeds serve both models
    acc = {(r["model_hash"], r["point_index"], r["chip_index"]): r for r in p["samples"]}
    for c in range(3):
        seeds = {acc[(m.model_hash, pi, c)]["chip_seed"] for m in models for pi in range(3)}
        assert len(seeds) == 1
        for m in models:
            faults = [acc[(m.model_hash, pi, c)]["n_faults"] for pi in range(3)]
            assert faults[0] >= faults[1] >= faults[2]


def test_resume_fills_in_without_duplicates(tmp_path, models, test_set):
    class Stop(Exception):
        pass

    def stop_after(done, total):
        if done >= 4:
            raise Stop

    with pytest.raises(Stop):
        _run(tmp_path / "r.db", BER, models, test_set, on_progress=stop_after)
    partial = _tables(tmp_path / "r.db")["samples"]
    assert 4 <= len(partial) < 18
    again = _run(tmp_path / "r.db", BER, models, test_set)
    assert again.n_computed == 18 - len(partial) and again.n_reused == len(partial)
    _run(tmp_path / "full.db", BER, models, test_set)
    assert _tables(tmp_path / "r.db") == _tables(tmp_path / "full.db")
    assert _run(tmp_path / "r.db", BER, models, test_set).n_computed == 0


def test_settings_that_change_results_get_their_own_campaign(tmp_path, models, test_set):
    import dataclasses

    db = tmp_path / "c.db"
    ids = set()
    for change in ({}, {"encoding": "offset-binary"}, {"seed": 1}, {"protect": ("bit:msb",)},
                   {"include_biases": True}, {"p01_ratio": 1.0}, {"points": (0.0, 0.02)}):
        res = _run(db, dataclasses.replace(BER, chips=2, **change), models[:1], test_set)
        ids.add(res.campaign_id)
        assert res.n_computed == 2 * len(res.points)
    assert len(ids) == 7
    # more chips extend the same campaign
    more = _run(db, dataclasses.replace(BER, chips=3), models[:1], test_set)
    assert more.campaign_id in ids and more.n_computed == 3
    smaller = TestSet("unit", test_set.images[:20], test_set.labels[:20])
    assert _run(db, BER, models[:1], smaller).campaign_id not in ids
    with ResultStore(db) as st:
        per = {}
        for r in st.table("samples"):
            per[r["campaign_id"]] = per.get(r["campaign_id"], 0) + 1
        assert sum(per.values()) == len(st.table("samples"))
        assert len(per) == 8


def test_session_full_forward_and_auto_agree(tmp_path, models, test_set):
    import dataclasses

    spec = dataclasses.replace(BER, include_biases=True, chips=2, points=(0.0, 1e-4, 0.01))
    tables = []
    for engine in ("session", "forward", "auto"):
        _run(tmp_path / f"{engine}.db", dataclasses.replace(spec, engine=engine), models,
             test_set)
        tables.append(_tables(tmp_path / f"{engine}.db"))
    assert tables[0] == tables[1] == tables[2]


def test_margins_and_clean_accuracy(tmp_path, models, test_set):
    res = _run(tmp_path / "m.db", BER, models, test_set)
    for m in models:
        x = m.net.quantize_input(test_set.images)
        correct, margins = score(m.net.forward(x), test_set.labels, m.net.logit_scale)
        info = next(i for i in res.models if i["model_hash"] == m.model_hash)
        assert info["clean_accuracy"] == correct / 48
        assert info["clean_mean_margin"] == pytest.approx(float(np.mean(margins)), rel=1e-6)
        with ResultStore(tmp_path / "m.db") as st:
            rows = st.table("margins", "WHERE model_hash=?", (m.model_hash,))
            assert [(r["point_index"], r["chip_index"]) for r in rows] == [(0, 0), (1, 0), (2, 0)]
            np.testing.assert_array_equal(blob_margins(rows[0]["margins"]), margins)  # BER 0
            s = st.table("samples", "WHERE model_hash=? AND point_index=0", (m.model_hash,))
            assert all(r["accuracy"] == correct / 48 and r["n_faults"] == 0 for r in s)
            assert st.table("models", "WHERE model_hash=?", (m.model_hash,))[0]["label"] == m.label


def test_adaptive_mode_adds_chips_until_intervals_are_narrow(tmp_path, models, test_set):
    import dataclasses

    spec = dataclasses.replace(BER, chips=2, ci=0.15, max_chips=8)
    res = _run(tmp_path / "ad.db", spec, models, test_set)
    assert res.chips_per_point[0] == 2  # BER 0: every chip alike, width 0
    for row in res.summary:
        n = res.chips_per_point[row["point_index"]]
        assert row["n"] == n
        assert n == 8 or (row["ci_hi"] - row["ci_lo"]) < 0.15 or any(
            r["point_index"] == row["point_index"] and r["n"] == n and r["ci_lo"] is not None
            and r["ci_hi"] - r["ci_lo"] >= 0.15 for r in res.summary)
    assert max(res.chips_per_point) > 2
    with ResultStore(tmp_path / "ad.db") as st:
        assert len(st.table("samples")) == 2 * sum(res.chips_per_point)
    again = _run(tmp_path / "ad.db", spec, models, test_set)
    assert again.n_computed == 0 and again.chips_per_point == res.chips_per_point
    assert res.paired and all(p["n"] == res.chips_per_point[p["point_index"]]
                              for p in res.paired)


def test_sensitivity_is_flipping_only_that_layer_or_bit(tmp_path, models, test_set):
    import dataclasses

    m = models[:1]
    names = m[0].net.weight_names
    spec = CampaignSpec(kind="sensitivity", points=(0.05,), chips=2)
    res = _run(tmp_path / "sens.db", spec, m, test_set)
    targets = [(r["target"], r["name"]) for r in res.sensitivity]
    assert targets == [("layer", n) for n in names] + [("bit", str(j)) for j in range(4)]
    with ResultStore(tmp_path / "sens.db") as st:
        sens = {(r["target"], r["name"], r["chip_index"]): r["accuracy"]
                for r in st.table("sensitivity")}
    assert len(sens) == len(targets) * 2
    # the same chips with every other layer / bit protected give the same accuracy
    for target, name in [("layer", names[0]), ("bit", "3")]:
        if target == "layer":
            protect = tuple(f"layer:{n}" for n in names if n != name)
        else:
            protect = tuple(f"bit:{j}" for j in range(4) if str(j) != name)
        ref = _run(tmp_path / f"ref-{name}.db", dataclasses.replace(
            spec, kind="ber", protect=protect), m, test_set)
        with ResultStore(tmp_path / f"ref-{name}.db") as st:
            got = {r["chip_index"]: r["accuracy"]
                   for r in st.table("samples", "WHERE campaign_id=?", (ref.campaign_id,))}
        assert got == {c: sens[(target, name, c)] for c in range(2)}


@pytest.mark.parametrize(("spec", "match"), [
    (CampaignSpec(kind="knob", profile="sram-14nm", points=(0.5,)), "outside profile"),
    (CampaignSpec(kind="knob", profile="no-such-profile", points=(0.9,)), "no-such-profile"),
    (CampaignSpec(kind="ber", points=(0.7,), p01_ratio=0.0), "BER 0.7"),
    (CampaignSpec(kind="ber", points=(-0.1,)), "BER -0.1"),
    (CampaignSpec(kind="ber", points=(0.1,), chips=0), "must be in 1.."),
    (CampaignSpec(kind="ber", points=(0.1,), protect=("layer:zz",)), "no layer named"),
])
def test_bad_settings_are_user_errors(tmp_path, models, test_set, spec, match):
    with pytest.raises(UserInputError, match=match):
        _run(tmp_path / "bad.db", spec, models, test_set)


def test_store_identical_with_numba_only_and_int8_backends(tmp_path, test_set, monkeypatch):
    """The same campaign with MCELSIM_GEMM=int (numba, the oracle) and auto (int8 GEMM on
    the layers it fits) stores the same samples, margins and clean accuracies."""
    import dataclasses

    import torch

    from models.zoo import build_model
    from simulator import engine
    from simulator.importer import import_torch

    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = import_torch(build_model("vgg3", width=0.25, weight_bits=4, input_size=8).eval())
        nets.append(model_entry(net, label=f"vgg3-{seed}"))
    monkeypatch.setenv("MCELSIM_GEMM", "auto")  # whatever the suite runs under
    monkeypatch.setattr(engine, "GEMM", None)
    backends = {net.layer_input(i).plan.backend for i, op in enumerate(net.ops)
                if getattr(op, "weight", "")}  # fmt: skip
    assert backends == {"int8", "numba"}  # conv1 (fan-in 9) stays on numba
    spec = dataclasses.replace(BER, chips=2, points=(0.0, 1e-3, 0.02), margins_chips=2)
    tables = {}
    for mode in ("int", "auto"):
        monkeypatch.setenv("MCELSIM_GEMM", mode)
        monkeypatch.setattr(engine, "GEMM", None)
        for eng in ("auto", "forward"):
            db = tmp_path / f"{mode}-{eng}.db"
            _run(db, dataclasses.replace(spec, engine=eng), nets, test_set)
            tables[mode, eng] = _tables(db)
    first = tables["int", "auto"]
    assert first["samples"] and first["margins"]
    for key, t in tables.items():
        assert t == first, key
