"""A vectorised HAAQI that reproduces pyclarity's ``haaqi_v1`` (the ``fast`` backend).

Same model, many times faster. The ear model (:mod:`.ear_model`) computes the
32 bands a few at a time for the reference and every processed signal
together: the recursive filters (control and compressed gammatone filters,
inner-hair-cell adaptation) run four chains per AVX2 register
(:mod:`.filters`' ``*_lanes`` kernels, :mod:`.simd`), the compression gain
and the dB conversion are vectorised loops with :mod:`.vmath`'s log/exp, the
per-band alignment searches only the +/-100 ms of lags it needs with float32
block FFTs and recomputes the near-best lags exactly in float64 (so the lag
is the float64 one: scores are bit-identical to a float64 search), the BM
covariance uses float32 lag products, computed along the vector lanes
(:func:`.filters._lag_sums`), and skips the tiles HAAQI gives no weight,
work whose result is never used is skipped (the alignment and adaptation of an envelope below threshold
throughout, the BM alignment of a band with no heard reference tile; same
bits), and :func:`score_many` computes the reference side (its filters, FFT
spectra, covariance segments and cepstral modulation spectra) once for many
processed signals and runs a band's lag searches' inverse FFTs as one batch.
The signal conditioning is our own too: ``resample_poly``'s filter as a
vectorised polyphase kernel, and the Chebyshev and middle-ear IIR filters in
numba with scipy's arithmetic (same bits as ``lfilter``). The per-band work
rows are kept for the next call of the same shape in the thread (fresh
memory costs a page fault per page on every call).

Agreement with pyclarity: with ``noise="numpy-legacy"`` within about 1e-8
(rounding only: the filters use fused multiply-adds, the BM covariance lags
are float32 dot products, ~1e-7 on a tile). With the default
``noise="fast"`` the threshold noise is a different random stream, so HAAQI
differs from pyclarity's as much as pyclarity differs from itself with
another seed: 1e-7..1e-5 on music clips of a few seconds, up to ~2e-4 on the
conformance battery's 0.5-1 s clips, and a standard deviation of ~4e-5 on
pyclarity's 0.5-s noise regression inputs.

Randomness and seeds: HAAQI adds Gaussian threshold noise to the
basilar-membrane motion, n draws per band for the reference and n per band
for the processed signal (n = samples after alignment). ``seed`` selects them
(see :mod:`.noise` for the exact construction); numpy's global state is
neither read nor changed.

* ``noise="fast"`` (default): ``seed`` is an int; band k of the reference
  draws from numpy's ``SFC64(SeedSequence(seed % 2**32, spawn_key=(0, k)))``
  bit stream, band k of a processed signal from ``spawn_key=(1, k)``, turned
  into normals by :mod:`.noise`'s own ziggurat. Equal seeds give
  bit-identical results; the draws are not pyclarity's, so a seed here does
  not correspond to ``np.random.seed(seed)`` in pyclarity: it corresponds to
  *some* seeding, statistically equivalent.
* ``noise="numpy-legacy"``: exactly pyclarity's draws after
  ``np.random.seed(seed % 2**32)`` (32*n reference draws, then 32*n processed
  draws, band k of the reference = draws k*n..(k+1)*n-1, band k of the
  processed signal = draws (32+k)*n..), made by an MT19937 + polar-method
  reimplementation (:class:`.noise.GaussStream`). ``seed`` may also be a
  ``np.random.RandomState``: the draws then start at its current state
  (copied, not advanced), which reproduces a pyclarity call made without
  re-seeding, e.g. pyclarity's own regression tests. About 15-20 % slower.

In :func:`score_many` every processed signal gets the draws it would get in
its own call, in both modes, and its filters the same arithmetic whichever
lanes it shares, so ``score_many(ref, [p1..pN])[i] == haaqi(ref, pi)``
exactly.

Inputs: reference and processed are 1-D float arrays of equal length at
``sample_rate_hz`` (any rate; like pyclarity, the rate is rounded to whole
kHz before resampling to 24 kHz, so 44.1 kHz is treated as 44 kHz).
"""

from __future__ import annotations

import math

