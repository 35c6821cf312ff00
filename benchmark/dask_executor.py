"""Run jobs on a Dask cluster: a LocalCluster here, or any scheduler by address.

:class:`DaskExecutor` has the executor interface of :mod:`benchmark.executors`:
``run(inputs)`` yields ``(JobInput, rows)`` in completion order, each job
exactly once. Workers compute rows and send them back; only this process (the
client) writes the journal, so a killed worker or client loses no row that
was written and writes none twice.

* Without ``scheduler`` it starts a ``distributed.LocalCluster`` of
  ``n_workers`` processes with one thread each, on 127.0.0.1 with the
  dashboard off, each worker with ``OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS=1``.
  With ``scheduler="tcp://host:port"`` it connects to a running scheduler (see
  ``docs/cluster.md``); the workers must have the same haaqi-bench installed
  and see the corpus and any plugin files at the same paths.
* Jobs are submitted with ``client.submit(..., key=..., pure=False,
  retries=...)``, at most ``4 × worker threads`` in flight, and collected
  with ``distributed.as_completed``. The key is the job key plus a hash of
  the whole job input, so two sweeps that share a scheduler never share a key.
* A worker that dies (killed, segfault, over its memory limit) has its tasks
  rescheduled by the scheduler on other workers. A task in flight on
  ``allowed_failures + 1`` dying workers fails with ``KilledWorker`` and is
  recorded as error rows with stage ``"worker"``. For a LocalCluster,
  ``allowed_failures`` sets the scheduler's ``distributed.scheduler.allowed-failures``,
  and ``worker-saturation`` is 1.0 so that each worker holds one task at a time
  and a dying worker charges only the job it was running; an external
  scheduler uses its own configuration (``docs/cluster.md`` gives both).
* ``worker_memory_gb`` (LocalCluster only) is each worker's ``memory_limit``:
  the nanny restarts a worker that passes 95 % of it, so a leaking plugin ends
  as ``"worker"`` error rows after the retries. With an external scheduler,
  give ``dask worker --memory-limit`` instead.

Timeout (``trial_timeout_s``; it bounds one job, all its trials): a Dask worker
runs tasks in a thread pool, where ``signal.alarm`` cannot be used (signals
only reach the main thread). So the client enforces the deadline: each task,
once its worker has loaded the HAAQI backend (and HAAQI-Net), reports its start with
``Worker.log_event`` on a per-run topic the client subscribes to; a job still
running ``trial_timeout_s`` after its start (as seen by the client) becomes
error rows with stage ``"timeout"``, its future is cancelled, and its worker is
restarted through its nanny (``client.restart_workers``), which frees the slot
whatever the job is stuck in (pure Python or C). The other tasks of that
worker are rescheduled. Workers started without a nanny cannot be restarted;
they are closed, and the deployment must replace them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

from benchmark.errors import BenchError
from benchmark.executors import _THREAD_VARS, TrialTimeout, timeout_message, warm_up
from benchmark.sweep import stable_hash
from benchmark.trial import JobInput, error_rows, run_job

log = logging.getLogger(__name__)

#: Jobs kept in flight per worker thread.
IN_FLIGHT_PER_THREAD = 4
#: How often, in seconds, the client checks deadlines (with a trial timeout).
POLL_S = 0.1

_limited = False  # in a worker process: BLAS pools already limited to one thread


def dask_key(inp: JobInput) -> str:
    """A stable key, unique per job input: the job key and a hash of everything else."""
    return f"haaqi-bench:{inp.job.key}:{stable_hash(repr(inp), 12)}"


def _dask_task(inp: JobInput, key: str, topic: str | None) -> list[dict]:
    """What a Dask worker runs: report the start (for the client's deadline), run the job."""
    global _limited
    if not _limited:
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(1)
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            pass
        _limited = True
    warm_up(inp)  # before the start is reported: not part of the deadline
    if topic:
        from distributed import get_worker

        worker = get_worker()
        worker.log_event(topic, {"key": key, "worker": worker.address, "pid": os.getpid()})
    return run_job(inp)


class DaskExecutor:
    """Runs jobs on a Dask cluster (a LocalCluster unless ``scheduler`` is given).

    Args:
        scheduler: ``tcp://host:port`` of a running scheduler; None starts a LocalCluster.
        n_workers: LocalCluster worker processes (one thread each).
        trial_timeout_s: per-job deadline in seconds (None: none).
        worker_memory_gb: LocalCluster per-worker memory limit in GiB (None: Dask's "auto").
        allowed_failures: LocalCluster: worker deaths a task may survive before KilledWorker.
        retries: resubmissions of a task that raised (``run_job`` itself turns processor
            errors into rows; this covers failures around it).
        max_in_flight: cap on submitted, unfinished jobs (default 4 per worker thread).

    Use it as a context manager to keep one cluster over several runs; otherwise each
    :meth:`run` starts the cluster and closes it when it ends (also on Ctrl-C).
    """

    name = "dask"

    def __init__(self, scheduler: str | None = None, n_workers: int = 2,
                 trial_timeout_s: float | None = None, *, worker_memory_gb: float | None = None,
                 allowed_failures: int = 2, retries: int = 1, max_in_flight: int | None = None):
        self.scheduler = scheduler
        self.n_workers = max(1, int(n_workers))
        self.trial_timeout_s = trial_timeout_s
        self.worker_memory_gb = worker_memory_gb
        self.allowed_failures = allowed_failures
        self.retries = retries
        self.max_in_flight = max_in_flight
        self.client = None
        self.cluster = None

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        """Start the LocalCluster (or connect to the scheduler) and the client."""
        if self.client is not None:
            return
        import dask
        from distributed import Client, LocalCluster

        try:
            if self.scheduler:
                if self.worker_memory_gb:
                    log.warning("--worker-memory-gb is ignored with --scheduler; start the "
                                "workers with `dask worker --memory-limit`")
                self.client = Client(self.scheduler, timeout="30s")
                return
            memory = f"{self.worker_memory_gb}GiB" if self.worker_memory_gb else "auto"
            settings = {"distributed.scheduler.allowed-failures": self.allowed_failures,
                        # one task per worker at a time: a dying worker charges only its own job
                        "distributed.scheduler.worker-saturation": 1.0,
                        # Dask's default (65536) pins glibc's mmap threshold, so every large array is
                        # a fresh mmap and its page faults: 2 workers ran no faster than 1 here
                        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
            with dask.config.set(settings):
                self.cluster = LocalCluster(
                    n_workers=self.n_workers, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address=None, memory_limit=memory,
                    env={var: "1" for var in _THREAD_VARS},
                    # no dashboard; the scheduler's small HTTP server on a free loopback port
                    scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
            self.client = Client(self.cluster)
        except OSError as exc:
            self.close()
            where = self.scheduler or "a LocalCluster on 127.0.0.1"
            raise BenchError(f"cannot start Dask on {where}: {exc}") from None

    def close(self) -> None:
        """Close the client and, if this executor started it, the cluster."""
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        for thing in (client, cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception as exc:  # closing must not hide the real outcome
                    log.warning("closing %s: %s", type(thing).__name__, exc)

    def __enter__(self) -> DaskExecutor:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- running ------------------------------------------------------------------
    def run(self, inputs: Iterable[JobInput]) -> Iterator[tuple[JobInput, list[dict]]]:
        own = self.client is None
        if own:
            self.start()
        try:
            yield from _DaskRun(self).rows(iter(inputs))
        finally:
            if own:
                self.close()

    def worker_threads(self) -> int:
        """Worker threads the scheduler knows of now (at least 1)."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return max(sum(w.get("nthreads", 1) for w in workers), 1)


class _DaskRun:
    """One call of :meth:`DaskExecutor.run`: submit, collect, enforce deadlines."""

    def __init__(self, executor: DaskExecutor):
        from distributed import as_completed

        self.ex = executor
        self.client = executor.client
        self.timeout_s = executor.trial_timeout_s
        self.topic = f"haaqi-bench-start-{uuid.uuid4().hex}" if self.timeout_s else None
        self.pending: dict = {}  # future -> JobInput
        self.started: dict[str, tuple[float, str]] = {}  # key -> (monotonic at client, worker)
        self.lock = threading.Lock()
        self.ac = as_completed(loop=self.client.loop)
        self._limit, self._limit_at = 0, 0.0

    def _on_start(self, event) -> None:  # called on the client's event-loop thread
        _stamp, msg = event
        with self.lock:
            self.started[msg["key"]] = (time.monotonic(), msg["worker"])

    def rows(self, inputs: Iterator[JobInput]) -> Iterator[tuple[JobInput, list[dict]]]:
        if self.topic:
            self.client.subscribe_topic(self.topic, self._on_start)
        try:
            self._top_up(inputs)
            while self.pending:
                for fut in self._next_done():
                    inp = self.pending.pop(fut, None)
                    if inp is None:
                        continue  # cancelled after a timeout: already recorded
                    with self.lock:
                        self.started.pop(fut.key, None)
                    rows = self._rows_of(fut, inp)
                    fut.release()
                    yield inp, rows
                if self.timeout_s:
                    yield from self._expire()
                self._top_up(inputs)
        finally:
            if self.topic:
                try:
                    self.client.unsubscribe_topic(self.topic)
                except Exception:  # the client may already be closing
                    pass
            for fut in self.pending:
                fut.cancel()

    def _in_flight_limit(self) -> int:
        if self.ex.max_in_flight:
            return self.ex.max_in_flight
        now = time.monotonic()
        if now - self._limit_at > 2.0:  # workers come and go (adaptive clusters)
            threads = max(self.ex.worker_threads(), 1 if self.ex.scheduler else self.ex.n_workers)
            self._limit, self._limit_at = IN_FLIGHT_PER_THREAD * threads, now
        return self._limit

    def _top_up(self, inputs: Iterator[JobInput]) -> None:
        limit = self._in_flight_limit()
        while len(self.pending) < limit:
            inp = next(inputs, None)
            if inp is None:
                return
            key = dask_key(inp)
            fut = self.client.submit(_dask_task, inp, key, self.topic, key=key, pure=False,
                                     retries=self.ex.retries)
            self.pending[fut] = inp
            self.ac.add(fut)

    def _next_done(self) -> list:
        if not self.timeout_s:
            return self.ac.next_batch(block=True)
        deadline = time.monotonic() + POLL_S
        while not self.ac.has_ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.ac.next_batch(block=False)

    def _rows_of(self, fut, inp: JobInput) -> list[dict]:
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        started = time.perf_counter()
        try:
            return fut.result()
        except KilledWorker as exc:
            deaths = exc.allowed_failures + 1 if hasattr(exc, "allowed_failures") else "several"
            err = RuntimeError(f"{deaths} Dask workers died while running this job (killed, "
                               f"crashed or over their memory limit); last: {exc.last_worker.address}")
            return error_rows(inp, "worker", err, started)
        except FutureCancelledError as exc:
            raise BenchError(f"Dask cancelled job {inp.job.key} ({exc}); the scheduler was "
                             f"probably lost. Finished trials are saved: rerun to resume.") from None
        except Exception as exc:
            return error_rows(inp, "worker", exc, started)

    def _expire(self) -> Iterator[tuple[JobInput, list[dict]]]:
        """Record and stop the jobs that ran past the trial timeout."""
        now = time.monotonic()
        with self.lock:
            late = {key: rec for key, rec in self.started.items()
                    if now - rec[0] > self.timeout_s}
        if not late:
            return
        processing = self.client.processing()  # worker -> keys assigned to it now
        restart = set()
        for fut, inp in list(self.pending.items()):
            rec = late.get(fut.key)
            if rec is None:
                continue
            with self.lock:
                del self.started[fut.key]
            if fut.key not in processing.get(rec[1], ()):
                continue  # that attempt's worker died; the retry will report a new start
            del self.pending[fut]
            fut.cancel()
            restart.add(rec[1])
            exc = TrialTimeout(timeout_message(self.timeout_s, f"stopped (worker {rec[1]} "
                                               f"restarted)"))
            yield inp, error_rows(inp, "timeout", exc, time.perf_counter() - (now - rec[0]))
        if restart:
            log.warning("restarting Dask worker(s) %s after a trial timeout", sorted(restart))
            status = self.client.restart_workers(sorted(restart), timeout=60,
                                                 raise_for_error=False)
            log.info("restart: %s", status)
