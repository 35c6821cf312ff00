"""Background noises for the noisy listening scenarios, and mixing at an SNR.

Three noise types, all synthesised here from a :class:`numpy.random.Generator`
(numpy/scipy only, no recordings), at any sample rate, for any number of
channels. Every function returns float64 of shape ``(n_channels, n_samples)``
with each channel at RMS 1.0.

* ``pink``: 1/f noise. Its power spectral density falls by 3 dB per octave
  from 20 Hz to the Nyquist frequency; bins below 20 Hz (and DC) are zero.
* ``ssn``: stationary speech-shaped noise with the long-term average speech
  spectrum (LTASS) of ANSI S3.5-1997, Table 3 (the standard speech spectrum
  level for normal vocal effort, 1/3-octave bands 160 Hz to 8 kHz; this
  spectrum agrees closely with Byrne et al. 1994's LTASS over that range).
  Between band centres the level (dB per Hz) is interpolated linearly in log
  frequency. Outside the table it is extrapolated with our own choice of
  slopes: -12 dB/octave below 160 Hz and -6 dB/octave above 8 kHz.
* ``babble``: a modulated, speech-like multi-talker noise in the spirit of
  the ICRA noises (Dreschler et al. 2001), built offline and deterministically:
  ``N_TALKERS`` "talkers", each its own speech-shaped noise multiplied by a
  syllabic envelope (syllables of 1/8 to 1/2 s, i.e. a 2-8 Hz rate, with
  random peak levels, grouped into talk spurts of 0.6-2.4 s separated by
  pauses of 0.15-0.7 s), at equal RMS, summed. The modulation is full-band:
  ICRA's separate modulation of three frequency bands is not reproduced.

All three are made by spectral shaping: white Gaussian noise is transformed
with a real FFT over the whole signal, multiplied by the square root of the
target PSD, and transformed back (so the noise is circular in time; it is as
long as the excerpt). Several channels get independent Gaussian draws, so
stereo noise is decorrelated between the ears (correlation ≈ 0, like a
diffuse field). For babble the talkers' *envelopes* are shared by the
channels (each talker speaks at the same moments at both ears) while their
carriers are independent per channel.

Mixing (:func:`mix_at_snr`): the SNR is the ratio of the clean excerpt's
power to the noise's power, each averaged over *all* channels and samples of
the whole excerpt (the same all-channels RMS as :mod:`benchmark.calibration`).
"""

from __future__ import annotations

import math

import numpy as np

from benchmark.errors import BenchError

#: Noise types: name -> one line for help texts.
NOISE_TYPES = {
    "pink": "pink (1/f) noise, -3 dB/octave from 20 Hz",
    "ssn": "stationary speech-shaped noise (ANSI S3.5-1997 LTASS)",
    "babble": "ICRA-style multi-talker babble: speech-shaped noise with syllabic modulation",
}

#: SNRs accepted by the harness, in dB.
SNR_RANGE_DB = (-20.0, 60.0)

#: Lowest frequency of the pink noise in Hz.
PINK_LOW_HZ = 20.0

#: ANSI S3.5-1997 Table 3: 1/3-octave band centres (Hz) and the standard
#: speech spectrum level for normal vocal effort (dB SPL per Hz).
LTASS_CENTRES_HZ = (160, 200, 250, 315, 400, 500, 630, 800, 1000, 1250, 1600, 2000, 2500,
                    3150, 4000, 5000, 6300, 8000)
LTASS_SPECTRUM_LEVEL_DB = (32.41, 34.48, 34.75, 33.98, 34.59, 34.27, 32.06, 28.30, 25.01,
                           23.00, 20.15, 17.32, 13.18, 11.55, 9.33, 5.31, 2.59, 1.13)
#: Our extrapolation of the LTASS outside the table, in dB per octave.
LTASS_SLOPE_BELOW_DB_PER_OCT = 12.0
LTASS_SLOPE_ABOVE_DB_PER_OCT = -6.0

