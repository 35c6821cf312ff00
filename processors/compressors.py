"""Fast reimplementations of pyclarity's two compressors, for the CAD1 and CAD2 baselines.

* :func:`agc`: the slow AGC of ``clarity.enhancer.compressor.Compressor``
  (``process(signal)[0]``), used by :mod:`processors.nalr_agc`.
* :func:`multiband_compress`: ``clarity.enhancer.multiband_compressor.MultibandCompressor``
  (Linkwitz-Riley crossovers with all-pass phase matching, one feed-forward
  compressor per band, bands summed), used by :mod:`processors.camfit_wdrc`.

pyclarity runs their per-sample recursions in Python. Here the sample loops are
numba kernels; the maths is pyclarity's, step for step, and the outputs agree
with pyclarity's to about 1e-15 of the peak (``tests/processors/test_compressors.py``):

* The crossover filters are designed as pyclarity designs them (Butterworth
  squared through zeros/poles/gain; all-pass = low-pass + high-pass over a
  common denominator, order 8) and run as direct-form-II-transposed IIR
  filters with the arithmetic of ``scipy.signal.lfilter``, each band's in
  pyclarity's order, so the band signals are bit-identical to pyclarity's.
  (The order matters: the order-8 all-passes have clustered poles, and
  reordering the cascade changes the output by about 1e-10.)
* The gains differ from pyclarity's in the last bits only: the moving RMS of
  the AGC is a running sum (pyclarity convolves with a box), and band levels
  and gains use ``log`` and ``exp`` instead of ``log10`` and ``10 **``.

Every function takes one channel, a float array of shape (n_samples,) at full
scale 1.0, computes in float64 and returns float64 of the same shape.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
from numba import njit
from scipy.signal import butter, tf2zpk, zpk2tf

from benchmark.errors import BenchError
from benchmark.iir import lfilter_order8

#: Added to the AGC's mean square before the square root (pyclarity ``EPS``).
AGC_EPS = 1e-8
#: A zero band sample is replaced by this before its level is taken (pyclarity ``eps``).
ZERO_SAMPLE = 1e-12
#: Band levels are floored here, in dB re full scale (pyclarity).
FLOOR_DB = -120.0
_DB_TO_LN = math.log(10.0) / 20.0
_LN_TO_DB = 20.0 / math.log(10.0)


# -- AGC (clarity.enhancer.compressor.Compressor) ------------------------------------------------
def agc(signal: np.ndarray, *, sample_rate_hz: float, threshold: float, attenuation: float,
        attack_ms: float, release_ms: float, rms_window_s: float) -> np.ndarray:
    """pyclarity's AGC: a gain smoothed towards a target set by a moving RMS.

    For each sample the RMS over the last ``rms_window_s`` (zeros before the
    start) is compared with ``threshold``. Above it the gain moves towards
    ``threshold + attenuation * (rms - threshold)`` by ``1 / (attack_s * sample_rate_hz)``
    of the gap per sample; at or below it the gain moves towards 1 with the
    release time. The gain starts at 1 and multiplies the input.

    Args:
        signal: float array, shape (n_samples,), full scale = 1.0.
        sample_rate_hz: sample rate in Hz.
        threshold: RMS threshold, linear re full scale.
        attenuation: slope of the target gain above threshold.
        attack_ms: attack time in ms.
        release_ms: release time in ms.
        rms_window_s: RMS window in s; ``int(rms_window_s * sample_rate_hz)`` samples.

    Returns:
        float64 array, shape (n_samples,): pyclarity's ``Compressor(...).process(signal)[0]``
        with makeup gain 1.
    """
    x = _one_channel(signal)
    win_len = int(rms_window_s * sample_rate_hz)
    if win_len < 1 or not (attack_ms > 0 and release_ms > 0):
        raise BenchError(f"AGC: the RMS window ({rms_window_s:g} s) must hold a sample and the "
                         f"attack and release times ({attack_ms:g}, {release_ms:g} ms) be positive")
    # the per-sample smoothing steps, computed as pyclarity does
    attack = 1.0 / (attack_ms / 1000.0) / sample_rate_hz
    release = 1.0 / (release_ms / 1000.0) / sample_rate_hz
    return _agc_kernel(x, win_len, float(threshold), float(attenuation), attack, release)


@njit(cache=True)
def _agc_kernel(x, win_len, threshold, attenuation, attack, release):
    """The AGC's sample loop: moving RMS (running sum) and gain recursion, as pyclarity."""
    n = x.size
    out = np.empty(n)
    floor = (1.0 - attenuation) * threshold
    power = 0.0  # sum of squares over the window ending at sample i
    gain = 1.0
    since = 0
    for i in range(n):
        since += 1
        if since == win_len:  # re-add the window from scratch: no drift
            since = 0
            power = 0.0
            for j in range(i + 1 - win_len, i + 1):
                power += x[j] * x[j]
        else:
            power += x[i] * x[i]
            if i >= win_len:
                power -= x[i - win_len] * x[i - win_len]
        rms = math.sqrt(power / win_len + AGC_EPS)
        if rms > threshold:
            target = rms * attenuation + floor
            gain = gain * (1.0 - attack) + target * attack
        else:
            gain = release + gain * (1.0 - release)
        out[i] = x[i] * gain
    return out


