"""`mcelsim demo` end to end at a tiny scale on the real Fashion-MNIST files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulator.cli import main
from simulator.commands.demo import DEMO_PROFILES, DEMO_PROTECTION

FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.exists(), reason="make test installs dataset-fashion-mnist")
def test_demo_trains_simulates_reports_and_resumes(tmp_path, capsys):
    args = ["demo", "--out", str(tmp_path), "--epochs", "1", "--train-limit", "300"]
    args += ["--width", "0.125", "--test-limit", "60", "--chips", "2", "--workers", "1"]
    assert main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    report = Path(out["report"])
    assert report.exists() and report.stat().st_size > 10_000  # figures embedded
    rows = out["headline"]
    assert {(r["profile"], r["model"]) for r in rows} == {
        (profile, f"vgg3-{loss}-4b") for profile, _ in DEMO_PROFILES for loss in ("ce", "mcel")
    }
    for r in rows:
        assert 0 <= r["clean_accuracy_pct"] <= 100
    assert {(r["profile"], r["protection"], r["model"]) for r in out["protection"]} == {
        (DEMO_PROFILES[0][0], code, f"vgg3-{loss}-4b") for code in DEMO_PROTECTION
        for loss in ("ce", "mcel")
    }
    assert "Training method vs protection code" in report.read_text()

    # A second run reuses the checkpoints and every stored sample, and says the same.
    assert main(args + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["headline"] == rows
