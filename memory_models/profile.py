"""Memory technology profiles: TOML files read into frozen dataclasses.

A profile maps one operating knob (supply voltage, refresh interval, ...) to per-bit
error probabilities. All probabilities are per bit (per cell), conditional on the stored bit:
`p01` = P(a cell holding 0 reads 1), `p10` = P(a cell holding 1 reads 0); `sa0` / `sa1` =
P(a cell is stuck at 0 / 1). See `memory_models/builtin/*.toml` for complete examples and
`FORMAT` below for every key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from memory_models.usererror import UserInputError

FORMAT = """\
name, technology, description, sources = [..]; optional: illustrative (bool), notes = [..]
[knob]         name, unit, nominal, min, max, harsher = "lower" | "higher"
[p01], [p10]   required; [sa0], [sa1] optional. Each one curve:
   form = "table": knob = [..], p = [..], interpolation = "log-linear" | "linear"
   form = "erfc":  scale, mu, sigma   p = scale * Q((x - mu)/sigma) (Q = Gaussian tail,
                   x - mu sign flipped when harsher = "higher")
   form = "power": scale, x0, exponent   p = scale * (x / x0)^exponent
   form = "arrhenius": scale, ea_ev, t0   p = scale * exp(-ea/kB (1/T - 1/T0)), T in K
                   (knob unit "C" or "degC" is converted to kelvin)
   form = "constant": value
   common: provenance = "measured"|"derived"|"fitted"|"illustrative" (tables: one per point
   allowed), monotone = true (default), note = "..."
[persistence]  fraction (of faults fixed per chip, 0..1), provenance, note
[spatial]      mode = "iid" | "column" | "row"; weak_fraction, weak_share, provenance, note
[organization] word_bits, rows, columns (bits per row)
[polarity]     mode = "none" | "all-true" | "all-anti" | "alternating-rows" |
               "alternating-columns"; stripe (rows/columns per stripe)
[energy]       optional: form = "power" (exponent: (x/nominal)^exponent) or "table"
               (knob, relative; linear, normalized to 1 at nominal)
