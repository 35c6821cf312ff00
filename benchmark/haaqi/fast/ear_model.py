"""The fast HAAQI ear model: signal conditioning and the band-by-band cochlea.

The model is HAAQI's (Kates and Arehart; pyclarity ``eb.ear_model``):
resampling to 24 kHz, broadband alignment, optional NAL-R on the reference,
a middle-ear filter, 32 gammatone bands (80-8000 Hz) whose bandwidth follows
a wide control band's level, outer-hair-cell compression, per-band alignment
of the processed signal to the reference, dB SL conversion, inner-hair-cell
adaptation, threshold noise on the basilar-membrane (BM) motion, and a
group-delay correction across bands.

Layout: signals are float64, shape (n_samples,), time last; per-band results
are (32, n_segments). :func:`run` walks the bands one at a time for the
reference and every processed signal together, so memory stays O(n_samples)
per signal and the reference side is computed once for many processed
signals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy.signal import butter, cheby2, lfilter, oaconvolve, resample_poly

from benchmark.haaqi.fast import filters
from benchmark.haaqi.fast.noise import band_noise

RATE_HZ = 24000
N_BANDS = 32
AUDIOGRAM_HZ = np.array([250.0, 500.0, 1000.0, 2000.0, 4000.0, 6000.0])
ENV_SEGMENT = 192          # 8-ms envelope smoothing segment at 24 kHz
COV_SEGMENT = 384          # 16-ms BM covariance segment
COV_MAXLAG = 24            # +/- 1 ms
ALIGN_LAGS = 2400          # +/- 100 ms search for the per-band alignment
NALR_TAPS = 140
IHC_NOISE_DB = -10.0       # threshold noise, dB re auditory threshold


@dataclass(frozen=True)
class Cochlea:
    """Per-band parameters for one audiogram (arrays of shape (32,))."""

    centre_hz: np.ndarray
    attn_ohc_db: np.ndarray
    bandwidth_min: np.ndarray
    low_knee_db: np.ndarray
    ratio: np.ndarray
    attn_ihc_db: np.ndarray
    bandwidth_max: np.ndarray


def centre_frequencies(n_bands: int = N_BANDS, low_hz: float = 80.0, high_hz: float = 8000.0) -> np.ndarray:
    """ERB-spaced centre frequencies from ``low_hz`` to ``high_hz`` (Slaney's formula), ascending."""
    eq = 9.26449 * 24.7
    k = np.arange(n_bands - 1, 0, -1)
    inner = -eq + np.exp(k * (np.log(low_hz + eq) - np.log(high_hz + eq)) / (n_bands - 1)) * (high_hz + eq)
    return np.concatenate((inner, [high_hz]))


def cochlea(levels_db_hl: np.ndarray, centre_hz: np.ndarray | None = None) -> Cochlea:
    """Split the loss into outer (OHC) and inner (IHC) hair-cell parts per band."""
    cf = centre_frequencies() if centre_hz is None else centre_hz
    hl = np.asarray(levels_db_hl, dtype=float)

    def split(levels):
        loss = np.maximum(np.interp(cf, np.r_[cf[0], AUDIOGRAM_HZ, cf[-1]],
                                    np.r_[levels[0], levels, levels[-1]]), 0.0)
        ratio0 = 1.25 + 2.25 * np.arange(cf.size) / (cf.size - 1)
        ohc_limit = 1.25 * 70.0 * (1.0 - 1.0 / ratio0)
        over = loss >= ohc_limit
        attn_ohc = np.where(over, 0.8 * ohc_limit, 0.8 * loss)
        attn_ihc = np.where(over, 0.2 * ohc_limit + (loss - ohc_limit), 0.2 * loss)
        bandwidth = 1.0 + attn_ohc / 50.0 + 2.0 * (attn_ohc / 50.0) ** 6
        knee = attn_ohc + 30.0
        ratio = (100.0 - knee) / (30.0 + 70.0 / ratio0 + attn_ohc - knee)
        return attn_ohc, bandwidth, knee, ratio, attn_ihc

    attn_ohc, bw, knee, ratio, attn_ihc = split(hl)
    bw_max = split(np.full(6, 100.0))[1]
    return Cochlea(cf, attn_ohc, bw, knee, ratio, attn_ihc, bw_max)


def to_24k(x: np.ndarray, sample_rate_hz: float) -> np.ndarray:
    """Resample to 24 kHz as HAAQI does: the rate is rounded to whole kHz, then the RMS is matched.

    Above 24 kHz the RMS is matched within 21 kHz of bandwidth (7th-order
    Chebyshev II low-pass on both signals).
    """
    khz = int(np.round(sample_rate_hz / 1000.0))
    if khz == RATE_HZ // 1000:
        return x
    y = resample_poly(x, RATE_HZ // 1000, khz)
    if khz < RATE_HZ // 1000:
        return y * (_rms(x) / _rms(y))
    bx, ax = cheby2(7, 30, 21.0 / khz)
    by, ay = cheby2(7, 30, 21.0 / (RATE_HZ // 1000))
    return y * (_rms(lfilter(bx, ax, x)) / _rms(lfilter(by, ay, y)))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x)))


class BroadbandAligner:
    """Bulk delay of processed signals against one reference (full cross-covariance by FFT)."""

    def __init__(self, reference: np.ndarray):
        n = reference.size
        self.n = n
        self.nfft = sfft.next_fast_len(2 * n - 1, real=True)
        self.spec = sfft.rfft(reference - reference.mean(), self.nfft)
        mag = np.abs(reference)
        above = np.flatnonzero(mag > 0.001 * mag.max())
        self.first, self.last = int(above[0]), int(above[-1])

    def align(self, processed: np.ndarray) -> np.ndarray:
        """The processed signal shifted to the reference (less 2 ms) and pruned like the reference."""
        n = self.n
        r = sfft.irfft(self.spec * np.conj(sfft.rfft(processed - processed.mean(), self.nfft)), self.nfft)
        full = np.concatenate((r[self.nfft - (n - 1):], r[:n]))   # index m <-> lag m - (n-1)
        delay = int(np.rint((n - int(np.argmax(np.abs(full))) - 1) - 2 * RATE_HZ / 1000.0))
        shifted = _shift(processed, delay)
        return shifted[self.first:self.last + 1]

    def prune(self, reference: np.ndarray) -> np.ndarray:
        return reference[self.first:self.last + 1]


def _shift(x: np.ndarray, delay: int) -> np.ndarray:
    """Advance ``x`` by ``delay`` samples (delay < 0: postpone), zero-filled, same length."""
    out = np.zeros_like(x)
    n = x.size
    if delay >= 0:
        out[:n - delay] = x[delay:]
    else:
        out[-delay:] = x[:n + delay]
    return out


def nalr(reference: np.ndarray, levels_db_hl: np.ndarray) -> np.ndarray:
    """NAL-R (140-tap FIR at 24 kHz, pyclarity's design), with its delay removed."""
    from clarity.enhancer.nalr import NALR
    from clarity.utils.audiogram import Audiogram as ClarityAudiogram

    fir, _ = NALR(NALR_TAPS, RATE_HZ).build(
        ClarityAudiogram(levels=np.asarray(levels_db_hl, dtype=float), frequencies=AUDIOGRAM_HZ))
    return oaconvolve(reference, fir)[NALR_TAPS:NALR_TAPS + reference.size]


def middle_ear(x: np.ndarray) -> np.ndarray:
    """1-pole low-pass at 5 kHz, then 2-pole high-pass at 350 Hz (Butterworth)."""
    b, a = butter(1, 5000 / (0.5 * RATE_HZ))
    y = lfilter(b, a, x)
    b, a = butter(2, 350 / (0.5 * RATE_HZ), "high")
    return lfilter(b, a, y)


def bandwidth_for_level(mean_square: float, bw_min: float, bw_max: float, level1_db_spl: float) -> float:
    """Widen the band linearly from bw_min at 50 dB SPL to bw_max at 100 dB SPL."""
    level = 10.0 * math.log10(mean_square) + level1_db_spl if mean_square > 0 else -math.inf
    if level < 50:
        return bw_min
    if level > 100:
        return bw_max
    return bw_min + (level - 50) / 50 * (bw_max - bw_min)


def group_delay_shifts(bandwidths: np.ndarray, centre_hz: np.ndarray) -> np.ndarray:
    """Integer delays that give every band the group delay (at DC) of the slowest band."""
    erb = 24.7 + centre_hz / 9.26449
    a = np.exp(-2 * np.pi / RATE_HZ * 1.019 * bandwidths * erb)
    num = np.stack([np.ones_like(a), 4 * a, 4 * a * a], axis=1)
    den = np.stack([np.ones_like(a), -4 * a, 6 * a * a, -4 * a ** 3, a ** 4], axis=1)
    delay = (num @ np.arange(3)) / num.sum(1) - (den @ np.arange(5)) / den.sum(1)
    d = np.rint(delay).astype(int)
    d -= d.min()
    return d.max() - d


class LagSearch:
    """Peak of the cross-correlation with one band signal within +/- ``lags`` samples.

    The reference is cut into blocks whose spectra are kept; a processed signal
    is correlated block by block (overlap-save) and the spectra are summed, so
    only the 2*lags needed lags are formed, with FFTs of ``nfft`` points. The
    blocks are zero-padded here (scipy's ``n=`` padding is several times
    slower), and the processed signal's padded buffer is kept for the next
    call (score_many aligns many processed signals to the same reference band).
    """

    def __init__(self, reference: np.ndarray, lags: int = ALIGN_LAGS, nfft: int = 16384):
        n = reference.size
        self.n = n
        self.lags = min(lags, n)
        span = 2 * self.lags
        if n + span <= nfft:
            nfft = sfft.next_fast_len(n + span, real=True)
        self.nfft = nfft
        self.block = nfft - span
        self.nblocks = -(-n // self.block)
        blocks = np.zeros((self.nblocks, nfft))
        for b in range(self.nblocks):
            chunk = reference[b * self.block:(b + 1) * self.block]
            blocks[b, :chunk.size] = chunk
        self.spec = sfft.rfft(blocks, axis=1)
        np.conjugate(self.spec, out=self.spec)
        self._padded = None

    def delay(self, output: np.ndarray) -> int:
        """The advance d maximising sum_n ref[n] out[n + d], d in [-lags, lags-1] (ties: largest d)."""
        lags, block, nfft = self.lags, self.block, self.nfft
        if self._padded is None:
            self._padded = np.zeros(lags + self.nblocks * block + nfft)
        padded = self._padded
        padded[lags:lags + self.n] = output
        segs = np.lib.stride_tricks.as_strided(
            padded, shape=(self.nblocks, nfft), strides=(block * 8, 8), writeable=False)
        h = sfft.irfft(np.einsum("bf,bf->f", self.spec, sfft.rfft(segs, axis=1)), nfft)[:2 * lags]
        if lags == self.n:          # no lag of -n in the reference implementation
            h = h[1:]
        return lags - 1 - int(np.argmax(h[::-1]))


@dataclass
class BandOutputs:
    """Per-band results of one signal (processed ones also carry the BM covariance)."""

    smooth_db: np.ndarray         # (32, n_env_segments), envelope in dB SL, 8-ms segments
    mean_env: np.ndarray          # (32,) RMS of the gammatone envelope
    mean_control: np.ndarray      # (32,) RMS of the control envelope
    covariance: np.ndarray | None = None   # (32, n_cov_segments)


def _segments(n: int, seg: int) -> int:
    return int(1 + n // seg + (n - seg // 2) // seg)


class _Side:
    """Working arrays and per-band results for one signal."""

    def __init__(self, middle: np.ndarray, n_env: int, n_cov: int, with_cov: bool):
        n = middle.size
        self.mid = middle
        self.ctrl, self.env, self.bm = np.empty(n), np.empty(n), np.empty(n)
        self.db, self.bm_out, self.scratch = np.empty(n), np.empty(n), np.empty(n)
        self.noise = np.empty(n) if not with_cov else None
        self.out = BandOutputs(np.empty((N_BANDS, n_env)), np.empty(N_BANDS), np.empty(N_BANDS),
                               np.empty((N_BANDS, n_cov)) if with_cov else None)

    def cochlea_band(self, k, bandwidth, ear: Cochlea, level1, lowpass, control=None):
        if control is None:
            ms_ctrl = filters.gammatone_envelope(self.mid, ear.bandwidth_max[k], ear.centre_hz[k],
                                                 float(RATE_HZ), self.ctrl)
        else:
            self.ctrl[:] = control
            ms_ctrl = float(np.mean(control * control))
        if bandwidth is None:
            bandwidth = bandwidth_for_level(ms_ctrl, ear.bandwidth_min[k], ear.bandwidth_max[k], level1)
        comp = np.array([level1, ear.attn_ohc_db[k], ear.low_knee_db[k], ear.ratio[k], *lowpass])
        filters.compression_gain(self.ctrl, comp, self.scratch)
        ms_env = filters.gammatone_compressed(self.mid, bandwidth, ear.centre_hz[k], float(RATE_HZ),
                                              self.scratch, comp, self.env, self.bm)
        self.out.mean_env[k] = math.sqrt(ms_env)
        self.out.mean_control[k] = math.sqrt(ms_ctrl)
        return bandwidth

    def hair_cell_band(self, k, ear: Cochlea, level1, shift, noise: np.ndarray):
        params = np.array([level1, ear.attn_ihc_db[k], 10 ** ((IHC_NOISE_DB - level1) / 20), float(RATE_HZ)])
        filters.hair_cell(self.env, self.bm, params, int(shift), noise, self.scratch, self.db, self.bm_out)
        filters.env_smooth(self.db, ENV_SEGMENT, self.out.smooth_db[k])


def reference_bandwidths(ref_mid: np.ndarray, ear_ref: Cochlea, level1: float,
                         keep_bytes: int = 256 * 2**20) -> tuple[np.ndarray, np.ndarray | None]:
    """Level-adjusted bandwidths of the reference in every band (control path only).

    Returns:
        (bandwidths (32,), control envelopes (32, n) if they fit in ``keep_bytes``, else None).
    """
    n = ref_mid.size
    keep = np.empty((N_BANDS, n)) if N_BANDS * n * 8 <= keep_bytes else None
    ctrl = np.empty(n)
    bw = np.empty(N_BANDS)
    for k in range(N_BANDS):
        out = keep[k] if keep is not None else ctrl
        ms = filters.gammatone_envelope(ref_mid, ear_ref.bandwidth_max[k], ear_ref.centre_hz[k],
                                        float(RATE_HZ), out)
        bw[k] = bandwidth_for_level(ms, ear_ref.bandwidth_min[k], ear_ref.bandwidth_max[k], level1)
    return bw, keep


def run(ref_mid: np.ndarray, proc_mids: list[np.ndarray], ear: Cochlea, level1: float,
        seed: int | np.random.RandomState, noise: str = "fast"
        ) -> tuple[BandOutputs, list[BandOutputs], np.ndarray]:
    """Cochlear outputs of a reference and of processed signals aligned to it.

    The threshold noise comes from :func:`.noise.band_noise` (``noise`` and
    ``seed`` as there): every processed signal gets the same draws, those of
    a single call.

    Returns:
        (reference outputs, processed outputs, reference BM mean squares (32, n_cov)).
    """
    n = ref_mid.size
    n_env, n_cov = _segments(n, ENV_SEGMENT), _segments(n, COV_SEGMENT)
    ref = _Side(ref_mid, n_env, n_cov, False)
    procs = [_Side(m, n_env, n_cov, True) for m in proc_mids]
    ref_ms = np.empty((N_BANDS, n_cov))
    b, a = butter(1, 800 / (0.5 * RATE_HZ))
    lowpass = (b[0], b[1], a[1])
    ref_bw, ref_controls = reference_bandwidths(ref_mid, ear, level1)
    shifts = group_delay_shifts(ref_bw, ear.centre_hz)
    draws = band_noise(seed, n, noise)
    proc_noise = np.empty(n)
    for k in range(N_BANDS):
        ref.cochlea_band(k, ref_bw[k], ear, level1, lowpass,
                         None if ref_controls is None else ref_controls[k])
        env_search, bm_search = LagSearch(ref.env), LagSearch(ref.bm)
        ref.hair_cell_band(k, ear, level1, shifts[k], draws.reference(k, ref.noise))
        draws.processed(k, proc_noise)        # the same draws for every processed signal
        for p in procs:
            p.cochlea_band(k, None, ear, level1, lowpass)
            p.env[:] = _shift(p.env, env_search.delay(p.env))
            p.bm[:] = _shift(p.bm, bm_search.delay(p.bm))
            p.hair_cell_band(k, ear, level1, shifts[k], proc_noise)
            filters.bm_covary(ref.bm_out, p.bm_out, COV_SEGMENT, COV_MAXLAG, p.out.covariance[k], ref_ms[k])
    return ref.out, [p.out for p in procs], ref_ms


def rms_to_sl(mean_env: np.ndarray, mean_control: np.ndarray, ear: Cochlea, level1: float) -> np.ndarray:
    """Long-term band levels in dB SL after compression and IHC attenuation, shape (32,)."""
    control_db = np.clip(level1 + 20 * np.log10(np.maximum(mean_control, 1e-30)), ear.low_knee_db, 100)
    gain = -ear.attn_ohc_db - (control_db - ear.low_knee_db) * (1 - 1 / ear.ratio)
    env_db = np.maximum(level1 + 20 * np.log10(np.maximum(mean_env, 1e-30)), 0)
    return np.maximum(env_db + gain - ear.attn_ihc_db, 0)