#: Babble: number of talkers and the timing of their syllabic envelopes.
N_TALKERS = 6
SYLLABLE_S = (0.125, 0.5)      # syllable durations: rates of 2 to 8 Hz
SPURT_S = (0.6, 2.4)           # talk spurt durations
PAUSE_S = (0.15, 0.7)          # pauses between spurts
SYLLABLE_LEVEL_SD_DB = 5.0     # spread of syllable peak levels


def check_noise(name: str) -> str:
    """``name`` if it is a noise type, else a :class:`BenchError` with a suggestion."""
    if name not in NOISE_TYPES:
        from benchmark.registry_util import did_you_mean

        raise BenchError(f"unknown noise {name!r}{did_you_mean(name, NOISE_TYPES)}; "
                         f"choose from {', '.join(NOISE_TYPES)}")
    return name


def check_snr(snr_db: float) -> float:
    """Validate an SNR in dB (finite, within :data:`SNR_RANGE_DB`)."""
    snr = float(snr_db)
    lo, hi = SNR_RANGE_DB
    if not math.isfinite(snr) or not lo <= snr <= hi:
        raise BenchError(f"SNR {snr_db!r} dB is out of range; use {lo:g} to {hi:g} dB")
    return snr


def ltass_spectrum_level_db(frequencies_hz: np.ndarray) -> np.ndarray:
    """LTASS spectrum level in dB (per Hz) at ``frequencies_hz`` (> 0); see the module doc."""
    f = np.asarray(frequencies_hz, dtype=np.float64)
    octaves = np.log2(np.maximum(f, 1e-3))
    centres = np.log2(np.asarray(LTASS_CENTRES_HZ, dtype=np.float64))
    levels = np.asarray(LTASS_SPECTRUM_LEVEL_DB, dtype=np.float64)
    out = np.interp(octaves, centres, levels)
    below, above = octaves < centres[0], octaves > centres[-1]
    out[below] = levels[0] + LTASS_SLOPE_BELOW_DB_PER_OCT * (octaves[below] - centres[0])
    out[above] = levels[-1] + LTASS_SLOPE_ABOVE_DB_PER_OCT * (octaves[above] - centres[-1])
    return out


def _pink_psd(f_hz: np.ndarray) -> np.ndarray:
    psd = np.zeros_like(f_hz)
    band = f_hz >= PINK_LOW_HZ
    psd[band] = 1.0 / f_hz[band]
    return psd


def _ssn_psd(f_hz: np.ndarray) -> np.ndarray:
    psd = np.zeros_like(f_hz)
    psd[1:] = 10.0 ** (ltass_spectrum_level_db(f_hz[1:]) / 10.0)  # DC stays 0
    return psd