[data]         optional reference points: knob, ber, provenance, note (shown and plotted)
"""

PROVENANCES = ("measured", "derived", "fitted", "illustrative")
CURVE_NAMES = ("p01", "p10", "sa0", "sa1")
POLARITIES = ("none", "all-true", "all-anti", "alternating-rows", "alternating-columns")
SPATIAL_MODES = ("iid", "column", "row")
K_BOLTZMANN_EV = 8.617333262e-5  # eV / K
_GRID = 513  # points used to check parametric curves over the knob range


# ----------------------------------------------------------------------------- reading

class _Section:
    """Typed access to one TOML table; remembers which keys were used (typo detection)."""

    def __init__(self, data: Any, source: str, path: str) -> None:
        self.source, self.path = source, path
        if not isinstance(data, dict):
            raise UserInputError(source, path or "(top level)",
                                 f"expected a table, got {type(data).__name__}",
                                 f"write it as [{path}] with key = value lines")
        self.data = data
        self.used: set[str] = set()

    def _field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                close = difflib.get_close_matches(key, [str(k) for k in self.data], n=1,
                                                  cutoff=0.6)
                fix = (f"rename '{close[0]}' to '{key}'" if close else
                       f"add '{key} = ...' (see `mcelsim profiles show sram-14nm --json` for a "
                       "complete example)")
                raise UserInputError(self.source, self._field(key), "missing required field",
                                     fix)
            return default
        return self.data[key]

    def string(self, key: str, default: str | None = None, required: bool = False,
               choices: tuple[str, ...] | None = None) -> str | None:
        v = self.raw(key, default, required)
        if v is None:
            return None
        if not isinstance(v, str):
            raise UserInputError(self.source, self._field(key),
                                 f"expected a string, got {v!r}", f'write {key} = "..."')
        if choices is not None and v not in choices:
            close = difflib.get_close_matches(v, choices, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(choices)}"
            raise UserInputError(self.source, self._field(key), f"unknown value '{v}'", hint)
        return v

    def number(self, key: str, default: float | None = None, required: bool = False,
               lo: float | None = None, hi: float | None = None,
               positive: bool = False) -> float | None:
        v = self.raw(key, default, required)
        if v is None:
            return None
        return _number(v, self.source, self._field(key), lo, hi, positive)

    def integer(self, key: str, default: int | None = None, lo: int = 1) -> int | None:
        v = self.raw(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise UserInputError(self.source, self._field(key),
                                 f"expected an integer, got {v!r}", f"write {key} = 64")
        if v < lo or v > 2**40:
            raise UserInputError(self.source, self._field(key), f"{v} is out of range",
                                 f"use an integer >= {lo}")
        return int(v)

    def boolean(self, key: str, default: bool = False) -> bool:
        v = self.raw(key, default)
        if not isinstance(v, bool):
            raise UserInputError(self.source, self._field(key),
                                 f"expected true or false, got {v!r}", f"write {key} = true")
        return v

    def strings(self, key: str, required: bool = False) -> tuple[str, ...]:
        v = self.raw(key, None, required)
        if v is None:
            return ()
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise UserInputError(self.source, self._field(key),
                                 "expected a list of strings", f'write {key} = ["..."]')
        return tuple(v)

    def numbers(self, key: str, required: bool = True, lo: float | None = None,
                hi: float | None = None) -> tuple[float, ...]:
        v = self.raw(key, None, required)
        if v is None:
            return ()
        if not isinstance(v, list) or not v:
            raise UserInputError(self.source, self._field(key),
                                 "expected a non-empty list of numbers",
                                 f"write {key} = [1.0, 2.0]")
        return tuple(_number(x, self.source, f"{self._field(key)}[{i}]", lo, hi)
                     for i, x in enumerate(v))

    def sub(self, key: str, required: bool = False) -> _Section | None:
        v = self.raw(key, None, required)
        if v is None:
            return None
        return _Section(v, self.source, self._field(key))

    def finish(self, allowed: tuple[str, ...] | None = None) -> None:
        """Raise on unknown keys, suggesting the closest known one."""
        known = tuple(sorted(self.used if allowed is None else set(allowed) | self.used))
        for key in self.data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                hint = (f"did you mean '{close[0]}'?" if close
                        else f"remove it; known keys here: {', '.join(known)}")
                raise UserInputError(self.source, self._field(str(key)), "unknown key", hint)


def _number(v: Any, source: str, fld: str, lo: float | None = None, hi: float | None = None,
            positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise UserInputError(source, fld, f"expected a number, got {v!r}", "write a number")
    x = float(v)
    if math.isnan(x) or math.isinf(x):
        raise UserInputError(source, fld, f"{v} is not a finite number", "write a finite number")
    if positive and x <= 0:
        raise UserInputError(source, fld, f"{x:g} must be > 0", "use a positive number")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        what = "probability" if (lo, hi) == (0.0, 1.0) else "value"
        raise UserInputError(source, fld, f"{what} {x:g} outside [{lo:g}, {hi:g}]",
                             f"use a value between {lo:g} and {hi:g}")
    return x


# ----------------------------------------------------------------------------- data types

@dataclass(frozen=True)
class Knob:
    """The operating parameter a profile is indexed by."""

    name: str
    unit: str
    nominal: float
    min: float
    max: float
    harsher: str  # "lower" (e.g. voltage) or "higher" (e.g. refresh interval)

    def harsher_than(self, a: float, b: float) -> bool:
        """True if knob value a is at least as harsh as b."""
        return a <= b if self.harsher == "lower" else a >= b


@dataclass(frozen=True)
class FlipRates:
    """Per-bit probabilities at one knob value (conditional on the stored bit).

    A stuck cell reads its stuck value whatever it holds; flips act on the other cells, so
    P(read 1 | stored 0) = sa1 + (1 - sa0 - sa1) * p01 and symmetrically for 1.
    """

    p01: float
    p10: float
    sa0: float = 0.0
    sa1: float = 0.0

    @property
    def read01(self) -> float:
        """P(a cell holding 0 reads 1), stuck-at included."""
        return self.sa1 + (1.0 - self.sa0 - self.sa1) * self.p01

    @property
    def read10(self) -> float:
        """P(a cell holding 1 reads 0), stuck-at included."""
        return self.sa0 + (1.0 - self.sa0 - self.sa1) * self.p10

    @property
    def ber(self) -> float:
        """Error rate of random (half 0, half 1) data: (read01 + read10) / 2.

        To first order (p01 + p10)/2 + (sa0 + sa1)/2: a stuck-at cell shows an error for
        half of the stored values.
        """
        return 0.5 * (self.read01 + self.read10)

    def to_dict(self) -> dict[str, float]:
        return {"p01": self.p01, "p10": self.p10, "sa0": self.sa0, "sa1": self.sa1,
                "ber": self.ber}


@dataclass(frozen=True)
class Curve:
    """Probability vs knob: a table with interpolation or a named parametric form."""

    form: str
    params: tuple[tuple[str, float], ...] = ()
    knob: tuple[float, ...] = ()
    p: tuple[float, ...] = ()
    interpolation: str = "log-linear"
    provenance: tuple[str, ...] = ("illustrative",)
    monotone: bool = True
    note: str = ""
    sign: float = 1.0  # +1: p rises as the knob falls (harsher = lower); -1 otherwise
    kelvin_offset: float = 0.0

    def __call__(self, x: float | np.ndarray) -> np.ndarray:
        """Probability at knob value(s) x, clipped to [0, 1]."""
        return np.clip(self.raw(x), 0.0, 1.0)

    def raw(self, x: float | np.ndarray) -> np.ndarray:
        """The formula's value at x, unclipped (validation checks it stays in [0, 1])."""
        x = np.asarray(x, dtype=np.float64)
        prm = dict(self.params)
        if self.form == "table":
            out = _interp(x, np.array(self.knob), np.array(self.p), self.interpolation)
        elif self.form == "constant":
            out = np.full_like(x, prm["value"])
        elif self.form == "erfc":
            from scipy.special import erfc  # lazy: keeps `import memory_models` light

            z = self.sign * (x - prm["mu"]) / (math.sqrt(2.0) * prm["sigma"])
            out = prm["scale"] * 0.5 * erfc(z)
        elif self.form == "power":
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                out = prm["scale"] * np.power(x / prm["x0"], prm["exponent"])
        elif self.form == "arrhenius":
            t = x + self.kelvin_offset
            t0 = prm["t0"] + self.kelvin_offset
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                out = prm["scale"] * np.exp(-prm["ea_ev"] / K_BOLTZMANN_EV * (1.0 / t - 1.0 / t0))
        else:  # pragma: no cover - forms are validated on load
            raise ValueError(self.form)
        return out

    @property
    def illustrative(self) -> bool:
        return all(p == "illustrative" for p in self.provenance)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"form": self.form}
        if self.form == "table":
            d.update(knob=list(self.knob), p=list(self.p), interpolation=self.interpolation)
        d.update(dict(self.params))
        d.update(provenance=list(self.provenance), monotone=self.monotone, note=self.note)
        return d