import numpy as np

from benchmark.errors import AudioError, BenchError
from benchmark.haaqi import HaaqiScore
from benchmark.haaqi.fast import ear_model, features
from benchmark.haaqi.fast.noise import NOISE_MODES

# 2: fast threshold-noise stream by default
# 3: four-lane SIMD filters (explicit fused multiply-adds) and the fast noise's own ziggurat: same
#    model, results differ from 2 by rounding (legacy noise, ~1e-8) or by the noise draws ("fast")
# 4: the BM covariance in passes of seven lags, its float32 segments scaled by a product, not a division;
#    resampling by our own vectorised polyphase filter (resample_poly's filter, sums in another order);
#    rounding only: HAAQI moves by up to ~4e-10
# 5: the BM covariance's lag products run along the vector lanes (float32 sums in another order);
#    rounding only: HAAQI moves by up to ~1e-8 (7e-9 over 96 clips, ears and levels)
VERSION = "haaqi-bench-fast-5"

__all__ = ["VERSION", "haaqi", "score_many"]


def haaqi(*, reference: np.ndarray, processed: np.ndarray, sample_rate_hz: float,
          levels_db_hl, level1_db_spl: float, equalisation: int,
          seed: int | np.random.RandomState, noise: str = "fast") -> HaaqiScore:
    """HAAQI of one ear, equal to pyclarity's ``haaqi_v1`` after ``np.random.seed(seed)``.

    Args:
        reference: float array, shape (n_samples,), full scale = 1.0.
        processed: float array, shape (n_samples,), same rate and length.
        sample_rate_hz: sample rate of both signals in Hz.
        levels_db_hl: shape (6,), dB HL at 250, 500, 1k, 2k, 4k and 6k Hz.
        level1_db_spl: dB SPL of a signal whose RMS is 1.0.
        equalisation: 1 = apply NAL-R to the reference here; 2 = it already has it.
        seed: seeds the threshold noise (see the module docstring).
        noise: ``"fast"`` (default) or ``"numpy-legacy"`` (pyclarity's exact draws).

    Raises:
        AudioError: empty, non-finite, silent, mismatched or too short signals.
    """
    return score_many(reference=reference, processed_list=[processed], sample_rate_hz=sample_rate_hz,
                      levels_db_hl=levels_db_hl, level1_db_spl=level1_db_spl,
                      equalisation=equalisation, seed=seed, noise=noise)[0]


def score_many(*, reference: np.ndarray, processed_list, sample_rate_hz: float, levels_db_hl,
               level1_db_spl: float, equalisation: int,
               seed: int | np.random.RandomState, noise: str = "fast") -> list[HaaqiScore]:
    """HAAQI of many processed signals against one reference, the reference side computed once.

    Each result equals :func:`haaqi` for that pair with the same ``seed``.
    Arguments are those of :func:`haaqi`; ``processed_list`` is a sequence of
    1-D arrays, each as long as the reference.
    """
    ref, procs, levels = _check(reference, processed_list, sample_rate_hz, levels_db_hl,
                                level1_db_spl, equalisation)
    _check_noise(noise, seed)
    level1 = float(level1_db_spl)
    ref24 = ear_model.to_24k(ref, sample_rate_hz)
    aligner = ear_model.BroadbandAligner(ref24)
    ref24 = aligner.prune(ref24)
    if ref24.size < 2 * ear_model.COV_SEGMENT:
        raise AudioError(f"reference has only {ref24.size} samples at 24 kHz above its silence "
                         f"threshold; HAAQI needs at least {2 * ear_model.COV_SEGMENT} (32 ms)")
    # middle-ear outputs, one row per signal (the reference first); intermediates freed on the way
    mids = np.empty((1 + len(procs), ref24.size))
    resampled = (ear_model.to_24k(p, sample_rate_hz) for p in procs)   # read a batch of FFTs at a time
    for i, aligned in enumerate(aligner.align_many(resampled)):
        mids[1 + i] = ear_model.middle_ear(aligned)
    del aligner
    if equalisation == 1:
        ref24 = ear_model.nalr(ref24, levels)
    mids[0] = ear_model.middle_ear(ref24)
    del ref24
    ear = ear_model.cochlea(levels)
    ref_out, proc_outs, ref_ms = ear_model.run(mids, ear, level1, seed, noise)
    ref_sl = ear_model.rms_to_sl(ref_out.mean_env, ref_out.mean_control, ear, level1)
    ref_cep = features.cepstral_reference(ref_out.smooth_db)
    return [_score(ref_out, out, ref_ms, ref_sl, ref_cep, ear, level1) for out in proc_outs]


