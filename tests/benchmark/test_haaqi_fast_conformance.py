"""The fast HAAQI (benchmark.haaqi.fast) against pyclarity's haaqi_v1.

Each case builds a music-like reference and a processed version, computes
pyclarity's ``haaqi_v1`` (numpy's global state seeded first, audiogram at the
6 HAAQI frequencies) and the fast HAAQI with the same seed, both from the raw
signals at the case's sample rate, and compares the combined index and the 4
features. The whole battery must agree within max |d| <= 1e-3 and
mean |d| <= 2e-4 on the combined index. The fast HAAQI's default threshold
noise is not pyclarity's stream (see benchmark.haaqi.fast.noise), so the
differences are of the size of pyclarity's own seed-to-seed variation
(~1e-7..1e-5 here); with noise="numpy-legacy" they are ~1e-9.
"""

from __future__ import annotations

import functools
import zlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.signal import butter, sosfilt

from benchmark.audiogram import builtin_audiograms
from benchmark.errors import AudioError
from benchmark.haaqi import HAAQI_FREQUENCIES_HZ
from benchmark.haaqi import fast

FEATURES = ("cep_high", "bm_sync5", "d_loud", "d_norm")
TOL_COMBINED = 1e-3
# Default ("fast") noise is another stream than numpy's, so features differ at the level of
# pyclarity against itself with another seed (up to 2.2e-3); 5e-3 still catches a wrong term.
TOL_FEATURE = 5e-3
# With noise="numpy-legacy" the draws are numpy's own: the model must then agree exactly.
TOL_LEGACY = 1e-6


