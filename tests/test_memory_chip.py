"""Chips and i.i.d. error models: empirical rates inside binomial intervals, nesting along
the knob, persistence, spatial clustering, cell polarity, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from naive import memory as naive
from scipy import stats

from memory_models import BitErrorModel, Chip, MemoryImage, UserInputError
from memory_models.profile import parse_profile
from memory_models.sampling import BLOCK, NestedCells, Ranges, block_cells, entropy64, iid_cells

ALPHA = 1e-6  # two-sided: a correct sampler fails one of these checks about once a million


def within(k: int, n: int, p: float) -> bool:
    lo, hi = stats.binom.interval(1 - ALPHA, n, p)
    return lo <= k <= hi


def profile(p01="0.004", p10="0.001", sa0=None, sa1=None, frac=0.3, spatial="", polarity="",
            columns=64, rows=64):
    """A profile with table curves over knob [0, 1] (harsher = lower), or constants."""
    def curve(name, v):
        if v is None:
            return ""
        if isinstance(v, tuple):  # (p at 0, p at 1)
            return (f'[{name}]\nform = "table"\nknob = [0.0, 1.0]\np = [{v[0]}, {v[1]}]\n'
                    'provenance = "illustrative"\n')
        return f'[{name}]\nform = "constant"\nvalue = {v}\nprovenance = "illustrative"\n'

    text = f"""
