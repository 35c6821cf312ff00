"""STFT analysis/synthesis and sample-rate conversion shared by the spectral processors.

Used by ``mmse-stsa``, ``freq-lowering`` (STFT) and the 48-kHz denoisers
``deepfilternet`` and ``rnnoise`` (resampling). All functions work on one
channel, a 1-D float array ``(n_samples,)``.

STFT convention (weighted overlap-add, WOLA):

* frame length ``n_fft`` samples (a power of two), hop ``n_fft // overlap``;
* analysis and synthesis window: the square root of a periodic Hann window,
  so that an unmodified STFT reconstructs the input (to rounding) for a hop
  of ``n_fft / 2`` or ``n_fft / 4``;
* the signal is padded with ``n_fft - hop`` zeros in front and zeros at the
  end, so every input sample is covered by the same number of frames. Frame
  ``l`` starts at sample ``l * hop - (n_fft - hop)`` of the input; its
  spectrum has ``n_fft // 2 + 1`` bins at ``k * sample_rate / n_fft`` Hz.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import resample_poly


def fft_size(sample_rate_hz: float, frame_ms: float) -> int:
    """The power of two nearest (in log) to ``frame_ms`` at ``sample_rate_hz``; at least 64."""
    n = frame_ms * 1e-3 * float(sample_rate_hz)
    return int(max(64, 2 ** round(math.log2(max(n, 1.0)))))


def sqrt_hann(n_fft: int) -> np.ndarray:
    """Square root of the periodic Hann window, float64, shape (n_fft,)."""
    return np.sqrt(0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft))


def stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Complex STFT of a 1-D signal, shape (n_frames, n_fft // 2 + 1), float64 maths.

    See the module docstring for the framing; :func:`istft` inverts it.
    """
    if n_fft % hop:
        raise ValueError(f"hop {hop} must divide n_fft {n_fft}")
    x = np.asarray(x, dtype=np.float64)
    lead = n_fft - hop
    n_frames = -(-(x.size + lead) // hop)
    padded = np.zeros((n_frames - 1) * hop + n_fft)
    padded[lead:lead + x.size] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.fft.rfft(frames * sqrt_hann(n_fft), axis=-1)


def istft(spec: np.ndarray, n_fft: int, hop: int, n_samples: int) -> np.ndarray:
    """Inverse of :func:`stft` by weighted overlap-add; float64, shape (n_samples,)."""
    window = sqrt_hann(n_fft)
    frames = np.fft.irfft(spec, n=n_fft, axis=-1) * window
    n_frames = frames.shape[0]
    ratio = n_fft // hop
    out = np.zeros((n_frames + ratio - 1, hop))
    norm = np.zeros(out.shape)
    w2 = (window * window).reshape(ratio, hop)
    for r in range(ratio):
        out[r:r + n_frames] += frames[:, r * hop:(r + 1) * hop]
        norm[r:r + n_frames] += w2[r]
    out, norm = out.reshape(-1), norm.reshape(-1)
    lead = n_fft - hop
    y = out[lead:lead + n_samples]
    w = norm[lead:lead + n_samples]
    # every output sample is covered by n_fft/hop frames, so ``w`` is the constant
    # window-sum (1 for hop n_fft/2, 2 for n_fft/4); guard anyway
    y = y / np.where(w > 1e-12, w, 1.0)
    if y.size < n_samples:
        y = np.pad(y, (0, n_samples - y.size))
    return y


def resample(x: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Polyphase resampling of the last axis (zero-phase FIR, no delay); float64.

    The output has ``ceil(n * to_hz / from_hz)`` samples.
    """
    x = np.asarray(x, dtype=np.float64)
    from_hz, to_hz = int(from_hz), int(to_hz)
    if from_hz == to_hz:
        return x.copy()
    g = math.gcd(from_hz, to_hz)
    return resample_poly(x, to_hz // g, from_hz // g, axis=-1)

