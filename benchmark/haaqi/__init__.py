"""HAAQI scoring with a choice of backend.

:func:`score` scores one ear: a reference and a processed signal, both 1-D,
at one sample rate, for one audiogram, with one calibration. Both signals are
first resampled to 24 kHz here (HAAQI's internal rate; pyclarity would
otherwise round 44.1 kHz to 44 kHz), then handed to the backend.

Backends:

* ``pyclarity``: ``clarity.evaluator.haaqi.haaqi_v1`` (the reference implementation).
* ``fast`` (default): the project's vectorised implementation
  (:mod:`benchmark.haaqi.fast`): the same model, about 20x faster per call
  and 45-50x when one reference is scored against many signals (10-s clips;
  ``python -m benchmark.perf.haaqi_speed`` measures it). Its threshold
  noise is its own seeded stream (independent per band), so scores differ
  from pyclarity's by about as much as pyclarity's differ between two seeds
  (max 1.8e-4 over the conformance battery); with ``noise="numpy-legacy"``
  it reproduces pyclarity's draws and scores to 1e-9.

:func:`score_many` scores many processed signals against one reference; the
``fast`` backend computes the reference side of the ear model once. Each
result equals what :func:`score` gives for that pair with the same seed.

Randomness: HAAQI adds threshold noise. Each call is seeded with ``seed``;
for the pyclarity backend this means ``np.random.seed(seed)`` right before
the call (pyclarity draws from numpy's global state), so equal seeds give
bit-identical scores.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, asdict
from functools import lru_cache

import numpy as np

from benchmark.audiogram import Audiogram
from benchmark.errors import AudioError, BenchError
from benchmark.registry_util import did_you_mean

#: HAAQI's internal sample rate in Hz.
HAAQI_RATE_HZ = 24000
#: The audiogram frequencies HAAQI uses, in Hz.
HAAQI_FREQUENCIES_HZ = (250, 500, 1000, 2000, 4000, 6000)

BACKENDS = {
    "pyclarity": "benchmark.haaqi.pyclarity_backend",
    "fast": "benchmark.haaqi.fast",
}
DEFAULT_BACKEND = "fast"


@dataclass(frozen=True)
class HaaqiScore:
    """One HAAQI result and its terms.

    Attributes:
        haaqi: the combined index, 0..1.
        nonlinear, linear: the two model terms.
        cep_high, bm_sync5, d_loud, d_norm: the features behind them.
    """

    haaqi: float
    nonlinear: float
    linear: float
    cep_high: float
    bm_sync5: float
    d_loud: float
    d_norm: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise BenchError(f"unknown HAAQI backend {name!r}{did_you_mean(name, BACKENDS)}; "
                         f"choose one of {', '.join(BACKENDS)}")
    return name


@lru_cache(maxsize=None)
def backend_module(name: str):
    """The module implementing backend ``name`` (imported on first use)."""
    check_backend(name)
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as exc:
        raise BenchError(f"HAAQI backend {name!r} is not available: {exc}") from None


def backend_version(name: str) -> str:
    """Version string recorded in every result row."""
    return backend_module(name).VERSION


def resample(signal: np.ndarray, sample_rate_hz: int, target_hz: int = HAAQI_RATE_HZ) -> np.ndarray:
    """Polyphase resampling along the last axis (scipy ``resample_poly``), float64."""
    from scipy.signal import resample_poly

    x = np.asarray(signal, dtype=np.float64)
    if int(sample_rate_hz) == target_hz:
        return x
    g = math.gcd(int(sample_rate_hz), int(target_hz))
    return resample_poly(x, target_hz // g, int(sample_rate_hz) // g, axis=-1)


def check_pair(reference: np.ndarray, processed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a 1-D reference/processed pair; raise a clear :class:`AudioError`."""
    ref = np.asarray(reference, dtype=np.float64)
    proc = np.asarray(processed, dtype=np.float64)
    for what, x in (("reference", ref), ("processed", proc)):
        if x.ndim != 1:
            raise AudioError(f"HAAQI scores one ear at a time: {what} must be 1-D, got shape {x.shape}")
        if x.size == 0:
            raise AudioError(f"{what} signal is empty")
        if not np.all(np.isfinite(x)):
            raise AudioError(f"{what} signal contains NaN or infinite samples")
    if not np.any(ref):
        raise AudioError("reference signal is all zeros; HAAQI is undefined for a silent reference")
    if not np.any(proc):
        raise AudioError("processed signal is all zeros")
    return ref, proc


