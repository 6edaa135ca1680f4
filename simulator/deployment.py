"""Deployment: place a network's stored integers in one emulated memory image, read them back.

`deploy(net, ...)` encodes every weight tensor (`encoding`, b bits per weight as the layer
stores them) and, with `include_biases=True`, every bias (32-bit two's complement) into one
`memory_models.MemoryImage`: weights first, in `net.weight_names` order, then the biases in
the same order, so that adding biases never moves a weight and the same chip hits the same
weights. (The image holds at most 16-bit codes, so a bias is stored as two 16-bit codes, low
half first: with the word layout its 32 bits sit in 32 consecutive cells, bit j at cell j.)
`DeployedNetwork.read(source, rng, knob)` reads the image through a chip (persistent
faults at `knob`) or an i.i.d. `BitErrorModel`, and returns only what changed, as engine
deltas `{weight name: (flat_idx int64, new signed values)}` (biases: `bias_deltas`, keyed by
bias tensor name, the keys of `net.biases()`).

Protection (`protect=`), i.e. parts of the network kept in reliable memory:
  "layer:<name>"  (name = a weight tensor name from `net.weight_names`, ".weight" may be
                  left out) the layer's weights (and its bias, if deployed) keep their place in the
                  image (every other weight sits at the same address as without protection,
                  so a chip hits it identically), but every error read from them is dropped.
  "first"/"last"  the first / last layer in `net.weight_names` order, as "layer:<name>".
  "bit:<j>"       bit j (0 = LSB) of every stored code that has more than j bits reads
                  correctly (its errors are masked out).
  "bit:msb"       the top bit of every stored code (bit b-1 of a b-bit weight, bit 31 of a
                  bias); for two's complement and sign-magnitude that is the sign bit, for
                  offset binary the inverted sign. "bit:sign" is a synonym.
Codes (`protection=`, `memory_models.protection`): "secded-72-64[,interleave=D]", "parity",
"msb-tmr", ... The data words of every region (or of the layers named by its `layers=`
option, weights and biases) become code words whose check cells sit in the same faulty
memory, after the data cells; reads run the decoder, and a weight the decoder zeroes reads
the value 0 (1-bit binarized weights, which have no 0, keep the data as read). Code words
lie in the rows of a widened array (`chip_profile`: build chips with it), whole code words
per row, one column per cell. `cells` counts the data and check cells; a read's
counts add the decoder's `words_in_error`, `corrected`, `detected`, `silent`.
Counts of one read (`ReadResult.counts`):
  faults            faulty cells in the image at this read (`MemoryImage.read` counts: a
                    stuck cell counts whether or not it holds the other value), before any
                    protection;
  bit_errors        bits read differently from what was stored, before any protection;
  flips             of those, the bits that reach the network (after protection);
  changed_weights   weights whose decoded value differs from the clean one;
  changed_biases    the same for biases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import memory_models as mm
from memory_models.protection import (
    ECC_COUNT_KEYS,
    Protection,
    coded_profile,
    make_code,
    parse_protection,
)
from memory_models.usererror import UserInputError

__all__ = ["BIAS_BITS", "BIAS_ENCODING", "WEIGHT_ENCODINGS", "DeployedNetwork", "ReadResult",
           "deploy", "parse_protect"]

BIAS_BITS = 32
BIAS_ENCODING = "twos-complement"
BIAS_PREFIX = "bias:"
WEIGHT_ENCODINGS = ("offset-binary", "twos-complement", "sign-magnitude")


@dataclass
class ReadResult:
    """What changed in one read of a deployed network (see the module docstring).

    changes: the image's raw changes `{region: (idx, new codes)}` the result was made from;
    `DeployedNetwork.filter(r.changes, only_layer=...)` restricts the same read.
    """

    deltas: dict[str, tuple[np.ndarray, np.ndarray]]
    bias_deltas: dict[str, tuple[np.ndarray, np.ndarray]]
    counts: dict[str, int]
    changes: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class _Region:
    name: str  # region name in the image
    key: str  # weight or bias tensor name (key of the engine deltas)
    layer: str  # weight name of the layer it belongs to
    is_bias: bool
    bits: int
    encoding: str
    codes: np.ndarray  # stored codes, flat (uint8 / uint16; uint32 for biases)
    values: np.ndarray  # clean signed values, flat, the engine's dtype
    keep_mask: int  # bits whose errors reach the network (protected bits cleared)
    protected: bool  # whole layer in reliable memory
    split: bool = False  # stored as two 16-bit codes per value (32-bit biases)


@dataclass
class _Protection:
    layers: set[str] = field(default_factory=set)
    bits: set[int] = field(default_factory=set)
    msb: bool = False


def parse_protect(protect: str | Iterable[str] | None, layer_names: list[str]) -> _Protection:
    """Resolve protection entries against a network's layer names (see module docstring)."""
    if protect is None:
        return _Protection()
    if isinstance(protect, str):
        protect = [p for p in protect.split(",") if p.strip()]
    out = _Protection()
    fix = "use layer:<name>, first, last, bit:msb or bit:<j>"
    for raw in protect:
        entry = str(raw).strip()
        if entry == "first":
            out.layers.add(layer_names[0])
        elif entry == "last":
            out.layers.add(layer_names[-1])
        elif entry.startswith("layer:"):
            name = entry[len("layer:"):]
            if name not in layer_names and name + ".weight" in layer_names:
                name += ".weight"
            if name not in layer_names:
                raise UserInputError(
                    "--protect", entry, f"no layer named {name!r}",
                    f"pick one of {', '.join(layer_names)}",
                )
            out.layers.add(name)
        elif entry in ("bit:msb", "bit:sign"):
            out.msb = True
        elif entry.startswith("bit:"):
            try:
                j = int(entry[4:])
            except ValueError:
                raise UserInputError("--protect", entry, "bad bit position", fix) from None
            if j < 0:
                raise UserInputError("--protect", entry, "bit position is negative", fix)
            out.bits.add(j)
        else:
            raise UserInputError("--protect", entry, "unknown protection entry", fix)
    return out


