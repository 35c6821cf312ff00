"""Known-answer tests for the hearing-aid processors.

Expected values are computed here from the published rules (the NAL-R
formula, the direction of compression), never from the filters under test.
"""

import numpy as np
import pytest

from benchmark.audiogram import Audiogram, Listener, builtin_audiograms
from benchmark.calibration import Calibration, calibrate
from processors import registry
from processors.base import Presentation

AUDIOGRAMS = builtin_audiograms()
RNG = np.random.default_rng  # the processors are deterministic; rng is only passed through

# NAL-R (Byrne & Dillon 1986) at 250, 500, 1000, 2000, 4000, 6000 Hz, as used by
# pyclarity's clarity.enhancer.nalr (the variant without the severe-loss correction).
NALR_FREQUENCIES_HZ = np.array([250.0, 500.0, 1000.0, 2000.0, 4000.0, 6000.0])
NALR_BIAS_DB = np.array([-17.0, -8.0, 1.0, -1.0, -2.0, -2.0])


def nalr_prescription_db(audiogram: Audiogram) -> np.ndarray:
    """Insertion gain in dB at NALR_FREQUENCIES_HZ: X + 0.31 HL + bias, clipped at 0."""
    hl = audiogram.at(NALR_FREQUENCIES_HZ)
    three_freq = hl[1] + hl[2] + hl[3]  # 500 + 1000 + 2000 Hz
    x = 0.05 * three_freq if three_freq <= 180 else 9.0 + 0.116 * (three_freq - 180.0)
    return np.maximum(x + 0.31 * hl + NALR_BIAS_DB, 0.0)


def rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def tone(freq_hz: float, rate: int, duration_s: float, rms: float = 0.01) -> np.ndarray:
    t = np.arange(int(duration_s * rate)) / rate
    return (rms * np.sqrt(2) * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)[None, :]


