"""Speed of HAAQI-Net against HAAQI (pyclarity and the fast backend), in one run.

Usage::

    python -m benchmark.perf.haaqinet_speed [--checkpoint PATH] [--length 10] [--repeats 5]
                                            [--batch 16] [--threads 1] [--skip-pyclarity] [--json out.json]

What is timed, on one 44.1-kHz music-like clip of ``--length`` seconds (one ear,
moderate loss, 65 dB SPL):

* model load: ``load_checkpoint`` in a fresh process (with and without the
  ``import torch`` before it), and again in this process once torch is loaded;
* HAAQI-Net per clip: resampling to 16 kHz plus the forward pass, batch 1, the
  median of ``--repeats`` runs after a warm-up, with ``--threads`` torch threads;
* HAAQI-Net batched: ``--batch`` clips per forward pass, clips per second;
* HAAQI per clip: pyclarity's ``haaqi_v1`` (one run; it is slow) and the fast
  backend (median), both given the same clip, with the reference through NAL-R.

All in one process with numpy/numba/torch limited to ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmark.perf import save_json

_LOAD = """
import time, json
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
t1 = time.perf_counter()
from haaqinet.checkpoint import load_checkpoint
load_checkpoint({path!r})
t2 = time.perf_counter()
print(json.dumps({{"import_torch_s": t1 - t0, "load_s": t2 - t1}}))
"""


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None,
                        help="HAAQI-Net checkpoint: a path or a name (default, teacher, student, ensemble) "
                        "[default: default, the ensemble]")
    parser.add_argument("--length", type=float, default=10.0, help="clip length in seconds")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch/numpy threads")
    parser.add_argument("--skip-pyclarity", action="store_true", help="do not time pyclarity (it takes a while)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import torch

    from benchmark.audiogram import parse_audiogram
    from benchmark.perf import haaqi_speed as hs
    from haaqinet.predict import Predictor, resolve_checkpoint

    torch.set_num_threads(args.threads)
    path = str(resolve_checkpoint(args.checkpoint))   # a path, or a name: default, teacher, student, ensemble
    res = {"length_s": args.length, "threads": args.threads, "batch": args.batch, "checkpoint": path,
           "cpu_count": os.cpu_count()}
    out = subprocess.run([sys.executable, "-c", _LOAD.format(path=path, threads=args.threads)], check=True,
                         capture_output=True, text=True, cwd=os.getcwd())
    res["load_fresh_process"] = json.loads(out.stdout.strip().splitlines()[-1])
    t0 = time.perf_counter()
    predictor = Predictor(path)
    res["load_warm_s"] = time.perf_counter() - t0

    clip = hs.music(args.length)  # 44.1 kHz, (n,)
    audiogram = parse_audiogram("moderate")

    def one():
        (_, x16, spl), = predictor.ears(clip, hs.RATE_HZ, 65.0)
        return predictor.predict_signals([x16], [audiogram], [spl])

    one()
    res["haaqinet_clip_s"] = _median(one, args.repeats)
    clips = [hs.music(args.length, seed=i) for i in range(args.batch)]

    def batch():
        ears = [predictor.ears(c, hs.RATE_HZ, 65.0)[0] for c in clips]
        return predictor.predict_signals([e[1] for e in ears], [audiogram] * len(ears), [e[2] for e in ears])

    batch()
    predictor.batch_size = args.batch
    res["haaqinet_batch_s"] = _median(batch, max(1, args.repeats // 2))
    res["haaqinet_batch_clips_per_s"] = args.batch / res["haaqinet_batch_s"]

    from benchmark.haaqi import score
    from benchmark.trial import reference_signal

    ref = reference_signal(clip.astype(np.float32), ear_audiogram=audiogram, sample_rate_hz=hs.RATE_HZ,
                           reference="nalr")
    proc = hs.processed_versions(ref, 1)[0]
    level1 = 65.0 - 20 * np.log10(np.sqrt(np.mean(clip ** 2)))
    kw = dict(sample_rate_hz=hs.RATE_HZ, audiogram=audiogram, level1_db_spl=level1, equalisation=2, seed=0)
    score(ref[: hs.RATE_HZ // 2], proc[: hs.RATE_HZ // 2], backend="fast", **kw)  # compile / load numba
    res["fast_haaqi_clip_s"] = _median(lambda: score(ref, proc, backend="fast", **kw), max(1, args.repeats // 2))
    if not args.skip_pyclarity:
        score(ref[: hs.RATE_HZ // 2], proc[: hs.RATE_HZ // 2], backend="pyclarity", **kw)
        res["pyclarity_haaqi_clip_s"] = _median(lambda: score(ref, proc, backend="pyclarity", **kw), 1)
    _print(res)
    save_json(res, args.json)
    return res


def _print(res: dict) -> None:
    net = res["haaqinet_clip_s"]
    load = res["load_fresh_process"]
    print(f"{res['length_s']:g}-s clip, {res['threads']} thread(s), {res['cpu_count']} CPUs")
    print(f"model load: fresh process {load['load_s']:.3f} s (+ import torch {load['import_torch_s']:.2f} s); "
          f"in a warm process {res['load_warm_s']:.3f} s")
    print(f"{'':<26}{'s per clip':>12}{'x HAAQI-Net':>14}")
    print(f"{'HAAQI-Net (batch 1)':<26}{net:>12.4f}{1.0:>14.1f}")
    print(f"{'HAAQI-Net (batch %d)' % res['batch']:<26}{res['haaqinet_batch_s'] / res['batch']:>12.4f}"
          f"{res['haaqinet_batch_s'] / res['batch'] / net:>14.2f}   ({res['haaqinet_batch_clips_per_s']:.1f} clips/s)")
    print(f"{'HAAQI fast backend':<26}{res['fast_haaqi_clip_s']:>12.3f}{res['fast_haaqi_clip_s'] / net:>14.1f}")
    if "pyclarity_haaqi_clip_s" in res:
        py = res["pyclarity_haaqi_clip_s"]
        print(f"{'HAAQI pyclarity':<26}{py:>12.3f}{py / net:>14.1f}")


if __name__ == "__main__":
    main()
