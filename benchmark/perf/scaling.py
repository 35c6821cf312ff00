"""Throughput of the executors on one sweep: serial, local pool, Dask LocalCluster.

Usage::

    python -m benchmark.perf.scaling [--clips 4] [--excerpt-s 3] [--backend pyclarity]
                                     [--repeats 1] [--null-spls 2,12]

It writes a synthetic music corpus (``--clips`` stereo clips, 44.1 kHz) to a
temporary folder and runs the same sweep (processors unprocessed and nalr,
audiograms N2 and S2, 65 dB SPL) with each executor, each into a fresh
results folder: serial (in this process), the local pool with 1 and 2
workers, and a 2-worker Dask LocalCluster on 127.0.0.1 (HAAQI only; the
HAAQI-Net prediction is off). For each it prints
the trials per minute (the runner's wall clock: pool start-up and the
workers' first imports included; the Dask cluster's own start is timed
apart), the speed-up over serial and the parallel efficiency
(speed-up / workers). With ``--repeats N`` the executors run in N interleaved
rounds and the fastest round of each is shown.

Executor overhead: a sweep of *null* jobs (a processor that raises at once,
so there is no processing and no HAAQI) is run twice with each executor, with
11 listeners × the two ``--null-spls`` counts; the difference in wall time
over the difference in jobs is the marginal cost of one job, start-up costs
cancelled (the Dask workers are warmed by one untimed null sweep first). Dask
minus local is its overhead per job (and per trial: 2 ears).

All runs share the machine's cores; on a shared machine, run it when idle.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

RATE_HZ = 44100
LISTENERS = "NH,N1,N2,N3,N4,N5,N6,N7,S1,S2,S3"
NULL_PLUGIN = '''
from dataclasses import dataclass

from processors.base import Processor


@dataclass(frozen=True)
class Null(Processor):
    """Fails at once: a job with no processing and no HAAQI, to time the executor."""
    name = "null"

    def process(self, x, presentation, *, rng):
        raise RuntimeError("null job")
'''


@dataclass
class Measure:
    """One timed sweep."""

    label: str
    workers: int
    n_trials: int
    n_error: int
    wall_s: float

    @property
    def trials_per_min(self) -> float:
        return 60.0 * self.n_trials / self.wall_s


def music(duration_s: float, seed: int) -> np.ndarray:
    """Stereo harmonic notes with envelopes over a bass line; float32, shape (n, 2)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * RATE_HZ)) / RATE_HZ
    out = 0.3 * np.sin(2 * np.pi * 55 * t)
    for k in range(int(duration_s / 0.125)):
        seg = (t >= k * 0.125) & (t < k * 0.125 + 0.25)
        tt = t[seg] - k * 0.125
        f0 = 196.0 * 2 ** (rng.integers(0, 19) / 12)
        for h in range(1, 7):
            out[seg] += np.exp(-tt * 8) * np.sin(2 * np.pi * f0 * h * tt) * 0.7 ** h
    out = 0.2 * out / np.abs(out).max()
    return np.stack([out, 0.8 * out], axis=1).astype(np.float32)


def write_corpus(folder: Path, n_clips: int, duration_s: float) -> Path:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_clips):
        sf.write(folder / f"clip{i}.wav", music(duration_s, i), RATE_HZ, subtype="FLOAT")
    return folder


def sweep(corpus: Path, processors: list[str], listeners: str, spls: list[float],
          excerpt_s: float, backend: str):
    from benchmark import options
    from benchmark.sweep import ProcessorSpec, SweepConfig

    return SweepConfig(processors=tuple(ProcessorSpec(p) for p in processors),
                       spls_db=tuple(spls), listeners=options.parse_listeners(listeners, None),
                       corpus=str(corpus), excerpt_s=excerpt_s, haaqi_backend=backend,
                       haaqinet_checkpoint=None)


def timed(config, results: Path, label: str, workers: int, executor) -> Measure:
    """Run ``config`` into a fresh folder; the runner's own wall clock."""
    from benchmark.runner import run_sweep

    summary = run_sweep(config, results_dir=results, run_id=label.replace(" ", "-"),
                        executor=executor)
    return Measure(label, workers, summary.n_ok + summary.n_error, summary.n_error,
                   summary.wall_s)


