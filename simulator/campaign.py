"""Deployment campaigns: many chips x operating points x models, stored sample by sample.

`run_campaign` is the driver; the rest of a campaign lives beside it:
  simulator.spec       what a campaign is: settings, sample keys and seeds, validation, id;
  simulator.sample     computing one task in a worker: engine choice, reading, scoring;
  simulator.executors  running tasks serially, on local processes or on a Dask cluster.
The names of `simulator.spec` (and `score`) can still be imported from here.

Samples are computed serially in-process (`workers=1`), on local processes (spawn; the
networks, deployed images and test set are sent to each worker once), or on a Dask cluster
(`scheduler="tcp://host:port"`; the same data is scattered once). Only this (parent)
process writes to the `ResultStore`, one transaction per task as it finishes; rerunning a
campaign skips every sample already stored. Tasks go chip-major (every model on chip 0,
then chip 1, ...), so an interrupted campaign leaves its models paired. In adaptive mode
(`CampaignSpec.ci`) chips are added to the points whose interval is still too wide. Results
do not depend on the executor, the number of workers or resume points.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import memory_models as mm
from memory_models.stats import interval, needs_more_chips, paired_interval
from memory_models.usererror import UserInputError
from simulator.deployment import DeployedNetwork, deploy
from simulator.executors import open_executor, worker_threads
from simulator.sample import _Payload, score
from simulator.spec import (
    ENGINES,
    KINDS,
    MAX_CHIPS,
    CampaignSpec,
    ModelEntry,
    TestSet,
    ber_rates,
    campaign_config,
    campaign_id_of,
    check_test_set,
    chip_seed,
    iid_profile_row,
    model_entry,
    parse_sweep,
    point_rng,
    point_rows,
    profile_row,
    validate_spec,
)
from simulator.store import ResultStore, now_iso

__all__ = [
    "ENGINES",
    "KINDS",
    "CampaignResult",
    "CampaignSpec",
    "ModelEntry",
    "TestSet",
    "ber_rates",
    "campaign_config",
    "campaign_id_of",
    "check_test_set",
    "chip_seed",
    "model_entry",
    "parse_sweep",
    "point_rng",
    "run_campaign",
    "score",
    "validate_spec",
]


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
    address (overrides workers). progress: tqdm bar on stderr. on_progress(done, total):
    called after each task with the samples done and to do in the current round of chips.
    """
    entries = [m if isinstance(m, ModelEntry) else model_entry(m) for m in models]
    if not entries:
        raise UserInputError("simulate", "models", "no model given", "pass a checkpoint")
    prof = mm.load_profile(spec.profile) if spec.kind == "knob" else None
    validate_spec(spec, prof)
    if test.labels.shape[0] == 0:
        raise UserInputError("dataset", None, "test set is empty", "check --limit")
    check_test_set(entries, test)
    prof_row = profile_row(prof) if prof is not None else iid_profile_row(spec.p01_ratio)
    config = campaign_config(spec, prof_row["profile_hash"], test)
    cid = campaign_id_of(config)
    points = point_rows(spec, prof)

    deployed: dict[str, DeployedNetwork] = {}
    for e in entries:
        if e.model_hash not in deployed:
            deployed[e.model_hash] = deploy(
                e.net, encoding=spec.encoding, layout=spec.layout, protect=spec.protect,
                include_biases=spec.include_biases, profile=prof, protection=spec.protection,
            )  # fmt: skip
    hashes = list(deployed)
    _register(store, cid, spec, config, prof_row, points, test)
    store.add_cells([{"campaign_id": cid, "model_hash": h, "data_cells": d.cells["data"],
                      "check_cells": d.cells["check"]} for h, d in deployed.items()])
    stored = _Stored.load(store, cid, spec, {h: deployed[h].sensitivity_targets() for h in hashes})

    payload = _Payload(cid + ":" + test.digest, spec, prof, points, deployed, test.images,
                       test.labels, worker_threads(workers, scheduler))  # fmt: skip
    executor: Any = None

    def run(tasks: list[dict]) -> Iterator[dict]:
        # The executor starts on first use: a campaign with nothing left to do starts none.
        nonlocal executor
        if executor is None:
            executor = open_executor(payload, workers=workers, scheduler=scheduler)
        return executor.run(tasks)

    try:
        clean = _clean_accuracy(store, cid, entries, test, run)
        chips_per_point, n_computed, n_reused = _run_chips(
            store, cid, spec, hashes, len(points), stored, run, progress, on_progress
        )
    finally:
        if executor is not None:
            executor.close()

    labels = {e.model_hash: e.label for e in entries}
    summary, paired = _summaries(hashes, labels, points, chips_per_point, stored, spec.interval)
    sens = []
    if spec.kind == "sensitivity":
        n = chips_per_point[0]
        for h in hashes:
            for t, nm in stored.targets[h]:
                s = interval([stored.sensitivity.get((h, t, nm, c), math.nan)
                              for c in range(n)], method=spec.interval)  # fmt: skip
                sens.append({"model_hash": h, "label": labels[h], "target": t, "name": nm,
                             "ber": points[0]["ber"], **s.to_dict()})  # fmt: skip
    models_out = [{"model_hash": h, "label": labels[h], "clean_accuracy": clean[h][0],
                   "clean_mean_margin": clean[h][1], "n_bits": deployed[h].n_bits,
                   "data_cells": deployed[h].cells["data"],
                   "check_cells": deployed[h].cells["check"]}
                  for h in hashes]  # fmt: skip
    return CampaignResult(
        campaign_id=cid, kind=spec.kind, points=points, models=models_out,
        summary=summary, paired=paired, sensitivity=sens, chips_per_point=chips_per_point,
        n_computed=n_computed, n_reused=n_reused,
    )  # fmt: skip


