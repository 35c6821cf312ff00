"""HAAQI from pyclarity (``clarity.evaluator.haaqi.haaqi_v1``), the reference implementation."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np

from benchmark.haaqi import HAAQI_FREQUENCIES_HZ, HaaqiScore

VERSION = f"pyclarity-{version('pyclarity')}"


def haaqi(
    *,
    reference: np.ndarray,
    processed: np.ndarray,
    sample_rate_hz: int,
    levels_db_hl: np.ndarray,
    level1_db_spl: float,
    equalisation: int,
    seed: int,
) -> HaaqiScore:
    """pyclarity's ``haaqi_v1`` with numpy's global state seeded by ``seed`` first.

    Args:
        reference, processed: float64, shape (n_samples,), at ``sample_rate_hz``.
        levels_db_hl: shape (6,), dB HL at 250, 500, 1k, 2k, 4k, 6k Hz.
    """
    from clarity.evaluator.haaqi import haaqi_v1
    from clarity.utils.audiogram import Audiogram as ClarityAudiogram

    audiogram = ClarityAudiogram(levels=np.asarray(levels_db_hl, dtype=float),
                                 frequencies=np.array(HAAQI_FREQUENCIES_HZ))
    np.random.seed(seed % 2**32)
    combined, nonlinear, linear, raw = haaqi_v1(
        reference=reference,
        reference_freq=sample_rate_hz,
        processed=processed,
        processed_freq=sample_rate_hz,
        audiogram=audiogram,
        equalisation=equalisation,
        level1=level1_db_spl,
    )
    cep_high, bm_sync5, d_loud, d_norm = (float(v) for v in raw)
    return HaaqiScore(float(combined), float(nonlinear), float(linear), cep_high, bm_sync5,
                      d_loud, d_norm)
