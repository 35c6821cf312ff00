"""Conformance of processors.compressors with the pyclarity classes it replaces.

The references are pyclarity's own ``Compressor`` (AGC) and ``MultibandCompressor``,
run here on the same signals; the processors are compared with the pyclarity-based
code they used before (the same calls, written out below).
"""

import numpy as np
import pytest
from clarity.enhancer.compressor import Compressor
from clarity.enhancer.multiband_compressor import MultibandCompressor
from clarity.enhancer.multiband_compressor.crossover import compute_coefficients

from benchmark.audiogram import Listener, builtin_audiograms
from benchmark.calibration import calibrate
from benchmark.errors import BenchError
from processors import registry
from processors.base import Presentation
from processors.camfit_wdrc import CAD2_CROSSOVER_FREQUENCIES_HZ
from processors.compressors import agc, crossover_filters, multiband_compress
from processors.dsp import db_to_gain, soft_clip
from processors.nalr import apply_nalr

RATES_HZ = (24000, 44100)
#: max |ours - pyclarity| / peak; observed about 1e-16 (AGC) and 4e-16 (multiband)
TOLERANCE = 1e-12


def noise_bursts(rate: int, seed: int = 0, duration_s: float = 0.8) -> np.ndarray:
    """White noise in 50 ms segments whose levels step over 70 dB, with a stretch of zeros."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * rate)
    seg = int(0.05 * rate)
    levels_db = rng.uniform(-70.0, 0.0, n // seg + 1)
    x = rng.standard_normal(n) * np.repeat(db_to_gain(levels_db), seg)[:n]
    x[seg:seg + seg // 4] = 0.0  # pyclarity treats exact zeros specially
    return x


def music_like(rate: int, seed: int = 0, duration_s: float = 0.8) -> np.ndarray:
    """Harmonic notes with decaying envelopes, peak 1.0."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * rate)) / rate
    x = np.zeros_like(t)
    for k in range(int(np.ceil(duration_s / 0.125))):
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        seg = (t >= k * 0.125) & (t < (k + 1) * 0.125)
        for h in range(1, 9):
            x[seg] += np.exp(-(t[seg] - k * 0.125) * 8) * np.sin(2 * np.pi * f0 * h * t[seg]) / h
    return x / np.abs(x).max()


SIGNALS = {"noise_bursts": noise_bursts, "music_like": music_like}

AGC_SETTINGS = {  # (threshold, attenuation, attack_ms, release_ms, window_s, input gain)
    "cad1": (0.35, 0.1, 50.0, 1000.0, 0.064, 2.0),
    "fast": (0.1, 0.5, 5.0, 50.0, 0.01, 1.0),
    "limiter": (0.5, 0.0, 1.0, 200.0, 0.2, 3.0),
}

_CAD2_ATTACK_MS = [11.0, 11.0, 14.0, 13.0, 11.0, 11.0]
_CAD2_RELEASE_MS = [80.0, 80.0, 80.0, 80.0, 100.0, 100.0]
MULTIBAND_SETTINGS = {
    "cad2_hard_knee": dict(
        crossovers=list(CAD2_CROSSOVER_FREQUENCIES_HZ), attack=_CAD2_ATTACK_MS,
        release=_CAD2_RELEASE_MS, threshold=-30.0, ratio=[1.2, 1.5, 2.0, 2.5, 3.0, 4.0],
        makeup_gain=[0.0, 3.0, 8.0, 15.0, 20.0, 12.0], knee_width=0.0),
    "cad2_soft_knee": dict(
        crossovers=list(CAD2_CROSSOVER_FREQUENCIES_HZ), attack=_CAD2_ATTACK_MS,
        release=_CAD2_RELEASE_MS, threshold=-20.0, ratio=[3.0, 2.0, 1.5, 2.0, 3.0, 1.0],
        makeup_gain=[5.0, 0.0, 10.0, 2.0, 7.0, 1.0], knee_width=10.0),
    "four_bands": dict(
        crossovers=[500.0, 1500.0, 4000.0], attack=5.0, release=50.0,
        threshold=[-40.0, -35.0, -30.0, -25.0], ratio=8.0, makeup_gain=6.0, knee_width=6.0),
    "three_bands_below_floor": dict(  # threshold under the -120 dB level floor
        crossovers=[800.0, 3000.0], attack=2.0, release=20.0, threshold=-130.0, ratio=2.0,
        makeup_gain=0.0, knee_width=0.0),
}


