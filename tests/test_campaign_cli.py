"""`mcelsim simulate`: end to end on a tiny checkpoint and the synthetic dataset; resume after
SIGKILL; export; bad input exits 2 with one line."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from simulator.cli import main

SWEEP = ["--profile", "sram-14nm", "--sweep", "0.78:0.86:0.02", "--limit", "64"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    import torch

    from models.checkpoint import save_checkpoint
    from models.zoo import build_model

    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = build_model("mlp", width=1 / 32, weight_bits=4)
    model.eval()
    path = d / "tiny.ckpt"
    save_checkpoint(path, model, {"dataset": {"name": "synthetic"}})
    return path


def _rows(db) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(
            "SELECT campaign_id, model_hash, point_index, chip_index, chip_seed, n_images, "
            "n_correct, accuracy, mean_margin, n_faults, n_changed_weights FROM samples "
            "ORDER BY campaign_id, model_hash, point_index, chip_index").fetchall()
    finally:
        con.close()


def _count(db) -> int:
    try:
        con = sqlite3.connect(db, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_sigkill_then_rerun_resumes_to_the_same_table(tmp_path, ckpt, capsys):
    db = tmp_path / "killed.db"
    cmd = [sys.executable, "-m", "simulator.cli", "simulate", str(ckpt), *SWEEP, "--chips", "16",
           "--workers", "1", "--quiet", "--out", str(db)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while _count(db) < 10 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = _count(db)
    total = 5 * 16
    assert killed and 10 <= n_before < total  # killed mid-campaign, samples committed
    # the rerun (same command) runs in this process: it is the same code path
    assert main([*cmd[3:], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n_reused"] == n_before and doc["n_computed"] == total - n_before
    ref = tmp_path / "ref.db"
    assert main(["simulate", str(ckpt), *SWEEP, "--chips", "16", "--workers", "1", "--quiet",
                 "--out", str(ref)]) == 0
    got = _rows(db)
    assert len(got) == total == len(set((r[0], r[1], r[2], r[3]) for r in got))
    assert got == _rows(ref)


def test_ber_sensitivity_and_export(tmp_path, ckpt, capsys):
    db = tmp_path / "r.db"
    args = ["simulate", str(ckpt), "--ber", "0:0.02:0.01", "--p01-ratio", "3", "--chips", "2",
            "--limit", "32", "--workers", "1", "--quiet", "--out", str(db), "--json",
            "--protect", "bit:msb", "--include-biases", "--encoding", "sign-magnitude"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "ber" and len(doc["summary"]) == 3 and doc["n_computed"] == 6
    p = doc["points"][2]
    assert p["p01"] == pytest.approx(3 * p["p10"]) and p["ber"] == 0.02
    assert main(["simulate", str(ckpt), "--sensitivity", "--sensitivity-ber", "0.02",
                 "--chips", "2", "--limit", "32", "--workers", "1", "--quiet",
                 "--out", str(db)]) == 0
    out = capsys.readouterr().out
    assert "sensitivity" in out and "layer" in out
    assert main(["simulate", "--out", str(db), "--export", str(tmp_path / "r.csv")]) == 0
    assert (tmp_path / "r.csv").read_text().count("\n") == 6 + 2 + 1
    assert (tmp_path / "r.sensitivity.csv").exists()
    con = sqlite3.connect(db)
    kinds = dict(con.execute("SELECT kind, protect FROM campaigns").fetchall())
    assert kinds == {"ber": "bit:msb", "sensitivity": ""}
    prof = con.execute("SELECT name, knob_name, knob_harsher FROM profiles").fetchall()
    assert sorted(prof) == [("iid", "ber", "higher"), ("iid-r3", "ber", "higher")]


@pytest.mark.parametrize(("args", "needle"), [
    (["--profile", "no-such-profile", "--sweep", "0.8:0.9:0.05"], "no-such-profile"),
    (["--profile", "sram-14nm", "--sweep", "0.8:0.9"], "bad sweep"),
    (["--ber", "0:x:0.1"], "bad sweep"),
    (["--profile", "sram-14nm", "--sweep", "0.5:0.9:0.1"], "outside profile"),
    (["--sweep", "0.8:0.9:0.05"], "needs a memory profile"),
    ([], "exactly one of"),
    (["--ber", "0.01", "--chips", "abc"], "is not an integer"),
    (["--ber", "0.01", "--dataset", "mnist", "--data-dir", "/nonexistent"], "not found"),
    (["--ber", "0.01", "--protect", "layer:nope"], "no layer named"),
    (["--ber", "0.01", "--scheduler", "localhost:1"], "tcp://"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, ckpt, capsys, args, needle):
    db = tmp_path / "bad.db"
    try:
        rc = main(["simulate", str(ckpt), *args, "--limit", "8", "--out", str(db), "--quiet"])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("mcelsim simulate") and needle in err[0]


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_bad_checkpoints_exit_2(tmp_path, capsys, kind):
    path = tmp_path / "m.ckpt"
    if kind == "corrupt":
        path.write_bytes(b"\x00garbage" * 64)
    rc = main(["simulate", str(path), "--ber", "0.01", "--out", str(tmp_path / "r.db")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(path) in err[0]
