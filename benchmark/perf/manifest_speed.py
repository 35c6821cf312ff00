"""``bench haaqi --manifest`` speed: files judged against one reference batched, against one call per file.

Usage::

    python -m benchmark.perf.manifest_speed [--references 2] [--systems 8] [--length 10] [--repeats 3]

It writes a challenge-like manifest (every reference judged for ``--systems``
processed versions: noisy, clipped, attenuated; 44.1-kHz stereo files, ``N3``,
65 dB SPL) to a temporary folder and scores it in this process, one thread,
twice per round in alternating order: with ``max_batch=1`` (one fast-HAAQI
call per file and ear, the reference side recomputed every time) and with the
default batching (:func:`benchmark.pairs.score_manifest`). It prints the
median CPU and wall time per file of each and their ratio, and checks that
both give the same scores.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmark.perf import save_json  # noqa: E402
from benchmark.perf.haaqi_speed import RATE_HZ, music, processed_versions  # noqa: E402


def write_manifest(folder: Path, references: int, systems: int, length_s: float) -> Path:
    import soundfile as sf

    rows = []
    for r in range(references):
        left, right = music(length_s, seed=2 * r), music(length_s, seed=2 * r + 1)
        ref = folder / f"ref{r}.wav"
        sf.write(ref, np.stack([left, right], axis=1), RATE_HZ, subtype="FLOAT")
        for s, (pl, pr) in enumerate(zip(processed_versions(left, systems), processed_versions(right, systems))):
            proc = folder / f"ref{r}-system{s}.wav"
            sf.write(proc, np.stack([pl, pr], axis=1), RATE_HZ, subtype="FLOAT")
            rows.append({"reference": ref.name, "processed": proc.name, "audiogram": "N3", "spl_db": "65"})
    path = folder / "pairs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def main(argv: list[str] | None = None) -> None:
    from benchmark import pairs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--references", type=int, default=2)
    parser.add_argument("--systems", type=int, default=8, help="processed files per reference")
    parser.add_argument("--length", type=float, default=10.0, help="seconds per file")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (median)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        table = pairs.read_manifest(write_manifest(Path(tmp), args.references, args.systems, args.length))
        n = len(table)
        pairs.score_manifest(table.iloc[:1])          # compile / warm up
        runs: dict[str, list] = {"per_file": [], "batched": []}
        scores = {}
        for i in range(args.repeats):
            order = ("per_file", "batched") if i % 2 == 0 else ("batched", "per_file")
            for mode in order:
                c0, t0 = time.process_time(), time.perf_counter()
                scores[mode] = pairs.score_manifest(table, max_batch=1 if mode == "per_file" else pairs.MAX_BATCH)
                runs[mode].append((time.process_time() - c0, time.perf_counter() - t0))
    same = scores["per_file"]["haaqi"].tolist() == scores["batched"]["haaqi"].tolist()
    res = {"files": n, "references": args.references, "systems": args.systems, "length_s": args.length,
           "same_scores": same}
    for mode, times in runs.items():
        res[f"{mode}_cpu_s_per_file"] = statistics.median(c for c, _ in times) / n
        res[f"{mode}_wall_s_per_file"] = statistics.median(w for _, w in times) / n
    res["ratio_cpu"] = res["per_file_cpu_s_per_file"] / res["batched_cpu_s_per_file"]
    print(f"{n} files ({args.references} references x {args.systems} systems, {args.length:g} s, stereo, "
          f"44.1 kHz), median of {args.repeats}, one thread")
    for mode in runs:
        print(f"  {mode:9s} CPU {res[f'{mode}_cpu_s_per_file']:.3f} s per file "
              f"(wall {res[f'{mode}_wall_s_per_file']:.3f} s)")
    print(f"  batched is {res['ratio_cpu']:.2f}x faster (CPU time); same scores: {same}")
    save_json(res, args.json)


if __name__ == "__main__":
    main()
