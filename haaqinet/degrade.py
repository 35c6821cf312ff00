"""Degradations of music for HAAQI-Net training data.

Every degradation *kind* has two functions:

* ``sample(rng) -> params``: draws its parameters (a JSON-ready dict of plain
  floats and ints, with units in the names). The data recipe stores them.
* ``apply(x, rate_hz, params, rng) -> y``: degrades ``x``, float64 array of shape
  (n_samples,) at ``rate_hz``, full scale = 1.0, and returns a float64 array of
  the same shape. ``rng`` (a ``numpy.random.Generator``) is the only source of
  randomness (noise waveforms); equal params and rng state give equal output.

Filters are causal IIR (``scipy.signal.sosfilt``) or zero-phase FFT gains; any
delay is left in, since HAAQI aligns the signals.

| kind | what | parameters drawn |
|---|---|---|
| ``noise-white`` | white Gaussian noise | SNR -5..30 dB re the music's RMS |
| ``noise-pink`` | 1/f noise (FFT-shaped) | SNR -5..30 dB |
| ``noise-babble`` | 4-10 "talkers": speech-shaped noise, each modulated by a 2-6 Hz syllabic envelope | SNR -5..30 dB |
| ``lowpass`` | Butterworth low-pass | cut-off 500-8000 Hz (log), order 2-8 |
| ``highpass`` | Butterworth high-pass | cut-off 150-2000 Hz (log), order 2-8 |
| ``bandpass`` | Butterworth band-pass | 150-1000 Hz to 1.5-6 kHz, order 2-6 |
| ``tilt`` | spectral tilt about 1 kHz, zero phase, limited to +-30 dB | -8..+8 dB per octave |
| ``resonance`` | 1-3 peaking biquads (RBJ) | 200-6000 Hz, +6..+20 dB (20 % notches -6..-20 dB), Q 1-10 |
| ``hardclip`` | clipping at a fraction of the peak | 0.02-0.7 of peak (log) |
| ``softclip`` | tanh saturation, peak kept | drive 0-30 dB |
| ``comp-fast`` | feed-forward compressor, fast | attack 0.5-5 ms, release 10-60 ms, ratio 2-20, threshold -25..0 dB re RMS |
| ``comp-slow`` | feed-forward compressor, slow | attack 20-200 ms, release 0.3-3 s, ratio 2-10, threshold -25..0 dB re RMS |
| ``specsub`` | noise added, then removed by power spectral subtraction (musical noise) | SNR 0-25 dB, over-subtraction 1-5, floor -40..-10 dB |
| ``level`` | a gain error | -20..+20 dB |

Compressors apply make-up gain so the output RMS equals the input RMS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import signal as sps

from benchmark.errors import BenchError
from benchmark.registry_util import did_you_mean


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _even_order(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(2 * rng.integers(lo // 2, hi // 2 + 1))


# -- noise ------------------------------------------------------------------------------------
def _shaped_noise(n: int, rate_hz: float, rng: np.random.Generator, exponent: float,
                  band_hz: tuple[float, float] | None = None) -> np.ndarray:
    """Gaussian noise with power ~ f**exponent (optionally band-limited), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / rate_hz)
    gain = np.zeros_like(f)
    gain[1:] = f[1:] ** (exponent / 2.0)
    if band_hz is not None:
        lo, hi = band_hz
        gain *= 1.0 / np.sqrt(1.0 + (lo / np.maximum(f, 1e-9)) ** 4) / np.sqrt(1.0 + (f / hi) ** 4)
    y = np.fft.irfft(spec * gain, n)
    return y / max(_rms(y), 1e-12)


