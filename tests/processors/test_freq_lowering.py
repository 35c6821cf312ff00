"""Known-answer tests for ``freq-lowering`` (nonlinear frequency compression).

The expected output frequency comes from the published rule
``f_out = fc * (f_in / fc) ** (1 / ratio)`` above the cut-off ``fc`` (Simpson et
al. 2005), computed here, not by the processor.
"""

import numpy as np
import pytest

from benchmark.audiogram import Listener, builtin_audiograms
from benchmark.calibration import calibrate
from benchmark.errors import BenchError
from processors import registry
from processors.base import Presentation
from processors.freq_lowering import compress_frequency
from processors.spectral import fft_size

AUDIOGRAMS = builtin_audiograms()
LISTENER = Listener("N3", AUDIOGRAMS["N3"], AUDIOGRAMS["N3"])


def nfc_rule_hz(f_in: float, cutoff_hz: float, ratio: float) -> float:
    return f_in if f_in <= cutoff_hz else cutoff_hz * (f_in / cutoff_hz) ** (1.0 / ratio)


def tone(freq_hz: float, rate: int, duration_s: float = 1.0, amplitude: float = 0.05) -> np.ndarray:
    t = np.arange(int(duration_s * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


def lower(x: np.ndarray, rate: int, **params) -> np.ndarray:
    x2 = np.atleast_2d(x).astype(np.float32)
    ears = ("left", "right")[:x2.shape[0]]
    presentation = Presentation(rate, LISTENER, calibrate(x2, 65.0), ears)
    proc = registry.create("freq-lowering", {k: str(v) for k, v in params.items()})
    y = proc.process(x2, presentation, rng=np.random.default_rng(0))
    assert y.shape == x2.shape and y.dtype == np.float32
    return y.astype(np.float64)


def interior(x: np.ndarray, rate: int) -> np.ndarray:
    """Drop 0.1 s at both ends (the tone's on- and offset clicks are broadband)."""
    return x[..., rate // 10: -rate // 10]


def peak_hz(x: np.ndarray, rate: int) -> float:
    """Frequency of the largest peak of a long zero-padded, Hann-windowed FFT."""
    n = 8 * x.size
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size), n))
    return float(np.argmax(spectrum) * rate / n)


def rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.square(x))))


def test_the_rule():
    f = np.array([500.0, 2000.0, 4000.0, 8000.0])
    np.testing.assert_allclose(compress_frequency(f, 2000.0, 2.0),
                               [500.0, 2000.0, 2000 * 2 ** 0.5, 4000.0])
    np.testing.assert_allclose(compress_frequency(f, 2000.0, 1.0), f)


@pytest.mark.parametrize("rate", [24000, 44100])
def test_a_tone_below_the_cutoff_is_unchanged(rate):
    x = tone(1000.0, rate)
    y = lower(x, rate, cutoff_hz=2000, ratio=2)[0]
    assert peak_hz(interior(y, rate), rate) == pytest.approx(1000.0, abs=1.0)
    np.testing.assert_allclose(interior(y, rate), interior(x, rate), atol=1e-5)


@pytest.mark.parametrize("rate", [24000, 44100])
@pytest.mark.parametrize("f_in, cutoff_hz, ratio", [
    (2500.0, 2000.0, 2.0),
    (6000.0, 2000.0, 2.0),   # -> 3464 Hz
    (9000.0, 2000.0, 3.0),   # -> 3303 Hz
    (5000.0, 1500.0, 1.5),   # -> 3347 Hz
])
def test_a_tone_above_the_cutoff_moves_to_the_predicted_frequency(rate, f_in, cutoff_hz, ratio):
    if f_in >= rate / 2:
        pytest.skip("above Nyquist")
    x = tone(f_in, rate)
    y = interior(lower(x, rate, cutoff_hz=cutoff_hz, ratio=ratio)[0], rate)
    bin_hz = rate / fft_size(rate, 40.0)
    expected = nfc_rule_hz(f_in, cutoff_hz, ratio)
    assert abs(peak_hz(y, rate) - expected) <= bin_hz, (peak_hz(y, rate), expected, bin_hz)
    # the partial keeps its level, and nothing is left at the input frequency
    assert rms_db(y) == pytest.approx(rms_db(interior(x, rate)), abs=1.0)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    freqs = np.fft.rfftfreq(y.size, 1 / rate)
    near_input = np.abs(freqs - f_in) < 3 * bin_hz
    assert spectrum[near_input].max() < 1e-3 * spectrum.max()


def test_ratio_one_is_identity():
    rate = 24000
    rng = np.random.default_rng(0)
    x = 0.05 * rng.standard_normal((2, rate)) + tone(3000.0, rate)
    y = lower(x, rate, ratio=1)
    np.testing.assert_allclose(y, x, atol=1e-6)


def test_nothing_is_left_above_the_highest_output_frequency():
    rate, cutoff_hz, ratio = 24000, 2000.0, 2.0
    x = 0.05 * np.random.default_rng(1).standard_normal(rate)
    y = lower(x, rate, cutoff_hz=cutoff_hz, ratio=ratio)[0]
    top_hz = nfc_rule_hz(rate / 2, cutoff_hz, ratio)  # 4899 Hz
    spectrum = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(y.size, 1 / rate)
    above = spectrum[freqs > top_hz + 200].mean()
    band = spectrum[(freqs > cutoff_hz) & (freqs < top_hz)].mean()
    assert above < 1e-3 * band  # more than 30 dB down


def test_channels_are_independent():
    rate = 24000
    left, right = tone(5000.0, rate), tone(700.0, rate)
    y = lower(np.stack([left, right]), rate)
    np.testing.assert_array_equal(y[0], lower(left, rate)[0])
    np.testing.assert_array_equal(y[1], lower(right, rate)[0])


def test_bad_settings_raise_bench_error():
    with pytest.raises(BenchError):
        registry.create("freq-lowering", {"ratio": "0.5"})  # expansion is not lowering
    with pytest.raises(BenchError):
        registry.create("freq-lowering", {"cutoff_hz": "nan"})
    with pytest.raises(BenchError, match="Nyquist"):
        lower(tone(1000.0, 16000, 0.2), 16000, cutoff_hz=9000)