def _score(ref_out, proc_out, ref_ms, ref_sl, ref_cep, ear, level1) -> HaaqiScore:
    cep_high = features.cepstral_high(ref_out.smooth_db, proc_out.smooth_db, reference=ref_cep)
    bm_sync5 = features.bm_sync(proc_out.covariance, ref_ms)
    proc_sl = ear_model.rms_to_sl(proc_out.mean_env, proc_out.mean_control, ear, level1)
    d_loud_std, d_norm_std = features.spectrum_stds(ref_sl, proc_sl)
    values = features.combine(cep_high, bm_sync5, d_loud_std, d_norm_std)
    haaqi_value, nonlinear, linear, d_loud, d_norm = values
    if not all(math.isfinite(v) for v in (*values, cep_high, bm_sync5)):
        raise AudioError("HAAQI is undefined here: no time-frequency tile of the reference is above "
                         "the auditory threshold (reference too quiet for this audiogram and level)")
    return HaaqiScore(float(haaqi_value), float(nonlinear), float(linear), float(cep_high),
                      float(bm_sync5), float(d_loud), float(d_norm))


def _check_noise(noise, seed):
    if noise not in NOISE_MODES:
        raise BenchError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
    if isinstance(seed, np.random.RandomState):
        if noise != "numpy-legacy":
            raise BenchError("a RandomState seed continues numpy's legacy stream; pass noise='numpy-legacy'")
    elif not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise BenchError(f"seed must be an int or (with noise='numpy-legacy') a RandomState, got {seed!r}")


def _check(reference, processed_list, sample_rate_hz, levels_db_hl, level1_db_spl, equalisation):
    """Validate the inputs at the boundary; raise AudioError/BenchError with a clear message."""
    if equalisation not in (1, 2):
        raise BenchError(f"equalisation must be 1 or 2, got {equalisation!r}")
    if not (isinstance(sample_rate_hz, (int, float, np.integer, np.floating))
            and math.isfinite(sample_rate_hz) and sample_rate_hz >= 500):
        raise AudioError(f"sample_rate_hz must be a finite rate of at least 500 Hz, got {sample_rate_hz!r}")
    levels = np.asarray(levels_db_hl, dtype=float)
    if levels.shape != (6,) or not np.all(np.isfinite(levels)):
        raise BenchError(f"levels_db_hl must be 6 finite values (250 Hz to 6 kHz), got {levels_db_hl!r}")
    if not math.isfinite(float(level1_db_spl)):
        raise BenchError(f"level1_db_spl must be finite, got {level1_db_spl!r}")
    if isinstance(processed_list, np.ndarray) and processed_list.ndim == 1:
        raise AudioError("processed_list must be a sequence of 1-D signals, got one 1-D array")
    ref = _signal("reference", reference)
    if not np.any(ref):
        raise AudioError("reference signal is all zeros; HAAQI is undefined for a silent reference")
    procs = []
    for i, p in enumerate(processed_list):
        proc = _signal(f"processed signal {i}", p)
        if proc.size != ref.size:
            raise AudioError(f"processed signal {i} has {proc.size} samples but the reference has "
                             f"{ref.size}; give signals of equal length")
        if not np.any(proc):
            raise AudioError(f"processed signal {i} is all zeros")
        procs.append(proc)
    if not procs:
        raise AudioError("processed_list is empty")
    return ref, procs, levels


def _signal(what: str, x) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise AudioError(f"HAAQI scores one ear at a time: {what} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise AudioError(f"{what} is empty")
    if not np.all(np.isfinite(arr)):
        raise AudioError(f"{what} contains NaN or infinite samples")
    return arr
