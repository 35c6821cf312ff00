"""Where the fast HAAQI's time goes: a per-function profile of ``score_many``, reference side and per processed signal.

Usage::

    python -m benchmark.perf.haaqi_profile [--length 10] [--batch 8] [--repeats 3] [--top 20] [--default-malloc]
                                           [--json out.json]

It profiles ``score_many`` (``cProfile``, one thread, glibc's mmap threshold
fixed as in :mod:`.haaqi_speed`) on the same 44.1-kHz clip and ear as
:mod:`.haaqi_speed` (moderate loss, 65 dB SPL, equalisation 1), once with one
processed signal and once with ``--batch`` of them, and splits each
function's own time (cProfile's ``tottime``; a numba kernel counts as one
function) into a reference-side share and a per-processed-signal share:
per processed = (t(N) - t(1)) / (N - 1), reference side = t(1) - per processed.
The numbers are CPU seconds per call, medians of ``--repeats`` runs of each
size; cProfile's overhead (a few per cent here: its calls are few and long) is
in every row alike. It is the tool for choosing what to speed up, not a speed
figure: :mod:`.haaqi_speed` measures the ratio to pyclarity.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402

from benchmark.perf import save_json  # noqa: E402
from benchmark.perf.haaqi_speed import _kwargs, music, processed_versions, steady_allocator  # noqa: E402


def _label(key: tuple) -> str:
    path, line, name = key
    return name if path == "~" else f"{name} ({os.path.basename(path)}:{line})"


def own_times(run, repeats: int) -> dict[str, float]:
    """Median own time (s) of every function over ``repeats`` profiled calls of ``run``."""
    samples: dict[str, list[float]] = {}
    for _ in range(repeats):
        profile = cProfile.Profile()
        profile.enable()
        run()
        profile.disable()
        for key, row in pstats.Stats(profile).stats.items():
            samples.setdefault(_label(key), []).append(row[2])
    return {k: statistics.median(v + [0.0] * (repeats - len(v))) for k, v in samples.items()}


def per_processed(t1: float, tn: float, n: int) -> float:
    """The time each processed signal adds: (t(n) - t(1)) / (n - 1); the reference side is t(1) minus it."""
    return (tn - t1) / (n - 1)


def split(one: dict[str, float], many: dict[str, float], n: int) -> list[dict]:
    """Rows of (function, t(1), t(n), reference side, per processed signal), largest t(n) first."""
    rows = []
    for name in set(one) | set(many):
        t1, tn = one.get(name, 0.0), many.get(name, 0.0)
        per = per_processed(t1, tn, n)
        rows.append({"function": name, "t1_s": t1, "tn_s": tn, "reference_s": t1 - per, "per_processed_s": per})
    return sorted(rows, key=lambda r: -r["tn_s"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=float, default=10.0, help="clip length in seconds")
    parser.add_argument("--batch", type=int, default=8, help="processed signals in the larger call (>= 2)")
    parser.add_argument("--repeats", type=int, default=3, help="profiled calls of each size (median)")
    parser.add_argument("--top", type=int, default=20, help="rows to print")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's adaptive mmap threshold alone (see haaqi_speed.steady_allocator)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.batch < 2:
        parser.error("--batch must be at least 2")
    from benchmark.haaqi import fast

    steady = False if args.default_malloc else steady_allocator()
    reference = music(args.length)
    processed = processed_versions(reference, args.batch)
    kw = _kwargs(reference)

    def call(n):
        return lambda: fast.score_many(reference=reference, processed_list=processed[:n], **kw)

    call(args.batch)()                       # compile / load the numba cache, warm the work buffers
    one, many = own_times(call(1), args.repeats), own_times(call(args.batch), args.repeats)
    rows = split(one, many, args.batch)
    t1, tn = sum(one.values()), sum(many.values())
    per = per_processed(t1, tn, args.batch)
    print(f"{args.length:g}-s clip, {'steady' if steady else 'default'} allocator, one thread; score_many with 1 and "
          f"{args.batch} processed signals: {t1:.3f} s and {tn:.3f} s of own time; reference side {t1 - per:.3f} s, "
          f"{per:.3f} s per processed signal")
    print(f"{'function':58s} {'N=1 (s)':>8} {f'N={args.batch} (s)':>9} {'ref (s)':>8} {'per proc':>9} {'share':>6}")
    for r in rows[:args.top]:
        print(f"{r['function'][:58]:58s} {r['t1_s']:8.4f} {r['tn_s']:9.4f} {r['reference_s']:8.4f} "
              f"{r['per_processed_s']:9.4f} {r['tn_s'] / tn:6.1%}")
    results = {"length_s": args.length, "batch": args.batch, "repeats": args.repeats, "steady_allocator": steady,
               "total_1_s": t1, "total_n_s": tn, "per_processed_s": per, "rows": rows}
    save_json(results, args.json)
    return results


if __name__ == "__main__":
    main()
