"""Scoring given reference/processed files with HAAQI (``bench haaqi``).

Pairs are scored exactly as given, as pyclarity's ``compute_haaqi`` does:
the reference's RMS (over all its channels) is presented at ``spl_db``, so
``level1 = spl_db - 20*log10(rms(reference))``, and the same ``level1``
applies to the processed file. A stereo pair is scored per ear (channel 0 =
left); a mono pair as one ear, ``"mono"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import haaqi
from benchmark.audio_io import read_audio
from benchmark.audiogram import Audiogram, parse_audiogram
from benchmark.calibration import calibrate
from benchmark.errors import AudioError, BenchError
from benchmark.sweep import seed_of

MANIFEST_COLUMNS = ("reference", "processed", "audiogram", "spl_db")


def score_pair(reference: str | Path, processed: str | Path, *, audiogram: Audiogram, spl_db: float,
               equalisation: int = 2, backend: str = haaqi.DEFAULT_BACKEND, seed: int | None = None
               ) -> list[dict]:
    """HAAQI per ear of a pair of files; one dict per ear."""
    ref, ref_rate = read_audio(reference)
    proc, proc_rate = read_audio(processed)
    if ref_rate != proc_rate:
        raise AudioError(f"sample rates differ: {reference} is {ref_rate} Hz, {processed} is {proc_rate} Hz")
    if ref.shape[0] != proc.shape[0]:
        raise AudioError(f"channel counts differ: {ref.shape[0]} vs {proc.shape[0]}")
    if ref.shape[0] > 2:
        raise AudioError(f"{reference}: {ref.shape[0]} channels; expected mono or stereo")
    calibration = calibrate(ref, spl_db)
    ears = ("mono",) if ref.shape[0] == 1 else ("left", "right")
    out = []
    for ch, ear in enumerate(ears):
        t0 = time.perf_counter()
        s = seed if seed is not None else seed_of("pair", Path(reference).name, Path(processed).name, ear)
        result = haaqi.score(ref[ch], proc[ch], sample_rate_hz=ref_rate, audiogram=audiogram,
                             level1_db_spl=calibration.level1_db_spl, equalisation=equalisation,
                             seed=s, backend=backend)
        out.append({"reference": str(reference), "processed": str(processed), "ear": ear,
                    "haaqi": result.haaqi, "seconds": time.perf_counter() - t0,
                    "backend": haaqi.backend_version(backend)})
    return out


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a pairs manifest CSV; relative paths resolve against its folder."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise BenchError(f"manifest not found: {path}") from None
    except Exception as exc:
        raise BenchError(f"cannot read manifest {path}: {exc}") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise BenchError(f"manifest {path} lacks column(s) {', '.join(missing)}; needs "
                         f"{', '.join(MANIFEST_COLUMNS)} and optionally equalisation")
    for col in ("reference", "processed"):
        df[col] = [str(p if Path(p).is_absolute() else path.parent / p) for p in df[col]]
    for i, row in df.iterrows():  # validate every row before any scoring
        parse_audiogram(row["audiogram"])
        try:
            float(row["spl_db"])
        except ValueError:
            raise BenchError(f"manifest row {i + 1}: spl_db {row['spl_db']!r} is not a number") from None
    return df


def _score_row(args) -> list[dict]:
    """Score one manifest row per ear; failures become an error entry (never a score)."""
    i, row, backend, default_equalisation = args
    eq_text = str(row.get("equalisation", "")).strip()
    base = dict(row)
    try:
        eq = int(eq_text) if eq_text else default_equalisation
        return [{**base, "row": i, "ear": r["ear"], "haaqi": r["haaqi"], "seconds": r["seconds"],
                 "backend": r["backend"], "status": "ok", "error": ""}
                for r in score_pair(row["reference"], row["processed"],
                                    audiogram=parse_audiogram(row["audiogram"]),
                                    spl_db=float(row["spl_db"]), equalisation=eq, backend=backend)]
    except (BenchError, ValueError) as exc:
        return [{**base, "row": i, "ear": "", "haaqi": np.nan, "seconds": np.nan,
                 "backend": backend, "status": "error", "error": str(exc)}]


def score_manifest(manifest: pd.DataFrame, *, backend: str = haaqi.DEFAULT_BACKEND,
                   default_equalisation: int = 2, workers: int = 0,
                   on_row: Callable[[], None] | None = None) -> pd.DataFrame:
    """Score every manifest row per ear, in the manifest's order.

    Args:
        workers: 0 scores in this process; N > 0 uses N worker processes (one thread each).
        on_row: called after each manifest row is scored (progress).
    """
    tasks = [(i, {k: row[k] for k in manifest.columns}, backend, default_equalisation)
             for i, row in manifest.iterrows()]
    results: list[list[dict]] = []
    if workers <= 0:
        for task in tasks:
            results.append(_score_row(task))
            if on_row:
                on_row()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from benchmark.executors import _init_worker

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            for rows in pool.map(_score_row, tasks):  # map keeps the manifest's order
                results.append(rows)
                if on_row:
                    on_row()
    return pd.DataFrame([r for rows in results for r in rows])