def shaped_noise(psd_of_hz, n_samples: int, sample_rate_hz: float, n_channels: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with the PSD shape ``psd_of_hz(f)``; float64 (n_channels, n_samples), RMS 1 per channel."""
    from scipy import fft

    white = rng.standard_normal((n_channels, n_samples))
    f_hz = fft.rfftfreq(n_samples, 1.0 / sample_rate_hz)
    spectrum = fft.rfft(white, axis=-1) * np.sqrt(psd_of_hz(f_hz))
    x = fft.irfft(spectrum, n_samples, axis=-1)
    return _unit_rms(x)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    power = np.mean(np.square(x), axis=-1, keepdims=True)
    return x / np.sqrt(np.maximum(power, 1e-300))


def syllabic_envelope(n_samples: int, sample_rate_hz: float, rng: np.random.Generator) -> np.ndarray:
    """One talker's amplitude envelope, float64 (n_samples,), >= 0.

    Talk spurts of syllables (each a raised-sine bump with a random duration
    in :data:`SYLLABLE_S` and a log-normal peak level) alternate with silent
    pauses; the talker starts at a random point of this pattern.
    """
    rate = float(sample_rate_hz)
    total = n_samples + int(rate * (SPURT_S[1] + PAUSE_S[1]))  # room for a random start
    env = np.zeros(total)
    pos = 0
    while pos < total:
        spurt_end = pos + int(rate * rng.uniform(*SPURT_S))
        while pos < min(spurt_end, total):
            length = max(2, int(rate * rng.uniform(*SYLLABLE_S)))
            peak = 10.0 ** (rng.normal(0.0, SYLLABLE_LEVEL_SD_DB) / 20.0)
            bump = peak * np.sin(np.pi * (np.arange(length) + 0.5) / length)
            stop = min(pos + length, total)
            env[pos:stop] = bump[: stop - pos]
            pos = stop
        pos += int(rate * rng.uniform(*PAUSE_S))
    start = int(rng.integers(0, total - n_samples + 1))
    return env[start:start + n_samples]


def babble(n_samples: int, sample_rate_hz: float, n_channels: int, rng: np.random.Generator,
           n_talkers: int = N_TALKERS) -> np.ndarray:
    """Multi-talker babble, float64 (n_channels, n_samples), RMS 1 per channel; see the module doc."""
    total = np.zeros((n_channels, n_samples))
    for _ in range(n_talkers):
        env = syllabic_envelope(n_samples, sample_rate_hz, rng)
        carrier = shaped_noise(_ssn_psd, n_samples, sample_rate_hz, n_channels, rng)
        total += _unit_rms(carrier * env)
    return _unit_rms(total)


def make_noise(name: str, n_samples: int, sample_rate_hz: float, *, n_channels: int = 1,
               rng: np.random.Generator) -> np.ndarray:
    """A noise of type ``name``: float64, shape (n_channels, n_samples), each channel at RMS 1.

    The same generator state gives bit-identical noise.
    """
    check_noise(name)
    if n_samples < 2 or n_channels < 1 or sample_rate_hz <= 0:
        raise BenchError(f"cannot make {n_samples} samples x {n_channels} channels of noise "
                         f"at {sample_rate_hz} Hz")
    if name == "pink":
        return shaped_noise(_pink_psd, n_samples, sample_rate_hz, n_channels, rng)
    if name == "ssn":
        return shaped_noise(_ssn_psd, n_samples, sample_rate_hz, n_channels, rng)
    return babble(n_samples, sample_rate_hz, n_channels, rng)


def snr_of(clean: np.ndarray, noise: np.ndarray) -> float:
    """SNR in dB: power of ``clean`` over power of ``noise``, each over all channels and samples."""
    p_clean = float(np.mean(np.square(np.asarray(clean, dtype=np.float64))))
    p_noise = float(np.mean(np.square(np.asarray(noise, dtype=np.float64))))
    return 10.0 * math.log10(p_clean / p_noise)


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Add ``noise`` to ``clean`` at ``snr_db`` dB SNR.

    Args:
        clean: float array (n_channels, n_samples), the clean excerpt.
        noise: float array of the same shape (any level).
        snr_db: the SNR of the mixture; see :func:`snr_of` for how it is measured.

    Returns:
        (mixture float32, scaled noise float64), mixture = clean + scaled noise;
        ``clean`` itself is not rescaled.
    """
    snr = check_snr(snr_db)
    clean64 = np.asarray(clean, dtype=np.float64)
    noise64 = np.asarray(noise, dtype=np.float64)
    if clean64.shape != noise64.shape:
        raise BenchError(f"noise shape {noise64.shape} does not match the signal {clean64.shape}")
    p_clean = np.mean(np.square(clean64))
    p_noise = np.mean(np.square(noise64))
    if not (p_clean > 0 and p_noise > 0):
        raise BenchError("cannot mix at an SNR: the signal or the noise is silent")
    scaled = noise64 * math.sqrt(p_clean / p_noise * 10.0 ** (-snr / 10.0))
    return (clean64 + scaled).astype(np.float32), scaled
