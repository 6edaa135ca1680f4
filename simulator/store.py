"""Campaign results in SQLite: one row per Monte-Carlo sample, resumable, append-only.

The schema below is a contract with `analysis/` (which reads it with plain sqlite3): columns
and tables may be added, never renamed. WAL mode; every batch of samples is committed as soon
as it is computed, so a run killed at any moment (even SIGKILL) loses at most the samples in
flight. Rows are inserted with `INSERT OR IGNORE` on their primary key and every sample is a
pure function of its key, so rerunning a campaign fills in what is missing and never
duplicates a row.

Tables (see `SCHEMA`): meta, campaigns, models, profiles, points, samples, margins,
sensitivity, plus `clean_margins` (per-image clean margins of each model on a test set)
and `cells` (memory cells of each model's deployment in a campaign: data and check cells
of a protection code).
`margins` and `clean_margins` hold float32 little-endian arrays (one value per test image:
true-class logit minus best other logit, in float logit units).

Export (`ResultStore.export(path)`): `.csv` writes one row per sample joined with its point,
campaign and model label (sensitivity rows, if any, go to `<stem>.sensitivity.csv` beside
it); `.json` writes every table except the margin blobs as lists of row objects.
"""

from __future__ import annotations

import csv
import functools
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path

import numpy as np

from memory_models.usererror import UserInputError

__all__ = ["SCHEMA", "SCHEMA_VERSION", "ResultStore", "check_export_path", "check_store_path",
           "mcelsim_version", "now_iso"]

SCHEMA_VERSION = "1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS campaigns(
    campaign_id TEXT PRIMARY KEY, kind TEXT,
    profile_hash TEXT, encoding TEXT, layout TEXT, protect TEXT, include_biases INT,
    seed INT, dataset TEXT, n_images INT, config_json TEXT, created TEXT);
CREATE TABLE IF NOT EXISTS models(
    model_hash TEXT PRIMARY KEY, label TEXT, path TEXT, meta_json TEXT,
    clean_accuracy REAL, clean_mean_margin REAL, n_images INT);
CREATE TABLE IF NOT EXISTS profiles(
    profile_hash TEXT PRIMARY KEY, name TEXT, technology TEXT, knob_name TEXT, knob_unit TEXT,
    knob_nominal REAL, knob_min REAL, knob_max REAL, knob_harsher TEXT, illustrative INT,
    profile_json TEXT);
CREATE TABLE IF NOT EXISTS points(
    campaign_id TEXT, point_index INT, knob REAL, ber REAL, p01 REAL, p10 REAL,
    sa0 REAL, sa1 REAL, energy REAL,
    PRIMARY KEY (campaign_id, point_index));
CREATE TABLE IF NOT EXISTS samples(
    campaign_id TEXT, model_hash TEXT, point_index INT, chip_index INT, chip_seed INT,
    n_images INT, n_correct INT, accuracy REAL, mean_margin REAL,
    n_faults INT, n_changed_weights INT, elapsed_s REAL, mcelsim_version TEXT, created TEXT,
    PRIMARY KEY (campaign_id, model_hash, point_index, chip_index));
CREATE TABLE IF NOT EXISTS margins(
    campaign_id TEXT, model_hash TEXT, point_index INT, chip_index INT, margins BLOB,
    PRIMARY KEY (campaign_id, model_hash, point_index, chip_index));
CREATE TABLE IF NOT EXISTS sensitivity(
    campaign_id TEXT, model_hash TEXT, target TEXT, name TEXT, ber REAL, chip_index INT,
    accuracy REAL, n_images INT,
    PRIMARY KEY (campaign_id, model_hash, target, name, chip_index));
CREATE TABLE IF NOT EXISTS cells(
    campaign_id TEXT, model_hash TEXT, data_cells INT, check_cells INT,
    PRIMARY KEY (campaign_id, model_hash));
