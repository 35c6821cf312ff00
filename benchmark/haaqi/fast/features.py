"""HAAQI features from the ear-model outputs, and the final combination.

* ``cep_high``: cepstral correlation of the smoothed dB-SL envelopes after an
  8-band modulation filterbank, averaged over the four highest modulation
  bands (20-125 Hz) and cepstral coefficients 2-6.
* ``bm_sync5``: time-frequency average of the BM segment cross-covariance,
  weighted for the loss of inner-hair-cell synchrony (5th-order low-pass at
  2.5 kHz).
* ``d_loud`` / ``d_norm``: differences of the long-term loudness spectra.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from scipy.signal import firwin, oaconvolve

from benchmark.haaqi.fast.ear_model import SILENCE_DB, centre_frequencies

logger = logging.getLogger(__name__)

_MOD_EDGES_HZ = (4.0, 8.0, 12.5, 20.0, 32.0, 50.0, 80.0)


@functools.cache
def _modulation_filters(segment_ms: float = 8.0) -> tuple[np.ndarray, int]:
    """Linear-phase FIRs of the 8 modulation bands, shape (8, n_taps), and the filter order."""
    nyquist = 0.5 * 1000.0 / (0.5 * segment_ms)
    order = int(2 * np.floor(np.around(128 * (nyquist / 125)) / 2))
    edges = [e / nyquist for e in _MOD_EDGES_HZ]
    bank = [firwin(order + 1, edges[0], window="hann", pass_zero="lowpass")]
    bank += [firwin(order + 1, [lo, hi], window="hann", pass_zero="bandpass")
             for lo, hi in zip(edges[:-1], edges[1:])]
    bank.append(firwin(order + 1, edges[-1], window="hann", pass_zero="highpass"))
    bank = np.array(bank)
    bank.setflags(write=False)
    return bank, order


# cep_high averages modulation bands 5..8 and cepstral coefficients 2..6 only
_HIGH_BANDS = slice(4, 8)
_HIGH_COEFS = slice(1, None)


@dataclass(frozen=True)
class CepstralReference:
    """The reference side of :func:`cepstral_high`, computed once for many processed signals."""

    basis: np.ndarray        # (32, n_coef) cosine basis
    keep: np.ndarray         # segments above the silence threshold
    mods: np.ndarray         # (4, n_coef - 1, n_keep) mean-removed modulation-filtered cepstra
    power: np.ndarray        # (4, n_coef - 1) their sums of squares


def _high_modulations(basis: np.ndarray, smooth: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Cepstral coefficients 2.. of the kept segments through modulation bands 5..8, mean removed."""
    ceps = basis.T @ smooth[:, keep]                                   # (n_coef, n_keep)
    ceps = ceps - ceps.mean(axis=1, keepdims=True)
    bank, order = _modulation_filters()
    n = keep.size
    half = order // 2
    mods = oaconvolve(bank[_HIGH_BANDS, None, :], ceps[None, _HIGH_COEFS, :], axes=-1)[:, :, half:half + n]
    return mods - mods.mean(axis=2, keepdims=True)


