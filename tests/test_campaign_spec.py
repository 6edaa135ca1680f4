"""Small campaign helpers: sweeps, BER rates, seeds (no engine needed)."""

from __future__ import annotations

import numpy as np
import pytest

from memory_models.usererror import UserInputError
from simulator.spec import ber_rates, chip_seed, parse_sweep, point_rng


def test_parse_sweep():
    assert parse_sweep("0.80:1.00:0.01") == tuple(round(0.8 + i * 0.01, 12) for i in range(21))
    assert parse_sweep("0:0.02:0.002", "--ber")[-1] == 0.02
    assert len(parse_sweep("0:0.02:0.002", "--ber")) == 11
    assert parse_sweep("0.9,0.8, 1.0") == (0.8, 0.9, 1.0)
    assert parse_sweep("0.85") == (0.85,)
    for bad in ("0.8:1.0", "a:b:c", "1:0:0.1", "0:1:0", "0:1:-1", "", "nan", "0:inf:1"):
        with pytest.raises(UserInputError):
            parse_sweep(bad)


def test_ber_rates_and_seeds():
    assert ber_rates(0.01) == pytest.approx((0.01, 0.01))
    p01, p10 = ber_rates(0.01, 3.0)
    assert p01 == pytest.approx(3 * p10) and (p01 + p10) / 2 == pytest.approx(0.01)
    assert ber_rates(0.02, 0.0) == pytest.approx((0.0, 0.04))
    seeds = [chip_seed(0, c) for c in range(50)]
    assert len(set(seeds)) == 50 and all(0 <= s < 2**63 for s in seeds)
    assert chip_seed(0, 3) == chip_seed(0, 3) != chip_seed(1, 3)
    a = point_rng(5, 2, 7).random(4)
    np.testing.assert_array_equal(a, np.random.default_rng([5, 2, 7]).random(4))


def test_campaign_module_keeps_its_public_names():
    import simulator
    from simulator import campaign, sample, spec

    for name in ("CampaignSpec", "CampaignResult", "ModelEntry", "TestSet", "ber_rates",
                 "chip_seed", "model_entry", "parse_sweep", "point_rng", "run_campaign",
                 "score", "validate_spec"):  # fmt: skip
        assert hasattr(campaign, name), name
    assert simulator.CampaignSpec is campaign.CampaignSpec is spec.CampaignSpec
    assert simulator.run_campaign is campaign.run_campaign
    assert campaign.score is sample.score
