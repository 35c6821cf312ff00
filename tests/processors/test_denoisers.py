"""Known-answer tests for the denoisers: spectral-gating, mmse-stsa, deepfilternet, rnnoise.

Each denoiser gets a fixed noisy mixture (seeded) on which it must raise the
SI-SDR against the clean signal by a stated margin. The margins sit well below
what was measured when the tests were written (given beside each assert) and
well above 0 dB. Signals are 1.5-2 s long so every test takes about a second.
"""

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.signal import correlate, lfilter
from scipy.special import i0e

from benchmark.audiogram import Listener, builtin_audiograms
from benchmark.calibration import calibrate
from benchmark.errors import BenchError
from processors import registry
from processors.base import Presentation
from processors.mmse_stsa import enhance, initial_noise_psd, mmse_stsa_gain

AUDIOGRAMS = builtin_audiograms()
LISTENER = Listener("N3", AUDIOGRAMS["N3"], AUDIOGRAMS["N3"])
SNR_DB = 5.0


# -- signals ---------------------------------------------------------------------
def notes(rate: int, duration_s: float, *, note_s: float = 0.25, on_s: float | None = None,
          seed: int = 0) -> np.ndarray:
    """Harmonic notes (10 partials, 1/h), decaying; with ``on_s`` < ``note_s`` a rest follows
    each note. 1-D float64, peak 0.1."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * rate)) / rate
    x = np.zeros_like(t)
    on_s = note_s if on_s is None else on_s
    for k in range(int(math.ceil(duration_s / note_s))):
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        seg = (t >= k * note_s) & (t < k * note_s + on_s)
        tt = t[seg] - k * note_s
        env = np.exp(-3.0 * tt)
        if on_s < note_s:  # 10 ms attack, 20 ms release before the rest
            env *= np.minimum(1.0, tt / 0.01) * np.minimum(1.0, (on_s - tt) / 0.02)
        for h in range(1, 11):
            x[seg] += env * np.sin(2 * np.pi * f0 * h * t[seg] + h) / h
    return 0.1 * x / np.abs(x).max()


def speech_like(rate: int, duration_s: float, seed: int = 0) -> np.ndarray:
    """Vowel-like syllables: a 120-Hz pulse train with vibrato through three formant
    resonators, 200 ms on / 100 ms off. 1-D float64, peak 0.1."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * rate)
    t = np.arange(n) / rate
    f0 = 120.0 + 15.0 * np.sin(2 * np.pi * 0.7 * t)
    pulses = np.diff(np.floor(np.cumsum(f0 / rate)), prepend=0.0)
    source = lfilter([1.0], [1.0, -0.95], pulses)
    y = np.zeros(n)
    for k in range(int(math.ceil(duration_s / 0.3))):
        seg = (t >= k * 0.3) & (t < k * 0.3 + 0.2)
        env = np.sin(np.pi * (t[seg] - k * 0.3) / 0.2)
        formants = (rng.uniform(300, 800), rng.uniform(900, 2200), rng.uniform(2400, 3000))
        v = np.zeros(seg.sum())
        for f, bw in zip(formants, (80.0, 100.0, 150.0)):
            r = math.exp(-math.pi * bw / rate)
            v += lfilter([1 - r], [1.0, -2 * r * math.cos(2 * math.pi * f / rate), r * r], source[seg])
        y[seg] = v * env
    return 0.1 * y / np.abs(y).max()


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=float)
    f[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(f), n)


def mixture(clean: np.ndarray, noise: str, snr_db: float = SNR_DB, seed: int = 1,
            active: slice = slice(None)) -> np.ndarray:
    """``clean`` plus white or pink noise at ``snr_db`` (signal power over ``active``)."""
    rng = np.random.default_rng(seed)
    n = rng.standard_normal(clean.size) if noise == "white" else pink_noise(clean.size, rng)
    n *= np.std(clean[active]) / np.std(n) / 10 ** (snr_db / 20)
    return clean + n


