"""Protection codes in the emulated memory against the naive bit-by-bit reference
(tests/naive/protection.py): SEC-DED, parity, MSB replication, interleaving, stuck-at and
check-cell faults; the uncorrectable-word rate at i.i.d. p; parsing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import protection as naive
from scipy.stats import binomtest

import memory_models as mm
from memory_models.protection import SCHEMES, SECDED, make_code, parse_protection
from memory_models.sampling import FaultSet
from memory_models.usererror import UserInputError

KINDS = ("f01", "f10", "s0", "s1")


class FixedFaults:
    """An error source with a given fault map (region offsets from `start`)."""

    def __init__(self, faults: dict[int, str], start: int = 0) -> None:
        lists = {k: sorted(start + c for c, v in faults.items() if v == k) for k in KINDS}
        self.fs = FaultSet(*(np.array(lists[k], np.int64) for k in KINDS))

    def fault_set(self, ranges, knob, rng, n_cells=None):
        return self.fs.restrict(ranges)


def _image(codes, bits, scheme, zero_code=0, word_bits=64):
    prot = parse_protection(scheme)
    code = make_code(prot, bits, word_bits)
    img = mm.MemoryImage(layout="word", word_bits=word_bits)
    img.add("w", np.asarray(codes, np.uint16 if bits > 8 else np.uint8), bits, code=code,
            zero_code=zero_code)
    return img, code, prot


def _read(img, faults):
    start = img.region("w").start
    res = img.read(FixedFaults(faults, start), None)
    return [int(c) for c in img.corrupted(res, "w")], res


def _naive(codes, bits, prot, code, zero_code, faults):
    return naive.read_region([int(c) for c in codes], bits, prot.scheme, code.k, code.n,
                             prot.interleave, prot.bits, prot.double, zero_code, faults)


@pytest.mark.parametrize("scheme", list(SECDED))
def test_secded_naive_reference_is_a_code(scheme):
    """The reference itself: every single error is corrected, every double detected."""
    n, k = SECDED[scheme]
    rng = np.random.default_rng(1)
    data = list(rng.integers(0, 2, k))
    word = naive.secded_encode(data, n, k)
    assert naive.secded_decode(word, n, k) == (data, "ok")
    for i in range(n):
        bad = list(word)
        bad[i] ^= 1
        assert naive.secded_decode(bad, n, k) == (data, "corrected")
    for i, j in list(itertools.combinations(range(n), 2))[::7]:
        bad = list(word)
        bad[i] ^= 1
        bad[j] ^= 1
        assert naive.secded_decode(bad, n, k)[1] == "detected"


@pytest.mark.parametrize("scheme", list(SECDED))
def test_secded_0_1_2_3_errors_match_the_reference(scheme):
    """One code word: no error, every single error (data and check cells), a sample of
    double and triple errors; decoded weights and ECC counts as the reference says."""
    n, k = SECDED[scheme]
    bits = 4
    codes = np.random.default_rng(2).integers(0, 16, k // bits)
    img, code, prot = _image(codes, bits, scheme + ",double=zero", zero_code=8)
    got, res = _read(img, {})
    assert got == list(codes) and res.counts["words_in_error"] == 0
    rng = np.random.default_rng(3)
    patterns = [(i,) for i in range(n)]
    patterns += [tuple(rng.choice(n, 2, replace=False)) for _ in range(60)]
    patterns += [tuple(rng.choice(n, 3, replace=False)) for _ in range(60)]
    stats = {"corrected": 0, "detected": 0, "silent": 0}
    for pat in patterns:
        stored = naive.encode_word(scheme, [(int(codes[i // 4]) >> (i % 4)) & 1
                                            for i in range(k)], bits, k, 1)
        faults = {int(c): ("f10" if stored[c] else "f01") for c in pat}  # every one flips
        got, res = _read(img, faults)
        assert got == _naive(codes, bits, prot, code, 8, faults), pat
        assert res.counts["words_in_error"] == 1
        if len(pat) == 1:
            assert got == list(codes) and res.counts["corrected"] == 1
        if len(pat) == 2:
            assert res.counts["detected"] == 1 and got == [8] * len(codes)
        for key in stats:
            stats[key] += res.counts[key]
    assert stats["silent"] > 0  # some triple errors are miscorrected, as in hardware


settings_ = settings(max_examples=60, deadline=None, derandomize=True)


@settings_
@given(data=st.data())
def test_every_scheme_matches_the_reference(data):
    scheme = data.draw(st.sampled_from([s for s in SCHEMES if s != "none"]))
    bits = data.draw(st.sampled_from([1, 2, 3, 4, 8, 16]))
    opts = [f"interleave={data.draw(st.sampled_from([1, 2, 3, 4]))}"]
    if scheme in SECDED:
        opts.append(f"double={data.draw(st.sampled_from(['keep', 'zero']))}")
    else:
        opts.append(f"word={data.draw(st.sampled_from([16, 32, 64]))}")
    if scheme.startswith("msb-"):
        opts.append(f"bits={data.draw(st.integers(1, 3))}")
    text = ",".join([scheme, *opts])
    prot = parse_protection(text)
    if bits > prot.data_bits(64):
        return
    n_codes = data.draw(st.integers(1, 40))
    codes = data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n_codes,
                               max_size=n_codes))
    zero_code = data.draw(st.sampled_from([None, 0, (1 << bits) - 1]))
    img, code, prot = _image(codes, bits, text, zero_code)
    span = img.region("w").span
    cells = data.draw(st.lists(st.integers(0, span - 1), max_size=30, unique=True))
    faults = {c: data.draw(st.sampled_from(KINDS)) for c in cells}
    got, _ = _read(img, faults)
    assert got == _naive(codes, bits, prot, code, zero_code, faults)


@pytest.mark.parametrize("scheme", [*SECDED, "secded-72-64,interleave=4"])
def test_one_fault_per_word_anywhere_reads_clean(scheme):
    """Any one faulty cell per code word, stuck-at or flip, check cells included."""
    rng = np.random.default_rng(4)
    codes = rng.integers(0, 16, 1000)
    img, code, _ = _image(codes, 4, scheme)
    reg = img.region("w")
    n_words = reg.span // code.n
    word = np.arange(n_words)
    cell = rng.integers(0, code.n, n_words)
    from memory_models.protection import cell_offset

    offs = cell_offset(word, cell, code.n, code.interleave)
    faults = {int(o): KINDS[int(t)] for o, t in zip(offs, rng.integers(0, 4, n_words))}
    got, res = _read(img, faults)
    assert got == list(codes)
    assert res.counts["detected"] == 0 and res.counts["silent"] == 0
    assert res.counts["words_in_error"] == res.counts["corrected"] > n_words // 3


def test_uncorrectable_72_bit_words_follow_the_binomial_law():
    """At i.i.d. p per cell, P(uncorrectable) = 1 - (1-p)^72 - 72 p (1-p)^71."""
    p = 0.01
    codes = np.random.default_rng(5).integers(0, 16, 16 * 20000).astype(np.uint8)
    img, code, _ = _image(codes, 4, "secded-72-64")
    words = img.region("w").span // code.n
    res = img.read(mm.BitErrorModel(p01=p, p10=p), np.random.default_rng(6))
    bad = res.counts["detected"] + res.counts["silent"]
    q = 1 - (1 - p) ** 72 - 72 * p * (1 - p) ** 71
    ci = binomtest(bad, words, q).proportion_ci(0.999)
    assert ci.low <= q <= ci.high
    single = res.counts["corrected"]
    q1 = 72 * p * (1 - p) ** 71
    ci1 = binomtest(single, words, q1).proportion_ci(0.999)
    assert ci1.low <= q1 <= ci1.high


def test_no_fault_and_uncoded_neighbours():
    """A coded and an uncoded region side by side: no faults, nothing changes; the uncoded
    region reads exactly as in an image without codes."""
    rng = np.random.default_rng(7)
    a = rng.integers(0, 16, 300).astype(np.uint8)
    b = rng.integers(0, 16, 300).astype(np.uint8)
    img = mm.MemoryImage(layout="word", word_bits=64)
    img.add("a", a, 4)
    img.add("b", b, 4, code=make_code(parse_protection("secded-72-64"), 4, 64), zero_code=8)
    plain = mm.MemoryImage(layout="word", word_bits=64)
    plain.add("a", a, 4)
    res = img.read(mm.BitErrorModel(0.0, 0.0), np.random.default_rng(0))
    assert all(idx.size == 0 for idx, _ in res.changes.values())
    src = mm.BitErrorModel(0.02, 0.02)
    r1 = img.read(src, np.random.default_rng(9), regions=["a"])
    r2 = plain.read(src, np.random.default_rng(9))
    np.testing.assert_array_equal(img.corrupted(r1, "a"), plain.corrupted(r2, "a"))


def test_cell_and_weight_bit_are_inverse_on_coded_regions():
    img, code, _ = _image(np.arange(100) % 16, 4, "secded-39-32,interleave=3")
    reg = img.region("w")
    k, j = np.meshgrid(np.arange(100), np.arange(4), indexing="ij")
    cells = reg.cell(k.ravel(), j.ravel())
    assert np.unique(cells).size == cells.size and cells.max() < reg.span
    kk, jj, valid = reg.weight_bit(cells)
    assert valid.all()
    np.testing.assert_array_equal(kk, k.ravel())
    np.testing.assert_array_equal(jj, j.ravel())


@pytest.mark.parametrize("text, needle", [
    ("hamming", "unknown protection scheme"), ("secded-72-64,interleave=0", "outside"),
    ("secded-72-64,double=maybe", "unknown policy"), ("parity,double=zero", "only SEC-DED"),
    ("secded-72-64,word=32", "fixed data word"), ("secded-72-64,depth=2", "bad protection"),
    ("parity,bits=2", "only msb"), ("none,interleave=2", "no options"),
])
def test_bad_scheme_text_names_the_schemes(text, needle):
    with pytest.raises(UserInputError) as e:
        parse_protection(text)
    msg = str(e.value)
    assert needle in msg and "secded-72-64" in msg and "--protection" in msg


def test_canonical_keys():
    assert parse_protection(None).key == "none"
    assert parse_protection("SECDED-72-64 , interleave=1").key == "secded-72-64"
    assert parse_protection("secded-72-64,double=zero,interleave=4").key == \
        "secded-72-64,interleave=4,double=zero"
    assert parse_protection("msb-tmr,bits=2,layers=fc1+fc2").key == \
        "msb-tmr,bits=2,layers=fc1+fc2"
