"""Read a campaign results store (SQLite, written by `mcelsim simulate`) into plain data.

Only `sqlite3` and numpy: the store is opened read-only, so a campaign that is still being
written by another process can be read at any time (rows that are not there yet are NaN).
Accuracies are fractions in [0, 1]; margins are in float logit units (true-class logit
minus the best other logit).
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np

from memory_models.usererror import UserInputError


def json_float(x) -> float | None:
    """A JSON-safe float (None for NaN / inf / None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


SCHEMA_VERSION = "1"
PRODUCER = "`mcelsim simulate`"

# Table -> columns analysis reads (the writer may add columns, never rename them).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "campaigns": (
        "campaign_id", "kind", "profile_hash", "encoding", "layout", "protect",
        "include_biases", "seed", "dataset", "n_images", "config_json", "created",
    ),
    "models": (
        "model_hash", "label", "path", "meta_json", "clean_accuracy", "clean_mean_margin",
        "n_images",
    ),
    "profiles": (
        "profile_hash", "name", "technology", "knob_name", "knob_unit", "knob_nominal",
        "knob_min", "knob_max", "knob_harsher", "illustrative", "profile_json",
    ),
    "points": (
        "campaign_id", "point_index", "knob", "ber", "p01", "p10", "sa0", "sa1", "energy",
    ),
    "samples": (
        "campaign_id", "model_hash", "point_index", "chip_index", "chip_seed", "n_images",
        "n_correct", "accuracy", "mean_margin", "n_faults", "n_changed_weights", "elapsed_s",
        "mcelsim_version", "created",
    ),
    "margins": ("campaign_id", "model_hash", "point_index", "chip_index", "margins"),
    "sensitivity": (
        "campaign_id", "model_hash", "target", "name", "ber", "chip_index", "accuracy",
        "n_images",
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    """One trained model (checkpoint) as recorded in the store."""

    model_hash: str
    label: str
    path: str
    meta: dict
    clean_accuracy: float  # fraction in [0, 1]; NaN if not recorded
    clean_mean_margin: float  # float logit units; NaN if not recorded
    n_images: int

    def _get(self, key: str):
        """A metadata value, at the top level or inside the 'model' / 'loss' sections."""
        if self.meta.get(key) is not None:
            return self.meta[key]
        for section in ("model", "loss", "train"):
            sub = self.meta.get(section)
            if isinstance(sub, dict) and sub.get(key) is not None:
                return sub[key]
        return None

    @property
    def loss(self) -> str:
        """Training loss from the checkpoint metadata ('ce', 'mcel', 'mhl', ...; '' if unknown).

        Accepts `"loss": "mcel"` as well as `"loss": {"name": "mcel", "margin": 32, ...}`.
        """
        val = self.meta.get("loss")
        if isinstance(val, dict):
            val = val.get("name")
        return str(val or "").lower()

    @property
    def margin(self) -> float | None:
        """MCEL / MHL margin parameter from the metadata, if any (float logit units).

        None for cross-entropy models: a training config records the (unused) margin
        option of every run, and it belongs to MCEL / MHL only.
        """
        if self.loss == "ce":
            return None
        m = self.meta.get("margin")
        loss = self.meta.get("loss")
        if m is None and isinstance(loss, dict):
            m = loss.get("margin") if loss.get("margin") is not None else loss.get("mhl_b")
        if m is None and not isinstance(loss, dict):  # flat metadata of other writers
            m = self._get("margin")
        try:
            return None if m is None else float(m)
        except (TypeError, ValueError):
            return None

    @property
    def arch(self) -> str:
        return str(self._get("arch") or "")

    @property
    def weight_bits(self) -> int | None:
        b = self._get("weight_bits")
        return None if b is None else int(b)

    @property
    def dataset(self) -> str:
        d = self.meta.get("dataset")
        if isinstance(d, dict):
            d = d.get("name")
        return str(d or "")

    @property
    def inject_ber(self) -> float:
        """Bit error rate injected while training (0 for plain training)."""
        inj = self.meta.get("inject")
        val = inj.get("ber") if isinstance(inj, dict) else self.meta.get("inject_ber")
        try:
            return float(val or 0.0)
        except (TypeError, ValueError):
            return 0.0


@dataclass(frozen=True)
class ProfileInfo:
    """The memory technology profile a campaign ran on (knob range, direction, citation)."""

    profile_hash: str
    name: str
    technology: str
    knob_name: str
    knob_unit: str
    knob_nominal: float
    knob_min: float
    knob_max: float
    knob_harsher: str  # 'lower' (undervolting) or 'higher' (refresh interval, BER, ...)
    illustrative: bool
    profile: dict  # the full profile as JSON (source/citation, energy model, ...)

    @property
    def citation(self) -> str:
        """The profile's sources / citation, '; '-joined ('' if it has none)."""
        for key in ("sources", "citation", "source", "reference"):
            val = self.profile.get(key)
            if isinstance(val, str) and val.strip():
                return val.strip()
            if isinstance(val, list | tuple):
                items = [str(v).strip() for v in val if str(v).strip()]
                if items:
                    return "; ".join(items)
            if isinstance(val, dict):
                text = val.get("citation") or val.get("text") or val.get("title")
                if text:
                    return str(text).strip()
        return ""

    @property
    def description(self) -> str:
        val = self.profile.get("description")
        return val.strip() if isinstance(val, str) else ""

    @property
    def provenance(self) -> dict[str, str]:
        """Part of the profile -> 'measured' / 'fitted' / 'illustrative' / ... as recorded."""
        return {
            k: str(v["provenance"]) for k, v in self.profile.items()
            if isinstance(v, dict) and v.get("provenance")
        }

    @property
    def is_iid(self) -> bool:
        """True for the synthetic profile of an i.i.d. BER sweep (knob = BER)."""
        return self.knob_name == "ber"


@dataclass(frozen=True)
class PointGrid:
    """The operating points of one campaign, ordered by point_index (NaN where NULL)."""

    point_index: np.ndarray  # int64 (n_points,)
    knob: np.ndarray  # float64, in the profile's knob unit
    ber: np.ndarray  # float64, per-bit error rate
    p01: np.ndarray
    p10: np.ndarray
    sa0: np.ndarray
    sa1: np.ndarray
    energy: np.ndarray  # relative energy per access; NaN if the profile has no energy model

    def __len__(self) -> int:
        return int(self.point_index.size)

    def row(self, point_index: int) -> int:
        """Row of `point_index` in these arrays."""
        hits = np.flatnonzero(self.point_index == point_index)
        if hits.size == 0:
            raise KeyError(point_index)
        return int(hits[0])


@dataclass(frozen=True)
class ModelSamples:
    """Monte-Carlo samples of one model in one campaign: rows = points, columns = chips.

    Missing samples (a campaign still running) are NaN; chip column j is chip_index
    `Campaign.chip_index[j]` for every model, so columns are paired across models.
    """

    model_hash: str
    accuracy: np.ndarray  # float64 (n_points, n_chips), fraction in [0, 1]
    mean_margin: np.ndarray  # float64 (n_points, n_chips), float logit units
    n_faults: np.ndarray  # float64 (n_points, n_chips)
    chip_seed: np.ndarray  # float64 (n_points, n_chips), NaN where missing
    n_images: np.ndarray  # float64 (n_points, n_chips)


@dataclass(frozen=True)
class SensitivityRows:
    """Per-layer or per-bit-position sensitivity of one model: rows = names, columns = chips."""

    target: str  # 'layer' or 'bit'
    names: tuple[str, ...]  # layer names, or bit positions as text (0 = LSB), in order
    ber: np.ndarray  # float64 (n_names,), the error rate applied to that layer / bit
    accuracy: np.ndarray  # float64 (n_names, n_chips), NaN where missing
    chip_index: np.ndarray  # int64 (n_chips,)


@dataclass
class Campaign:
    """One campaign: its settings, profile, operating points, samples, margins, sensitivity."""

    campaign_id: str
    kind: str  # 'knob' | 'ber' | 'sensitivity'
    profile: ProfileInfo | None
    encoding: str
    layout: str
    protect: str
    include_biases: bool
    seed: int | None
    dataset: str
    n_images: int | None
    config: dict
    created: str
    points: PointGrid
    chip_index: np.ndarray  # int64 (n_chips,), the chips seen in this campaign
    samples: dict[str, ModelSamples] = field(default_factory=dict)  # by model_hash
    margins: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict)
    # (model_hash, point_index, chip_index) -> float32 margins per image
    sensitivity: dict[str, dict[str, SensitivityRows]] = field(default_factory=dict)
    # model_hash -> target -> rows
    versions: tuple[str, ...] = ()  # mcelsim versions that wrote the samples
    cells: dict[str, tuple[int, int]] = field(default_factory=dict)
    # model_hash -> (data cells, check cells) of its deployment (stores since issue 12)

    @property
    def protection(self) -> str:
        """The code stored with the data ('none' without one)."""
        return str(self.config.get("protection") or "none")

    def cell_overhead(self, model_hash: str) -> float:
        """Cells stored per data cell (1 without a code): what the energy scales with."""
        data, check = self.cells.get(model_hash, (0, 0))
        return (data + check) / data if data > 0 else 1.0

    @property
    def model_hashes(self) -> list[str]:
        """Models with samples or sensitivity rows in this campaign (store order)."""
        seen = list(self.samples)
        seen += [h for h in self.sensitivity if h not in self.samples]
        return seen

    @property
    def n_chips(self) -> int:
        """Chips with samples (or, for a sensitivity-only campaign, sensitivity rows)."""
        if self.chip_index.size or not self.sensitivity:
            return int(self.chip_index.size)
        return max(r.chip_index.size for t in self.sensitivity.values() for r in t.values())


