"""Time per clip of every registered processor (and of chains given on the command line).

Usage::

    python -m benchmark.perf.processors_speed [--clip-s 10] [--repeats 3] [--audiogram N3]
                                              [--extra "spectral-gating>nalr>camfit-wdrc"]

Each processor runs on the same stereo 44.1-kHz music-like clip
(:func:`benchmark.perf.scaling.music`) at 65 dB SPL for one listener, on one
thread; the first call (imports, model loading, numba compilation) is timed
apart, then the median of ``--repeats`` calls is printed. These are the
figures in ``docs/processors.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmark.perf.scaling import RATE_HZ, music  # noqa: E402
from benchmark.perf.sharing import median_time  # noqa: E402


def main(argv=None) -> None:
    from benchmark import options
    from benchmark.calibration import calibrate
    from benchmark.errors import BenchError
    from processors import registry
    from processors.base import Presentation

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip-s", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--audiogram", default="N3")
    ap.add_argument("--extra", action="append", default=[], help="a chain or plugin to time as well")
    args = ap.parse_args(argv)
    clean = music(args.clip_s, seed=0).T.copy()
    listener = options.parse_listeners(args.audiogram, None)[0]
    presentation = Presentation(RATE_HZ, listener, calibrate(clean, 65.0))
    print(f"{args.clip_s:g}-s stereo clip at {RATE_HZ} Hz, {args.audiogram}, 65 dB SPL, one thread; "
          f"median of {args.repeats}")
    print(f"{'processor':<36} {'first call s':>12} {'median s':>9}")
    for name in registry.available() + args.extra:
        try:
            proc = registry.create(name, {})
        except BenchError as exc:  # an optional extra that is not installed
            print(f"{name:<36} skipped: {exc}")
            continue

        def call():
            return proc.process(clean.copy(), presentation, rng=np.random.default_rng(0))

        t0 = time.perf_counter()
        try:
            call()
        except BenchError as exc:
            print(f"{name:<36} skipped: {exc}")
            continue
        first = time.perf_counter() - t0
        median, _ = median_time(call, args.repeats)
        print(f"{name:<36} {first:12.3f} {median:9.3f}")


if __name__ == "__main__":
    main()
