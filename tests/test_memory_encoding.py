"""Encodings: every code of every width 1..8 (and spot checks to 16) against the naive
definitions; round trips; range errors."""

from __future__ import annotations

import numpy as np
import pytest
from naive import memory as naive

from memory_models import ENCODINGS, UserInputError, decode, encode
from memory_models.encoding import value_range

CASES = [(enc, b) for enc in ENCODINGS for b in range(1, 9) if enc != "binary"] + [("binary", 1)]


@pytest.mark.parametrize(("encoding", "bits"), CASES)
def test_every_code_matches_naive_and_round_trips(encoding, bits):
    codes = np.arange(1 << bits, dtype=np.uint8)
    values = decode(codes, bits, encoding)
    assert values.dtype == np.int16
    assert [int(v) for v in values] == [naive.decode(int(c), bits, encoding) for c in codes]
    lo, hi = value_range(bits, encoding)
    allv = np.array([-1, 1]) if encoding == "binary" else np.arange(lo, hi + 1)
    enc = encode(allv, bits, encoding)
    assert enc.dtype == np.uint8
    assert [int(c) for c in enc] == [naive.encode(int(v), bits, encoding) for v in allv]
    np.testing.assert_array_equal(decode(enc, bits, encoding), allv)  # value -> code -> value
    back = encode(values, bits, encoding)  # code -> value -> code
    if encoding == "sign-magnitude" and bits > 1:
        neg_zero = 1 << (bits - 1)  # "-0" decodes to 0 and re-encodes as +0
        np.testing.assert_array_equal(back[codes != neg_zero], codes[codes != neg_zero])
        assert back[neg_zero] == 0
    elif encoding == "sign-magnitude":
        np.testing.assert_array_equal(back, 0)  # 1 bit: only the sign, every code is 0
    else:
        np.testing.assert_array_equal(back, codes)


@pytest.mark.parametrize("encoding", ENCODINGS[:3])
@pytest.mark.parametrize("bits", [9, 12, 16])
def test_wide_codes(encoding, bits):
    lo, hi = value_range(bits, encoding)
    v = np.linspace(lo, hi, 257).round().astype(np.int64)
    c = encode(v, bits, encoding)
    assert c.dtype == np.uint16
    assert [int(x) for x in c] == [naive.encode(int(x), bits, encoding) for x in v]
    np.testing.assert_array_equal(decode(c, bits, encoding), v)


def test_offset_binary_is_q_plus_half():
    np.testing.assert_array_equal(encode(np.array([-8, -1, 0, 7]), 4, "offset-binary"),
                                  [0, 7, 8, 15])


def test_binary_is_one_for_plus_one():
    np.testing.assert_array_equal(encode(np.array([-1, 1, 1]), 1, "binary"), [0, 1, 1])
    np.testing.assert_array_equal(decode(np.array([0, 1]), 1, "binary"), [-1, 1])


def test_shape_is_kept():
    v = np.arange(-8, 8).reshape(2, 4, 2)
    assert encode(v, 4, "twos-complement").shape == (2, 4, 2)
    assert decode(encode(v, 4, "twos-complement"), 4, "twos-complement").shape == (2, 4, 2)


@pytest.mark.parametrize(
    ("values", "bits", "encoding", "field"),
    [
        ([8], 4, "twos-complement", "values"),
        ([-9], 4, "offset-binary", "values"),
        ([-8], 4, "sign-magnitude", "values"),
        ([0], 1, "binary", "values"),
        ([1], 2, "binary", "bits"),
        ([1], 0, "twos-complement", "bits"),
        ([1], 17, "twos-complement", "bits"),
        ([1], 4, "twos-complement2", "encoding"),
        ([0.5], 4, "twos-complement", "values"),
    ],
)
def test_bad_input_is_a_user_error(values, bits, encoding, field):
    with pytest.raises(UserInputError) as err:
        encode(np.array(values), bits, encoding)
    assert err.value.field == field


def test_unknown_encoding_suggests_close_name():
    with pytest.raises(UserInputError, match="offset-binary"):
        decode(np.array([1]), 4, "offset-binar")
