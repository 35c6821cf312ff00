"""Executors: run jobs somewhere and yield their rows as they finish.

An executor has one method, ``run(inputs) -> iterator of (JobInput, rows)``,
yielding in completion order, each job exactly once. The main process alone
writes what it yields. :func:`make_executor` builds one by kind:

* :class:`SerialExecutor`: in this process (``--workers 0``; debugging).
* :class:`LocalExecutor`: a local process pool with one thread per worker.
  Workers report each job start to the parent. If a worker process dies
  (segfault, killed by the kernel), the pool is rebuilt and the unfinished
  jobs are resubmitted; the jobs a worker had started are charged a crash
  (jobs still queued in the pool are not), and a job charged ``max_crashes``
  times is recorded as error rows (stage ``"worker"``). A worker in which a
  job ran out of memory is replaced (a leak stays with the process), and the
  jobs in flight then go to a fresh pool uncharged.
* :class:`benchmark.dask_executor.DaskExecutor`: a Dask cluster (imported
  only when asked for, so ``bench --help`` never imports dask).

Timeout (``trial_timeout_s``, ``--trial-timeout``), local pool and serial. It
bounds one job, i.e. every trial of one clip × listener × SPL, all processors:

1. In the worker, :func:`run_with_alarm` arms ``signal.setitimer`` around
   :func:`~benchmark.trial.run_job`. When the alarm fires, :class:`TrialTimeout`
   (a ``BaseException``, so a processor's ``except Exception`` cannot swallow
   it and it is not mistaken for a processing error) unwinds the job, which
   becomes error rows with stage ``"timeout"``; the worker lives on. This
   stops pure-Python loops and sleeps, which is what a hung plugin usually is.
2. A hang inside C code that never returns to the interpreter (or a plugin
   that blocks SIGALRM) ignores the alarm. For that, the parent kills a worker
   whose job is still running ``KILL_GRACE_S`` after its deadline (pool only;
   serial runs have the alarm alone). The killed job becomes
   ``"timeout"`` rows; the other jobs that were in flight in the pool, which
   breaks with it, are resubmitted to a fresh pool and are not charged a crash.

Neither the timeout nor the memory limit covers a worker's one-time loading of
the HAAQI backend and HAAQI-Net (:func:`warm_up`), done before its first job.

Worker memory limit (``worker_memory_gb``, local pool only): each worker
sets ``RLIMIT_AS`` (address space) before its first job, once the HAAQI
backend is loaded, so a leaking plugin gets a ``MemoryError`` that
:func:`~benchmark.trial.run_job` turns into an ordinary error row, instead of
dragging the machine into swap or the OOM killer. The worker holds
:data:`RESERVE_BYTES` back under the limit and frees it when a job ran out of
memory, so that it can still send that job's rows (a leak that used up the
limit had made sending them fail, turning the rows into ``"worker"``
errors). The limit counts virtual
memory, which is more than the resident set (thread stacks, allocator
arenas, mapped libraries): a worker maps about 0.5 GB with the fast HAAQI
and 1 GB with HAAQI-Net (torch) before any job; give it 2 GB or more. Linux and macOS only
(``resource``); a plugin that leaks inside C code may still be killed by the
kernel, which the pool survives as a worker death.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue as queue_mod
import resource
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from benchmark.errors import BenchError
from benchmark.registry_util import did_you_mean
from benchmark.trial import JobInput, error_rows, run_job

log = logging.getLogger(__name__)

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS")

#: Executor kinds that :func:`make_executor` knows.
KINDS = ("local", "dask", "serial")

#: Seconds after its deadline that a job which ignores the alarm is killed.
KILL_GRACE_S = 5.0

# Set in each pool worker by _init_worker:
_started_queue = None  # where to report job starts
_memory_limit_bytes = None  # RLIMIT_AS to apply before the first job
_reserve = None  # address space held back under the limit, freed to send a job's rows after a MemoryError

#: Held back from a memory-limited worker's jobs, so that after a leak has used up the limit the worker can
#: still pickle and send the job's rows (which name the MemoryError) instead of dying while sending them.
RESERVE_BYTES = 64 * 2**20
_warmed: set[tuple] = set()  # (HAAQI backend, HAAQI-Net checkpoint) loaded here (warm_up)


class TrialTimeout(BaseException):
    """Raised inside a job that ran past its trial timeout."""


def timeout_message(timeout_s: float, how: str = "stopped") -> str:
    """The error text of a timed-out job, the same for every executor."""
    return f"the job ran longer than the trial timeout of {timeout_s:g} s and was {how}"


def _raise_timeout(signum, frame):
    raise TrialTimeout("alarm")


def run_with_alarm(inp: JobInput, timeout_s: float | None) -> list[dict]:
    """:func:`run_job` under a SIGALRM deadline; a timeout gives ``"timeout"`` rows.

    Only in a process's main thread (signals are delivered there); elsewhere,
    or without ``timeout_s``, this is plain :func:`run_job`.
    """
    if not timeout_s or threading.current_thread() is not threading.main_thread():
        return run_job(inp)
    started = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    try:
        signal.setitimer(signal.ITIMER_REAL, float(timeout_s))
        try:
            return run_job(inp)
        finally:  # disarm first: an alarm that fires in here still lands in the except below
            signal.setitimer(signal.ITIMER_REAL, 0)
    except TrialTimeout:
        return error_rows(inp, "timeout", TrialTimeout(timeout_message(timeout_s)), started)
    finally:
        signal.signal(signal.SIGALRM, previous)


def _init_worker(memory_gb: float | None = None, started_queue=None) -> None:
    """One thread per worker (the pool provides the parallelism); remember the memory cap."""
    global _started_queue, _memory_limit_bytes
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass
    _memory_limit_bytes = int(memory_gb * 2**30) if memory_gb else None
    _started_queue = started_queue


def warm_up(inp: JobInput) -> None:
    """Load the job's HAAQI backend, HAAQI-Net and BLAS buffers, once per process.

    Called before a job's deadline and memory cap apply: they are for the job,
    not for a fresh worker's one-time loading. The libraries (numba/LLVM,
    scipy, torch) also map hundreds of MB, and OpenBLAS allocates its buffers
    on first use: doing either under a cap that a leaking plugin has exhausted
    fails (OpenBLAS aborts the process) or leaves a module half-imported for
    the worker's later jobs.
    """
    what = (inp.haaqi_backend, getattr(inp, "haaqinet_checkpoint", None))
    if what in _warmed:
        return
    _warmed.add(what)
    try:
        import numpy as np

        from benchmark import haaqi

        haaqi.backend_module(inp.haaqi_backend)
        np.ones((64, 64)) @ np.ones((64, 64))
        if what[1]:
            from benchmark.trial import _predictor

            _predictor(what[1])  # cached for the job itself
    except Exception:  # a missing or broken backend or model is reported by the job itself
        pass


def _limit_memory() -> None:
    """Cap this worker's address space (once; after :func:`warm_up`), holding :data:`RESERVE_BYTES` back."""
    global _memory_limit_bytes, _reserve
    if not _memory_limit_bytes:
        return
    limit, _memory_limit_bytes = _memory_limit_bytes, None
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    _reserve = bytearray(RESERVE_BYTES)


