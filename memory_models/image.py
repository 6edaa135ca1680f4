"""Memory images: where each bit of each weight lives, and applying faults to codes.

A `MemoryImage` holds named regions (one per weight tensor) laid out in `add()` order, each
starting on a row boundary (`columns` cells per row). Layouts:

- "word": weights packed LSB first into words of `word_bits` cells, floor(word_bits/bits)
  weights per word (leftover cells unused); word_bits None packs them back to back:
  cell(k, j) = k*bits + j.
- "bitplane": bit j of all weights of a region is contiguous, each plane padded to a row:
  cell(k, j) = j*plane + k, plane = n rounded up to `columns`.
- a coded region (`add(..., code=)`, word layout only): data words of `code.k` cells
  become code words of `code.n` cells with their check cells, D-way interleaved
  (`memory_models.protection`); reading it decodes every faulty code word.

Reading the image through a source (a `Chip` or a `BitErrorModel`) samples the faults of
the read cell ranges (O(faults)) and returns only the codes that changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from memory_models.encoding import check_bits
from memory_models.protection import (
    ECC_COUNT_KEYS,
    Code,
    cell_offset,
    coded_span,
    locate,
    read_coded,
)
from memory_models.sampling import FaultSet, Ranges
from memory_models.usererror import UserInputError

LAYOUTS = ("word", "bitplane")
DEFAULT_ROW_CELLS = 64  # row alignment when no `columns` is given
COUNT_KEYS = ("faults", "flip01", "flip10", "sa0", "sa1", "changed_bits", *ECC_COUNT_KEYS)


@dataclass(frozen=True)
class Region:
    """Placement of one tensor: cells [start, start + span)."""

    name: str
    start: int
    span: int
    n: int  # number of codes
    bits: int
    shape: tuple[int, ...]
    layout: str
    stride: int = 0  # word layout: cells per word
    per_word: int = 1  # word layout: weights per word
    plane: int = 0  # bitplane layout: cells per plane
    code: Code | None = field(default=None, compare=False)  # coded region
    zero_code: int | None = None  # coded region: the code a zeroed weight reads as

    @classmethod
    def place(cls, name: str, start: int, n: int, bits: int, shape: tuple[int, ...], layout: str,
              word_bits: int | None, row: int, code: Code | None = None,
              zero_code: int | None = None) -> Region:
        if code is not None:
            return cls(name, start, coded_span(n, code), n, bits, shape, layout, code.n,
                       code.slots, code=code, zero_code=zero_code)
        if layout == "word":
            if word_bits is None or bits > word_bits:
                stride, per_word = bits, 1
            else:
                stride, per_word = word_bits, word_bits // bits
            span = -(-n // per_word) * stride
            return cls(name, start, span, n, bits, shape, layout, stride, per_word)
        plane = -(-n // row) * row
        return cls(name, start, bits * plane, n, bits, shape, layout, plane=plane)

    def cell(self, k: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Offset (from `start`) of bit j of weight k."""
        k = np.asarray(k, np.int64)
        j = np.asarray(j, np.int64)
        if self.code is not None:
            word, slot = np.divmod(k, self.per_word)
            return cell_offset(word, slot * self.bits + j, self.code.n, self.code.interleave)
        if self.layout == "word":
            return (k // self.per_word) * self.stride + (k % self.per_word) * self.bits + j
        return j * self.plane + k

    def weight_bit(self, off: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Offsets -> (weight index k, bit j, valid) ; padding cells are not valid."""
        off = np.asarray(off, np.int64)
        if self.code is not None:  # check cells and padding are not weight bits
            word, cell = locate(off, self.code.n, self.code.interleave)
            slot, j = np.divmod(cell, self.bits)
            k = word * self.per_word + slot
            return k, j, (slot < self.per_word) & (k < self.n)
        if self.layout == "word":
            word, within = np.divmod(off, self.stride)
            slot, j = np.divmod(within, self.bits)
            k = word * self.per_word + slot
            valid = (slot < self.per_word) & (k < self.n)
        else:
            j, k = np.divmod(off, self.plane)
            valid = (k < self.n) & (j < self.bits)
        return k, j, valid


def apply_faults(codes: np.ndarray, region: Region, faults: FaultSet
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Apply a fault set to one region's flat codes.

    Returns (idx, new_codes, counts): sorted int64 indices of the codes that changed, their
    new values (codes' dtype), and event counts: flip01 / flip10 = flipped bits, sa0 / sa1 =
    stuck cells holding the other value, changed_bits = their sum, faults = faulty cells in
    the region (whether or not they changed the stored bit). Stuck cells win over flips.
    """
    from memory_models._kernels import _region_events

    lo, hi = region.start, region.start + region.span

    def local(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a[np.searchsorted(a, lo): np.searchsorted(a, hi)],
                                    dtype=np.int64)

    f01, f10, s0, s1 = (local(a) for a in (faults.f01, faults.f10, faults.s0, faults.s1))
    if region.code is not None:
        return _apply_coded(codes, region, (f01, f10, s0, s1))
    size = f01.size + f10.size + s0.size + s1.size
    ev_k = np.empty(size, np.int64)
    ev_bit = np.empty(size, np.int64)
    cnt = np.zeros(6, np.int64)
    word = region.layout == "word"
    n_ev = _region_events(codes, f01, f10, s0, s1, lo, word, region.bits, max(region.stride, 1),
                          region.per_word, max(region.plane, 1), region.n, ev_k, ev_bit, cnt)
    counts = dict.fromkeys(COUNT_KEYS, 0)
    counts.update(zip(("faults", "flip01", "flip10", "sa0", "sa1", "changed_bits"),
                      (int(x) for x in cnt)))
    k, bit = ev_k[:n_ev], ev_bit[:n_ev]
    if k.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, codes.dtype), counts
    if not word:  # bit planes: events come plane by plane, group them by weight
        order = np.argsort(k, kind="stable")
        k, bit = k[order], bit[order]
    first = np.ones(k.size, bool)
    first[1:] = k[1:] != k[:-1]
    starts = np.flatnonzero(first)
    idx = k[starts]
    # every (k, j) toggles once, so the sum of 1 << j over a weight is its XOR mask
    mask = np.add.reduceat(bit, starts)
    new = (codes[idx].astype(np.int64) ^ mask).astype(codes.dtype)
    return idx, new, counts


def _apply_coded(codes: np.ndarray, region: Region, lists: tuple[np.ndarray, ...]
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """`apply_faults` of a coded region: the decoder's output. faults counts faulty cells
    (check cells included); flip / stuck / changed_bits count the data bits that reach
    the weights after decoding."""
    idx, new, ecc = read_coded(codes, region.code, region.zero_code, region.start, lists)
    counts = dict.fromkeys(COUNT_KEYS, 0)
    counts.update(ecc)
    if idx.size:
        old = codes[idx].astype(np.int64)
        nw = new.astype(np.int64)
        counts["flip01"] = int(np.bitwise_count(~old & nw).sum())
        counts["flip10"] = int(np.bitwise_count(old & ~nw).sum())
        counts["changed_bits"] = counts["flip01"] + counts["flip10"]
    return idx, new, counts


@dataclass
class ReadResult:
    """The outcome of one read of a memory image.

    changes: name -> (idx, new_codes): sorted flat indices of codes that changed and their
    read values. counts: totals over the read regions (see `apply_faults`);
    region_counts: the same per region.
    """

    changes: dict[str, tuple[np.ndarray, np.ndarray]]
    counts: dict[str, int]
    region_counts: dict[str, dict[str, int]] = field(default_factory=dict)


def _as_codes(codes: np.ndarray, bits: int, source: str) -> np.ndarray:
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise UserInputError(source, "codes", f"codes must be integers, got {c.dtype}",
                             "pass unsigned codes from memory_models.encode()")
    if c.dtype.kind == "i":
        c = c.view(c.dtype.str.replace("i", "u"))
    if bits > 8 * c.dtype.itemsize:
        raise UserInputError(source, "bits", f"{bits} bits do not fit in {c.dtype}",
                             "use a wider dtype or fewer bits")
    return c


class MemoryImage:
    """Weight tensors placed in one emulated memory (see the module docstring)."""

    def __init__(self, layout: str = "word", word_bits: int | None = None,
                 columns: int | None = None) -> None:
        if layout not in LAYOUTS:
            raise UserInputError("MemoryImage", "layout", f"unknown layout '{layout}'",
                                 f"use one of {', '.join(LAYOUTS)}")
        for fld, v in (("word_bits", word_bits), ("columns", columns)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | np.integer)
                                  or v < 1):
                raise UserInputError("MemoryImage", fld, f"{v!r} is not a positive integer",
                                     "pass a positive integer or None")
        self.layout = layout
        self.word_bits = None if word_bits is None else int(word_bits)
        self.columns = None if columns is None else int(columns)
        self._row = self.columns or DEFAULT_ROW_CELLS
        self._regions: dict[str, Region] = {}
        self._codes: dict[str, np.ndarray] = {}
        self._end = 0

    @classmethod
    def for_profile(cls, profile, layout: str = "word") -> MemoryImage:
        """An image with the word width and row length of the profile's organization."""
        from memory_models.profile import load_profile

        org = load_profile(profile).organization
        return cls(layout=layout, word_bits=org.word_bits, columns=org.columns)

    # -- building --------------------------------------------------------------------
    def add(self, name: str, codes: np.ndarray, bits: int, code: Code | None = None,
            zero_code: int | None = None) -> None:
        """Append a region holding `codes` (unsigned b-bit codes, any shape); with `code`
        (`memory_models.protection.make_code`) it is stored as code words, and a weight the
        decoder zeroes reads `zero_code` (None: as read)."""
        bits = check_bits(bits, source=f"MemoryImage region '{name}'")
        if name in self._regions:
            raise UserInputError("MemoryImage", name, "region name already used",
                                 "give every tensor a unique name")
        c = _as_codes(codes, bits, f"MemoryImage region '{name}'")
        flat = np.ascontiguousarray(c).reshape(-1).copy()
        if flat.size and int(flat.max()) >> bits:
            raise UserInputError(f"MemoryImage region '{name}'", "codes",
                                 f"a code uses bits above bit {bits - 1}",
                                 "pass the unsigned codes from encode(values, bits, ...)")
        start = -(-self._end // self._row) * self._row  # next row boundary
        if code is not None and self.layout != "word":
            raise UserInputError("MemoryImage", "layout", "codes need the word layout",
                                 "use layout='word' with a protection scheme")
        reg = Region.place(name, start, flat.size, bits, tuple(c.shape), self.layout,
                           self.word_bits, self._row, code, zero_code)
        self._regions[name] = reg
        self._codes[name] = flat
        self._end = start + reg.span

    @property
    def n_bits(self) -> int:
        """Cells spanned by the image (last region's end, rounded up to a row)."""
        return -(-self._end // self._row) * self._row

    @property
    def names(self) -> list[str]:
        return list(self._regions)

    def region(self, name: str) -> Region:
        if name not in self._regions:
            import difflib

            close = difflib.get_close_matches(str(name), self.names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "use one of img.names"
            raise UserInputError("MemoryImage", "regions", f"no region named '{name}'", hint)
        return self._regions[name]

    def codes(self, name: str) -> np.ndarray:
        """The clean codes of a region, in the shape they were added."""
        reg = self.region(name)
        return self._codes[name].reshape(reg.shape)

    # -- reading ---------------------------------------------------------------------
    def read(self, source, rng: np.random.Generator | None, knob: float | None = None,
             regions: list[str] | None = None) -> ReadResult:
        """Read regions through a Chip (knob required) or a BitErrorModel (knob ignored).

        Faults are keyed by cell address, so a region reads the same whether it is read
        alone, with others, or in another order.
        """
        names = self.names if regions is None else list(regions)
        regs = [self.region(n) for n in names]
        ranges = Ranges.of([(r.start, r.start + r.span) for r in regs])
        faults = source.fault_set(ranges, knob, rng, n_cells=self.n_bits)
        changes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        total = dict.fromkeys(COUNT_KEYS, 0)
        per: dict[str, dict[str, int]] = {}
        for reg in regs:
            idx, new, cnt = apply_faults(self._codes[reg.name], reg, faults)
            changes[reg.name] = (idx, new)
            per[reg.name] = cnt
            for key in COUNT_KEYS:
                total[key] += cnt[key]
        return ReadResult(changes, total, per)

    def values(self, result: ReadResult, name: str, encoding: str) -> np.ndarray:
        """The decoded integers (int16) of region `name` as read in `result`."""
        return decoded(self, result, name, encoding)

    def corrupted(self, result: ReadResult, name: str) -> np.ndarray:
        """The codes of `name` as read in `result` (a full copy, in the added shape)."""
        out = self._codes[name].copy()
        idx, new = result.changes[name]
        out[idx] = new
        return out.reshape(self._regions[name].shape)


def decoded(image: MemoryImage, result: ReadResult, name: str, encoding: str) -> np.ndarray:
    """The integers of region `name` as read in `result` (decode of `image.corrupted`)."""
    from memory_models.encoding import decode

    return decode(image.corrupted(result, name), image.region(name).bits, encoding)


def corrupt_words(source, words: np.ndarray, bits: int, knob: float | None,
                  rng: np.random.Generator | None, caller: str) -> np.ndarray:
    """Shared body of `BitErrorModel.corrupt` and `Chip.read`: words packed back to back
    from cell 0 (cell k*bits + j holds bit j of word k); returns a corrupted copy."""
    bits = check_bits(bits, source=caller)
    w = np.asarray(words)
    c = _as_codes(w, bits, caller)
    flat = np.ascontiguousarray(c).reshape(-1)
    reg = Region.place("words", 0, flat.size, bits, tuple(w.shape), "word", None, 1)
    faults = source.fault_set(Ranges.of([(0, reg.span)]), knob, rng, n_cells=reg.span)
    idx, new, _ = apply_faults(flat, reg, faults)
    out = flat.copy()
    out[idx] = new
    return out.view(w.dtype).reshape(w.shape) if w.dtype != out.dtype else out.reshape(w.shape)
