"""Speed and memory of the fast HAAQI against pyclarity, in one process, one thread.

Usage::

    python -m benchmark.perf.haaqi_speed [--lengths 5,10,30] [--repeats 3] [--batch 8] [--memory]
                                         [--levels 20,20,25,35,45,50] [--spl 65] [--equalisation 1]
                                         [--default-malloc]

For each length it scores the same 44.1-kHz music-like clip (one ear,
moderate loss unless ``--levels`` gives other dB HL at 250-6000 Hz, reference
at 65 dB SPL unless ``--spl``, equalisation 1 unless ``--equalisation``, raw
signals given to both implementations) and prints the median time of each implementation and
their ratio, for single calls and for a batch (``score_many`` of one
reference against N processed signals, against N pyclarity calls, interleaved
call by call: each pyclarity call is followed by one ``score_many``, and a round
compares the pyclarity calls' total with the median ``score_many``, so both
sides see the same load on a shared machine; with ``--batch-repeats R``, R
rounds and the median of their ratios). It also
measures the first-call cost in fresh subprocesses (numba cache present, and
cold with an empty cache) and, with ``--memory``, the peak RSS of one 60-s
call of each implementation in its own subprocess. The timings run with
glibc's mmap threshold fixed (:func:`steady_allocator`; ``--default-malloc``
to leave it adaptive), so that neither implementation's time depends on
what ran before it in the process.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmark.perf import save_json  # noqa: E402

RATE_HZ = 44100
LEVELS_DB_HL = np.array([20.0, 20.0, 25.0, 35.0, 45.0, 50.0])   # pyclarity's "moderate" at 6 freqs
SPL_DB = 65.0


def music(duration_s: float, rate: int = RATE_HZ, seed: int = 0) -> np.ndarray:
    """Harmonic notes with envelopes over a bass line, peak 0.2."""
    rng = np.random.RandomState(seed)
    n = int(duration_s * rate)
    t = np.arange(n) / rate
    out = 0.3 * np.sin(2 * np.pi * 55 * t)
    for k in range(int(np.ceil(duration_s / 0.125))):
        start = k * 0.125
        lo, hi = int(start * rate), min(n, int((start + 0.25) * rate))
        tt = t[lo:hi] - start
        f0 = 196.0 * 2 ** (rng.randint(0, 19) / 12)
        env = (1 - np.exp(-tt * 200)) * np.exp(-tt * 8)
        for h in range(1, 9):
            out[lo:hi] += env * np.sin(2 * np.pi * f0 * h * tt + rng.rand() * 6.28) * 0.7 ** h
    return 0.2 * out / np.abs(out).max()


def processed_versions(reference: np.ndarray, count: int) -> list[np.ndarray]:
    """Noisy, clipped and attenuated versions of the reference."""
    rng = np.random.RandomState(1)
    rms = np.sqrt(np.mean(reference ** 2))
    out = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            out.append(reference + rng.randn(reference.size) * rms * 10 ** (-(5 + 5 * i) / 20))
        elif kind == 1:
            c = (0.2 + 0.1 * i) * np.abs(reference).max()
            out.append(np.clip(reference, -c, c))
        else:
            out.append(reference * 10 ** (-(i % 7) / 20))
    return out


def _kwargs(reference: np.ndarray, levels_db_hl=LEVELS_DB_HL, spl_db: float = SPL_DB, equalisation: int = 1) -> dict:
    level1 = spl_db - 20 * np.log10(np.sqrt(np.mean(reference ** 2)))
    return dict(sample_rate_hz=RATE_HZ, levels_db_hl=np.asarray(levels_db_hl, dtype=float), level1_db_spl=level1,
                equalisation=equalisation, seed=0)


def run_pyclarity(reference, processed, kw):
    from benchmark.haaqi import pyclarity_backend

    return pyclarity_backend.haaqi(reference=reference, processed=processed, **kw)


def run_fast(reference, processed, kw):
    from benchmark.haaqi import fast

    return fast.haaqi(reference=reference, processed=processed, **kw)


_CPU: dict = {}


def steady_allocator() -> bool:
    """Fix glibc's mmap threshold at 32 MiB and never trim the heap; False where that is not possible.

    By default glibc serves large allocations with fresh mmaps until a freed one raises its threshold, and
    fresh pages fault on first write: pyclarity's time per 10-s call then depends on what ran before it in
    the process (10.9 s fresh, 9.3 s with the threshold up, measured here), which made a ratio depend on
    the order of the measurements. With the threshold fixed, both implementations run in the same, steady
    state (the fast HAAQI changes by about 1 %, pyclarity by about 15 %).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20) and libc.mallopt(m_trim_threshold, 2**30))
    except (OSError, AttributeError):
        return False


