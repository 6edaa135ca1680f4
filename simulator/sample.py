"""Computing one campaign task in a worker: the worker's state, the engine choice per sample,
reading the deployed image through a chip or an i.i.d. error source, and scoring.

A task is ('clean', model) or (model, chip, points): the chip is built once and read at
every point of the task. `_execute` returns the rows to store; only the driver writes them.
A sensitivity campaign reads the image once per chip at `points[0]` (a BER) and keeps, in
turn, only the errors of one layer's cells / one bit position's cells.

Engine per sample (`CampaignSpec.engine`): 'session' recomputes incrementally what the
read changed, 'forward' runs the corrupted network in full, 'auto' picks the session for
reads that change at most `AUTO_SESSION_FRACTION` of the stored weights. Results are
identical either way.
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

__all__ = ["AUTO_SESSION_FRACTION", "score"]

log = logging.getLogger(__name__)

# engine="auto": a sample whose read changes at most this fraction of the stored weights is
# evaluated incrementally (session), others with a full forward. In VGG3 a few changed
# conv weights already dirty every image, so beyond ~1e-4 the session's bookkeeping costs
# more than it saves (benchmarks/results_campaign.md). Results are identical either way.
AUTO_SESSION_FRACTION = 1e-4


@dataclass(frozen=True, eq=False)
class _Payload:
    """Everything a worker needs, sent once: settings, deployed networks, test set.

    token: the campaign and test set (a worker keeps the state of one token at a time);
    threads: numba threads per worker process (None = numba's default).
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
        """int32 logits of the test images with the read's changes (engine per sample)."""
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
    """A worker's models for one payload; sets the worker's numba thread count."""

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
        chip = mm.Chip(p.profile, ms.dep.n_bits, seed=cseed)
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