def _interp(x: np.ndarray, kx: np.ndarray, kp: np.ndarray, how: str) -> np.ndarray:
    """Piecewise interpolation; log-linear in p, linear on segments with a zero end."""
    lin = np.interp(x, kx, kp)
    if how == "linear":
        return lin
    i = np.clip(np.searchsorted(kx, x, side="right") - 1, 0, len(kx) - 2)
    a, b = kp[i], kp[i + 1]
    t = np.clip((x - kx[i]) / (kx[i + 1] - kx[i]), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        loglin = np.exp(np.log(a) + t * (np.log(b) - np.log(a)))
    return np.where((a > 0) & (b > 0), loglin, lin)


@dataclass(frozen=True)
class Spatial:
    """How faults cluster: i.i.d., or weak columns / rows with a higher rate.

    A fraction `weak_fraction` of columns (rows) is weak; they receive `weak_share` of the
    faults, i.e. a rate multiplier weak_share / weak_fraction (the others
    (1 - weak_share) / (1 - weak_fraction)), so the average rate is unchanged.
    """

    mode: str = "iid"
    weak_fraction: float = 0.0
    weak_share: float = 0.0
    provenance: str = "illustrative"
    note: str = ""

    def multipliers(self) -> tuple[float, float]:
        """(weak, normal) rate multipliers."""
        if self.mode == "iid":
            return 1.0, 1.0
        return (self.weak_share / self.weak_fraction,
                (1.0 - self.weak_share) / (1.0 - self.weak_fraction))


@dataclass(frozen=True)
class Organization:
    """Array geometry: word width, rows and columns (bits per row) of one array (bank)."""

    word_bits: int = 64
    rows: int = 512
    columns: int = 64


@dataclass(frozen=True)
class Polarity:
    """DRAM cell polarity: true cells leak 1->0 only, anti cells 0->1 only."""

    mode: str = "none"
    stripe: int = 1

    def true_fraction(self) -> float:
        return {"none": 1.0, "all-true": 1.0, "all-anti": 0.0}.get(self.mode, 0.5)


@dataclass(frozen=True)
class Profile:
    """A memory technology profile. Immutable; build it with `load_profile`."""

    name: str
    technology: str
    description: str
    sources: list[str]  # citations, as in the file
    knob: Knob
    curves: tuple[tuple[str, Curve], ...]
    persistent_fraction: float
    persistence_provenance: str
    spatial: Spatial
    organization: Organization
    polarity: Polarity
    energy_form: tuple[tuple[str, Any], ...] = ()
    data: tuple[tuple[str, Any], ...] = ()
    notes: tuple[str, ...] = ()
    flagged_illustrative: bool = False
    origin: str = ""  # file path or "builtin:NAME"
    _cache: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    # -- curves ------------------------------------------------------------------
    def curve(self, which: str) -> Curve | None:
        return dict(self.curves).get(which)

    @property
    def illustrative(self) -> bool:
        """True if flagged so, or if any rate curve (p01, p10, sa0, sa1) is illustrative.

        Illustrative persistence or spatial parameters alone do not set it; they are listed
        by `illustrative_parts()`.
        """
        return self.flagged_illustrative or any(c.illustrative for _, c in self.curves)

    def illustrative_parts(self) -> list[str]:
        parts = [n for n, c in self.curves if c.illustrative]
        if self.persistence_provenance == "illustrative":
            parts.append("persistence")
        if self.spatial.mode != "iid" and self.spatial.provenance == "illustrative":
            parts.append("spatial")
        return parts

    def check_knob(self, knob: float, clamp: bool = False) -> float:
        """Validate a knob value (UserInputError outside [min, max] unless clamp)."""
        k = self.knob
        try:
            x = float(knob)
        except (TypeError, ValueError):
            raise UserInputError(self.name, k.name, f"knob value {knob!r} is not a number",
                                 f"pass a number in {k.unit}") from None
        if math.isnan(x):
            raise UserInputError(self.name, k.name, "knob value is NaN", "pass a number")
        if x < k.min or x > k.max:
            if clamp:
                return min(max(x, k.min), k.max)
            raise UserInputError(self.name, k.name,
                                 f"{x:g} {k.unit} outside the profile's range "
                                 f"[{k.min:g}, {k.max:g}] {k.unit}",
                                 "use a value inside the range or ask to clamp (--clamp)")
        return x

    def cell_rates(self, knob: float, clamp: bool = False) -> FlipRates:
        """Per-cell curve values before cell polarity (what a true cell / anti cell sees)."""
        x = self.check_knob(knob, clamp)
        key = ("cell", x)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        vals = {n: float(c(x)) for n, c in self.curves}
        r = FlipRates(vals["p01"], vals["p10"], vals.get("sa0", 0.0), vals.get("sa1", 0.0))
        if len(self._cache) < 4096:
            self._cache[key] = r
        return r

    def rates(self, knob: float, clamp: bool = False) -> FlipRates:
        """Per-bit rates at `knob`, averaged over the array's cells (polarity applied).

        With a polarity, p10 is the leak rate of true cells and p01 that of anti cells; the
        returned p01 / p10 are the array averages (e.g. p10 * true fraction).
        """
        c = self.cell_rates(knob, clamp)
        if self.polarity.mode == "none":
            return c
        tf = self.polarity.true_fraction()
        return FlipRates(c.p01 * (1.0 - tf), c.p10 * tf, c.sa0, c.sa1)

    def energy(self, knob: float) -> float | None:
        """Relative energy per access at `knob` (1.0 at nominal), or None if not declared."""
        if not self.energy_form:
            return None
        e = dict(self.energy_form)
        x = float(knob)
        if e["form"] == "power":
            return float((x / self.knob.nominal) ** e["exponent"])
        kx, kv = np.array(e["knob"]), np.array(e["relative"])
        return float(np.interp(x, kx, kv) / np.interp(self.knob.nominal, kx, kv))

    # -- serialization -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable canonical content (defaults filled in)."""
        k = self.knob
        d: dict[str, Any] = {
            "name": self.name, "technology": self.technology, "description": self.description,
            "sources": list(self.sources), "notes": list(self.notes),
            "illustrative": self.illustrative,
            "knob": {"name": k.name, "unit": k.unit, "nominal": k.nominal, "min": k.min,
                     "max": k.max, "harsher": k.harsher},
        }
        for n, c in self.curves:
            d[n] = c.to_dict()
        d["persistence"] = {"fraction": self.persistent_fraction,
                            "provenance": self.persistence_provenance}
        s = self.spatial
        d["spatial"] = {"mode": s.mode, "weak_fraction": s.weak_fraction,
                        "weak_share": s.weak_share, "provenance": s.provenance, "note": s.note}
        o = self.organization
        d["organization"] = {"word_bits": o.word_bits, "rows": o.rows, "columns": o.columns}
        d["polarity"] = {"mode": self.polarity.mode, "stripe": self.polarity.stripe}
        if self.energy_form:
            d["energy"] = {a: (list(b) if isinstance(b, tuple) else b)
                           for a, b in self.energy_form}
        if self.data:
            d["data"] = {a: (list(b) if isinstance(b, tuple) else b) for a, b in self.data}
        return d

    @property
    def digest(self) -> str:
        """sha256 hex of the canonical JSON content (stable across file formatting)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def __hash__(self) -> int:
        return hash(self.digest)


# ----------------------------------------------------------------------------- loading

def _builtin_dir():
    return resources.files("memory_models.builtin")


def list_profiles() -> list[str]:
    """Names of the built-in profiles (derived from the TOML files shipped in the package)."""
    return sorted(p.name[:-5] for p in _builtin_dir().iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str | PathLike[str] | Profile) -> Profile:
    """Load a built-in profile by name, or a user profile from a .toml path (a Profile is
    returned as is). Raises UserInputError (naming the file and field) for bad input;
    clamping the knob is per call of `Profile.rates`.
    """
    if isinstance(name_or_path, Profile):
        return name_or_path
    s = str(name_or_path)
    builtin = list_profiles()
    if s in builtin:
        text = (_builtin_dir() / f"{s}.toml").read_text(encoding="utf-8")
        return parse_profile(text, source=f"builtin:{s}")
    path = Path(s)
    looks_like_path = path.suffix == ".toml" or "/" in s or path.exists()
    if not looks_like_path:
        close = difflib.get_close_matches(s, builtin, n=1)
        hint = (f"did you mean '{close[0]}'?" if close
                else "run `mcelsim profiles list`, or pass a path to a .toml file")
        raise UserInputError(s, "", "no built-in profile of that name", hint)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserInputError(s, "", "file not found", "check the path") from None
    except OSError as err:
        raise UserInputError(s, "", f"cannot read file ({err.strerror})",
                             "check the path and permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserInputError(s, "", "not UTF-8 text", "save the profile as UTF-8 TOML") from None
    return parse_profile(text, source=s)


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    """Parse and validate profile TOML text. Every problem raises UserInputError."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserInputError(source, "", f"invalid TOML ({err})",
                             "fix the syntax (key = value, [section])") from None
    except (ValueError, TypeError, RecursionError) as err:  # defensive: odd inputs
        raise UserInputError(source, "", f"invalid TOML ({err})", "fix the syntax") from None
    return _build(_Section(data, source, ""), source)


