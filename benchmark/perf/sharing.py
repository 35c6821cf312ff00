"""The effect of the two throughput features of a job, on one real job.

Usage::

    python -m benchmark.perf.sharing [--clip-s 10] [--repeats 3] [--audiogram N3] [--spl 65]

A job is one clip for one listener at one SPL through every processor of the
sweep (:mod:`benchmark.sweep`). This script builds one such job (a stereo
44.1-kHz music-like clip, the four default processors ``unprocessed``, ``nalr``,
``nalr-agc`` and ``camfit-wdrc``, the ``nalr`` reference convention) and times,
in one process on one thread:

* **HAAQI reference sharing**: every ear scored with one
  ``haaqi.score_many(reference, [4 outputs])`` call (the reference's ear model
  and alignment search computed once, as :mod:`benchmark.trial` does) against
  4 separate ``haaqi.score`` calls; it checks that both give identical scores.
* **HAAQI-Net batching**: the 8 ear signals of the job predicted in one
  ``Predictor.predict_signals`` call against 8 calls of one signal; and the
  model load, which a worker pays once (the predictor is cached per process).

Medians over ``--repeats`` rounds are printed with the ratios; the machine's
other load affects both sides of each ratio alike only if it is steady, so
run it on an idle machine.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmark.perf.scaling import RATE_HZ, music  # noqa: E402

PROCESSORS = ("unprocessed", "nalr", "nalr-agc", "camfit-wdrc")


def job_signals(clip_s: float, audiogram: str, spl_db: float):
    """The clean reference per ear and the 4 processed stereo outputs of one job."""
    from benchmark import options
    from benchmark.calibration import calibrate
    from processors import registry
    from processors.base import Presentation
    from processors.nalr import NALR

    clean = music(clip_s, seed=0).T.copy()            # (2, n)
    listener = options.parse_listeners(audiogram, None)[0]
    presentation = Presentation(RATE_HZ, listener, calibrate(clean, spl_db))
    rng = np.random.default_rng(0)
    outputs = [registry.create(p, {}).process(clean.copy(), presentation, rng=rng) for p in PROCESSORS]
    reference = NALR().process(clean.copy(), presentation, rng=rng)
    return listener, presentation, reference, outputs


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def haaqi_sharing(listener, presentation, reference, outputs, repeats: int) -> None:
    from benchmark import haaqi

    def kwargs(ear):
        return dict(sample_rate_hz=RATE_HZ, audiogram=listener.ear(ear),
                    level1_db_spl=presentation.calibration.level1_db_spl, equalisation=2, seed=1)

    def shared():
        return [haaqi.score_many(reference[ch], [o[ch] for o in outputs], **kwargs(ear))
                for ch, ear in enumerate(presentation.ears)]

    def separate():
        return [[haaqi.score(reference[ch], o[ch], **kwargs(ear)) for o in outputs]
                for ch, ear in enumerate(presentation.ears)]

    shared()  # numba compilation / cache load
    t_shared, a = median_time(shared, repeats)
    t_separate, b = median_time(separate, repeats)
    same = all(x.haaqi == y.haaqi for ea, eb in zip(a, b) for x, y in zip(ea, eb))
    n = len(outputs) * len(presentation.ears)
    print(f"HAAQI, {n} trials of one job (2 ears x {len(outputs)} processors):")
    print(f"  separate score() calls   {t_separate:7.2f} s  ({t_separate / n:.3f} s per trial)")
    print(f"  score_many per ear       {t_shared:7.2f} s  ({t_shared / n:.3f} s per trial)")
    print(f"  reference sharing saves  {1 - t_shared / t_separate:6.1%}  (x{t_separate / t_shared:.2f}); "
          f"identical scores: {same}")


def haaqinet_batching(listener, presentation, outputs, repeats: int) -> None:
    from haaqinet.predict import Predictor

    t0 = time.perf_counter()
    predictor = Predictor()
    t_load = time.perf_counter() - t0
    signals = [o[ch] for o in outputs for ch in range(len(presentation.ears))]
    grams = [listener.ear(presentation.ears[ch]) for _ in outputs for ch in range(len(presentation.ears))]
    levels = [presentation.calibration.level1_db_spl + 20 * np.log10(np.sqrt(np.mean(s.astype(np.float64) ** 2)))
              for s in signals]

    def one_call():
        return predictor.predict_signals(signals, grams, levels)

    def per_signal():
        return np.concatenate([predictor.predict_signals([s], [g], [lv]) for s, g, lv in zip(signals, grams, levels)])

    one_call()
    t_batch, a = median_time(one_call, repeats)
    t_single, b = median_time(per_signal, repeats)
    n = len(signals)
    print(f"HAAQI-Net, the job's {n} ear signals:")
    print(f"  model load (once per worker)  {t_load:6.2f} s")
    print(f"  one call per signal           {t_single:6.3f} s  ({t_single / n * 1000:.0f} ms per trial)")
    print(f"  one batched call              {t_batch:6.3f} s  ({t_batch / n * 1000:.0f} ms per trial)")
    print(f"  batching: x{t_single / t_batch:.2f}; max |difference| {np.max(np.abs(np.asarray(a) - b)):.2e}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip-s", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--audiogram", default="N3")
    ap.add_argument("--spl", type=float, default=65.0)
    args = ap.parse_args(argv)
    listener, presentation, reference, outputs = job_signals(args.clip_s, args.audiogram, args.spl)
    print(f"one job: {args.clip_s:g}-s stereo clip at {RATE_HZ} Hz, {args.audiogram}, {args.spl:g} dB SPL, "
          f"processors {', '.join(PROCESSORS)}; medians of {args.repeats}")
    haaqi_sharing(listener, presentation, reference, outputs, args.repeats)
    haaqinet_batching(listener, presentation, outputs, args.repeats)


if __name__ == "__main__":
    main()
