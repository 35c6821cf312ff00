"""The fast HAAQI ear model: signal conditioning and the band-by-band cochlea.

The model is HAAQI's (Kates and Arehart; pyclarity ``eb.ear_model``):
resampling to 24 kHz, broadband alignment, optional NAL-R on the reference,
a middle-ear filter, 32 gammatone bands (80-8000 Hz) whose bandwidth follows
a wide control band's level, outer-hair-cell compression, per-band alignment
of the processed signal to the reference, dB SL conversion, inner-hair-cell
adaptation, threshold noise on the basilar-membrane (BM) motion, and a
group-delay correction across bands.

Layout: signals are float64, time last; the middle-ear outputs of the
reference and the processed signals are the rows of one (1 + n_processed, n)
array, and per-band results are (32, n_segments). :func:`run` computes a few
bands per pass (:func:`bands_per_pass`) for the reference and every
processed signal together: each (signal, band) pair is a filter chain with
four work rows of n samples, the recursive filters run four chains per
kernel call, and the reference side is computed once for many processed
signals. Memory stays O(n_samples) per signal and band in flight, with a
cap (:data:`WORK_BYTES`) on the work rows.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy.signal import butter, cheby2, firwin, oaconvolve

from benchmark import iir
from benchmark.haaqi.fast import filters
from benchmark.haaqi.fast.noise import band_noise

RATE_HZ = 24000
N_BANDS = 32
AUDIOGRAM_HZ = np.array([250.0, 500.0, 1000.0, 2000.0, 4000.0, 6000.0])
ENV_SEGMENT = 192          # 8-ms envelope smoothing segment at 24 kHz
COV_SEGMENT = 384          # 16-ms BM covariance segment
COV_MAXLAG = 24            # +/- 1 ms
ALIGN_LAGS = 2400          # +/- 100 ms search for the per-band alignment
LAG_TOLERANCE = 1e-5       # float32 lags this close to the best (x |ref| |out|) are recomputed exactly
MAX_EXACT_LAGS = 64        # more than this: one float64 FFT correlation instead of dot products
NALR_TAPS = 140
IHC_NOISE_DB = -10.0       # threshold noise, dB re auditory threshold
SILENCE_DB = 2.5           # HAAQI's silence threshold (dB SL; also on the reference BM RMS per tile)
WORK_BYTES = 256 * 2**20   # most memory for the per-band work arrays of one call
ALIGN_BATCH_BYTES = 32 * 2**20   # float32 rows of the processed signals in one batch of alignment FFTs


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

    The resampling is ``scipy.signal.resample_poly``'s (same filter; sums
    vectorised, so it differs by rounding). Above 24 kHz the RMS is matched
    within 21 kHz of bandwidth (7th-order Chebyshev II low-pass on both
    signals).
    """
    khz = int(np.round(sample_rate_hz / 1000.0))
    if khz == RATE_HZ // 1000:
        return x
    y = _resample(x, RATE_HZ // 1000, khz)
    if khz < RATE_HZ // 1000:
        return y * (_rms(x) / _rms(y))
    return y * (_rms(_lowpass_7(21.0 / khz, x)) / _rms(_lowpass_7(21.0 / (RATE_HZ // 1000), y)))


@functools.cache
def polyphase_taps(up: int, down: int) -> tuple[np.ndarray, int]:
    """``resample_poly``'s FIR for ``up/down`` (coprime) as :func:`.filters.polyphase_resample` rows.

    Returns (taps of shape (up, q), half_len): row p holds h[p + up*j]
    reversed and right-aligned, h = firwin(2*half_len + 1, 1/max(up, down),
    Kaiser beta 5) * up with half_len = 10*max(up, down), as scipy designs it.
    """
    half_len = 10 * max(up, down)
    h = firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up
    q = -(-h.size // up)
    taps = np.zeros((up, q))
    for p in range(up):
        phase = h[p::up]
        taps[p, q - phase.size:] = phase[::-1]
    taps.setflags(write=False)
    return taps, half_len


def _resample(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """``scipy.signal.resample_poly(x, up, down)`` for a 1-D float64 signal (to rounding)."""
    g = math.gcd(up, down)
    up, down = up // g, down // g
    taps, half_len = polyphase_taps(up, down)
    q = taps.shape[1]
    n_out = -(-x.size * up // down)
    padded = np.zeros(max(((n_out - 1) * down + half_len) // up + q, q - 1 + x.size))
    padded[q - 1:q - 1 + x.size] = x
    out = np.empty(n_out)
    filters.polyphase_resample(padded, taps, up, down, half_len, out)
    return out


def _lowpass_7(wn: float, x: np.ndarray) -> np.ndarray:
    """``lfilter`` of x by the 7th-order Chebyshev II low-pass at ``wn`` (x Nyquist), same bits."""
    out = np.empty_like(x)
    iir.lfilter_order8(*iir.pad_to_order8(*_design("cheby2", 7, wn)), x, out)
    return out


@functools.cache
def _design(kind: str, order: int, wn: float, btype: str = "low") -> tuple[np.ndarray, np.ndarray]:
    """IIR design (scipy), cached: (b, a) with a[0] = 1 (normalised as ``lfilter`` does), read-only."""
    b, a = cheby2(order, 30, wn, btype) if kind == "cheby2" else butter(order, wn, btype)
    if a[0] != 1.0:
        b, a = b / a[0], a / a[0]
    b.setflags(write=False)
    a.setflags(write=False)
    return b, a


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x)))


def exact_covariances(a: np.ndarray, b: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """``sum_t a[t] b[t + L]`` over the overlap for each lag L, in float64.

    Dot products for a few lags; for many (a nearly flat covariance) one
    full float64 FFT correlation instead, which bounds the cost at
    O(n log n) whatever the input.
    """
    out = np.empty(lags.size)
    if lags.size <= MAX_EXACT_LAGS:
        filters.lag_dots(a, b, lags, out)
        return out
    nfft = sfft.next_fast_len(a.size + b.size - 1, real=True)
    r = sfft.irfft(np.conjugate(sfft.rfft(a, nfft)) * sfft.rfft(b, nfft), nfft)
    return r[lags % nfft]


class BroadbandAligner:
    """Bulk delay of processed signals against one reference (full cross-covariance by FFT).

    As in :class:`LagSearch`, the covariance is formed in float32 and every
    lag whose |value| is within :data:`LAG_TOLERANCE` x the norms' product of
    the largest is recomputed exactly in float64, so the lag chosen is the
    float64 one (the first largest |covariance|, from the most negative lag).
    """

    def __init__(self, reference: np.ndarray):
        n = reference.size
        self.n = n
        self.nfft = sfft.next_fast_len(2 * n - 1, real=True)
        self._ref = reference - reference.mean()
        self._ref_norm = math.sqrt(np.einsum("i,i->", self._ref, self._ref))
        self._buf = np.zeros(self.nfft, dtype=np.float32)     # only [:n] is ever written
        self._buf[:n] = self._ref
        self.spec = sfft.rfft(self._buf)
        self.batch = max(1, ALIGN_BATCH_BYTES // (4 * self.nfft))    # signals per batch of FFTs (align_many)
        mag = np.abs(reference)
        above = np.flatnonzero(mag > 0.001 * mag.max())
        self.first, self.last = int(above[0]), int(above[-1])

    def align(self, processed: np.ndarray) -> np.ndarray:
        """The processed signal shifted to the reference (less 2 ms) and pruned like the reference."""
        return self._align_batch([processed])[0]

    def align_many(self, processed):
        """:meth:`align` of each signal of an iterable, yielded in order.

        The FFTs run in batches of :attr:`batch` signals (up to :data:`ALIGN_BATCH_BYTES` of float32
        rows; 2.5x / 1.6x cheaper per forward / inverse transform than one by one, as scipy's FFT
        vectorises across rows). The input is read a batch at a time, so a generator of signals keeps
        at most one batch in memory. The lags found are the float64 ones either way.
        """
        signals = iter(processed)
        while chunk := list(itertools.islice(signals, self.batch)):
            yield from self._align_batch(chunk)

    def _align_batch(self, chunk: list) -> list[np.ndarray]:
        n, nfft = self.n, self.nfft
        rows = self._buf if len(chunk) == 1 else np.zeros((len(chunk), nfft), dtype=np.float32)
        rows = rows.reshape(len(chunk), nfft)
        centred = [p - p.mean() for p in chunk]
        norms = [math.sqrt(filters.to_float32(c, row[:n])) for c, row in zip(centred, rows)]
        spec = sfft.rfft(rows, axis=1)
        np.conjugate(spec, out=spec)
        spec *= self.spec
        return [self._shifted(p, self._delay(c, norm, r))
                for p, c, norm, r in zip(chunk, centred, norms, sfft.irfft(spec, nfft, axis=1))]

    def _delay(self, centred: np.ndarray, norm: float, r: np.ndarray) -> int:
        """The delay from one circular float32 cross-covariance ``r`` (length nfft)."""
        n, nfft = self.n, self.nfft
        # lags L = -(n-1)..n-1 (sum_i processed[i] reference[i + L]) are r[nfft-(n-1):] then r[:n]
        mag = np.abs(np.concatenate((r[nfft - (n - 1):], r[:n])))
        lags = np.flatnonzero(mag >= mag.max() - LAG_TOLERANCE * self._ref_norm * norm) - (n - 1)
        if lags.size > 1:
            exact = np.abs(exact_covariances(centred, self._ref, lags))
            lags = lags[np.flatnonzero(exact == exact.max())]
        return int(np.rint(-lags[0] - 2 * RATE_HZ / 1000.0))

    def _shifted(self, processed: np.ndarray, delay: int) -> np.ndarray:
        n = self.n
        first, last = self.first, self.last
        out = np.zeros(last + 1 - first)
        lo, hi = max(first, -delay), min(last + 1, n - delay)   # out[i] = processed[first + i + delay]
        if hi > lo:
            out[lo - first:hi - first] = processed[lo + delay:hi + delay]
        return out

    def prune(self, reference: np.ndarray) -> np.ndarray:
        return reference[self.first:self.last + 1]


def nalr(reference: np.ndarray, levels_db_hl: np.ndarray) -> np.ndarray:
    """NAL-R (140-tap FIR at 24 kHz, pyclarity's design), with its delay removed."""
    fir = _nalr_fir(tuple(float(v) for v in levels_db_hl))
    return oaconvolve(reference, fir)[NALR_TAPS:NALR_TAPS + reference.size]


@functools.lru_cache(maxsize=64)
def _nalr_fir(levels_db_hl: tuple) -> np.ndarray:
    from clarity.enhancer.nalr import NALR
    from clarity.utils.audiogram import Audiogram as ClarityAudiogram

    fir, _ = NALR(NALR_TAPS, RATE_HZ).build(
        ClarityAudiogram(levels=np.array(levels_db_hl), frequencies=AUDIOGRAM_HZ))
    fir = np.asarray(fir, dtype=float)
    fir.setflags(write=False)
    return fir


def middle_ear(x: np.ndarray) -> np.ndarray:
    """1-pole low-pass at 5 kHz, then 2-pole high-pass at 350 Hz (Butterworth), in one pass."""
    lb, la = _design("butter", 1, 5000 / (0.5 * RATE_HZ))
    hb, ha = _design("butter", 2, 350 / (0.5 * RATE_HZ), "high")
    out = np.empty_like(x)
    filters.middle_ear_filters(np.array([lb[0], lb[1], la[1]]), np.array([hb[0], hb[1], hb[2], ha[1], ha[2]]),
                               x, out)
    return out


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

    Two stages. First the whole lag range is correlated in float32: the
    reference is cut into blocks whose spectra are kept; a processed signal
    is correlated block by block (overlap-save) and the spectra are summed,
    so only the 2*lags needed lags are formed, with FFTs of ``nfft`` points
    (``scipy.fft``, single precision: about 2.5x faster than double). Then
    every lag whose float32 value is within :data:`LAG_TOLERANCE` x
    ||reference|| x ||output|| of the largest is a candidate. That tolerance
    is more than twice any float32 error (measured at <= 4e-7 of that
    product, which bounds every lag's correlation by Cauchy-Schwarz), so the
    float64 argmax is always a candidate: a single candidate is the answer,
    and several (13 % of searches on music; rarely more than 5) are
    recomputed exactly as float64 dot products and the best of them wins.
    So the result is the float64 argmax, not the float32 one.

    One object serves every band of a call: :meth:`load` takes the next
    reference band signal. The work arrays are allocated once and reused;
    searches of the same geometry may share one ``work`` object (its arrays
    are scratch; only :attr:`spec` and the loaded reference belong to the search).
    """

    def __init__(self, n: int, lags: int = ALIGN_LAGS, nfft: int = 20480, work: "LagSearch | None" = None):
        self.n = n
        self.lags = min(lags, n)
        span = 2 * self.lags
        if n + span <= nfft:
            nfft = sfft.next_fast_len(n + span, real=True)
        self.nfft = nfft
        self.block = nfft - span
        self.nblocks = -(-n // self.block)
        self.spec = None           # the loaded reference's block spectra (see load)
        self._ref = None           # the loaded reference (a view; see load)
        self._ref_norm = 0.0
        # lag of h[j] (the first is skipped when lags == n: the reference implementation has no lag -n)
        self._first_lag = -self.lags + (1 if self.lags == n else 0)
        if work is not None and (work.n, work.lags, work.nfft) == (n, self.lags, nfft):
            self._blocks, self._padded = work._blocks, work._padded
        else:
            self._blocks = np.zeros((self.nblocks, nfft), dtype=np.float32)
            self._padded = np.zeros(self.lags + self.nblocks * self.block + nfft, dtype=np.float32)

    def load(self, reference: np.ndarray) -> "LagSearch":
        """Make ``reference`` (shape (n,), float64) the signal searched against.

        It is kept by reference for the exact recomputation, not copied: leave it unchanged until the
        searches against it are done (:func:`run` loads a band's reference row and rewrites it only in a
        later pass).
        """
        squares = filters.fill_blocks(reference, self._blocks, self.block)   # no BLAS: no thread-dependent sums
        self.spec = sfft.rfft(self._blocks, axis=1)          # the blocks' spectra (spectra_mac conjugates them)
        self._ref = reference
        self._ref_norm = math.sqrt(squares)
        return self

    def delays(self, outputs) -> list[int]:
        """For each output, the advance d maximising sum_n ref[n] out[n + d], d in [-lags, lags-1] (ties:
        largest d). The outputs' inverse FFTs run as one batch (4x cheaper per transform than one by one)."""
        lags, block, nfft, first = self.lags, self.block, self.nfft, self._first_lag
        padded = self._padded
        # overlapping blocks of the padded output (the zero padding around it is never written)
        segs = np.lib.stride_tricks.as_strided(padded, shape=(self.nblocks, nfft), strides=(block * 4, 4),
                                               writeable=False)
        sums = np.empty((len(outputs), self.spec.shape[1]), dtype=np.complex64)
        norms = []
        for i, output in enumerate(outputs):
            norms.append(math.sqrt(filters.to_float32(output, padded[lags:lags + self.n])))
            filters.spectra_mac(self.spec, sfft.rfft(segs, axis=1), sums[i])
        found = []
        for output, h, norm in zip(outputs, sfft.irfft(sums, nfft, axis=1)[:, first + lags:2 * lags], norms):
            candidates = np.flatnonzero(h >= h.max() - LAG_TOLERANCE * self._ref_norm * norm) + first
            if candidates.size == 1:    # the float64 argmax is among the candidates: it is this one
                found.append(int(candidates[0]))
                continue
            exact = exact_covariances(self._ref, output, candidates)
            found.append(int(candidates[np.flatnonzero(exact == exact.max())[-1]]))
        return found


@dataclass
class BandOutputs:
    """Per-band results of one signal (processed ones also carry the BM covariance)."""

    smooth_db: np.ndarray         # (32, n_env_segments), envelope in dB SL, 8-ms segments
    mean_env: np.ndarray          # (32,) RMS of the gammatone envelope
    mean_control: np.ndarray      # (32,) RMS of the control envelope
    covariance: np.ndarray | None = None   # (32, n_cov_segments)


def _segments(n: int, seg: int) -> int:
    return int(1 + n // seg + (n - seg // 2) // seg)


def _lane_calls(chains: list) -> list[list]:
    """Split a list of filter tasks into groups of 4 lanes, padding the last by repeating its first task."""
    groups = [chains[i:i + filters.LANES] for i in range(0, len(chains), filters.LANES)]
    if groups and len(groups[-1]) < filters.LANES:
        groups[-1] = groups[-1] + [groups[-1][0]] * (filters.LANES - len(groups[-1]))
    return groups


_NO_ROWS = np.empty((1, 1))      # output argument of a kernel call that stores nothing


def reference_bandwidths(ref_mid: np.ndarray, ear_ref: Cochlea, level1: float) -> np.ndarray:
    """Level-adjusted bandwidths of the reference in every band (control path only), shape (32,).

    The 32 control filters run four bands at a time (mean squares only).
    """
    x = ref_mid.reshape(1, -1)
    rows = np.zeros(filters.LANES, dtype=np.int64)
    ms = np.empty(filters.LANES)
    bw = np.empty(N_BANDS)
    for group in _lane_calls(list(range(N_BANDS))):
        bands = np.array(group)
        filters.gammatone_envelope_lanes(x, rows, ear_ref.bandwidth_max[bands], ear_ref.centre_hz[bands],
                                         float(RATE_HZ), _NO_ROWS, _NO_ROWS, rows, False, ms)
        for j, k in enumerate(group):
            bw[k] = bandwidth_for_level(ms[j], ear_ref.bandwidth_min[k], ear_ref.bandwidth_max[k], level1)
    return bw



def bands_per_pass(n_signals: int, n: int, work_bytes: int = WORK_BYTES, most: int = 8) -> int:
    """Bands computed together: the fewest that fill whole 4-lane kernel calls, within ``work_bytes``.

    Every signal needs 4 work rows of n float64 per band in flight. Freshly
    allocated memory is not free (the OS zeroes every page on first touch),
    so no more bands than it takes for (bands x signals) to be a multiple of
    4 (2 bands for one processed signal, 1 for three); where that does not
    fit, as many as fit (at least 1).
    """
    per_band = 4 * 8 * n * n_signals
    fit = int(min(most, max(1, work_bytes // per_band)))
    for g in range(1, fit + 1):
        if (g * n_signals) % filters.LANES == 0:
            return g
    return fit


class _Workspace(threading.local):
    buffers: tuple | None = None


_WORKSPACE = _Workspace()


def _work_arrays(rows: int, n: int) -> tuple[np.ndarray, ...]:
    """The four (rows, n) float64 work arrays of :func:`run`: views of buffers kept for this thread's next call.

    A fresh allocation of this size is new memory from the OS, which faults
    and zeroes every page on its first write: with 8 processed 10-s signals
    that added 60-150 ms to every other call (when the allocator handed
    back fresh pages). The buffers grow to the largest call so far (at most
    :data:`WORK_BYTES` in all, or one band's rows where a band needs more)
    and serve every smaller one, whatever its length.
    """
    ws = _WORKSPACE
    size = rows * n
    if ws.buffers is None or ws.buffers[0].size < size:
        ws.buffers = None                            # free the old buffers first
        ws.buffers = tuple(np.empty(size) for _ in range(4))
    return tuple(b[:size].reshape(rows, n) for b in ws.buffers)


def run(mids: np.ndarray, ear: Cochlea, level1: float, seed: int | np.random.RandomState,
        noise: str = "fast", work_bytes: int = WORK_BYTES
        ) -> tuple[BandOutputs, list[BandOutputs], np.ndarray]:
    """Cochlear outputs of a reference and of processed signals aligned to it.

    Args:
        mids: (1 + n_processed, n) middle-ear outputs, the reference first.
        work_bytes: memory for the per-band work arrays; sets how many bands
            are computed together (:func:`bands_per_pass`).

    The bands are computed a few at a time. Per pass, every (signal, band)
    pair is one filter chain; the control filters, the compressed gammatone
    filters and the IHC adaptation of all chains run four chains per kernel
    call (:mod:`.filters`' ``*_lanes`` kernels), and the rest (compression
    gain, per-band alignment, dB conversion, smoothing, BM covariance) chain
    by chain. A chain's arithmetic does not depend on its lane or its
    neighbours, so a processed signal gets the same bits alone or in a batch.

    Work whose result HAAQI never uses is skipped, with the same outputs
    (:func:`_inaudible`, :func:`_heard_tiles`): a processed envelope that is
    below threshold throughout gives 0 dB SL after any shift, so its dB
    conversion and adaptation are zeros, and its alignment matters only to
    the BM output; a band where no reference tile is above HAAQI's silence
    level gives every BM covariance 0, so its BM alignment and BM output are
    not computed. The saving depends on the ear and the level. Of the 64
    per-band alignments of a processed signal (the costliest step), music
    for normal hearing at 55 dB SPL needs all 64; for a moderate loss at
    65 dB, 54 (with the project's unamplified reference, equalisation 2) or
    58 (NAL-R reference, equalisation 1); for a severe loss at 65 dB, 9.

    The threshold noise comes from :func:`.noise.band_noise` (``noise`` and
    ``seed`` as there), drawn band by band in order: every processed signal
    gets the same draws, those of a single call.

    Returns:
        (reference outputs, processed outputs, reference BM mean squares (32, n_cov)).
    """
    n_sig, n = mids.shape
    n_env, n_cov = _segments(n, ENV_SEGMENT), _segments(n, COV_SEGMENT)
    outs = [BandOutputs(np.empty((N_BANDS, n_env)), np.empty(N_BANDS), np.empty(N_BANDS),
                        np.empty((N_BANDS, n_cov)) if i else None) for i in range(n_sig)]
    ref_ms = np.empty((N_BANDS, n_cov))
    b, a = _design("butter", 1, 800 / (0.5 * RATE_HZ))
    lowpass = np.array([b[0], b[1], a[1]])
    fs = float(RATE_HZ)
    ref_bw = reference_bandwidths(mids[0], ear, level1)
    shifts = group_delay_shifts(ref_bw, ear.centre_hz)
    draws = band_noise(seed, n, noise)
    noise_gain = 10 ** ((IHC_NOISE_DB - level1) / 20)
    ref_noise, proc_noise = np.empty(n), np.empty(n)
    cov_windows = filters.covary_windows(COV_SEGMENT, COV_MAXLAG)

    per_pass = bands_per_pass(n_sig, n, work_bytes)
    rows = per_pass * n_sig
    # work rows, one per chain: gain -> dB before adaptation -> BM output; envelope; BM; adapted dB
    work, env, bm, db = _work_arrays(rows, n)
    peaks = np.empty((rows, -(-n // filters.GAIN_BLOCK)))
    env_search = LagSearch(n)
    bm_search = LagSearch(n, work=env_search)
    cov_segs = filters.covary_segments(n_cov, COV_SEGMENT, COV_MAXLAG)
    cov_power = np.empty(n_cov)
    lane_rows, lane_out = np.empty(filters.LANES, dtype=np.int64), np.empty(filters.LANES, dtype=np.int64)
    lane_bw, lane_cf, lane_ms = np.empty(filters.LANES), np.empty(filters.LANES), np.empty(filters.LANES)
    lane_peak = np.empty(filters.LANES)
    lane_shift = np.empty(filters.LANES, dtype=np.int64)

    def load_lanes(group):
        for j, (sig, k, r) in enumerate(group):
            lane_rows[j], lane_out[j], lane_cf[j], lane_shift[j] = sig, r, ear.centre_hz[k], shifts[k]

    for first in range(0, N_BANDS, per_pass):
        bands = range(first, min(first + per_pass, N_BANDS))
        # chain = (signal row in mids, band, work row)
        chains = [(sig, k, (k - first) * n_sig + sig) for k in bands for sig in range(n_sig)]
        bandwidth = {}
        for group in _lane_calls(chains):          # control filters
            load_lanes(group)
            lane_bw[:] = [ear.bandwidth_max[k] for _, k, _ in group]
            filters.gammatone_envelope_lanes(mids, lane_rows, lane_bw, lane_cf, fs, work, peaks, lane_out,
                                             True, lane_ms)
            for j, (sig, k, r) in enumerate(group):
                outs[sig].mean_control[k] = math.sqrt(lane_ms[j])
                bandwidth[r] = (ref_bw[k] if sig == 0 else
                                bandwidth_for_level(lane_ms[j], ear.bandwidth_min[k], ear.bandwidth_max[k],
                                                    level1))
        for sig, k, r in chains:                    # outer-hair-cell compression gain
            comp = np.array([level1, ear.attn_ohc_db[k], ear.low_knee_db[k], ear.ratio[k]])
            filters.compression_gain(work[r], peaks[r], comp)
        quiet = set()
        for group in _lane_calls(chains):          # compressed gammatone filters
            load_lanes(group)
            lane_bw[:] = [bandwidth[r] for _, _, r in group]
            filters.gammatone_compressed_lanes(mids, lane_rows, lane_bw, lane_cf, fs, work, lowpass,
                                               env, bm, lane_out, lane_ms, lane_peak)
            for j, (sig, k, r) in enumerate(group):
                outs[sig].mean_env[k] = math.sqrt(lane_ms[j])
                if _inaudible(lane_peak[j], level1, ear.attn_ihc_db[k]):
                    quiet.add(r)
        env_delay, bm_delay = np.zeros(rows, dtype=np.int64), np.zeros(rows, dtype=np.int64)
        loaded = -1                                 # the band whose reference envelope env_search holds

        def align_envelopes(k, rows):
            nonlocal loaded
            if loaded != k:
                env_search.load(env[(k - first) * n_sig])
                loaded = k
            env_delay[rows] = env_search.delays([env[r] for r in rows])

        for k in bands:                             # envelope alignment of the audible processed envelopes
            r0 = (k - first) * n_sig
            audible = [r for r in range(r0 + 1, r0 + n_sig) if r not in quiet]
            if audible:
                align_envelopes(k, audible)
        for sig, k, r in chains:                    # dB SL (of the aligned envelope)
            if r in quiet:
                db[r] = 0.0                         # what the adaptation makes of 0 dB SL throughout
            else:
                filters.ihc_db(env[r], env_delay[r], level1, ear.attn_ihc_db[k], work[r])
        for group in _lane_calls([c for c in chains if c[2] not in quiet]):   # IHC adaptation and group delay
            load_lanes(group)
            filters.ihc_adaptation_lanes(work, lane_out, lane_shift, fs, db, lane_out)
        for k in bands:                             # BM output, smoothing, covariance (noise in band order)
            r0 = (k - first) * n_sig
            draws.reference(k, ref_noise)
            filters.bm_output(bm[r0], 0, env[r0], 0, db[r0], ref_noise, noise_gain, int(shifts[k]), work[r0])
            filters.covary_reference(work[r0], cov_windows, COV_MAXLAG, cov_segs, cov_power, ref_ms[k])
            heard = _heard_tiles(ref_ms[k])
            if heard:
                draws.processed(k, proc_noise)      # the same draws for every processed signal
                quiet_rows = [r for r in range(r0 + 1, r0 + n_sig) if r in quiet]
                if quiet_rows:                      # their alignment still sets the BM output's gain
                    align_envelopes(k, quiet_rows)
                bm_search.load(bm[r0])
                bm_delay[r0 + 1:r0 + n_sig] = bm_search.delays([bm[r] for r in range(r0 + 1, r0 + n_sig)])
            else:
                draws.skip_processed(k)
            for sig in range(n_sig):
                r = r0 + sig
                if r in quiet:
                    outs[sig].smooth_db[k] = 0.0   # the smoothing of zeros
                else:
                    filters.env_smooth(db[r], ENV_SEGMENT, outs[sig].smooth_db[k])
                if not sig:
                    continue
                if not heard:
                    outs[sig].covariance[k] = 0.0
                    continue
                filters.bm_output(bm[r], bm_delay[r], env[r], env_delay[r], db[r], proc_noise, noise_gain,
                                  int(shifts[k]), work[r])
                filters.covary_processed(cov_segs, cov_power, ref_ms[k], SILENCE_DB, work[r],
                                         cov_windows, outs[sig].covariance[k])
    return outs[0], outs[1:], ref_ms


def _inaudible(peak: float, level1: float, attn_ihc_db: float, margin_db: float = 1e-6) -> bool:
    """Whether an envelope whose largest value is ``peak`` is below 0 dB SL throughout, after the IHC attenuation.

    :func:`.filters.ihc_db` floors such an envelope at 0 throughout, whatever
    its alignment shift (the samples shifted in are silence). ``margin_db``
    covers the rounding of the kernel's logarithm, so the answer never
    depends on it.
    """
    return level1 - attn_ihc_db + 20.0 * math.log10(peak + 1e-30) < -margin_db


def _heard_tiles(ms: np.ndarray) -> bool:
    """Whether any reference BM tile is above HAAQI's silence level (the test of :func:`.filters.covary_processed`)."""
    return bool(np.any(np.sqrt(ms) > SILENCE_DB))


def rms_to_sl(mean_env: np.ndarray, mean_control: np.ndarray, ear: Cochlea, level1: float) -> np.ndarray:
    """Long-term band levels in dB SL after compression and IHC attenuation, shape (32,)."""
    control_db = np.clip(level1 + 20 * np.log10(np.maximum(mean_control, 1e-30)), ear.low_knee_db, 100)
    gain = -ear.attn_ohc_db - (control_db - ear.low_knee_db) * (1 - 1 / ear.ratio)
    env_db = np.maximum(level1 + 20 * np.log10(np.maximum(mean_env, 1e-30)), 0)
    return np.maximum(env_db + gain - ear.attn_ihc_db, 0)