CREATE TABLE IF NOT EXISTS clean_margins(
    model_hash TEXT, data_hash TEXT, dataset TEXT, n_images INT, accuracy REAL,
    margins BLOB, PRIMARY KEY (model_hash, data_hash));
"""

SAMPLE_COLUMNS = (
    "campaign_id",
    "model_hash",
    "point_index",
    "chip_index",
    "chip_seed",
    "n_images",
    "n_correct",
    "accuracy",
    "mean_margin",
    "n_faults",
    "n_changed_weights",
    "elapsed_s",
    "mcelsim_version",
    "created",
)
POINT_COLUMNS = ("point_index", "knob", "ber", "p01", "p10", "sa0", "sa1", "energy")
SENSITIVITY_COLUMNS = (
    "campaign_id",
    "model_hash",
    "target",
    "name",
    "ber",
    "chip_index",
    "accuracy",
    "n_images",
)


@functools.cache
def mcelsim_version() -> str:
    """Installed mcelsim version ('unknown' when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("mcelsim")
    except metadata.PackageNotFoundError:
        return "unknown"


def now_iso() -> str:
    """UTC time stamp, ISO 8601, seconds."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


# Tables every store of schema version 1 has had from the start (later ones are added).
CORE_TABLES = ("meta", "campaigns", "models", "profiles", "points", "samples", "margins",
               "sensitivity")


def check_store_path(
    path: str | PathLike[str], option: str = "--out", *, writable: bool = True
) -> bool:
    """Check, without writing a byte, that `path` can hold a results store: a new (or empty)
    file in a writable folder, or an mcelsim store of this schema version. Returns whether
    a store is already there. A file of another program, SQLite or not, is refused: its
    tables are never touched."""
    from memory_models.usererror import check_output_file

    p = Path(path)
    if writable or p.is_dir():
        check_output_file(p, option)
    if not p.exists() or p.stat().st_size == 0:
        return False
    fix = f"pass a new file name to {option}"
    with p.open("rb") as fh:
        if fh.read(16) != b"SQLite format 3\x00":
            raise UserInputError(p, None, "is not an mcelsim results database (not SQLite)", fix)
    try:
        con = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master "
                                                "WHERE type='table'")}  # fmt: skip
            version = None
            if "meta" in tables:
                row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                version = None if row is None else row[0]
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        raise UserInputError(p, None, f"cannot be read as SQLite ({err})", fix) from None
    if version is None:
        what = f"tables {', '.join(sorted(tables)[:4])}" if tables else "no mcelsim tables"
        raise UserInputError(p, None, f"is not an mcelsim results database but an SQLite file "
                             f"of another program ({what}); "
                             "mcelsim never adds tables to it", fix)  # fmt: skip
    if version != SCHEMA_VERSION:
        raise UserInputError(p, "schema_version", f"is {version!r}, this mcelsim writes "
                             f"{SCHEMA_VERSION!r}", "write to a new file")  # fmt: skip
    missing = [t for t in CORE_TABLES if t not in tables]
    if missing:
        raise UserInputError(p, None, f"results store lacks table {missing[0]} (damaged)",
                             fix)  # fmt: skip
    return True


def check_export_path(path: str | PathLike[str], option: str = "--export") -> Path:
    """Check an export file name (.csv or .json, writable) before any work."""
    from memory_models.usererror import check_output_file

    p = Path(path)
    if p.suffix.lower() not in (".csv", ".json"):
        raise UserInputError(option, None, f"unknown export format {p.suffix or '(none)'!r} "
                             f"of {str(p)!r}", "use a .csv or .json file name")  # fmt: skip
    check_output_file(p, option)
    if p.suffix.lower() == ".csv":
        check_output_file(p.with_name(p.stem + ".sensitivity.csv"), option)
    return p


def margins_blob(margins: np.ndarray) -> bytes:
    """float32 little-endian bytes of a margin vector."""
    return np.ascontiguousarray(margins, dtype="<f4").tobytes()


def blob_margins(blob: bytes) -> np.ndarray:
    """Inverse of `margins_blob`."""
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


class ResultStore:
    """A campaign results database (SQLite, WAL). Only one process should write to it.

    Opening a file that is not an mcelsim store (or has another schema version) raises
    `UserInputError` before a byte of it is written (`check_store_path`).
    """

    def __init__(self, path: str | PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        existing = check_store_path(self.path, writable=not readonly)
        if readonly:
            if not existing:
                raise UserInputError(self.path, None, "results store not found or empty",
                                     "check --out")  # fmt: skip
            self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                        timeout=30.0)  # fmt: skip
            return
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=30.0)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)  # new tables of this schema version, if any
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if existing:
                self._check_rows()
        except sqlite3.DatabaseError as err:
            raise UserInputError(
                str(self.path), None, f"not an mcelsim results database ({err})",
                "pass a new file name to --out",
            ) from None
        if row is None:
            with self.conn:
                self.conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
                )
                self.conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('mcelsim_version', ?)",
                    (mcelsim_version(),),
                )
        elif row[0] != SCHEMA_VERSION:
            raise UserInputError(
                str(self.path), "schema_version", f"is {row[0]!r}, this mcelsim writes "
                f"{SCHEMA_VERSION!r}", "write to a new file",
            )

    # Columns a campaign reads back when it resumes: (table, column, allowed SQLite types).
    _TYPED = (("samples", "accuracy", "'real', 'integer'"),
              ("samples", "point_index", "'integer'"), ("samples", "chip_index", "'integer'"),
              ("sensitivity", "accuracy", "'real', 'integer'"),
              ("sensitivity", "chip_index", "'integer'"),
              ("margins", "point_index", "'integer'"), ("margins", "chip_index", "'integer'"),
              ("clean_margins", "accuracy", "'real', 'integer'"))  # fmt: skip

    def _check_rows(self) -> None:
        """Refuse an existing store with damaged pages or rows before anything is written
        to it (a resumed campaign would otherwise fail halfway, its first rows written)."""
        bad = self.conn.execute("PRAGMA quick_check").fetchone()[0]
        if bad != "ok":
            raise self._damaged("pages", ValueError(bad))
        for table, col, types in self._TYPED:
            row = self.conn.execute(f"SELECT {col} FROM {table} WHERE typeof({col}) NOT IN "
                                    f"({types}) LIMIT 1").fetchone()  # fmt: skip
            if row is not None:
                raise self._damaged(table, ValueError(f"{col} {row[0]!r} is not a number"))
        for table in ("margins", "clean_margins"):
            row = self.conn.execute(f"SELECT typeof(margins), length(margins) FROM {table} "
                                    "WHERE typeof(margins) != 'blob' OR length(margins) % 4 "
                                    "LIMIT 1").fetchone()  # fmt: skip
            if row is not None:
                raise self._damaged(table, ValueError(f"margins {row[0]} of {row[1]} bytes"))

    # ---- life cycle -------------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- writing ----------------------------------------------------------------------
    def add_campaign(self, row: Mapping) -> None:
        """Insert a campaign row (ignored if the id exists: same id = same settings)."""
        cols = (
            "campaign_id", "kind", "profile_hash", "encoding", "layout", "protect",
            "include_biases", "seed", "dataset", "n_images", "config_json", "created",
        )
        self._insert("campaigns", cols, [row], replace=False)

    def add_profile(self, row: Mapping) -> None:
        cols = (
            "profile_hash", "name", "technology", "knob_name", "knob_unit", "knob_nominal",
            "knob_min", "knob_max", "knob_harsher", "illustrative", "profile_json",
        )
        self._insert("profiles", cols, [row], replace=False)

    def add_model(self, row: Mapping) -> None:
        """Insert or update a model row (clean accuracy is that of the latest test set)."""
        cols = (
            "model_hash", "label", "path", "meta_json", "clean_accuracy", "clean_mean_margin",
            "n_images",
        )
        self._insert("models", cols, [row], replace=True)

    def add_points(self, campaign_id: str, points: Sequence[Mapping]) -> None:
        rows = [{"campaign_id": campaign_id, **p} for p in points]
        self._insert("points", ("campaign_id", *POINT_COLUMNS), rows, replace=False)

    def add_samples(self, rows: Sequence[Mapping]) -> None:
        """Insert sample rows and commit (existing keys are left untouched)."""
        self._insert("samples", SAMPLE_COLUMNS, rows, replace=False)

    def add_margins(self, rows: Sequence[Mapping]) -> None:
        cols = ("campaign_id", "model_hash", "point_index", "chip_index", "margins")
        self._insert("margins", cols, rows, replace=False)

    def add_sensitivity(self, rows: Sequence[Mapping]) -> None:
        self._insert("sensitivity", SENSITIVITY_COLUMNS, rows, replace=False)

    def add_cells(self, rows: Sequence[Mapping]) -> None:
        """Data and check cells of each model's deployment in a campaign."""
        cols = ("campaign_id", "model_hash", "data_cells", "check_cells")
        self._insert("cells", cols, rows, replace=True)

    def add_clean_margins(self, row: Mapping) -> None:
        cols = ("model_hash", "data_hash", "dataset", "n_images", "accuracy", "margins")
        self._insert("clean_margins", cols, [row], replace=True)

    def write_batch(
        self,
        samples: Sequence[Mapping] = (),
        margins: Sequence[Mapping] = (),
        sensitivity: Sequence[Mapping] = (),
    ) -> None:
        """Insert samples, margins and sensitivity rows in one transaction."""
        with self.conn:
            self._insert("samples", SAMPLE_COLUMNS, samples, replace=False, commit=False)
            cols = ("campaign_id", "model_hash", "point_index", "chip_index", "margins")
            self._insert("margins", cols, margins, replace=False, commit=False)
            self._insert(
                "sensitivity", SENSITIVITY_COLUMNS, sensitivity, replace=False, commit=False
            )

    def _insert(
        self,
        table: str,
        cols: Sequence[str],
        rows: Iterable[Mapping],
        *,
        replace: bool,
        commit: bool = True,
    ) -> None:
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        sql = f"{verb} INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        data = [tuple(_sql_value(r.get(c)) for c in cols) for r in rows]
        if not data:
            return
        if commit:
            with self.conn:
                self.conn.executemany(sql, data)
        else:
            self.conn.executemany(sql, data)

    # ---- reading ----------------------------------------------------------------------
    def done_samples(self, campaign_id: str) -> dict[tuple[str, int, int], float]:
        """{(model_hash, point_index, chip_index): accuracy} already stored for a campaign."""
        cur = self.conn.execute(
            "SELECT model_hash, point_index, chip_index, accuracy FROM samples "
            "WHERE campaign_id=?",
            (campaign_id,),
        )
        try:
            return {(m, int(p), int(c)): _real(a) for m, p, c, a in cur}
        except (TypeError, ValueError) as err:
            raise self._damaged("samples", err) from None

    def done_sensitivity(self, campaign_id: str) -> dict[tuple[str, str, str, int], float]:
        """{(model_hash, target, name, chip_index): accuracy} already stored."""
        cur = self.conn.execute(
            "SELECT model_hash, target, name, chip_index, accuracy FROM sensitivity "
            "WHERE campaign_id=?",
            (campaign_id,),
        )
        try:
            return {(m, t, n, int(c)): _real(a) for m, t, n, c, a in cur}
        except (TypeError, ValueError) as err:
            raise self._damaged("sensitivity", err) from None

    def done_margins(self, campaign_id: str) -> set[tuple[str, int, int]]:
        cur = self.conn.execute(
            "SELECT model_hash, point_index, chip_index FROM margins WHERE campaign_id=?",
            (campaign_id,),
        )
        try:
            return {(m, int(p), int(c)) for m, p, c in cur}
        except (TypeError, ValueError) as err:
            raise self._damaged("margins", err) from None

    def clean_margins(self, model_hash: str, data_hash: str) -> tuple[float, np.ndarray] | None:
        row = self.conn.execute(
            "SELECT accuracy, margins FROM clean_margins WHERE model_hash=? AND data_hash=?",
            (model_hash, data_hash),
        ).fetchone()
        if row is None:
            return None
        try:
            return _real(row[0]), blob_margins(row[1])
        except (TypeError, ValueError) as err:
            raise self._damaged("clean_margins", err) from None

    def _damaged(self, table: str, err: Exception) -> UserInputError:
        return UserInputError(self.path, table, f"holds a damaged row ({err})",
                              "pass a new file name to --out (or restore the store)")

    def table(self, name: str, where: str = "", params: Sequence = ()) -> list[dict]:
        """All rows of a table as dicts (blobs included), ordered by the primary key."""
        order = {
            "samples": "campaign_id, model_hash, point_index, chip_index",
            "margins": "campaign_id, model_hash, point_index, chip_index",
            "points": "campaign_id, point_index",
            "sensitivity": "campaign_id, model_hash, target, name, chip_index",
            "clean_margins": "model_hash, data_hash",
        }.get(name, "1")
        cur = self.conn.execute(f"SELECT * FROM {name} {where} ORDER BY {order}", tuple(params))
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur]

    # ---- export -----------------------------------------------------------------------
    def export(self, path: str | PathLike[str]) -> list[Path]:
        """Write the results to `path` (.csv or .json, see the module docstring).

        Returns the files written.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        check_export_path(path)
        if suffix == ".json":
            doc = {"meta": {r["key"]: r["value"] for r in self.table("meta")}}
            for name in ("campaigns", "profiles", "models", "points", "samples", "sensitivity",
                         "cells"):
                doc[name] = self.table(name)
            path.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
            return [path]
        cur = self.conn.execute(
            "SELECT s.campaign_id, c.kind, m.label AS model_label, s.model_hash, "
            "s.point_index, p.knob, p.ber, p.p01, p.p10, p.sa0, p.sa1, p.energy, "
            "s.chip_index, s.chip_seed, s.n_images, s.n_correct, s.accuracy, s.mean_margin, "
            "s.n_faults, s.n_changed_weights, s.elapsed_s, s.mcelsim_version, s.created "
            "FROM samples s LEFT JOIN points p ON p.campaign_id = s.campaign_id "
            "AND p.point_index = s.point_index "
            "LEFT JOIN campaigns c ON c.campaign_id = s.campaign_id "
            "LEFT JOIN models m ON m.model_hash = s.model_hash "
            "ORDER BY s.campaign_id, s.model_hash, s.point_index, s.chip_index"
        )
        written = [path]
        _write_csv(path, cur)
        if self.conn.execute("SELECT COUNT(*) FROM sensitivity").fetchone()[0]:
            side = path.with_name(path.stem + ".sensitivity.csv")
            cur = self.conn.execute(
                "SELECT s.*, m.label AS model_label FROM sensitivity s "
                "LEFT JOIN models m ON m.model_hash = s.model_hash "
                "ORDER BY s.campaign_id, s.model_hash, s.target, s.name, s.chip_index"
            )
            _write_csv(side, cur)
            written.append(side)
        return written


def _real(value) -> float:
    """A stored number (REAL or INTEGER column); anything else is a damaged row."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _write_csv(path: Path, cur: sqlite3.Cursor) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([d[0] for d in cur.description])
        w.writerows(cur)


def _sql_value(v):
    """numpy scalars -> Python scalars for sqlite3."""
    if isinstance(v, np.generic):
        return v.item()
    return v


def _json_default(v):
    if isinstance(v, bytes):
        return None
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(type(v))
