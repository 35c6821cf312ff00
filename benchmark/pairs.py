"""Scoring given reference/processed files with HAAQI (``bench haaqi``).

Pairs are scored exactly as given, as pyclarity's ``compute_haaqi`` does:
the reference's RMS (over all its channels) is presented at ``spl_db``, so
``level1 = spl_db - 20*log10(rms(reference))``, and the same ``level1``
applies to the processed file. A stereo pair is scored per ear (channel 0 =
left); a mono pair as one ear, ``"mono"``.

A manifest's rows that share a reference, audiogram, level and equalisation
are scored with one batched call per ear (:func:`score_group`), the reference
side computed once, as a challenge's evaluation judges every system against
one reference. HAAQI's threshold noise is seeded by the reference's file name
and the ear, so all files judged against a reference share the noise draws
(common random numbers, as the processors of a ``bench run`` trial do) and a
file's score is the same alone, in a manifest, or in any batch.
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
#: Most processed files scored against one reference in one call (bounds the memory of a batch).
MAX_BATCH = 16


def score_pair(reference: str | Path, processed: str | Path, *, audiogram: Audiogram, spl_db: float,
               equalisation: int = 2, backend: str = haaqi.DEFAULT_BACKEND, seed: int | None = None
               ) -> list[dict]:
    """HAAQI per ear of a pair of files; one dict per ear."""
    result = score_group(reference, [processed], audiogram=audiogram, spl_db=spl_db,
                         equalisation=equalisation, backend=backend, seed=seed)[0]
    if isinstance(result, BenchError):
        raise result
    return result


def score_group(reference: str | Path, processed: list[str | Path], *, audiogram: Audiogram, spl_db: float,
                equalisation: int = 2, backend: str = haaqi.DEFAULT_BACKEND, seed: int | None = None
                ) -> list[list[dict] | BenchError]:
    """HAAQI per ear of several processed files against one reference, the reference side computed once.

    The reference is read once and every ear is scored with one
    :func:`benchmark.haaqi.score_many` call, which gives each file the score it
    gets alone; seeds as in the module docstring.

    Returns:
        Per processed file, in order: its rows (one dict per ear, ``seconds``
        being its share of the batched call), or the :class:`BenchError` it
        got (unreadable, mismatched or silent), which fails that file alone.

    Raises:
        BenchError: the reference cannot be read or calibrated.
    """
    ref, ref_rate = read_audio(reference)
    if ref.shape[0] > 2:
        raise AudioError(f"{reference}: {ref.shape[0]} channels; expected mono or stereo")
    calibration = calibrate(ref, spl_db)
    ears = ("mono",) if ref.shape[0] == 1 else ("left", "right")
    results: list[list[dict] | BenchError] = []
    signals = {}
    for i, path in enumerate(processed):
        try:
            proc = _matching(reference, ref, ref_rate, path)
            for ch in range(len(ears)):     # the usual failures here, so that they do not break up the batch
                haaqi.check_pair(ref[ch], proc[ch])
            signals[i] = proc
            results.append([])
        except BenchError as exc:
            results.append(exc)
    version = haaqi.backend_version(backend)
    for ch, ear in enumerate(ears):
        todo = [i for i in signals if not isinstance(results[i], BenchError)]
        if not todo:
            break
        s = seed if seed is not None else seed_of("pair", Path(reference).name, ear)
        t0 = time.perf_counter()
        scores = _score_each(ref[ch], [signals[i][ch] for i in todo], sample_rate_hz=ref_rate, audiogram=audiogram,
                             level1_db_spl=calibration.level1_db_spl, equalisation=equalisation, seed=s,
                             backend=backend)
        share = (time.perf_counter() - t0) / len(todo)
        for i, score in zip(todo, scores):
            if isinstance(score, BenchError):
                results[i] = score
            else:
                results[i].append({"reference": str(reference), "processed": str(processed[i]), "ear": ear,
                                   "haaqi": score.haaqi, "seconds": share, "backend": version})
    return results


def _score_each(reference: np.ndarray, processed: list[np.ndarray], **kwargs) -> list:
    """:func:`benchmark.haaqi.score_many`; if the batch fails, each signal alone, so only a failing one fails.

    Returns a score or the :class:`BenchError` per processed signal.
    """
    try:
        return haaqi.score_many(reference, processed, **kwargs)
    except BenchError as exc:
        if len(processed) == 1:
            return [exc]
    out = []
    for p in processed:
        try:
            out.append(haaqi.score_many(reference, [p], **kwargs)[0])
        except BenchError as exc:
            out.append(exc)
    return out


def _matching(reference, ref: np.ndarray, ref_rate: int, path) -> np.ndarray:
    """The processed file at ``path``, checked against the reference's rate, channels and length."""
    proc, proc_rate = read_audio(path)
    if ref_rate != proc_rate:
        raise AudioError(f"sample rates differ: {reference} is {ref_rate} Hz, {path} is {proc_rate} Hz")
    if ref.shape[0] != proc.shape[0]:
        raise AudioError(f"channel counts differ: {ref.shape[0]} vs {proc.shape[0]}")
    if ref.shape[1] != proc.shape[1]:
        raise AudioError(f"lengths differ: {reference} has {ref.shape[1]} samples, {path} {proc.shape[1]}")
    return proc


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


