"""Teacher against distilled student, side by side in one run: parameters, FLOPs and CPU time per clip.

Usage::

    python -m benchmark.perf.haaqinet_distill_speed [--teacher default] [--student student] [--length 10]
                                                    [--repeats 30] [--threads 1] [--batch 16] [--json out.json]

For each model, on the same ``--length``-second music-like clip (one ear, moderate loss, 65 dB SPL):

* parameters (:func:`haaqinet.model.count_parameters`);
* FLOPs of one forward pass (:func:`haaqinet.distill.model_flops`: what
  ``torch.utils.flop_counter.FlopCounterMode`` counts, plus the LSTM and the FFT added analytically);
* CPU time of the model on the 16-kHz waveform (calibration, fixed features, network), batch 1, two ways
  for each model: the ``nn.Module`` forward (``model(x, a, s)``) and its fast inference form
  (:class:`haaqinet.fast.FastHAAQINet`, the same scores up to float32 rounding, which
  :class:`~haaqinet.predict.Predictor` runs). After a warm-up the four are timed *in turns* (teacher
  module, student module, teacher fast, student fast, teacher module, ...) ``--repeats`` times, so load
  changes on a shared machine hit all alike, and the medians are reported;
* the same per clip at ``--batch`` clips per forward pass, and through
  :class:`~haaqinet.predict.Predictor` from the 44.1-kHz clip (resampling to 16 kHz included, the cost a
  caller sees).

The ratios are student / teacher; "less time" is ``1 - ratio``. The ``best`` rows compare each model's
faster way (so far the fast form for both). Everything runs in one process with torch, numpy and numba
limited to ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmark.perf import save_json


def alternate(fns: dict, repeats: int, warmup: int = 3) -> dict:
    """Median seconds of each callable, timed in turns (a, b, a, b, ...) after ``warmup`` calls of each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="teacher", help="teacher checkpoint (path or name)")
    parser.add_argument("--student", default="student", help="student checkpoint (path or name)")
    parser.add_argument("--length", type=float, default=10.0, help="clip length in seconds")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch/numpy threads")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np
    import torch

    from benchmark.audiogram import STANDARD_FREQUENCIES_HZ, parse_audiogram
    from benchmark.perf import haaqi_speed as hs
    from haaqinet.distill import model_flops
    from haaqinet.fast import FastHAAQINet
    from haaqinet.model import count_parameters
    from haaqinet.predict import Predictor, resolve_checkpoint

    torch.set_num_threads(args.threads)
    paths = {"teacher": resolve_checkpoint(args.teacher), "student": resolve_checkpoint(args.student)}
    predictors = {k: Predictor(p) for k, p in paths.items()}
    models = {k: p.model for k, p in predictors.items()}
    fast = {k: FastHAAQINet(m) for k, m in models.items()}
    clip = hs.music(args.length)  # 44.1 kHz, (n,)
    audiogram = parse_audiogram("moderate")
    a = torch.as_tensor(np.asarray([audiogram.at(STANDARD_FREQUENCIES_HZ)], dtype=np.float32))
    (_, x16, spl), = predictors["teacher"].ears(clip, hs.RATE_HZ, 65.0)
    x = torch.as_tensor(x16[None, :])
    s = torch.tensor([spl], dtype=torch.float32)

    res = {"length_s": args.length, "threads": args.threads, "repeats": args.repeats, "batch": args.batch,
           "cpu_count": os.cpu_count(), "torch": torch.__version__,
           "checkpoints": {k: str(p) for k, p in paths.items()}}
    for k, m in models.items():
        res[k] = {"parameters": count_parameters(m), "flops": model_flops(m, args.length),
                  "frames_per_second": m.frontend.frames_per_second}

    def forward(m, *inputs):
        def run():
            with torch.inference_mode():
                m(*inputs)
        return run

    def end_to_end(p):
        def run():
            (_, y16, y_spl), = p.ears(clip, hs.RATE_HZ, 65.0)
            p.predict_signals([y16], [audiogram], [y_spl])
        return run

    clips = [hs.music(args.length, seed=i) for i in range(args.batch)]
    ears = [predictors["teacher"].ears(c, hs.RATE_HZ, 65.0)[0] for c in clips]
    xb = torch.as_tensor(np.stack([e[1] for e in ears]))
    ab = a.expand(len(ears), -1).contiguous()
    sb = torch.tensor([e[2] for e in ears], dtype=torch.float32)

    ways = {"module": models, "fast": fast}
    t = alternate({(k, w): forward(m[k], x, a, s) for w, m in ways.items() for k in models}, args.repeats)
    b = alternate({(k, w): forward(m[k], xb, ab, sb) for w, m in ways.items() for k in models},
                  max(3, args.repeats // 5), warmup=1)
    e = alternate({k: end_to_end(p) for k, p in predictors.items()}, max(5, args.repeats // 2))
    for k in models:
        res[k].update({"forward_clip_s": t[k, "module"], "fast_clip_s": t[k, "fast"],
                       "best_clip_s": min(t[k, "module"], t[k, "fast"]),
                       "batched_clip_s": b[k, "module"] / args.batch, "batched_fast_clip_s": b[k, "fast"] / args.batch,
                       "batched_best_clip_s": min(b[k, "module"], b[k, "fast"]) / args.batch,
                       "end_to_end_clip_s": e[k]})
    ratio = lambda key: res["student"][key] / res["teacher"][key]  # noqa: E731
    res["ratios"] = {"parameters": ratio("parameters"),
                     "flops": res["student"]["flops"]["total"] / res["teacher"]["flops"]["total"],
                     **{key: ratio(key) for key in ("forward_clip_s", "fast_clip_s", "best_clip_s", "batched_clip_s",
                                                    "batched_fast_clip_s", "batched_best_clip_s",
                                                    "end_to_end_clip_s")}}
    _print(res)
    save_json(res, args.json)
    return res


def _print(res: dict) -> None:
    t, s, r = res["teacher"], res["student"], res["ratios"]
    print(f"{res['length_s']:g}-s clip, {res['threads']} thread(s), {res['cpu_count']} CPUs, torch {res['torch']}, "
          f"{res['repeats']} alternating repeats (medians)")
    print(f"{'':<46}{'teacher':>14}{'student':>14}{'student/teacher':>17}{'reduction':>11}")

    def row(name, a, b, ratio, fmt):
        print(f"{name:<46}{fmt.format(a):>14}{fmt.format(b):>14}{ratio:>17.3f}{100 * (1 - ratio):>10.1f}%")

    row("parameters", t["parameters"], s["parameters"], r["parameters"], "{:,}")
    row("FLOPs per clip (M)", t["flops"]["total"] / 1e6, s["flops"]["total"] / 1e6, r["flops"], "{:.1f}")
    row("  of which counted by FlopCounterMode (M)", t["flops"]["counted"] / 1e6, s["flops"]["counted"] / 1e6,
        s["flops"]["counted"] / max(t["flops"]["counted"], 1), "{:.1f}")
    rows = (("ms per clip, module on 16 kHz (batch 1)", "forward_clip_s"),
            ("ms per clip, fast form on 16 kHz (batch 1)", "fast_clip_s"),
            ("ms per clip, best of the two (batch 1)", "best_clip_s"),
            (f"ms per clip, module, batch {res['batch']}", "batched_clip_s"),
            (f"ms per clip, fast form, batch {res['batch']}", "batched_fast_clip_s"),
            (f"ms per clip, best of the two, batch {res['batch']}", "batched_best_clip_s"),
            ("ms per clip, 44.1 kHz file path (batch 1)", "end_to_end_clip_s"))
    for name, key in rows:
        row(name, 1e3 * t[key], 1e3 * s[key], r[key], "{:.2f}")


if __name__ == "__main__":
    main()