def relative_error(y: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(y - reference).max() / np.abs(reference).max())


def pyclarity_agc(x, rate, threshold, attenuation, attack_ms, release_ms, window_s):
    compressor = Compressor(fs=float(rate), attack=attack_ms, release=release_ms,
                            threshold=threshold, attenuation=attenuation,
                            rms_buffer_size=window_s)
    return compressor.process(x.copy())[0]


def pyclarity_multiband(x, rate, s):
    mbc = MultibandCompressor(crossover_frequencies=s["crossovers"], sample_rate=float(rate))
    mbc.set_compressors(attack=s["attack"], release=s["release"], threshold=s["threshold"],
                        ratio=s["ratio"], makeup_gain=s["makeup_gain"], knee_width=s["knee_width"])
    return mbc(x[None, :].copy())[0]  # pyclarity writes into its input


@pytest.mark.parametrize("rate", RATES_HZ)
@pytest.mark.parametrize("signal", list(SIGNALS))
@pytest.mark.parametrize("setting", list(AGC_SETTINGS))
def test_agc_matches_pyclarity(setting, signal, rate):
    threshold, attenuation, attack_ms, release_ms, window_s, gain = AGC_SETTINGS[setting]
    x = gain * SIGNALS[signal](rate)
    reference = pyclarity_agc(x, rate, threshold, attenuation, attack_ms, release_ms, window_s)
    assert np.any(np.abs(reference) < 0.9 * np.abs(x))  # the AGC did engage
    before = x.copy()
    y = agc(x, sample_rate_hz=rate, threshold=threshold, attenuation=attenuation,
            attack_ms=attack_ms, release_ms=release_ms, rms_window_s=window_s)
    np.testing.assert_array_equal(x, before)
    assert y.dtype == np.float64 and y.shape == x.shape
    assert relative_error(y, reference) <= TOLERANCE


@pytest.mark.parametrize("rate", RATES_HZ)
@pytest.mark.parametrize("signal", list(SIGNALS))
@pytest.mark.parametrize("setting", list(MULTIBAND_SETTINGS))
def test_multiband_matches_pyclarity(setting, signal, rate):
    s = MULTIBAND_SETTINGS[setting]
    x = 0.5 * SIGNALS[signal](rate, seed=1)
    reference = pyclarity_multiband(x, rate, s)
    before = x.copy()
    y = multiband_compress(
        x, sample_rate_hz=rate, crossover_frequencies_hz=s["crossovers"], attack_ms=s["attack"],
        release_ms=s["release"], threshold_db=s["threshold"], ratio=s["ratio"],
        makeup_gain_db=s["makeup_gain"], knee_width_db=s["knee_width"])
    np.testing.assert_array_equal(x, before)
    assert y.dtype == np.float64 and y.shape == x.shape
    assert relative_error(y, reference) <= TOLERANCE


@pytest.mark.parametrize("rate", RATES_HZ)
def test_crossover_coefficients_are_pyclarity_s(rate):
    freqs = np.array(CAD2_CROSSOVER_FREQUENCIES_HZ)
    b, a, b_allpass, a_allpass = compute_coefficients(freqs, float(rate), 4)
    cascades = crossover_filters(tuple(freqs), float(rate))
    n = len(freqs)
    for k in range(n):
        (b_low, a_low), (b_high, a_high) = cascades[k][0], cascades[n][k]  # top band: high-passes
        np.testing.assert_array_equal(np.stack([b_low, b_high], axis=-1), b[:, k])
        np.testing.assert_array_equal(np.stack([a_low, a_high], axis=-1), a[:, k])
    for k in range(1, n):  # band 0: its low-pass, then the all-passes of crossovers 1 .. n-1
        np.testing.assert_array_equal(cascades[0][k][0], b_allpass[:, k])
        np.testing.assert_array_equal(cascades[0][k][1], a_allpass[:, k])