def _encode(values: np.ndarray, bits: int, encoding: str) -> np.ndarray:
    """memory_models.encode, plus 32-bit two's complement for biases (uint32 codes)."""
    if bits == BIAS_BITS and encoding == BIAS_ENCODING:
        return (values.astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)  # v mod 2^32
    return np.asarray(mm.encode(values, bits, encoding))


def _decode(codes: np.ndarray, bits: int, encoding: str) -> np.ndarray:
    """memory_models.decode, plus 32-bit two's complement (int64 values)."""
    if bits == BIAS_BITS and encoding == BIAS_ENCODING:
        c = codes.astype(np.int64) & 0xFFFFFFFF
        return np.where(c >= 1 << 31, c - (1 << 32), c)  # top bit set -> negative
    return np.asarray(mm.decode(codes, bits, encoding))


def _split_halves(codes32: np.ndarray) -> np.ndarray:
    """32-bit codes -> 16-bit codes [lo0, hi0, lo1, hi1, ...] (uint16)."""
    out = np.empty(2 * codes32.size, np.uint16)
    out[0::2] = codes32 & 0xFFFF  # low half: bits 0..15
    out[1::2] = codes32 >> 16  # high half: bits 16..31
    return out


def _join_halves(codes32: np.ndarray, idx: np.ndarray, new16: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Changed 16-bit halves (idx into the split array) -> (bias idx, new 32-bit codes)."""
    b = idx // 2
    ub = np.unique(b)
    out = codes32[ub].astype(np.uint64)
    for half in (0, 1):  # one pass per half: a bias may change in both
        sel = (idx % 2) == half
        pos = np.searchsorted(ub, b[sel])
        shift = np.uint64(16 * half)
        keep = out[pos] & ~(np.uint64(0xFFFF) << shift)
        out[pos] = keep | (new16[sel].astype(np.uint64) << shift)
    return ub, out


def _popcount(x: np.ndarray) -> int:
    return int(np.bitwise_count(x.astype(np.uint64)).sum())


class DeployedNetwork:
    """A network whose stored integers live in one `MemoryImage` (build it with `deploy`)."""

    def __init__(
        self,
        net: Any,
        image: Any,
        regions: dict[str, _Region],
        *,
        encoding: str,
        layout: str,
        protect: tuple[str, ...],
        include_biases: bool,
        protection: Protection | None = None,
        cells: dict[str, int] | None = None,
        chip_profile: Any = None,
    ) -> None:
        self.net = net
        self.chip_profile = chip_profile  # the widened array of a code (None: the profile's)
        self.protection = protection or Protection()
        self.cells = cells or {"data": int(image.n_bits), "check": 0}
        self.image = image
        self.encoding = encoding
        self.layout = layout
        self.protect = protect
        self.include_biases = include_biases
        self._regions = regions

    @property
    def n_bits(self) -> int:
        """Number of memory cells (bits) of the image."""
        return int(self.image.n_bits)

    @property
    def layer_names(self) -> list[str]:
        return list(self.net.weight_names)

    @property
    def protected_layers(self) -> list[str]:
        return sorted({r.layer for r in self._regions.values() if r.protected})

    def bit_positions(self) -> list[int]:
        """Bit positions (0 = LSB) stored by some region and not fully protected."""
        pos = set()
        for r in self._regions.values():
            if r.protected:
                continue
            pos.update(j for j in range(r.bits) if (r.keep_mask >> j) & 1)
        return sorted(pos)

    def sensitivity_targets(self) -> list[tuple[str, str]]:
        """('layer', name) for every unprotected layer, then ('bit', j) for every bit."""
        layers = [("layer", n) for n in self.layer_names if n not in self.protected_layers]
        return layers + [("bit", str(j)) for j in self.bit_positions()]

    def read(
        self,
        source: Any,
        rng: np.random.Generator,
        knob: float | None = None,
        *,
        only_layer: str | None = None,
        only_bit: int | None = None,
    ) -> ReadResult:
        """Read the image once through `source` (a `Chip` at `knob`, or a `BitErrorModel`).

        `only_layer` / `only_bit` keep only the errors of that layer's cells / of that bit
        position's cells (sensitivity analysis); protection still applies.
        """
        res = self.image.read(source, rng, knob=knob)
        out = self.filter(res.changes, only_layer=only_layer, only_bit=only_bit,
                          faults=res.counts.get("faults"))
        if self.protection.enabled:
            out.counts.update({k: int(res.counts.get(k, 0)) for k in ECC_COUNT_KEYS})
        return out

    def filter(
        self,
        changes: Mapping[str, tuple[np.ndarray, np.ndarray]],
        *,
        only_layer: str | None = None,
        only_bit: int | None = None,
        faults: int | None = None,
    ) -> ReadResult:
        """Turn raw image changes `{region: (idx, new_codes)}` into engine deltas.

        faults: the image read's faulty-cell count (default: the number of bit errors).
        """
        deltas: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        bias_deltas: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        counts = {"faults": 0, "bit_errors": 0, "flips": 0, "changed_weights": 0,
                  "changed_biases": 0}  # fmt: skip
        for name, (idx, new) in changes.items():
            reg = self._regions[name]
            idx = np.asarray(idx, dtype=np.int64)
            if idx.size == 0:
                continue
            new = np.asarray(new).astype(np.uint64)
            if reg.split:
                idx, new = _join_halves(reg.codes, idx, new)
            old = reg.codes[idx].astype(np.uint64)
            diff = old ^ new
            counts["bit_errors"] += _popcount(diff)
            if reg.protected or (only_layer is not None and reg.layer != only_layer):
                continue
            keep = reg.keep_mask
            if only_bit is not None:
                keep &= 1 << only_bit
            diff &= np.uint64(keep)
            hit = diff != 0
            if not hit.any():
                continue
            idx, diff = idx[hit], diff[hit]
            counts["flips"] += _popcount(diff)
            values = _decode(old[hit] ^ diff, reg.bits, reg.encoding).astype(reg.values.dtype)
            changed = values != reg.values[idx]
            if not changed.any():
                continue
            idx, values = idx[changed], values[changed]
            order = np.argsort(idx, kind="stable")
            idx, values = idx[order], values[order]
            if reg.is_bias:
                bias_deltas[reg.key] = (idx, values)
                counts["changed_biases"] += int(idx.size)
            else:
                deltas[reg.layer] = (idx, values)
                counts["changed_weights"] += int(idx.size)
        counts["faults"] = counts["bit_errors"] if faults is None else int(faults)
        return ReadResult(deltas, bias_deltas, counts, changes)

    def corrupted_network(self, r: ReadResult) -> Any:
        """The network with the read's changed weights (and biases) substituted."""
        weights = self.net.weights()
        updates = {}
        for name, (idx, values) in r.deltas.items():
            w = np.array(weights[name], copy=True)
            w.reshape(-1)[idx] = values
            updates[name] = w
        biases = None
        if r.bias_deltas:
            clean = self.net.biases()
            biases = {}
            for name, (idx, values) in r.bias_deltas.items():
                b = np.array(clean[name], copy=True)
                b.reshape(-1)[idx] = values
                biases[name] = b
        return self.net.with_weights(updates, biases=biases)


def _bias_names(net: Any) -> dict[str, str]:
    """weight name -> bias name of the same layer (layers without a bias are left out)."""
    ops = getattr(net, "ops", None)
    if ops is None:  # a network without an op list names biases like its weights
        return {n: n for n in net.weight_names if n in net.biases()}
    out = {}
    for op in ops:
        w, b = getattr(op, "weight", None), getattr(op, "bias", None)
        if w is not None and b is not None:
            out[w] = b
    return out


def _canonical_protect(protect: str | Iterable[str] | None) -> tuple[str, ...]:
    if protect is None:
        return ()
    if isinstance(protect, str):
        protect = protect.split(",")
    return tuple(sorted({p.strip() for p in protect if p.strip()}))


def deploy(
    net: Any,
    encoding: str = "offset-binary",
    layout: str = "word",
    protect: str | Iterable[str] = (),
    include_biases: bool = False,
    profile: Any = None,
    protection: str | Protection | None = None,
) -> DeployedNetwork:
    """Encode a network's weights (and biases) into one memory image; see the module docstring.

    encoding: storage encoding of the weights ('offset-binary', 'twos-complement',
      'sign-magnitude'; binarized weights are one bit, 1 = +1). Biases are always 32-bit two's
      complement. layout: how codes are packed into words/rows/columns
      (`memory_models.MemoryImage`); with `profile`, the array organization comes from the
      profile (`MemoryImage.for_profile`). protection: a code stored with the data (see the
      module docstring), e.g. "secded-72-64,interleave=4".
    """
    if encoding not in WEIGHT_ENCODINGS:
        raise UserInputError(
            "--encoding", None, f"unknown weight encoding {encoding!r}",
            f"use one of {', '.join(WEIGHT_ENCODINGS)}",
        )
    from memory_models.image import LAYOUTS

    if layout not in LAYOUTS:
        raise UserInputError("--layout", None, f"unknown memory layout {layout!r}",
                             f"use one of {', '.join(LAYOUTS)}")  # fmt: skip
    protect_t = _canonical_protect(protect)
    names = list(net.weight_names)
    if not names:
        raise UserInputError("network", None, "has no weight layers", "import a trained model")
    prot = parse_protect(protect_t, names)
    weights = net.weights()
    coding = parse_protection(protection)
    coded_layers = set(names)
    if coding.layers:
        coded_layers = set(parse_protect([f"layer:{n}" for n in coding.layers], names).layers)
    if coding.enabled and layout != "word":
        raise UserInputError("--protection", coding.key, "codes need the word layout",
                             "drop --layout or use --layout word")
    chip_profile = None
    if profile is not None and coding.enabled:
        profile = mm.load_profile(profile)
        first = next(n for n in names if n in coded_layers)
        chip_profile = coded_profile(profile, make_code(
            coding, int(net.weight_bits(first)), profile.organization.word_bits))
        image = mm.MemoryImage.for_profile(chip_profile, layout=layout)
    elif profile is not None:
        image = mm.MemoryImage.for_profile(profile, layout=layout)
    else:
        image = mm.MemoryImage(layout=layout)
    plan: list[tuple[str, str, bool, int, str, np.ndarray]] = []
    for name in names:
        bits = int(net.weight_bits(name))
        enc = "binary" if bits == 1 else encoding  # binarized weights: one bit, 1 = +1
        plan.append((name, name, False, bits, enc, weights[name]))
    if include_biases:
        biases = net.biases()
        bias_of = _bias_names(net)
        for name in names:
            bname = bias_of.get(name)
            b = None if bname is None else biases.get(bname)
            if b is not None and np.asarray(b).size:
                plan.append((BIAS_PREFIX + bname, name, True, BIAS_BITS, BIAS_ENCODING, b))
    max_bits = max(p[3] for p in plan)
    for j in sorted(prot.bits):
        if j >= max_bits:
            raise UserInputError(
                "--protect", f"bit:{j}", f"no stored code has more than {max_bits} bits",
                f"use a bit position below {max_bits}",
            )
    regions: dict[str, _Region] = {}
    cells = {"data": 0, "check": 0}
    for region, layer, is_bias, bits, enc, values in plan:
        values = np.ascontiguousarray(np.asarray(values).reshape(-1))
        if is_bias:
            values = values.astype(np.int32)
        codes = _encode(values, bits, enc)
        split = bits > 16
        code = zero = None
        if coding.enabled and layer in coded_layers:
            code = make_code(coding, 16 if split else bits, image.word_bits)
            zero = None if enc == "binary" else int(_encode(np.zeros(1, np.int64), bits, enc)[0])
        if split:
            image.add(region, _split_halves(codes), 16, code=code, zero_code=zero)
        else:
            image.add(region, codes, bits, code=code, zero_code=zero)
        span = image.region(region).span
        check = 0 if code is None else span // code.n * code.check_cells
        cells["data"] += span - check
        cells["check"] += check
        keep = (1 << bits) - 1
        for j in prot.bits:
            if j < bits:
                keep &= ~(1 << j)
        if prot.msb:
            keep &= ~(1 << (bits - 1))
        regions[region] = _Region(
            name=region,
            key=region[len(BIAS_PREFIX):] if is_bias else layer,
            layer=layer,
            is_bias=is_bias,
            bits=bits,
            encoding=enc,
            codes=codes,
            values=values,
            keep_mask=keep,
            protected=layer in prot.layers,
            split=split,
        )
    return DeployedNetwork(
        net,
        image,
        regions,
        encoding=encoding,
        layout=layout,
        protect=protect_t,
        include_biases=include_biases,
        protection=coding,
        cells=cells,
        chip_profile=chip_profile,
    )