@dataclass
class _Stored:
    """What the store holds of one campaign, kept up to date as results arrive."""

    spec: CampaignSpec
    targets: dict[str, list[tuple[str, str]]]  # model -> its sensitivity targets
    samples: dict[tuple[str, int, int], float]  # (model, point, chip) -> accuracy
    margins: set[tuple[str, int, int]]  # (model, point, chip) with stored margins
    sensitivity: dict[tuple[str, str, str, int], float]  # (model, target, name, chip) -> acc

    @classmethod
    def load(cls, store: ResultStore, cid: str, spec: CampaignSpec,
             targets: dict[str, list[tuple[str, str]]]) -> _Stored:  # fmt: skip
        sens = store.done_sensitivity(cid) if spec.kind == "sensitivity" else {}
        return cls(spec, targets, store.done_samples(cid), store.done_margins(cid), sens)

    def missing(self, h: str, p: int, c: int) -> bool:
        """Whether sample (model h, point p, chip c) or one of its extra rows is not stored."""
        if (h, p, c) not in self.samples:
            return True
        if c < self.spec.margins_chips and (h, p, c) not in self.margins:
            return True
        if self.spec.kind == "sensitivity":
            return any((h, t, nm, c) not in self.sensitivity for t, nm in self.targets[h])
        return False

    def record(self, res: dict) -> None:
        """Note the rows of one finished task (just written to the store)."""
        for s in res["samples"]:
            self.samples[(s["model_hash"], s["point_index"], s["chip_index"])] = s["accuracy"]
        for m in res["margins"]:
            self.margins.add((m["model_hash"], m["point_index"], m["chip_index"]))
        for s in res["sensitivity"]:
            key = (s["model_hash"], s["target"], s["name"], s["chip_index"])
            self.sensitivity[key] = s["accuracy"]

    def accuracies(self, h: str, p: int, n_chips: int) -> np.ndarray:
        """Accuracy of model h at point p on chips 0 .. n_chips - 1 (NaN where not stored)."""
        return np.array([self.samples.get((h, p, c), math.nan) for c in range(n_chips)])


def _register(store: ResultStore, cid: str, spec: CampaignSpec, config: dict, prof_row: dict,
              points: list[dict], test: TestSet) -> None:  # fmt: skip
    """Store the campaign's profile, settings and operating points (kept if already there)."""
    store.add_profile(prof_row)
    store.add_campaign({
        "campaign_id": cid, "kind": spec.kind, "profile_hash": prof_row["profile_hash"],
        "encoding": spec.encoding, "layout": spec.layout, "protect": ",".join(spec.protect),
        "include_biases": int(spec.include_biases), "seed": spec.seed, "dataset": test.name,
        "n_images": int(test.labels.shape[0]),
        "config_json": json.dumps(config, sort_keys=True), "created": now_iso(),
    })  # fmt: skip
    store.add_points(cid, points)


