"""Degradations: shapes, determinism, and known answers (SNR, cut-offs, clipping, compression, tilt)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.errors import BenchError
from haaqinet import degrade

RATE = 24000


def _music(seconds=1.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / (i + 1) for i, f in enumerate((220, 440, 660, 1320, 3000)))
    return 0.05 * x * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))


def _band_power(x, lo, hi):
    f = np.fft.rfftfreq(x.size, 1 / RATE)
    p = np.abs(np.fft.rfft(x)) ** 2
    return p[(f >= lo) & (f < hi)].sum()


@pytest.mark.parametrize("name", sorted(degrade.KINDS))
def test_every_kind_keeps_shape_is_finite_and_deterministic(name):
    x = _music()
    params = degrade.get_kind(name).sample(np.random.default_rng(1))
    step = [{"kind": name, "params": params}]
    y1 = degrade.apply_steps(x, RATE, step, np.random.default_rng(2))
    y2 = degrade.apply_steps(x, RATE, step, np.random.default_rng(2))
    assert y1.shape == x.shape and y1.dtype == np.float64
    assert np.all(np.isfinite(y1)) and np.any(y1)
    np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize("noise", ["white", "pink", "babble"])
def test_noise_is_added_at_the_requested_snr(noise):
    x = _music()
    y = degrade.add_noise(x, RATE, np.random.default_rng(0), noise=noise, snr_db=10.0)
    snr = 20 * np.log10(np.sqrt(np.mean(x ** 2)) / np.sqrt(np.mean((y - x) ** 2)))
    assert snr == pytest.approx(10.0, abs=1e-6)


def test_pink_noise_falls_3_db_per_octave():
    n = degrade.pink_noise(RATE * 4, RATE, np.random.default_rng(0))
    ratio_db = 10 * np.log10(_band_power(n, 1000, 2000) / _band_power(n, 2000, 4000))
    assert ratio_db == pytest.approx(0.0, abs=0.5)  # equal power per octave


def test_lowpass_removes_the_top_and_keeps_the_bottom():
    x = _music()
    y = degrade.butter_filter(x, RATE, btype="lowpass", cutoff_hz=1000.0, order=8)
    assert _band_power(y, 2500, 3500) < 1e-4 * _band_power(x, 2500, 3500)
    assert _band_power(y, 200, 500) == pytest.approx(_band_power(x, 200, 500), rel=0.05)


def test_tilt_gain_at_one_octave_and_unity_at_1khz():
    t = np.arange(RATE) / RATE
    for f, expect_db in ((1000, 0.0), (2000, 6.0), (500, -6.0)):
        x = np.sin(2 * np.pi * f * t)
        y = degrade.tilt(x, RATE, slope_db_per_octave=6.0)
        mid = slice(RATE // 4, 3 * RATE // 4)
        gain_db = 20 * np.log10(np.std(y[mid]) / np.std(x[mid]))
        assert gain_db == pytest.approx(expect_db, abs=0.2)


def test_peaking_biquad_gain_at_its_centre():
    sos = degrade.peaking_sos(RATE, 1000.0, 12.0, 2.0)
    from scipy.signal import sosfreqz

    _, h = sosfreqz(sos, worN=[1000.0], fs=RATE)
    assert 20 * np.log10(abs(h[0])) == pytest.approx(12.0, abs=0.01)


def test_clipping():
    x = _music()
    y = degrade.hard_clip(x, clip_fraction_of_peak=0.25)
    assert np.max(np.abs(y)) == pytest.approx(0.25 * np.max(np.abs(x)))
    z = degrade.soft_clip(x, drive_db=20.0)
    assert np.max(np.abs(z)) == pytest.approx(np.max(np.abs(x)), rel=1e-6)
    assert np.sqrt(np.mean(z ** 2)) > np.sqrt(np.mean(x ** 2))


def test_compressor_reduces_the_dynamic_range_and_keeps_the_rms():
    t = np.arange(2 * RATE) / RATE
    x = np.sin(2 * np.pi * 500 * t) * np.where(t < 1.0, 0.01, 0.1)  # a 20-dB step
    y = degrade.compress(x, RATE, attack_ms=1.0, release_ms=20.0, ratio=4.0, threshold_db_re_rms=-20.0)
    step_db = 20 * np.log10(np.std(y[int(1.5 * RATE):]) / np.std(y[int(0.3 * RATE):int(0.9 * RATE)]))
    assert step_db < 12.0
    assert np.sqrt(np.mean(y ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=1e-6)


def test_spectral_subtraction_removes_most_of_the_noise():
    x = _music(2.0)
    rng = np.random.default_rng(0)
    y = degrade.spectral_subtraction(x, RATE, rng, noise="white", snr_db=5.0, oversubtraction=2.0, floor_db=-30.0)
    noisy = degrade.add_noise(x, RATE, np.random.default_rng(0), noise="white", snr_db=5.0)
    assert np.mean((y - x) ** 2) < 0.5 * np.mean((noisy - x) ** 2)


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(BenchError, match="did you mean"):
        degrade.get_kind("lowpas")
