"""Bad input to every command: exit 2 with one line naming the option or file, what is wrong
and the fix, before any work starts and before any store row is written."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest

from simulator.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tiny_ckpt):
    return tiny_ckpt


def exit2(argv: list[str], capsys) -> str:
    """Run the CLI; assert exit 2 with exactly one line on stderr that carries a fix."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "; fix: " in lines[0], lines[0]
    return lines[0]


SIM = ["--ber", "0.01", "--limit", "16", "--workers", "1", "--quiet"]


@pytest.mark.parametrize(("args", "needle"), [
    (["--chips", "0"], "--chips: 0 is out of range; fix: pass an integer in [1, 1000000]"),
    (["--chips", "2.5"], "--chips: '2.5' is not an integer"),
    (["--seed", "-1"], "--seed: -1 is out of range"),
    (["--p01-ratio", "-1"], "--p01-ratio: -1 is out of range"),
    (["--p01-ratio", "nan"], "--p01-ratio: nan is out of range"),
    (["--sensitivity-ber", "1.5"], "--sensitivity-ber: 1.5 is out of range"),
    (["--ci", "0"], "--ci: 0 is out of range; fix: pass a number in (0, 1]"),
    (["--ci", "2"], "--ci: 2 is out of range"),
    (["--max-chips", "0"], "--max-chips: 0 is out of range"),
    (["--limit", "0"], "--limit: 0 is out of range"),
    (["--workers", "0"], "--workers: 0 is out of range"),
    (["--encoding", "gray"], "invalid choice"),
    (["--nope"], "unrecognized arguments"),
])
def test_simulate_options_outside_their_range(ckpt, tmp_path, capsys, args, needle):
    line = exit2(["simulate", ckpt, *SIM, "--out", tmp_path / "r.db", *args], capsys)
    assert needle in line
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["--ber", "0.02:0.01:0.001"], "stop below start"),
    (["--ber", "0:0.01:0"], "step must be positive"),
    (["--dataset", "synthetic-rgb"], "images are 3x32x32 but model tiny expects 1x28x28"),
    (["--export", "r.xlsx"], "--export: unknown export format"),
    (["--export", "missing/r.csv"], "--export: folder 'missing' does not exist"),
])
def test_simulate_bad_input_writes_no_store(ckpt, tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    line = exit2(["simulate", ckpt, "--limit", "16", "--workers", "1", "--quiet",
                  *(["--ber", "0.01"] if "--ber" not in args else []), "--out", "r.db", *args],
                 capsys)  # fmt: skip
    assert needle in line
    assert not (tmp_path / "r.db").exists()


def test_simulate_paths(ckpt, tmp_path, capsys):
    assert "is a folder, not a checkpoint file" in exit2(
        ["simulate", tmp_path, *SIM, "--out", tmp_path / "r.db"], capsys)
    assert "--out: " in exit2(["simulate", ckpt, *SIM, "--out", tmp_path], capsys)
    assert "cannot write" in exit2(["simulate", ckpt, *SIM, "--out", "/proc/r.db"], capsys)


@pytest.mark.parametrize(("args", "needle"), [
    (["--epochs", "0"], "--epochs: 0 is out of range"),
    (["--lr", "-1"], "--lr: -1 is out of range; fix: pass a number > 0"),
    (["--lr", "inf"], "--lr: inf is out of range"),
    (["--width", "0"], "--width: 0 is out of range"),
    (["--width", "1000"], "--width: 1000 is out of range"),
    (["--weight-bits", "9"], "--weight-bits: 9 is out of range"),
    (["--act-bits", "0"], "--act-bits: 0 is out of range"),
    (["--batch-size", "1"], "--batch-size: 1 is out of range"),
    (["--inject-ber", "0.7"], "--inject-ber: 0.7 is out of range"),
    (["--margin", "-1"], "--margin: -1 is out of range"),
    (["--threads", "0"], "--threads: 0 is out of range"),
    (["--arch", "alexnet"], "invalid choice"),
    (["--dataset", "imagenet"], "invalid choice"),
])
def test_train_options_outside_their_range(tmp_path, capsys, args, needle):
    out = tmp_path / "m.ckpt"
    assert needle in exit2(["train", "--dataset", "synthetic", "--out", out, *args], capsys)
    assert list(tmp_path.iterdir()) == []


def test_train_output_checked_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out, needle in ((tmp_path, "is a folder, not a file name"),
                        (tmp_path / "file" / "m.ckpt", "is a file, not a folder"),
                        ("/proc/m.ckpt", "cannot write")):  # fmt: skip
        # epochs would take minutes: an exit within the test's time shows none ran
        assert needle in exit2(["train", "--dataset", "synthetic", "--epochs", "50",
                                "--out", out], capsys)  # fmt: skip


def test_train_choices_are_the_libraries_names():
    from models.datasets import DATASETS
    from models.zoo import ARCHITECTURES
    from simulator.commands import train

    assert train.DATASETS == DATASETS and train.ARCHITECTURES == ARCHITECTURES


def test_plot_and_report_options_and_outputs(tmp_path, capsys):
    from store_fixture import make_store

    db = make_store(tmp_path / "s.db", n_chips=3, n_images=200).path
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    (tmp_path / "file").write_text("x")
    for cmd in ("plot", "report"):
        assert "--confidence: 1 is out of range" in exit2([cmd, db, "--confidence", "1"], capsys)
        assert "--max-drop: -1 is out of range" in exit2([cmd, db, "--max-drop", "-1"], capsys)
        assert "exists and is not a folder" in exit2([cmd, db, "--out", tmp_path / "file"],
                                                     capsys)  # fmt: skip
        assert "cannot write" in exit2([cmd, db, "--out", "/proc/figs"], capsys)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def _fixless_user_errors() -> list[str]:
    """UserInputError(...) calls in the packages that pass no fix (4th argument)."""
    found = []
    for pkg in ("memory_models", "models", "simulator", "analysis"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id == "UserInputError"):
                    has_fix = len(node.args) >= 4 or any(k.arg == "fix" for k in node.keywords)
                    if not has_fix and not any(isinstance(a, ast.Starred) for a in node.args):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_user_error_names_a_fix():
    assert _fixless_user_errors() == []


def test_chip_limit_is_the_same_in_the_parser_and_the_spec(capsys):
    from simulator import spec
    from simulator.commands import simulate

    assert simulate.MAX_CHIPS == spec.MAX_CHIPS
    line = exit2(["simulate", "x.ckpt", "--ber", "0.01", "--chips", "9" * 30], capsys)
    assert "--chips" in line and "out of range" in line


def test_simulate_interval_option(ckpt, tmp_path, capsys):
    import json

    db = tmp_path / "r.db"
    base = ["simulate", str(ckpt), "--ber", "0.2", "--chips", "6", "--limit", "64",
            "--workers", "1", "--quiet", "--out", str(db), "--json"]
    assert main(base) == 0
    auto = json.loads(capsys.readouterr().out)
    assert main([*base, "--interval", "bootstrap"]) == 0
    boot = json.loads(capsys.readouterr().out)
    assert boot["n_reused"] == 6 and boot["n_computed"] == 0  # same campaign, same samples
    a, b = auto["summary"][0], boot["summary"][0]
    assert a["mean"] == b["mean"] and b["ci_method"] == "bootstrap"
    assert a["ci_method"] in ("t", "bootstrap")
    assert main([*base[:-1], "--interval", "bootstrap"]) == 0
    assert "boot" in capsys.readouterr().out
