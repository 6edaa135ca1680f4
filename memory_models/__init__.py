"""Emulated error-prone memory: profiles, error models, chips, encodings, memory images.

Everything in mcelsim reads weights through this package. Rates are per bit (per cell) and
conditional on the stored bit: p01 = P(holding 0 reads 1), p10 = P(holding 1 reads 0);
sa0 / sa1 = P(cell stuck at 0 / 1) (a stuck cell wins over flips).

Profiles (TOML, `memory_models/builtin/*.toml`; `profile.FORMAT` lists every key)::

    list_profiles() -> list[str]                      # from the files on disk
    prof = load_profile("sram-14nm")                  # or a path; UserInputError if bad
    prof.name, .technology, .description, .illustrative, .sources
    prof.knob.name, .unit, .nominal, .min, .max, .harsher ("lower" | "higher")
    prof.rates(knob, clamp=False) -> FlipRates(p01, p10, sa0, sa1)   # .ber = random-data BER
    prof.energy(knob) -> float | None                 # relative energy/access, 1 at nominal
    prof.digest, prof.to_dict()

Encodings (bit j of a code = stored cell j)::

    ENCODINGS = ("twos-complement", "offset-binary", "sign-magnitude", "binary")
    encode(values, bits, encoding) -> uint8 (bits <= 8) / uint16 codes
    decode(codes, bits, encoding) -> int16 values

Error sources::

    BitErrorModel(p01, p10, sa0=0, sa1=0).corrupt(words, bits, rng)   # i.i.d., per read
    chip = Chip(profile, n_bits, seed)                # one physical instance
    chip.read(words, bits, knob, rng)                 # persistent (fixed, nested) + transient

A chip's weak cells are drawn once per (seed, fault kind, block of 2^20 cells, rate tier):
a cell failing at knob v fails at every harsher v, and a knob sweep reuses the cached weak
cell sets (the first read at the harshest knob costs the most; later reads are
O(faults)). Transient faults are drawn per read from keyed streams seeded by one draw from
`rng`. Persistent fraction f: a cell with rate p is a persistent fault with probability
f*p and fails at a read with probability p in total. Stuck-at cells are persistent.
Spatial clustering (weak columns / rows) and DRAM cell polarity (true cells leak 1->0,
anti cells 0->1) come from the profile; `prof.rates()` are the array averages.

Memory image (what the simulator's deployment uses)::

    img = MemoryImage.for_profile(prof, layout="word")    # or MemoryImage(layout, word_bits,
    img.add(name, codes, bits)                             #                  columns)
    img.n_bits, img.names, img.codes(name)
    chip = Chip(prof, img.n_bits, seed=chip_seed)          # once per chip, reused
    res = img.read(chip, np.random.default_rng([campaign_seed, chip_index, point_index]),
                   knob=v)
    res = img.read(BitErrorModel(p01=p, p10=p), rng)       # i.i.d. BER sweep
    res.changes[name] -> (idx sorted int64 flat indices, new_codes)   # only changed codes
    res.counts -> {"faults", "flip01", "flip10", "sa0", "sa1", "changed_bits"}
    img.corrupted(res, name) -> full code array as read
    img.values(res, name, encoding) -> decoded int16 values as read

Protection codes (`memory_models.protection`: SEC-DED, parity, MSB replication,
interleaving) are stored with the data; their check cells fail like the others::

    code = make_code(parse_protection("secded-72-64,interleave=4"), bits=4, word_bits=64)
    img = MemoryImage.for_profile(coded_profile(prof, code))   # rows of whole code words
    img.add(name, codes, 4, code=code, zero_code=8)            # reads decode faulty words

Determinism: every draw is keyed by (seed, purpose, block, tier) or, for per-read draws,
by (one draw from rng, purpose, block): fault counts from numpy SeedSequence streams,
positions from a counter-based SplitMix64 stream (numba kernel, `_kernels`). Results are
identical across runs, and a region reads the same alone, with others, or in any order; a
sub-range of the cells gets the faults of that range in a full read. No threads are used,
so thread counts cannot matter. Cost is O(number of faults), never one random number per
bit (benchmarks/results_sampling.md).

FlipRates.ber is the exact error rate of random data, (read01 + read10)/2, i.e. to first
order (p01 + p10)/2 + (sa0 + sa1)/2: a stuck cell is wrong for half of the stored values.

Statistics over chips (t-intervals, paired and Welch differences, upper bounds, the
adaptive-chips stopping rule) are in `memory_models.stats` (scipy; not imported here).
"""

from memory_models.encoding import ENCODINGS, decode, encode
from memory_models.errors import BitErrorModel, Chip
from memory_models.image import MemoryImage, ReadResult
from memory_models.profile import FlipRates, Knob, Profile, list_profiles, load_profile
from memory_models.usererror import UserInputError

__all__ = [
    "ENCODINGS",
    "BitErrorModel",
    "Chip",
    "FlipRates",
    "Knob",
    "MemoryImage",
    "Profile",
    "ReadResult",
    "UserInputError",
    "decode",
    "encode",
    "list_profiles",
    "load_profile",
]
