"""The fast HAAQI's numba kernels (benchmark.haaqi.fast.filters, .noise, .ear_model), one by one.

The four-lane kernels (``*_lanes``) step four filters in the lanes of one
AVX2 register. A filter's output must be the same bits in whichever lane and
next to whichever other filters it runs (that is what makes
``score_many(ref, [p1..pN])[i] == haaqi(ref, pi)`` hold for any N), and close
to a plain float64 implementation of the same filter (scipy.signal.lfilter).
The shortcuts (compression gain of clipped blocks, covariance tiles of no
weight, alignment by offsets instead of shifted copies) must give what the
plain computation gives.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter

from benchmark.haaqi import fast
from benchmark.haaqi.fast import ear_model, filters, noise

FS = 24000.0
LANES = filters.LANES


def _rng(seed=0):
    return np.random.default_rng(seed)


def _signals(n_rows, n, seed=0):
    """Band-limited noise bursts with silent stretches (the filters see decays to tiny values)."""
    rng = _rng(seed)
    x = rng.standard_normal((n_rows, n)) * 0.05
    x[:, n // 3: n // 3 + n // 10] = 0.0
    return x


# --- four-lane kernels: lane independence (bit-exact) ----------------------------------------

def _placements(n_chains, rng, trials=6):
    """(chain of interest, lane tuples): the chain alone in all lanes, then in each lane among others."""
    target = 0
    yield target, (target,) * LANES
    for j in range(LANES):
        others = list(rng.integers(1, n_chains, LANES))
        others[j] = target
        yield target, tuple(int(c) for c in others)
    for _ in range(trials):
        lanes = [int(c) for c in rng.integers(0, n_chains, LANES)]
        if target in lanes:
            yield target, tuple(lanes)


def _lane_parameters(chains, lanes):
    """Input rows, bandwidths and centre frequencies of the chains (row, bw, cf) placed in ``lanes``."""
    return tuple(np.array([chains[c][field] for c in lanes]) for field in range(3))


def test_gammatone_envelope_lanes_same_bits_in_any_lane():
    rng = _rng(1)
    n = 5000
    x = _signals(3, n)
    # chains: (input row, bandwidth, centre frequency)
    chains = [(0, 1.3, 250.0), (1, 2.0, 80.0), (2, 1.1, 7900.0), (0, 3.0, 1000.0), (1, 1.0, 250.0)]
    results = []
    for target, lanes in _placements(len(chains), rng):
        rows, bw, cf = _lane_parameters(chains, lanes)
        out_rows = np.arange(LANES)
        env = np.full((LANES, n), np.nan)
        peak = np.full((LANES, -(-n // filters.GAIN_BLOCK)), np.nan)
        ms = np.empty(LANES)
        filters.gammatone_envelope_lanes(x, rows, bw, cf, FS, env, peak, out_rows, True, ms)
        for j, c in enumerate(lanes):
            if c == target:
                results.append((env[j].copy(), peak[j].copy(), ms[j]))
        ms2 = np.empty(LANES)
        filters.gammatone_envelope_lanes(x, rows, bw, cf, FS, env, peak, out_rows, False, ms2)
        assert np.array_equal(ms, ms2)          # storing or not does not change the arithmetic
    first = results[0]
    for env, peak, ms in results[1:]:
        assert np.array_equal(env, first[0]) and np.array_equal(peak, first[1]) and ms == first[2]


def test_gammatone_compressed_lanes_same_bits_in_any_lane():
    rng = _rng(2)
    n = 5000
    x = _signals(3, n)
    gain = 0.5 + _rng(3).random((5, n))
    lowpass = np.array([0.095, 0.095, -0.81])
    chains = [(0, 1.3, 250.0), (1, 2.0, 80.0), (2, 1.1, 7900.0), (0, 3.0, 1000.0), (1, 1.0, 250.0)]
    results = []
    for target, lanes in _placements(len(chains), rng):
        rows, bw, cf = _lane_parameters(chains, lanes)
        # each chain has its own gain row; duplicate lanes share one output row
        out_rows = np.array(lanes)
        env, bm = np.full((5, n), np.nan), np.full((5, n), np.nan)
        ms, peak = np.empty(LANES), np.empty(LANES)
        filters.gammatone_compressed_lanes(x, rows, bw, cf, FS, gain, lowpass, env, bm, out_rows, ms, peak)
        j = lanes.index(target)
        assert peak[j] == env[target].max()
        results.append((env[target].copy(), bm[target].copy(), ms[j]))
    first = results[0]
    for env, bm, ms in results[1:]:
        assert np.array_equal(env, first[0]) and np.array_equal(bm, first[1]) and ms == first[2]


def test_ihc_adaptation_lanes_same_bits_in_any_lane():
    rng = _rng(4)
    n = 4000
    db = np.maximum(_rng(5).standard_normal((5, n)) * 20 + 10, 0.0)
    db[:, 1000:2500] = 0.0                       # long silence: the state decays towards 0
    shifts = [0, 7, 31, 3, 0]
    results = []
    for target, lanes in _placements(5, rng):
        rows = np.array(lanes)
        out = np.full((5, n), np.nan)
        filters.ihc_adaptation_lanes(db, rows, np.array([shifts[c] for c in lanes]), FS, out, rows)
        results.append(out[target].copy())
    assert not np.isnan(results[0]).any()
    for r in results[1:]:
        assert np.array_equal(r, results[0])


# --- four-lane kernels: accuracy against plain float64 filters ------------------------------

def _gammatone_reference(x, bandwidth, centre_hz):
    """Cooke/Ma gammatone by scipy.signal.lfilter: (envelope, BM motion, gain, c, s)."""
    erb = 24.7 + centre_hz / 9.26449
    a = math.exp(-bandwidth * (2.0 * math.pi / FS) * erb * 1.019)
    b_coef = [1.0, 4 * a, 4 * a * a]
    a_coef = [1.0, -4 * a, 6 * a * a, -4 * a ** 3, a ** 4]
    gain = 2.0 * (1.0 - 4 * a + 6 * a * a - 4 * a ** 3 + a ** 4) / (1.0 + 4 * a + 4 * a * a)
    phase = 2 * np.pi * centre_hz / FS * np.arange(x.size)
    c, s = np.cos(phase), -np.sin(phase)
    yr, yi = lfilter(b_coef, a_coef, x * c), lfilter(b_coef, a_coef, x * s)
    return gain * np.hypot(yr, yi), gain * (yr * c + yi * s)


# The 4-pole IIR of a low band has its poles close to 1 (ill-conditioned): two correct float64
# implementations differ there by a few 1e-9 of the envelope's peak (lfilter against the scalar
# kernel these lanes replaced: 3.6e-9 at 80 Hz), by ~1e-12 in the upper bands.
@pytest.mark.parametrize("bandwidth, centre_hz, tol", [(1.0, 80.0, 2e-8), (2.4, 1000.0, 1e-10), (1.2, 8000.0, 1e-10)])
def test_gammatone_lanes_match_lfilter(bandwidth, centre_hz, tol):
    n = 20000
    x = _signals(1, n, seed=6)
    env_ref, bm_ref = _gammatone_reference(x[0], bandwidth, centre_hz)
    rows = np.zeros(LANES, dtype=np.int64)
    bw, cf = np.full(LANES, bandwidth), np.full(LANES, centre_hz)
    env = np.empty((1, n))
    peak = np.empty((1, -(-n // filters.GAIN_BLOCK)))
    ms = np.empty(LANES)
    filters.gammatone_envelope_lanes(x, rows, bw, cf, FS, env, peak, rows, True, ms)
    scale = np.abs(env_ref).max()
    assert np.abs(env[0] - env_ref).max() <= tol * scale
    assert ms[0] == pytest.approx(np.mean(env_ref ** 2), rel=tol)
    blocks = np.pad(env[0], (0, peak.shape[1] * filters.GAIN_BLOCK - n)).reshape(-1, filters.GAIN_BLOCK)
    assert np.array_equal(peak[0], blocks.max(axis=1))

    gain = 0.2 + _rng(7).random((1, n))
    lowpass = np.array([0.095, 0.095, -0.81])
    env_c, bm_c = np.empty((1, n)), np.empty((1, n))
    filters.gammatone_compressed_lanes(x, rows, bw, cf, FS, gain, lowpass, env_c, bm_c, rows, ms, np.empty(LANES))
    smoothed = lfilter(lowpass[:2], [1.0, lowpass[2]], gain[0])
    assert np.abs(env_c[0] - smoothed * env_ref).max() <= tol * np.abs(smoothed * env_ref).max()
    assert np.abs(bm_c[0] - smoothed * bm_ref).max() <= tol * np.abs(smoothed * bm_ref).max()
    assert ms[0] == pytest.approx(np.mean(env_ref ** 2), rel=tol)


def _adaptation_reference(db, shift):
    """The IHC adaptation RC circuit, the textbook way (2x2 solve per sample)."""
    r1, r2 = 0.5, 0.25
    r3 = r2
    c1 = 0.002 * (r1 + r2) / (r1 * r2)
    c2 = 0.060 / ((r1 + r2) * r3)
    p1, p2 = r1 * r2 * c1 * FS, r2 * r3 * c2 * FS
    m = np.array([[r1 + r2 + p1, -r1], [-r3, r2 + r3 + p2]])
    v = np.zeros(2)
    out = np.zeros(db.size)
    for i in range(db.size - shift):
        v = np.linalg.solve(m, [db[i] * r2 + p1 * v[0], p2 * v[1]])
        out[i + shift] = max((db[i] - v[0]) / r1, 0.0)
    return out


def test_ihc_adaptation_lanes_match_reference():
    n = 3000
    db = np.maximum(_rng(8).standard_normal((LANES, n)) * 20 + 15, 0.0)
    shifts = np.array([0, 5, 17, 2])
    rows = np.arange(LANES)
    out = np.full((LANES, n), np.nan)
    filters.ihc_adaptation_lanes(db, rows, shifts, FS, out, rows)
    for j in range(LANES):
        want = _adaptation_reference(db[j], int(shifts[j]))
        assert np.abs(out[j] - want).max() <= 1e-12 * np.abs(want).max()


# --- element-wise passes and their shortcuts -------------------------------------------------

def test_compression_gain_skipped_blocks_are_exact():
    n = 10000
    level1, knee = 100.0, 50.0
    comp = np.array([level1, 20.0, knee, 2.2])
    lo = 10 ** ((knee - level1) / 20)
    control = np.abs(_rng(9).standard_normal(n)) * lo * 2
    control[2000:6000] = lo * 0.3                       # a stretch below the knee
    control[7000:7100] = 10 ** ((105 - level1) / 20)    # above 100 dB SPL
    nb = -(-n // filters.GAIN_BLOCK)
    peak = np.array([control[b * 64:(b + 1) * 64].max() for b in range(nb)])
    skipped, computed = control.copy(), control.copy()
    filters.compression_gain(skipped, peak, comp)
    filters.compression_gain(computed, np.full(nb, np.inf), comp)      # no block skipped
    assert np.array_equal(skipped, computed)
    slope = 1 - 1 / comp[3]
    clipped_db = np.clip(level1 + 20 * np.log10(control), knee, 100.0)
    want = 10 ** ((-comp[1] - (clipped_db - knee) * slope) / 20)
    assert np.abs(computed - want).max() <= 1e-13 * want.max()


def test_delayed_reads_match_shifted_copies():
    rng = _rng(10)
    n = 3000

    def shifted(x, d):
        out = np.zeros_like(x)
        if abs(d) >= n:
            return out
        if d >= 0:
            out[:n - d] = x[d:]
        else:
            out[-d:] = x[:n + d]
        return out

    for trial in range(60):
        bm, noise_draws = rng.standard_normal(n), rng.standard_normal(n)
        env = np.abs(rng.standard_normal(n))
        db = np.abs(rng.standard_normal(n)) * 10
        d_bm, d_env = (int(v) for v in rng.integers(-n - 5, n + 5, 2)) if trial % 4 == 0 else \
            (int(v) for v in rng.integers(-300, 300, 2))
        shift = int(rng.integers(0, 50)) if trial % 5 else int(rng.integers(0, n + 3))
        out = np.full(n, np.nan)
        filters.bm_output(bm, d_bm, env, d_env, db, noise_draws, 1e-3, shift, out)
        want = np.zeros(n)
        m = max(n - shift, 0)
        if m:
            want[shift:] = (shifted(bm, d_bm)[:m] * ((db[shift:] + 1e-30) / (shifted(env, d_env)[:m] + 1e-30))
                            + 1e-3 * noise_draws[:m])
        assert np.all(np.abs(out - want) <= 1e-13 * np.abs(want)), (trial, d_bm, d_env, shift)
        level = np.full(n, np.nan)
        filters.ihc_db(env, d_env, 100.0, 10.0, level)
        want_db = np.maximum(90.0 + 20 * np.log10(shifted(env, d_env) + 1e-30), 0.0)
        assert np.allclose(level, want_db, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("n", [768, 1000, 24001])
def test_env_smooth_matches_windowed_means(n):
    env = _rng(11).random(n) * 40
    seg, half = 192, 96
    nseg = 1 + n // seg + (n - half) // seg
    out = np.empty(nseg)
    filters.env_smooth(env, seg, out)
    w = np.hanning(seg)
    want = [env[:half] @ w[half:] / w[half:].sum()]
    want += [env[k * half:k * half + seg] @ w / w.sum() for k in range(1, nseg - 1)]
    want += [env[(nseg - 1) * half:nseg * half] @ w[:half] / w[half:].sum()]
    assert np.allclose(out, want, rtol=1e-12, atol=0)


def _covariance_reference(x, y, nwin=384, maxlag=24):
    """Per segment: peak |normalised cross-covariance| within +/- maxlag, and 2 x the reference mean square."""
    half = nwin // 2
    w = np.hanning(nwin)
    n_seg = 1 + x.size // nwin + (x.size - half) // nwin
    cov, ms = np.zeros(n_seg), np.zeros(n_seg)
    for k in range(n_seg):
        win = w[half:] if k == 0 else w[:half] if k == n_seg - 1 else w
        start = 0 if k == 0 else k * half
        a = x[start:start + win.size] * win
        b = y[start:start + win.size] * win
        a, b = a - a.mean(), b - b.mean()
        norm = np.correlate(win, win, "full")[win.size - 1 - maxlag:win.size + maxlag]
        pw = 1 / np.sum(win * win)
        sa, sb = np.sum(a * a) * pw, np.sum(b * b) * pw
        ms[k] = 2 * sa
        if sa > 1e-30 and sb > 1e-30:
            c = np.correlate(a, b, "full")[win.size - 1 - maxlag:win.size + maxlag] / norm
            cov[k] = min(max(np.abs(c).max() / np.sqrt(sa * sb), 0.0), 1.0)
    return cov, ms


def test_bm_covariance_matches_reference_and_skips_weightless_tiles():
    rng = _rng(12)
    n = 384 * 40
    x = rng.standard_normal(n) * 3
    x[5000:9000] *= 0.01                                  # quiet tiles (below the 2.5 RMS threshold)
    y = np.roll(x, 5) + rng.standard_normal(n)
    y[12000:13000] = 0.0                                  # a silent processed stretch
    windows = filters.covary_windows(ear_model.COV_SEGMENT, ear_model.COV_MAXLAG)
    n_seg = ear_model._segments(n, ear_model.COV_SEGMENT)
    segs = filters.covary_segments(n_seg, ear_model.COV_SEGMENT, ear_model.COV_MAXLAG)
    power, ref_ms, cov = np.empty(n_seg), np.empty(n_seg), np.empty(n_seg)
    filters.covary_reference(x, windows, ear_model.COV_MAXLAG, segs, power, ref_ms)
    filters.covary_processed(segs, power, ref_ms, 0.0, y, windows, cov)          # nothing skipped
    want_cov, want_ms = _covariance_reference(x, y)
    assert np.allclose(ref_ms, want_ms, rtol=1e-12, atol=0)
    assert np.abs(cov - want_cov).max() <= 2e-6
    skipped = np.empty(n_seg)
    filters.covary_processed(segs, power, ref_ms, ear_model.SILENCE_DB, y, windows, skipped)
    quiet = ~(np.sqrt(ref_ms) > ear_model.SILENCE_DB)
    assert quiet.any() and (~quiet).any()
    assert np.all(skipped[quiet] == 0.0) and np.array_equal(skipped[~quiet], cov[~quiet])


@pytest.mark.parametrize("m", [384, 192, 100, 33, 1])
def test_lag_sums_are_the_56_lag_products(m):
    rng = _rng(13)
    a = rng.standard_normal(m + filters.COV_LAGS - 1).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    out = np.full(filters.COV_LAGS + 3, np.nan, dtype=np.float32)
    filters._lag_sums(a, b, m, out)
    want = np.array([np.dot(a[j:j + m].astype(float), b.astype(float)) for j in range(filters.COV_LAGS)])
    assert np.abs(out[:filters.COV_LAGS] - want).max() <= 1e-6 * np.sqrt(m) * max(1.0, np.abs(want).max())
    assert np.all(np.isnan(out[filters.COV_LAGS:]))        # nothing written past the 56 lags


def test_bm_covariance_refuses_rows_too_short_for_its_lags():
    windows = filters.covary_windows(ear_model.COV_SEGMENT, ear_model.COV_MAXLAG)
    short = np.zeros((3, ear_model.COV_SEGMENT + 2 * ear_model.COV_MAXLAG), dtype=np.float32)
    with pytest.raises(ValueError, match="covary_segments"):
        filters.covary_processed(short, np.ones(3), np.full(3, 100.0), 0.0, np.ones(2 * ear_model.COV_SEGMENT),
                                 windows, np.empty(3))
    with pytest.raises(ValueError, match="56 lags"):
        filters.covary_segments(3, 384, 28)


# --- per-band alignment ------------------------------------------------------------------------

def _best_lag(ref, out, lags):
    """argmax over d in [-lags, lags-1] of sum_n ref[n] out[n+d]; ties: the largest d."""
    n = ref.size
    full = np.correlate(out, ref, "full")          # index i <-> d = i - (n - 1)
    ds = np.arange(-lags, lags)
    if lags == n:
        ds = ds[1:]
    vals = full[ds + n - 1]
    return int(ds[np.flatnonzero(vals == vals.max())[-1]])


@pytest.mark.parametrize("n, lags, nfft", [(200, 20, 256), (1000, 20, 256), (1000, 40, 512), (50, 50, 256),
                                          (3000, 100, 20480)])
def test_lag_search_finds_the_best_lag(n, lags, nfft):
    rng = _rng(13)
    search = ear_model.LagSearch(n, lags=lags, nfft=nfft)
    other = ear_model.LagSearch(n, lags=lags, nfft=nfft, work=search)
    for _ in range(8):
        ref = rng.standard_normal(n)
        d = int(rng.integers(-lags, lags))
        out = np.roll(ref, d) + 0.3 * rng.standard_normal(n)
        search.load(ref)
        other.load(rng.standard_normal(n))        # shares the scratch arrays, not the spectra
        assert search.delays([out])[0] == _best_lag(ref, out, search.lags)
    outs = [np.roll(ref, int(d)) + 0.3 * rng.standard_normal(n) for d in rng.integers(-lags, lags, 5)]
    assert search.delays(outs) == [_best_lag(ref, o, search.lags) for o in outs]   # one batch of inverse FFTs
    search.load(np.ones(n))
    assert search.delays([np.ones(n)])[0] == _best_lag(np.ones(n), np.ones(n), search.lags)


def test_spectra_mac_lag_dots_and_to_float32_match_numpy():
    rng = _rng(14)
    spec = rng.standard_normal((7, 65)) + 1j * rng.standard_normal((7, 65))
    other = rng.standard_normal((7, 65)) + 1j * rng.standard_normal((7, 65))
    out = np.empty(65, dtype=complex)
    filters.spectra_mac(spec, other, out)
    assert np.array_equal(out, np.einsum("bf,bf->f", np.conj(spec), other))
    x = rng.standard_normal(250)
    blocks = np.full((3, 120), np.nan, dtype=np.float32)
    squares = filters.fill_blocks(x, blocks, 100)
    want = np.zeros((3, 120), dtype=np.float32)
    for b in range(3):
        chunk = x[b * 100:(b + 1) * 100]
        want[b, :chunk.size] = chunk
    assert np.array_equal(blocks, want) and math.isclose(squares, float(x @ x), rel_tol=1e-12)
    a, b = rng.standard_normal(300), rng.standard_normal(300)
    lags = np.array([-299, -17, 0, 5, 299])
    dots = np.empty(lags.size)
    filters.lag_dots(a, b, lags, dots)
    full = np.correlate(b, a, "full")          # index i <-> lag i - 299
    assert np.allclose(dots, full[lags + 299], rtol=1e-12, atol=1e-12)
    f32 = np.empty(300, dtype=np.float32)
    assert math.isclose(filters.to_float32(a, f32), float(a @ a), rel_tol=1e-12)
    assert np.array_equal(f32, a.astype(np.float32))


def _broadband_delay(ref, proc):
    """The reference implementation's bulk delay: first largest |covariance|, lags from -(n-1) up."""
    n = ref.size
    lag_values = np.correlate(ref - ref.mean(), proc - proc.mean(), "full")  # i <-> sum_t proc[t] ref[t+i-(n-1)]
    m = int(np.argmax(np.abs(lag_values)))
    return int(np.rint((n - m - 1) - 48))