def haaqi_levels_db_hl(audiogram: Audiogram) -> np.ndarray:
    """The audiogram at HAAQI's 6 frequencies (log-frequency interpolation, flat ends)."""
    return audiogram.at(HAAQI_FREQUENCIES_HZ)


def score(
    reference: np.ndarray,
    processed: np.ndarray,
    *,
    sample_rate_hz: int,
    audiogram: Audiogram,
    level1_db_spl: float,
    equalisation: int = 2,
    seed: int = 0,
    backend: str = DEFAULT_BACKEND,
) -> HaaqiScore:
    """HAAQI of one ear.

    Args:
        reference: float array, shape (n_samples,), full scale = 1.0.
        processed: float array, shape (n_samples,), same rate as the reference.
        sample_rate_hz: sample rate of both signals in Hz.
        audiogram: the ear's audiogram.
        level1_db_spl: dB SPL of a signal with RMS 1.0 (see :mod:`benchmark.calibration`).
        equalisation: 1 = HAAQI applies NAL-R to the reference; 2 = the reference already has it.
        seed: seeds HAAQI's threshold noise.
        backend: "pyclarity" or "fast".
    """
    if equalisation not in (1, 2):
        raise BenchError(f"equalisation must be 1 or 2, got {equalisation!r}")
    ref, proc = check_pair(reference, processed)
    ref24 = resample(ref, sample_rate_hz)
    proc24 = resample(proc, sample_rate_hz)
    module = backend_module(check_backend(backend))
    result = module.haaqi(
        reference=ref24,
        processed=proc24,
        sample_rate_hz=HAAQI_RATE_HZ,
        levels_db_hl=haaqi_levels_db_hl(audiogram),
        level1_db_spl=float(level1_db_spl),
        equalisation=int(equalisation),
        seed=int(seed),
    )
    if not math.isfinite(result.haaqi):
        raise AudioError(f"HAAQI ({backend}) returned a non-finite score")
    return result


def score_many(
    reference: np.ndarray,
    processed_list: list[np.ndarray],
    *,
    sample_rate_hz: int,
    audiogram: Audiogram,
    level1_db_spl: float,
    equalisation: int = 2,
    seed: int = 0,
    backend: str = DEFAULT_BACKEND,
) -> list[HaaqiScore]:
    """HAAQI of many processed signals against one reference (one ear, one seed).

    Arguments as :func:`score`; ``processed_list`` holds 1-D arrays of the
    reference's length. Result ``i`` equals ``score(reference, processed_list[i], ...)``.
    """
    if equalisation not in (1, 2):
        raise BenchError(f"equalisation must be 1 or 2, got {equalisation!r}")
    if not processed_list:
        return []
    pairs = [check_pair(reference, p) for p in processed_list]
    ref24 = resample(pairs[0][0], sample_rate_hz)
    procs24 = [resample(p, sample_rate_hz) for _, p in pairs]
    module = backend_module(check_backend(backend))
    kwargs = dict(sample_rate_hz=HAAQI_RATE_HZ, levels_db_hl=haaqi_levels_db_hl(audiogram),
                  level1_db_spl=float(level1_db_spl), equalisation=int(equalisation), seed=int(seed))
    if hasattr(module, "score_many"):
        results = module.score_many(reference=ref24, processed_list=procs24, **kwargs)
    else:
        results = [module.haaqi(reference=ref24, processed=p, **kwargs) for p in procs24]
    for r in results:
        if not math.isfinite(r.haaqi):
            raise AudioError(f"HAAQI ({backend}) returned a non-finite score")
    return list(results)
