"""Deployment campaigns: many chips x operating points x models, stored sample by sample.

One Monte-Carlo sample = (model, operating point, chip). Its result is a pure function of
its key and the campaign settings:
  chip seed       = `chip_seed(seed, chip_index)` (campaign seed and chip index only, so the
                    same chips serve every model and every operating point: common random
                    numbers, and paired model comparisons);
  transient rng   = `np.random.default_rng([seed, chip_index, point_index])`.
For a knob sweep each task builds `Chip(profile, dep.n_bits, seed=chip_seed)` once and reads
it at every point of the sweep; for an i.i.d. sweep the source at each point is
`BitErrorModel(p01, p10)` with p01 = R * p10 and (p01 + p10) / 2 = BER (R = `p01_ratio`).
A sensitivity campaign reads the image once per chip at `points[0]` (a BER) and keeps, in
turn, only the errors of one layer's cells / one bit position's cells.

Samples are computed serially in-process (`workers=1`), on local processes (spawn; the
networks, deployed images and test set are sent to each worker once), or on a Dask cluster
(`scheduler="tcp://host:port"`; the same data is scattered once). Only this (parent)
process writes to the `ResultStore`, one transaction per task as it finishes; rerunning a
campaign skips every sample already stored. Results do not depend on the executor, the
number of workers or resume points.

`campaign_id` = hash of every setting that changes results (kind, profile digest or i.i.d.
ratio, points, encoding, layout, protection, biases, seed, dataset + test-set digest, number
of images, mcelsim version); the number of chips and the interval target are not part of it,
so adding chips extends a campaign.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memory_models.stats import needs_more_chips, paired_difference, t_interval
from memory_models.usererror import UserInputError
from simulator.deployment import DeployedNetwork, ReadResult, deploy
from simulator.store import ResultStore, margins_blob, mcelsim_version, now_iso

__all__ = [
    "CampaignSpec",
    "CampaignResult",
    "ModelEntry",
    "TestSet",
    "ber_rates",
    "chip_seed",
    "model_entry",
    "parse_sweep",
    "run_campaign",
]

log = logging.getLogger(__name__)

KINDS = ("knob", "ber", "sensitivity")
ENGINES = ("auto", "session", "forward")
# engine="auto": a sample whose read changes at most this fraction of the stored weights is
# evaluated incrementally (session), others with a full forward. In VGG3 a few changed
# conv weights already dirty every image, so beyond ~1e-4 the session's bookkeeping costs
# more than it saves (benchmarks/results_campaign.md). Results are identical either way.
AUTO_SESSION_FRACTION = 1e-4


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------
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
      weights, else forward; see AUTO_SESSION_FRACTION). Same results, only speed differs.
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


@dataclass
class CampaignResult:
    """What `run_campaign` computed (everything is also in the store)."""

    campaign_id: str
    kind: str
    points: list[dict]
    models: list[dict]
    summary: list[dict]
    paired: list[dict]
    sensitivity: list[dict]
    chips_per_point: list[int]
    n_computed: int
    n_reused: int

    def to_dict(self) -> dict:
        return asdict(self)


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
                raise UserInputError(option, None, f"stop below start in {text!r}", fix)
            n = int(math.floor((stop - start) / step + 1e-9)) + 1
            if n > 100_000:
                raise UserInputError(option, None, f"{n} points is too many", "use a larger step")
            values = [round(start + i * step, 12) for i in range(n)]
        else:
            values = [float(p) for p in text.split(",") if p.strip()]
            if not values or not all(math.isfinite(v) for v in values):
                raise ValueError
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
def _iid_profile_row(ratio: float) -> dict:
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


def _load_profile(name: str) -> Any:
    import memory_models as mm

    return mm.load_profile(name)


def _profile_row(prof: Any) -> dict:
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


def _point_rows(spec: CampaignSpec, prof: Any) -> list[dict]:
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
    if spec.kind not in KINDS:
        raise UserInputError("campaign", "kind", f"unknown kind {spec.kind!r}",
                             f"use one of {', '.join(KINDS)}")  # fmt: skip
    if not spec.points:
        raise UserInputError("--sweep", None, "no operating points", "give at least one")
    if spec.chips < 1:
        raise UserInputError("--chips", None, f"must be at least 1, got {spec.chips}")
    if spec.seed < 0:
        raise UserInputError("--seed", None, f"must be non-negative, got {spec.seed}")
    if spec.ci is not None and not spec.ci > 0:
        raise UserInputError("--ci", None, f"must be positive, got {spec.ci}")
    if spec.max_chips is not None and spec.max_chips < spec.chips:
        raise UserInputError("--max-chips", None, f"{spec.max_chips} is below --chips "
                             f"{spec.chips}", "raise --max-chips")  # fmt: skip
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
            raise UserInputError("--p01-ratio", None, f"must be >= 0, got {spec.p01_ratio}")
        for b in spec.points:
            p01, p10 = ber_rates(b, spec.p01_ratio)
            if b < 0 or p01 > 1 or p10 > 1:
                raise UserInputError(opt, None, f"BER {b:g} gives p01={p01:g}, p10={p10:g}",
                                     "keep the BER and p01/p10 within [0, 1]")  # fmt: skip


def campaign_config(spec: CampaignSpec, profile_hash: str, test: TestSet) -> dict:
    """Every setting that changes a sample's result (hashed into the campaign id)."""
    return {
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
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------
class _Payload:
    """Everything a worker needs, sent once: settings, deployed networks, test set."""

    def __init__(self, token: str, spec: CampaignSpec, profile: Any, point_rows: list[dict],
                 deployed: dict[str, DeployedNetwork], images: np.ndarray,
                 labels: np.ndarray, threads: int | None = None) -> None:  # fmt: skip
        self.token = token
        self.spec = spec
        self.profile = profile
        self.point_rows = point_rows
        self.deployed = deployed
        self.images = images
        self.labels = labels
        self.threads = threads


class _ModelState:
    def __init__(self, dep: DeployedNetwork, images: np.ndarray, labels: np.ndarray) -> None:
        self.dep = dep
        self.net = dep.net
        self.labels = labels
        self.x = self.net.quantize_input(images)
        self._session = None
        self._clean = None
        self.n_weights = sum(int(np.asarray(w).size) for w in self.net.weights().values())

    @property
    def session(self):
        if self._session is None:
            self._session = self.net.session(self.x)
        return self._session

    def clean_logits(self, engine: str) -> np.ndarray:
        if self._clean is None:
            if engine == "session":
                self._clean = np.asarray(self.session.clean_logits)
            else:
                self._clean = np.asarray(self.net.forward(self.x))
        return self._clean

    def logits(self, r: ReadResult, engine: str) -> np.ndarray:
        if not r.deltas and not r.bias_deltas:
            return self.clean_logits(engine)
        if engine == "auto":
            changed = r.counts.get("changed_weights", 0) + r.counts.get("changed_biases", 0)
            engine = "session" if changed <= AUTO_SESSION_FRACTION * self.n_weights else "forward"
        if engine == "session":
            if not r.bias_deltas:
                return np.asarray(self.session.logits(r.deltas))
            if _session_takes_biases(self.net):
                return np.asarray(self.session.logits({**r.deltas, **r.bias_deltas}))
        return np.asarray(self.dep.corrupted_network(r).forward(self.x))


def _session_takes_biases(net: Any) -> bool:
    """Whether `session.logits` accepts bias names as delta keys (IntegerNetwork does)."""
    return hasattr(net, "ops") and hasattr(net, "_biases")


class _WorkerState:
    def __init__(self, payload: _Payload) -> None:
        self.payload = payload
        self.models: dict[str, _ModelState] = {}
        if payload.threads is not None:
            try:
                import numba

                numba.set_num_threads(max(1, min(payload.threads, numba.config.NUMBA_NUM_THREADS)))
            except Exception:  # noqa: BLE001 - thread count never changes results
                log.debug("could not set numba threads", exc_info=True)

    def model(self, h: str) -> _ModelState:
        if h not in self.models:
            p = self.payload
            self.models[h] = _ModelState(p.deployed[h], p.images, p.labels)
        return self.models[h]


_STATES: dict[str, _WorkerState] = {}
_STATES_LOCK = threading.Lock()
_POOL_PAYLOAD: _Payload | None = None


def _state_for(payload: _Payload) -> _WorkerState:
    with _STATES_LOCK:
        st = _STATES.get(payload.token)
        if st is None:
            _STATES.clear()  # one campaign at a time per worker process
            st = _STATES[payload.token] = _WorkerState(payload)
        return st


def score(logits: np.ndarray, labels: np.ndarray, logit_scale: float) -> tuple[int, np.ndarray]:
    """(number correct by argmax, per-image margin true minus best other, float32 units)."""
    z = np.asarray(logits).astype(np.int64)
    n = z.shape[0]
    rows = np.arange(n)
    true = z[rows, labels]
    other = z.copy()
    other[rows, labels] = np.iinfo(np.int64).min
    margins = ((true - other.max(axis=1)).astype(np.float64) * float(logit_scale))
    correct = int(np.count_nonzero(np.argmax(z, axis=1) == labels))
    return correct, margins.astype(np.float32)


def _sample_row(cid: str, h: str, p: int, c: int, seed: int, n: int, correct: int,
                margins: np.ndarray, counts: dict, elapsed: float) -> dict:  # fmt: skip
    return {
        "campaign_id": cid, "model_hash": h, "point_index": p, "chip_index": c,
        "chip_seed": seed, "n_images": n, "n_correct": correct,
        "accuracy": correct / n if n else math.nan,
        "mean_margin": float(np.mean(margins.astype(np.float64))) if n else math.nan,
        "n_faults": int(counts.get("faults", 0)),
        "n_changed_weights": int(counts.get("changed_weights", 0)),
        "elapsed_s": elapsed, "mcelsim_version": mcelsim_version(), "created": now_iso(),
    }  # fmt: skip


def _execute(state: _WorkerState, task: dict) -> dict:
    """Run one task: ('clean', model) or (model, chip, points). Returns rows to store."""
    p = state.payload
    spec = p.spec
    ms = state.model(task["model"])
    cid = task["campaign_id"]
    n = int(ms.labels.shape[0])
    scale = float(ms.net.logit_scale)
    if task["type"] == "clean":
        correct, margins = score(ms.clean_logits(spec.engine), ms.labels, scale)
        return {"task": task, "clean": (correct, margins_blob(margins), n)}
    c = int(task["chip"])
    cseed = chip_seed(spec.seed, c)
    out: dict[str, Any] = {"task": task, "samples": [], "margins": [], "sensitivity": []}
    import memory_models as mm

    chip = None
    if spec.kind == "knob":
        chip = mm.Chip(p.profile, ms.dep.n_bits, seed=cseed)
    for pi in task["points"]:
        t0 = time.perf_counter()
        row = p.point_rows[pi]
        rng = point_rng(spec.seed, c, pi)
        if spec.kind == "knob":
            image_res = ms.dep.image.read(chip, rng, knob=row["knob"])
        else:
            image_res = ms.dep.image.read(mm.BitErrorModel(p01=row["p01"], p10=row["p10"]), rng)
        r = ms.dep.filter(image_res.changes, faults=image_res.counts.get("faults"))
        correct, margins = score(ms.logits(r, spec.engine), ms.labels, scale)
        out["samples"].append(_sample_row(cid, task["model"], pi, c, cseed, n, correct,
                                          margins, r.counts, time.perf_counter() - t0))
        if c < spec.margins_chips:
            out["margins"].append({"campaign_id": cid, "model_hash": task["model"],
                                   "point_index": pi, "chip_index": c,
                                   "margins": margins_blob(margins)})  # fmt: skip
        if spec.kind == "sensitivity":
            # Restrict the same read to one layer's / one bit position's cells in turn.
            for target, name in ms.dep.sensitivity_targets():
                if target == "layer":
                    rr = ms.dep.filter(image_res.changes, only_layer=name)
                else:
                    rr = ms.dep.filter(image_res.changes, only_bit=int(name))
                k, _ = score(ms.logits(rr, spec.engine), ms.labels, scale)
                out["sensitivity"].append({
                    "campaign_id": cid, "model_hash": task["model"], "target": target,
                    "name": name, "ber": row["ber"], "chip_index": c,
                    "accuracy": k / n if n else math.nan, "n_images": n,
                })  # fmt: skip
    return out


def _pool_init(payload: _Payload) -> None:
    global _POOL_PAYLOAD
    _POOL_PAYLOAD = payload
    _state_for(payload)


def _pool_task(task: dict) -> dict:
    assert _POOL_PAYLOAD is not None, "worker not initialized"
    return _execute(_state_for(_POOL_PAYLOAD), task)


def _dask_task(payload: _Payload, task: dict) -> dict:
    return _execute(_state_for(payload), task)


# ---------------------------------------------------------------------------------------
# Executors: serial, local processes, Dask
# ---------------------------------------------------------------------------------------
class _Serial:
    def __init__(self, payload: _Payload) -> None:
        self.state = _WorkerState(payload)

    def run(self, tasks: Sequence[dict]) -> Iterator[dict]:
        for t in tasks:
            yield _execute(self.state, t)

    def close(self) -> None:
        pass


class _Processes:
    def __init__(self, payload: _Payload, workers: int) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=mp.get_context("spawn"),
            initializer=_pool_init, initargs=(payload,),
        )  # fmt: skip

    def run(self, tasks: Sequence[dict]) -> Iterator[dict]:
        from concurrent.futures import as_completed

        futures = [self.pool.submit(_pool_task, t) for t in tasks]
        try:
            for f in as_completed(futures):
                yield f.result()
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Dask:
    def __init__(self, payload: _Payload, address: str) -> None:
        try:
            from distributed import Client
        except ImportError:  # pragma: no cover - dask[distributed] is a dependency
            raise UserInputError("--scheduler", None, "dask.distributed is not installed",
                                 "pip install 'dask[distributed]'") from None  # fmt: skip
        try:
            self.client = Client(address, timeout=20, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            raise UserInputError("--scheduler", address, f"cannot reach the Dask scheduler "
                                 f"({err})", "start one with `dask scheduler` and workers, "
                                 "or drop --scheduler to run locally") from None  # fmt: skip
        self.payload = self.client.scatter(payload, broadcast=True, hash=False)

    def run(self, tasks: Sequence[dict]) -> Iterator[dict]:
        from distributed import as_completed

        futures = [self.client.submit(_dask_task, self.payload, t, pure=False) for t in tasks]
        try:
            for f in as_completed(futures, loop=self.client.loop):
                yield f.result()
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------
def run_campaign(
    spec: CampaignSpec,
    models: Sequence[ModelEntry | Any],
    test: TestSet,
    store: ResultStore,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> CampaignResult:
    """Run (or resume) a campaign and store every sample; see the module docstring.

    workers: 1 = in this process; N > 1 = N local processes. scheduler: Dask scheduler
    address (overrides workers). progress: tqdm bar on stderr.
    """
    entries = [m if isinstance(m, ModelEntry) else model_entry(m) for m in models]
    if not entries:
        raise UserInputError("simulate", "models", "no model given", "pass a checkpoint")
    prof = _load_profile(spec.profile) if spec.kind == "knob" else None
    validate_spec(spec, prof)
    if test.labels.shape[0] == 0:
        raise UserInputError("dataset", None, "test set is empty", "check --limit")
    prof_row = _profile_row(prof) if prof is not None else _iid_profile_row(spec.p01_ratio)
    config = campaign_config(spec, prof_row["profile_hash"], test)
    cid = campaign_id_of(config)
    point_rows = _point_rows(spec, prof)

    deployed: dict[str, DeployedNetwork] = {}
    for e in entries:
        if e.model_hash not in deployed:
            deployed[e.model_hash] = deploy(
                e.net, encoding=spec.encoding, layout=spec.layout, protect=spec.protect,
                include_biases=spec.include_biases, profile=prof,
            )  # fmt: skip
    hashes = list(deployed)

    store.add_profile(prof_row)
    store.add_campaign({
        "campaign_id": cid, "kind": spec.kind, "profile_hash": prof_row["profile_hash"],
        "encoding": spec.encoding, "layout": spec.layout, "protect": ",".join(spec.protect),
        "include_biases": int(spec.include_biases), "seed": spec.seed, "dataset": test.name,
        "n_images": int(test.labels.shape[0]),
        "config_json": json.dumps(config, sort_keys=True), "created": now_iso(),
    })  # fmt: skip
    store.add_points(cid, point_rows)

    done = store.done_samples(cid)
    done_margins = store.done_margins(cid)
    done_sens = store.done_sensitivity(cid) if spec.kind == "sensitivity" else {}
    targets = {h: deployed[h].sensitivity_targets() for h in hashes}
    data_hash = test.digest

    threads = None
    if scheduler is None and workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
    payload = _Payload(cid + ":" + data_hash, spec, prof, point_rows, deployed,
                       test.images, test.labels, threads)  # fmt: skip
    executor: Any = None
    bar = None
    n_computed = 0
    n_reused = 0
    clean: dict[str, tuple[float, float]] = {}

    def executor_() -> Any:
        nonlocal executor
        if executor is None:
            if scheduler is not None:
                executor = _Dask(payload, scheduler)
            elif workers > 1:
                executor = _Processes(payload, workers)
            else:
                executor = _Serial(payload)
        return executor

    def sample_missing(h: str, p: int, c: int) -> bool:
        if (h, p, c) not in done:
            return True
        if c < spec.margins_chips and (h, p, c) not in done_margins:
            return True
        if spec.kind == "sensitivity":
            return any((h, t, nm, c) not in done_sens for t, nm in targets[h])
        return False

    try:
        # Clean accuracy and margins of every model on this test set.
        clean_tasks = []
        for e in entries:
            got = store.clean_margins(e.model_hash, data_hash)
            if got is None:
                if e.model_hash not in {t["model"] for t in clean_tasks}:
                    clean_tasks.append({"type": "clean", "campaign_id": cid,
                                        "model": e.model_hash})  # fmt: skip
            else:
                acc, m = got
                clean[e.model_hash] = (acc, float(np.mean(m.astype(np.float64))))
        if clean_tasks:
            for res in executor_().run(clean_tasks):
                correct, blob, n = res["clean"]
                h = res["task"]["model"]
                m = np.frombuffer(blob, dtype="<f4")
                store.add_clean_margins({"model_hash": h, "data_hash": data_hash,
                                         "dataset": test.name, "n_images": n,
                                         "accuracy": correct / n, "margins": blob})  # fmt: skip
                clean[h] = (correct / n, float(np.mean(m.astype(np.float64))))
        for e in entries:
            acc, mm_ = clean[e.model_hash]
            store.add_model({
                "model_hash": e.model_hash, "label": e.label, "path": e.path,
                "meta_json": json.dumps(e.meta, sort_keys=True, default=str),
                "clean_accuracy": acc, "clean_mean_margin": mm_,
                "n_images": int(test.labels.shape[0]),
            })  # fmt: skip

        n_points = len(point_rows)
        chips_per_point = [0] * n_points
        target_chips = spec.chips
        need_points = list(range(n_points))
        max_chips = spec.max_chips
        if spec.ci is not None and max_chips is None:
            max_chips = max(10 * spec.chips, 200)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=0, unit="sample", desc=f"campaign {cid[:8]}", dynamic_ncols=True,
                       smoothing=0.05)  # fmt: skip
        while True:
            tasks = []
            total_new = 0
            for c in range(target_chips):  # chip-major: models stay paired when interrupted
                for h in hashes:
                    pts = [p for p in need_points
                           if chips_per_point[p] <= c and sample_missing(h, p, c)]
                    reused = sum(1 for p in need_points
                                 if chips_per_point[p] <= c and not sample_missing(h, p, c))
                    n_reused += reused
                    if pts:
                        tasks.append({"type": "chip", "campaign_id": cid, "model": h,
                                      "chip": c, "points": pts})  # fmt: skip
                        total_new += len(pts)
            for p in need_points:
                chips_per_point[p] = target_chips
            if bar is not None:
                bar.total += total_new
                bar.refresh()
            done_now = 0
            if tasks:
                for res in executor_().run(tasks):
                    store.write_batch(res["samples"], res["margins"], res["sensitivity"])
                    for s in res["samples"]:
                        done[(s["model_hash"], s["point_index"], s["chip_index"])] = s["accuracy"]
                    for m in res["margins"]:
                        done_margins.add((m["model_hash"], m["point_index"], m["chip_index"]))
                    for s in res["sensitivity"]:
                        done_sens[(s["model_hash"], s["target"], s["name"], s["chip_index"])] = (
                            s["accuracy"]
                        )
                    k = len(res["samples"])
                    n_computed += k
                    done_now += k
                    if bar is not None:
                        bar.update(k)
                    if on_progress is not None:
                        on_progress(done_now, total_new)
            if spec.ci is None:
                break
            wide = [
                p for p in range(n_points)
                if any(needs_more_chips(_accuracies(done, h, p, chips_per_point[p]), spec.ci)
                       for h in hashes)
            ]  # fmt: skip
            if not wide or target_chips >= max_chips:
                break
            target_chips = min(target_chips + spec.chips, max_chips)
            need_points = wide
    finally:
        if bar is not None:
            bar.close()
        if executor is not None:
            executor.close()

    labels = {e.model_hash: e.label for e in entries}
    summary = []
    for h in hashes:
        for row in point_rows:
            p = row["point_index"]
            s = t_interval(_accuracies(done, h, p, chips_per_point[p]))
            summary.append({"model_hash": h, "label": labels[h], "point_index": p,
                            "knob": row["knob"], "ber": row["ber"], **s.to_dict()})  # fmt: skip
    paired = []
    for i, a in enumerate(hashes):
        for b in hashes[i + 1:]:
            for row in point_rows:
                p = row["point_index"]
                n = chips_per_point[p]
                s = paired_difference(_accuracies(done, a, p, n), _accuracies(done, b, p, n))
                paired.append({"a": labels[a], "b": labels[b], "a_hash": a, "b_hash": b,
                               "point_index": p, "knob": row["knob"], **s.to_dict()})  # fmt: skip
    sens = []
    if spec.kind == "sensitivity":
        n = chips_per_point[0]
        for h in hashes:
            for t, nm in targets[h]:
                s = t_interval([done_sens.get((h, t, nm, c), math.nan) for c in range(n)])
                sens.append({"model_hash": h, "label": labels[h], "target": t, "name": nm,
                             "ber": point_rows[0]["ber"], **s.to_dict()})  # fmt: skip
    models_out = [{"model_hash": h, "label": labels[h], "clean_accuracy": clean[h][0],
                   "clean_mean_margin": clean[h][1], "n_bits": deployed[h].n_bits}
                  for h in hashes]  # fmt: skip
    return CampaignResult(
        campaign_id=cid, kind=spec.kind, points=point_rows, models=models_out,
        summary=summary, paired=paired, sensitivity=sens, chips_per_point=chips_per_point,
        n_computed=n_computed, n_reused=n_reused,
    )  # fmt: skip


def _accuracies(done: dict, h: str, p: int, n_chips: int) -> np.ndarray:
    """Accuracy of model `h` at point `p` on chips 0 .. n_chips - 1 (NaN where not stored)."""
    return np.array([done.get((h, p, c), math.nan) for c in range(n_chips)], dtype=np.float64)