def _shifted_and_pruned(aligner, proc, delay):
    """What the aligner must return: out[i] = proc[first + i + delay], zero outside ``proc``."""
    want = np.zeros(aligner.last + 1 - aligner.first)
    for i in range(want.size):
        j = aligner.first + i + delay
        if 0 <= j < proc.size:
            want[i] = proc[j]
    return want


@pytest.mark.parametrize("shift", [-700, -3, 0, 48, 1000])
def test_broadband_aligner_picks_the_float64_lag(shift):
    rng = _rng(15)
    n = 6000
    ref = rng.standard_normal(n) * np.hanning(n)
    proc = 0.5 * np.roll(ref, shift) + 0.2 * rng.standard_normal(n)
    aligner = ear_model.BroadbandAligner(ref)
    assert np.array_equal(aligner.align(proc), _shifted_and_pruned(aligner, proc, _broadband_delay(ref, proc)))
    # a constant processed signal has no covariance anywhere: every lag ties and the first one wins
    flat = np.ones(n)
    assert np.array_equal(aligner.align(flat), _shifted_and_pruned(aligner, flat, _broadband_delay(ref, flat)))


def test_broadband_alignment_in_batches_gives_each_signal_its_own_lag(monkeypatch):
    rng = _rng(16)
    n = 6000
    ref = rng.standard_normal(n) * np.hanning(n)
    procs = [0.5 * np.roll(ref, s) + 0.2 * rng.standard_normal(n) for s in (-300, 0, 17, 900, 5)]
    procs.append(np.ones(n))
    nfft = ear_model.BroadbandAligner(ref).nfft
    for rows, batch in ((1, 1), (4, 4), (100, 100)):                # one by one, 4 + 2, all at once
        monkeypatch.setattr(ear_model, "ALIGN_BATCH_BYTES", rows * 4 * nfft)
        aligner = ear_model.BroadbandAligner(ref)
        assert aligner.batch == batch
        got = list(aligner.align_many(iter(procs)))
        assert len(got) == len(procs)
        for proc, out in zip(procs, got):
            assert np.array_equal(out, _shifted_and_pruned(aligner, proc, _broadband_delay(ref, proc)))