def _median_time(fn, repeats: int) -> tuple[float, object]:
    """Median wall time; the median CPU time of the process goes to ``_CPU["last"]``.

    The CPU time is the robust figure on a shared machine (other processes'
    load stretches wall time, hardly CPU time).
    """
    times, cpu, result = [], [], None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    _CPU["last"] = statistics.median(cpu)
    return statistics.median(times), result


def time_length(length_s: float, repeats: int, batch: int, batch_repeats: int, levels_db_hl=LEVELS_DB_HL,
                spl_db: float = SPL_DB, equalisation: int = 1) -> dict:
    from benchmark.haaqi import fast

    reference = music(length_s)
    procs = processed_versions(reference, max(batch, 1))
    kw = _kwargs(reference, levels_db_hl, spl_db, equalisation)
    t_py, s_py = _median_time(lambda: run_pyclarity(reference, procs[0], kw), repeats)
    c_py = _CPU["last"]
    t_fast, s_fast = _median_time(lambda: run_fast(reference, procs[0], kw), repeats)
    c_fast = _CPU["last"]
    row = {"length_s": length_s, "pyclarity_s": t_py, "fast_s": t_fast, "ratio": t_py / t_fast,
           "pyclarity_cpu_s": c_py, "fast_cpu_s": c_fast, "ratio_cpu": c_py / c_fast,
           "haaqi_pyclarity": s_py.haaqi, "haaqi_fast": s_fast.haaqi}
    if batch > 1:
        fast.score_many(reference=reference, processed_list=procs, **kw)   # allocates the batch's work rows
        rounds = []
        for _ in range(batch_repeats):
            # interleaved call by call, so that both sides see the same machine: each pyclarity call is
            # followed by one score_many; a round compares the calls' total with the median score_many
            py, fa, c_py_b, c_fa = [], [], [], []
            for p in procs:
                py.append(_median_time(lambda: run_pyclarity(reference, p, kw), 1)[0])
                c_py_b.append(_CPU["last"])
                fa.append(_median_time(lambda: fast.score_many(reference=reference, processed_list=procs, **kw),
                                       1)[0])
                c_fa.append(_CPU["last"])
            rounds.append((sum(py), statistics.median(fa), sum(c_py_b), statistics.median(c_fa)))
        med = [statistics.median(r[i] for r in rounds) for i in range(4)]
        row.update(batch=batch, pyclarity_batch_s=med[0], fast_batch_s=med[1],
                   batch_ratio=statistics.median(r[0] / r[1] for r in rounds),
                   pyclarity_batch_cpu_s=med[2], fast_batch_cpu_s=med[3],
                   batch_ratio_cpu=statistics.median(r[2] / r[3] for r in rounds),
                   batch_ratios=[r[0] / r[1] for r in rounds], batch_ratios_cpu=[r[2] / r[3] for r in rounds])
    return row


_FIRST_CALL = """
import os, time
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[v] = "1"
t0 = time.perf_counter()
import numpy as np
from benchmark.perf import haaqi_speed as hs
ref = hs.music(1.0); proc = hs.processed_versions(ref, 1)[0]; kw = hs._kwargs(ref)
fn = hs.run_{impl}
t1 = time.perf_counter(); fn(ref, proc, kw); t2 = time.perf_counter(); fn(ref, proc, kw); t3 = time.perf_counter()
print(__import__("json").dumps({{"import_s": t1 - t0, "first_s": t2 - t1, "second_s": t3 - t2}}))
"""

_PEAK = """
import os, resource, json
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[v] = "1"
from benchmark.perf import haaqi_speed as hs
ref = hs.music({length}); proc = hs.processed_versions(ref, 1)[0]; kw = hs._kwargs(ref)
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
hs.run_{impl}(ref, proc, kw)
print(json.dumps({{"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "before_call_mib": base / 1024, "vmhwm_mib": hwm()}}))
"""


def _subprocess(code: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}, cwd=os.getcwd())
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_call_costs() -> dict:
    """First-call cost of each implementation in fresh processes (1-s clip)."""
    res = {impl: _subprocess(_FIRST_CALL.format(impl=impl)) for impl in ("pyclarity", "fast")}
    with tempfile.TemporaryDirectory() as cache:
        res["fast_cold_cache"] = _subprocess(_FIRST_CALL.format(impl="fast"), {"NUMBA_CACHE_DIR": cache})
    return res