# -- multiband compressor (clarity.enhancer.multiband_compressor) --------------------------------
def multiband_compress(signal: np.ndarray, *, sample_rate_hz: float,
                       crossover_frequencies_hz: Sequence[float],
                       attack_ms: float | Sequence[float], release_ms: float | Sequence[float],
                       threshold_db: float | Sequence[float], ratio: float | Sequence[float],
                       makeup_gain_db: float | Sequence[float],
                       knee_width_db: float | Sequence[float] = 0.0) -> np.ndarray:
    """pyclarity's ``MultibandCompressor``: crossover, one compressor per band, sum.

    Per band, the level ``20 log10 |x|`` (dB re full scale, floored at -120 dB) of
    each sample gives a gain reduction from the static curve (``threshold_db``,
    ``ratio``, soft knee ``knee_width_db``); it is smoothed by a one-pole filter
    whose coefficient ``exp(-1 / (attack_s * sample_rate_hz))`` (rising) or the
    release one (falling) is chosen per sample, and the band is multiplied by
    ``10 ** ((makeup_gain_db - smoothed) / 20)``. A zero band sample counts as 1e-12.

    Args:
        signal: float array, shape (n_samples,), full scale = 1.0.
        sample_rate_hz: sample rate in Hz.
        crossover_frequencies_hz: band edges in Hz, increasing; n_bands = len + 1.
        attack_ms, release_ms: time constants in ms, one value or one per band.
        threshold_db: threshold in dB re full scale, one value or one per band.
        ratio: compression ratio, one value or one per band.
        makeup_gain_db: gain in dB, one value or one per band.
        knee_width_db: soft-knee width in dB (0: hard knee), one value or one per band.

    Returns:
        float64 array, shape (n_samples,), delayed by the crossovers' group delay.
    """
    x = _one_channel(signal)
    cascades = crossover_filters(tuple(float(f) for f in crossover_frequencies_hz),
                                 float(sample_rate_hz))
    settings = _band_settings(len(cascades), float(sample_rate_hz), attack_ms=attack_ms,
                              release_ms=release_ms, threshold_db=threshold_db, ratio=ratio,
                              makeup_gain_db=makeup_gain_db, knee_width_db=knee_width_db)
    out = np.zeros_like(x)
    pair = [np.empty_like(x), np.empty_like(x)]
    reduction_db = np.empty_like(x)
    # two bands at a time (their filter recursions overlap in one loop); added in band order
    for first in range(0, len(cascades), 2):
        bands = list(range(first, min(first + 2, len(cascades))))
        buffers = pair[:len(bands)]
        _filter_bands([cascades[k] for k in bands], x, buffers)
        for k, band in zip(bands, buffers):
            band_settings = settings[k]
            _gain_reduction_db(band, *band_settings[:4], reduction_db)
            _smooth_and_add(band, reduction_db, *band_settings[4:], out)
    return out


