"""Protection schemes stored in the emulated memory: SEC-DED Hamming codes, parity with
zeroing, MSB replication, bit interleaving; their check cells fail like every other cell.

A scheme turns every data word of `k` cells (weights packed LSB first, as in the "word"
layout) into a code word of `n` cells: the k data cells, then n - k check cells, all in
the same faulty memory. Reading a coded region runs the decoder on every code word that
holds a faulty cell (O(faulty words)); the other words are read as stored.

| scheme           | k   | n             | decoder                                               |
|------------------|-----|---------------|-------------------------------------------------------|
| `secded-72-64`   | 64  | 72            | extended Hamming: 1 error corrected, 2 detected       |
| `secded-39-32`   | 32  | 39            | same; 3+ errors may be miscorrected, as in hardware    |
| `secded-137-128` | 128 | 137           | same                                                  |
| `parity`         | w   | w + 1         | even parity; a word failing it reads as zero weights  |
| `msb-dup`        | w   | w + m * slots | top m bits of each weight stored twice; a mismatch     |
|                  |     |               | zeroes that weight                                    |
| `msb-tmr`        | w   | w + 2m*slots  | top m bits stored three times; majority vote          |

(w = `word=` option, default the profile's word width or 64; m = `bits=`, default 1; slots
= weights per data word.) The coded array is widened (`coded_profile`): a row holds the
data array's words per row (rounded up to a multiple of D) as whole code words.
Options, comma-separated after the name: `interleave=D` (D code
words interleaved bit by bit: bit i of word j of a group sits at cell i*D + j, so a burst
of adjacent failing cells is split across D words), `double=keep|zero` (SEC-DED: what a
detected uncorrectable word reads as: its data as read, or zero weights), `word=W`,
`bits=M`, `layers=A+B` (protect only those layers; names as in `--protect layer:`).
"Zero weights" means the value 0 (the region's `zero_code`); a region without one (1-bit
binarized weights) keeps the data as read.

SEC-DED layout: Hamming positions 1..n-1 hold check bits at the powers of two and the data
bits at the other positions in order; position 0 is the overall parity. Cells 0..k-1 are
the data bits, then the check bits 2^0 .. 2^(r-1), then the overall parity. Decoding (the
hardware's logic): syndrome s = XOR of the positions of the bits read as 1, P = parity of
all n bits read: s = 0, P = 0: clean; P = 1 and s a position of the code: flip that bit
(s = 0: the overall parity bit); P = 1 and s beyond the code (shortened codes): detected;
P = 0, s != 0: detected (double error).

Read counts added by coded regions: `words_in_error` (code words read differently from
stored), `corrected` (decoded to the stored data, no flag), `detected` (flagged
uncorrectable), `silent` (decoded to wrong data without a flag: miscorrections and
undetected patterns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from memory_models._kernels import NJIT
from memory_models.usererror import UserInputError

SECDED = {"secded-72-64": (72, 64), "secded-39-32": (39, 32), "secded-137-128": (137, 128)}
SCHEMES = ("none", *SECDED, "parity", "msb-dup", "msb-tmr")
ECC_COUNT_KEYS = ("words_in_error", "corrected", "detected", "silent")
DOUBLE_POLICIES = ("keep", "zero")

KIND_SECDED, KIND_PARITY, KIND_REPLICA = 0, 1, 2
_OPTIONS = {"interleave", "double", "word", "bits", "layers"}
_FIX = (f"use one of {', '.join(SCHEMES)}, with options ',interleave=D', ',double=keep|zero', "
        "',word=W', ',bits=M', ',layers=A+B' (e.g. secded-72-64,interleave=4)")


@dataclass(frozen=True)
class Protection:
    """A parsed protection scheme (see the module docstring). `key` is its canonical text."""

    scheme: str = "none"
    interleave: int = 1
    double: str = "keep"
    word: int | None = None  # data bits per word (parity, msb-*); None = profile's word
    bits: int = 1  # msb-*: replicated top bits per weight
    layers: tuple[str, ...] = ()  # empty = every layer

    @property
    def enabled(self) -> bool:
        return self.scheme != "none"

    @property
    def key(self) -> str:
        if not self.enabled:
            return "none"
        parts = [self.scheme]
        if self.interleave != 1:
            parts.append(f"interleave={self.interleave}")
        if self.scheme in SECDED and self.double != "keep":
            parts.append(f"double={self.double}")
        if self.scheme not in SECDED and self.word is not None:
            parts.append(f"word={self.word}")
        if self.scheme.startswith("msb-") and self.bits != 1:
            parts.append(f"bits={self.bits}")
        if self.layers:
            parts.append("layers=" + "+".join(self.layers))
        return ",".join(parts)

    def data_bits(self, word_bits: int | None) -> int:
        """k: data cells per code word."""
        if self.scheme in SECDED:
            return SECDED[self.scheme][1]
        return int(self.word or word_bits or 64)


def parse_protection(text: str | Protection | None, option: str = "--protection") -> Protection:
    """'secded-72-64,interleave=4' -> Protection; UserInputError naming the schemes if bad."""
    if text is None:
        return Protection()
    if isinstance(text, Protection):
        return text
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        return Protection()
    name = parts[0].lower()
    if name not in SCHEMES:
        raise UserInputError(option, parts[0], "unknown protection scheme", _FIX)
    opts: dict[str, str] = {}
    for p in parts[1:]:
        key, eq, val = p.partition("=")
        key = key.strip().lower()
        if not eq or key not in _OPTIONS or not val.strip():
            raise UserInputError(option, p, "bad protection option", _FIX)
        opts[key] = val.strip()
    if name == "none":
        if opts:
            raise UserInputError(option, str(text), "'none' takes no options", _FIX)
        return Protection()

    def integer(key: str, default: int | None, lo: int, hi: int) -> int | None:
        if key not in opts:
            return default
        try:
            v = int(opts[key])
        except ValueError:
            raise UserInputError(option, f"{key}={opts[key]}", "not an integer", _FIX) from None
        if not lo <= v <= hi:
            raise UserInputError(option, f"{key}={v}", f"outside {lo}..{hi}", _FIX)
        return v

    double = opts.get("double", "keep").lower()
    if double not in DOUBLE_POLICIES:
        raise UserInputError(option, f"double={double}", "unknown policy", _FIX)
    if "double" in opts and name not in SECDED:
        raise UserInputError(option, "double", f"only SEC-DED codes take it, not {name}", _FIX)
    if name in SECDED and "word" in opts:
        raise UserInputError(option, "word", f"{name} has a fixed data word", _FIX)
    if "bits" in opts and not name.startswith("msb-"):
        raise UserInputError(option, "bits", "only msb-dup / msb-tmr take it", _FIX)
    layers = tuple(x.strip() for x in opts.get("layers", "").split("+") if x.strip())
    return Protection(scheme=name, interleave=integer("interleave", 1, 1, 1024),
                      double=double, word=integer("word", None, 1, 1024),
                      bits=integer("bits", 1, 1, 16), layers=layers)


# ---------------------------------------------------------------------------- codes
@dataclass(frozen=True)
class Code:
    """One scheme applied to one region's b-bit weights (what the decoder kernel needs).

    k data cells (slots = k // bits weights, LSB first), n cells per code word. hpos: per
    cell, its Hamming position (SEC-DED) ; src: per cell, the data cell it copies
    (replicas; -1 for data cells). copies: 2 or 3 (replicas). interleave: D.
    """

    kind: int
    k: int
    n: int
    bits: int
    slots: int
    interleave: int
    zero_double: bool
    hpos: np.ndarray
    src: np.ndarray
    copies: int

    @property
    def check_cells(self) -> int:
        return self.n - self.k


def hamming_positions(k: int) -> tuple[np.ndarray, int]:
    """(Hamming position of each data bit, number r of Hamming check bits) for k data bits."""
    r = 0
    while (1 << r) < k + r + 1:
        r += 1
    pos = [p for p in range(1, k + r + 1) if p & (p - 1)][:k]  # skip powers of two
    return np.array(pos, np.int64), r


def make_code(prot: Protection, bits: int, word_bits: int | None) -> Code:
    """The code of `prot` for a region of `bits`-bit weights (word_bits: the array's word)."""
    k = prot.data_bits(word_bits)
    if bits > k:
        raise UserInputError("--protection", prot.key, f"a {bits}-bit value does not fit in "
                             f"its {k}-bit data word", "use a wider word (word=W)")
    slots = k // bits
    z = np.zeros(0, np.int64)
    if prot.scheme in SECDED:
        n = SECDED[prot.scheme][0]
        dpos, r = hamming_positions(k)
        assert k + r + 1 == n
        hpos = np.concatenate([dpos, 1 << np.arange(r, dtype=np.int64), [0]]).astype(np.int64)
        return Code(KIND_SECDED, k, n, bits, slots, prot.interleave, prot.double == "zero",
                    hpos, z, 0)
    if prot.scheme == "parity":
        return Code(KIND_PARITY, k, k + 1, bits, slots, prot.interleave, True, z, z, 0)
    m = min(prot.bits, bits)
    copies = 2 if prot.scheme == "msb-dup" else 3
    src = [-1] * k
    for s in range(slots):
        for t in range(m):  # protected bit: bits-1-t of slot s
            for _ in range(copies - 1):
                src.append(s * bits + bits - 1 - t)
    return Code(KIND_REPLICA, k, len(src), bits, slots, prot.interleave, True, z,
                np.array(src, np.int64), copies)


# ---------------------------------------------------------------------------- kernels
@numba.njit(**NJIT)
def _stored_word(codes, w, bits, slots, k, n, kind, hpos, src, buf):
    """The n cells of code word w as stored (uint8 per cell) into buf[:n]."""
    n_codes = codes.size
    for i in range(k):
        buf[i] = 0
    for s in range(slots):
        q = w * slots + s
        if q < n_codes:
            c = np.int64(codes[q])
            for j in range(bits):
                buf[s * bits + j] = (c >> j) & 1
    if kind == KIND_SECDED:
        syn = 0
        par = 0
        for i in range(k):
            if buf[i]:
                syn ^= hpos[i]
                par ^= 1
        for i in range(k, n - 1):  # check bit at position 2^r = bit r of the data syndrome
            b = 1 if (syn & hpos[i]) else 0
            buf[i] = b
            par ^= b
        buf[n - 1] = par  # overall parity: even over all n cells
    elif kind == KIND_PARITY:
        par = 0
        for i in range(k):
            par ^= buf[i]
        buf[k] = par
    else:
        for i in range(k, n):
            buf[i] = buf[src[i]]


@numba.njit(**NJIT)
def _decode_word(read, k, n, kind, hpos, cell_at, src, copies, bits, slots, drop):
    """Decode one read code word in place (data cells 0..k-1 corrected); drop[s] = 1 for the
    slots the decoder zeroes or flags; cell_at: Hamming position -> cell. Returns 0 clean
    or corrected, 1 detected."""
    for s in range(slots):
        drop[s] = 0
    if kind == KIND_SECDED:
        syn = 0
        par = 0
        for i in range(n):
            if read[i]:
                syn ^= hpos[i]  # position 0 (overall parity) adds nothing
                par ^= 1
        if syn == 0 and par == 0:
            return 0
        if par == 1:
            if syn == 0:
                return 0  # the overall parity cell itself
            if syn < n:  # positions 1..n-1 all exist: single error at position syn
                read[cell_at[syn]] ^= 1
                return 0
            for s in range(slots):  # syndrome beyond the shortened code: 3+ errors
                drop[s] = 1
            return 1
        for s in range(slots):  # even parity, non-zero syndrome: double error
            drop[s] = 1
        return 1
    if kind == KIND_PARITY:
        par = 0
        for i in range(n):
            par ^= read[i]
        if par:
            for s in range(slots):
                drop[s] = 1
            return 1
        return 0
    flagged = 0
    i = k
    while i < n:
        d = src[i]
        if copies == 2:
            if read[i] != read[d]:
                drop[d // bits] = 1
                flagged = 1
        else:
            votes = read[d] + read[i] + read[i + 1]
            read[d] = 1 if votes >= 2 else 0
        i += copies - 1
    return flagged


@numba.njit(**NJIT)
def _decode_region(codes, bits, slots, k, n, kind, hpos, src, copies, zero_double, zero_code,
                   has_zero, word, cell, flags, out_idx, out_new, counts):
    cell_at = np.zeros(n, np.int64)  # Hamming position -> cell (SEC-DED)
    if kind == KIND_SECDED:
        for i in range(n):
            cell_at[hpos[i]] = i
    """Read every faulty code word of a region through its decoder.

    word / cell / flags: one entry per faulty cell, sorted by (word, cell); flags bit 0 =
    f01, 1 = f10, 2 = stuck at 0, 3 = stuck at 1 (stuck wins, s0 over s1). Writes the
    weights whose decoded code differs from the stored one (sorted) to out_idx / out_new
    and returns their number. counts (int64[4]): words in error, corrected, detected,
    silent.
    """
    stored = np.zeros(n, np.uint8)
    read = np.zeros(n, np.uint8)
    drop = np.zeros(slots, np.uint8)
    n_codes = codes.size
    o = 0
    a = 0
    m = word.size
    while a < m:
        w = word[a]
        b = a
        while b < m and word[b] == w:
            b += 1
        _stored_word(codes, w, bits, slots, k, n, kind, hpos, src, stored)
        for i in range(n):
            read[i] = stored[i]
        differs = False
        for t in range(a, b):
            i = cell[t]
            f = flags[t]
            v = stored[i]
            if f & 4:
                v = 0
            elif f & 8:
                v = 1
            elif (f & 1) and v == 0:
                v = 1
            elif (f & 2) and v == 1:
                v = 0
            if v != stored[i]:
                read[i] = v
                differs = True
        a = b
        if not differs:
            continue
        counts[0] += 1
        det = _decode_word(read, k, n, kind, hpos, cell_at, src, copies, bits, slots, drop)
        wrong = False
        for s in range(slots):
            q = w * slots + s
            if q >= n_codes:
                break
            c = np.int64(0)
            for j in range(bits):
                c |= np.int64(read[s * bits + j]) << j
            if drop[s] and has_zero and (kind != KIND_SECDED or zero_double):
                c = zero_code
            if drop[s] == 0:
                for j in range(bits):
                    if read[s * bits + j] != stored[s * bits + j]:
                        wrong = True
            if c != np.int64(codes[q]):
                out_idx[o] = q
                out_new[o] = c
                o += 1
        if det:
            counts[2] += 1
        elif wrong:
            counts[3] += 1
        else:
            counts[1] += 1
    return o


def coded_profile(profile, code: Code):
    """The profile of the array that stores `code`: as wide as its data array's words per
    row (at least one, rounded up to a multiple of the interleaving degree D) times n
    cells, so that every code word lies in one row and each of its cells in its own
    column (weak columns, polarity stripes), as in an ECC array with column interleaving."""
    import dataclasses

    org = profile.organization
    per_row = max(1, org.columns // code.k)
    per_row = -(-per_row // code.interleave) * code.interleave
    wide = dataclasses.replace(org, columns=per_row * code.n)
    return dataclasses.replace(profile, organization=wide)


def locate(off: np.ndarray, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Region cell offsets -> (code word, cell within the word), D-way interleaved."""
    group, within = np.divmod(np.asarray(off, np.int64), d * n)
    cell, lane = np.divmod(within, d)
    return group * d + lane, cell


def cell_offset(word: np.ndarray, cell: np.ndarray, n: int, d: int) -> np.ndarray:
    """Inverse of `locate`: offset of cell `cell` of code word `word`."""
    group, lane = np.divmod(np.asarray(word, np.int64), d)
    return group * d * n + np.asarray(cell, np.int64) * d + lane


def coded_span(n_codes: int, code: Code) -> int:
    """Cells a region of n_codes weights takes: whole groups of D code words."""
    words = -(-n_codes // code.slots)
    groups = -(-words // code.interleave)
    return groups * code.interleave * code.n


def read_coded(codes: np.ndarray, code: Code, zero_code: int | None, lo: int,
               fault_lists: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Decode a coded region [lo, lo + span) under sorted global fault lists (f01, f10,
    s0, s1 inside the region). Returns (idx, new codes, ECC counts and `faults`, the number
    of faulty cells)."""
    offs, fl = [], []
    for bit, a in enumerate(fault_lists):
        if a.size:
            offs.append(a - lo)
            fl.append(np.full(a.size, 1 << bit, np.int64))
    counts = np.zeros(4, np.int64)
    if not offs:
        return (np.zeros(0, np.int64), np.zeros(0, codes.dtype),
                dict.fromkeys(ECC_COUNT_KEYS, 0) | {"faults": 0})
    off = np.concatenate(offs)
    flags = np.concatenate(fl)
    word, cell = locate(off, code.n, code.interleave)
    # sorted runs of one key (timsort merges them; with D = 1 the key is the offset)
    order = np.argsort(word * code.n + cell, kind="stable")
    word, cell, flags = word[order], cell[order], flags[order]
    # a cell in several lists: one entry with the flags OR-ed (the kernel applies priority)
    first = np.ones(word.size, bool)
    first[1:] = (word[1:] != word[:-1]) | (cell[1:] != cell[:-1])
    starts = np.flatnonzero(first)
    flags = np.bitwise_or.reduceat(flags, starts)
    word, cell = word[starts], cell[starts]
    n_words = 1 + int(np.count_nonzero(word[1:] != word[:-1]))
    cap = n_words * code.slots
    out_idx = np.empty(cap, np.int64)
    out_new = np.empty(cap, np.int64)
    flat = np.ascontiguousarray(codes.reshape(-1))
    o = _decode_region(flat, code.bits, code.slots, code.k, code.n, code.kind, code.hpos,
                       code.src, code.copies, code.zero_double,
                       np.int64(0 if zero_code is None else zero_code), zero_code is not None,
                       word, cell, flags, out_idx, out_new, counts)
    return (out_idx[:o], out_new[:o].astype(codes.dtype),
            dict(zip(ECC_COUNT_KEYS, (int(x) for x in counts))) | {"faults": int(word.size)})