def test_bands_per_pass_fills_the_lanes():
    n = 240000
    assert ear_model.bands_per_pass(2, n) == 2                 # one processed signal: 2 bands x 2 signals
    assert ear_model.bands_per_pass(4, n) == 1
    assert ear_model.bands_per_pass(5, n) == 4
    assert ear_model.bands_per_pass(2, 100 * n) == 1           # does not fit: one band at a time
    assert ear_model.bands_per_pass(9, n, work_bytes=10 ** 12) == 4


# --- threshold noise -----------------------------------------------------------------------------

def test_sfc64_is_numpys_stream_and_ziggurat_is_normal():
    from numba import njit

    @njit
    def raw(state, count):
        a, b, c, w = state[0], state[1], state[2], state[3]
        out = np.empty(count, dtype=np.uint64)
        for i in range(count):
            out[i], a, b, c, w = noise._sfc64(a, b, c, w)
        return out

    ss = np.random.SeedSequence(5, spawn_key=(1, 7))
    state = np.array(np.random.SFC64(ss).state["state"]["state"], dtype=np.uint64)
    want = np.random.SFC64(np.random.SeedSequence(5, spawn_key=(1, 7))).random_raw(5000)
    assert np.array_equal(raw(state, 5000), want)

    w, k, f = noise.ziggurat_tables()
    assert w.shape == k.shape == (256,) and f.shape == (257,) and f[-1] == 1.0
    assert np.all(np.diff(f[1:]) > 0) and w[1] * 2.0 ** 52 == 3.6541528853610088

    draws = noise.band_noise(3, 2_000_000).processed(4, np.empty(2_000_000))
    assert abs(draws.mean()) < 4e-3 and abs(draws.std() - 1) < 3e-3
    for q in (0.5, 1.0, 2.0, 3.0, 3.6541528853610088, 4.0):
        p = math.erfc(q / math.sqrt(2))
        assert abs(np.mean(np.abs(draws) > q) - p) < 5 * math.sqrt(p / draws.size) + 1e-6, q
    again = noise.band_noise(3, 1000).processed(4, np.empty(1000))
    assert np.array_equal(again, draws[:1000])


