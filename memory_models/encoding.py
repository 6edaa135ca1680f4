"""Bit encodings of signed b-bit integers (b = 1..16) as unsigned codes.

Bit j of a code is stored in cell j of the weight (bit 0 = least significant).

| encoding          | value range                      | code                               |
|-------------------|----------------------------------|------------------------------------|
| twos-complement   | [-2^(b-1), 2^(b-1) - 1]          | v mod 2^b                          |
| offset-binary     | [-2^(b-1), 2^(b-1) - 1]          | v + 2^(b-1)                        |
| sign-magnitude    | [-(2^(b-1) - 1), 2^(b-1) - 1]    | (v < 0) << (b-1) \\| abs(v)         |
| binary (b = 1)    | {-1, +1}                         | 1 for +1, 0 for -1                 |

Codes are uint8 for b <= 8 and uint16 for b <= 16; decoded values are int16. In
sign-magnitude the code with only the sign bit set ("-0") decodes to 0.
"""

from __future__ import annotations

import numpy as np

from memory_models.usererror import UserInputError

ENCODINGS = ("twos-complement", "offset-binary", "sign-magnitude", "binary")

MAX_BITS = 16


def code_dtype(bits: int) -> np.dtype:
    """Smallest unsigned dtype that holds a `bits`-bit code."""
    return np.dtype(np.uint8) if bits <= 8 else np.dtype(np.uint16)


def check_bits(bits: int, encoding: str | None = None, source: str = "encoding") -> int:
    """Validate a bit width (and the encoding name); return it as int."""
    if encoding is not None and encoding not in ENCODINGS:
        import difflib

        close = difflib.get_close_matches(str(encoding), ENCODINGS, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(ENCODINGS)}"
        raise UserInputError(source, "encoding", f"unknown encoding '{encoding}'", hint)
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer):
        raise UserInputError(source, "bits", f"bit width must be an integer, got {bits!r}",
                             "pass an integer between 1 and 16")
    bits = int(bits)
    if not 1 <= bits <= MAX_BITS:
        raise UserInputError(source, "bits", f"bit width {bits} outside 1..{MAX_BITS}",
                             "pass an integer between 1 and 16")
    if encoding == "binary" and bits != 1:
        raise UserInputError(source, "bits", f"the binary encoding has 1 bit, got {bits}",
                             "use bits=1 for binarized weights")
    return bits


def value_range(bits: int, encoding: str) -> tuple[int, int]:
    """Smallest and largest value representable (inclusive)."""
    bits = check_bits(bits, encoding)
    if encoding == "binary":
        return -1, 1
    half = 1 << (bits - 1)
    if encoding == "sign-magnitude":
        return -(half - 1), half - 1
    return -half, half - 1


def encode(values: np.ndarray, bits: int, encoding: str) -> np.ndarray:
    """Signed integers -> unsigned codes (uint8 for bits <= 8, else uint16), same shape.

    Raises UserInputError for values outside the encoding's range (or not ±1 for binary).
    """
    bits = check_bits(bits, encoding)
    v = np.asarray(values)
    if v.dtype.kind not in "iub":
        if v.dtype.kind == "f" and np.all(np.isfinite(v)) and np.all(v == np.round(v)):
            v = v.astype(np.int64)
        else:
            raise UserInputError("encode", "values", f"values must be integers, got {v.dtype}",
                                 "round/quantize the weights before encoding")
    v = v.astype(np.int64)
    lo, hi = value_range(bits, encoding)
    dt = code_dtype(bits)
    if encoding == "binary":
        bad = (v != 1) & (v != -1)
        if bad.any():
            raise UserInputError("encode", "values",
                                 f"binary encoding stores only -1 and +1, got {v[bad].flat[0]}",
                                 "binarize the weights to ±1")
        return (v > 0).astype(dt)
    if v.size and (v.min() < lo or v.max() > hi):
        bad = v[(v < lo) | (v > hi)].flat[0]
        raise UserInputError("encode", "values",
                             f"value {bad} outside [{lo}, {hi}] for {bits}-bit {encoding}",
                             "clip or requantize the weights to the encoding's range")
    mask = (1 << bits) - 1
    if encoding == "twos-complement":
        code = v & mask  # v mod 2^b (numpy & on negative int64 is two's complement)
    elif encoding == "offset-binary":
        code = v + (1 << (bits - 1))
    else:  # sign-magnitude: sign bit is the top bit
        code = (np.where(v < 0, 1, 0) << (bits - 1)) | np.abs(v)
    return code.astype(dt)


def decode(codes: np.ndarray, bits: int, encoding: str) -> np.ndarray:
    """Unsigned codes -> signed values (int16), same shape. Bits above `bits` are ignored."""
    bits = check_bits(bits, encoding)
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise UserInputError("decode", "codes", f"codes must be integers, got {c.dtype}",
                             "pass the unsigned codes returned by encode()")
    mask = (1 << bits) - 1
    c = c.astype(np.int64) & mask
    half = 1 << (bits - 1)
    if encoding == "binary":
        out = np.where(c & 1, 1, -1)
    elif encoding == "twos-complement":
        out = np.where(c >= half, c - (1 << bits), c)
    elif encoding == "offset-binary":
        out = c - half
    else:
        mag = c & (half - 1)  # low b-1 bits
        out = np.where(c & half, -mag, mag)
    return out.astype(np.int16)
