"""Executors: run jobs somewhere and yield their rows as they finish.

An executor has one method, ``run(inputs) -> iterator of (JobInput, rows)``,
yielding in completion order. The main process alone writes what it yields.

* :class:`SerialExecutor`: in this process (``--workers 0``; debugging).
* :class:`LocalExecutor`: a local process pool with one thread per worker.
  If a worker process dies (segfault, out of memory, killed), the pool is
  rebuilt and the unfinished jobs are resubmitted; a job that was in flight
  during ``max_crashes`` pool deaths is recorded as an error row.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from benchmark.trial import JobInput, error_rows, run_job

log = logging.getLogger(__name__)

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS")


def _init_worker() -> None:
    """One thread per worker: the pool provides the parallelism."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass


class SerialExecutor:
    """Runs jobs one after another in this process."""

    name = "serial"

    def run(self, inputs: Iterable[JobInput]) -> Iterator[tuple[JobInput, list[dict]]]:
        for inp in inputs:
            yield inp, run_job(inp)


class LocalExecutor:
    """A local process pool (spawned workers, one thread each)."""

    name = "local"

    def __init__(self, workers: int, *, max_crashes: int = 2):
        self.workers = max(1, int(workers))
        self.max_crashes = max_crashes

    def _pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                   initializer=_init_worker)

    def run(self, inputs: Iterable[JobInput]) -> Iterator[tuple[JobInput, list[dict]]]:
        pending = list(inputs)
        crashes: dict[str, int] = {}
        while pending:
            pool = self._pool()
            futures = {}
            queue = iter(pending)
            done_keys: set[str] = set()
            try:
                # keep at most 2 jobs per worker queued, so a pool death loses little
                for inp in _take(queue, 2 * self.workers):
                    futures[pool.submit(run_job, inp)] = inp
                while futures:
                    finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        inp = futures.pop(fut)
                        rows = fut.result()  # raises BrokenProcessPool if a worker died
                        done_keys.add(inp.job.key)
                        yield inp, rows
                        for nxt in _take(queue, 1):
                            futures[pool.submit(run_job, nxt)] = nxt
                pending = []
            except BrokenProcessPool:
                in_flight = list(futures.values())
                log.warning("a worker process died; rebuilding the pool (%d jobs in flight)",
                            len(in_flight))
                for inp in in_flight:
                    crashes[inp.job.key] = crashes.get(inp.job.key, 0) + 1
                remaining = [i for i in pending if i.job.key not in done_keys]
                pending = []
                for inp in remaining:
                    if crashes.get(inp.job.key, 0) >= self.max_crashes:
                        yield inp, crash_rows(inp, crashes[inp.job.key])
                    else:
                        pending.append(inp)
            finally:
                pool.shutdown(wait=False, cancel_futures=True)


def crash_rows(inp: JobInput, n_crashes: int) -> list[dict]:
    """Error rows for a job whose worker died ``n_crashes`` times."""
    err = RuntimeError(f"worker process died {n_crashes} times while running this job")
    return error_rows(inp, "worker", err, time.perf_counter())


def _take(iterator, n):
    for _ in range(n):
        try:
            yield next(iterator)
        except StopIteration:
            return


def make_executor(workers: int):
    """``--workers 0``: serial in-process; ``N >= 1``: a local pool of N processes."""
    return SerialExecutor() if workers == 0 else LocalExecutor(workers)