def si_sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR (Le Roux et al. 2019) in dB."""
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    target = np.dot(estimate, reference) / np.dot(reference, reference) * reference
    return 10 * np.log10(np.sum(target ** 2) / np.sum((estimate - target) ** 2))


def run(name: str, noisy: np.ndarray, rate: int, params: dict | None = None) -> np.ndarray:
    x = noisy[None, :].astype(np.float32)
    presentation = Presentation(rate, LISTENER, calibrate(x, 65.0), ("left",))
    y = registry.create(name, params or {}).process(x, presentation, rng=np.random.default_rng(0))
    assert y.shape == x.shape and y.dtype == np.float32
    return y[0].astype(np.float64)


def improvement_db(name: str, clean: np.ndarray, noisy: np.ndarray, rate: int,
                   params: dict | None = None) -> float:
    return si_sdr_db(clean, run(name, noisy, rate, params)) - si_sdr_db(clean, noisy)


def lag_samples(clean: np.ndarray, out: np.ndarray, max_lag: int = 2000) -> int:
    c = correlate(out, clean, mode="full")
    lags = np.arange(-clean.size + 1, out.size)
    near = np.abs(lags) <= max_lag
    return int(lags[near][np.argmax(np.abs(c[near]))])


def have_pyrnnoise() -> bool:
    try:
        import pyrnnoise.rnnoise  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


needs_pyrnnoise = pytest.mark.skipif(not have_pyrnnoise(),
                                     reason="pyrnnoise (pip install haaqi-bench[rnnoise]) not installed")


# -- spectral gating (noisereduce) -------------------------------------------------------
def test_spectral_gating_nonstationary_improves_music_with_rests():
    rate = 44100
    clean = notes(rate, 2.0, note_s=0.3, on_s=0.2)
    gain = improvement_db("spectral-gating", clean, mixture(clean, "white"), rate)
    assert gain >= 1.5, gain  # measured +3.0 dB


def test_spectral_gating_stationary_with_a_noise_clip():
    rate = 44100
    lead = int(0.5 * rate)  # 0.5 s of noise alone, then music
    clean = np.concatenate([np.zeros(lead), notes(rate, 1.5)])
    noisy = mixture(clean, "white", active=slice(lead, None))
    gain = improvement_db("spectral-gating", clean, noisy, rate,
                          {"stationary": "true", "noise_clip_s": "0.5"})
    assert gain >= 3.5, gain  # measured +7.0 dB


def test_spectral_gating_prop_decrease_zero_is_identity():
    rate = 24000
    noisy = mixture(notes(rate, 1.0), "white")
    out = run("spectral-gating", noisy, rate, {"prop_decrease": "0"})
    np.testing.assert_allclose(out, noisy, atol=1e-6)


def test_spectral_gating_rejects_bad_settings():
    with pytest.raises(BenchError, match="stationary mode only"):
        registry.create("spectral-gating", {"noise_clip_s": "0.5"})
    with pytest.raises(BenchError):
        registry.create("spectral-gating", {"prop_decrease": "1.5"})
    with pytest.raises(BenchError, match="at 24000 Hz"):  # smoothing narrower than a bin
        run("spectral-gating", notes(24000, 0.5), 24000, {"freq_mask_smooth_hz": "10"})


# -- MMSE-STSA -------------------------------------------------------------------------------
@pytest.mark.parametrize("noise, margin_db", [("white", 5.0), ("pink", 3.5)])
def test_mmse_stsa_improves_music(noise, margin_db):
    rate = 44100
    clean = notes(rate, 2.0)
    gain = improvement_db("mmse-stsa", clean, mixture(clean, noise), rate)
    assert gain >= margin_db, gain  # measured +9.5 dB (white), +6.8 dB (pink)


def test_mmse_stsa_output_is_aligned():
    rate = 24000
    clean = notes(rate, 1.5, note_s=0.13)
    assert lag_samples(clean, run("mmse-stsa", mixture(clean, "white", 20.0), rate)) == 0


def test_mmse_stsa_gain_matches_the_posterior_mean_by_quadrature():
    """G = E[A | Y] / |Y| for complex Gaussian speech and noise (Ephraim & Malah 1984),
    computed here by numerical integration of the Rician posterior of the amplitude."""
    for xi, gamma in [(0.1, 0.5), (1.0, 1.0), (1.0, 4.0), (10.0, 3.0), (3.0, 30.0)]:
        noise_var, speech_var = 1.0, xi
        r = math.sqrt(gamma * noise_var)  # |Y|

        def weight(a, power):  # a**power * p(a | Y) up to a constant, overflow-free
            arg = 2 * a * r / noise_var
            return a ** power * a * math.exp(-a * a / speech_var - (a - r) ** 2 / noise_var) * i0e(arg)

        upper = 10 * (r + math.sqrt(speech_var))
        mean = quad(weight, 0, upper, args=(1,))[0] / quad(weight, 0, upper, args=(0,))[0]
        expected = mean / r
        got = float(mmse_stsa_gain(np.array([xi]), np.array([gamma]))[0])
        assert got == pytest.approx(expected, rel=1e-6), (xi, gamma)
    # high SNR: the Wiener gain xi / (1 + xi)
    assert float(mmse_stsa_gain(np.array([1000.0]), np.array([1001.0]))[0]) == pytest.approx(
        1000 / 1001, rel=1e-3)


def tracker_fixed_point_db() -> float:
    """Where the Gerkmann-Hendriks update settles on noise alone, by quadrature.

    With P ~ Exp(1) (noise of unit PSD) and the estimate s, the update keeps s when
    s = E[(1 - p) P + p s] with p = 1 / (1 + (1 + xi) exp(-P / s * xi / (1 + xi))),
    xi = 15 dB. The fixed point lies about 0.9 dB below 1: the method as published
    slightly underestimates the noise (the stall cap is ignored here).
    """
    from scipy.optimize import brentq

    xi = 10 ** 1.5

    def update(s):
        def integrand(u):
            p = 1 / (1 + (1 + xi) * math.exp(-u / s * xi / (1 + xi)))
            return ((1 - p) * u + p * s) * math.exp(-u)
        return quad(integrand, 0, 60)[0] - s

    return 10 * math.log10(brentq(update, 0.3, 1.0))


def test_noise_tracker_settles_where_theory_says_and_follows_a_level_step():
    """Gerkmann & Hendriks on white noise: the tracked PSD settles at the fixed point of
    the update (about -0.9 dB; measured -1.2 dB), and follows a +10 dB step within a second."""
    rate, n_fft, hop = 16000, 512, 256  # the paper's 32-ms frames at 50 % overlap
    rng = np.random.default_rng(3)
    x = rng.standard_normal(8 * rate)
    x[4 * rate:] *= math.sqrt(10.0)  # +10 dB after 4 s
    _, noise = enhance(x, n_fft, hop, hop_s=hop / rate, gain_floor_db=-15.0, xi_min_db=-25.0,
                       dd_weight=0.98, noise_time_constant_ms=71.7, return_noise=True)
    expected = n_fft / 2  # E|X_k|^2 = var * sum(w^2) for the square-root Hann window, var = 1
    frame_s = (np.arange(noise.shape[0]) * hop - (n_fft - hop)) / rate
    bins = slice(5, -5)  # away from DC and Nyquist

    def level_db(t0, t1, true_psd):
        return 10 * np.log10(np.mean(noise[(frame_s > t0) & (frame_s < t1), bins]) / true_psd)

    theory = tracker_fixed_point_db()
    assert -1.3 < theory < -0.9
    before, after = level_db(1.0, 3.9, expected), level_db(5.0, 8.0, 10 * expected)
    assert abs(before - theory) < 0.4, (before, theory)  # measured -1.16 dB
    assert abs(after - theory) < 0.4, (after, theory)
    # 10 dB up, it is within 1 dB of its settled level a second later (measured: 0.9 s)
    assert level_db(4.95, 5.05, 10 * expected) > theory - 1.0
    assert level_db(4.15, 4.25, 10 * expected) < theory - 3.0  # a tracker, not a jump


def test_initial_noise_psd_is_bias_corrected():
    power = np.random.default_rng(0).exponential(2.0, size=(20000, 3))
    np.testing.assert_allclose(initial_noise_psd(power), 2.0, rtol=0.05)


def test_mmse_stsa_gain_floor_bounds_the_attenuation():
    rate = 24000
    noise = 0.05 * np.random.default_rng(5).standard_normal(rate)
    for floor_db in (-6.0, -15.0):
        out = run("mmse-stsa", noise, rate, {"gain_floor_db": str(floor_db)})
        drop_db = 20 * np.log10(np.std(out[rate // 4:]) / np.std(noise[rate // 4:]))
        assert floor_db - 0.5 <= drop_db <= floor_db + 3.0, (floor_db, drop_db)


# -- DeepFilterNet3 --------------------------------------------------------------------------
def test_deepfilternet_improves_speech_like_signal_in_noise():
    rate = 44100  # resampled to 48 kHz and back
    clean = speech_like(rate, 1.8)
    gain = improvement_db("deepfilternet", clean, mixture(clean, "white"), rate)
    assert gain >= 4.0, gain  # measured +8.2 dB (attenuation limit 12 dB)


@pytest.mark.parametrize("limit_db", [6.0, 12.0])
def test_deepfilternet_attenuation_limit_holds_on_noise_alone(limit_db):
    rate = 24000
    noise = 0.05 * np.random.default_rng(0).standard_normal(int(1.5 * rate))
    out = run("deepfilternet", noise, rate, {"atten_limit_db": str(limit_db)})
    drop_db = -20 * np.log10(np.std(out[rate // 2:]) / np.std(noise[rate // 2:]))
    assert abs(drop_db - limit_db) < 1.0, drop_db  # measured limit + 0.35 dB


def test_deepfilternet_output_is_aligned():
    rate = 44100
    clean = speech_like(rate, 1.2)
    assert abs(lag_samples(clean, run("deepfilternet", mixture(clean, "white", 20.0), rate))) <= 1


def test_deepfilternet_rejects_a_zero_limit():
    with pytest.raises(BenchError, match="above 0 dB"):
        registry.create("deepfilternet", {"atten_limit_db": "0"})


# -- RNNoise (optional) ------------------------------------------------------------------------
@needs_pyrnnoise
def test_rnnoise_improves_music_with_rests():
    rate = 44100
    clean = notes(rate, 2.0, note_s=0.3, on_s=0.2)
    gain = improvement_db("rnnoise", clean, mixture(clean, "white"), rate)
    assert gain >= 4.0, gain  # measured +8.4 dB


@needs_pyrnnoise
def test_rnnoise_output_is_aligned_and_mix_zero_is_identity():
    rate = 48000
    clean = notes(rate, 1.2, note_s=0.13)
    noisy = mixture(clean, "white", 20.0)
    assert abs(lag_samples(clean, run("rnnoise", noisy, rate))) <= 1
    np.testing.assert_allclose(run("rnnoise", noisy, rate, {"mix": "0"}), noisy, atol=1e-6)


def test_rnnoise_without_pyrnnoise_says_how_to_install(monkeypatch):
    from processors import rnnoise

    rnnoise._library.cache_clear()
    monkeypatch.setitem(__import__("sys").modules, "pyrnnoise", None)  # import fails
    try:
        with pytest.raises(BenchError, match=r"pip install haaqi-bench\[rnnoise\]"):
            run("rnnoise", notes(48000, 0.2), 48000)
    finally:
        rnnoise._library.cache_clear()
