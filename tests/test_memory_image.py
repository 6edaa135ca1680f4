"""Memory images: layouts against the naive cell map, fault application against the naive
per-bit reader, region independence (sub-range, order), counts."""

from __future__ import annotations

import numpy as np
import pytest
from naive import memory as naive

from memory_models import BitErrorModel, Chip, MemoryImage, UserInputError, load_profile
from memory_models.sampling import FaultSet, Ranges

REGIONS = [("a", 3, 1000), ("b", 8, 777), ("c", 1, 130), ("d", 5, 2049), ("e", 16, 300)]


def build(layout, word_bits=64, columns=128, seed=0):
    rng = np.random.default_rng(seed)
    img = MemoryImage(layout=layout, word_bits=word_bits, columns=columns)
    for name, bits, n in REGIONS:
        dt = np.uint8 if bits <= 8 else np.uint16
        img.add(name, rng.integers(0, 1 << bits, size=n).astype(dt), bits)
    return img


class FixedFaults:
    """A source that returns a given fault set (restricted to the read ranges)."""

    def __init__(self, fs):
        self.fs = fs

    def fault_set(self, ranges, knob, rng, n_cells=None):
        return self.fs.restrict(ranges)


def random_faults(n_bits, rate, seed):
    rng = np.random.default_rng(seed)
    kinds = rng.random(n_bits)
    cells = np.arange(n_bits)
    stuck = rng.random(n_bits)
    s0 = cells[stuck < rate / 2]
    s1 = cells[(stuck >= rate / 2) & (stuck < rate)]
    f01 = cells[kinds < 2 * rate]
    f10 = cells[(kinds > 0.5) & (kinds < 0.5 + 2 * rate)]
    f10 = np.union1d(f10, f01[::3])  # some cells in both flip sets
    return FaultSet(f01, f10, s0, s1)


@pytest.mark.parametrize(("layout", "word_bits"), [("word", 64), ("word", None), ("word", 12),
                                                   ("bitplane", None)])
def test_layout_matches_naive_cell_map(layout, word_bits):
    img = build(layout, word_bits)
    assert img.names == [r[0] for r in REGIONS]
    seen = np.zeros(img.n_bits, bool)
    for name, bits, n in REGIONS:
        reg = img.region(name)
        assert reg.start % 128 == 0  # every region starts on a row boundary
        k, j = np.meshgrid(np.arange(n), np.arange(bits), indexing="ij")
        cells = reg.cell(k.ravel(), j.ravel())
        wb = word_bits if layout == "word" else None
        expect = [naive.cell_of(layout, int(a), int(b), bits, wb, n, 128)
                  for a, b in zip(k.ravel(), j.ravel())]
        np.testing.assert_array_equal(cells, expect)
        assert cells.max() < reg.span
        g = reg.start + cells
        assert not seen[g].any()  # no two bits share a cell
        seen[g] = True
        kk, jj, valid = reg.weight_bit(cells)
        assert valid.all()
        np.testing.assert_array_equal(kk, k.ravel())
        np.testing.assert_array_equal(jj, j.ravel())
    assert img.n_bits % 128 == 0


@pytest.mark.parametrize("layout", ["word", "bitplane"])
def test_apply_matches_naive(layout):
    img = build(layout, seed=3)
    fs = random_faults(img.n_bits, 0.03, seed=4)
    res = img.read(FixedFaults(fs), None)
    totals = dict.fromkeys(res.counts, 0)
    for name, bits, _n in REGIONS:
        reg = img.region(name)
        clean = img.codes(name)
        expect = naive.read_codes(clean, bits, reg.start, reg.cell, fs.f01, fs.f10, fs.s0, fs.s1)
        got = img.corrupted(res, name)
        np.testing.assert_array_equal(got, expect)
        idx, new = res.changes[name]
        assert idx.dtype == np.int64 and new.dtype == clean.dtype
        assert np.all(np.diff(idx) > 0)
        np.testing.assert_array_equal(np.flatnonzero(expect != clean), idx)
        diff = clean ^ got
        changed = int(sum(bin(int(x)).count("1") for x in diff))
        assert res.region_counts[name]["changed_bits"] == changed
        for key in totals:
            totals[key] += res.region_counts[name][key]
    assert totals == res.counts
    assert res.counts["changed_bits"] == sum(res.counts[k] for k in ("flip01", "flip10", "sa0",
                                                                     "sa1"))