def _pool_task(inp: JobInput, timeout_s: float | None) -> list[dict]:
    """What a pool worker runs: report the start to the parent's tracker, run the job."""
    global _reserve
    warm_up(inp)
    _limit_memory()
    if _started_queue is not None:
        _started_queue.put((inp.job.key, os.getpid(), time.monotonic()))
    rows = run_with_alarm(inp, timeout_s)
    if _ran_out_of_memory(rows):   # room to send the rows; the parent replaces this worker anyway
        _reserve = None
    return rows


class SerialExecutor:
    """Runs jobs one after another in this process (the alarm timeout only)."""

    name = "serial"

    def __init__(self, *, trial_timeout_s: float | None = None):
        self.trial_timeout_s = trial_timeout_s

    def run(self, inputs: Iterable[JobInput]) -> Iterator[tuple[JobInput, list[dict]]]:
        for inp in inputs:
            yield inp, run_with_alarm(inp, self.trial_timeout_s)


class LocalExecutor:
    """A local process pool (spawned workers, one thread each).

    Args:
        workers: number of worker processes.
        max_crashes: worker deaths charged to a job (it had started when the pool
            broke) before it is recorded as error rows.
        trial_timeout_s: per-job deadline in seconds (None: none).
        worker_memory_gb: address-space limit of each worker in GiB (None: none).
    """

    name = "local"

    def __init__(self, workers: int, *, max_crashes: int = 2, trial_timeout_s: float | None = None,
                 worker_memory_gb: float | None = None):
        self.workers = max(1, int(workers))
        self.max_crashes = max_crashes
        self.trial_timeout_s = trial_timeout_s
        self.worker_memory_gb = worker_memory_gb

    def _pool(self, started_queue) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                   initializer=_init_worker,
                                   initargs=(self.worker_memory_gb, started_queue))

    def run(self, inputs: Iterable[JobInput]) -> Iterator[tuple[JobInput, list[dict]]]:
        pending = list(inputs)
        crashes: dict[str, int] = {}
        while pending:
            pending = yield from self._round(pending, crashes)

    def _round(self, pending: list[JobInput], crashes: dict[str, int]):
        """Run ``pending`` on one pool until it finishes, breaks or needs renewing.

        Yields ``(JobInput, rows)``; returns the jobs left for the next pool.
        """
        started_queue = mp.get_context("spawn").Queue()
        pool = self._pool(started_queue)
        tracker = _Tracker(self.trial_timeout_s, started_queue)
        futures: dict = {}
        queue = iter(pending)
        done_keys: set[str] = set()
        clean_exit = False
        try:
            # keep at most 2 jobs per worker queued, so a pool death loses little
            for inp in _take(queue, 2 * self.workers):
                futures[pool.submit(_pool_task, inp, self.trial_timeout_s)] = inp
            while futures:
                finished, _ = wait(futures, timeout=tracker.poll_s, return_when=FIRST_COMPLETED)
                for fut in finished:
                    rows = _pool_rows(fut, futures[fut])  # BrokenProcessPool if a worker died
                    inp = futures.pop(fut)
                    done_keys.add(inp.job.key)
                    if _ran_out_of_memory(rows):  # a leak stays with the worker: replace it
                        tracker.renew(rows[0].get("worker_pid"), pool)
                    yield inp, rows
                    for nxt in _take(queue, 1):
                        futures[pool.submit(_pool_task, nxt, self.trial_timeout_s)] = nxt
                tracker.check({inp.job.key for inp in futures.values()})
            clean_exit = True
            return []
        except BrokenProcessPool:
            clean_exit = True
            tracker.drain()
            return (yield from self._after_break(pending, futures, done_keys, crashes, tracker))
        finally:
            if not clean_exit:  # the consumer stopped early (Ctrl-C): leave no worker behind
                _kill_workers(pool)
            pool.shutdown(wait=False, cancel_futures=True)
            started_queue.close()
            started_queue.cancel_join_thread()

    def _after_break(self, pending, futures, done_keys, crashes, tracker):
        """Yield rows for the jobs charged out; return the jobs to run again."""
        in_flight = list(futures.values())
        if tracker.killed or tracker.renewed:
            log.warning("stopped %d worker(s) (trial timeout or out of memory); rebuilding the "
                        "pool (%d jobs in flight)", len(tracker.killed) + tracker.renewed,
                        len(in_flight))
        else:
            # charge the jobs a worker had started, not those still queued in the pool
            charged = [i for i in in_flight if i.job.key in tracker.running] or in_flight
            if not charged:  # cannot happen; but never loop forever
                charged = [i for i in pending if i.job.key not in done_keys][:1]
            log.warning("a worker process died; rebuilding the pool (%d jobs in flight, %d "
                        "charged)", len(in_flight), len(charged))
            for inp in charged:
                crashes[inp.job.key] = crashes.get(inp.job.key, 0) + 1
        again = []
        for inp in (i for i in pending if i.job.key not in done_keys):
            key = inp.job.key
            if key in tracker.killed:
                exc = TrialTimeout(timeout_message(
                    self.trial_timeout_s, "killed (it did not respond to the alarm)"))
                yield inp, error_rows(inp, "timeout", exc,
                                      time.perf_counter() - tracker.killed[key])
            elif crashes.get(key, 0) >= self.max_crashes:
                yield inp, crash_rows(inp, crashes[key])
            else:
                again.append(inp)
        return again


