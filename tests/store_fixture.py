"""A small synthetic results store with the exact schema `mcelsim simulate` writes.

Reusable by any test that needs a store: `make_store(tmp_path / "results.db")`.
Contents (all draws from a fixed seed):
- 2 models: 'vgg3-ce' (loss ce) and 'vgg3-mcel-m32' (loss mcel, margin 32), 4-bit weights.
- a 'knob' campaign on an SRAM-like profile (volts, nominal 0.9 V, harsher 'lower',
  BER = 0.5 erfc((V - 0.55) / (0.05 sqrt 2)), energy = (V / Vnom)^2), `n_chips` chips;
- a 'ber' campaign on the synthetic i.i.d. profile (knob = BER, nominal 0, harsher 'higher',
  no energy model);
- a 'sensitivity' campaign at BER 1e-2: per-layer and per-bit rows, and the full read
  (every layer and bit exposed) as ordinary samples at its one point;
- margins for the clean point (every chip) and one faulty point (chip 0) of the sweeps.
Chips share their fault draws across models (common random numbers): a chip's
"weakness" multiplies the BER it sees for both models.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import erfc

SCHEMA_SQL = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE campaigns(campaign_id TEXT PRIMARY KEY, kind TEXT, profile_hash TEXT,
    encoding TEXT, layout TEXT, protect TEXT, include_biases INT, seed INT, dataset TEXT,
    n_images INT, config_json TEXT, created TEXT);
CREATE TABLE models(model_hash TEXT PRIMARY KEY, label TEXT, path TEXT, meta_json TEXT,
    clean_accuracy REAL, clean_mean_margin REAL, n_images INT);
CREATE TABLE profiles(profile_hash TEXT PRIMARY KEY, name TEXT, technology TEXT,
    knob_name TEXT, knob_unit TEXT, knob_nominal REAL, knob_min REAL, knob_max REAL,
    knob_harsher TEXT, illustrative INT, profile_json TEXT);
CREATE TABLE points(campaign_id TEXT, point_index INT, knob REAL, ber REAL, p01 REAL,
    p10 REAL, sa0 REAL, sa1 REAL, energy REAL, PRIMARY KEY (campaign_id, point_index));
CREATE TABLE samples(campaign_id TEXT, model_hash TEXT, point_index INT, chip_index INT,
    chip_seed INT, n_images INT, n_correct INT, accuracy REAL, mean_margin REAL,
    n_faults INT, n_changed_weights INT, elapsed_s REAL, mcelsim_version TEXT, created TEXT,
    PRIMARY KEY (campaign_id, model_hash, point_index, chip_index));
CREATE TABLE margins(campaign_id TEXT, model_hash TEXT, point_index INT, chip_index INT,
    margins BLOB, PRIMARY KEY (campaign_id, model_hash, point_index, chip_index));
CREATE TABLE sensitivity(campaign_id TEXT, model_hash TEXT, target TEXT, name TEXT, ber REAL,
    chip_index INT, accuracy REAL, n_images INT,
    PRIMARY KEY (campaign_id, model_hash, target, name, chip_index));
"""

VERSION = "0.1.0"
CREATED = "2026-11-30T12:00:00Z"
VNOM = 0.9
KNOBS = (0.90, 0.85, 0.80, 0.775, 0.75, 0.725, 0.70, 0.675, 0.65)
BERS = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 2e-2)
LAYERS = ("conv1", "conv2", "fc1", "fc2")
WEIGHT_BITS = 4
N_WEIGHTS = 6_500_000  # bits stored per model, for plausible fault counts


@dataclass(frozen=True)
class FixtureModel:
    model_hash: str
    label: str
    loss: str
    margin: float | None
    clean_accuracy: float
    ber50: float  # BER at which half of the above-chance accuracy is lost
    margin_mean: float  # mean clean logit margin (float logit units)
    margin_std: float


CE = FixtureModel("a1" * 8, "vgg3-ce", "ce", None, 0.905, 3e-3, 6.0, 4.0)
MCEL = FixtureModel("b2" * 8, "vgg3-mcel-m32", "mcel", 32.0, 0.898, 1.2e-2, 38.0, 14.0)
MODELS = (CE, MCEL)