def test_regions_read_alone_or_in_any_order_match():
    prof = load_profile("sram-14nm")
    img = build("word", seed=1)
    chip = Chip(prof, img.n_bits, seed=3)
    full = img.read(chip, np.random.default_rng([1, 0, 2]), knob=0.8)
    rev = img.read(chip, np.random.default_rng([1, 0, 2]), knob=0.8, regions=img.names[::-1])
    for name in img.names:
        alone = img.read(chip, np.random.default_rng([1, 0, 2]), knob=0.8, regions=[name])
        for other in (alone, rev):
            np.testing.assert_array_equal(full.changes[name][0], other.changes[name][0])
            np.testing.assert_array_equal(full.changes[name][1], other.changes[name][1])
    m = BitErrorModel(0.01, 0.02)
    full = img.read(m, np.random.default_rng(5))
    part = img.read(m, np.random.default_rng(5), regions=["d", "b"])
    for name in ("b", "d"):
        np.testing.assert_array_equal(full.changes[name][1], part.changes[name][1])
    assert set(part.changes) == {"b", "d"}


def test_same_seed_same_read_different_point_different():
    prof = load_profile("sram-14nm")
    img = build("bitplane", seed=2)
    a = img.read(Chip(prof, img.n_bits, seed=9), np.random.default_rng([1, 2, 3]), knob=0.82)
    b = img.read(Chip(prof, img.n_bits, seed=9), np.random.default_rng([1, 2, 3]), knob=0.82)
    c = img.read(Chip(prof, img.n_bits, seed=9), np.random.default_rng([1, 2, 4]), knob=0.82)
    for name in img.names:
        np.testing.assert_array_equal(a.changes[name][0], b.changes[name][0])
    assert a.counts == b.counts and a.counts != c.counts


def test_chip_read_equals_image_read():
    prof = load_profile("sram-14nm-column")
    w = np.random.default_rng(0).integers(0, 16, size=(300, 70)).astype(np.uint8)
    img = MemoryImage(layout="word")
    img.add("w", w, 4)
    chip = Chip(prof, img.n_bits, seed=2)
    direct = chip.read(w, 4, 0.8, np.random.default_rng(7))
    via = img.corrupted(img.read(chip, np.random.default_rng(7), knob=0.8), "w")
    assert direct.shape == w.shape
    np.testing.assert_array_equal(direct, via)
    assert (direct != w).any()


def test_for_profile_uses_organization():
    prof = load_profile("bram-kc705")
    img = MemoryImage.for_profile(prof, layout="bitplane")
    assert (img.layout, img.word_bits, img.columns) == ("bitplane", 16, 16)


def test_zero_error_read_changes_nothing():
    img = build("word")
    res = img.read(BitErrorModel(0, 0), np.random.default_rng(0))
    assert all(idx.size == 0 for idx, _ in res.changes.values())
    assert res.counts["faults"] == 0


def test_image_input_errors():
    img = MemoryImage()
    img.add("x", np.zeros(10, np.uint8), 4)
    with pytest.raises(UserInputError):
        img.add("x", np.zeros(10, np.uint8), 4)
    with pytest.raises(UserInputError):
        img.add("y", np.full(10, 16, np.uint8), 4)  # code needs 5 bits
    with pytest.raises(UserInputError):
        img.add("z", np.zeros(10, np.float32), 4)
    with pytest.raises(UserInputError, match="did you mean 'x'"):
        img.read(BitErrorModel(0.1, 0.1), np.random.default_rng(0), regions=["xx"])
    with pytest.raises(UserInputError):
        MemoryImage(layout="rows")
    with pytest.raises(UserInputError):
        img.read(Chip(load_profile("sram-14nm"), 8, seed=0), np.random.default_rng(0), knob=0.9)


def test_ranges_merge_and_contains():
    r = Ranges.of([(10, 20), (0, 5), (15, 30), (40, 40)])
    np.testing.assert_array_equal(r.lo, [0, 10])
    np.testing.assert_array_equal(r.hi, [5, 30])
    np.testing.assert_array_equal(r.contains(np.array([0, 4, 5, 9, 10, 29, 30])),
                                  [1, 1, 0, 0, 1, 1, 0])


def test_values_decode_the_read_codes():
    from memory_models import decode, encode

    v = np.arange(-8, 8).repeat(50)
    img = MemoryImage(layout="bitplane", columns=64)
    img.add("w", encode(v, 4, "twos-complement"), 4)
    clean = img.read(BitErrorModel(0, 0), np.random.default_rng(0))
    np.testing.assert_array_equal(img.values(clean, "w", "twos-complement"), v)
    res = img.read(BitErrorModel(0.1, 0.1), np.random.default_rng(1))
    np.testing.assert_array_equal(img.values(res, "w", "twos-complement"),
                                  decode(img.corrupted(res, "w"), 4, "twos-complement"))


def test_chip_state_is_plain_data():
    """Campaign workers may ship chips between processes: no lambdas or closures inside."""
    from functools import partial

    chip = Chip(load_profile("dram-refresh-70c"), 1 << 16, seed=1)
    assert isinstance(chip.cells.weight_fn("p10"), partial)
    assert chip.persistent(2048).f10.size == Chip(load_profile("dram-refresh-70c"), 1 << 16,
                                                  seed=1).persistent(2048).f10.size
