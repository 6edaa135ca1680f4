"""Fuzzed user input (hypothesis, bounded): generated profile TOMLs (valid and broken),
tampered checkpoints, broken stores and datasets, odd option values. Every case either runs
(exit 0) or exits 2 with one line that carries a fix: never a traceback, never exit 0 on
input known to be invalid, never a changed byte in an existing store.

Scope per run (derandomized, so every run tries the same cases): `EXAMPLES` below, about
200 cases in all, each bounded by the tiny model (16 images, one chip); about 30 s on 2 cores.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.cli import main

EXAMPLES = {"profiles": 60, "checkpoints": 40, "stores": 30, "datasets": 20, "options": 50}
pytestmark = pytest.mark.xdist_group("fuzz")


def fuzz(kind: str):
    return settings(max_examples=EXAMPLES[kind], deadline=None, derandomize=True,
                    database=None, suppress_health_check=list(HealthCheck))  # fmt: skip


def run_cli(argv, capsys) -> tuple[int, str]:
    """(exit status, stderr) of the CLI run in this process; a traceback fails the test."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    _, err = capsys.readouterr()
    assert rc in (0, 2), (rc, err)
    if rc == 2:
        lines = err.strip("\n").split("\n")
        assert len(lines) == 1 and "; fix: " in lines[0], err
    return rc, err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- shared inputs ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny checkpoint and a store that a campaign with it has written."""
    import torch

    from models.checkpoint import save_checkpoint
    from models.zoo import build_model

    d = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    model = build_model("mlp", width=1 / 32, weight_bits=4)
    model.train()
    model(torch.rand(8, 1, 28, 28))  # BatchNorm statistics that are not the defaults
    save_checkpoint(d / "tiny.ckpt", model.eval(), {"dataset": {"name": "synthetic"},
                                                    "loss": "ce"})  # fmt: skip
    store = d / "store.db"
    assert main(["simulate", str(d / "tiny.ckpt"), *CAMPAIGN, "--out", str(store)]) == 0
    return d


CAMPAIGN = ["--ber", "0:0.02:0.01", "--chips", "2", "--limit", "16", "--workers", "1", "--quiet"]


def simulate_into_copy(work: Path, tmp: Path, ckpt: Path, capsys, extra=()) -> int:
    """Run a campaign into a copy of the store; with exit 2 the copy is byte for byte
    unchanged."""
    store = tmp / "store.db"
    store.write_bytes((work / "store.db").read_bytes())
    before = digest(store)
    rc, _ = run_cli(["simulate", ckpt, *CAMPAIGN, "--out", store, *extra], capsys)
    if rc == 2:
        assert digest(store) == before
    return rc


# ---- profiles ---------------------------------------------------------------------------
BUILTIN = Path(__file__).resolve().parents[1] / "memory_models" / "builtin"
PROFILES = sorted(BUILTIN.glob("*.toml"))
TOKENS = ['"x"', "-1", "0", "1e9", "-1e-9", "nan", "inf", "-inf", "[]", "{}", "true", '""',
          "[1, \"a\"]", "0.5", "2", "1e-300", '"erfc"', '"power"', '"lower"', '"column"',
          "[0.1, 0.2]", "[[1]]", "1e400"]  # fmt: skip
# Edits that every profile must refuse.
SURELY_BAD = [
    ("knob", "min", "2e9"), ("knob", "nominal", "nan"), ("knob", "harsher", '"sideways"'),
    ("knob", "name", "1"), ("persistence", "fraction", "-0.5"), ("persistence", "fraction", "2"),
]


def _sections(text: str) -> list[tuple[str, int, str]]:
    """(section, line number, key) of every `key = value` line."""
    out, section = [], ""
    for i, line in enumerate(text.splitlines()):
        m = re.match(r"\s*\[([^\]]+)\]\s*$", line)
        if m:
            section = m.group(1)
        m = re.match(r"\s*([A-Za-z0-9_]+)\s*=", line)
        if m:
            out.append((section, i, m.group(1)))
    return out


def _set(text: str, line: int, token: str) -> str:
    lines = text.splitlines()
    key = lines[line].split("=", 1)[0]
    lines[line] = f"{key}= {token}"
    return "\n".join(lines) + "\n"


@fuzz("profiles")
@given(data=st.data())
def test_fuzzed_profiles(tmp_path_factory, capsys, data):
    src = data.draw(st.sampled_from(PROFILES), "profile")
    text = src.read_text()
    entries = _sections(text)
    how = data.draw(st.sampled_from(["value", "drop", "truncate", "bytes", "surely_bad"]))
    if how == "value":
        for _ in range(data.draw(st.integers(1, 3))):
            _, line, _ = data.draw(st.sampled_from(entries))
            text = _set(text, line, data.draw(st.sampled_from(TOKENS)))
    elif how == "drop":
        _, line, _ = data.draw(st.sampled_from(entries))
        text = "\n".join(x for i, x in enumerate(text.splitlines()) if i != line)
    elif how == "truncate":
        text = text[: data.draw(st.integers(0, len(text) - 1))]
    elif how == "surely_bad":
        section, key, token = data.draw(st.sampled_from(SURELY_BAD))
        line = next((i for s, i, k in entries if s == section and k == key), None)
        text = _set(text, line, token) if line is not None else text + "\n[knob\n"
    path = tmp_path_factory.mktemp("p") / "p.toml"
    raw = text.encode()
    if how == "bytes":
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:pos] + data.draw(st.binary(min_size=1, max_size=4)) + raw[pos + 1:]
    path.write_bytes(raw)
    rc, _ = run_cli(["profiles", "validate", path], capsys)
    if how in ("surely_bad",) or (how == "truncate" and len(text) < 20):
        assert rc == 2
    if rc == 0:  # a profile that validates also evaluates everywhere on its knob range
        from memory_models import load_profile

        prof = load_profile(path)
        k = prof.knob
        for v in np.linspace(k.min, k.max, 5):
            r = prof.rates(float(v))
            assert all(0.0 <= x <= 1.0 for x in (r.p01, r.p10, r.sa0, r.sa1))
        run_cli(["profiles", "show", path, "--at", repr(float(k.nominal))], capsys)


# ---- checkpoints ------------------------------------------------------------------------
def _ckpt_parts(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return dict(fh.metadata()), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118


def _write_ckpt(path: Path, header: dict, tensors: dict, redigest: bool) -> None:
    from safetensors.torch import save_file

    from models.checkpoint import _digest

    if redigest:
        header = {**header, "sha256": _digest(tensors)}
    save_file(tensors, str(path), metadata=header)


JSON_ODD = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5),
                     st.lists(st.integers(-3, 3), max_size=3))  # fmt: skip
META_KEYS = ["width", "in_channels", "input_size", "num_classes", "weight_bits", "act_bits",
             "input_bits", "granularity", "mean", "std", "logit_scale", "arch"]  # fmt: skip


@fuzz("checkpoints")
@given(data=st.data())
def test_fuzzed_checkpoints(work, tmp_path_factory, capsys, data):
    import torch

    tmp = tmp_path_factory.mktemp("c")
    header, tensors = _ckpt_parts(work / "tiny.ckpt")
    path = tmp / "t.ckpt"
    how = data.draw(st.sampled_from(["value", "meta", "toplevel", "digest", "dtype", "shape",
                                     "drop", "flip", "truncate"]))  # fmt: skip
    name = data.draw(st.sampled_from(sorted(tensors)))
    surely_bad = True
    if how == "value":  # impossible values that still pass the digest
        t = tensors[name].clone()
        if not t.is_floating_point() or t.numel() == 0:
            t = tensors["2.weight"].clone()
            name = "2.weight"
        value = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        t.reshape(-1)[data.draw(st.integers(0, t.numel() - 1))] = value
        _write_ckpt(path, header, {**tensors, name: t}, redigest=True)
    elif how in ("meta", "toplevel"):
        meta = json.loads(header["mcelsim"])
        key = data.draw(st.sampled_from(META_KEYS if how == "meta" else
                                        ["input_shape", "num_classes", "dataset", "quantization",
                                         "model"]))  # fmt: skip
        (meta["model"] if how == "meta" else meta)[key] = data.draw(JSON_ODD)
        _write_ckpt(path, {**header, "mcelsim": json.dumps(meta)}, tensors, redigest=False)
        surely_bad = False  # the new value may equal the old one or be harmless metadata
    elif how == "digest":
        _write_ckpt(path, {**header, "sha256": "0" * 64}, tensors, redigest=False)
    elif how == "dtype":
        t = tensors[name]
        _write_ckpt(path, header, {**tensors, name: t.to(torch.float64 if t.dtype != torch.float64
                                                         else torch.float32)}, redigest=True)
    elif how == "shape":
        t = tensors[name].reshape(-1)
        _write_ckpt(path, header, {**tensors, name: torch.cat([t, t[:1]]) if t.numel()
                                   else torch.zeros(1)}, redigest=True)  # fmt: skip
    elif how == "drop":
        _write_ckpt(path, header, {k: v for k, v in tensors.items() if k != name}, redigest=True)
    else:
        raw = (work / "tiny.ckpt").read_bytes()
        pos = data.draw(st.integers(0, len(raw) - 1))
        if how == "flip":
            raw = raw[:pos] + bytes([raw[pos] ^ data.draw(st.integers(1, 255))]) + raw[pos + 1:]
            (n,) = struct.unpack("<Q", raw[:8]) if pos >= 8 else (0,)
            header_json = (work / "tiny.ckpt").read_bytes()[8:8 + n]
            # a flip inside a metadata string (a version, a name) may leave a valid file
            surely_bad = pos >= 8 + n and n > 0 and b"sha256" in header_json
        else:
            raw = raw[:pos]
        path.write_bytes(raw)
    rc = simulate_into_copy(work, tmp, path, capsys)
    if surely_bad:
        assert rc == 2, how


# ---- stores -----------------------------------------------------------------------------
STORE_EDITS = [
    "DROP TABLE samples", "DROP TABLE meta", "DELETE FROM meta",
    "UPDATE meta SET value='9' WHERE key='schema_version'",
    "UPDATE samples SET accuracy=NULL", "UPDATE samples SET accuracy='x'",
    "UPDATE samples SET point_index=99", "UPDATE points SET knob=NULL, ber='high'",
    "UPDATE campaigns SET config_json='{not json'", "UPDATE models SET meta_json='[1'",
    "UPDATE clean_margins SET margins=x'00'", "UPDATE margins SET margins=x'0102'",
    "DELETE FROM points", "UPDATE campaigns SET kind='?'", "ALTER TABLE samples DROP COLUMN seed",
    "UPDATE profiles SET knob_harsher='up', knob_nominal=NULL",
]


@fuzz("stores")
@given(data=st.data())
def test_fuzzed_stores(work, tmp_path_factory, capsys, data):
    from memory_models.usererror import UserInputError

    tmp = tmp_path_factory.mktemp("s")
    store = tmp / "store.db"
    raw = (work / "store.db").read_bytes()
    how = data.draw(st.sampled_from(["sql", "flip", "truncate", "foreign"]))
    if how == "sql":
        store.write_bytes(raw)
        con = sqlite3.connect(store)
        for sql in data.draw(st.lists(st.sampled_from(STORE_EDITS), min_size=1, max_size=3)):
            try:
                con.execute(sql)
            except sqlite3.Error:
                pass
        con.commit()
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
    elif how == "flip":
        pos = data.draw(st.integers(0, len(raw) - 1))
        store.write_bytes(raw[:pos] + bytes([raw[pos] ^ 0xFF]) + raw[pos + 1:])
    elif how == "truncate":
        store.write_bytes(raw[: data.draw(st.integers(1, len(raw) - 1))])
    else:
        con = sqlite3.connect(store)
        con.execute("CREATE TABLE notes(body TEXT)")
        con.commit()
        con.close()
    before = digest(store)
    rc_export, _ = run_cli(["simulate", "--out", store, "--export", tmp / "x.csv"], capsys)
    try:  # the analysis side: every report number, without drawing
        from analysis import load_results, summarize

        summarize(load_results(store))
    except UserInputError:
        pass
    assert digest(store) == before  # exporting and reading never write
    rc, _ = run_cli(["simulate", work / "tiny.ckpt", *CAMPAIGN, "--out", store], capsys)
    if rc == 2:
        assert digest(store) == before
    if how == "foreign":
        assert rc == rc_export == 2


# ---- datasets ---------------------------------------------------------------------------
def _idx(data: np.ndarray, dims: int) -> bytes:
    return struct.pack(">HBB", 0, 0x08, dims) + struct.pack(f">{dims}I", *data.shape) + (
        data.astype(np.uint8).tobytes())


@fuzz("datasets")
@given(data=st.data())
def test_fuzzed_datasets(work, tmp_path_factory, capsys, monkeypatch, data):
    monkeypatch.delenv("MCELSIM_DATA", raising=False)
    tmp = tmp_path_factory.mktemp("d")
    rng = np.random.default_rng(0)
    n = 16
    files = {"t10k-images-idx3-ubyte": _idx(rng.integers(0, 256, (n, 28, 28)), 3),
             "t10k-labels-idx1-ubyte": _idx(rng.integers(0, 10, n), 1)}  # fmt: skip
    how = data.draw(st.sampled_from(["none", "truncate", "magic", "dims", "labels", "count",
                                     "size", "gzip", "missing"]))  # fmt: skip
    target = data.draw(st.sampled_from(sorted(files)))
    raw = files[target]
    if how == "truncate":
        files[target] = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "magic":
        files[target] = bytes([raw[0] ^ 0xFF]) + raw[1:]
    elif how == "dims":
        files[target] = raw[:3] + bytes([raw[3] + data.draw(st.integers(1, 3))]) + raw[4:]
    elif how == "labels":
        files["t10k-labels-idx1-ubyte"] = _idx(np.full(n, data.draw(st.integers(10, 255))), 1)
    elif how == "count":
        files["t10k-labels-idx1-ubyte"] = _idx(rng.integers(0, 10, n - 1), 1)
    elif how == "size":
        files["t10k-images-idx3-ubyte"] = _idx(rng.integers(0, 256, (n, 32, 32)), 3)
    elif how == "gzip":
        files[target] = gzip.compress(raw)[:-4]  # a damaged .gz
    elif how == "missing":
        del files[target]
    for name, content in files.items():
        (tmp / (name + (".gz" if how == "gzip" and name == target else ""))).write_bytes(
            content)
    # mnist: no system copy to fall back on when a file is missing here
    assert not Path("/usr/share/datasets/mnist").exists()
    rc = simulate_into_copy(work, tmp, work / "tiny.ckpt", capsys,
                            ["--dataset", "mnist", "--data-dir", tmp])  # fmt: skip
    assert rc == (0 if how == "none" else 2), how


# ---- odd option values ------------------------------------------------------------------
ODD = ["", "-1", "0", "nan", "inf", "-inf", "1e400", "abc", "9" * 30, "0x10", "1e-320",
       " 3", "-0"]  # fmt: skip
OPTIONS = {  # option -> valid values that keep a run tiny
    "--chips": ["1", "2"], "--seed": ["0", "7"], "--p01-ratio": ["0", "1", "3.5"],
    "--ber": ["0", "0.01", "0:0.02:0.01", "0.5", "1"], "--ci": ["0.5", "1"],
    "--max-chips": ["2", "3"], "--limit": ["8", "16"], "--workers": ["1"],
    "--encoding": ["offset-binary", "sign-magnitude"], "--layout": ["word", "bitplane"],
    "--protect": ["first", "bit:msb", "layer:2", "layer:nope"], "--engine": ["forward"],
    "--sensitivity-ber": ["0.01"],
}

NUMERIC = {"--chips", "--seed", "--p01-ratio", "--ber", "--ci", "--max-chips", "--limit",
           "--workers", "--sensitivity-ber"}


@fuzz("options")
@given(data=st.data())
def test_fuzzed_option_values(work, tmp_path_factory, capsys, data):
    tmp = tmp_path_factory.mktemp("o")
    names = data.draw(st.lists(st.sampled_from(sorted(OPTIONS)), min_size=1, max_size=3,
                               unique=True))  # fmt: skip
    argv = ["--chips", "1", "--limit", "8", "--workers", "1", "--quiet"]
    invalid = False
    for name in names:
        if data.draw(st.booleans()):
            value = data.draw(st.sampled_from(ODD))
            invalid = invalid or (name in NUMERIC and value in ("", "nan", "inf", "-inf",
                                                                 "1e400", "abc"))
        else:
            value = data.draw(st.sampled_from(OPTIONS[name]))
        argv += [name, value]
    if "--ber" not in names:
        argv += ["--ber", "0.01"]
    rc = simulate_into_copy(work, tmp, work / "tiny.ckpt", capsys, argv)
    if invalid:
        assert rc == 2, argv
