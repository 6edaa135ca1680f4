"""Local workers: kernels come from numba's on-disk cache (compiled once, in the parent),
and each worker's numba and torch pools get its share of the cores."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
import torch

import memory_models as mm
from models import build_model
from simulator.deployment import deploy
from simulator.importer import import_torch
from simulator.sample import _ModelState, _Payload, set_threads, warm_kernels

pytestmark = pytest.mark.xdist_group("workers")


def _jit_misses() -> int:
    """numba compilations so far in this process that did not come from the disk cache."""
    from memory_models import _kernels as mk
    from simulator import kernels as sk

    total = 0
    for mod in (sk, mk):
        for f in vars(mod).values():
            stats = getattr(f, "stats", None)
            if stats is not None:
                total += sum(stats.cache_misses.values())
    return total


def _worker(dep, images, labels, queue) -> None:
    import numba

    set_threads(1)
    ms = _ModelState(dep, images, labels)
    r = dep.read(mm.BitErrorModel(p01=1e-2, p10=1e-2), np.random.default_rng(3))
    logits = ms.logits(r, "auto")
    queue.put((_jit_misses(), numba.get_num_threads(), torch.get_num_threads(), logits))


def test_spawned_worker_loads_every_kernel_from_the_cache():
    torch.manual_seed(0)
    net = import_torch(build_model("vgg3", width=0.25, weight_bits=4).eval())
    dep = deploy(net)
    rng = np.random.default_rng(0)
    images = rng.random((12, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, 12)
    payload = _Payload("t", None, None, [], {"m": dep}, images, labels, threads=1)
    warm_kernels(payload)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(dep, images, labels, queue))
    proc.start()
    misses, numba_threads, torch_threads, logits = queue.get(timeout=300)
    proc.join(timeout=60)
    assert misses == 0, "a spawned worker compiled kernels instead of loading the cache"
    assert numba_threads == 1 and torch_threads == 1
    r = dep.read(mm.BitErrorModel(p01=1e-2, p10=1e-2), np.random.default_rng(3))
    want = dep.corrupted_network(r).forward(net.quantize_input(images))
    np.testing.assert_array_equal(logits, want)