def music_like(rate: int, duration_s: float = 1.0, seed: int = 0) -> np.ndarray:
    """Mono harmonic notes with decaying envelopes, shape (1, n), peak 0.1."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * rate)) / rate
    x = np.zeros_like(t)
    for k in range(int(duration_s / 0.125)):
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        seg = (t >= k * 0.125) & (t < (k + 1) * 0.125)
        for h in range(1, 9):
            x[seg] += np.exp(-(t[seg] - k * 0.125) * 8) * np.sin(2 * np.pi * f0 * h * t[seg]) / h
    return (0.1 * x / np.abs(x).max()).astype(np.float32)[None, :]


def present(rate: int, left: str, right: str | None = None, *, calibration: Calibration,
            ears=("left",)) -> Presentation:
    listener = Listener("test", AUDIOGRAMS[left], AUDIOGRAMS[right or left])
    return Presentation(rate, listener, calibration, tuple(ears))


# -- NAL-R ------------------------------------------------------------------------


def test_independent_formula_matches_published_examples():
    # 0 dB HL: only the +1 dB bias at 1 kHz survives the clip at 0 dB.
    assert nalr_prescription_db(AUDIOGRAMS["NH"]).tolist() == [0, 0, 1, 0, 0, 0]
    # N3 at 1 kHz: X = 0.05 * (35 + 40 + 50) = 6.25; 6.25 + 0.31 * 40 + 1 = 19.65 dB.
    assert nalr_prescription_db(AUDIOGRAMS["N3"])[2] == pytest.approx(19.65)


@pytest.mark.parametrize("rate", [16000, 24000, 44100, 48000])
@pytest.mark.parametrize("nfir_taps", [220, 440])
def test_nalr_at_0_db_hl_is_a_pure_delay(rate, nfir_taps):
    # pyclarity gives an audiogram whose maximum loss is 0 dB HL a flat filter (a pure
    # delay of nfir/2 samples), although the formula alone would give +1 dB at 1 kHz.
    x = music_like(rate, 0.5)
    proc = registry.create("nalr", {"nfir_taps": nfir_taps})
    y = proc.process(x, present(rate, "NH", calibration=calibrate(x, 65)), rng=RNG(0))
    delay = nfir_taps // 2
    np.testing.assert_allclose(y[:, :delay], 0.0, atol=1e-4)
    np.testing.assert_allclose(y[:, delay:], x[:, :-delay], atol=1e-4)


@pytest.mark.parametrize("rate", [24000, 44100])
@pytest.mark.parametrize("audiogram, nfir_taps, freq_hz", [
    # S2's prescription is nearly straight (in linear frequency) across 0.5-2 kHz, so the
    # 220-tap CAD1 filter reproduces it; N3 bends at 1 kHz, where 220 taps at 44.1 kHz
    # smooth the curve by ~0.5 dB, so it is checked with a longer filter.
    ("S2", 220, 1000.0),
    ("S2", 220, 2000.0),
    ("N3", 880, 1000.0),
])
def test_tone_gets_the_prescribed_nalr_gain(rate, audiogram, nfir_taps, freq_hz):
    expected_db = nalr_prescription_db(AUDIOGRAMS[audiogram])[
        list(NALR_FREQUENCIES_HZ).index(freq_hz)]
    x = tone(freq_hz, rate, 0.5)
    proc = registry.create("nalr", {"nfir_taps": nfir_taps})
    y = proc.process(x, present(rate, audiogram, calibration=calibrate(x, 65)), rng=RNG(0))
    settled = slice(nfir_taps + 1, None)  # past the filter's onset transient
    gain_db = rms_db(y[:, settled]) - rms_db(x[:, settled])
    assert gain_db == pytest.approx(expected_db, abs=0.5)


# -- the CAD1 AGC -----------------------------------------------------------------

RATE = 24000
FULL_SCALE = Calibration(level1_db_spl=100.0)  # digital RMS 1.0 == 100 dB SPL == device full scale


def test_agc_leaves_a_quiet_steady_signal_unchanged():
    # NH: NAL-R is a pure delay, so only the AGC and the soft clip could act.
    x = tone(1000.0, RATE, 1.0, rms=0.01)  # 60 dB SPL, far below the 90.9 dB SPL threshold
    y = registry.create("nalr-agc").process(x, present(RATE, "NH", calibration=FULL_SCALE),
                                             rng=RNG(0))
    np.testing.assert_allclose(y[:, 110:], x[:, :-110], atol=1e-5)


def step(rate: int) -> tuple[np.ndarray, slice, slice]:
    """A 1 kHz tone whose RMS steps from 0.01 to 1.0 (40 dB) after 0.5 s."""
    x = tone(1000.0, rate, 2.0, rms=1.0)
    x[:, : rate // 2] *= 0.01
    return x, slice(rate // 10, rate // 2), slice(3 * rate // 2, None)


def test_agc_compresses_a_loud_step():
    x, quiet, loud = step(RATE)
    y = registry.create("nalr-agc").process(x, present(RATE, "NH", calibration=FULL_SCALE),
                                             rng=RNG(0))
    in_change = rms_db(x[:, loud]) - rms_db(x[:, quiet])
    out_change = rms_db(y[:, loud]) - rms_db(y[:, quiet])
    assert in_change == pytest.approx(40.0, abs=0.01)
    assert 20.0 < out_change < in_change - 5.0


def test_agc_engages_by_sound_level_not_digital_level():
    x, quiet, loud = step(RATE)
    soft = Calibration(level1_db_spl=FULL_SCALE.level1_db_spl - 40.0)  # same samples, 40 dB softer
    y = registry.create("nalr-agc").process(x, present(RATE, "NH", calibration=soft), rng=RNG(0))
    out_change = rms_db(y[:, loud]) - rms_db(y[:, quiet])
    assert out_change == pytest.approx(40.0, abs=0.1)


# -- CAMFIT WDRC ------------------------------------------------------------------


def camfit_gain_db(audiogram: str, spl_db: float) -> float:
    x = music_like(RATE, 1.0)
    y = registry.create("camfit-wdrc").process(
        x, present(RATE, audiogram, calibration=calibrate(x, spl_db)), rng=RNG(0))
    return rms_db(y) - rms_db(x)


def test_camfit_wdrc_gives_soft_inputs_more_gain_than_loud_ones():
    # N4's CAMFIT ratios are about 2-3; the same samples presented 40 dB louder.
    assert camfit_gain_db("N4", 50.0) > camfit_gain_db("N4", 90.0) + 3.0


def test_camfit_wdrc_is_linear_below_its_threshold():
    # CAD2's compressor threshold sits ~10 dB above the presentation level (75 dB SPL
    # here): soft inputs all get the CAMFIT gain for 65 dB SPL.
    assert camfit_gain_db("N4", 45.0) == pytest.approx(camfit_gain_db("N4", 55.0), abs=0.01)


def test_camfit_wdrc_gives_a_worse_audiogram_more_gain():
    assert camfit_gain_db("N4", 65.0) > camfit_gain_db("N2", 65.0) + 3.0


def test_camfit_wdrc_is_transparent_for_normal_hearing():
    # CAMFIT prescribes 0 dB and ratio 1 at 0 dB HL; the crossover sums to an all-pass.
    assert camfit_gain_db("NH", 90.0) == pytest.approx(0.0, abs=0.5)


# -- each ear gets its own audiogram ----------------------------------------------


@pytest.mark.parametrize("name", ["nalr", "nalr-agc", "camfit-wdrc"])
def test_each_channel_uses_its_own_ears_audiogram(name):
    mono = music_like(RATE, 0.5)
    stereo = np.vstack([mono, mono])
    calibration = calibrate(stereo, 65)
    proc = registry.create(name)

    y = proc.process(stereo, present(RATE, "N2", "S2", calibration=calibration,
                                     ears=("left", "right")), rng=RNG(0))
    assert np.max(np.abs(y[0] - y[1])) > 1e-3 * np.max(np.abs(y))

    for channel, ear in enumerate(("left", "right")):
        alone = proc.process(mono, present(RATE, "N2", "S2", calibration=calibration,
                                           ears=(ear,)), rng=RNG(0))
        np.testing.assert_allclose(y[channel], alone[0], atol=1e-6)

    swapped = proc.process(stereo, present(RATE, "N2", "S2", calibration=calibration,
                                           ears=("right", "left")), rng=RNG(0))
    np.testing.assert_allclose(swapped[::-1], y, atol=1e-6)