def peak_memory(length_s: float) -> dict:
    return {impl: _subprocess(_PEAK.format(impl=impl, length=length_s)) for impl in ("pyclarity", "fast")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="5,10,30", help="clip lengths in seconds, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--batch", type=int, default=8, help="processed signals per reference (0: skip)")
    parser.add_argument("--batch-repeats", type=int, default=1,
                        help="rounds of the batch comparison (N pyclarity calls, each followed by one "
                             "score_many); medians")
    parser.add_argument("--memory", action="store_true", help="peak RSS of a 60-s call of each")
    parser.add_argument("--memory-length", type=float, default=60.0)
    parser.add_argument("--levels", default=",".join(f"{v:g}" for v in LEVELS_DB_HL),
                        help="the ear's dB HL at 250, 500, 1000, 2000, 4000, 6000 Hz (default: moderate loss)")
    parser.add_argument("--spl", type=float, default=SPL_DB, help="reference level, dB SPL")
    parser.add_argument("--equalisation", type=int, choices=(1, 2), default=1,
                        help="HAAQI's equalisation: 1 applies NAL-R to the reference, 2 (the project's convention) not")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's adaptive mmap threshold alone (see steady_allocator)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    levels = [float(v) for v in args.levels.split(",")]
    if len(levels) != len(LEVELS_DB_HL):
        parser.error(f"--levels needs {len(LEVELS_DB_HL)} values (dB HL at 250-6000 Hz)")

    # subprocess measurements first: a child's ru_maxrss starts at the parent's RSS
    results = {"rows": [], "levels_db_hl": levels, "spl_db": args.spl, "equalisation": args.equalisation,
               "steady_allocator": False if args.default_malloc else steady_allocator()}
    print(f"allocator: {'steady (mmap threshold 32 MiB, no trimming)' if results['steady_allocator'] else 'default'}")
    if args.memory:
        results["memory"] = peak_memory(args.memory_length)
    results["first_call"] = first_call_costs()

    # warm both implementations (imports, numba cache load) before timing
    warm = music(0.5)
    run_pyclarity(warm, warm, _kwargs(warm))
    run_fast(warm, warm, _kwargs(warm))

    print(f"{'length':>7} {'pyclarity':>10} {'fast':>8} {'ratio':>7} | {'N':>2} {'pyc N calls':>12} "
          f"{'score_many':>11} {'ratio':>7} | HAAQI pyc / fast")
    for length in (float(v) for v in args.lengths.split(",")):
        row = time_length(length, args.repeats, args.batch, args.batch_repeats, levels, args.spl, args.equalisation)
        results["rows"].append(row)
        batch = (f"{row['batch']:>2} {row['pyclarity_batch_s']:>11.2f}s {row['fast_batch_s']:>10.3f}s "
                 f"{row['batch_ratio']:>6.1f}x" if "batch" in row else " " * 37)
        print(f"{length:>6g}s {row['pyclarity_s']:>9.2f}s {row['fast_s']:>7.3f}s {row['ratio']:>6.1f}x | "
              f"{batch} | {row['haaqi_pyclarity']:.9f} / {row['haaqi_fast']:.9f}", flush=True)
        cpu_batch = (f"batch {row['pyclarity_batch_cpu_s']:.2f}s / {row['fast_batch_cpu_s']:.3f}s = "
                     f"{row['batch_ratio_cpu']:.1f}x" if "batch" in row else "")
        if len(row.get("batch_ratios", [])) > 1:
            cpu_batch += (" (median of rounds: " + ", ".join(f"{v:.1f}x" for v in row["batch_ratios_cpu"]) + ")")
        print(f"{'':>7} CPU time: single {row['pyclarity_cpu_s']:.2f}s / {row['fast_cpu_s']:.3f}s = "
              f"{row['ratio_cpu']:.1f}x; {cpu_batch}", flush=True)

    for impl, r in results["first_call"].items():
        print(f"first call, fresh process, {impl:<16}: import {r['import_s']:.2f}s, first 1-s call "
              f"{r['first_s']:.2f}s, second {r['second_s']:.3f}s (warm-up {r['first_s'] - r['second_s']:.2f}s)")
    if args.memory:
        for impl, r in results["memory"].items():
            print(f"peak RSS, {args.memory_length:g}-s call, {impl:<9}: ru_maxrss {r['peak_mib']:.0f} MiB, "
                  f"VmHWM {r['vmhwm_mib']:.0f} MiB (before the call {r['before_call_mib']:.0f} MiB)")
    save_json(results, args.json)


if __name__ == "__main__":
    main()
