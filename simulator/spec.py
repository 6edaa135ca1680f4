"""What a campaign is: its settings, models and test set, the keys and seeds of its samples,
its validation, and the id under which its results are stored.

One Monte-Carlo sample = (model, operating point, chip). Its result is a pure function of
its key and the campaign settings:
  chip seed       = `chip_seed(seed, chip_index)` (campaign seed and chip index only, so the
                    same chips serve every model and every operating point: common random
                    numbers, and paired model comparisons);
  transient rng   = `point_rng(seed, chip_index, point_index)`.
For an i.i.d. sweep the error source at each point is `BitErrorModel(p01, p10)` with
p01 = R * p10 and (p01 + p10) / 2 = BER (R = `p01_ratio`, `ber_rates`).

`campaign_id` = hash of every setting that changes results (kind, profile digest or i.i.d.
ratio, points, encoding, layout, protection, code (`protection`, when not "none"), biases,
seed, dataset + test-set digest, number of images, mcelsim version); the number of chips
and the interval target are not part of it, so adding chips extends a campaign.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memory_models.stats import INTERVALS
from memory_models.usererror import UserInputError
from simulator.store import mcelsim_version

__all__ = [
    "ENGINES",
    "KINDS",
    "CampaignSpec",
    "ModelEntry",
    "TestSet",
    "ber_rates",
    "campaign_config",
    "campaign_id_of",
    "check_test_set",
    "chip_seed",
    "iid_profile_row",
    "model_entry",
    "parse_sweep",
    "point_rng",
    "point_rows",
    "profile_row",
    "validate_spec",
]

KINDS = ("knob", "ber", "sensitivity")
MAX_CHIPS = 1_000_000  # chips per point: far beyond any campaign, and a bound on task lists
# Names `CampaignSpec.engine` may take; `simulator.sample` says what each one runs.
ENGINES = ("auto", "session", "forward")


@dataclass(frozen=True)
class CampaignSpec:
    """Settings of a campaign.

    kind: 'knob' (points are knob values of `profile`), 'ber' (points are i.i.d. bit error
      rates) or 'sensitivity' (points = (ber,), one BER; per-layer and per-bit accuracy).
    chips: chips per point (initial batch in adaptive mode). ci: adaptive mode, add `chips`
      more chips until every point's 95 % interval is narrower than `ci` (full width,
      accuracy units in [0, 1]) for every model, or `max_chips` is reached.
    engine: 'session' (incremental recompute of what changed), 'forward' (full forward of
      the corrupted network per sample) or 'auto' (session for reads that change few
      weights, else forward; see `simulator.sample`). Same results, only speed differs.
    margins_chips: chips whose per-image margins are stored at every point.
    """

    kind: str
    points: tuple[float, ...]
    profile: str | None = None
    p01_ratio: float = 1.0
    chips: int = 20
    seed: int = 0
    encoding: str = "offset-binary"
    layout: str = "word"
    protect: tuple[str, ...] = ()
    include_biases: bool = False
    ci: float | None = None
    max_chips: int | None = None
    engine: str = "auto"
    margins_chips: int = 1
    interval: str = "t"  # 't' (bootstrap where normality fails) or 'bootstrap' everywhere
    protection: str = "none"  # a code stored with the data (memory_models.protection key)


@dataclass
class ModelEntry:
    """A model taking part in a campaign."""

    net: Any
    model_hash: str
    label: str
    path: str = ""
    meta: dict = field(default_factory=dict)


@dataclass
class TestSet:
    """Test images (float32 NCHW in [0, 1]) and labels (int64)."""

    __test__ = False  # not a pytest test class

    name: str
    images: np.ndarray
    labels: np.ndarray

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.images, self.labels):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()[:16]


def model_entry(
    net: Any, label: str | None = None, path: str | os.PathLike | None = None,
    meta: dict | None = None,
) -> ModelEntry:
    """Wrap a network; its hash is the checkpoint file's sha256 when `path` is given, else a
    hash of its stored integers (weights, biases, bit widths, logit scale)."""
    h = hashlib.sha256()
    if path is not None:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(repr(float(net.logit_scale)).encode())
        weights, biases = net.weights(), net.biases()
        for name in net.weight_names:
            w = np.ascontiguousarray(weights[name])
            h.update(f"{name}:{net.weight_bits(name)}:{w.dtype.str}{w.shape}".encode())
            h.update(w.tobytes())
            b = biases.get(name)
            if b is not None:
                h.update(np.ascontiguousarray(b).tobytes())
    digest = h.hexdigest()[:16]
    if label is None:
        label = Path(path).stem if path is not None else f"model-{digest[:8]}"
    return ModelEntry(net=net, model_hash=digest, label=label,
                      path="" if path is None else str(path), meta=dict(meta or {}))


def parse_sweep(text: str, option: str = "--sweep") -> tuple[float, ...]:
    """'start:stop:step' (inclusive of stop), 'a,b,c' or a single number -> sorted values."""
    fix = "write START:STOP:STEP (e.g. 0.80:1.00:0.01), a comma list, or one number"
    text = str(text).strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if not all(math.isfinite(v) for v in parts):
                raise ValueError
            if step <= 0:
                raise UserInputError(option, None, f"step must be positive in {text!r}", fix)
            if stop < start:
                raise UserInputError(option, None, f"stop below start in {text!r}",
                                     "write the smaller value first, START:STOP:STEP")
            n = int(math.floor((stop - start) / step + 1e-9)) + 1
            if n > 100_000:
                raise UserInputError(option, None, f"{n} points is too many",
                                     "use a larger step (at most 100 000 points)")
            values = [round(start + i * step, 12) for i in range(n)]
        else:
            values = [float(p) for p in text.split(",") if p.strip()]
            if not values or not all(math.isfinite(v) for v in values):
                raise ValueError
    except UserInputError:
        raise
    except ValueError:
        raise UserInputError(option, None, f"bad sweep {text!r}", fix) from None
    return tuple(sorted(set(values)))


def chip_seed(seed: int, chip_index: int) -> int:
    """Seed of chip `chip_index` in a campaign with seed `seed` (63-bit, non-negative)."""
    state = np.random.SeedSequence([int(seed), int(chip_index)]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def point_rng(seed: int, chip_index: int, point_index: int) -> np.random.Generator:
    """Transient-error generator of one sample."""
    return np.random.default_rng([int(seed), int(chip_index), int(point_index)])


def ber_rates(ber: float, ratio: float = 1.0) -> tuple[float, float]:
    """(p01, p10) with p01 = ratio * p10 and (p01 + p10) / 2 = ber."""
    p10 = 2.0 * ber / (1.0 + ratio)
    return ratio * p10, p10


# ---------------------------------------------------------------------------------------
# Campaign identity and point tables
# ---------------------------------------------------------------------------------------
def iid_profile_row(ratio: float) -> dict:
    """Store row of the i.i.d. pseudo-profile of a BER sweep (knob = BER, harsher 'higher')."""
    name = "iid" if ratio == 1.0 else f"iid-r{ratio:g}"
    return {
        "profile_hash": name,
        "name": name,
        "technology": "iid",
        "knob_name": "ber",
        "knob_unit": "",
        "knob_nominal": 0.0,
        "knob_min": 0.0,
        "knob_max": 1.0,
        "knob_harsher": "higher",
        "illustrative": 0,
        "profile_json": json.dumps({"model": "iid", "p01_ratio": ratio}),
    }



def profile_row(prof: Any) -> dict:
    """Store row of a memory profile (its knob and its full description)."""
    k = prof.knob
    return {
        "profile_hash": prof.digest,
        "name": getattr(prof, "name", ""),
        "technology": getattr(prof, "technology", ""),
        "knob_name": k.name,
        "knob_unit": k.unit,
        "knob_nominal": float(k.nominal),
        "knob_min": float(k.min),
        "knob_max": float(k.max),
        "knob_harsher": k.harsher,
        "illustrative": int(bool(getattr(prof, "illustrative", False))),
        "profile_json": json.dumps(prof.to_dict(), sort_keys=True, default=str),
    }


def _energy(prof: Any, v: float) -> float | None:
    fn = getattr(prof, "energy", None)
    if fn is None:
        return None
    e = fn(v)
    return None if e is None or not math.isfinite(float(e)) else float(e)


def point_rows(spec: CampaignSpec, prof: Any) -> list[dict]:
    """Store rows of the operating points: knob, BER, p01, p10, sa0, sa1, relative energy."""
    rows = []
    for i, v in enumerate(spec.points):
        if spec.kind == "knob":
            r = prof.rates(v)
            rows.append({
                "point_index": i, "knob": float(v), "ber": float(r.ber), "p01": float(r.p01),
                "p10": float(r.p10), "sa0": float(r.sa0), "sa1": float(r.sa1),
                "energy": _energy(prof, v),
            })  # fmt: skip
        else:
            p01, p10 = ber_rates(v, spec.p01_ratio)
            rows.append({"point_index": i, "knob": float(v), "ber": float(v), "p01": p01,
                         "p10": p10, "sa0": 0.0, "sa1": 0.0, "energy": None})  # fmt: skip
    return rows


def validate_spec(spec: CampaignSpec, prof: Any = None) -> None:
    """Raise UserInputError for impossible settings."""
    from memory_models.protection import parse_protection

    parse_protection(spec.protection)
    if spec.kind not in KINDS:
        raise UserInputError("campaign", "kind", f"unknown kind {spec.kind!r}",
                             f"use one of {', '.join(KINDS)}")  # fmt: skip
    if not spec.points:
        raise UserInputError("--sweep", None, "no operating points", "give at least one")
    if not 1 <= spec.chips <= MAX_CHIPS:
        raise UserInputError("--chips", None, f"must be in 1..{MAX_CHIPS}, got {spec.chips}",
                             f"pass --chips between 1 and {MAX_CHIPS}")  # fmt: skip
    if spec.max_chips is not None and spec.max_chips > MAX_CHIPS:
        raise UserInputError("--max-chips", None, f"must be at most {MAX_CHIPS}, got "
                             f"{spec.max_chips}", f"pass --max-chips <= {MAX_CHIPS}")  # fmt: skip
    if spec.seed < 0:
        raise UserInputError("--seed", None, f"must be non-negative, got {spec.seed}",
                             "pass --seed 0 or more")  # fmt: skip
    if spec.ci is not None and not spec.ci > 0:
        raise UserInputError("--ci", None, f"must be positive, got {spec.ci}",
                             "pass a full interval width in (0, 1], e.g. --ci 0.02")  # fmt: skip
    if spec.max_chips is not None and spec.max_chips < spec.chips:
        raise UserInputError("--max-chips", None, f"{spec.max_chips} is below --chips "
                             f"{spec.chips}", "raise --max-chips")  # fmt: skip
    if spec.interval not in INTERVALS:
        raise UserInputError("--interval", None, f"unknown interval {spec.interval!r}",
                             f"use one of {', '.join(INTERVALS)}")  # fmt: skip
    if spec.engine not in ENGINES:
        raise UserInputError("campaign", "engine", f"unknown engine {spec.engine!r}",
                             f"use one of {', '.join(ENGINES)}")  # fmt: skip
    if spec.kind == "knob":
        k = prof.knob
        for v in spec.points:
            if not k.min <= v <= k.max:
                raise UserInputError(
                    "--sweep", None,
                    f"{k.name} {v:g} {k.unit} outside profile {getattr(prof, 'name', '')!r} "
                    f"range [{k.min:g}, {k.max:g}]",
                    "keep the sweep inside the profile's knob range",
                )
    else:
        opt = "--sensitivity-ber" if spec.kind == "sensitivity" else "--ber"
        if not (math.isfinite(spec.p01_ratio) and spec.p01_ratio >= 0):
            raise UserInputError("--p01-ratio", None, f"must be >= 0, got {spec.p01_ratio}",
                             "pass --p01-ratio 0 or more (1 = symmetric)")  # fmt: skip
        for b in spec.points:
            p01, p10 = ber_rates(b, spec.p01_ratio)
            if b < 0 or p01 > 1 or p10 > 1:
                raise UserInputError(opt, None, f"BER {b:g} gives p01={p01:g}, p10={p10:g}",
                                     "keep the BER and p01/p10 within [0, 1]")  # fmt: skip


def check_test_set(models: list[ModelEntry], test: TestSet) -> None:
    """Raise UserInputError unless every model can be evaluated on `test`: images of the
    shape each model was built for (C, H, W from its metadata, else one trial forward) and
    labels below its number of classes. Called before anything is written to a store."""
    images, labels = test.images, test.labels
    fix = "pass the dataset the models were trained on (--dataset NAME)"
    if images.ndim != 4 or labels.shape != (images.shape[0],):
        raise UserInputError(test.name, None, f"images {images.shape} and labels "
                             f"{labels.shape} are not N x C x H x W and N", fix)  # fmt: skip
    for m in models:
        want = m.net.meta.get("input_shape") if isinstance(m.net.meta, dict) else None
        got = tuple(int(d) for d in images.shape[1:])
        if want is not None and tuple(int(d) for d in want) != got:
            raise UserInputError(test.name, None, f"images are {'x'.join(map(str, got))} but "
                                 f"model {m.label} expects {'x'.join(map(str, want))} (C x H x W)",
                                 fix)  # fmt: skip
        if want is None and images.shape[0]:
            try:
                m.net.forward(m.net.quantize_input(images[:1]))
            except (ValueError, IndexError) as err:
                raise UserInputError(test.name, None, f"model {m.label} cannot run on its "
                                     f"images ({err})", fix) from None  # fmt: skip
        if labels.size and (labels.min() < 0 or labels.max() >= m.net.num_classes):
            raise UserInputError(test.name, None, f"labels span {labels.min()}..{labels.max()}"
                                 f" but model {m.label} has {m.net.num_classes} classes",
                                 fix)  # fmt: skip


def campaign_config(spec: CampaignSpec, profile_hash: str, test: TestSet) -> dict:
    """Every setting that changes a sample's result (hashed into the campaign id); the code
    is keyed only when there is one, so campaigns without one keep their ids."""
    from memory_models.protection import parse_protection

    code = parse_protection(spec.protection).key
    return ({"protection": code} if code != "none" else {}) | {
        "kind": spec.kind,
        "profile_hash": profile_hash,
        "p01_ratio": spec.p01_ratio if spec.kind != "knob" else None,
        "points": [repr(float(v)) for v in spec.points],
        "encoding": spec.encoding,
        "layout": spec.layout,
        "protect": list(spec.protect),
        "include_biases": bool(spec.include_biases),
        "seed": int(spec.seed),
        "dataset": test.name,
        "data_digest": test.digest,
        "n_images": int(test.labels.shape[0]),
        "mcelsim_version": mcelsim_version(),
    }


def campaign_id_of(config: dict) -> str:
    """16 hex digits of the sha256 of `campaign_config`."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