# --- end to end: any batch size gives the single-call bits ----------------------------------------

def test_score_many_any_batch_size_equals_single_calls():
    rate = 16000
    rng = _rng(15)
    t = np.arange(int(0.6 * rate)) / rate
    reference = 0.1 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(t.size)
    procs = [reference + 0.01 * rng.standard_normal(t.size), np.clip(reference, -0.05, 0.05), reference * 0.3,
             np.roll(reference, 40), reference + 0.05 * rng.standard_normal(t.size)]
    kw = dict(sample_rate_hz=rate, levels_db_hl=[20, 25, 30, 40, 50, 55], level1_db_spl=70.0, equalisation=1,
              seed=3)
    single = [fast.haaqi(reference=reference, processed=p, **kw) for p in procs]
    for count in (2, 3, 5):
        assert fast.score_many(reference=reference, processed_list=procs[:count], **kw) == single[:count]
    legacy = fast.score_many(reference=reference, processed_list=procs[:3], **kw, noise="numpy-legacy")
    assert legacy == [fast.haaqi(reference=reference, processed=p, **kw, noise="numpy-legacy") for p in procs[:3]]
    assert fast.score_many(reference=reference, processed_list=procs[:3], **kw) == single[:3]   # reproducible


def test_work_rows_kept_between_calls_carry_nothing_over():
    rate = 16000
    rng = _rng(17)
    reference = 0.1 * rng.standard_normal(int(0.5 * rate))
    procs = [reference + 0.02 * rng.standard_normal(reference.size), np.clip(reference, -0.1, 0.1)]
    kw = dict(sample_rate_hz=rate, levels_db_hl=[10, 20, 30, 40, 50, 60], level1_db_spl=75.0, equalisation=2,
              seed=5)
    first = fast.score_many(reference=reference, processed_list=procs, **kw)
    short = fast.score_many(reference=reference[:6000], processed_list=[p[:6000] for p in procs], **kw)
    kept = ear_model._WORKSPACE.buffers
    assert kept is not None
    for buffer in kept:                     # whatever a kernel reads before writing would now be NaN
        buffer.fill(np.nan)
    assert fast.score_many(reference=reference, processed_list=procs, **kw) == first
    assert fast.score_many(reference=reference[:6000], processed_list=[p[:6000] for p in procs], **kw) == short
    assert ear_model._WORKSPACE.buffers is kept          # smaller or equal calls reuse the same memory


