"""Executors of campaign tasks: in this process, on local processes, or on a Dask cluster.

Each takes the `_Payload` once (local processes: at start through the pool initializer,
spawned; Dask: scattered to every worker) and yields each task's result as it finishes,
in any order. Only the driver's process writes results. Results do not depend on the
executor, the number of workers or the order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from memory_models.usererror import UserInputError
from simulator.sample import _execute, _Payload, _state_for, _WorkerState, warm_kernels

__all__ = ["open_executor", "worker_threads"]

_POOL_PAYLOAD: _Payload | None = None  # set in each local worker process by _pool_init


def _pool_init(payload: _Payload) -> None:
    global _POOL_PAYLOAD
    _exit_with_parent()
    _POOL_PAYLOAD = payload
    _state_for(payload)


def _exit_with_parent() -> None:
    """End this worker as soon as the process that spawned it is gone (even by SIGKILL).

    A pool worker otherwise waits forever on its task queue, whose write end it holds
    itself, and keeps the resource tracker alive with it. The spawn start method gives each
    child a sentinel pipe whose other end only the parent holds: it turns readable (EOF) the
    moment the parent dies. A daemon thread waits on it; the kernels release the GIL, so
    it runs even while a sample is being computed.
    """
    import multiprocessing as mp
    import threading
    from multiprocessing.connection import wait

    parent = mp.parent_process()
    if parent is None:  # not a multiprocessing child
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)  # no cleanup: the parent that would read our results is gone

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _pool_task(task: dict) -> dict:
    assert _POOL_PAYLOAD is not None, "worker not initialized"
    return _execute(_state_for(_POOL_PAYLOAD), task)


def _dask_task(payload: _Payload, task: dict) -> dict:
    return _execute(_state_for(payload), task)


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

        warm_kernels(payload)  # compiled once here, loaded from the cache by every worker
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


def worker_threads(workers: int, scheduler: str | None) -> int | None:
    """numba and torch threads per worker: local processes share the cores; None = the
    libraries' defaults (one process, or Dask workers, which set up their own threads)."""
    if scheduler is None and workers > 1:
        return max(1, (os.cpu_count() or 1) // workers)
    return None


def open_executor(payload: _Payload, *, workers: int = 1, scheduler: str | None = None) -> Any:
    """Dask when `scheduler` (an address) is given, else `workers` local processes when
    workers > 1, else this process. The result has `run(tasks)` and `close()`."""
    if scheduler is not None:
        return _Dask(payload, scheduler)
    if workers > 1:
        return _Processes(payload, workers)
    return _Serial(payload)
