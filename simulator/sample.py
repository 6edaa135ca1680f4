"""Computing one campaign task in a worker: the worker's state, the engine choice per sample,
reading the deployed image through a chip or an i.i.d. error source, and scoring.

A task is ('clean', model) or (model, chip, points): the chip is built once and read at
every point of the task. `_execute` returns the rows to store; only the driver writes them.
A sensitivity campaign reads the image once per chip at `points[0]` (a BER) and keeps, in
turn, only the errors of one layer's cells / one bit position's cells.

Engine per sample (`CampaignSpec.engine`): 'session' recomputes incrementally what the
read changed (per-image patches), 'forward' runs the corrupted network in full, 'auto' uses
the session's own choice (`Session.logits(mode="auto")`: per-image patches for a handful of
changed weights, else the reuse pass that skips what a read left clean) whenever the
session's cached activations fit `SESSION_MAX_BYTES`, and a full forward otherwise.
Results are identical either way.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import memory_models as mm
from simulator.deployment import DeployedNetwork, ReadResult
from simulator.spec import CampaignSpec, chip_seed, point_rng
from simulator.store import margins_blob, mcelsim_version, now_iso

__all__ = ["SESSION_MAX_BYTES", "score", "warm_kernels"]

log = logging.getLogger(__name__)

# engine="auto": a model's session (clean activations of every op for the test set, e.g.
# 217 MB for VGG3 on 10 000 images) is built only below this size; per worker and model.
SESSION_MAX_BYTES = 2 * 2**30


@dataclass(frozen=True, eq=False)
class _Payload:
    """Everything a worker needs, sent once: settings, deployed networks, test set.

    token: the campaign and test set (a worker keeps the state of one token at a time);
    threads: numba and torch (int8 GEMM) threads per worker process (None = defaults).
    """

    token: str
    spec: CampaignSpec
    profile: Any
    point_rows: list[dict]
    deployed: dict[str, DeployedNetwork]
    images: np.ndarray
    labels: np.ndarray
    threads: int | None = None


class _ModelState:
    """One model in a worker: its quantized test images, clean logits and session."""

    def __init__(self, dep: DeployedNetwork, images: np.ndarray, labels: np.ndarray) -> None:
        self.dep = dep
        self.net = dep.net
        self.labels = labels
        self.x = self.net.quantize_input(images)
        self._session = None
        self._fits: bool | None = None
        self._clean = None

    @property
    def session(self):
        if self._session is None:
            self._session = self.net.session(self.x)
        return self._session

    def _session_fits(self) -> bool:
        """Whether the session's cached activations stay within SESSION_MAX_BYTES."""
        if self._session is not None:
            return True
        if self._fits is None:
            one = self.net.run_values(self.x[:1], keep=True)
            self._fits = sum(v.nbytes for v in one) * len(self.x) <= SESSION_MAX_BYTES
        return self._fits

    def clean_logits(self, engine: str) -> np.ndarray:
        if self._clean is None:
            if engine == "session" or (engine == "auto" and self._session_fits()):
                self._clean = np.asarray(self.session.clean_logits)
            else:
                self._clean = np.asarray(self.net.forward(self.x))
        return self._clean

    def logits(self, r: ReadResult, engine: str) -> np.ndarray:
        """int32 logits of the test images with the read's changes (engine per sample)."""
        if not r.deltas and not r.bias_deltas:
            return self.clean_logits(engine)
        use_session = engine == "session" or (engine == "auto" and self._session_fits())
        if use_session and (not r.bias_deltas or _session_takes_biases(self.net)):
            mode = "patch" if engine == "session" else "auto"
            return np.asarray(self.session.logits({**r.deltas, **r.bias_deltas}, mode=mode))
        return np.asarray(self.dep.corrupted_network(r).forward(self.x))


def _session_takes_biases(net: Any) -> bool:
    """Whether `session.logits` accepts bias names as delta keys (IntegerNetwork does)."""
    return hasattr(net, "ops") and hasattr(net, "_biases")


class _WorkerState:
    """A worker's models for one payload; sets the worker's numba thread count."""

    def __init__(self, payload: _Payload) -> None:
        self.payload = payload
        self.models: dict[str, _ModelState] = {}
        if payload.threads is not None:
            set_threads(payload.threads)

    def model(self, h: str) -> _ModelState:
        if h not in self.models:
            p = self.payload
            self.models[h] = _ModelState(p.deployed[h], p.images, p.labels)
        return self.models[h]


def set_threads(n: int) -> None:
    """numba's and torch's (oneDNN, the int8 GEMM) thread pools to n threads each, so that
    local workers sharing the cores do not oversubscribe them. Never changes results."""
    import numba

    from simulator import gemm_int8

    try:
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    except ValueError:  # pragma: no cover - a launched threading layer refuses more
        log.debug("could not set numba threads", exc_info=True)
    gemm_int8.set_threads(n)


def warm_kernels(payload: _Payload) -> None:
    """Compile (or load from numba's on-disk cache) every kernel a sample uses, on two
    images of each model, so that spawned workers load them from the cache instead of
    each compiling them again (10-20 s per worker otherwise)."""
    rng = np.random.default_rng(0)
    for dep in payload.deployed.values():
        net = dep.net
        x = net.quantize_input(payload.images[:2])
        session = net.session(x)
        r = dep.read(mm.BitErrorModel(p01=1e-2, p10=1e-2), rng)
        deltas = {**r.deltas, **r.bias_deltas}
        for mode in ("patch", "reuse"):
            session.logits(deltas, mode=mode)
        dep.corrupted_network(r).forward(x)


_STATES: dict[str, _WorkerState] = {}
_STATES_LOCK = threading.Lock()


def _state_for(payload: _Payload) -> _WorkerState:
    """This process's state for `payload`, built on first use."""
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
    chip = None
    if spec.kind == "knob":
        chip = mm.Chip(ms.dep.chip_profile or p.profile, ms.dep.n_bits, seed=cseed)
    for pi in task["points"]:
        t0 = time.perf_counter()
        row = p.point_rows[pi]
        rng = point_rng(spec.seed, c, pi)
        if chip is not None:
            r = ms.dep.read(chip, rng, knob=row["knob"])
        else:
            r = ms.dep.read(mm.BitErrorModel(p01=row["p01"], p10=row["p10"]), rng)
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
                    rr = ms.dep.filter(r.changes, only_layer=name)
                else:
                    rr = ms.dep.filter(r.changes, only_bit=int(name))
                k, _ = score(ms.logits(rr, spec.engine), ms.labels, scale)
                out["sensitivity"].append({
                    "campaign_id": cid, "model_hash": task["model"], "target": target,
                    "name": name, "ber": row["ber"], "chip_index": c,
                    "accuracy": k / n if n else math.nan, "n_images": n,
                })  # fmt: skip
    return out