def _clean_accuracy(store: ResultStore, cid: str, entries: list[ModelEntry], test: TestSet,
                    run: Callable[[list[dict]], Iterator[dict]]) -> dict[str, tuple[float, float]]:
    """model hash -> (clean accuracy, mean clean margin) on this test set, computed unless
    stored; stores every model's row."""
    data_hash = test.digest
    clean: dict[str, tuple[float, float]] = {}
    tasks = []
    for e in entries:
        got = store.clean_margins(e.model_hash, data_hash)
        if got is None:
            if e.model_hash not in {t["model"] for t in tasks}:
                tasks.append({"type": "clean", "campaign_id": cid, "model": e.model_hash})
        else:
            acc, m = got
            clean[e.model_hash] = (acc, float(np.mean(m.astype(np.float64))))
    if tasks:
        for res in run(tasks):
            correct, blob, n = res["clean"]
            h = res["task"]["model"]
            m = np.frombuffer(blob, dtype="<f4")
            store.add_clean_margins({"model_hash": h, "data_hash": data_hash,
                                     "dataset": test.name, "n_images": n,
                                     "accuracy": correct / n, "margins": blob})  # fmt: skip
            clean[h] = (correct / n, float(np.mean(m.astype(np.float64))))
    for e in entries:
        acc, mean_margin = clean[e.model_hash]
        store.add_model({
            "model_hash": e.model_hash, "label": e.label, "path": e.path,
            "meta_json": json.dumps(e.meta, sort_keys=True, default=str),
            "clean_accuracy": acc, "clean_mean_margin": mean_margin,
            "n_images": int(test.labels.shape[0]),
        })  # fmt: skip
    return clean


def _run_chips(
    store: ResultStore, cid: str, spec: CampaignSpec, hashes: list[str], n_points: int,
    stored: _Stored, run: Callable[[list[dict]], Iterator[dict]], progress: bool,
    on_progress: Callable[[int, int], None] | None,
) -> tuple[list[int], int, int]:
    """Compute the missing samples of `spec.chips` chips, then, in adaptive mode, of
    `spec.chips` more at every point still too wide (`needs_more_chips`) until none is or
    the chip limit is reached. Returns (chips per point, samples computed, samples reused)."""
    chips_per_point = [0] * n_points
    target_chips = spec.chips
    need_points = list(range(n_points))
    max_chips = spec.max_chips
    if spec.ci is not None and max_chips is None:
        max_chips = min(max(10 * spec.chips, 200), MAX_CHIPS)
    n_computed = n_reused = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="sample", desc=f"campaign {cid[:8]}", dynamic_ncols=True,
                   smoothing=0.05)  # fmt: skip
    try:
        while True:
            tasks = []
            total_new = 0
            for c in range(target_chips):  # chip-major: models stay paired when interrupted
                for h in hashes:
                    todo = [p for p in need_points if chips_per_point[p] <= c]
                    pts = [p for p in todo if stored.missing(h, p, c)]
                    n_reused += len(todo) - len(pts)
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
                for res in run(tasks):
                    store.write_batch(res["samples"], res["margins"], res["sensitivity"])
                    stored.record(res)
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
                if any(needs_more_chips(stored.accuracies(h, p, chips_per_point[p]), spec.ci,
                                        method=spec.interval) for h in hashes)
            ]  # fmt: skip
            if not wide or target_chips >= max_chips:
                break
            target_chips = min(target_chips + spec.chips, max_chips)
            need_points = wide
    finally:
        if bar is not None:
            bar.close()
    return chips_per_point, n_computed, n_reused


def _summaries(hashes: list[str], labels: dict[str, str], points: list[dict],
               chips_per_point: list[int], stored: _Stored,
               method: str = "t") -> tuple[list[dict], list[dict]]:  # fmt: skip
    """Per (model, point) intervals of accuracy, and per (pair of models, point) paired
    differences a - b over the same chips (`memory_models.stats.interval` with `method`)."""
    summary = []
    for h in hashes:
        for row in points:
            p = row["point_index"]
            s = interval(stored.accuracies(h, p, chips_per_point[p]), method=method)
            summary.append({"model_hash": h, "label": labels[h], "point_index": p,
                            "knob": row["knob"], "ber": row["ber"], **s.to_dict()})  # fmt: skip
    paired = []
    for i, a in enumerate(hashes):
        for b in hashes[i + 1:]:
            for row in points:
                p = row["point_index"]
                n = chips_per_point[p]
                s = paired_interval(stored.accuracies(a, p, n), stored.accuracies(b, p, n),
                                    method=method)  # fmt: skip
                paired.append({"a": labels[a], "b": labels[b], "a_hash": a, "b_hash": b,
                               "point_index": p, "knob": row["knob"], **s.to_dict()})  # fmt: skip
    return summary, paired