class _Tracker:
    """The parent's view of which job runs in which worker since when.

    Workers report each job start on a queue. The tracker tells which jobs to
    charge when the pool breaks, and, with a timeout, kills the worker of a job
    that is still running ``KILL_GRACE_S`` after its deadline (it ignored the alarm).
    """

    def __init__(self, timeout_s: float | None, started_queue):
        self.timeout_s = timeout_s
        self.queue = started_queue
        self.poll_s = 0.25 if timeout_s else None
        self.running: dict[str, tuple[int, float]] = {}  # job key -> (pid, monotonic start)
        self.killed: dict[str, float] = {}  # job key -> seconds it had run
        self.renewed = 0  # workers killed because a job ran out of memory in them

    def drain(self) -> None:
        while True:
            try:
                key, pid, t0 = self.queue.get_nowait()
            except (queue_mod.Empty, OSError, EOFError):
                return
            self.running[key] = (pid, t0)

    def renew(self, pid: int | None, pool: ProcessPoolExecutor) -> None:
        """Kill a worker that ran out of memory; the jobs in flight go to a fresh pool."""
        if pid not in _worker_pids(pool):  # rows made here, not in a worker
            return
        log.warning("a job ran out of memory in worker %d; replacing the worker", pid)
        _kill_pid(pid)
        self.renewed += 1

    def check(self, in_flight: set[str]) -> None:
        self.drain()
        now = time.monotonic()
        for key, (pid, t0) in list(self.running.items()):
            if key not in in_flight:
                del self.running[key]
            elif self.timeout_s and now - t0 > self.timeout_s + KILL_GRACE_S:
                log.warning("job %s ignored the %g s alarm; killing worker %d", key,
                            self.timeout_s, pid)
                _kill_pid(pid)
                self.killed[key] = now - t0
                del self.running[key]


