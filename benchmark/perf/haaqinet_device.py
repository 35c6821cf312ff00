"""HAAQI-Net on an accelerator: the same scores as on the CPU, and the throughput of each.

Usage::

    python -m benchmark.perf.haaqinet_device [--device cuda] [--checkpoint default --checkpoint student ...]
                                             [--clips 64] [--length 10] [--batch 64] [--repeats 3] [--json out.json]

For each checkpoint (a path or a name; default: ``teacher``, ``student`` and ``default``, the ensemble) it
scores ``--clips`` music-like clips of ``--length`` seconds (44.1 kHz, seeded; the audiograms cycle through
the built-in set and the levels through 45-85 dB SPL) on the CPU and on ``--device``, with the same 16-kHz
inputs, and prints:

* the largest and the mean absolute difference between the two devices' scores (the same float32
  model on both: the differences are rounding, and a larger one is a bug);
* clips per second on each device, batched ``--batch`` clips per forward pass (the median of ``--repeats``
  passes over all clips after a warm-up), the CPU with all its cores as torch threads. Resampling to
  16 kHz is done once beforehand and is not timed.

It needs an accelerator that torch sees (``torch.cuda.is_available()`` for ``cuda``) and exits with a clear
message otherwise. The project does not need one: this script is for users and sessions that have one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from benchmark.perf import save_json

LEVELS_DB_SPL = (45.0, 55.0, 65.0, 75.0, 85.0)


def _inputs(splitter, n_clips: int, length_s: float):
    """(16-kHz signals, audiograms, levels) of ``n_clips`` seeded clips, through ``splitter.ears`` (a Predictor's
    resampling and level split, the same for every checkpoint)."""
    from benchmark.audiogram import builtin_audiograms
    from benchmark.perf import haaqi_speed as hs

    builtins = builtin_audiograms()
    names = sorted(builtins)
    signals, audiograms, levels = [], [], []
    for i in range(n_clips):
        spl = LEVELS_DB_SPL[i % len(LEVELS_DB_SPL)]
        (_, x16, level), = splitter.ears(hs.music(length_s, seed=i), hs.RATE_HZ, spl)
        signals.append(x16)
        audiograms.append(builtins[names[i % len(names)]])
        levels.append(level)
    return signals, audiograms, levels


def _throughput(predictor, inputs, repeats: int) -> tuple[np.ndarray, float]:
    """(scores, clips per second): the median time of ``repeats`` passes after one warm-up pass."""
    scores = predictor.predict_signals(*inputs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.predict_signals(*inputs)      # returns numpy: the device has finished
        times.append(time.perf_counter() - t0)
    return scores, len(inputs[0]) / statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="torch device to compare with the CPU [cuda]")
    parser.add_argument("--checkpoint", action="append", default=None,
                        help="a path or a name, repeatable [teacher, student, default]")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--length", type=float, default=10.0, help="clip length in seconds")
    parser.add_argument("--batch", type=int, default=64, help="clips per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    from haaqinet.predict import Predictor, resolve_checkpoint

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"no CUDA device is visible to torch {torch.__version__}: nothing to compare")
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    names = args.checkpoint or ["teacher", "student", "default"]
    on_cpu = {name: Predictor(resolve_checkpoint(name), device="cpu", batch_size=args.batch) for name in names}
    inputs = _inputs(on_cpu[names[0]], args.clips, args.length)
    res = {"device": args.device, "device_name": _device_name(args.device), "cpu_threads": threads,
           "torch": torch.__version__, "clips": args.clips, "length_s": args.length, "batch": args.batch,
           "checkpoints": {}}
    print(f"{args.clips} clips of {args.length:g} s; CPU: {threads} threads; {args.device}: {res['device_name']}; "
          f"batch {args.batch}; torch {torch.__version__}")
    print(f"{'checkpoint':<34}{'max |diff|':>12}{'mean |diff|':>13}{'CPU clips/s':>13}{'device clips/s':>16}"
          f"{'ratio':>8}")
    for name in names:
        path = resolve_checkpoint(name)
        on_dev = Predictor(path, device=args.device, batch_size=args.batch)
        cpu_scores, cpu_rate = _throughput(on_cpu[name], inputs, args.repeats)
        dev_scores, dev_rate = _throughput(on_dev, inputs, args.repeats)
        diff = np.abs(np.asarray(cpu_scores, float) - np.asarray(dev_scores, float))
        row = {"path": str(path), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
               "cpu_clips_per_s": cpu_rate, "device_clips_per_s": dev_rate}
        res["checkpoints"][name] = row
        print(f"{name:<34}{row['max_abs_diff']:>12.2e}{row['mean_abs_diff']:>13.2e}{cpu_rate:>13.1f}"
              f"{dev_rate:>16.1f}{dev_rate / cpu_rate:>8.1f}")
    save_json(res, args.json)
    return res


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return device


if __name__ == "__main__":
    main()
