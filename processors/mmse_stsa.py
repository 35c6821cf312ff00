"""MMSE short-time spectral amplitude estimator with MMSE-based noise tracking.

Per channel, in a WOLA STFT (:mod:`processors.spectral`: square-root Hann
windows, ``frame_ms`` rounded to a power of two, 50 % overlap):

1. **Noise PSD** ``sigma2[l, k]``: the MMSE-based tracker of Gerkmann and
   Hendriks (2012). With the periodogram ``P = |Y|^2`` and the previous
   estimate, the speech-presence probability under a fixed a-priori SNR
   ``xi_H1`` (15 dB) and equal priors is::

       p = 1 / (1 + (1 + xi_H1) * exp(-(P / sigma2_prev) * xi_H1 / (1 + xi_H1)))

   and ``p`` is capped at 0.99 where its smoothed value ``p_bar`` (factor 0.9
   per 16 ms) exceeds 0.99, so the estimate cannot stall. Then::

       E[|N|^2 | Y] = (1 - p) * P + p * sigma2_prev
       sigma2       = a * sigma2_prev + (1 - a) * E[|N|^2 | Y]

   with ``a = exp(-hop / noise_time_constant_ms)`` (0.8 per 16 ms hop, as in
   the paper, at the default 71.7 ms). On stationary noise the update settles
   about 1 dB below the true PSD (its fixed point, -0.9 dB by quadrature; -1.2 dB
   measured), and it follows a 10-dB rise in about a second (tests/processors/
   test_denoisers.py). The tracker is started from a robust
   offline estimate: per bin, the 10th percentile of ``P`` over the whole
   channel divided by ``-ln(0.9)`` (the 10th percentile of an exponential
   variable relative to its mean). This look at the whole clip is the only
   non-causal step.

2. **A-priori SNR** by the decision-directed rule of Ephraim and Malah (1984)::

       xi = dd_weight * |A_prev|^2 / sigma2 + (1 - dd_weight) * max(gamma - 1, 0),
       xi >= 10^(xi_min_db / 10),    gamma = P / sigma2

3. **Gain**: the MMSE-STSA gain (Ephraim and Malah 1984, eq. 7)::

       v = xi * gamma / (1 + xi)
       G = (sqrt(pi) / 2) * (sqrt(v) / gamma) * exp(-v/2) * ((1 + v) I0(v/2) + v I1(v/2))

   limited to ``[10^(gain_floor_db / 20), 1]``; ``A = G * |Y|`` with the noisy phase.

The processor adds no delay (offline WOLA); the output has the input's length.
Deterministic: no random numbers.

References:
    Y. Ephraim and D. Malah (1984), "Speech enhancement using a minimum mean-square
    error short-time spectral amplitude estimator", IEEE Trans. ASSP 32(6), 1109-1121.
    T. Gerkmann and R. C. Hendriks (2012), "Unbiased MMSE-based noise power estimation
    with low complexity and low tracking delay", IEEE Trans. ASLP 20(4), 1383-1393.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import i0e, i1e

from processors.base import Presentation, Processor
from processors.dsp import channel_audiograms, check_finite_in
from processors.spectral import fft_size, istft, stft

#: Fixed a-priori SNR (dB) of the speech-presence model in Gerkmann and Hendriks (2012).
XI_H1_DB = 15.0
#: Smoothing of the presence probability per 16 ms frame, and its stall cap.
P_BAR_SMOOTHING_PER_16MS = 0.9
P_STALL = 0.99
#: The initial noise PSD: this percentile of the periodogram, bias-corrected.
INIT_PERCENTILE = 10.0


def mmse_stsa_gain(xi: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Ephraim-Malah MMSE-STSA gain for a-priori SNR ``xi`` and a-posteriori SNR ``gamma``.

    Uses the exponentially scaled Bessel functions, so ``exp(-v/2) I(v/2)`` never overflows.
    """
    v = xi * gamma / (1.0 + xi)
    half = 0.5 * v
    return (0.5 * math.sqrt(math.pi)) * np.sqrt(v) / gamma * (
        (1.0 + v) * i0e(half) + v * i1e(half))


def initial_noise_psd(power: np.ndarray) -> np.ndarray:
    """Per-bin noise PSD from the low percentile of a periodogram ``(n_frames, n_bins)``."""
    q = np.percentile(power, INIT_PERCENTILE, axis=0)
    return q / -math.log1p(-INIT_PERCENTILE / 100.0)


