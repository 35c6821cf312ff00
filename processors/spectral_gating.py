"""Spectral gating noise reduction (the ``noisereduce`` package, Sainburg et al.).

The short-time spectrum is multiplied by a smoothed 0..1 mask. The mask opens
where a bin rises above a noise threshold:

* ``stationary=True``: the threshold per frequency is the mean plus
  ``n_std_thresh_stationary`` standard deviations of the dB spectrum of a noise
  sample; the noise sample is the first ``noise_clip_s`` seconds of the input,
  or the whole input when ``noise_clip_s`` is 0 (noisereduce's default).
* ``stationary=False`` (non-stationary): the threshold follows a time-smoothed
  magnitude (zero-phase first-order low-pass with ``time_constant_s``); a bin
  passes through a sigmoid of how far it rises above it
  (``thresh_n_mult_nonstationary``, ``sigmoid_slope_nonstationary``).

The mask is smoothed over ``freq_mask_smooth_hz`` and ``time_mask_smooth_ms``
and applied as ``mask * prop_decrease + (1 - prop_decrease)``.

Each channel is gated on its own (an ear's aid does not hear the other ear).
The whole signal is processed in one piece (``chunk_size=None``), so no
temporary file or joblib pool is used, and ``n_jobs=1``. noisereduce draws no
random numbers: the output is a deterministic function of the input.

Reference: T. Sainburg, M. Thielk and T. Q. Gentner (2020), "Finding, visualizing,
and quantifying latent structure across diverse animal vocal repertoires", PLoS
Comput. Biol. 16(10): e1008228; the noisereduce package (Sainburg, 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.errors import BenchError
from processors.base import Presentation, Processor
from processors.dsp import channel_audiograms, check_finite_in


@dataclass(frozen=True)
class SpectralGating(Processor):
    """Spectral gating via noisereduce, per channel.

    Attributes:
        stationary: True for a fixed per-frequency threshold, False to track the noise floor.
        prop_decrease: how far the gate closes, 0 (no change) to 1 (full mask).
        time_constant_s: non-stationary mode: time constant of the noise floor in s.
        freq_mask_smooth_hz: width of the mask smoothing in frequency, Hz.
        time_mask_smooth_ms: width of the mask smoothing in time, ms.
        n_std_thresh_stationary: stationary mode: threshold in standard deviations above the mean (dB).
        thresh_n_mult_nonstationary: non-stationary mode: sigmoid shift (multiples above the floor).
        sigmoid_slope_nonstationary: non-stationary mode: sigmoid slope.
        noise_clip_s: stationary mode: estimate the noise from the first ``noise_clip_s``
            seconds of the input; 0 uses the whole input.
        n_fft_samples: STFT length in samples (hop = a quarter of it).
    """

    name = "spectral-gating"
    summary = "spectral gating noise reduction (noisereduce), per channel"

    stationary: bool = False
    prop_decrease: float = 1.0
    time_constant_s: float = 2.0
    freq_mask_smooth_hz: float = 500.0
    time_mask_smooth_ms: float = 50.0
    n_std_thresh_stationary: float = 1.5
    thresh_n_mult_nonstationary: float = 2.0
    sigmoid_slope_nonstationary: float = 10.0
    noise_clip_s: float = 0.0
    n_fft_samples: int = 1024

    def __post_init__(self) -> None:
        if not isinstance(self.stationary, (bool, np.bool_)):
            raise BenchError(f"stationary must be true or false, got {self.stationary!r}")
        object.__setattr__(self, "stationary", bool(self.stationary))
        checks = {
            "prop_decrease": (0.0, 1.0),
            "time_constant_s": (0.01, 60.0),
            "freq_mask_smooth_hz": (1.0, 20000.0),
            "time_mask_smooth_ms": (1.0, 5000.0),
            "n_std_thresh_stationary": (-10.0, 10.0),
            "thresh_n_mult_nonstationary": (-100.0, 100.0),
            "sigmoid_slope_nonstationary": (0.01, 1000.0),
            "noise_clip_s": (0.0, 600.0),
        }
        for key, (low, high) in checks.items():
            object.__setattr__(self, key, check_finite_in(getattr(self, key), low, high, what=key))
        n = self.n_fft_samples
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 64 <= n <= 16384:
            raise BenchError(f"n_fft_samples must be an integer from 64 to 16384, got {n!r}")
        object.__setattr__(self, "n_fft_samples", int(n))
        if self.noise_clip_s > 0 and not self.stationary:
            raise BenchError("noise_clip_s applies to the stationary mode only; "
                             "set stationary=true or noise_clip_s=0")

    def process(self, signal: np.ndarray, presentation: Presentation, *,
                rng: np.random.Generator) -> np.ndarray:
        channel_audiograms(signal, presentation)  # checks the layout
        from noisereduce import reduce_noise

        rate = int(presentation.sample_rate_hz)
        x = np.asarray(signal, dtype=np.float64)
        out = np.empty_like(x)
        n_clip = int(round(self.noise_clip_s * rate))
        for i, channel in enumerate(x):
            noise = channel[:n_clip] if n_clip > 0 else None
            if noise is not None and noise.size < self.n_fft_samples:
                raise BenchError(f"noise_clip_s = {self.noise_clip_s} s is shorter than one "
                                 f"frame ({self.n_fft_samples} samples) at {rate} Hz")
            try:
                out[i] = reduce_noise(
                    y=channel, sr=rate, stationary=self.stationary, y_noise=noise,
                    prop_decrease=self.prop_decrease, time_constant_s=self.time_constant_s,
                    freq_mask_smooth_hz=self.freq_mask_smooth_hz,
                    time_mask_smooth_ms=self.time_mask_smooth_ms,
                    thresh_n_mult_nonstationary=self.thresh_n_mult_nonstationary,
                    sigmoid_slope_nonstationary=self.sigmoid_slope_nonstationary,
                    n_std_thresh_stationary=self.n_std_thresh_stationary,
                    chunk_size=None, n_fft=self.n_fft_samples, clip_noise_stationary=False,
                    use_tqdm=False, n_jobs=1, use_torch=False,
                )
            except ValueError as exc:  # e.g. a smoothing width below one bin or hop
                raise BenchError(f"spectral-gating at {rate} Hz: {exc}") from None
        return out.astype(np.float32)