@dataclass(frozen=True)
class StoreFixture:
    path: Path
    knob_campaign: str
    ber_campaign: str
    sensitivity_campaign: str
    n_chips: int
    n_images: int
    models: tuple[FixtureModel, ...] = MODELS


def sram_ber(v) -> np.ndarray:
    """Synthetic SRAM bit error rate at supply voltage v (volts)."""
    return 0.5 * erfc((np.asarray(v, dtype=np.float64) - 0.55) / (0.05 * math.sqrt(2.0)))


def expected_accuracy(model: FixtureModel, ber) -> np.ndarray:
    """Noise-free accuracy curve of a fixture model (fraction)."""
    ber = np.asarray(ber, dtype=np.float64)
    return 0.1 + (model.clean_accuracy - 0.1) / (1.0 + (ber / model.ber50) ** 1.5)


def create_schema(con: sqlite3.Connection) -> None:
    """Create the results-store tables and the meta rows."""
    con.executescript(SCHEMA_SQL)
    con.executemany(
        "INSERT INTO meta VALUES (?, ?)", [("schema_version", "1"), ("mcelsim_version", VERSION)]
    )


def _add_models(con: sqlite3.Connection, n_images: int) -> None:
    for m in MODELS:
        if m.loss == "ce":  # flat metadata
            meta = {"arch": "vgg3", "loss": m.loss, "margin": m.margin,
                    "weight_bits": WEIGHT_BITS, "dataset": "fashion-mnist"}
        else:  # nested, as models.training writes it
            meta = {"arch": "vgg3", "loss": {"name": m.loss, "margin": m.margin, "L": 100.0},
                    "margin": m.margin, "model": {"arch": "vgg3", "weight_bits": WEIGHT_BITS},
                    "dataset": {"name": "fashion-mnist", "num_classes": 10},
                    "inject": {"ber": 0.0, "encoding": "offset-binary"}}
        con.execute(
            "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?)",
            (m.model_hash, m.label, f"runs/{m.label}.ckpt", json.dumps(meta),
             m.clean_accuracy, m.margin_mean, n_images),
        )


def _add_profiles(con: sqlite3.Connection) -> tuple[str, str]:
    sram = {"name": "sram-test", "technology": "sram",
            "citation": "Synthetic test profile shaped like Stutz et al., MLSys 2021, Fig. 1",
            "energy": {"model": "quadratic", "reference": VNOM}}
    con.execute(
        "INSERT INTO profiles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ("p-sram", "sram-test", "sram", "voltage", "V", VNOM, 0.6, 1.0, "lower", 1,
         json.dumps(sram)),
    )
    con.execute(
        "INSERT INTO profiles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ("p-iid", "iid", "iid", "ber", "", 0.0, 0.0, 0.5, "higher", 0,
         json.dumps({"name": "iid"})),
    )
    return "p-sram", "p-iid"


def _add_campaign(con, cid, kind, profile_hash, seed, n_images, n_chips, created) -> None:
    config = {"encoding": "offset", "layout": "row-major", "protect": "none",
              "chips": n_chips, "seed": seed, "images": n_images, "kind": kind}
    con.execute(
        "INSERT INTO campaigns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (cid, kind, profile_hash, "offset", "row-major", "none", 0, seed, "fashion-mnist",
         n_images, json.dumps(config), created),
    )