@functools.lru_cache(maxsize=64)
def crossover_filters(crossover_frequencies_hz: tuple[float, ...], sample_rate_hz: float):
    """The IIR filters ``(b, a)`` of each band, in the order pyclarity applies them.

    Band ``k`` of ``n + 1`` (for ``n`` crossovers) is the 4th-order
    Linkwitz-Riley low-pass at crossover ``k`` (not for the top band), then the
    high-passes at crossovers ``0 .. k-1``, then the all-passes (low-pass +
    high-pass, order 8) at crossovers ``k+1 .. n-1``, which give every band the
    same phase (D'Appolito 1984). Coefficients are read-only and cached.
    """
    nyquist = sample_rate_hz / 2.0
    freqs = crossover_frequencies_hz
    if (not freqs or any(not 0.0 < f < nyquist for f in freqs)
            or any(hi <= lo for lo, hi in zip(freqs, freqs[1:]))):
        raise BenchError(f"crossover frequencies {list(freqs)} Hz must increase and lie "
                         f"between 0 and Nyquist ({nyquist:g} Hz)")
    low = [_linkwitz_riley(f / nyquist, "low") for f in freqs]
    high = [_linkwitz_riley(f / nyquist, "high") for f in freqs]
    allpass = [_parallel_sum(lo, hi) for lo, hi in zip(low, high)]
    for b, a in low + high + allpass:
        b.flags.writeable = a.flags.writeable = False
    return tuple(tuple(low[k:k + 1] + high[:k] + allpass[k + 1:]) for k in range(len(freqs) + 1))


def _linkwitz_riley(wn: float, btype: str) -> tuple[np.ndarray, np.ndarray]:
    """4th-order Linkwitz-Riley: a 2nd-order Butterworth (cutoff ``wn`` re Nyquist) squared."""
    zeros, poles, gain = tf2zpk(*butter(2, wn, btype=btype))
    b, a = zpk2tf(np.concatenate((zeros, zeros)), np.concatenate((poles, poles)), gain * gain)
    return np.ascontiguousarray(b, dtype=float), np.ascontiguousarray(a, dtype=float)


def _parallel_sum(first, second) -> tuple[np.ndarray, np.ndarray]:
    """``b / a`` of ``first + second`` (two filters in parallel), over the product of poles."""
    z1, p1, k1 = tf2zpk(*first)
    z2, p2, k2 = tf2zpk(*second)
    b = np.poly(np.concatenate((z1, p2))) * k1 + np.poly(np.concatenate((z2, p1))) * k2
    a = np.poly(np.concatenate((p1, p2)))
    return np.ascontiguousarray(b, dtype=float), np.ascontiguousarray(a, dtype=float)


def _filter_bands(cascades, x, buffers) -> None:
    """Filter ``x`` by each band's cascade into its buffer, pairing 4th-order stages of two bands.

    Each band still sees its own filters in its own order, so the result is the
    same as filtering the bands one after the other.
    """
    pending = [list(cascade) for cascade in cascades]
    inputs = [x] * len(buffers)
    while len(pending) == 2 and all(p and p[0][0].size == 5 for p in pending):
        (b1, a1), (b2, a2) = pending[0].pop(0), pending[1].pop(0)
        _iir4_pair(b1, a1, inputs[0], buffers[0], b2, a2, inputs[1], buffers[1])
        inputs = buffers
    for cascade, source, buffer in zip(pending, inputs, buffers):
        if source is not buffer:
            buffer[:] = source
        for b, a in cascade:
            if b.size == 5:
                _iir4_inplace(b, a, buffer)
            else:
                lfilter_order8(b, a, buffer, buffer)


def _band_settings(n_bands: int, sample_rate_hz: float, *, attack_ms, release_ms, threshold_db,
                   ratio, makeup_gain_db, knee_width_db) -> list[tuple[float, ...]]:
    """Per band, the arguments of :func:`_gain_reduction_db` (4) and :func:`_smooth_and_add` (4)."""
    values = {"attack_ms": attack_ms, "release_ms": release_ms, "threshold_db": threshold_db,
              "ratio": ratio, "makeup_gain_db": makeup_gain_db, "knee_width_db": knee_width_db}
    per_band = {}
    for name, value in values.items():
        v = (float(value),) * n_bands if np.ndim(value) == 0 else tuple(float(u) for u in value)
        if len(v) != n_bands or not all(math.isfinite(u) for u in v):
            raise BenchError(f"{name} needs one finite value or {n_bands} (one per band), "
                             f"got {value!r}")
        per_band[name] = v
    settings = []
    for k in range(n_bands):
        attack, release = per_band["attack_ms"][k], per_band["release_ms"][k]
        threshold, ratio = per_band["threshold_db"][k], per_band["ratio"][k]
        knee, makeup = per_band["knee_width_db"][k], per_band["makeup_gain_db"][k]
        if min(attack, release, ratio) <= 0 or knee < 0:
            raise BenchError(f"band {k}: attack_ms, release_ms and ratio must be positive and "
                             f"knee_width_db not negative (got {attack:g}, {release:g}, "
                             f"{ratio:g}, {knee:g})")
        # below `quiet` (magnitude) the gain reduction is exactly 0: no log is needed
        knee_start_db = threshold - knee / 2.0
        quiet = 10.0 ** (knee_start_db / 20.0) if knee_start_db > FLOOR_DB else 0.0
        settings.append((
            threshold, ratio, knee, quiet,
            float(np.exp(-1.0 / (0.001 * sample_rate_hz * attack))),  # as pyclarity
            float(np.exp(-1.0 / (0.001 * sample_rate_hz * release))),
            makeup, 10.0 ** (makeup / 20.0),
        ))
    return settings


