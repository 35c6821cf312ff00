"""Calibration: the one mapping between digital level and dB SPL.

haaqi-bench follows the Cadenza recipes. A trial presents the *clean, unaided
input excerpt* at the requested sound pressure level: its RMS (over both
channels, full scale = 1.0) is ``spl_db`` dB SPL. That fixes, per
(clip, SPL), the level in dB SPL of a digital signal whose RMS is 1.0::

    level1_db_spl = spl_db - 20 * log10(rms(clean_excerpt))

The input, the reference and the processed output of a trial share this one
calibration, so a processor's gain shows up as a change of level. HAAQI's
``level1`` argument is exactly ``level1_db_spl``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from benchmark.errors import AudioError, BenchError

#: Presentation levels accepted by the harness, in dB SPL.
SPL_RANGE_DB = (20.0, 110.0)

#: An excerpt quieter than this RMS (full scale = 1.0) counts as silent.
SILENCE_RMS = 1e-5


def rms(signal: np.ndarray) -> float:
    """Root-mean-square of all samples, full scale = 1.0."""
    x = np.asarray(signal, dtype=np.float64)
    if x.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(x))))


@dataclass(frozen=True)
class Calibration:
    """Digital-to-acoustic level mapping shared by every signal in a trial.

    Attributes:
        level1_db_spl: dB SPL of a digital signal with RMS 1.0 (HAAQI's ``level1``).
    """

    level1_db_spl: float

    def db_spl(self, signal: np.ndarray) -> float:
        """Level of ``signal`` in dB SPL (RMS over all samples)."""
        r = rms(signal)
        return -math.inf if r == 0 else self.level1_db_spl + 20.0 * math.log10(r)

    def digital_rms(self, db_spl: float) -> float:
        """Digital RMS (full scale = 1.0) that corresponds to ``db_spl``."""
        return 10.0 ** ((db_spl - self.level1_db_spl) / 20.0)


def check_spl(spl_db: float) -> float:
    """Validate a presentation level in dB SPL."""
    spl = float(spl_db)
    lo, hi = SPL_RANGE_DB
    if not math.isfinite(spl) or not lo <= spl <= hi:
        raise BenchError(f"SPL {spl_db!r} dB is out of range; use {lo:g} to {hi:g} dB SPL")
    return spl


def calibrate(clean_excerpt: np.ndarray, spl_db: float) -> Calibration:
    """The calibration that presents ``clean_excerpt`` at ``spl_db`` dB SPL (RMS).

    Args:
        clean_excerpt: float array, shape (n_channels, n_samples), full scale = 1.0.
        spl_db: presentation level of the excerpt's RMS in dB SPL.
    """
    spl = check_spl(spl_db)
    r = rms(clean_excerpt)
    if not math.isfinite(r) or r < SILENCE_RMS:
        raise AudioError(f"cannot calibrate a silent or non-finite excerpt (RMS {r:.3g})")
    return Calibration(level1_db_spl=spl - 20.0 * math.log10(r))