def test_bad_settings_raise():
    x = noise_bursts(24000)
    with pytest.raises(BenchError):
        agc(x, sample_rate_hz=24000, threshold=0.3, attenuation=0.1, attack_ms=5.0,
            release_ms=50.0, rms_window_s=1e-6)
    with pytest.raises(BenchError):
        multiband_compress(x, sample_rate_hz=24000, crossover_frequencies_hz=[1000.0],
                           attack_ms=[5.0, 5.0, 5.0], release_ms=50.0, threshold_db=-30.0,
                           ratio=2.0, makeup_gain_db=0.0)
    with pytest.raises(BenchError):
        multiband_compress(x, sample_rate_hz=24000, crossover_frequencies_hz=[13000.0],
                           attack_ms=5.0, release_ms=50.0, threshold_db=-30.0, ratio=2.0,
                           makeup_gain_db=0.0)
    with pytest.raises(BenchError):
        multiband_compress(x[None, :], sample_rate_hz=24000, crossover_frequencies_hz=[1000.0],
                           attack_ms=5.0, release_ms=50.0, threshold_db=-30.0, ratio=2.0,
                           makeup_gain_db=0.0)


# -- the processors: unchanged against their former pyclarity-based engines -------------------
def stereo(rate: int) -> np.ndarray:
    x = np.stack([music_like(rate, seed=2), 0.7 * noise_bursts(rate, seed=3)])
    return (0.1 * x).astype(np.float32)


@pytest.fixture(scope="module")
def listener() -> Listener:
    ears = builtin_audiograms()
    return Listener("N2-S2", ears["N2"], ears["S2"])


def pyclarity_nalr_agc(proc, x, presentation):
    aided = apply_nalr(x, presentation, proc.nfir_taps)
    to_device = float(db_to_gain(presentation.calibration.level1_db_spl - proc.full_scale_db_spl))
    out = np.empty_like(aided)
    for i, channel in enumerate(aided):
        y = pyclarity_agc(channel * to_device, presentation.sample_rate_hz,
                          proc.agc_threshold_rms, proc.agc_attenuation, proc.agc_attack_ms,
                          proc.agc_release_ms, proc.agc_window_ms / 1000.0)
        out[i] = (soft_clip(y) if proc.soft_clip else y) / to_device
    return out.astype(np.float32)


def pyclarity_camfit_wdrc(proc, x, presentation):
    threshold_dbfs = proc.threshold_db_spl - presentation.calibration.level1_db_spl
    out = np.empty(x.shape)
    for i in range(x.shape[0]):
        makeup_db, ratios = proc.band_settings(presentation.audiogram(i))
        settings = dict(crossovers=list(proc.crossover_frequencies_hz),
                        attack=list(proc.attack_ms), release=list(proc.release_ms),
                        threshold=float(threshold_dbfs), ratio=[float(r) for r in ratios],
                        makeup_gain=[float(g) for g in makeup_db],
                        knee_width=float(proc.knee_width_db))
        out[i] = pyclarity_multiband(x[i].astype(np.float64), presentation.sample_rate_hz,
                                     settings)
    return out.astype(np.float32)


REFERENCES = {"nalr-agc": pyclarity_nalr_agc, "camfit-wdrc": pyclarity_camfit_wdrc}


@pytest.mark.parametrize("rate", RATES_HZ)
@pytest.mark.parametrize("spl_db", [65.0, 95.0])
@pytest.mark.parametrize("name", list(REFERENCES))
def test_processor_output_unchanged(name, spl_db, rate, listener):
    x = stereo(rate)
    presentation = Presentation(rate, listener, calibrate(x, spl_db), ("left", "right"))
    proc = registry.create(name)
    y = proc.process(x, presentation, rng=np.random.default_rng(0))
    reference = REFERENCES[name](proc, x, presentation)
    assert y.dtype == np.float32
    # float32 outputs: in practice bit-identical; allow one float32 step of the peak
    assert relative_error(y.astype(np.float64), reference.astype(np.float64)) <= 1.2e-7