def profile_from_dict(data: Any, source: str = "<profile>") -> Profile:
    """Validate an already-parsed profile (the dict `tomllib` would produce)."""
    return _build(_Section(data, source, ""), source)


def _build(top: _Section, source: str) -> Profile:
    name = top.string("name", required=True)
    if not name or not all(ch.isalnum() or ch in "-_." for ch in name):
        raise UserInputError(source, "name", f"invalid profile name {name!r}",
                             "use letters, digits, '-', '_' or '.'")
    technology = top.string("technology", required=True)
    description = top.string("description", required=True)
    sources = top.strings("sources", required=True)
    if not sources:
        raise UserInputError(source, "sources", "no source given",
                             'cite where the numbers come from, or "illustrative: ..."')
    notes = top.strings("notes")
    flagged = top.boolean("illustrative", False)

    ks = top.sub("knob", required=True)
    knob = Knob(
        name=ks.string("name", required=True), unit=ks.string("unit", required=True),
        nominal=ks.number("nominal", required=True), min=ks.number("min", required=True),
        max=ks.number("max", required=True),
        harsher=ks.string("harsher", required=True, choices=("lower", "higher")))
    ks.finish()
    if not knob.min < knob.max:
        raise UserInputError(source, "knob.min", f"min {knob.min:g} must be < max {knob.max:g}",
                             "swap or correct min and max")
    if not knob.min <= knob.nominal <= knob.max:
        raise UserInputError(source, "knob.nominal",
                             f"nominal {knob.nominal:g} outside [{knob.min:g}, {knob.max:g}]",
                             "widen the range or correct the nominal value")
    sign = 1.0 if knob.harsher == "lower" else -1.0
    kelvin = 273.15 if knob.unit in ("C", "degC", "°C", "celsius") else 0.0

    curves = []
    for cname in CURVE_NAMES:
        sec = top.sub(cname, required=cname in ("p01", "p10"))
        if sec is not None:
            curves.append((cname, _curve(sec, knob, sign, kelvin, source)))
    cd = dict(curves)
    if "sa0" in cd or "sa1" in cd:
        grid = np.linspace(knob.min, knob.max, _GRID)
        tot = (cd["sa0"](grid) if "sa0" in cd else 0) + (cd["sa1"](grid) if "sa1" in cd else 0)
        if np.max(tot) > 1.0:
            raise UserInputError(source, "sa1", "sa0 + sa1 exceeds 1 inside the knob range",
                                 "lower the stuck-at rates")

    ps = top.sub("persistence", required=True)
    pfrac = ps.number("fraction", required=True, lo=0.0, hi=1.0)
    pprov = ps.string("provenance", "illustrative", choices=PROVENANCES)
    ps.string("note", "")
    ps.finish()

    spatial = Spatial()
    ss = top.sub("spatial")
    if ss is not None:
        mode = ss.string("mode", "iid", choices=SPATIAL_MODES)
        wf = ss.number("weak_fraction", 0.0 if mode == "iid" else None,
                       required=mode != "iid", lo=0.0, hi=1.0)
        wsh = ss.number("weak_share", 0.0 if mode == "iid" else None,
                        required=mode != "iid", lo=0.0, hi=1.0)
        prov = ss.string("provenance", "illustrative", choices=PROVENANCES)
        note = ss.string("note", "")
        ss.finish()
        if mode != "iid":
            if not 0.0 < wf < 1.0:
                raise UserInputError(source, "spatial.weak_fraction",
                                     f"{wf:g} must be strictly between 0 and 1",
                                     "e.g. 0.05 for 5 % weak columns")
            if wsh < wf:
                raise UserInputError(source, "spatial.weak_share",
                                     f"weak_share {wsh:g} < weak_fraction {wf:g} (weak lines "
                                     "would get fewer faults than the others)",
                                     "use weak_share >= weak_fraction")
        spatial = Spatial(mode, wf, wsh, prov, note)

    org = Organization()
    os_ = top.sub("organization")
    if os_ is not None:
        org = Organization(word_bits=os_.integer("word_bits", 64), rows=os_.integer("rows", 512),
                           columns=os_.integer("columns", 64))
        os_.finish()

    pol = Polarity()
    pls = top.sub("polarity")
    if pls is not None:
        pol = Polarity(pls.string("mode", "none", choices=POLARITIES), pls.integer("stripe", 1))
        pls.finish()

    energy: tuple = ()
    es = top.sub("energy")
    if es is not None:
        form = es.string("form", required=True, choices=("power", "table"))
        if form == "power":
            energy = (("form", "power"), ("exponent", es.number("exponent", required=True)))
        else:
            kx = es.numbers("knob")
            rel = es.numbers("relative", lo=0.0)
            _check_table_axis(kx, rel, source, "energy")
            if not knob.min >= kx[0] or not knob.max <= kx[-1] or np.interp(
                    knob.nominal, kx, rel) <= 0:
                raise UserInputError(source, "energy.knob",
                                     "table must cover the knob range with energy > 0 at nominal",
                                     "add points at knob.min and knob.max")
            energy = (("form", "table"), ("knob", kx), ("relative", rel))
        es.string("note", "")
        es.finish()
        if form == "power" and knob.nominal == 0:
            raise UserInputError(source, "energy.form", "power form needs a non-zero nominal",
                                 "use form = \"table\"")

    data: tuple = ()
    ds = top.sub("data")
    if ds is not None:
        kx = ds.numbers("knob")
        ber = ds.numbers("ber", lo=0.0, hi=1.0)
        if len(kx) != len(ber):
            raise UserInputError(source, "data.ber", f"{len(ber)} values for {len(kx)} knob points",
                                 "give one ber per knob point")
        prov = ds.string("provenance", "measured", choices=PROVENANCES)
        note = ds.string("note", "")
        ds.finish()
        data = (("knob", kx), ("ber", ber), ("provenance", prov), ("note", note))

    top.finish()
    return Profile(name=name, technology=technology, description=description, sources=list(sources),
                   knob=knob, curves=tuple(curves), persistent_fraction=pfrac,
                   persistence_provenance=pprov, spatial=spatial, organization=org, polarity=pol,
                   energy_form=energy, data=data, notes=notes, flagged_illustrative=flagged,
                   origin=source)