@dataclass
class Results:
    """Everything in a results store (or the selected campaign of it)."""

    path: Path
    schema_version: str
    mcelsim_version: str
    meta: dict[str, str]
    models: dict[str, ModelInfo]  # by model_hash
    campaigns: list[Campaign]

    def labels(self) -> dict[str, str]:
        """model_hash -> unique display label (label, with a hash prefix if labels clash)."""
        out: dict[str, str] = {}
        counts: dict[str, int] = {}
        for m in self.models.values():
            counts[m.label] = counts.get(m.label, 0) + 1
        for h, m in self.models.items():
            label = m.label or h[:8]
            out[h] = label if counts.get(m.label, 0) <= 1 and m.label else f"{label} [{h[:6]}]"
        return out


def _nan(value) -> float:
    return math.nan if value is None else float(value)


def _json(text: str | None) -> dict:
    if not text:
        return {}
    try:
        val = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return val if isinstance(val, dict) else {}


def _fix() -> str:
    return f"pass a results store written by {PRODUCER}"


def connect(path: str | PathLike[str]) -> sqlite3.Connection:
    """Open a results store read-only after checking that it is one (UserInputError if not)."""
    p = Path(path)
    if not p.exists():
        raise UserInputError(p, None, "results store not found", _fix())
    if not p.is_file():
        raise UserInputError(p, None, "is not a file", _fix())
    with p.open("rb") as fh:
        header = fh.read(16)
    if header != b"SQLite format 3\x00":
        raise UserInputError(p, None, "is not an SQLite results store", _fix())
    try:
        con = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        tables = {
            r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    except sqlite3.DatabaseError as err:
        raise UserInputError(p, None, f"cannot be read as SQLite ({err})", _fix()) from None
    missing = [t for t in REQUIRED_COLUMNS if t not in tables]
    if missing:
        con.close()
        raise UserInputError(
            p, None, f"is not an mcelsim results store (no table {', '.join(missing)})", _fix()
        )
    for table, cols in REQUIRED_COLUMNS.items():
        have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
        lacking = [c for c in cols if c not in have]
        if lacking:
            con.close()
            raise UserInputError(
                p, f"{table}.{lacking[0]}", "column missing: wrong results-store schema", _fix()
            )
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    version = str(meta.get("schema_version", ""))
    if version != SCHEMA_VERSION:
        con.close()
        raise UserInputError(
            p,
            "meta.schema_version",
            f"unsupported results-store schema version {version or '(none)'!r} "
            f"(this mcelsim reads {SCHEMA_VERSION!r})",
            "use the mcelsim version that wrote the store, or re-run the campaign",
        )
    return con


def _read_models(con: sqlite3.Connection) -> dict[str, ModelInfo]:
    out = {}
    for row in con.execute(
        "SELECT model_hash, label, path, meta_json, clean_accuracy, clean_mean_margin, n_images "
        "FROM models ORDER BY rowid"
    ):
        h, label, path, meta_json, acc, margin, n = row
        out[h] = ModelInfo(
            model_hash=h,
            label=label or "",
            path=path or "",
            meta=_json(meta_json),
            clean_accuracy=_nan(acc),
            clean_mean_margin=_nan(margin),
            n_images=int(n or 0),
        )
    return out


def _read_profile(con: sqlite3.Connection, profile_hash: str | None) -> ProfileInfo | None:
    row = con.execute(
        "SELECT profile_hash, name, technology, knob_name, knob_unit, knob_nominal, knob_min, "
        "knob_max, knob_harsher, illustrative, profile_json FROM profiles WHERE profile_hash=?",
        (profile_hash,),
    ).fetchone()
    if row is None:
        return None
    harsher = str(row[8] or "lower").lower()
    return ProfileInfo(
        profile_hash=row[0],
        name=row[1] or "",
        technology=row[2] or "",
        knob_name=row[3] or "knob",
        knob_unit=row[4] or "",
        knob_nominal=_nan(row[5]),
        knob_min=_nan(row[6]),
        knob_max=_nan(row[7]),
        knob_harsher="higher" if harsher == "higher" else "lower",
        illustrative=bool(row[9]),
        profile=_json(row[10]),
    )


def _read_points(con: sqlite3.Connection, cid: str) -> PointGrid:
    rows = con.execute(
        "SELECT point_index, knob, ber, p01, p10, sa0, sa1, energy FROM points "
        "WHERE campaign_id=? ORDER BY point_index",
        (cid,),
    ).fetchall()
    cols = list(zip(*rows)) if rows else [()] * 8
    arr = [np.array([_nan(v) for v in c], dtype=np.float64) for c in cols[1:]]
    return PointGrid(np.array(cols[0], dtype=np.int64), *arr)


def _read_samples(
    con: sqlite3.Connection, cid: str, points: PointGrid
) -> tuple[np.ndarray, dict[str, ModelSamples], tuple[str, ...]]:
    rows = con.execute(
        "SELECT model_hash, point_index, chip_index, chip_seed, n_images, accuracy, mean_margin, "
        "n_faults, mcelsim_version, n_correct FROM samples WHERE campaign_id=? "
        "ORDER BY rowid",
        (cid,),
    ).fetchall()
    chips = np.array(sorted({int(r[2]) for r in rows}), dtype=np.int64)
    col = {int(c): j for j, c in enumerate(chips)}
    row_of = {int(p): i for i, p in enumerate(points.point_index)}
    shape = (len(points), chips.size)
    out: dict[str, ModelSamples] = {}
    versions: list[str] = []
    for h, p, c, seed, n_img, acc, margin, faults, ver, n_correct in rows:
        if int(p) not in row_of:
            continue  # a sample whose point row is not written yet
        if h not in out:
            out[h] = ModelSamples(h, *(np.full(shape, np.nan) for _ in range(5)))
        s, i, j = out[h], row_of[int(p)], col[int(c)]
        if acc is None and n_correct is not None and n_img:
            acc = n_correct / n_img
        s.accuracy[i, j] = _nan(acc)
        s.mean_margin[i, j] = _nan(margin)
        s.n_faults[i, j] = _nan(faults)
        s.chip_seed[i, j] = _nan(seed)
        s.n_images[i, j] = _nan(n_img)
        if ver and ver not in versions:
            versions.append(str(ver))
    return chips, out, tuple(versions)


def _read_margins(con: sqlite3.Connection, cid: str) -> dict[tuple[str, int, int], np.ndarray]:
    out = {}
    for h, p, c, blob in con.execute(
        "SELECT model_hash, point_index, chip_index, margins FROM margins WHERE campaign_id=? "
        "ORDER BY point_index, chip_index",
        (cid,),
    ):
        if blob is None:
            continue
        out[(h, int(p), int(c))] = np.frombuffer(bytes(blob), dtype="<f4").astype(np.float32)
    return out


def _bit_order(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def _read_sensitivity(con: sqlite3.Connection, cid: str) -> dict[str, dict[str, SensitivityRows]]:
    rows = con.execute(
        "SELECT model_hash, target, name, ber, chip_index, accuracy, n_images FROM sensitivity "
        "WHERE campaign_id=? ORDER BY rowid",
        (cid,),
    ).fetchall()
    grouped: dict[tuple[str, str], list] = {}
    for r in rows:
        grouped.setdefault((r[0], str(r[1])), []).append(r)
    out: dict[str, dict[str, SensitivityRows]] = {}
    for (h, target), rs in grouped.items():
        names: list[str] = []
        for r in rs:  # layers keep the writer's (network) order; bits sort numerically
            if str(r[2]) not in names:
                names.append(str(r[2]))
        if target == "bit":
            names.sort(key=_bit_order)
        chips = np.array(sorted({int(r[4]) for r in rs}), dtype=np.int64)
        col = {int(c): j for j, c in enumerate(chips)}
        idx = {n: i for i, n in enumerate(names)}
        acc = np.full((len(names), chips.size), np.nan)
        ber = np.full(len(names), np.nan)
        for _, _, name, b, c, a, _n in rs:
            acc[idx[str(name)], col[int(c)]] = _nan(a)
            ber[idx[str(name)]] = _nan(b)
        out.setdefault(h, {})[target] = SensitivityRows(target, tuple(names), ber, acc, chips)
    return out


def _read_cells(con: sqlite3.Connection, cid: str) -> dict[str, tuple[int, int]]:
    """model_hash -> (data cells, check cells); {} for stores without the table."""
    if not con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='cells'"
                       ).fetchone():
        return {}
    rows = con.execute("SELECT model_hash, data_cells, check_cells FROM cells "
                       "WHERE campaign_id=?", (cid,))
    return {h: (int(d or 0), int(c or 0)) for h, d, c in rows}


def load_results(path: str | PathLike[str], campaign: str | None = None) -> Results:
    """Read a results store, or one campaign of it.

    Raises UserInputError for a missing file, a file that is not a results store of the
    supported schema, an unknown campaign id, or a store without any results yet.
    """
    p = Path(path)
    con = connect(p)
    try:
        meta = {str(k): str(v) for k, v in con.execute("SELECT key, value FROM meta")}
        models = _read_models(con)
        ids = [
            r[0] for r in con.execute("SELECT campaign_id FROM campaigns ORDER BY created, rowid")
        ]
        if not ids:
            raise UserInputError(
                p, None, "the results store holds no campaigns yet",
                f"run {PRODUCER} first (or wait for it to write results)",
            )
        if campaign is not None and campaign not in ids:
            prefixed = [i for i in ids if i.startswith(campaign)] if campaign else []
            if len(prefixed) == 1:  # a unique prefix of a (hash) campaign id is enough
                campaign = prefixed[0]
            else:
                kinds = dict(con.execute("SELECT campaign_id, kind FROM campaigns").fetchall())
                shown = ", ".join(f"{i} ({kinds.get(i) or '?'})" for i in ids[:8])
                shown += " ..." if len(ids) > 8 else ""
                problem = (f"campaign id prefix {campaign!r} is ambiguous" if prefixed
                           else f"unknown campaign id {campaign!r}")
                raise UserInputError(p, "--campaign", problem, f"use one of: {shown}")
        campaigns = []
        for cid in [campaign] if campaign is not None else ids:
            row = con.execute(
                "SELECT kind, profile_hash, encoding, layout, protect, include_biases, seed, "
                "dataset, n_images, config_json, created FROM campaigns WHERE campaign_id=?",
                (cid,),
            ).fetchone()
            points = _read_points(con, cid)
            chips, samples, versions = _read_samples(con, cid, points)
            camp = Campaign(
                campaign_id=cid,
                kind=str(row[0] or ""),
                profile=_read_profile(con, row[1]),
                encoding=row[2] or "",
                layout=row[3] or "",
                protect=row[4] or "",
                include_biases=bool(row[5]),
                seed=None if row[6] is None else int(row[6]),
                dataset=row[7] or "",
                n_images=None if row[8] is None else int(row[8]),
                config=_json(row[9]),
                created=row[10] or "",
                points=points,
                chip_index=chips,
                samples=samples,
                margins=_read_margins(con, cid),
                sensitivity=_read_sensitivity(con, cid),
                versions=versions,
                cells=_read_cells(con, cid),
            )
            campaigns.append(camp)
    except sqlite3.DatabaseError as err:
        raise UserInputError(p, None, f"cannot be read ({err})", _fix()) from None
    except (TypeError, ValueError) as err:  # a value the schema does not allow
        raise UserInputError(p, None, f"holds a damaged row ({err})", _fix()) from None
    finally:
        con.close()
    if not any(c.samples or c.sensitivity for c in campaigns):
        what = f"campaign {campaign!r}" if campaign is not None else "the results store"
        raise UserInputError(
            p, None, f"{what} holds no samples yet",
            f"run {PRODUCER} first (or wait for it to write results)",
        )
    return Results(
        path=p,
        schema_version=meta.get("schema_version", ""),
        mcelsim_version=meta.get("mcelsim_version", ""),
        meta=meta,
        models=models,
        campaigns=campaigns,
    )
