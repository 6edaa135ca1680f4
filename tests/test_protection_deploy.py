"""Protection codes through deployment, campaigns, the CLI and the report: a stored network
decodes to the clean one with no fault and with one fault per code word; zeroing reads the
value 0; cells and the net energy; the campaign key; bad schemes exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from memory_models import BitErrorModel
from memory_models.protection import SECDED, cell_offset
from memory_models.sampling import FaultSet
from memory_models.usererror import UserInputError
from simulator.cli import main
from simulator.deployment import deploy

KINDS = ("f01", "f10", "s0", "s1")


class _OnePerWord:
    """One faulty cell (random kind, random place, check cells included) in every code word
    of every coded region of `image`."""

    def __init__(self, image, seed: int) -> None:
        rng = np.random.default_rng(seed)
        lists = {k: [] for k in KINDS}
        for name in image.names:
            reg = image.region(name)
            code = reg.code
            words = np.arange(reg.span // code.n)
            offs = reg.start + cell_offset(words, rng.integers(0, code.n, words.size), code.n,
                                           code.interleave)
            for o, k in zip(offs, rng.integers(0, 4, words.size)):
                lists[KINDS[int(k)]].append(int(o))
        self.fs = FaultSet(*(np.array(sorted(lists[k]), np.int64) for k in KINDS))

    def fault_set(self, ranges, knob, rng, n_cells=None):
        return self.fs.restrict(ranges)


@pytest.fixture(scope="module")
def net():
    import torch

    from models.zoo import build_model
    from simulator.importer import import_torch

    torch.manual_seed(0)
    model = build_model("mlp", width=1 / 32, weight_bits=4, input_size=8)
    model.eval()
    return import_torch(model)


@pytest.mark.parametrize("scheme", [*SECDED, "secded-72-64,interleave=4"])
@pytest.mark.parametrize("enc", ["offset-binary", "twos-complement"])
def test_clean_without_faults_and_with_one_fault_per_word(net, scheme, enc):
    dep = deploy(net, encoding=enc, include_biases=True, protection=scheme,
                 profile="sram-14nm")
    r = dep.read(BitErrorModel(0.0, 0.0), np.random.default_rng(0))
    assert not r.deltas and not r.bias_deltas
    for seed in range(3):
        r = dep.read(_OnePerWord(dep.image, seed), None)
        assert not r.deltas and not r.bias_deltas
        assert r.counts["corrected"] == r.counts["words_in_error"] > 0
        assert r.counts["detected"] == r.counts["silent"] == 0


def test_zeroed_words_read_the_value_zero(net):
    """parity (detect-and-drop) at a high error rate: every changed weight is either 0 (a
    dropped word) or a value an even number of flips produced."""
    dep = deploy(net, encoding="offset-binary", protection="parity")
    r = dep.read(BitErrorModel(0.05, 0.05), np.random.default_rng(1))
    assert r.counts["detected"] > 0
    zeros = sum(int((v == 0).sum()) for _, v in r.deltas.values())
    assert zeros > 0
    dep2 = deploy(net, encoding="offset-binary", protection="secded-39-32,double=zero")
    r2 = dep2.read(BitErrorModel(0.05, 0.05), np.random.default_rng(1))
    assert r2.counts["detected"] > 0
    assert sum(int((v == 0).sum()) for _, v in r2.deltas.values()) > 0


def test_cells_count_the_check_cells(net):
    plain = deploy(net, profile="sram-14nm")
    assert plain.cells == {"data": plain.cells["data"], "check": 0}
    for scheme, ratio in (("secded-72-64", 72 / 64), ("msb-tmr", 96 / 64), ("parity", 65 / 64)):
        dep = deploy(net, protection=scheme, profile="sram-14nm")
        c = dep.cells
        assert c["check"] / c["data"] == pytest.approx(ratio - 1, rel=0.02)
        assert dep.n_bits >= c["data"] + c["check"]
    one = deploy(net, protection=f"secded-72-64,layers={net.weight_names[0]}")
    assert 0 < one.cells["check"] < deploy(net, protection="secded-72-64").cells["check"]
    with pytest.raises(UserInputError, match="no layer named"):
        deploy(net, protection="secded-72-64,layers=nope")
    with pytest.raises(UserInputError, match="word layout"):
        deploy(net, protection="secded-72-64", layout="bitplane")


def test_selective_code_leaves_other_layers_as_unprotected(net):
    """A code on one layer: the other layers read exactly as without any code... on their
    own addresses (the coded layer is first, so the others move); here the coded layer is
    the last, so every other layer keeps its cells and its errors."""
    last = net.weight_names[-1]
    src = BitErrorModel(0.01, 0.01)
    plain = deploy(net).read(src, np.random.default_rng(3))
    coded = deploy(net, protection=f"secded-72-64,layers={last}").read(
        src, np.random.default_rng(3))
    for name in net.weight_names[:-1]:
        a, b = plain.deltas.get(name), coded.deltas.get(name)
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    import torch

    from models.checkpoint import save_checkpoint
    from models.zoo import build_model

    d = tmp_path_factory.mktemp("ckpt")
    paths = []
    for loss in ("ce", "mcel"):
        torch.manual_seed(0 if loss == "ce" else 1)
        model = build_model("mlp", width=1 / 32, weight_bits=4)
        model.eval()
        path = d / f"tiny-{loss}.ckpt"
        save_checkpoint(path, model, {"dataset": {"name": "synthetic"}, "loss": loss})
        paths.append(str(path))
    return paths


def test_campaigns_per_code_and_the_report_comparison(tmp_path, ckpt, capsys):
    db = tmp_path / "r.db"
    base = ["simulate", *ckpt, "--profile", "sram-14nm", "--sweep", "0.80:1.00:0.05",
            "--chips", "3", "--limit", "64", "--workers", "1", "--out", str(db), "--quiet",
            "--json"]
    ids = {}
    for code in ("none", "secded-72-64", "msb-tmr"):
        assert main(base + ["--protection", code]) == 0
        ids[code] = json.loads(capsys.readouterr().out)["campaign_id"]
    assert len(set(ids.values())) == 3
    assert main(base) == 0  # the default is no code: the same campaign, nothing recomputed
    doc = json.loads(capsys.readouterr().out)
    assert doc["campaign_id"] == ids["none"] and doc["n_computed"] == 0
    out = tmp_path / "rep"
    assert main(["report", str(db), "--out", str(out), "--json"]) == 0
    content = json.loads(capsys.readouterr().out)
    (cmp,) = content["protection_comparisons"]
    assert [r["protection"] for r in cmp["rows"]][::2] == ["none", "secded-72-64", "msb-tmr"]
    over = {r["protection"]: r["cell_overhead"] for r in cmp["rows"]}
    assert over["none"] == 1.0 and over["secded-72-64"] == pytest.approx(1.125, rel=0.02)
    for r in cmp["rows"]:
        if r["found"]:  # energy net of the check cells: (V/Vmin)^2 * overhead
            e = 1 - r["cell_overhead"] * r["safe_knob"] ** 2
            assert r["net_energy_saving_pct"] == pytest.approx(100 * e)
    page = (out / "report.html").read_text()
    assert "Training method vs protection code" in page and "msb-tmr" in page
    assert any(p.name.startswith("protection_") for p in out.iterdir())


@pytest.mark.parametrize("scheme, needle", [("hamming", "unknown protection scheme"),
                                            ("secded-72-64,interleave=x", "not an integer")])
def test_bad_scheme_exits_2_with_the_list(tmp_path, ckpt, capsys, scheme, needle):
    rc = main(["simulate", ckpt[0], "--ber", "0.01", "--protection", scheme, "--limit", "8",
               "--out", str(tmp_path / "r.db"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0]
    assert "secded-72-64" in err[0] and "msb-tmr" in err[0]


@pytest.mark.parametrize("scheme", ["secded-72-64", "secded-72-64,interleave=4", "msb-tmr"])
def test_code_words_lie_in_one_row_one_column_per_cell(net, scheme):
    """The widened array (chip_profile): every code word of the weights in one row, each
    of its cells in its own column, so a weak column hits a word at most once."""
    dep = deploy(net, protection=scheme, profile="dram-voltage-b")
    cols = dep.chip_profile.organization.columns
    assert cols % dep.image.region(net.weight_names[0]).code.n == 0
    for name in net.weight_names:
        reg = dep.image.region(name)
        code = reg.code
        words = np.arange(reg.span // code.n)
        w, c = np.meshgrid(words, np.arange(code.n), indexing="ij")
        cells = reg.start + cell_offset(w.ravel(), c.ravel(), code.n, code.interleave)
        cells = cells.reshape(w.shape)
        assert (cells // cols == (cells[:, :1] // cols)).all()  # one row per word
        col = np.sort(cells % cols, axis=1)
        assert (np.diff(col, axis=1) > 0).all()  # distinct columns