def _ran_out_of_memory(rows: list[dict]) -> bool:
    return any("MemoryError" in str(row.get("error") or "") for row in rows)


def _pool_rows(fut, inp: JobInput) -> list[dict]:
    """The rows of a finished pool future; a stray exception becomes error rows."""
    try:
        return fut.result()
    except BrokenProcessPool:
        raise
    except BaseException as exc:  # e.g. an unpicklable result, a late alarm
        if isinstance(exc, KeyboardInterrupt):
            raise
        stage = "timeout" if isinstance(exc, TrialTimeout) else "worker"
        return error_rows(inp, stage, exc, time.perf_counter())


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _worker_pids(pool: ProcessPoolExecutor) -> set[int]:
    return set(getattr(pool, "_processes", None) or {})


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's worker processes (a hung one would block interpreter exit)."""
    for pid in _worker_pids(pool):
        _kill_pid(pid)


def crash_rows(inp: JobInput, n_crashes: int) -> list[dict]:
    """Error rows for a job whose worker died ``n_crashes`` times."""
    err = RuntimeError(f"worker process died {n_crashes} times while running this job "
                       f"(crashed, killed or out of memory)")
    return error_rows(inp, "worker", err, time.perf_counter())


def _take(iterator, n):
    for _ in range(n):
        try:
            yield next(iterator)
        except StopIteration:
            return


def make_executor(kind: str = "local", *, workers: int | None = None,
                  scheduler: str | None = None, trial_timeout_s: float | None = None,
                  worker_memory_gb: float | None = None):
    """Build an executor.

    Args:
        kind: "local" (a process pool; ``workers=0`` means serial), "serial" or
            "dask".
        workers: local pool size, or the number of workers of the Dask
            ``LocalCluster`` (ignored with ``scheduler``). Default: CPU count
            for local, 2 for Dask.
        scheduler: ``tcp://host:port`` of a running Dask scheduler (dask only).
        trial_timeout_s: per-job deadline in seconds; a job past it gives error
            rows with stage "timeout".
        worker_memory_gb: per-worker memory limit in GiB (local: ``RLIMIT_AS``;
            Dask ``LocalCluster``: the nanny's ``memory_limit``).
    """
    if kind not in KINDS:
        raise BenchError(f"unknown executor {kind!r}{did_you_mean(kind, KINDS)}; "
                         f"choose one of {', '.join(KINDS)}")
    if trial_timeout_s is not None and trial_timeout_s <= 0:
        raise BenchError(f"--trial-timeout must be positive, got {trial_timeout_s:g}")
    if worker_memory_gb is not None and worker_memory_gb <= 0:
        raise BenchError(f"--worker-memory-gb must be positive, got {worker_memory_gb:g}")
    if scheduler and kind != "dask":
        raise BenchError("--scheduler needs --executor dask")
    if kind == "dask":
        from benchmark.dask_executor import DaskExecutor

        return DaskExecutor(scheduler, 2 if not workers else workers, trial_timeout_s,
                            worker_memory_gb=worker_memory_gb)
    if kind == "serial" or workers == 0:
        if worker_memory_gb:
            raise BenchError("--worker-memory-gb needs worker processes (--workers 1 or more)")
        return SerialExecutor(trial_timeout_s=trial_timeout_s)
    return LocalExecutor((os.cpu_count() or 1) if workers is None else workers,
                         trial_timeout_s=trial_timeout_s, worker_memory_gb=worker_memory_gb)