@njit(cache=True)
def _gain_reduction_db(band, threshold, ratio, knee, quiet, reduction):
    """Static curve of pyclarity's ``compressor_qmul``: gain reduction in dB per sample."""
    for i in range(band.size):
        magnitude = abs(band[i]) if band[i] != 0.0 else ZERO_SAMPLE
        r = 0.0
        if not magnitude < quiet:
            level = max(math.log(magnitude) * _LN_TO_DB, FLOOR_DB)
            over = level - threshold
            if knee == 0.0:
                if not over < 0.0:
                    r = level - (threshold + over / ratio)
            elif 2.0 * abs(over) <= knee:
                d = over + knee / 2.0
                r = level - (level + ((1.0 / ratio - 1.0) * (d * d)) / (2.0 * knee))
            elif not 2.0 * over < -knee:
                r = level - (threshold + over / ratio)
        reduction[i] = r


@njit(cache=True)
def _smooth_and_add(band, reduction, alpha_attack, alpha_release, makeup_db, makeup_gain, out):
    """Smooth the gain reduction (attack/release one-pole), apply the gain, add to ``out``."""
    smoothed = 0.0
    for i in range(band.size):
        r = reduction[i]
        alpha = alpha_attack if r > smoothed else alpha_release
        smoothed = alpha * smoothed + (1.0 - alpha) * r
        v = band[i] if band[i] != 0.0 else ZERO_SAMPLE
        if smoothed == 0.0:
            out[i] += v * makeup_gain
        else:
            out[i] += v * math.exp((makeup_db - smoothed) * _DB_TO_LN)


@njit(cache=True)
def _iir4_pair(b1, a1, x1, y1, b2, a2, x2, y2):
    """``y1 = b1/a1 (x1)`` and ``y2 = b2/a2 (x2)``, 4th order, in one loop, as lfilter does.

    The outputs may be the inputs (in place).
    """
    p0, p1, p2, p3, p4 = b1[0], b1[1], b1[2], b1[3], b1[4]
    q1, q2, q3, q4 = a1[1], a1[2], a1[3], a1[4]
    r0, r1, r2, r3, r4 = b2[0], b2[1], b2[2], b2[3], b2[4]
    s1, s2, s3, s4 = a2[1], a2[2], a2[3], a2[4]
    u0 = u1 = u2 = u3 = w0 = w1 = w2 = w3 = 0.0
    for i in range(x1.size):
        x = x1[i]
        y = u0 + p0 * x
        u0 = u1 + x * p1 - y * q1
        u1 = u2 + x * p2 - y * q2
        u2 = u3 + x * p3 - y * q3
        u3 = x * p4 - y * q4
        y1[i] = y
        x = x2[i]
        y = w0 + r0 * x
        w0 = w1 + x * r1 - y * s1
        w1 = w2 + x * r2 - y * s2
        w2 = w3 + x * r3 - y * s3
        w3 = x * r4 - y * s4
        y2[i] = y


@njit(cache=True)
def _iir4_inplace(b, a, x):
    """Filter ``x`` in place with the 4th-order ``b / a`` (``a[0] == 1``), as lfilter does."""
    b0, b1, b2, b3, b4 = b[0], b[1], b[2], b[3], b[4]
    a1, a2, a3, a4 = a[1], a[2], a[3], a[4]
    z0 = z1 = z2 = z3 = 0.0
    for i in range(x.size):
        xi = x[i]
        y = z0 + b0 * xi
        z0 = z1 + xi * b1 - y * a1
        z1 = z2 + xi * b2 - y * a2
        z2 = z3 + xi * b3 - y * a3
        z3 = xi * b4 - y * a4
        x[i] = y


def _one_channel(signal: np.ndarray) -> np.ndarray:
    x = np.asarray(signal)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise BenchError(f"expected one channel, a float array of shape (n_samples,); "
                         f"got {x.dtype} of shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float64)