def cepstral_reference(ref_smooth: np.ndarray, n_coef: int = 6) -> CepstralReference | None:
    """Prepare the reference for :func:`cepstral_high`; None when fewer than 2 segments are above silence."""
    n_bands = ref_smooth.shape[0]
    basis = np.cos(np.outer(np.arange(n_bands), np.arange(n_coef)) * np.pi / (n_bands - 1))
    basis /= np.linalg.norm(basis, axis=0, keepdims=True)
    loudness = 20 * np.log10(np.sum(10 ** (ref_smooth / 20), axis=0) / n_bands)
    keep = np.flatnonzero(loudness > SILENCE_DB)
    if keep.size <= 1:
        return None
    mods = _high_modulations(basis, ref_smooth, keep)
    return CepstralReference(basis, keep, mods, (mods * mods).sum(2))


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time in this process, then at debug level: a labelling job
    meets thousands of quiet references (a profound loss at 45 dB SPL) and would bury everything else."""
    if message in _warned:
        logger.debug(message)
        return
    _warned.add(message)
    logger.warning(f"{message} (further cases in this process are logged at debug level)")


def cepstral_high(ref_smooth: np.ndarray, proc_smooth: np.ndarray, n_coef: int = 6,
                  reference: CepstralReference | None = None) -> float:
    """Mean |correlation| of cepstral coefficients 2..6 in modulation bands 5..8.

    Args:
        ref_smooth, proc_smooth: envelopes in dB SL, shape (32, n_segments), 8-ms segments.
        reference: :func:`cepstral_reference` of ``ref_smooth`` if already computed.

    Only the 4 x 5 (modulation band, coefficient) pairs that are averaged are
    filtered (the other bands and coefficient 1 do not enter cep_high).
    """
    if reference is None:
        reference = cepstral_reference(ref_smooth, n_coef)
    if reference is None:
        warn_once("reference below the silence threshold: cepstral correlation set to 0")
        return 0.0
    x = reference.mods
    y = _high_modulations(reference.basis, proc_smooth, reference.keep)
    sxx, syy, sxy = reference.power, (y * y).sum(2), (x * y).sum(2)
    ok = (sxx >= 1e-30) & (syy >= 1e-30)
    corr = np.zeros_like(sxx)
    corr[ok] = np.abs(sxy[ok]) / np.sqrt(sxx[ok] * syy[ok])
    return float(corr.sum() / (4 * (n_coef - 1)))


def spectrum_stds(ref_sl: np.ndarray, proc_sl: np.ndarray) -> tuple[float, float]:
    """Scaled std of the loudness-spectrum difference and of the normalised difference."""
    n = ref_sl.size
    r = 10 ** (ref_sl / 20)
    p = 10 ** (proc_sl / 20)
    r = r / r.sum()
    p = p / p.sum()
    return float(n * np.std(r - p)), float(n * np.std((r - p) / (r + p)))


def bm_sync(covariance: np.ndarray, ref_mean_square: np.ndarray, order: int = 5,
            cutoff_hz: float = 3500.0) -> float:
    """Average BM cross-covariance over loud tiles, weighted by IHC synchrony.

    Args:
        covariance, ref_mean_square: shape (32, n_segments).
    """
    cf = centre_frequencies(covariance.shape[0])
    fc2p = cutoff_hz ** (2 * order)
    weight_f = np.sqrt(fc2p / (fc2p + cf ** (2 * order)))
    rms = np.sqrt(ref_mean_square)
    loud = 20 * np.log10(np.sum(10 ** (rms / 20), axis=0) / covariance.shape[0])
    keep = np.flatnonzero(loud > SILENCE_DB)
    if keep.size <= 1:
        warn_once("reference below the silence threshold: BM covariance set to 0")
        return 0.0
    w = np.where(rms[:, keep] > SILENCE_DB, weight_f[:, None], 0.0)
    total = w.sum()
    if total == 0:
        return float("nan")
    return float((w * covariance[:, keep]).sum() / total)


def combine(cep_high: float, bm_sync5: float, d_loud_std: float, d_norm_std: float):
    """HAAQI's polynomial of the nonlinear and linear terms.

    Returns:
        (haaqi, nonlinear, linear, d_loud, d_norm).
    """
    d_loud = min(max(1.0 - d_loud_std / 2.5, 0.0), 1.0)
    d_norm = min(max(1.0 - d_norm_std / 25.0, 0.0), 1.0)
    nonlinear = 0.754 * cep_high ** 3 + 0.246 * bm_sync5
    linear = 0.329 * d_loud + 0.671 * d_norm
    haaqi = 0.336 * nonlinear + 0.001 * linear + 0.501 * nonlinear ** 2 + 0.161 * linear ** 2
    return haaqi, nonlinear, linear, d_loud, d_norm
