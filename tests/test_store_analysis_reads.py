"""What `run_campaign` writes is what `analysis.results.load_results` reads (the schema is
the contract between the two; analysis never imports simulator)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.campaign import CampaignSpec, TestSet, model_entry, run_campaign
from simulator.store import ResultStore


def _tiny_net(seed: int):
    import torch

    from models.zoo import build_model
    from simulator.importer import import_torch

    torch.manual_seed(seed)
    model = build_model("mlp", width=1 / 32, weight_bits=4, input_size=8)
    model.eval()
    return import_torch(model)


def test_analysis_reads_knob_ber_and_sensitivity_campaigns(tmp_path):
    from analysis.results import load_results

    rng = np.random.default_rng(0)
    test = TestSet("unit", rng.random((32, 1, 8, 8)).astype(np.float32),
                   rng.integers(0, 10, 32).astype(np.int64))
    models = [model_entry(_tiny_net(0), label="ce"), model_entry(_tiny_net(1), label="mcel")]
    db = tmp_path / "r.db"
    specs = [
        CampaignSpec(kind="knob", profile="sram-14nm", points=(0.8, 0.85, 1.0), chips=3),
        CampaignSpec(kind="ber", points=(0.0, 0.01), chips=2, p01_ratio=2.0),
        CampaignSpec(kind="sensitivity", points=(0.02,), chips=2),
    ]
    with ResultStore(db) as st:
        ids = [run_campaign(s, models, test, st).campaign_id for s in specs]
        stored = {(r["campaign_id"], r["model_hash"], r["point_index"], r["chip_index"]):
                  r["accuracy"] for r in st.table("samples")}
    res = load_results(db)
    assert res.schema_version == "1"
    by_id = {c.campaign_id: c for c in res.campaigns}
    assert set(by_id) == set(ids)
    knob = by_id[ids[0]]
    assert knob.kind == "knob" and knob.profile.knob_name == "voltage"
    np.testing.assert_array_equal(knob.points.knob, [0.8, 0.85, 1.0])
    for m in models:
        acc = knob.samples[m.model_hash].accuracy
        assert acc.shape == (3, 3)
        for p in range(3):
            for c in range(3):
                assert acc[p, c] == pytest.approx(stored[(ids[0], m.model_hash, p, c)])
    ber = by_id[ids[1]]
    assert ber.kind == "ber" and ber.profile.is_iid and ber.profile.name == "iid-r2"
    assert (models[0].model_hash, 0, 0) in ber.margins
    sens = by_id[ids[2]]
    assert sens.kind == "sensitivity" and sens.sensitivity