name = "t"
technology = "test"
description = "test profile"
sources = ["tests"]
[knob]
name = "v"
unit = "V"
nominal = 1.0
min = 0.0
max = 1.0
harsher = "lower"
{curve("p01", p01)}{curve("p10", p10)}{curve("sa0", sa0)}{curve("sa1", sa1)}
[persistence]
fraction = {frac}
[organization]
word_bits = 64
rows = {rows}
columns = {columns}
{spatial}
{polarity}
"""
    return parse_profile(text, "test.toml")


def random_codes(n, bits, seed=0):
    return np.random.default_rng(seed).integers(0, 1 << bits, size=n).astype(np.uint8)


def bit_stats(clean, read, bits):
    """(n0, n01, n1, n10): cells holding 0 / flipped to 1, holding 1 / flipped to 0."""
    c = np.unpackbits(clean[:, None], axis=1, bitorder="little")[:, :bits]
    r = np.unpackbits(read[:, None], axis=1, bitorder="little")[:, :bits]
    return int((c == 0).sum()), int(((c == 0) & (r == 1)).sum()), int((c == 1).sum()), int(
        ((c == 1) & (r == 0)).sum())


# ------------------------------------------------------------------ BitErrorModel

def test_bit_error_model_conditional_rates():
    w = random_codes(400_000, 8)
    out = BitErrorModel(p01=0.01, p10=0.003).corrupt(w, 8, np.random.default_rng(1))
    assert out.dtype == w.dtype and out is not w
    n0, n01, n1, n10 = bit_stats(w, out, 8)
    assert within(n01, n0, 0.01) and within(n10, n1, 0.003)


def test_bit_error_model_stuck_at_rates():
    w = random_codes(300_000, 8, seed=2)
    m = BitErrorModel(p01=0.1, p10=0.0, sa0=0.05, sa1=0.02)
    out = m.corrupt(w, 8, np.random.default_rng(3))
    n0, n01, n1, n10 = bit_stats(w, out, 8)
    assert within(n01, n0, m.rates.read01)  # sa1 + (1 - sa0 - sa1) p01
    assert within(n10, n1, m.rates.read10)  # sa0
    assert abs(m.rates.read10 - 0.05) < 1e-12


def test_bit_error_model_known_outputs():
    w = random_codes(10_000, 6)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(BitErrorModel(0, 0).corrupt(w, 6, rng), w)
    np.testing.assert_array_equal(BitErrorModel(1, 1).corrupt(w, 6, rng), w ^ 0b111111)
    np.testing.assert_array_equal(BitErrorModel(0, 0, sa0=1).corrupt(w, 6, rng), 0)
    np.testing.assert_array_equal(BitErrorModel(0.3, 0.3, sa1=1).corrupt(w, 6, rng), 63)


def test_bit_error_model_signed_words_and_validation():
    w = np.arange(-128, 128, dtype=np.int8)
    out = BitErrorModel(1, 1).corrupt(w, 8, np.random.default_rng(0))
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, ~w)
    for bad in (dict(p01=1.5, p10=0), dict(p01=float("nan"), p10=0),
                dict(p01=0, p10=0, sa0=0.6, sa1=0.6)):
        with pytest.raises(UserInputError):
            BitErrorModel(**bad)


def test_bit_error_model_same_rng_same_faults():
    w = random_codes(200_000, 4)
    m = BitErrorModel(0.01, 0.02)
    a = m.corrupt(w, 4, np.random.default_rng(5))
    b = m.corrupt(w, 4, np.random.default_rng(5))
    c = m.corrupt(w, 4, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ------------------------------------------------------------------ sampling kernels

def test_block_kernel_matches_naive_and_is_per_block():
    blocks = np.array([0, 5, 6, 1000], np.int64)
    counts = np.array([3, 0, 50, 7], np.int64)
    pos, u = block_cells(77, 3, 9, blocks, counts, True)
    assert pos.size == u.size == 60
    o = 0
    for b, k in zip(blocks, counts):
        cells, us = naive.block_cells(entropy64(77), 3, 9, int(b), int(k))
        order = np.argsort(cells)  # the kernel returns a block's cells sorted
        assert list(pos[o:o + k]) == [cells[i] for i in order]
        assert list(u[o:o + k]) == [us[i] for i in order]  # each cell keeps its uniform
        o += k
    alone, _ = block_cells(77, 3, 9, blocks[2:3], counts[2:3], False)
    np.testing.assert_array_equal(alone, pos[3:53])  # a block's cells do not depend on others


def test_block_kernel_high_fill_is_distinct():
    pos, _ = block_cells(1, 1, 0, np.array([2], np.int64), np.array([BLOCK - 5], np.int64),
                         False)
    assert np.unique(pos).size == BLOCK - 5
    assert pos.min() >= 2 * BLOCK and pos.max() < 3 * BLOCK


@pytest.mark.parametrize("rate", [3e-6, 1e-4, 0.0123, 0.4])
def test_iid_cells_binomial_and_in_range(rate):
    ranges = Ranges.of([(5, BLOCK + 77), (2 * BLOCK + 3, 3 * BLOCK - 9)])
    pos = iid_cells(42, 99, rate, ranges)
    n = int((ranges.hi - ranges.lo).sum())
    assert within(pos.size, n, rate)
    assert np.all(np.diff(pos) > 0) and np.all(ranges.contains(pos))


@pytest.mark.parametrize("thr", [2.0**-30, 7e-6, 3e-4, 0.02, 0.3, 1.0])
def test_nested_cells_binomial(thr):
    n = 2 * BLOCK + 1000
    cells = NestedCells(7, 1, n).cells(thr)
    assert within(cells.size, n, thr)
    assert np.all(np.diff(cells) > 0) and (cells.size == 0 or cells[-1] < n)


def test_nested_cells_latent_uniform_within_tiers():
    nc = NestedCells(3, 1, 4 * BLOCK)
    big = nc.cells(1e-3)
    # e is U: among cells below 1e-3 the fraction below 0.37e-3 must be 0.37 (not tier edges)
    small = nc.cells(0.37e-3)
    assert np.all(np.isin(small, big))
    assert within(small.size, big.size, 0.37)


# ------------------------------------------------------------------ chips

N = 3 * BLOCK + 12345  # several blocks, the last one partial


def full(n=N):
    return Ranges.of([(0, n)])


def test_chip_rates_persistence_and_stuck_at():
    prof = profile(p01="0.004", p10="0.001", sa0="0.0005", sa1="0.002", frac=0.3)
    chip = Chip(prof, N, seed=11)
    pers = chip.persistent(0.5)
    assert within(pers.f01.size, N, 0.3 * 0.004) and within(pers.f10.size, N, 0.3 * 0.001)
    assert within(pers.s0.size, N, 0.0005) and within(pers.s1.size, N, 0.002)
    assert np.intersect1d(pers.s0, pers.s1).size == 0
    a = chip.fault_set(full(), 0.5, np.random.default_rng(1))
    b = chip.fault_set(full(), 0.5, np.random.default_rng(2))
    assert within(a.f01.size, N, 0.004) and within(a.f10.size, N, 0.001)
    # persistent faults are in every read; transient ones are redrawn
    assert np.all(np.isin(pers.f01, a.f01)) and np.all(np.isin(pers.f01, b.f01))
    pp = 0.3 * 0.004
    q = (0.004 - pp) / (1 - pp)
    assert within(np.intersect1d(a.f01, b.f01).size, N, pp + (1 - pp) * q * q)
    np.testing.assert_array_equal(a.s0, pers.s0)


def test_chip_read_conditional_rates():
    prof = profile(p01="0.02", p10="0.005", frac=0.5)
    w = random_codes(N // 8, 8, seed=4)
    chip = Chip(prof, w.size * 8, seed=3)
    out = chip.read(w, 8, 0.3, np.random.default_rng(9))
    n0, n01, n1, n10 = bit_stats(w, out, 8)
    assert within(n01, n0, 0.02) and within(n10, n1, 0.005)


def test_nesting_and_order_independence():
    prof = profile(p01=("0.05", "1e-6"), p10=("0.02", "1e-6"), sa0=("0.01", "0"),
                   sa1=("0.01", "0"), frac=0.6)
    sweep = [0.95, 0.8, 0.6, 0.3, 0.0]  # mild -> harsh
    a = Chip(prof, N, seed=5)
    b = Chip(prof, N, seed=5)
    sets_a = [a.persistent(v) for v in sweep]
    sets_b = {v: b.persistent(v) for v in reversed(sweep)}  # harsh first
    for v, fa in zip(sweep, sets_a):
        for kind in ("f01", "f10", "s0", "s1"):
            np.testing.assert_array_equal(getattr(fa, kind), getattr(sets_b[v], kind))
    for mild, harsh in zip(sets_a, sets_a[1:]):
        assert np.all(np.isin(mild.f01, harsh.f01)) and np.all(np.isin(mild.f10, harsh.f10))
        assert np.all(np.isin(mild.s0, harsh.s0))
        stuck_m, stuck_h = np.union1d(mild.s0, mild.s1), np.union1d(harsh.s0, harsh.s1)
        assert np.all(np.isin(stuck_m, stuck_h))
    assert sets_a[-1].f01.size > 10 * max(1, sets_a[1].f01.size)
    other = Chip(prof, N, seed=6).persistent(0.3)
    assert not np.array_equal(other.f01, sets_a[3].f01)


def test_chip_prefix_and_subrange_determinism():
    prof = profile(p01="0.003", p10="0.003", frac=0.5)
    small, big = Chip(prof, N, seed=9), Chip(prof, 2 * N, seed=9)
    np.testing.assert_array_equal(small.persistent(0.2).f01, big.persistent(0.2).restrict(
        full()).f01)
    sub = Ranges.of([(BLOCK - 100, 2 * BLOCK + 100)])
    whole = small.fault_set(full(), 0.2, np.random.default_rng(3))
    part = small.fault_set(sub, 0.2, np.random.default_rng(3))
    np.testing.assert_array_equal(whole.restrict(sub).f01, part.f01)
    np.testing.assert_array_equal(whole.restrict(sub).f10, part.f10)


@pytest.mark.parametrize("mode", ["column", "row"])
def test_line_correlated_faults(mode):
    spatial = (f'[spatial]\nmode = "{mode}"\nweak_fraction = 0.1\nweak_share = 0.6\n'
               'provenance = "illustrative"')
    prof = profile(p01="0.002", p10="0.002", frac=0.5, spatial=spatial, columns=64, rows=64)
    chip = Chip(prof, N, seed=21)
    fs = chip.fault_set(full(), 0.5, np.random.default_rng(0))
    cells = np.union1d(fs.f01, fs.f10)
    weak = chip.cells.weak(cells)
    all_weak = chip.cells.weak(np.arange(N))
    fw = all_weak.mean()
    m_w, m_n = 0.6 / 0.1, 0.4 / 0.9
    share = fw * m_w / (fw * m_w + (1 - fw) * m_n)
    assert within(int(weak.sum()), cells.size, share)
    assert 0.5 < share < 0.7
    # per-direction rate in weak and normal cells
    nw = int(all_weak.sum())
    assert within(int(chip.cells.weak(fs.f01).sum()), nw, 0.002 * m_w)
    # all cells of a line share its weakness (rows x columns of the first array)
    grid = all_weak[: 64 * 64].reshape(64, 64)
    same = grid == (grid[:, :1] if mode == "row" else grid[:1, :])
    assert same.all() and 0 < grid.sum() < grid.size
    if mode == "column":  # weak columns differ between arrays (no map tiled over banks)
        per_array = all_weak[: 64 * 64 * 40].reshape(40, 64 * 64)[:, :64]
        assert len({row.tobytes() for row in per_array}) > 1


def test_cell_geometry_matches_naive():
    spatial = '[spatial]\nmode = "column"\nweak_fraction = 0.1\nweak_share = 0.6'
    chip = Chip(profile(spatial=spatial, rows=48, columns=40), N, seed=1)
    pos = np.random.default_rng(0).integers(0, N, 500)
    ids = chip.cells.line_ids(pos)
    for p, got in zip(pos, ids):
        array, _row, col = naive.cell_geometry(int(p), 48, 40)
        assert got == array * 40 + col


@pytest.mark.parametrize("mode", ["alternating-rows", "alternating-columns"])
def test_dram_polarity_true_and_anti_cells(mode):
    pol = f'[polarity]\nmode = "{mode}"\nstripe = 2'
    prof = profile(p01="0.004", p10="0.004", frac=0.5, polarity=pol, columns=128)
    chip = Chip(prof, N, seed=4)
    fs = chip.fault_set(full(), 0.5, np.random.default_rng(1))

    def line(pos):
        return pos // 128 if mode == "alternating-rows" else pos % 128

    assert np.all((line(fs.f10) // 2) % 2 == 0)  # true cells: 1 -> 0 only
    assert np.all((line(fs.f01) // 2) % 2 == 1)  # anti cells: 0 -> 1 only
    n_true = int(((line(np.arange(N)) // 2) % 2 == 0).sum())
    assert within(fs.f10.size, n_true, 0.004) and within(fs.f01.size, N - n_true, 0.004)
    r = prof.rates(0.5)
    assert abs(r.p10 - 0.002) < 1e-12  # array average: half the cells are true cells


def test_all_true_cells_only_lose_ones():
    prof = profile(p01="0.01", p10="0.01", frac=0.2, polarity='[polarity]\nmode = "all-true"')
    w = random_codes(200_000, 8, seed=8)
    out = Chip(prof, w.size * 8, seed=1).read(w, 8, 0.5, np.random.default_rng(2))
    n0, n01, n1, n10 = bit_stats(w, out, 8)
    assert n01 == 0 and within(n10, n1, 0.01)


def test_chip_errors_and_zero_rates():
    prof = profile(p01=("0.01", "0"), p10=("0.01", "0"), frac=0.5)
    chip = Chip(prof, 1000, seed=0)
    w = random_codes(125, 8)
    np.testing.assert_array_equal(chip.read(w, 8, 1.0, np.random.default_rng(0)), w)
    with pytest.raises(UserInputError):
        chip.read(w, 8, 1.5, np.random.default_rng(0))  # knob outside the profile's range
    with pytest.raises(UserInputError):
        chip.read(random_codes(126, 8), 8, 0.5, np.random.default_rng(0))  # chip too small
    with pytest.raises(UserInputError):
        Chip(prof, -1, seed=0)
    with pytest.raises(UserInputError):
        Chip("no-such-profile", 10, seed=0)


def test_builtin_chip_matches_profile_ber():
    from memory_models import load_profile

    prof = load_profile("sram-14nm")
    img = MemoryImage.for_profile(prof)
    img.add("w", random_codes(500_000, 4, seed=1) & 15, 4)
    chip = Chip(prof, img.n_bits, seed=1)
    n = 500_000 * 4
    for v in (0.9, 0.85, 0.8):
        res = img.read(chip, np.random.default_rng([1, 2, 3]), knob=v)
        assert within(res.counts["changed_bits"], n, prof.rates(v).ber)