@pytest.mark.parametrize("khz", [8, 16, 22, 32, 44, 48, 96])
def test_resampling_matches_resample_poly(khz):
    from scipy.signal import resample_poly
    x = _rng(18).standard_normal(khz * 137 + 5)
    got, want = ear_model._resample(x, 24, khz), resample_poly(x, 24, khz)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-14 * np.abs(want).max()


def test_signal_conditioning_filters_are_scipys_bits():
    x = _rng(19).standard_normal(20000) * 0.1
    b, a = ear_model._design("cheby2", 7, 21 / 44)
    assert np.array_equal(ear_model._lowpass_7(21 / 44, x), lfilter(b, a, x))
    lb, la = ear_model._design("butter", 1, 5000 / 12000)
    hb, ha = ear_model._design("butter", 2, 350 / 12000, "high")
    assert np.array_equal(ear_model.middle_ear(x), lfilter(hb, ha, lfilter(lb, la, x)))


def test_exact_covariances_by_dots_and_by_fft_agree():
    rng = _rng(16)
    a, b = rng.standard_normal(500), rng.standard_normal(500)
    few = np.array([-3, 0, 7])
    many = np.arange(-400, 400, 7)
    assert many.size > ear_model.MAX_EXACT_LAGS >= few.size
    full = np.correlate(b, a, "full")          # index i <-> lag i - 499
    assert np.allclose(ear_model.exact_covariances(a, b, few), full[few + 499], rtol=1e-12, atol=1e-12)
    assert np.allclose(ear_model.exact_covariances(a, b, many), full[many + 499], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("noise_mode", ["fast", "numpy-legacy"])
def test_skipping_unused_work_gives_the_same_bits(monkeypatch, noise_mode):
    """Inaudible envelopes and bands without a heard reference tile skip work; the scores must not change."""
    rate = 16000
    rng = _rng(17)
    t = np.arange(int(0.5 * rate)) / rate
    reference = (0.1 * np.sin(2 * np.pi * 300 * t) * (1 + np.sin(2 * np.pi * 4 * t))
                 + 0.005 * rng.standard_normal(t.size))
    procs = [reference * 0.002, reference + 0.02 * rng.standard_normal(t.size), np.roll(reference, 30) * 0.5]
    kw = dict(reference=reference, processed_list=procs, sample_rate_hz=rate, levels_db_hl=[30, 40, 55, 65, 75, 80],
              level1_db_spl=60.0, equalisation=1, seed=5, noise=noise_mode)
    calls = {"quiet": 0, "unheard": 0}
    inaudible, heard = ear_model._inaudible, ear_model._heard_tiles

    def counting_inaudible(*a, **k):
        out = inaudible(*a, **k)
        calls["quiet"] += out
        return out

    def counting_heard(ms):
        out = heard(ms)
        calls["unheard"] += not out
        return out

    monkeypatch.setattr(ear_model, "_inaudible", counting_inaudible)
    monkeypatch.setattr(ear_model, "_heard_tiles", counting_heard)
    skipped = fast.score_many(**kw)
    assert calls["quiet"] > 0 and calls["unheard"] > 0          # the case exercises both shortcuts
    monkeypatch.setattr(ear_model, "_inaudible", lambda *a, **k: False)
    monkeypatch.setattr(ear_model, "_heard_tiles", lambda ms: True)
    assert fast.score_many(**kw) == skipped


def test_inaudible_is_below_zero_db_sl_with_a_margin():
    env = np.array([0.0, 1e-4, 2e-4])                 # peak at -73.98 dB re 1
    level1, attn = 60.0, 0.0                          # -> -13.98 dB SL
    assert ear_model._inaudible(env.max(), level1, attn)
    assert not ear_model._inaudible(env.max(), level1 + 14.0, attn)
    edge = 10 ** ((-level1) / 20)                     # exactly 0 dB SL: not below it
    assert not ear_model._inaudible(edge, level1, attn)
    out = np.empty(3)
    filters.ihc_db(env, 1, level1, attn, out)        # what the shortcut stands for: zeros after any shift
    assert np.array_equal(out, np.zeros(3))


def test_a_silent_reference_warns_once_per_process_then_logs_at_debug(caplog, monkeypatch):
    import logging

    from benchmark.haaqi.fast import features

    monkeypatch.setattr(features, "_warned", set())
    quiet = np.full((32, 40), -30.0)     # every segment far below HAAQI's silence threshold
    with caplog.at_level(logging.DEBUG, logger=features.logger.name):
        scores = [features.cepstral_high(quiet, quiet) for _ in range(3)]
    assert scores == [0.0, 0.0, 0.0]
    levels = [r.levelno for r in caplog.records if "silence threshold" in r.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]
