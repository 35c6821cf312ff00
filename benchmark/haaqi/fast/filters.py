"""Numba kernels of the fast HAAQI ear model, one auditory band at a time.

Every kernel works on float64 arrays of shape (n_samples,) at 24 kHz and
writes into preallocated outputs, so one band of one signal needs a handful
of arrays of n_samples and nothing of size (32, n_samples).

The gammatone filter is the Cooke/Ma form: demodulate by the band centre
frequency (a rotating phasor, updated by multiplication), filter the real and
imaginary parts with the 4-pole IIR ``[1, 4a, 4a^2] / [1, -4a, 6a^2, -4a^3,
a^4]`` (direct form II transposed, as ``scipy.signal.lfilter``), and take the
magnitude (envelope) or the re-modulated real part (basilar-membrane motion).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from benchmark.haaqi.fast.vmath import vexp, vlog


_LOG10_TO_DB = 20.0 / math.log(10.0)
_SMALL = 1e-30
_DB_TO_LN = math.log(10.0) / 20.0


@njit(cache=True, inline="always")
def _coefficients(bandwidth, centre_hz, sample_rate_hz):
    erb = 24.7 + centre_hz / 9.26449
    a = math.exp(-bandwidth * (2.0 * math.pi / sample_rate_hz) * erb * 1.019)
    a1 = 4.0 * a
    a2 = -6.0 * a * a
    a3 = 4.0 * a * a * a
    a4 = -a * a * a * a
    a5 = 4.0 * a * a
    gain = 2.0 * (1.0 - a1 - a2 - a3 - a4) / (1.0 + a1 + a5)
    return a1, a2, a3, a4, a5, gain


@njit(cache=True, fastmath={"contract"})
def gammatone_envelope(x, bandwidth, centre_hz, sample_rate_hz, env):
    """Envelope of ``x`` through one gammatone band; returns its mean square."""
    a1, a2, a3, a4, a5, gain = _coefficients(bandwidth, centre_hz, sample_rate_hz)
    step = 2.0 * math.pi / sample_rate_hz * centre_hz
    cs, sn = math.cos(step), math.sin(step)
    c, s = 1.0, 0.0
    zr0 = zr1 = zr2 = zr3 = 0.0
    zi0 = zi1 = zi2 = zi3 = 0.0
    total = 0.0
    for n in range(x.size):
        if n > 0:
            c, s = c * cs + s * sn, s * cs - c * sn
        xr = x[n] * c
        xi = x[n] * s
        yr = xr + zr0
        zr0 = a1 * xr + zr1 + a1 * yr
        zr1 = a5 * xr + zr2 + a2 * yr
        zr2 = zr3 + a3 * yr
        zr3 = a4 * yr
        yi = xi + zi0
        zi0 = a1 * xi + zi1 + a1 * yi
        zi1 = a5 * xi + zi2 + a2 * yi
        zi2 = zi3 + a3 * yi
        zi3 = a4 * yi
        e = gain * math.sqrt(yr * yr + yi * yi)
        env[n] = e
        total += e * e
    return total / x.size


@njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def compression_gain(control, comp, gain_out):
    """Outer-hair-cell compression gain (linear) for every sample of the control envelope.

    The control level in dB SPL is clipped to [low knee, 100 dB] and the gain
    falls by ``1 - 1/ratio`` dB per dB above the knee (pyclarity
    ``env_compress_basilar_membrane``), so gain = exp(a - slope*ln(clipped
    control)). Branch-free, with :func:`.vmath.vlog`/:func:`.vmath.vexp`, so the
    loop is vectorised.

    Args:
        control: control-path envelope, shape (n,).
        comp: [level1_db_spl, attn_ohc_db, low_knee_db, compression_ratio, ...].
        gain_out: shape (n,), the gain before the 800-Hz low-pass.
    """
    level1, attn, knee, ratio = comp[0], comp[1], comp[2], comp[3]
    slope = 1.0 - 1.0 / ratio
    lo_lin = math.exp((knee - level1) / _LOG10_TO_DB)
    hi_lin = math.exp((100.0 - level1) / _LOG10_TO_DB)
    # gain_db = -attn - (level1 + 20 log10(c) - knee) * slope, in natural-log units
    offset = _DB_TO_LN * (-attn - (level1 - knee) * slope)
    scale = -slope
    for n in range(control.size):
        c = min(max(control[n], lo_lin), hi_lin)
        gain_out[n] = vexp(offset + scale * vlog(c))


@njit(cache=True, fastmath={"contract"})
def gammatone_compressed(x, bandwidth, centre_hz, sample_rate_hz, gain, comp,
                         env_out, bm_out):
    """Gammatone band with the outer-hair-cell compression.

    Args:
        x: middle-ear output.
        gain: :func:`compression_gain` of this band's control envelope.
        comp: [level1_db_spl, attn_ohc_db, low_knee_db, compression_ratio,
            lp_b0, lp_b1, lp_a1] (the 800-Hz one-pole low-pass on the gain).
        env_out, bm_out: compressed envelope and basilar-membrane motion.

    Returns:
        The mean square of the uncompressed envelope.
    """
    a1, a2, a3, a4, a5, g0 = _coefficients(bandwidth, centre_hz, sample_rate_hz)
    b0, b1, la1 = comp[4], comp[5], comp[6]
    step = 2.0 * math.pi / sample_rate_hz * centre_hz
    cs, sn = math.cos(step), math.sin(step)
    c, s = 1.0, 0.0
    zr0 = zr1 = zr2 = zr3 = 0.0
    zi0 = zi1 = zi2 = zi3 = 0.0
    zg = 0.0
    total = 0.0
    for n in range(x.size):
        if n > 0:
            c, s = c * cs + s * sn, s * cs - c * sn
        xr = x[n] * c
        xi = x[n] * s
        yr = xr + zr0
        zr0 = a1 * xr + zr1 + a1 * yr
        zr1 = a5 * xr + zr2 + a2 * yr
        zr2 = zr3 + a3 * yr
        zr3 = a4 * yr
        yi = xi + zi0
        zi0 = a1 * xi + zi1 + a1 * yi
        zi1 = a5 * xi + zi2 + a2 * yi
        zi2 = zi3 + a3 * yi
        zi3 = a4 * yi
        e = g0 * math.sqrt(yr * yr + yi * yi)
        total += e * e
        bm = g0 * (yr * c + yi * s)
        g = gain[n]
        gl = b0 * g + zg
        zg = b1 * g - la1 * gl
        env_out[n] = gl * e
        bm_out[n] = gl * bm
    return total / x.size


@njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def hair_cell(env, bm, params, shift, noise, scratch, db_out, bm_out):
    """dB SL conversion, IHC adaptation, threshold noise and group-delay shift.

    Args:
        env, bm: aligned compressed envelope and BM motion of one band.
        params: [level1_db_spl, attn_ihc_db, noise_gain, sample_rate_hz].
        shift: group-delay correction in samples (output delayed by ``shift``).
        noise: n standard-normal draws (scaled here by ``noise_gain``).
        scratch: work array, shape (n,).
        db_out, bm_out: envelope in dB SL and BM motion, shifted.
    """
    level1, attn, noise_gain, fs = params[0], params[1], params[2], params[3]
    # equivalent RC circuit of rapid (2 ms) and short-term (60 ms) adaptation
    r1 = 1.0 / 2.0
    r2 = 0.5 * (1.0 - r1)
    r3 = r2
    c1 = 0.002 * (r1 + r2) / (r1 * r2)
    c2 = 0.060 / ((r1 + r2) * r3)
    p1 = r1 * r2 * (c1 * fs)
    p2 = r2 * r3 * (c2 * fs)
    a11 = r1 + r2 + p1
    a12 = -r1
    a21 = -r3
    a22 = r2 + r3 + p2
    denom = 1.0 / (a11 * a22 - a21 * a12)
    r1_inv = 1.0 / r1
    n_samples = env.size
    # dB SL of the envelope (vectorised)
    base = level1 - attn
    m = n_samples - shift
    for n in range(m):
        scratch[n] = max(base + _LOG10_TO_DB * vlog(env[n] + _SMALL), 0.0)
    for n in range(shift):
        db_out[n] = 0.0
        bm_out[n] = 0.0
    v1 = 0.0
    v2 = 0.0
    for n in range(m):
        db = scratch[n]
        t1 = db * r2 + p1 * v1
        t2 = p2 * v2
        v1 = denom * (a22 * t1 - a12 * t2)
        v2 = denom * (-a21 * t1 + a11 * t2)
        db_out[n + shift] = max((db - v1) * r1_inv, 0.0)
    # BM gain: dB-SL conversion (db+s)/(e+s) times adaptation (out+s)/(db+s) (vectorised)
    for n in range(m):
        bm_out[n + shift] = bm[n] * ((db_out[n + shift] + _SMALL) / (env[n] + _SMALL)) + noise_gain * noise[n]


@njit(cache=True)
def env_smooth(env, seg, out):
    """Hann-windowed averages of ``env`` with 50 % overlap (half windows at both ends).

    ``seg`` is the even segment length in samples; ``out`` has
    ``1 + n // seg + (n - seg // 2) // seg`` values.
    """
    half = seg // 2
    window = np.hanning(seg)
    wsum = window.sum()
    hsum = window[half:].sum()
    nseg = out.size
    acc = 0.0
    for i in range(half):
        acc += env[i] * window[half + i]
    out[0] = acc / hsum
    for k in range(1, nseg - 1):
        start = k * half
        acc = 0.0
        for i in range(seg):
            acc += env[start + i] * window[i]
        out[k] = acc / wsum
    start = (nseg - 1) * half
    acc = 0.0
    for i in range(half):
        acc += env[start + i] * window[i]
    out[nseg - 1] = acc / hsum


@njit(cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def _segment_stats(x, y, start, window, inv_corr, inv_power, maxlag, a, b, a32, b32):
    """Normalised cross-covariance peak and mean squares of one windowed segment pair.

    The segments are windowed and their means removed in float64 (``a``,
    length m + 2*maxlag, zero-padded by maxlag at both ends, and ``b``,
    length m); scaled to unit energy they are cast to float32 (``a32``,
    ``b32``) for the 2*maxlag+1 lag products, which are vectorised dot
    products. The normalised lags lie in [-1, 1], and float32 sums of 384
    unit-energy products are accurate to about 1e-6, far below what HAAQI
    resolves (the BM covariance is averaged over all tiles).

    Returns:
        (peak of |normalised covariance| over lags, reference and processed mean squares).
    """
    m = window.size
    ma = 0.0
    mb = 0.0
    for i in range(m):
        wa = x[start + i] * window[i]
        wb = y[start + i] * window[i]
        a[i] = wa
        b[i] = wb
        ma += wa
        mb += wb
    ma /= m
    mb /= m
    sa = 0.0
    sb = 0.0
    for i in range(m):
        va = a[i] - ma
        vb = b[i] - mb
        a[i] = va
        b[i] = vb
        sa += va * va
        sb += vb * vb
    if sa * inv_power <= 1e-30 or sb * inv_power <= 1e-30:
        return 0.0, sa * inv_power, sb * inv_power
    fa = 1.0 / math.sqrt(sa)
    fb = 1.0 / math.sqrt(sb)
    for i in range(maxlag):
        a32[i] = 0.0
        a32[maxlag + m + i] = 0.0
    for i in range(m):
        a32[maxlag + i] = a[i] * fa
        b32[i] = b[i] * fb
    peak = 0.0
    for j in range(2 * maxlag + 1):
        # sum_i a[i + j - maxlag] * b[i]; a is zero-padded by maxlag on both sides
        acc = np.float32(0.0)
        for i in range(m):
            acc += a32[i + j] * b32[i]
        v = abs(acc * inv_corr[j])
        if v > peak:
            peak = v
    return peak / inv_power, sa * inv_power, sb * inv_power


@njit(cache=True, error_model="numpy")
def bm_covary(x, y, nwin, maxlag, cov_out, ms_out):
    """Segment cross-covariance of two BM signals (16-ms Hann segments, 50 % overlap).

    Writes the normalised peak of the cross-covariance within +/- ``maxlag``
    samples (clipped to 0..1) and twice the reference mean square per segment.
    """
    half = nwin // 2
    window = np.hanning(nwin)
    hwin_hi = window[half:].copy()
    hwin_lo = window[:half].copy()
    inv_full = 1.0 / np.correlate(window, window, "full")[nwin - 1 - maxlag: nwin + maxlag]
    inv_half = 1.0 / np.correlate(hwin_hi, hwin_hi, "full")[half - 1 - maxlag: half + maxlag]
    pw_full = 1.0 / np.sum(window * window)
    pw_half = 1.0 / np.sum(hwin_hi * hwin_hi)
    a = np.empty(nwin)
    b = np.empty(nwin)
    a32 = np.empty(nwin + 2 * maxlag, dtype=np.float32)
    b32 = np.empty(nwin, dtype=np.float32)
    nseg = cov_out.size
    for k in range(nseg):
        if k == 0:
            peak, sx, sy = _segment_stats(x, y, 0, hwin_hi, inv_half, pw_half, maxlag, a, b, a32, b32)
        elif k == nseg - 1:
            peak, sx, sy = _segment_stats(x, y, k * half, hwin_lo, inv_half, pw_half, maxlag, a, b, a32, b32)
        else:
            peak, sx, sy = _segment_stats(x, y, k * half, window, inv_full, pw_full, maxlag, a, b, a32, b32)
        if sx > 1e-30 and sy > 1e-30:
            cov_out[k] = min(max(peak, 0.0), 1.0)
        else:
            cov_out[k] = 0.0
        ms_out[k] = 2.0 * sx