def white_noise(n: int, rate_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white Gaussian noise, shape (n,)."""
    y = rng.standard_normal(n)
    return y / max(_rms(y), 1e-12)


def pink_noise(n: int, rate_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS 1/f noise, shape (n,)."""
    return _shaped_noise(n, rate_hz, rng, -1.0)


def babble_noise(n: int, rate_hz: float, rng: np.random.Generator, n_talkers: int = 6) -> np.ndarray:
    """Babble-like noise: ``n_talkers`` speech-shaped noises with syllabic envelopes, unit RMS."""
    out = np.zeros(n)
    for _ in range(n_talkers):
        carrier = _shaped_noise(n, rate_hz, rng, -1.0, band_hz=(150.0, 4000.0))
        rate = rng.uniform(2.0, 6.0)
        env = _shaped_noise(n, rate_hz, rng, 0.0, band_hz=(0.3, rate))
        env = np.maximum(env, 0.0) ** 1.5
        out += carrier * env / max(_rms(env), 1e-12)
    return out / max(_rms(out), 1e-12)


NOISES: dict[str, Callable] = {"white": white_noise, "pink": pink_noise, "babble": babble_noise}


def add_noise(x: np.ndarray, rate_hz: float, rng: np.random.Generator, *, noise: str,
              snr_db: float, **extra) -> np.ndarray:
    """``x`` plus ``noise`` at ``snr_db`` dB below the RMS of ``x``."""
    n = NOISES[noise](x.size, rate_hz, rng, **extra)
    return x + n * _rms(x) * 10.0 ** (-snr_db / 20.0)


# -- filters ----------------------------------------------------------------------------------
def butter_filter(x: np.ndarray, rate_hz: float, *, btype: str, cutoff_hz, order: int) -> np.ndarray:
    """Causal Butterworth filter; cut-offs are limited to below 0.95 x Nyquist."""
    nyq = 0.5 * rate_hz
    cut = np.minimum(np.atleast_1d(np.asarray(cutoff_hz, dtype=float)), 0.95 * nyq)
    if btype == "lowpass" and cut[0] >= 0.95 * nyq:
        return x.copy()
    sos = sps.butter(int(order), cut if cut.size > 1 else cut[0], btype=btype, fs=rate_hz, output="sos")
    return sps.sosfilt(sos, x)


def fft_gain(x: np.ndarray, rate_hz: float, gain_db_of_hz: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Zero-phase filtering by a real gain curve (dB as a function of frequency in Hz)."""
    n = x.size
    f = np.fft.rfftfreq(2 * n, 1.0 / rate_hz)  # zero-padded: no circular wrap of the tails
    spec = np.fft.rfft(x, 2 * n) * 10.0 ** (gain_db_of_hz(f) / 20.0)
    return np.fft.irfft(spec, 2 * n)[:n]


def tilt(x: np.ndarray, rate_hz: float, *, slope_db_per_octave: float, limit_db: float = 30.0) -> np.ndarray:
    """Spectral tilt about 1 kHz, zero phase, the gain limited to +-``limit_db``."""
    def gain(f):
        octaves = np.log2(np.maximum(f, 20.0) / 1000.0)
        return np.clip(slope_db_per_octave * octaves, -limit_db, limit_db)
    return fft_gain(x, rate_hz, gain)


def peaking_sos(rate_hz: float, freq_hz: float, gain_db: float, q: float) -> np.ndarray:
    """One RBJ peaking-EQ biquad as an sos row, shape (1, 6)."""
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * min(freq_hz, 0.45 * rate_hz) / rate_hz
    alpha = math.sin(w0) / (2.0 * q)
    b = np.array([1 + alpha * a, -2 * math.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * math.cos(w0), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def resonances(x: np.ndarray, rate_hz: float, *, peaks: list) -> np.ndarray:
    """Cascade of peaking biquads; ``peaks`` is a list of ``[freq_hz, gain_db, q]``."""
    sos = np.concatenate([peaking_sos(rate_hz, f, g, q) for f, g, q in peaks])
    return sps.sosfilt(sos, x)


# -- nonlinear --------------------------------------------------------------------------------
def hard_clip(x: np.ndarray, *, clip_fraction_of_peak: float) -> np.ndarray:
    """Clip at ``clip_fraction_of_peak`` times the absolute peak of ``x``."""
    c = clip_fraction_of_peak * float(np.max(np.abs(x)))
    return np.clip(x, -c, c)


def soft_clip(x: np.ndarray, *, drive_db: float) -> np.ndarray:
    """tanh saturation: the peak is kept, lower samples are pushed up towards it."""
    peak = float(np.max(np.abs(x))) or 1.0
    g = 10.0 ** (drive_db / 20.0)
    return peak * np.tanh(g * x / peak) / math.tanh(g)


def _gain_computer(level_db: np.ndarray, threshold_db: float, ratio: float) -> np.ndarray:
    over = np.maximum(level_db - threshold_db, 0.0)
    return -over * (1.0 - 1.0 / ratio)


def _smooth(power: np.ndarray, a_attack: float, a_release: float) -> np.ndarray:
    """Attack/release one-pole smoothing of a power envelope (numba when available)."""
    return _smooth_kernel()(power, a_attack, a_release)


def _smooth_py(power, a_attack, a_release):  # pragma: no cover - the numba version is used
    out = np.empty_like(power)
    state = power[0]
    for i in range(power.size):
        a = a_attack if power[i] > state else a_release
        state = a * state + (1.0 - a) * power[i]
        out[i] = state
    return out


_KERNEL = None


def _smooth_kernel():
    global _KERNEL
    if _KERNEL is None:
        try:
            from numba import njit

            _KERNEL = njit(cache=False, nogil=True)(_smooth_py)
        except ImportError:  # pragma: no cover
            _KERNEL = _smooth_py
    return _KERNEL


def compress(x: np.ndarray, rate_hz: float, *, attack_ms: float, release_ms: float, ratio: float,
             threshold_db_re_rms: float) -> np.ndarray:
    """Feed-forward broadband compressor with make-up gain to the input RMS."""
    rms = _rms(x)
    if rms == 0.0:
        return x.copy()
    a_att = math.exp(-1.0 / (attack_ms * 1e-3 * rate_hz))
    a_rel = math.exp(-1.0 / (release_ms * 1e-3 * rate_hz))
    env = _smooth(np.square(x), a_att, a_rel)
    level_db = 10.0 * np.log10(np.maximum(env, 1e-20) / rms ** 2)
    y = x * 10.0 ** (_gain_computer(level_db, threshold_db_re_rms, ratio) / 20.0)
    return y * rms / max(_rms(y), 1e-20)


def spectral_subtraction(x: np.ndarray, rate_hz: float, rng: np.random.Generator, *, noise: str,
                         snr_db: float, oversubtraction: float, floor_db: float) -> np.ndarray:
    """Add ``noise`` at ``snr_db``, then power spectral subtraction with the true noise PSD.

    STFT of 512 samples, hop 256, Hann; gain ``max(1 - a |N|^2/|Y|^2, floor)`` per
    bin (``a`` = over-subtraction, floor in dB of power), noisy phase.
    """
    n = NOISES[noise](x.size, rate_hz, rng) * _rms(x) * 10.0 ** (-snr_db / 20.0)
    _, _, y_spec = sps.stft(x + n, fs=rate_hz, nperseg=512, noverlap=256)
    _, _, n_spec = sps.stft(n, fs=rate_hz, nperseg=512, noverlap=256)
    noise_psd = np.mean(np.abs(n_spec) ** 2, axis=1, keepdims=True)  # (n_bins, 1)
    power = np.abs(y_spec) ** 2
    gain = np.maximum(1.0 - oversubtraction * noise_psd / np.maximum(power, 1e-20), 10.0 ** (floor_db / 10.0))
    _, y = sps.istft(y_spec * np.sqrt(gain), fs=rate_hz, nperseg=512, noverlap=256)
    out = np.zeros_like(x)
    m = min(out.size, y.size)
    out[:m] = y[:m]
    return out


# -- the registry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """One degradation kind: ``sample(rng) -> params`` and ``apply(x, rate_hz, params, rng) -> y``."""

    name: str
    sample: Callable[[np.random.Generator], dict]
    apply: Callable[[np.ndarray, float, dict, np.random.Generator], np.ndarray]
    family: str


def _noise_kind(noise: str) -> Kind:
    def sample(rng):
        out = {"snr_db": round(float(rng.uniform(-5.0, 30.0)), 2)}
        if noise == "babble":
            out["n_talkers"] = int(rng.integers(4, 11))
        return out

    def apply(x, rate_hz, p, rng):
        extra = {"n_talkers": p["n_talkers"]} if noise == "babble" else {}
        return add_noise(x, rate_hz, rng, noise=noise, snr_db=p["snr_db"], **extra)

    return Kind(f"noise-{noise}", sample, apply, "noise")


def _resonance_params(rng):
    peaks = []
    for _ in range(int(rng.integers(1, 4))):
        gain = rng.uniform(6.0, 20.0) * (-1.0 if rng.random() < 0.2 else 1.0)
        peaks.append([round(_log_uniform(rng, 200.0, 6000.0), 1), round(float(gain), 2),
                      round(_log_uniform(rng, 1.0, 10.0), 2)])
    return {"peaks": peaks}


def _comp_params(rng, attack, release, ratio):
    return {"attack_ms": round(_log_uniform(rng, *attack), 3), "release_ms": round(_log_uniform(rng, *release), 2),
            "ratio": round(_log_uniform(rng, *ratio), 2),
            "threshold_db_re_rms": round(float(rng.uniform(-25.0, 0.0)), 2)}


KINDS: dict[str, Kind] = {k.name: k for k in (
    _noise_kind("white"),
    _noise_kind("pink"),
    _noise_kind("babble"),
    Kind("lowpass",
         lambda r: {"cutoff_hz": round(_log_uniform(r, 500.0, 8000.0), 1), "order": _even_order(r, 2, 8)},
         lambda x, fs, p, r: butter_filter(x, fs, btype="lowpass", cutoff_hz=p["cutoff_hz"], order=p["order"]),
         "filter"),
    Kind("highpass",
         lambda r: {"cutoff_hz": round(_log_uniform(r, 150.0, 2000.0), 1), "order": _even_order(r, 2, 8)},
         lambda x, fs, p, r: butter_filter(x, fs, btype="highpass", cutoff_hz=p["cutoff_hz"], order=p["order"]),
         "filter"),
    Kind("bandpass",
         lambda r: {"low_hz": round(_log_uniform(r, 150.0, 1000.0), 1),
                    "high_hz": round(_log_uniform(r, 1500.0, 6000.0), 1), "order": _even_order(r, 2, 6)},
         lambda x, fs, p, r: butter_filter(x, fs, btype="bandpass", cutoff_hz=[p["low_hz"], p["high_hz"]],
                                           order=p["order"] // 2),
         "filter"),
    Kind("tilt", lambda r: {"slope_db_per_octave": round(float(r.uniform(-8.0, 8.0)), 2)},
         lambda x, fs, p, r: tilt(x, fs, slope_db_per_octave=p["slope_db_per_octave"]), "spectral"),
    Kind("resonance", _resonance_params, lambda x, fs, p, r: resonances(x, fs, peaks=p["peaks"]), "spectral"),
    Kind("hardclip", lambda r: {"clip_fraction_of_peak": round(_log_uniform(r, 0.02, 0.7), 4)},
         lambda x, fs, p, r: hard_clip(x, clip_fraction_of_peak=p["clip_fraction_of_peak"]), "distortion"),
    Kind("softclip", lambda r: {"drive_db": round(float(r.uniform(0.0, 30.0)), 2)},
         lambda x, fs, p, r: soft_clip(x, drive_db=p["drive_db"]), "distortion"),
    Kind("comp-fast", lambda r: _comp_params(r, (0.5, 5.0), (10.0, 60.0), (2.0, 20.0)),
         lambda x, fs, p, r: compress(x, fs, **p), "dynamics"),
    Kind("comp-slow", lambda r: _comp_params(r, (20.0, 200.0), (300.0, 3000.0), (2.0, 10.0)),
         lambda x, fs, p, r: compress(x, fs, **p), "dynamics"),
    Kind("specsub",
         lambda r: {"noise": str(r.choice(["white", "pink", "babble"])), "snr_db": round(float(r.uniform(0.0, 25.0)), 2),
                    "oversubtraction": round(float(r.uniform(1.0, 5.0)), 2),
                    "floor_db": round(float(r.uniform(-40.0, -10.0)), 2)},
         lambda x, fs, p, r: spectral_subtraction(x, fs, r, **p), "enhancement"),
    Kind("level", lambda r: {"gain_db": round(float(r.uniform(-20.0, 20.0)), 2)},
         lambda x, fs, p, r: x * 10.0 ** (p["gain_db"] / 20.0), "level"),
)}


def get_kind(name: str) -> Kind:
    """The degradation kind called ``name`` (a did-you-mean :class:`BenchError` otherwise)."""
    if name not in KINDS:
        raise BenchError(f"unknown degradation {name!r}{did_you_mean(name, KINDS)}; known: {', '.join(KINDS)}")
    return KINDS[name]


def sample_step(name: str, rng: np.random.Generator) -> dict:
    """A degradation step ``{"kind": name, "params": {...}}`` with drawn parameters."""
    return {"kind": name, "params": get_kind(name).sample(rng)}


def apply_steps(x: np.ndarray, rate_hz: float, steps: list[dict], rng: np.random.Generator) -> np.ndarray:
    """Apply degradation steps in order.

    Args:
        x: float array, shape (n_samples,), full scale = 1.0.
        rate_hz: sample rate in Hz.
        steps: ``[{"kind": name, "params": {...}}, ...]`` as made by :func:`sample_step`.
        rng: the noise source.

    Returns:
        float64 array, shape (n_samples,).
    """
    y = np.asarray(x, dtype=np.float64)
    for step in steps:
        y = np.asarray(get_kind(step["kind"]).apply(y, float(rate_hz), step["params"], rng), dtype=np.float64)
        if y.shape != x.shape:
            raise BenchError(f"degradation {step['kind']} changed the shape {x.shape} -> {y.shape}")
    return y
