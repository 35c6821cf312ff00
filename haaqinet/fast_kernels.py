"""numba kernels for :mod:`haaqinet.fast`: the ``auditory`` front end's fixed stage and the glue between
the matrix products of the network.

Each kernel replaces a run of small tensor operations by one pass over the data (torch keeps the FFT).
The logarithm of the bin powers is written as plain float32 arithmetic (:func:`_log_inplace`) so that LLVM
vectorises it (numba would call the scalar libm routine). Arrays are float32 and C-ordered; results differ
from the torch path by float32 rounding only (``tests/haaqinet/test_fast.py``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_FLOOR = np.float32(1e-13)  # power floor before a logarithm, as in the front end
_DB_AT_RMS1 = 100.0  # haaqinet.frontends.CALIBRATED_DB_SPL_AT_RMS1
_SILENT_MEAN_SQUARE = 1e-10  # haaqinet.frontends._SILENT_RMS squared
_DB_PER_NEPER = 10.0 / math.log(10.0)
_SQRT2 = np.float32(math.sqrt(2.0))
_LN2_HI, _LN2_LO = np.float32(0.693145751953125), np.float32(1.428606765330187e-06)  # ln 2 = hi + lo, hi exact
_T3, _T5, _T7, _T9, _T11 = (np.float32(2 / k) for k in (3, 5, 7, 9, 11))

# reassociation lets LLVM vectorise the sums (their rounding changes, as between torch kernels)
OPTS = dict(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})


@njit(**OPTS)
def _log_inplace(v):
    """Natural logarithm of a 1-D float32 array of positive normal numbers, in place, within 2.5 float32
    ulp (numpy's float32 log: 3): ``x = m 2^e`` with ``m`` in [sqrt(1/2), sqrt 2), ``log m`` from the
    series of ``2 atanh((m - 1) / (m + 1))``, ``ln 2`` in two parts."""
    n = v.shape[0]
    bits = v.view(np.int32)
    mantissa = np.empty(n, np.int32)
    exponent = np.empty(n, np.float32)
    for i in range(n):
        mantissa[i] = (bits[i] & 0x7FFFFF) | 0x3F800000  # the same mantissa, exponent 0: in [1, 2)
        exponent[i] = (bits[i] >> 23) - 127
    m = mantissa.view(np.float32)
    one, half = np.float32(1.0), np.float32(0.5)
    for i in range(n):
        big = m[i] > _SQRT2
        r = half * m[i] if big else m[i]
        e = exponent[i] + (one if big else np.float32(0.0))
        s = (r - one) / (r + one)
        z = s * s
        series = s * (np.float32(2.0) + z * (_T3 + z * (_T5 + z * (_T7 + z * (_T9 + z * _T11)))))
        v[i] = e * _LN2_HI + (series + e * _LN2_LO)


@njit(**OPTS)
def frames(x, window, hop, n_frames):
    """Windowed frames (B, n_frames, N) of the centred STFT with reflect padding (frame t centred on
    sample t * hop) and each clip's mean square (B,). Needs n > N // 2 (one reflection suffices)."""
    n_clips, n = x.shape
    size = window.shape[0]
    half = size // 2
    out = np.empty((n_clips, n_frames, size), np.float32)
    mean_square = np.empty(n_clips)
    for b in range(n_clips):
        acc = 0.0
        for i in range(n):
            v = np.float64(x[b, i])
            acc += v * v
        mean_square[b] = acc / max(n, 1)
        for t in range(n_frames):
            s = t * hop - half
            if 0 <= s and s + size <= n:
                for j in range(size):
                    out[b, t, j] = x[b, s + j] * window[j]
                continue
            for j in range(size):
                i = s + j
                if i < 0:
                    i = -i
                elif i >= n:
                    i = 2 * (n - 1) - i
                out[b, t, j] = x[b, i] * window[j]
    return out, mean_square


@njit(**OPTS, inline="always")
def _weighted_rows(weights, first, stop, rows, acc):
    """acc[t] = sum over f in [first, stop) of weights[f] * rows[f, t]."""
    acc[:] = 0.0
    for f in range(first, stop):
        w = weights[f]
        for t in range(rows.shape[1]):
            acc[t] += w * rows[f, t]


@njit(**OPTS)
def fixed_maps(spec, mean_square, spl_db, scale, bands, geo, start, stop, norm, audiogram, retspl, interp_t):
    """The fixed maps of every frame and the clip statistics of the learned part's input.

    spec: (B, T, n_bins, 2) real and imaginary parts of the uncalibrated frames; the calibration gain makes
    each clip's RMS encode ``spl_db`` (silent clips: gain 1); scale: (n_bins,) mean-square scale of each bin;
    bands: (K, n_bins) filterbank with row sums ``norm``, and ``geo`` = bands / norm; the thresholds in
    dB SPL are ``(audiogram + retspl) @ interp_t`` ((B, 8) dB HL, (8,), (8, K)).
    Returns feats (B, T, 4 K): ``(level - 50) / 20``, ``max(level - threshold, -30) / 20``,
    ``(threshold - 40) / 30``, ``max(flatness, -30) / 10`` (level clamped at -10 dB SPL); and stats
    (B, 9 K): per column its mean and standard deviation (n - 1) over time, then the mean absolute
    frame-to-frame change of the level map.
    """
    n_clips, n_frames, n_bins = spec.shape[0], spec.shape[1], spec.shape[2]
    n_bands = bands.shape[0]
    width = 4 * n_bands
    feats = np.empty((n_clips, n_frames, width), np.float32)
    stats = np.empty((n_clips, 9 * n_bands), np.float32)
    power = np.empty((n_bins, n_frames), np.float32)  # time last: the band sums run along it
    logs = np.empty((2, n_bands, n_frames), np.float32)
    acc = np.empty(n_frames, np.float32)
    for b in range(n_clips):
        gain2 = 1.0
        if mean_square[b] >= _SILENT_MEAN_SQUARE:
            gain2 = 10.0 ** ((spl_db[b] - _DB_AT_RMS1) / 10.0) / mean_square[b]
        for f in range(n_bins):
            bin_scale = scale[f] * np.float32(gain2)
            for t in range(n_frames):
                re, im = spec[b, t, f, 0], spec[b, t, f, 1]
                power[f, t] = (re * re + im * im) * bin_scale
        for k in range(n_bands):
            _weighted_rows(bands[k], start[k], stop[k], power, acc)
            for t in range(n_frames):
                logs[0, k, t] = acc[t] + _FLOOR
                logs[1, k, t] = acc[t] / norm[k] + _FLOOR
        power += _FLOOR
        _log_inplace(power.ravel())
        _log_inplace(logs.ravel())
        for k in range(n_bands):
            thr = 0.0
            for j in range(retspl.shape[0]):
                thr += (audiogram[b, j] + retspl[j]) * interp_t[j, k]
            thr = np.float64(np.float32(thr))  # rounded as the front end's float32 product
            _weighted_rows(geo[k], start[k], stop[k], power, acc)
            for t in range(n_frames):
                level = max(_DB_PER_NEPER * logs[0, k, t] + _DB_AT_RMS1, -10.0)
                flat = _DB_PER_NEPER * (acc[t] - logs[1, k, t])
                feats[b, t, k] = (level - 50.0) / 20.0
                feats[b, t, n_bands + k] = max(level - thr, -30.0) / 20.0
                feats[b, t, 2 * n_bands + k] = (thr - 40.0) / 30.0
                feats[b, t, 3 * n_bands + k] = max(flat, -30.0) / 10.0
        total = np.zeros(width)
        for t in range(n_frames):
            for c in range(width):
                total[c] += feats[b, t, c]
        mean = (total / n_frames).astype(np.float32)
        spread = np.zeros(width)
        change = np.zeros(n_bands)
        for t in range(n_frames):
            for c in range(width):
                d = np.float64(feats[b, t, c] - mean[c])
                spread[c] += d * d
            if t:
                for k in range(n_bands):
                    change[k] += abs(np.float64(feats[b, t, k]) - feats[b, t - 1, k])
        stats[b, :width] = mean
        stats[b, width:2 * width] = np.sqrt(spread / max(n_frames - 1, 1))
        stats[b, 2 * width:] = change / (n_frames - 1)
    return feats, stats


@njit(**OPTS)
def conv_taps(z, bias, stride):
    """A kernel-3, padding-1 convolution from its three taps' products: z (B, T, 3 o) -> (B, T', o),
    ``z[s t - 1, :o] + z[s t, o:2 o] + z[s t + 1, 2 o:] + bias`` (missing neighbours count 0)."""
    n_clips, n = z.shape[0], z.shape[1]
    o = bias.shape[0]
    n_out = (n - 1) // stride + 1
    y = np.empty((n_clips, n_out, o), np.float32)
    for b in range(n_clips):
        for t in range(n_out):
            c = stride * t
            for j in range(o):
                y[b, t, j] = z[b, c, o + j] + bias[j]
            if c >= 1:
                for j in range(o):
                    y[b, t, j] += z[b, c - 1, j]
            if c + 1 < n:
                for j in range(o):
                    y[b, t, j] += z[b, c + 1, 2 * o + j]
    return y


@njit(**OPTS)
def position_and_norms(x, stats, stats_w, stats_b, pos_w, pos_b, norm_w, norm_b, eps, eps2):
    """The end of the learned front end's stem, and the first hidden state's normalisation.

    ``x' = x + stats @ stats_w + stats_b`` (the clip statistics, projected, added to every frame);
    ``h = LayerNorm(x' + depthwise_conv(x'))`` (zero padding; the residual is in ``pos_w``'s centre tap);
    ``z = LayerNorm(h)`` without an affine map. x: (B, T, C); stats: (B, S); stats_w: (S, C);
    pos_w: (k, C). Returns h and z, both (B, T, C).
    """
    n_clips, n, dim = x.shape
    width = pos_w.shape[0]
    pad = width // 2
    h = np.empty_like(x)
    z = np.empty_like(x)
    clip = np.empty(dim, np.float32)
    y = np.empty(dim, np.float32)
    for b in range(n_clips):
        clip[:] = stats_b
        for i in range(stats_w.shape[0]):
            for c in range(dim):
                clip[c] += stats[b, i] * stats_w[i, c]
        xb = x[b] + clip
        for t in range(n):
            y[:] = pos_b
            for j in range(max(0, pad - t), min(width, n + pad - t)):
                for c in range(dim):
                    y[c] += pos_w[j, c] * xb[t + j - pad, c]
            mean, scale = _moments(y, eps)
            for c in range(dim):
                h[b, t, c] = (y[c] - mean) * scale * norm_w[c] + norm_b[c]
            mean, scale = _moments(h[b, t], eps2)
            for c in range(dim):
                z[b, t, c] = (h[b, t, c] - mean) * scale
    return h, z


@njit(**OPTS)
def _moments(v, eps):
    """Mean and ``1 / sqrt(var + eps)`` (biased variance) of a vector, as a layer norm uses them."""
    mean = 0.0
    for c in range(v.shape[0]):
        mean += v[c]
    mean /= v.shape[0]
    var = 0.0
    for c in range(v.shape[0]):
        var += (v[c] - mean) ** 2
    return mean, 1.0 / math.sqrt(var / v.shape[0] + eps)


@njit(**OPTS)
def attention_scores(weights, values):
    """Frame and clip scores from the folded attention: ``sigmoid(sum_h weights[h] @ values[:, h])``.

    weights: (B, H, T, T) attention weights (softmax rows); values: (B, T, H), each head's one value per
    frame (the value, output and frame-score projections folded, the score's bias included).
    Returns clip scores (B,) (the mean over frames) and frame scores (B, T).
    """
    n_clips, heads, n = weights.shape[0], weights.shape[1], weights.shape[2]
    frame_scores = np.empty((n_clips, n), np.float32)
    clip = np.empty(n_clips, np.float32)
    value = np.empty(n, np.float32)
    for b in range(n_clips):
        logit = np.zeros(n)
        for h in range(heads):
            for j in range(n):
                value[j] = values[b, j, h]
            for t in range(n):
                acc = np.float32(0.0)
                for j in range(n):
                    acc += weights[b, h, t, j] * value[j]
                logit[t] += acc
        for t in range(n):
            frame_scores[b, t] = 1.0 / (1.0 + math.exp(-logit[t]))
        clip[b] = frame_scores[b].mean()
    return clip, frame_scores