def _check_table_axis(kx: tuple[float, ...], vals: tuple[float, ...], source: str,
                      path: str) -> None:
    if len(kx) < 2:
        raise UserInputError(source, f"{path}.knob", "a table needs at least 2 points",
                             "add knob points")
    if len(vals) != len(kx):
        raise UserInputError(source, f"{path}", f"{len(vals)} values for {len(kx)} knob points",
                             "give one value per knob point")
    if any(b <= a for a, b in zip(kx, kx[1:])):
        raise UserInputError(source, f"{path}.knob", "knob points must be strictly increasing",
                             "sort the table by knob value and remove duplicates")


def _curve(sec: _Section, knob: Knob, sign: float, kelvin: float, source: str) -> Curve:
    form = sec.string("form", required=True,
                      choices=("table", "erfc", "power", "arrhenius", "constant"))
    monotone = sec.boolean("monotone", True)
    note = sec.string("note", "")
    prov_raw = sec.raw("provenance", "illustrative")
    provs = (prov_raw,) if isinstance(prov_raw, str) else prov_raw
    if not isinstance(provs, list | tuple) or not provs:
        raise UserInputError(source, f"{sec.path}.provenance", "expected a string or list",
                             f"use one of {', '.join(PROVENANCES)}")
    for p in provs:
        if p not in PROVENANCES:
            close = difflib.get_close_matches(str(p), PROVENANCES, n=1)
            hint = (f"did you mean '{close[0]}'?" if close
                    else f"use one of {', '.join(PROVENANCES)}")
            raise UserInputError(source, f"{sec.path}.provenance", f"unknown provenance {p!r}",
                                 hint)
    provs = tuple(provs)
    params: dict[str, float] = {}
    kx: tuple[float, ...] = ()
    kp: tuple[float, ...] = ()
    interp = "log-linear"
    if form == "table":
        kx = sec.numbers("knob")
        kp = sec.numbers("p", lo=0.0, hi=1.0)
        interp = sec.string("interpolation", "log-linear", choices=("log-linear", "linear"))
        _check_table_axis(kx, kp, source, sec.path)
        if len(provs) not in (1, len(kx)):
            raise UserInputError(source, f"{sec.path}.provenance",
                                 f"{len(provs)} provenances for {len(kx)} points",
                                 "give one provenance, or one per point")
        if kx[0] > knob.min or kx[-1] < knob.max:
            raise UserInputError(source, f"{sec.path}.knob",
                                 f"table covers [{kx[0]:g}, {kx[-1]:g}] but the knob range is "
                                 f"[{knob.min:g}, {knob.max:g}]",
                                 "add points at the ends of the knob range or narrow the range")
        if monotone:
            arr = np.array(kp)
            d = np.diff(arr) * sign  # harsher = lower: p must not rise with the knob
            if np.any(d > 0):
                i = int(np.argmax(d > 0))
                raise UserInputError(source, f"{sec.path}.p",
                                     f"not monotone: p = {kp[i]:g} at {kx[i]:g} but {kp[i + 1]:g} "
                                     f"at {kx[i + 1]:g} (harsher is {knob.harsher} {knob.name})",
                                     "fix the values or set monotone = false")
    elif form == "constant":
        params["value"] = sec.number("value", required=True, lo=0.0, hi=1.0)
    elif form == "erfc":
        params["scale"] = sec.number("scale", 1.0, lo=0.0, hi=2.0)
        params["mu"] = sec.number("mu", required=True)
        params["sigma"] = sec.number("sigma", required=True, positive=True)
    elif form == "power":
        params["scale"] = sec.number("scale", required=True, lo=0.0)
        params["x0"] = sec.number("x0", required=True, positive=True)
        params["exponent"] = sec.number("exponent", required=True)
        if knob.min <= 0:
            raise UserInputError(source, "knob.min", "the power form needs a positive knob range",
                                 "use a table, or a knob with min > 0")
    else:  # arrhenius
        params["scale"] = sec.number("scale", required=True, lo=0.0)
        params["ea_ev"] = sec.number("ea_ev", required=True)
        params["t0"] = sec.number("t0", required=True)
        if knob.min + kelvin <= 0 or params["t0"] + kelvin <= 0:
            raise UserInputError(source, f"{sec.path}.t0",
                                 "the Arrhenius form needs temperatures above 0 K",
                                 'use kelvin, or unit = "C" for Celsius')
    sec.finish()
    curve = Curve(form=form, params=tuple(params.items()), knob=kx, p=kp, interpolation=interp,
                  provenance=provs, monotone=monotone, note=note or "", sign=sign,
                  kelvin_offset=kelvin)
    if form != "table":
        if len(provs) != 1:
            raise UserInputError(source, f"{sec.path}.provenance",
                                 "a parametric curve has one provenance", 'e.g. "fitted"')
        grid = np.linspace(knob.min, knob.max, _GRID)
        with np.errstate(all="ignore"):
            raw = curve.raw(grid)
        if not np.all(np.isfinite(raw)) or np.max(raw) > 1.0:
            raise UserInputError(source, sec.path,
                                 f"the {form} curve leaves [0, 1] inside the knob range "
                                 f"[{knob.min:g}, {knob.max:g}]",
                                 "lower scale or narrow the knob range")
        if monotone:
            v = curve(grid)
            d = np.diff(v) * sign
            if np.any(d > 1e-15 * np.maximum(1.0, np.abs(v[1:]))):
                raise UserInputError(source, sec.path,
                                     f"the {form} curve is not monotone (harsher is "
                                     f"{knob.harsher} {knob.name})",
                                     "check the sign of its parameters or set monotone = false")
    return curve