def music(duration_s: float, rate: int, seed: int) -> np.ndarray:
    """Mono music-like test signal: harmonic notes with attack/decay envelopes and a bass line."""
    rng = np.random.RandomState(seed)
    n = int(round(duration_s * rate))
    t = np.arange(n) / rate
    out = np.zeros(n)
    note_s = 0.125
    for k in range(int(np.ceil(duration_s / note_s))):
        start = k * note_s
        seg = (t >= start) & (t < start + 2 * note_s)
        f0 = 196.0 * 2 ** (rng.randint(0, 19) / 12)
        env = (1 - np.exp(-(t[seg] - start) * 200)) * np.exp(-(t[seg] - start) * 8)
        for h in range(1, 9):
            out[seg] += env * np.sin(2 * np.pi * f0 * h * t[seg] + rng.rand() * 6.28) * 0.7 ** h
    out += 0.3 * np.sin(2 * np.pi * 55 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    return 0.2 * out / np.abs(out).max()


def _compress(x, rate, threshold=0.02, ratio=4.0):
    """Feed-forward compressor: 5-ms envelope, static ratio above threshold."""
    sos = butter(1, 1 / (2 * np.pi * 0.005) / (rate / 2), output="sos")
    env = np.maximum(sosfilt(sos, np.abs(x)), 1e-9)
    gain = np.where(env > threshold, (env / threshold) ** (1 / ratio - 1), 1.0)
    return x * gain


def _nalr(x, rate, levels):
    from clarity.enhancer.nalr import NALR
    from clarity.utils.audiogram import Audiogram as ClarityAudiogram

    nfir = 220 if rate > 30000 else 140
    enhancer = NALR(nfir, rate)
    fir, _ = enhancer.build(ClarityAudiogram(levels=np.asarray(levels, float),
                                             frequencies=np.array(HAAQI_FREQUENCIES_HZ)))
    return enhancer.apply(fir, x)[nfir // 2: nfir // 2 + x.size]


def _condition(name: str, x: np.ndarray, rate: int, levels, rng) -> np.ndarray:
    kind, _, arg = name.partition(":")
    if kind == "identity":
        return x.copy()
    if kind == "delay":
        d = int(float(arg) * rate / 1000)
        return np.r_[np.zeros(d), x[:-d]]
    if kind == "gain":
        return x * 10 ** (float(arg) / 20)
    if kind == "noise":
        noise = rng.randn(x.size)
        return x + noise * np.sqrt(np.mean(x ** 2) / np.mean(noise ** 2)) * 10 ** (-float(arg) / 20)
    if kind in ("lowpass", "highpass"):
        sos = butter(8, float(arg) / (rate / 2), btype=kind[:-4] if kind == "lowpass" else "high",
                     output="sos")
        return sosfilt(sos, x)
    if kind == "clip":
        c = float(arg) * np.abs(x).max()
        return np.clip(x, -c, c)
    if kind == "compress":
        return _compress(x, rate)
    if kind == "nalr":
        return _nalr(x, rate, levels)
    raise ValueError(name)


@dataclass(frozen=True)
class Case:
    group: str
    condition: str
    audiogram: str
    spl_db: float
    rate: int
    duration_s: float
    equalisation: int = 1
    seed: int = 0
    reference_nalr: bool = False

    @property
    def id(self) -> str:
        return (f"{self.condition}-{self.audiogram}-{self.spl_db:g}dB-{self.rate}-{self.duration_s:g}s"
                f"-eq{self.equalisation}{'-refnalr' if self.reference_nalr else ''}")


C = Case
CASES = [
    C("identity", "identity", "NH", 65, 24000, 1.0),
    C("identity", "identity", "moderate", 65, 44100, 1.0, 2),
    C("identity", "identity", "N4", 75, 16000, 0.5),
    C("identity", "identity", "S3", 55, 48000, 0.5, 2),
    C("delay", "delay:5", "mild", 65, 24000, 1.0),
    C("delay", "delay:20", "N5", 80, 44100, 0.5),
    C("delay", "delay:2", "NH", 45, 16000, 1.0, 2),
    C("level", "gain:6", "moderate", 65, 24000, 1.0),
    C("level", "gain:-10", "N4", 70, 48000, 0.5),
    C("level", "gain:3", "S2", 60, 16000, 0.5, 2),
    C("noise", "noise:20", "moderate", 65, 24000, 1.0, 2),
    C("noise", "noise:10", "moderate", 65, 44100, 1.0, 2),
    C("noise", "noise:0", "moderate", 65, 16000, 1.0, 2),
    C("noise", "noise:20", "NH", 85, 48000, 0.5),
    C("noise", "noise:5", "N6", 80, 24000, 0.5),
    C("noise", "noise:10", "S2", 45, 24000, 0.75, 1, 7),
    C("noise", "noise:30", "mild", 55, 44100, 2.0),
    C("lowpass", "lowpass:4000", "moderate", 65, 24000, 1.0, 2),
    C("lowpass", "lowpass:2000", "moderate", 65, 44100, 1.0, 2),
    C("lowpass", "lowpass:2000", "moderate", 45, 16000, 0.5, 2),
    C("lowpass", "lowpass:2000", "moderate", 85, 48000, 0.5, 2),
    C("lowpass", "lowpass:1000", "S3", 70, 24000, 0.5),
    C("highpass", "highpass:500", "NH", 65, 24000, 1.0),
    C("highpass", "highpass:1000", "N5", 75, 44100, 0.5),
    C("highpass", "highpass:300", "mild", 55, 16000, 0.5, 2),
    C("clip", "clip:0.3", "moderate", 65, 24000, 1.0, 2),
    C("clip", "clip:0.1", "N4", 75, 48000, 0.5),
    C("clip", "clip:0.5", "NH", 50, 16000, 0.5),
    C("compress", "compress", "moderate", 65, 24000, 1.0, 2),
    C("compress", "compress", "S2", 70, 44100, 0.5),
    C("compress", "compress", "N6", 85, 16000, 0.5, 1, 3),
    C("nalr", "nalr", "moderate", 65, 24000, 1.0, 1),
    C("nalr", "nalr", "N4", 65, 44100, 1.0, 1),
    C("nalr", "nalr", "S3", 60, 16000, 0.5, 1),
    C("nalr", "identity", "moderate", 65, 24000, 1.0, 2, reference_nalr=True),
    C("nalr", "identity", "N5", 70, 48000, 0.5, 2, reference_nalr=True),
    C("nalr", "identity", "mild", 55, 16000, 0.5, 2, reference_nalr=True),
    C("seed", "noise:10", "moderate", 65, 24000, 0.5, 2, 12345),
    C("seed", "lowpass:3000", "N4", 65, 24000, 0.5, 1, 2**31 + 5),
    C("long", "noise:15", "N5", 70, 44100, 3.0, 2),
    C("long", "lowpass:2500", "moderate", 65, 48000, 2.0),
    C("long", "compress", "NH", 60, 16000, 5.0, 1),
]
SLOW_CASES = [C("slow", "noise:10", "moderate", 65, 44100, 20.0, 2)]


def _levels(name: str) -> np.ndarray:
    return builtin_audiograms()[name].at(HAAQI_FREQUENCIES_HZ)


def _signals(case: Case):
    rng = np.random.RandomState(zlib.crc32(case.id.encode()))
    clean = music(case.duration_s, case.rate, case.seed)
    levels = _levels(case.audiogram)
    reference = _nalr(clean, case.rate, levels) if case.reference_nalr else clean
    processed = _condition(case.condition, clean, case.rate, levels, rng)
    level1 = case.spl_db - 20 * np.log10(np.sqrt(np.mean(clean ** 2)))
    return reference, processed, levels, level1


def _pyclarity(reference, processed, rate, levels, level1, equalisation, seed):
    from clarity.evaluator.haaqi import haaqi_v1
    from clarity.utils.audiogram import Audiogram as ClarityAudiogram

    audiogram = ClarityAudiogram(levels=np.asarray(levels, float), frequencies=np.array(HAAQI_FREQUENCIES_HZ))
    np.random.seed(seed % 2**32)
    combined, _, _, raw = haaqi_v1(reference=reference, reference_freq=rate, processed=processed,
                                   processed_freq=rate, audiogram=audiogram,
                                   equalisation=equalisation, level1=level1)
    return {"haaqi": float(combined), **dict(zip(FEATURES, map(float, raw)))}


@functools.lru_cache(maxsize=None)
def _result(case: Case) -> dict[str, float]:
    """|fast - pyclarity| for the combined index and each feature, plus both values."""
    reference, processed, levels, level1 = _signals(case)
    want = _pyclarity(reference, processed, case.rate, levels, level1, case.equalisation, case.seed)
    kwargs = dict(reference=reference, processed=processed, sample_rate_hz=case.rate,
                  levels_db_hl=levels, level1_db_spl=level1, equalisation=case.equalisation,
                  seed=case.seed)
    got = fast.haaqi(**kwargs).as_dict()
    legacy = fast.haaqi(**kwargs, noise="numpy-legacy").as_dict()
    return {**{k: abs(got[k] - want[k]) for k in want},
            **{f"legacy_{k}": abs(legacy[k] - want[k]) for k in want},
            "pyclarity": want["haaqi"], "fast": got["haaqi"]}


def _check_case(case: Case) -> None:
    res = _result(case)
    assert res["haaqi"] <= TOL_COMBINED, (case.id, res)
    for name in FEATURES:
        assert res[name] <= TOL_FEATURE, (case.id, name, res)
    for name in ("haaqi", *FEATURES):  # same model, same draws -> same numbers
        assert res[f"legacy_{name}"] <= TOL_LEGACY, (case.id, name, res)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_conformance(case):
    _check_case(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES, ids=[c.id for c in SLOW_CASES])
def test_conformance_long(case):
    _check_case(case)


def test_battery_summary():
    """max |d| <= 1e-3 and mean |d| <= 2e-4 over the whole battery; prints a table per group."""
    rows = [(c, _result(c)) for c in CASES]
    deltas = np.array([r["haaqi"] for _, r in rows])
    by_group = defaultdict(list)
    for c, r in rows:
        by_group[c.group].append(r)
    print(f"\n{'group':<10} {'n':>3} {'max|d| HAAQI':>13} {'mean|d| HAAQI':>14} {'max|d| feature':>15} "
          f"{'HAAQI range (pyclarity)':>24}")
    for group, rs in by_group.items():
        d = np.array([r["haaqi"] for r in rs])
        f = max(max(r[k] for k in FEATURES) for r in rs)
        vals = [r["pyclarity"] for r in rs]
        print(f"{group:<10} {len(rs):>3} {d.max():>13.2e} {d.mean():>14.2e} {f:>15.2e} "
              f"{min(vals):>11.3f} .. {max(vals):.3f}")
    print(f"{'all':<10} {len(rows):>3} {deltas.max():>13.2e} {deltas.mean():>14.2e}")
    assert len(rows) >= 40
    assert deltas.max() <= 1e-3
    assert deltas.mean() <= 2e-4


# pyclarity's own regression values (tests/evaluator/haaqi/test_haaqi.py in claritychallenge/clarity):
# the threshold noise continues numpy's stream after the two uniform draws, so the fast
# HAAQI is given that RandomState, in the numpy-legacy noise mode.
REGRESSION = [
    (0, [45, 45, 35, 45, 60, 65], 0.111290948),
    (42, [10, 20, 30, 40, 50, 60], 0.113759275),
]


def _regression_signals(seed):
    rs = np.random.RandomState(seed)
    first = rs.uniform(-1, 1, 8000)
    second = rs.uniform(-1, 1, 8000)
    # haaqi_v1's test uses (reference, processed) = (first, second); compute_haaqi's test
    # draws the processed signal first.
    reference, processed = (first, second) if seed == 0 else (second, first)
    return rs, reference, processed


@pytest.mark.parametrize("seed, levels, expected", REGRESSION)
def test_pyclarity_regression_values(seed, levels, expected):
    rs, reference, processed = _regression_signals(seed)
    score = fast.haaqi(reference=reference, processed=processed, sample_rate_hz=16000,
                       levels_db_hl=levels, level1_db_spl=65.0, equalisation=1, seed=rs,
                       noise="numpy-legacy")
    assert score.haaqi == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("seed, levels, expected", REGRESSION)
def test_pyclarity_regression_values_default_noise(seed, levels, expected):
    """Default (fast) noise: as close as another pyclarity seed would be.

    On these 0.5-s full-band noise signals with a severe loss the threshold
    noise matters more than on music: over seeds 0..19 pyclarity's own HAAQI
    spreads by a standard deviation of 4e-5 and up to 1.5e-4 around the
    regression value, and the fast noise gives the same spread. So the bound
    here is 3e-4, not the 1e-5 one might hope for.
    """
    _, reference, processed = _regression_signals(seed)
    score = fast.haaqi(reference=reference, processed=processed, sample_rate_hz=16000,
                       levels_db_hl=levels, level1_db_spl=65.0, equalisation=1, seed=seed)
    assert score.haaqi == pytest.approx(expected, abs=3e-4)


def test_seed_matches_fresh_global_seed():
    """An int seed in numpy-legacy mode gives the draws of np.random.seed(seed); the global state is untouched."""
    rs = np.random.RandomState(0)
    x, y = rs.uniform(-1, 1, 8000), rs.uniform(-1, 1, 8000)
    np.random.seed(99)
    before = np.random.get_state()[1].copy()
    kw = dict(reference=x, processed=y, sample_rate_hz=16000, levels_db_hl=[45, 45, 35, 45, 60, 65],
              level1_db_spl=65.0, equalisation=1, seed=0)
    got = fast.haaqi(**kw, noise="numpy-legacy").haaqi
    default = fast.haaqi(**kw).haaqi
    assert np.array_equal(np.random.get_state()[1], before)
    want = _pyclarity(x, y, 16000, [45, 45, 35, 45, 60, 65], 65.0, 1, 0)["haaqi"]
    assert got == pytest.approx(want, abs=1e-9)
    assert default == pytest.approx(want, abs=3e-4)
    assert fast.haaqi(**kw).haaqi == default            # reproducible
    assert fast.haaqi(**{**kw, "seed": 1}).haaqi != default


def test_noise_modes_checked():
    from benchmark.errors import BenchError

    x = music(0.5, 16000, 0)
    kw = dict(reference=x, processed=x, sample_rate_hz=16000, levels_db_hl=[20] * 6,
              level1_db_spl=65.0, equalisation=1)
    with pytest.raises(BenchError, match="noise"):
        fast.haaqi(**kw, seed=0, noise="mt")
    with pytest.raises(BenchError, match="numpy-legacy"):
        fast.haaqi(**kw, seed=np.random.RandomState(0))


def test_fast_noise_substreams():
    """Band k of each side has its own stream, independent of n and of the other bands."""
    from benchmark.haaqi.fast.noise import band_noise

    a, b = band_noise(7, 1000), band_noise(7, 500)
    r3 = a.reference(3, np.empty(1000))
    assert np.array_equal(b.reference(3, np.empty(500)), r3[:500])
    p3 = a.processed(3, np.empty(1000))
    assert not np.allclose(p3, r3)
    assert abs(np.corrcoef(p3, r3)[0, 1]) < 0.15
    big = band_noise(7, 200000).reference(0, np.empty(200000))
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1) < 0.01


def test_noise_stream_equals_numpy():
    from benchmark.haaqi.fast.noise import GaussStream

    stream = GaussStream(2024)
    parts = [np.empty(k) for k in (1, 3, 624, 1001, 7)]
    for p in parts:
        stream.fill(p)
    np.random.seed(2024)
    assert np.array_equal(np.concatenate(parts), np.random.standard_normal(sum(p.size for p in parts)))
    skipped = GaussStream(2024)
    skipped.skip(1005)
    tail = np.empty(100)
    skipped.fill(tail)
    np.random.seed(2024)
    assert np.array_equal(tail, np.random.standard_normal(1105)[1005:])
    # a RandomState mid-block (word position not a multiple of 4): copied, not advanced
    rs = np.random.RandomState(3)
    rs.randint(2**31)
    odd = np.empty(2000)
    GaussStream(rs).fill(odd)
    assert np.array_equal(odd, rs.standard_normal(2000))


def test_score_many_equals_haaqi_per_pair():
    rate = 24000
    reference = music(0.75, rate, 5)
    rng = np.random.RandomState(1)
    procs = [reference + 0.02 * rng.randn(reference.size), np.clip(reference, -0.05, 0.05),
             _condition("lowpass:2000", reference, rate, None, rng), reference * 0.5]
    kw = dict(sample_rate_hz=rate, levels_db_hl=_levels("N4"), level1_db_spl=80.0, equalisation=1, seed=11)
    many = fast.score_many(reference=reference, processed_list=procs, **kw)
    single = [fast.haaqi(reference=reference, processed=p, **kw) for p in procs]
    assert many == single


@pytest.mark.parametrize("what, reference, processed, match", [
    ("zero reference", np.zeros(8000), np.ones(8000), "all zeros"),
    ("nan reference", np.r_[np.full(7999, 0.1), np.nan], np.ones(8000), "NaN"),
    ("nan processed", np.ones(8000), np.r_[np.nan, np.full(7999, 0.1)], "NaN"),
    ("length mismatch", np.ones(8000), np.ones(7000), "samples"),
    ("2-D", np.ones((2, 8000)), np.ones((2, 8000)), "1-D"),
    ("empty", np.zeros(0), np.zeros(0), "empty"),
    ("too short", np.r_[1.0, np.zeros(99)], np.r_[1.0, np.zeros(99)], "needs at least"),
])
def test_bad_inputs_raise_audio_error(what, reference, processed, match):
    with pytest.raises(AudioError, match=match):
        fast.haaqi(reference=reference, processed=processed, sample_rate_hz=16000,
                   levels_db_hl=[20] * 6, level1_db_spl=65.0, equalisation=1, seed=0)


def test_score_many_rejects_bad_member():
    x = music(0.5, 16000, 0)
    with pytest.raises(AudioError, match="processed signal 1"):
        fast.score_many(reference=x, processed_list=[x, x[:-1]], sample_rate_hz=16000,
                        levels_db_hl=[20] * 6, level1_db_spl=65.0, equalisation=1, seed=0)