def _add_sweep(con, cid, knobs, bers, energy, n_images, n_chips, rng, margin_point) -> None:
    for i, (k, b, e) in enumerate(zip(knobs, bers, energy)):
        con.execute(
            "INSERT INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (cid, i, k, b, b, b, 0.0, 0.0, e),
        )
    weakness = np.exp(0.35 * rng.standard_normal(n_chips))  # shared by both models
    chip_seeds = rng.integers(0, 2**31, size=n_chips)
    for m in MODELS:
        n_clean = int(round(m.clean_accuracy * n_images))
        for i, b in enumerate(bers):
            for c in range(n_chips):
                b_chip = b * weakness[c]
                lost_frac = 1.0 - expected_accuracy(m, b_chip) / m.clean_accuracy
                n_correct = n_clean - int(rng.binomial(n_clean, lost_frac))
                mean_margin = m.margin_mean * (1.0 - lost_frac) - 3.0 * lost_frac
                n_faults = int(rng.poisson(b_chip * N_WEIGHTS * WEIGHT_BITS))
                con.execute(
                    "INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (cid, m.model_hash, i, c, int(chip_seeds[c]), n_images, n_correct,
                     n_correct / n_images, mean_margin, n_faults, min(n_faults, N_WEIGHTS),
                     0.5, VERSION, CREATED),
                )
        clean = rng.normal(m.margin_mean, m.margin_std, n_images)
        for c in range(n_chips):
            con.execute(
                "INSERT INTO margins VALUES (?, ?, ?, ?, ?)",
                (cid, m.model_hash, 0, c, clean.astype("<f4").tobytes()),
            )
        lost = 1.0 - expected_accuracy(m, bers[margin_point]) / m.clean_accuracy
        faulty = clean * (1.0 - lost) - rng.exponential(m.margin_std * lost + 1e-6, n_images)
        con.execute(
            "INSERT INTO margins VALUES (?, ?, ?, ?, ?)",
            (cid, m.model_hash, margin_point, 0, faulty.astype("<f4").tobytes()),
        )


def _add_sensitivity(con, cid, n_images, n_chips, rng) -> None:
    ber = 1e-2
    con.execute("INSERT INTO points VALUES (?, 0, ?, ?, ?, ?, 0, 0, NULL)",
                (cid, ber, ber, ber, ber))
    layer_share = {"conv1": 0.15, "conv2": 0.35, "fc1": 0.8, "fc2": 0.25}
    for m in MODELS:
        full_drop = m.clean_accuracy - float(expected_accuracy(m, ber))
        for c in range(n_chips):  # the full read (every layer and bit) is a normal sample
            n_correct = round((m.clean_accuracy - full_drop * float(
                np.exp(0.1 * rng.standard_normal()))) * n_images)
            con.execute(
                "INSERT INTO samples VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, 0.5, ?, ?)",
                (cid, m.model_hash, c, 1000 + c, n_images, n_correct, n_correct / n_images,
                 1.0, 0, 0, VERSION, CREATED),
            )
        targets = [("layer", name, share) for name, share in layer_share.items()]
        targets += [("bit", str(b), 4.0 ** (b - (WEIGHT_BITS - 1))) for b in range(WEIGHT_BITS)]
        for target, name, share in targets:
            for c in range(n_chips):
                drop = share * full_drop * float(np.exp(0.2 * rng.standard_normal()))
                acc = round((m.clean_accuracy - drop) * n_images) / n_images
                con.execute(
                    "INSERT INTO sensitivity VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (cid, m.model_hash, target, name, ber, c, acc, n_images),
                )


def make_store(
    path: str | Path, *, n_chips: int = 6, n_images: int = 2000, seed: int = 0
) -> StoreFixture:
    """Write the synthetic store to `path` (which must not exist) and describe it."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    con = sqlite3.connect(path)
    try:
        create_schema(con)
        _add_models(con, n_images)
        sram, iid = _add_profiles(con)
        knobs = np.array(KNOBS)
        _add_campaign(con, "knob-sram", "knob", sram, 11, n_images, n_chips,
                      "2026-11-30T12:00:00Z")
        _add_sweep(con, "knob-sram", knobs, sram_ber(knobs), (knobs / VNOM) ** 2,
                   n_images, n_chips, rng, margin_point=len(KNOBS) - 2)
        _add_campaign(con, "ber-iid", "ber", iid, 12, n_images, n_chips, "2026-11-30T12:01:00Z")
        _add_sweep(con, "ber-iid", np.array(BERS), np.array(BERS), [None] * len(BERS),
                   n_images, n_chips, rng, margin_point=BERS.index(1e-2))
        _add_campaign(con, "sens-iid", "sensitivity", iid, 13, n_images, n_chips,
                      "2026-11-30T12:02:00Z")
        _add_sensitivity(con, "sens-iid", n_images, n_chips, rng)
        con.commit()
    finally:
        con.close()
    return StoreFixture(path, "knob-sram", "ber-iid", "sens-iid", n_chips, n_images)
