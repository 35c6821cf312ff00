"""Nonlinear frequency compression (NFC), the frequency lowering of hearing aids.

Frequencies up to the cut-off are left alone; above it they are compressed
on a log-frequency scale (Simpson et al. 2005; Phonak SoundRecover)::

    f_out = f_in                                   for f_in <= cutoff_hz
    f_out = cutoff_hz * (f_in / cutoff_hz) ** (1 / ratio)   for f_in > cutoff_hz

so ``ratio`` octaves above the cut-off in the input become one octave in the
output; nothing is left above ``cutoff_hz * (nyquist / cutoff_hz) ** (1 / ratio)``.

Implementation: a phase-vocoder remapping in a WOLA STFT
(:mod:`processors.spectral`: square-root Hann windows, ``frame_ms`` rounded to
a power-of-two length, 75 % overlap), per channel, in the manner of the
peak-based shifting of Laroche and Dolson (1999):

1. In every frame, each spectral peak (local maximum of the magnitude) owns a
   region of bins bounded by the magnitude minima on either side.
2. The peak's frequency is refined with the phase-vocoder estimate (the phase
   advance between frames, within one bin of the peak) and mapped by the rule
   above. The region moves rigidly by the whole number of bins ``s`` closest to
   ``f_out - f_in`` (``s`` <= 0), so the shape and the relative phases of its
   bins, i.e. the partial's amplitude, are kept.
3. Moving a region by ``s`` bins is modulating the signal by
   ``exp(2j pi s n / n_fft)``; for frame ``l`` that multiplies the region by
   ``exp(2j pi s l hop / n_fft)``, an absolute phase, so no phase is
   accumulated from frame to frame and the partials stay coherent.
4. Regions that land on the same bins are added (complex); the frames are
   overlap-added.

A region whose peak lies at or below the cut-off is copied unchanged, so a
signal with nothing above the cut-off, or ``ratio = 1``, comes out equal to the
input to rounding. The output frequency of a partial is within
half a bin (``sample_rate / n_fft / 2``, 11 Hz at 44.1 kHz) of the rule.
No delay is added; the output has the input's length. Deterministic.

References:
    A. Simpson, A. A. Hersbach and H. J. McDermott (2005), "Improvements in speech
    perception with an experimental nonlinear frequency compression hearing device",
    Int. J. Audiol. 44(5), 281-292.
    J. Laroche and M. Dolson (1999), "New phase-vocoder techniques for pitch-shifting,
    harmonizing and other exotic effects", Proc. IEEE WASPAA 1999, 91-94.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from processors.base import Presentation, Processor
from processors.dsp import channel_audiograms, check_below_nyquist, check_finite_in
from processors.spectral import fft_size, istft, stft

OVERLAP = 4  # hop = n_fft / 4 (the phase rotation below relies on it)


def compress_frequency(f_hz, cutoff_hz: float, ratio: float):
    """The NFC map ``f -> cutoff * (f / cutoff) ** (1 / ratio)`` above the cut-off, identity below."""
    f = np.asarray(f_hz, dtype=np.float64)
    above = np.maximum(f, cutoff_hz) / cutoff_hz
    return np.where(f > cutoff_hz, cutoff_hz * above ** (1.0 / ratio), f)


def lower_channel(x: np.ndarray, rate: float, cutoff_hz: float, ratio: float,
                  n_fft: int) -> np.ndarray:
    """NFC of one channel ``x`` (1-D); float64 out, same length."""
    hop = n_fft // OVERLAP
    spec = stft(x, n_fft, hop)
    n_frames, n_bins = spec.shape
    mag = np.abs(spec)
    bin_hz = rate / n_fft
    k = np.arange(n_bins)

    # phase-vocoder frequency of each bin (in bins), from the phase advance over one hop
    expected = 2.0 * np.pi * k * hop / n_fft
    dphi = np.angle(spec[1:]) - np.angle(spec[:-1]) - expected
    dphi = (dphi + np.pi) % (2.0 * np.pi) - np.pi
    freq_bins = np.empty(mag.shape)
    freq_bins[0] = k
    freq_bins[1:] = k + dphi * n_fft / (2.0 * np.pi * hop)

    # regions: each starts at a local minimum of the magnitude (and at bin 0)
    starts = np.zeros(mag.shape, dtype=bool)
    starts[:, 0] = True
    starts[:, 1:-1] = (mag[:, 1:-1] <= mag[:, :-2]) & (mag[:, 1:-1] < mag[:, 2:])
    flat_mag = mag.ravel()
    start_idx = np.flatnonzero(starts.ravel())
    region = np.cumsum(starts.ravel()) - 1
    region_max = np.maximum.reduceat(flat_mag, start_idx)
    position = np.arange(flat_mag.size)
    is_peak = flat_mag >= region_max[region]
    peak_idx = np.minimum.reduceat(np.where(is_peak, position, flat_mag.size), start_idx)

    peak_bin = peak_idx % n_bins
    peak_freq = np.clip(freq_bins.ravel()[peak_idx], peak_bin - 1.0, peak_bin + 1.0) * bin_hz
    shift_hz = compress_frequency(peak_freq, cutoff_hz, ratio) - peak_freq
    region_shift = np.rint(shift_hz / bin_hz).astype(np.int64)
    shift = region_shift[region].reshape(n_frames, n_bins)

    target = np.clip(k + shift, 0, n_bins - 1)
    frame_index = np.arange(n_frames)[:, None]
    # exp(2j*pi*s*l*hop/n_fft) with hop = n_fft/4 is 1j**(s*l): exact, no rounding drift
    rotation = np.array([1.0, 1.0j, -1.0, -1.0j])[(shift * frame_index) % 4]
    moved = spec * rotation
    flat_target = (frame_index * n_bins + target).ravel()
    out = np.bincount(flat_target, weights=moved.real.ravel(), minlength=spec.size) \
        + 1.0j * np.bincount(flat_target, weights=moved.imag.ravel(), minlength=spec.size)
    return istft(out.reshape(n_frames, n_bins), n_fft, hop, x.size)


@dataclass(frozen=True)
class FrequencyLowering(Processor):
    """Nonlinear frequency compression above a cut-off, per channel.

    Attributes:
        cutoff_hz: frequencies up to this are unchanged, Hz.
        ratio: compression ratio above the cut-off (1 = no lowering; 2 halves log distances).
        frame_ms: STFT frame in ms, rounded to a power-of-two length (40 ms -> 2048 at 44.1 kHz).
    """

    name = "freq-lowering"
    summary = "nonlinear frequency compression above a cut-off (phase vocoder)"

    cutoff_hz: float = 2000.0
    ratio: float = 2.0
    frame_ms: float = 40.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "cutoff_hz",
                           check_finite_in(self.cutoff_hz, 100.0, 48000.0, what="cutoff_hz"))
        object.__setattr__(self, "ratio", check_finite_in(self.ratio, 1.0, 10.0, what="ratio"))
        object.__setattr__(self, "frame_ms", check_finite_in(self.frame_ms, 4.0, 200.0, what="frame_ms"))

    def process(self, signal: np.ndarray, presentation: Presentation, *,
                rng: np.random.Generator) -> np.ndarray:
        channel_audiograms(signal, presentation)
        rate = float(presentation.sample_rate_hz)
        check_below_nyquist([self.cutoff_hz], rate, what="freq-lowering cutoff_hz")
        n_fft = fft_size(rate, self.frame_ms)
        x = np.asarray(signal, dtype=np.float64)
        out = np.stack([lower_channel(ch, rate, self.cutoff_hz, self.ratio, n_fft) for ch in x])
        return out.astype(np.float32)