def executors(config, results: Path, repeats: int) -> tuple[list[Measure], float]:
    """The sweep on every executor, the fastest of ``repeats`` rounds each (executors
    interleaved, so slow spells of a shared machine hit all of them alike); also the
    Dask cluster's start-up time in seconds (the fastest)."""
    from benchmark.dask_executor import DaskExecutor
    from benchmark.executors import LocalExecutor, SerialExecutor

    best: dict[str, Measure] = {}
    start_s = float("inf")
    for r in range(repeats):
        round_ = [timed(config, results / str(r), "serial", 1, SerialExecutor()),
                  timed(config, results / str(r), "local pool", 1, LocalExecutor(1)),
                  timed(config, results / str(r), "local pool x2", 2, LocalExecutor(2))]
        t0 = time.perf_counter()
        with DaskExecutor(n_workers=2) as dask:
            start_s = min(start_s, time.perf_counter() - t0)
            round_.append(timed(config, results / str(r), "dask x2", 2, dask))
        for m in round_:
            if m.label not in best or m.wall_s < best[m.label].wall_s:
                best[m.label] = m
    return list(best.values()), start_s


def job_overhead(corpus: Path, results: Path, null_spls: tuple[int, int],
                 backend: str) -> dict[str, float]:
    """Marginal seconds per null job for each executor (2 workers)."""
    from benchmark.dask_executor import DaskExecutor
    from benchmark.executors import LocalExecutor, SerialExecutor

    plugin = results / "null.py"
    plugin.write_text(NULL_PLUGIN)
    configs = [sweep(corpus, [f"{plugin}:Null"], LISTENERS, list(np.linspace(40, 90, n)),
                     1.0, backend) for n in null_spls]
    n_clips = len(list(corpus.glob("*.wav")))
    n_jobs = [len(c.listeners) * len(c.spls_db) * n_clips for c in configs]
    walls: dict[str, list[float]] = {}
    with DaskExecutor(n_workers=2) as dask:
        timed(configs[0], results / "null-warm-up", "dask", 2, dask)  # workers' first imports
        makers = {"serial": SerialExecutor, "local x2": lambda: LocalExecutor(2),
                  "dask x2": lambda: dask}
        for name, make in makers.items():
            walls[name] = [timed(c, results / "null", f"{name} {i}", 2, make()).wall_s
                           for i, c in enumerate(configs)]
    return {name: (w[1] - w[0]) / (n_jobs[1] - n_jobs[0]) for name, w in walls.items()}


def report(measures: list[Measure], dask_start_s: float, per_job: dict[str, float],
           args) -> None:
    serial = measures[0]
    print(f"\nsweep: {args.clips} clips x {args.excerpt_s:g} s, processors unprocessed+nalr, "
          f"audiograms N2,S2, 65 dB SPL, backend {args.backend}: {serial.n_trials} trials "
          f"({serial.n_trials // 4} jobs); fastest of {args.repeats} round(s)")
    load_end = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {args.load:.2f} at start, "
          f"{load_end:.2f} at end")
    if max(args.load, load_end) > 0.5 * (os.cpu_count() or 1):
        print("WARNING: the machine was busy with other work; the speed-ups below measure "
              "that contention, not the executors")
    print()
    print(f"{'executor':<16}{'workers':>8}{'wall s':>9}{'trials/min':>12}{'speed-up':>10}"
          f"{'efficiency':>12}")
    for m in measures:
        speed_up = m.trials_per_min / serial.trials_per_min
        print(f"{m.label:<16}{m.workers:>8}{m.wall_s:>9.1f}{m.trials_per_min:>12.1f}"
              f"{speed_up:>10.2f}{speed_up / m.workers:>12.0%}"
              + (f"   ({m.n_error} errors)" if m.n_error else ""))
    print(f"(Dask LocalCluster start-up, not in its wall time: {dask_start_s:.1f} s)\n")
    print("marginal cost of one null job (no processing, no HAAQI):")
    for name, s in per_job.items():
        print(f"  {name:<10} {1000 * s:8.1f} ms per job")
    extra = per_job["dask x2"] - per_job["local x2"]
    print(f"Dask overhead vs local pool: {1000 * extra:+.1f} ms per job, "
          f"{500 * extra:+.1f} ms per trial")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--excerpt-s", type=float, default=3.0)
    parser.add_argument("--backend", default="pyclarity")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of the sweep; the fastest of each executor is shown")
    parser.add_argument("--null-spls", default="2,12",
                        help="two SPL counts for the null sweeps (x 11 listeners)")
    args = parser.parse_args(argv)
    args.load = os.getloadavg()[0]
    null_spls = tuple(int(n) for n in args.null_spls.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        root = Path(tmp)
        corpus = write_corpus(root / "corpus", args.clips, args.excerpt_s)
        config = sweep(corpus, ["unprocessed", "nalr"], "N2,S2", [65.0], args.excerpt_s,
                       args.backend)
        measures, dask_start_s = executors(config, root / "results", args.repeats)
        null_corpus = write_corpus(root / "null-corpus", 1, 1.0)
        per_job = job_overhead(null_corpus, root, null_spls, args.backend)
    report(measures, dask_start_s, per_job, args)


if __name__ == "__main__":
    main()