def enhance(x: np.ndarray, n_fft: int, hop: int, *, hop_s: float, gain_floor_db: float,
            xi_min_db: float, dd_weight: float, noise_time_constant_ms: float,
            return_noise: bool = False):
    """MMSE-STSA of one channel ``x`` (1-D); float64 out, same length.

    With ``return_noise`` also the tracked noise PSD, shape (n_frames, n_bins).
    """
    spec = stft(x, n_fft, hop)
    power = spec.real ** 2 + spec.imag ** 2
    n_frames, n_bins = power.shape
    tiny = 1e-20 * max(float(power.max()), 1e-30)
    sigma2 = np.maximum(initial_noise_psd(power), tiny)

    a_noise = math.exp(-hop_s / (noise_time_constant_ms * 1e-3))
    a_pbar = P_BAR_SMOOTHING_PER_16MS ** (hop_s / 0.016)
    xi_h1 = 10.0 ** (XI_H1_DB / 10.0)
    spp_scale = xi_h1 / (1.0 + xi_h1)
    xi_min = 10.0 ** (xi_min_db / 10.0)
    g_min = 10.0 ** (gain_floor_db / 20.0)

    gains = np.empty_like(power)
    noise = np.empty_like(power) if return_noise else None
    p_bar = np.zeros(n_bins)
    prev_amp2 = None
    for l in range(n_frames):
        p_l = power[l]
        # -- noise PSD (Gerkmann & Hendriks 2012) --
        post = p_l / sigma2
        p_h1 = 1.0 / (1.0 + (1.0 + xi_h1) * np.exp(-post * spp_scale))
        p_bar = a_pbar * p_bar + (1.0 - a_pbar) * p_h1
        p_h1 = np.where(p_bar > P_STALL, np.minimum(p_h1, P_STALL), p_h1)
        sigma2 = a_noise * sigma2 + (1.0 - a_noise) * ((1.0 - p_h1) * p_l + p_h1 * sigma2)
        sigma2 = np.maximum(sigma2, tiny)
        if noise is not None:
            noise[l] = sigma2
        # -- decision-directed a-priori SNR and the MMSE-STSA gain --
        gamma = np.maximum(p_l / sigma2, 1e-10)
        ml = np.maximum(gamma - 1.0, 0.0)
        xi = ml if prev_amp2 is None else dd_weight * prev_amp2 / sigma2 + (1.0 - dd_weight) * ml
        xi = np.maximum(xi, xi_min)
        g = np.clip(mmse_stsa_gain(xi, gamma), g_min, 1.0)
        gains[l] = g
        prev_amp2 = g * g * p_l
    y = istft(spec * gains, n_fft, hop, x.size)
    return (y, noise) if return_noise else y


@dataclass(frozen=True)
class MMSESTSA(Processor):
    """MMSE-STSA (Ephraim-Malah) with decision-directed SNR and MMSE noise tracking, per channel.

    Attributes:
        frame_ms: STFT frame in ms, rounded to a power-of-two length (40 ms -> 2048 at 44.1 kHz).
        gain_floor_db: lowest gain in dB (limits musical noise and damage to the music).
        xi_min_db: lowest a-priori SNR in dB.
        dd_weight: decision-directed weight of the previous frame's estimate (0..1).
        noise_time_constant_ms: time constant of the noise PSD smoothing in ms.
    """

    name = "mmse-stsa"
    summary = "MMSE-STSA (Ephraim-Malah) + decision-directed SNR + MMSE noise tracking"

    frame_ms: float = 40.0
    gain_floor_db: float = -15.0
    xi_min_db: float = -25.0
    dd_weight: float = 0.98
    noise_time_constant_ms: float = 71.7

    def __post_init__(self) -> None:
        checks = {
            "frame_ms": (2.0, 500.0),
            "gain_floor_db": (-80.0, 0.0),
            "xi_min_db": (-80.0, 20.0),
            "dd_weight": (0.0, 0.999),
            "noise_time_constant_ms": (1.0, 60000.0),
        }
        for key, (low, high) in checks.items():
            object.__setattr__(self, key, check_finite_in(getattr(self, key), low, high, what=key))

    def process(self, signal: np.ndarray, presentation: Presentation, *,
                rng: np.random.Generator) -> np.ndarray:
        channel_audiograms(signal, presentation)
        rate = float(presentation.sample_rate_hz)
        n_fft = fft_size(rate, self.frame_ms)
        hop = n_fft // 2
        x = np.asarray(signal, dtype=np.float64)
        out = np.empty_like(x)
        for i, channel in enumerate(x):
            out[i] = enhance(channel, n_fft, hop, hop_s=hop / rate,
                             gain_floor_db=self.gain_floor_db, xi_min_db=self.xi_min_db,
                             dd_weight=self.dd_weight,
                             noise_time_constant_ms=self.noise_time_constant_ms)
        return out.astype(np.float32)