def _group_key(row: dict, default_equalisation: int) -> tuple:
    """Rows with the same key share one reference side: reference, audiogram, level and equalisation.

    Raises:
        ValueError: the row's equalisation is not a number.
    """
    eq_text = str(row.get("equalisation", "")).strip()
    return (row["reference"], str(row["audiogram"]).strip(), float(row["spl_db"]),
            int(eq_text) if eq_text else default_equalisation)


def _error_rows(i: int, row: dict, backend: str, exc: Exception) -> list[dict]:
    return [{**row, "row": i, "ear": "", "haaqi": np.nan, "seconds": np.nan,
             "backend": backend, "status": "error", "error": str(exc)}]


def _score_group_rows(args) -> list[tuple[int, list[dict]]]:
    """Score the manifest rows of one group; failures become error entries (never a score)."""
    rows, key, backend = args
    reference, audiogram, spl_db, eq = key
    try:
        results = score_group(reference, [row["processed"] for _, row in rows], audiogram=parse_audiogram(audiogram),
                              spl_db=spl_db, equalisation=eq, backend=backend)
    except BenchError as exc:
        return [(i, _error_rows(i, row, backend, exc)) for i, row in rows]
    return [(i, _error_rows(i, row, backend, res) if isinstance(res, BenchError) else
             [{**row, "row": i, "ear": r["ear"], "haaqi": r["haaqi"], "seconds": r["seconds"],
               "backend": r["backend"], "status": "ok", "error": ""} for r in res])
            for (i, row), res in zip(rows, results)]


def score_manifest(manifest: pd.DataFrame, *, backend: str = haaqi.DEFAULT_BACKEND,
                   default_equalisation: int = 2, workers: int = 0, max_batch: int = MAX_BATCH,
                   on_row: Callable[[], None] | None = None) -> pd.DataFrame:
    """Score every manifest row per ear; the output keeps the manifest's order.

    Rows that share a reference, audiogram, level and equalisation are scored
    together (:func:`score_group`, at most ``max_batch`` per call), so the
    reference side is computed once for them, as a challenge's evaluation
    scores every system against one reference. A row's score does not depend
    on the grouping.

    Args:
        workers: 0 scores in this process; N > 0 uses N worker processes (one thread each).
        on_row: called after each manifest row is scored (progress).
    """
    groups: dict[tuple, list] = {}
    results: dict[int, list[dict]] = {}

    def collect(scored):
        for i, rows in scored:
            results[i] = rows
            if on_row:
                on_row()

    for i, row in manifest.iterrows():
        row = {k: row[k] for k in manifest.columns}
        try:
            groups.setdefault(_group_key(row, default_equalisation), []).append((i, row))
        except ValueError as exc:      # an equalisation that is not a number
            collect([(i, _error_rows(i, row, backend, exc))])
    size = max_batch if workers <= 0 else min(max_batch, max(1, -(-len(manifest) // workers)))  # every worker busy
    tasks = [(rows[j:j + size], key, backend) for key, rows in groups.items() for j in range(0, len(rows), size)]
    if workers <= 0:
        for task in tasks:
            collect(_score_group_rows(task))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from benchmark.executors import _init_worker

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            for scored in pool.map(_score_group_rows, tasks):
                collect(scored)
    return pd.DataFrame([r for i in sorted(results) for r in results[i]])
