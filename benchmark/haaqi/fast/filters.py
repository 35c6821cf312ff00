"""Numba kernels of the fast HAAQI ear model.

Signals are float64 arrays at 24 kHz, time last; kernels write into
preallocated outputs. Per-band work arrays are rows of 2-D arrays (one row
per signal of a band), so a call needs a few such rows per signal and band
being processed, never (32, n_samples) per signal.

The gammatone filter is the Cooke/Ma form: demodulate by the band centre
frequency (a rotating phasor, updated by multiplication), filter the real and
imaginary parts with the 4-pole IIR ``[1, 4a, 4a^2] / [1, -4a, 6a^2, -4a^3,
a^4]`` (direct form II transposed, as ``scipy.signal.lfilter``), and take the
magnitude (envelope) or the re-modulated real part (basilar-membrane motion).

The recursive filters (gammatone, inner-hair-cell adaptation) are
throughput-bound scalar chains, so they run four at a time: the ``*_lanes``
kernels step four independent filters (any mix of signals and bands) in the
four lanes of one AVX2 register (:mod:`.simd`). A lane's arithmetic is
explicit (IEEE operations, fused multiply-adds written out), so a filter's
output is the same bits in whichever lane and next to whichever filters it
runs. Element-wise passes (compression gain, dB conversion, BM output) are
plain loops that LLVM vectorises over samples.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from benchmark.haaqi.fast.simd import (vadd, vadd8, vfma, vfma8, vget, vload8, vmax, vmax0, vmul, vneg, vset, vsplat,
                                      vsplat8, vsqrt, vstore8, vsub, vzero8)
from benchmark.haaqi.fast.vmath import vexp, vlog


_LOG10_TO_DB = 20.0 / math.log(10.0)
_SMALL = 1e-30
_DB_TO_LN = math.log(10.0) / 20.0
LANES = 4
GAIN_BLOCK = 64          # samples per block of the control envelope's running peak
COV_LAGS = 56            # lag products per BM covariance segment: 7 vectors of 8 (HAAQI's +/- 1 ms needs 49)


@njit(cache=True)
def _coefficients(bandwidth, centre_hz, sample_rate_hz):
    """Gammatone IIR coefficients (a1..a5) and the gain for one band."""
    erb = 24.7 + centre_hz / 9.26449
    a = math.exp(-bandwidth * (2.0 * math.pi / sample_rate_hz) * erb * 1.019)
    a1 = 4.0 * a
    a2 = -6.0 * a * a
    a3 = 4.0 * a * a * a
    a4 = -a * a * a * a
    a5 = 4.0 * a * a
    gain = 2.0 * (1.0 - a1 - a2 - a3 - a4) / (1.0 + a1 + a5)
    return a1, a2, a3, a4, a5, gain


@njit(cache=True)
def _lane_coefficients(bandwidth, centre_hz, sample_rate_hz):
    """(4, 8) array: per lane a1..a5, gain, cos and sin of the phasor step."""
    out = np.empty((LANES, 8))
    for j in range(LANES):
        a1, a2, a3, a4, a5, g = _coefficients(bandwidth[j], centre_hz[j], sample_rate_hz)
        step = 2.0 * math.pi / sample_rate_hz * centre_hz[j]
        out[j, 0], out[j, 1], out[j, 2], out[j, 3], out[j, 4], out[j, 5] = a1, a2, a3, a4, a5, g
        out[j, 6] = math.cos(step)
        out[j, 7] = math.sin(step)
    return out


@njit(cache=True, inline="always")
def _column(m, i):
    return vset(m[0, i], m[1, i], m[2, i], m[3, i])


@njit(cache=True, inline="always")
def _lane_vectors(co):
    """The columns of :func:`_lane_coefficients` as lane vectors: a1..a5, gain, cos and sin of the step."""
    return (_column(co, 0), _column(co, 1), _column(co, 2), _column(co, 3), _column(co, 4),
            _column(co, 5), _column(co, 6), _column(co, 7))


@njit(cache=True, inline="always")
def _gammatone_step(x, z0, z1, z2, z3, a1, a2, a3, a4, a5):
    """One sample of the 4th-order gammatone recursion on one (real or imaginary) demodulated part.

    Returns the output and the new state (z0..z3); four lanes at once.
    """
    y = vadd(x, z0)
    return (y, vfma(a1, y, vfma(a1, x, z1)), vfma(a2, y, vfma(a5, x, z2)), vfma(a3, y, z3), vmul(a4, y))


@njit(cache=True, inline="always")
def _store_lanes(out, o0, o1, o2, o3, i, v):
    """out[o_j, i] = lane j of v, for the four lanes."""
    out[o0, i] = vget(v, 0)
    out[o1, i] = vget(v, 1)
    out[o2, i] = vget(v, 2)
    out[o3, i] = vget(v, 3)


@njit(cache=True)
def gammatone_envelope_lanes(x, rows, bandwidth, centre_hz, sample_rate_hz, env, peak, out_rows, store, ms):
    """Envelopes of four gammatone filters at once (the control path).

    Lane j filters ``x[rows[j]]`` with ``bandwidth[j]`` (ERB multiples) at
    ``centre_hz[j]``. Lanes may repeat (a duplicate lane does the same work and
    writes the same values).

    Args:
        x: (n_signals, n) inputs.
        rows, out_rows: int arrays of 4, input and output row of each lane.
        bandwidth, centre_hz: float arrays of 4.
        env: (n_rows, n) output, written at ``env[out_rows[j]]`` if ``store``.
        peak: (n_rows, ceil(n / GAIN_BLOCK)) output if ``store``: the envelope's
            maximum in each block of GAIN_BLOCK samples (for :func:`compression_gain`).
        ms: float array of 4, the mean square of each lane's envelope.
    """
    a1, a2, a3, a4, a5, g, cs, sn = _lane_vectors(_lane_coefficients(bandwidth, centre_hz, sample_rate_hz))
    r0, r1, r2, r3 = rows[0], rows[1], rows[2], rows[3]
    o0, o1, o2, o3 = out_rows[0], out_rows[1], out_rows[2], out_rows[3]
    n_samples = x.shape[1]
    zero = vsplat(0.0)
    c = vsplat(1.0)
    s = zero
    zr0 = zr1 = zr2 = zr3 = zero
    zi0 = zi1 = zi2 = zi3 = zero
    total = zero
    top = zero
    for n in range(n_samples):
        if n > 0:
            c, s = vfma(s, sn, vmul(c, cs)), vfma(s, cs, vneg(vmul(c, sn)))
        xv = vset(x[r0, n], x[r1, n], x[r2, n], x[r3, n])
        yr, zr0, zr1, zr2, zr3 = _gammatone_step(vmul(xv, c), zr0, zr1, zr2, zr3, a1, a2, a3, a4, a5)
        yi, zi0, zi1, zi2, zi3 = _gammatone_step(vmul(xv, s), zi0, zi1, zi2, zi3, a1, a2, a3, a4, a5)
        e = vmul(g, vsqrt(vfma(yr, yr, vmul(yi, yi))))
        total = vfma(e, e, total)
        if store:
            _store_lanes(env, o0, o1, o2, o3, n, e)
            top = vmax(top, e)
            if n % GAIN_BLOCK == GAIN_BLOCK - 1 or n == n_samples - 1:
                b = n // GAIN_BLOCK
                _store_lanes(peak, o0, o1, o2, o3, b, top)
                top = zero
    for j in range(LANES):
        ms[j] = vget(total, j) / n_samples


@njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def _gain_block(x, lo_lin, hi_lin, offset, scale):
    for n in range(x.size):
        c = min(max(x[n], lo_lin), hi_lin)
        x[n] = vexp(offset + scale * vlog(c))


@njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def compression_gain(x, peak, comp):
    """Outer-hair-cell compression gain (linear) for every sample of the control envelope, in place.

    The control level in dB SPL is clipped to [low knee, 100 dB] and the gain
    falls by ``1 - 1/ratio`` dB per dB above the knee (pyclarity
    ``env_compress_basilar_membrane``), so gain = exp(a - slope*ln(clipped
    control)), computed branch-free with :func:`.vmath.vlog`/:func:`.vmath.vexp`
    in vectorised loops. A block of GAIN_BLOCK samples whose peak is below the
    knee (often half the signal with a hearing loss) skips the log/exp: its
    gain is the clipped gain, the same value the loop gives.

    Args:
        x: control-path envelope, shape (n,); overwritten by the gain (before
            the 800-Hz low-pass).
        peak: the envelope's maximum per block (see :func:`gammatone_envelope_lanes`).
        comp: [level1_db_spl, attn_ohc_db, low_knee_db, compression_ratio].
    """
    level1, attn, knee, ratio = comp[0], comp[1], comp[2], comp[3]
    slope = 1.0 - 1.0 / ratio
    lo_lin = math.exp((knee - level1) / _LOG10_TO_DB)
    hi_lin = math.exp((100.0 - level1) / _LOG10_TO_DB)
    # gain_db = -attn - (level1 + 20 log10(c) - knee) * slope, in natural-log units
    offset = _DB_TO_LN * (-attn - (level1 - knee) * slope)
    scale = -slope
    clipped = np.full(GAIN_BLOCK, lo_lin)
    _gain_block(clipped, lo_lin, hi_lin, offset, scale)
    g_lo = clipped[0]
    n_samples = x.size
    n_blocks = peak.size
    b = 0
    while b < n_blocks:                    # runs of clipped blocks, runs of computed blocks
        clip = peak[b] <= lo_lin
        end = b + 1
        while end < n_blocks and (peak[end] <= lo_lin) == clip:
            end += 1
        start, stop = b * GAIN_BLOCK, min(end * GAIN_BLOCK, n_samples)
        if clip:
            x[start:stop] = g_lo
        else:
            _gain_block(x[start:stop], lo_lin, hi_lin, offset, scale)
        b = end


@njit(cache=True)
def gammatone_compressed_lanes(x, rows, bandwidth, centre_hz, sample_rate_hz, gain, lowpass,
                               env, bm, out_rows, ms, peak):
    """Four gammatone filters with the outer-hair-cell compression, at once.

    Lane j filters ``x[rows[j]]`` (bandwidth ``bandwidth[j]``, centre
    ``centre_hz[j]``) and multiplies envelope and BM motion by the 800-Hz
    low-passed gain ``gain[out_rows[j]]``.

    Args:
        x: (n_signals, n) middle-ear outputs.
        rows, out_rows: int arrays of 4.
        gain: (n_rows, n), :func:`compression_gain` of each lane's control envelope.
        lowpass: [b0, b1, a1] of the one-pole low-pass applied to the gain.
        env, bm: (n_rows, n) outputs, compressed envelope and BM motion.
        ms: float array of 4, mean square of each lane's uncompressed envelope.
        peak: float array of 4, largest value of each lane's compressed envelope.
    """
    a1, a2, a3, a4, a5, g0, cs, sn = _lane_vectors(_lane_coefficients(bandwidth, centre_hz, sample_rate_hz))
    b0, b1, la1 = vsplat(lowpass[0]), vsplat(lowpass[1]), vsplat(-lowpass[2])
    r0, r1, r2, r3 = rows[0], rows[1], rows[2], rows[3]
    o0, o1, o2, o3 = out_rows[0], out_rows[1], out_rows[2], out_rows[3]
    n_samples = x.shape[1]
    zero = vsplat(0.0)
    c = vsplat(1.0)
    s = zero
    zr0 = zr1 = zr2 = zr3 = zero
    zi0 = zi1 = zi2 = zi3 = zero
    zg = zero
    total = zero
    top = zero
    for n in range(n_samples):
        if n > 0:
            c, s = vfma(s, sn, vmul(c, cs)), vfma(s, cs, vneg(vmul(c, sn)))
        xv = vset(x[r0, n], x[r1, n], x[r2, n], x[r3, n])
        yr, zr0, zr1, zr2, zr3 = _gammatone_step(vmul(xv, c), zr0, zr1, zr2, zr3, a1, a2, a3, a4, a5)
        yi, zi0, zi1, zi2, zi3 = _gammatone_step(vmul(xv, s), zi0, zi1, zi2, zi3, a1, a2, a3, a4, a5)
        e = vmul(g0, vsqrt(vfma(yr, yr, vmul(yi, yi))))
        total = vfma(e, e, total)
        b = vmul(g0, vfma(yr, c, vmul(yi, s)))
        gn = vset(gain[o0, n], gain[o1, n], gain[o2, n], gain[o3, n])
        gl = vfma(b0, gn, zg)
        zg = vfma(la1, gl, vmul(b1, gn))
        ev = vmul(gl, e)
        bv = vmul(gl, b)
        top = vmax(top, ev)
        _store_lanes(env, o0, o1, o2, o3, n, ev)
        _store_lanes(bm, o0, o1, o2, o3, n, bv)
    for j in range(LANES):
        ms[j] = vget(total, j) / n_samples
        peak[j] = vget(top, j)


@njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def _db_sl(env, base, out):
    for n in range(env.size):
        out[n] = max(base + _LOG10_TO_DB * vlog(env[n] + _SMALL), 0.0)


@njit(cache=True, error_model="numpy")
def ihc_db(env, delay, level1_db_spl, attn_ihc_db, out):
    """Envelope in dB SL after the inner-hair-cell attenuation, floored at 0 (element-wise).

    ``env`` is read advanced by ``delay`` samples (the per-band alignment;
    zeros beyond its ends), i.e. out[n] is the level of env[n + delay].
    """
    base = level1_db_spl - attn_ihc_db
    n_samples = env.size
    lo = min(max(0, -delay), n_samples)
    hi = max(min(n_samples, n_samples - delay), lo)
    _db_sl(env[lo + delay:hi + delay], base, out[lo:hi])
    if lo > 0 or hi < n_samples:
        silent = np.zeros(1)
        _db_sl(silent, base, silent)
        out[:lo] = silent[0]
        out[hi:] = silent[0]


@njit(cache=True)
def _adaptation_constants(sample_rate_hz):
    """Update of the IHC adaptation state (v1, v2) from (db, v1, v2), and 1/r1.

    The equivalent RC circuit of rapid (2 ms) and short-term (60 ms)
    adaptation, solved per sample: v' = M^-1 (r2*db + p1*v1, p2*v2) with
    M = [[r1+r2+p1, -r1], [-r3, r2+r3+p2]], written out as
    v1' = k10*db + k11*v1 + k12*v2 and v2' = k20*db + k21*v1 + k22*v2.
    """
    r1 = 1.0 / 2.0
    r2 = 0.5 * (1.0 - r1)
    r3 = r2
    c1 = 0.002 * (r1 + r2) / (r1 * r2)
    c2 = 0.060 / ((r1 + r2) * r3)
    p1 = r1 * r2 * (c1 * sample_rate_hz)
    p2 = r2 * r3 * (c2 * sample_rate_hz)
    a11 = r1 + r2 + p1
    a12 = -r1
    a21 = -r3
    a22 = r2 + r3 + p2
    denom = 1.0 / (a11 * a22 - a21 * a12)
    return (denom * a22 * r2, denom * a22 * p1, -denom * a12 * p2,
            -denom * a21 * r2, -denom * a21 * p1, denom * a11 * p2, 1.0 / r1)


@njit(cache=True)
def ihc_adaptation_lanes(db, rows, shift, sample_rate_hz, out, out_rows):
    """Inner-hair-cell adaptation of four dB-SL envelopes at once, with their group-delay shifts.

    Lane j reads ``db[rows[j]]`` and writes ``out[out_rows[j]]`` delayed by
    ``shift[j]`` samples (zeros before), floored at 0.
    """
    k10, k11, k12, k20, k21, k22, r1_inv = _adaptation_constants(sample_rate_hz)
    c10, c11, c12 = vsplat(k10), vsplat(k11), vsplat(k12)
    c20, c21, c22 = vsplat(k20), vsplat(k21), vsplat(k22)
    inv = vsplat(r1_inv)
    r0, r1, r2, r3 = rows[0], rows[1], rows[2], rows[3]
    o0, o1, o2, o3 = out_rows[0], out_rows[1], out_rows[2], out_rows[3]
    s0, s1, s2, s3 = shift[0], shift[1], shift[2], shift[3]
    n_samples = db.shape[1]
    m0, m1, m2, m3 = n_samples - s0, n_samples - s1, n_samples - s2, n_samples - s3
    for j in range(LANES):
        for n in range(min(shift[j], n_samples)):
            out[out_rows[j], n] = 0.0
    v1 = vsplat(0.0)
    v2 = v1
    for n in range(max(max(m0, m1), max(m2, m3))):
        d = vset(db[r0, n], db[r1, n], db[r2, n], db[r3, n])
        v1, v2 = vfma(c11, v1, vfma(c12, v2, vmul(c10, d))), vfma(c22, v2, vfma(c21, v1, vmul(c20, d)))
        y = vmax0(vmul(vsub(d, v1), inv))
        if n < m0:
            out[o0, n + s0] = vget(y, 0)
        if n < m1:
            out[o1, n + s1] = vget(y, 1)
        if n < m2:
            out[o2, n + s2] = vget(y, 2)
        if n < m3:
            out[o3, n + s3] = vget(y, 3)


@njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def _bm_gain(bm, env, db, noise, noise_gain, out):
    for n in range(bm.size):
        out[n] = bm[n] * ((db[n] + _SMALL) / (env[n] + _SMALL)) + noise_gain * noise[n]


@njit(cache=True, error_model="numpy")
def bm_output(bm, bm_delay, env, env_delay, db, noise, noise_gain, shift, out):
    """BM motion after the IHC gain, plus threshold noise, delayed by ``shift``.

    The BM gain is the dB-SL conversion (db+s)/(e+s) times the adaptation
    (out+s)/(db+s), i.e. (adapted + s)/(env + s); ``db`` is the adapted
    envelope already delayed by ``shift``. ``bm`` and ``env`` are read
    advanced by their alignment delays (zeros beyond their ends):
    out[n + shift] = bm[n + bm_delay] * (db[n + shift] + s) / (env[n + env_delay] + s)
    + noise_gain * noise[n].
    """
    n_samples = bm.size
    m = max(n_samples - shift, 0)
    out[:n_samples - m] = 0.0
    lo = min(max(0, -bm_delay, -env_delay), m)
    hi = max(min(m, n_samples - bm_delay, n_samples - env_delay), lo)
    _bm_gain(bm[lo + bm_delay:hi + bm_delay], env[lo + env_delay:hi + env_delay], db[lo + shift:hi + shift],
             noise[lo:hi], noise_gain, out[lo + shift:hi + shift])
    _bm_edge(bm, bm_delay, env, env_delay, db, noise, noise_gain, shift, 0, lo, out)
    _bm_edge(bm, bm_delay, env, env_delay, db, noise, noise_gain, shift, hi, m, out)


@njit(cache=True, error_model="numpy")
def _bm_edge(bm, bm_delay, env, env_delay, db, noise, noise_gain, shift, start, stop, out):
    """:func:`bm_output` for n in [start, stop), where bm or env is read beyond an end (zeros)."""
    count = stop - start
    if count <= 0:
        return
    n_samples = bm.size
    b = np.zeros(count)
    e = np.zeros(count)
    for t in range(count):
        i, j = start + t + bm_delay, start + t + env_delay
        if 0 <= i < n_samples:
            b[t] = bm[i]
        if 0 <= j < n_samples:
            e[t] = env[j]
    _bm_gain(b, e, db[start + shift:stop + shift], noise[start:stop], noise_gain, out[start + shift:stop + shift])


@njit(cache=True, fastmath={"reassoc", "contract"})
def env_smooth(env, seg, out):
    """Hann-windowed averages of ``env`` with 50 % overlap (half windows at both ends).

    ``seg`` is the even segment length in samples; ``out`` has
    ``1 + n // seg + (n - seg // 2) // seg`` values. Segment k covers the
    half-blocks k and k+1 of ``seg/2`` samples, so each half-block is read
    once and weighted by both window halves: out[k] = (lo[k] + hi[k+1]) /
    sum(window), with lo/hi the block's products with the rising/falling
    half (first and last segment: one half-window, divided by its sum).
    """
    half = seg // 2
    window = np.hanning(seg)
    wsum = window.sum()
    hsum = window[half:].sum()
    rise = window[:half].copy()
    fall = window[half:].copy()
    nseg = out.size
    prev_lo = 0.0
    for b in range(nseg):
        start = b * half
        lo = 0.0
        hi = 0.0
        for i in range(half):
            e = env[start + i]
            lo += e * rise[i]
            hi += e * fall[i]
        if b == 0:
            out[0] = hi / hsum
        elif b >= 2:
            out[b - 1] = (prev_lo + hi) / wsum
        prev_lo = lo
    out[nseg - 1] = prev_lo / hsum


def covary_windows(nwin: int, maxlag: int) -> tuple:
    """Windows and normalisations of the BM covariance segments (computed once, in numpy).

    Returns (full Hann window, its falling half (first segment), its rising
    half (last segment), 1/autocorrelation of the full and of the half window
    at lags -maxlag..maxlag, 1/energy of the full and of the half window).
    """
    half = nwin // 2
    window = np.hanning(nwin)
    hwin_hi = window[half:].copy()
    hwin_lo = window[:half].copy()
    inv_full = 1.0 / np.correlate(window, window, "full")[nwin - 1 - maxlag: nwin + maxlag]
    inv_half = 1.0 / np.correlate(hwin_hi, hwin_hi, "full")[half - 1 - maxlag: half + maxlag]
    return (window, hwin_hi, hwin_lo, inv_full, inv_half,
            float(1.0 / np.sum(window * window)), float(1.0 / np.sum(hwin_hi * hwin_hi)))


def covary_segments(n_segments: int, nwin: int, maxlag: int) -> np.ndarray:
    """The float32 rows :func:`covary_reference` fills: (n_segments, nwin + COV_LAGS - 1).

    A row is a segment with ``maxlag`` zeros before it and zeros after it, as
    many as :func:`_lag_sums` reads past the segment for its 56 lags.
    """
    if 2 * maxlag + 1 > COV_LAGS:
        raise ValueError(f"the BM covariance computes {COV_LAGS} lags; +/-{maxlag} needs {2 * maxlag + 1}")
    return np.zeros((n_segments, nwin + COV_LAGS - 1), dtype=np.float32)


@njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy", inline="always")
def _centred(x, start, window, out):
    """out = x[start:start+m]*window minus its mean; returns the sum of squares."""
    m = window.size
    seg = x[start:start + m]        # a slice: non-negative indices below, so the loop vectorises
    mean = 0.0
    for i in range(m):
        v = seg[i] * window[i]
        out[i] = v
        mean += v
    mean /= m
    ss = 0.0
    for i in range(m):
        v = out[i] - mean
        out[i] = v
        ss += v * v
    return ss


@njit(cache=True)
def _scaled_float32(x, scale, m, out):
    """out[:m] = x[:m] * scale as float32.

    Not fast-math: under ``reassoc`` LLVM turns ``x * (1 / y)`` into ``x / y``,
    a division per sample that cost a third of the covariance's time.
    """
    for i in range(m):
        out[i] = x[i] * scale


@njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def covary_reference(x, windows, maxlag, segs, power, ms_out):
    """The reference side of :func:`covary_processed`, once per band.

    Per 16-ms segment k (Hann window, 50 % overlap, half windows at the ends):
    the windowed, mean-removed segment scaled to unit energy, as float32
    (``segs[k]``, after ``maxlag`` zeros and followed by zeros), its mean square
    (``power[k]``) and twice that (``ms_out[k]``, HAAQI's reference BM level).

    Args:
        x: the reference's BM output of one band, shape (n,).
        windows: :func:`covary_windows`.
        segs: :func:`covary_segments`; power, ms_out: (n_segments,).
    """
    window, hwin_hi, hwin_lo, _, _, pw_full, pw_half = windows
    nwin = window.size
    half = nwin // 2
    a = np.empty(nwin)
    nseg = power.size
    for k in range(nseg):
        if k == 0:
            w, pw, start = hwin_hi, pw_half, 0
        elif k == nseg - 1:
            w, pw, start = hwin_lo, pw_half, k * half
        else:
            w, pw, start = window, pw_full, k * half
        m = w.size
        sa = _centred(x, start, w, a)
        row = segs[k]
        for i in range(row.size):
            row[i] = 0.0
        if sa * pw > 1e-30:
            _scaled_float32(a, 1.0 / math.sqrt(sa), m, row[maxlag:])
        power[k] = sa * pw
        ms_out[k] = 2.0 * (sa * pw)


@njit(cache=True, error_model="numpy")
def _lag_sums(a, b, m, out):
    """out[j] = sum_i a[i + j] * b[i] over i < m, for j = 0..COV_LAGS-1 (float32; a holds m + COV_LAGS - 1 values).

    The lags run along the vector lanes: seven 8-lane accumulators hold the
    56 lags, and each step adds ``a[i + j:i + j + 56] * b[i]``. Steps i, i+8,
    i+16 and i+24 are taken together, because their loads overlap: they need
    the ten vectors at a[i], a[i+8], ..., a[i+72], not 28, so the loop is bound
    by the multiply-adds, not the loads (1.7x faster than seven dot products
    per pass over ``b``). Steps i+8k with k even and with k odd add into two
    sets of accumulators, summed at the end; every sum is in a fixed order.
    No bounds checks: the caller keeps ``a.size >= m + COV_LAGS - 1`` and
    ``out.size >= COV_LAGS``; a and out are contiguous float32.
    """
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = vzero8()
    d0 = d1 = d2 = d3 = d4 = d5 = d6 = vzero8()
    i0 = 0
    while i0 + 32 <= m:
        for r in range(8):
            i = i0 + r
            x0, x1, x2, x3 = vsplat8(b[i]), vsplat8(b[i + 8]), vsplat8(b[i + 16]), vsplat8(b[i + 24])
            l0, l1, l2, l3 = vload8(a, i), vload8(a, i + 8), vload8(a, i + 16), vload8(a, i + 24)
            l4, l5, l6, l7 = vload8(a, i + 32), vload8(a, i + 40), vload8(a, i + 48), vload8(a, i + 56)
            l8, l9 = vload8(a, i + 64), vload8(a, i + 72)
            c0, c1, c2, c3 = vfma8(l0, x0, c0), vfma8(l1, x0, c1), vfma8(l2, x0, c2), vfma8(l3, x0, c3)
            c4, c5, c6 = vfma8(l4, x0, c4), vfma8(l5, x0, c5), vfma8(l6, x0, c6)
            d0, d1, d2, d3 = vfma8(l1, x1, d0), vfma8(l2, x1, d1), vfma8(l3, x1, d2), vfma8(l4, x1, d3)
            d4, d5, d6 = vfma8(l5, x1, d4), vfma8(l6, x1, d5), vfma8(l7, x1, d6)
            c0, c1, c2, c3 = vfma8(l2, x2, c0), vfma8(l3, x2, c1), vfma8(l4, x2, c2), vfma8(l5, x2, c3)
            c4, c5, c6 = vfma8(l6, x2, c4), vfma8(l7, x2, c5), vfma8(l8, x2, c6)
            d0, d1, d2, d3 = vfma8(l3, x3, d0), vfma8(l4, x3, d1), vfma8(l5, x3, d2), vfma8(l6, x3, d3)
            d4, d5, d6 = vfma8(l7, x3, d4), vfma8(l8, x3, d5), vfma8(l9, x3, d6)
        i0 += 32
    for i in range(i0, m):                 # the rest, one step at a time (none for 16-ms segments at 24 kHz)
        x = vsplat8(b[i])
        c0, c1, c2, c3 = (vfma8(vload8(a, i), x, c0), vfma8(vload8(a, i + 8), x, c1),
                          vfma8(vload8(a, i + 16), x, c2), vfma8(vload8(a, i + 24), x, c3))
        c4, c5, c6 = vfma8(vload8(a, i + 32), x, c4), vfma8(vload8(a, i + 40), x, c5), vfma8(vload8(a, i + 48), x, c6)
    vstore8(out, 0, vadd8(c0, d0))
    vstore8(out, 8, vadd8(c1, d1))
    vstore8(out, 16, vadd8(c2, d2))
    vstore8(out, 24, vadd8(c3, d3))
    vstore8(out, 32, vadd8(c4, d4))
    vstore8(out, 40, vadd8(c5, d5))
    vstore8(out, 48, vadd8(c6, d6))


@njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def covary_processed(segs, power, ref_ms, min_rms, y, windows, cov_out):
    """Segment cross-covariance of the reference and a processed BM signal.

    Per segment (see :func:`covary_reference`): the peak of the normalised
    cross-covariance within +/- maxlag samples, clipped to 0..1, or 0 where
    either segment is below 1e-30 in mean square. The lag products are
    float32 sums of unit-energy segments (accurate to ~1e-6 on a value in
    [0, 1]; HAAQI averages them over all tiles).

    Segments whose reference level ``sqrt(ref_ms[k])`` is not above
    ``min_rms`` get 0 without computing: HAAQI's BM synchrony gives these
    tiles zero weight (:func:`.features.bm_sync`), so their value never counts.
    """
    window, hwin_hi, hwin_lo, inv_full, inv_half, pw_full, pw_half = windows
    nwin = window.size
    half = nwin // 2
    nlag = inv_full.size
    if nlag > COV_LAGS or segs.shape[1] < nwin + COV_LAGS - 1:
        raise ValueError("covary_processed: at most COV_LAGS lags, and segs rows from covary_segments")
    b = np.empty(nwin)
    b32 = np.empty(nwin, dtype=np.float32)
    sums = np.empty(COV_LAGS, dtype=np.float32)
    nseg = power.size
    for k in range(nseg):
        if k == 0:
            w, pw, inv_corr, start = hwin_hi, pw_half, inv_half, 0
        elif k == nseg - 1:
            w, pw, inv_corr, start = hwin_lo, pw_half, inv_half, k * half
        else:
            w, pw, inv_corr, start = window, pw_full, inv_full, k * half
        if not math.sqrt(ref_ms[k]) > min_rms:
            cov_out[k] = 0.0
            continue
        m = w.size
        sb = _centred(y, start, w, b)
        if power[k] <= 1e-30 or sb * pw <= 1e-30:
            cov_out[k] = 0.0
            continue
        _scaled_float32(b, 1.0 / math.sqrt(sb), m, b32)
        _lag_sums(segs[k], b32, m, sums)
        peak = 0.0
        for j in range(nlag):
            peak = max(peak, abs(sums[j] * inv_corr[j]))
        peak /= pw
        cov_out[k] = min(max(peak, 0.0), 1.0)


@njit(cache=True, fastmath={"reassoc", "contract"})
def polyphase_resample(padded, taps, up, down, half_len, out):
    """``scipy.signal.resample_poly`` by ``up/down`` (reduced) with its FIR, given as polyphase rows.

    ``taps[p]`` holds the taps ``h[p + up*j]`` of phase p in reverse order,
    right-aligned in rows of q values (:func:`.ear_model.polyphase_taps`);
    ``padded`` is the input with q - 1 zeros before it and enough after.
    Output k sums q products from ``padded[i_k:i_k + q]`` (vectorised: the
    sums differ from scipy's by rounding, ~1e-16 relative), where
    ``i_k = (k*down + half_len) // up``, stepped without integer division.
    """
    q = taps.shape[1]
    phase = half_len % up
    start = half_len // up
    step, carry = down // up, down % up
    for k in range(out.size):
        row = taps[phase]
        seg = padded[start:start + q]      # a slice, so the loop below has non-negative indices and vectorises
        acc = 0.0
        for c in range(q):
            acc += row[c] * seg[c]
        out[k] = acc
        phase += carry
        start += step
        if phase >= up:
            phase -= up
            start += 1


@njit(cache=True)
def middle_ear_filters(lowpass, highpass, x, out):
    """``lfilter(*highpass, lfilter(*lowpass, x))`` in one pass, same bits as scipy.

    Two passes of :func:`benchmark.iir.lfilter_order8` give the same bits; the two short recursions
    side by side in one loop take 0.7 ms against 1.7 ms for 10 s at 24 kHz.

    Args:
        lowpass: [b0, b1, a1] of a first-order filter; highpass: [b0, b1, b2, a1, a2] of a
            second-order one (a[0] = 1 for both).
    """
    lb0, lb1, la1 = lowpass[0], lowpass[1], lowpass[2]
    hb0, hb1, hb2, ha1, ha2 = highpass[0], highpass[1], highpass[2], highpass[3], highpass[4]
    lz = 0.0
    hz0 = hz1 = 0.0
    for n in range(x.size):
        xn = x[n]
        v = lz + lb0 * xn
        lz = xn * lb1 - v * la1
        yn = hz0 + hb0 * v
        hz0 = hz1 + v * hb1 - yn * ha1
        hz1 = v * hb2 - yn * ha2
        out[n] = yn


@njit(cache=True)
def spectra_mac(spec, other, out):
    """``out[f] = sum_b conj(spec[b, f]) * other[b, f]`` (complex), blocks summed in order from 0.

    The same sums, in the same order, as ``np.einsum("bf,bf->f", np.conj(spec), other)``
    (bit for bit: the conjugate is exact), without its temporaries or a conjugated copy of ``spec``.
    """
    nb, nf = spec.shape
    for f in range(nf):
        out[f] = 0.0
    for b in range(nb):
        for f in range(nf):
            out[f] += spec[b, f].conjugate() * other[b, f]


@njit(cache=True, fastmath={"reassoc", "contract"})
def fill_blocks(x, blocks, block):
    """``blocks[b, :block]`` = float32 of ``x[b*block:(b+1)*block]``, zeros after; returns ``sum(x**2)`` (float64).

    The blocks of a reference for :class:`.ear_model.LagSearch` in one pass (``blocks`` has
    ``ceil(x.size / block)`` rows of at least ``block`` values).
    """
    acc = 0.0
    for b in range(blocks.shape[0]):
        row = blocks[b]
        lo = b * block
        m = min(block, x.size - lo)
        seg = x[lo:lo + m]
        for i in range(m):
            v = seg[i]
            row[i] = v
            acc += v * v
        for i in range(m, row.size):
            row[i] = 0.0
    return acc


@njit(cache=True, fastmath={"reassoc", "contract"})
def to_float32(x, out):
    """Copy ``x`` into the float32 array ``out``; return ``sum(x**2)`` (float64)."""
    acc = 0.0
    for i in range(x.size):
        v = x[i]
        out[i] = v
        acc += v * v
    return acc


@njit(cache=True, fastmath={"reassoc", "contract"})
def lag_dots(a, b, lags, out):
    """``out[i] = sum_n a[n] * b[n + lags[i]]`` over the overlap (float64; fixed summation order)."""
    n = a.size
    for i in range(lags.size):
        d = lags[i]
        lo, hi = max(0, -d), min(n, n - d)
        x, y = a[lo:hi], b[lo + d:hi + d]     # slices: non-negative indices, so the loop vectorises
        acc = 0.0
        for j in range(hi - lo):
            acc += x[j] * y[j]
        out[i] = acc
