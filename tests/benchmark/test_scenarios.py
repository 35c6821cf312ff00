"""Noisy listening scenarios: noise spectra, determinism, mixing, calibration, keys, end to end."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import signal
from typer.testing import CliRunner

from benchmark import noise as nz
from benchmark.audiogram import listeners_from_names
from benchmark.calibration import calibrate
from benchmark.cli import app
from benchmark.errors import BenchError
from benchmark.options import parse_scenarios
from benchmark.sweep import CLEAN, Condition, Job, ProcessorSpec, SweepConfig, trial_key


def music_like(duration_s, rate, seed):
    """Deterministic stereo notes with decaying envelopes, float32 (2, n)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * rate)) / rate
    out = np.zeros((2, t.size))
    for k in range(int(duration_s / 0.25)):
        seg = (t >= 0.25 * k) & (t < 0.25 * (k + 1))
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        out[:, seg] = np.exp(-6 * (t[seg] - 0.25 * k)) * np.sin(2 * np.pi * f0 * t[seg])
    out[1] *= 0.8
    return (0.1 * out).astype(np.float32)


def _psd(x, rate):
    f, p = signal.welch(x, rate, nperseg=4096, axis=-1)
    return f, p.mean(axis=0) if p.ndim == 2 else p


def _frame_levels_db(x, rate, frame_s=0.02):
    """Level of each 20-ms frame (both channels) in dB."""
    n = int(frame_s * rate)
    m = x.shape[-1] // n
    frames = x[..., : m * n].reshape(*x.shape[:-1], m, n)
    power = np.mean(np.square(frames), axis=(0, -1) if x.ndim == 2 else -1)
    return 10 * np.log10(power + 1e-12)


def _modulation_spectrum(x, rate):
    """PSD of the normalised 10-ms RMS envelope (both channels): (frequencies in Hz, power)."""
    n = int(0.01 * rate)
    m = x.shape[-1] // n
    env = np.sqrt(np.mean(np.square(x[:, : m * n].reshape(x.shape[0], m, n)), axis=(0, 2)))
    return signal.welch(env / env.mean() - 1, 100.0, nperseg=256)


def _envelope_cv(x, rate):
    """Coefficient of variation of the Hilbert envelope low-passed at 30 Hz."""
    env = np.abs(signal.hilbert(x))
    b, a = signal.butter(2, 30 / (rate / 2))
    env = signal.filtfilt(b, a, env)
    return float(env.std() / env.mean())


# -- noise types --------------------------------------------------------------------

@pytest.mark.parametrize("rate", [16000, 24000, 44100])
def test_pink_noise_falls_3_db_per_octave(rate):
    x = nz.make_noise("pink", 8 * rate, rate, n_channels=2, rng=np.random.default_rng(1))
    f, p = _psd(x, rate)
    band = (f >= 100) & (f <= min(8000, 0.4 * rate))
    slope_db_per_octave = np.polyfit(np.log2(f[band]), 10 * np.log10(p[band]), 1)[0]
    assert slope_db_per_octave == pytest.approx(-3.01, abs=0.25)


@pytest.mark.parametrize("rate", [22050, 44100])
def test_ssn_matches_the_ltass(rate):
    x = nz.make_noise("ssn", 10 * rate, rate, n_channels=2, rng=np.random.default_rng(2))
    f, p = _psd(x, rate)
    target = 10 ** (nz.ltass_spectrum_level_db(np.maximum(f, 1)) / 10)
    errors = []
    for centre in nz.LTASS_CENTRES_HZ:  # 1/3-octave bands 160 Hz .. 8 kHz
        band = (f >= centre * 2 ** (-1 / 6)) & (f < centre * 2 ** (1 / 6))
        errors.append(10 * np.log10(p[band].mean() / target[band].mean()))
    errors = np.array(errors) - np.mean(errors)  # the shape, not the absolute level
    assert np.abs(errors).max() < 1.0, errors.round(2)


def test_ltass_table_is_the_ansi_normal_effort_spectrum():
    centres = np.asarray(nz.LTASS_CENTRES_HZ, float)
    levels = np.asarray(nz.LTASS_SPECTRUM_LEVEL_DB)
    bandwidth_hz = centres * (2 ** (1 / 6) - 2 ** (-1 / 6))
    overall_db = 10 * np.log10(np.sum(10 ** (levels / 10) * bandwidth_hz))
    assert overall_db == pytest.approx(62.35, abs=0.05)  # ANSI S3.5 normal vocal effort
    assert nz.ltass_spectrum_level_db(np.array([1000.0]))[0] == pytest.approx(25.01)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_babble_is_modulated_and_speech_shaped(seed):
    rate = 24000
    rng = np.random.default_rng(seed)
    babble = nz.make_noise("babble", 8 * rate, rate, n_channels=2, rng=rng)
    ssn = nz.make_noise("ssn", 8 * rate, rate, n_channels=2, rng=rng)
    # modulated: frame levels and the envelope vary far more than for stationary noise
    assert _frame_levels_db(babble, rate).std() > 3 * _frame_levels_db(ssn, rate).std()
    assert _envelope_cv(babble[0], rate) > 2.5 * _envelope_cv(ssn[0], rate)
    # syllabic rate: strong envelope modulation at 2-8 Hz, far above ssn's and above 12-40 Hz
    mf, mp_babble = _modulation_spectrum(babble, rate)
    _, mp_ssn = _modulation_spectrum(ssn, rate)
    syllabic, fast = (mf >= 2) & (mf <= 8), (mf > 12) & (mf <= 40)
    assert mp_babble[syllabic].mean() > 10 * mp_ssn[syllabic].mean()
    assert mp_babble[syllabic].mean() > 5 * mp_babble[fast].mean()
    # energy at speech frequencies, with the LTASS shape
    f, p = _psd(babble, rate)
    speech = (f >= 100) & (f <= 5000)
    assert p[speech].sum() / p.sum() > 0.9
    _, p_ssn = _psd(ssn, rate)
    band = (f >= 200) & (f <= 6000)
    diff_db = 10 * np.log10(p[band] / p_ssn[band])
    assert np.abs(diff_db - diff_db.mean()).mean() < 1.5


@pytest.mark.parametrize("name", list(nz.NOISE_TYPES))
def test_noise_is_deterministic_unit_rms_and_decorrelated(name):
    rate = 16000
    a = nz.make_noise(name, 3 * rate, rate, n_channels=2, rng=np.random.default_rng(7))
    b = nz.make_noise(name, 3 * rate, rate, n_channels=2, rng=np.random.default_rng(7))
    c = nz.make_noise(name, 3 * rate, rate, n_channels=2, rng=np.random.default_rng(8))
    assert a.shape == (2, 3 * rate) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.sqrt(np.mean(a ** 2, axis=1)) == pytest.approx([1.0, 1.0])
    assert abs(np.corrcoef(a)[0, 1]) < 0.05
    mono = nz.make_noise(name, 1001, 48000, rng=np.random.default_rng(0))
    assert mono.shape == (1, 1001) and np.isfinite(mono).all()


def test_unknown_noise_and_bad_snr_are_clear_errors():
    with pytest.raises(BenchError, match="did you mean 'babble'"):
        nz.make_noise("bable", 100, 16000, rng=np.random.default_rng(0))
    for bad in (-25, 61, float("nan")):
        with pytest.raises(BenchError, match="out of range"):
            nz.check_snr(bad)


# -- mixing and calibration ------------------------------------------------------------

@pytest.mark.parametrize("snr_db", [-10.0, 0.0, 5.0, 30.0])
def test_mixing_hits_the_snr_over_both_channels(snr_db):
    clean = music_like(1.0, 24000, 1)
    noise = nz.make_noise("pink", clean.shape[1], 24000, n_channels=2, rng=np.random.default_rng(0))
    mixture, scaled = nz.mix_at_snr(clean, noise, snr_db)
    assert mixture.dtype == np.float32 and mixture.shape == clean.shape
    assert nz.snr_of(clean, mixture.astype(np.float64) - clean) == pytest.approx(snr_db, abs=0.1)
    assert nz.snr_of(clean, scaled) == pytest.approx(snr_db, abs=1e-9)


def _job(condition, spl_db=65.0, clip_id="song0", listener="N3", pids=("p",)):
    return Job(clip_id, listener, spl_db, pids, ("left", "right"), condition)


def test_mixture_is_calibrated_to_the_spl_and_clean_keeps_its_scale():
    from benchmark.trial import listening_signals

    clean = music_like(1.0, 24000, 2)
    for snr_db in (0.0, 10.0):
        job = _job(Condition("noisy", "ssn", snr_db), spl_db=70.0)
        mixture, calibration = listening_signals(clean, 24000, job)
        assert calibration.db_spl(mixture) == pytest.approx(70.0, abs=1e-6)
        assert calibration == calibrate(mixture, 70.0)
        # the music component, at the mixture's scale, lies below the SPL by about
        # 10*log10(1 + 10^(-SNR/10)) (not exactly: music and noise are not orthogonal in 1 s)
        music_db_spl = 70.0 - 10 * math.log10(1 + 10 ** (-snr_db / 10))
        assert calibration.db_spl(clean) == pytest.approx(music_db_spl, abs=0.3)
        assert nz.snr_of(clean, mixture.astype(np.float64) - clean) == pytest.approx(snr_db, abs=0.1)
    same, calibration = listening_signals(clean, 24000, _job(CLEAN))
    assert same is clean and calibration == calibrate(clean, 65.0)


def test_processors_get_the_mixture_and_the_reference_is_the_clean_music(monkeypatch):
    """Through run_job: what the processor receives, and what HAAQI compares it with."""
    from benchmark import haaqi, trial

    rate = 24000
    clean = music_like(1.0, rate, 3)
    monkeypatch.setattr(trial, "_excerpt", lambda clip: (clean, rate))
    calls = []

    def fake_score_many(ref, processed, **kwargs):
        calls.append((ref, processed, kwargs))
        return [haaqi.score(ref, p, **kwargs) for p in processed]

    monkeypatch.setattr(haaqi, "score_many", fake_score_many)
    listener = listeners_from_names(["N3"])[0]
    spec = ProcessorSpec("unprocessed")
    condition = Condition("noisy", "babble", 5.0)
    job = _job(condition, pids=(spec.create().config_id,), listener=listener.name)
    inp = trial.JobInput(job, "clip-a", listener, (spec,), "clean", "fast", None)
    rows = trial.run_job(inp)
    assert [r["status"] for r in rows] == ["ok", "ok"], rows[0].get("error")
    mixture, calibration = trial.listening_signals(clean, rate, job)
    for ch, (ref, processed, kwargs) in enumerate(calls):
        np.testing.assert_array_equal(ref, clean[ch])          # clean music, same digital scale
        np.testing.assert_array_equal(processed[0], mixture[ch])  # unprocessed = what it received
        assert kwargs["level1_db_spl"] == calibration.level1_db_spl
    row = rows[0]
    assert (row["scenario"], row["noise"], row["snr_db"]) == ("noisy", "babble", 5.0)
    assert row["seed_noise"] == job.noise_seed
    assert row["trial_key"] == f"song0|N3|left|65|babble@5dB|{job.processor_ids[0]}"


# -- keys, seeds, config ----------------------------------------------------------------

def test_clean_keys_and_seeds_are_unchanged_and_noisy_ones_are_distinct():
    clean = _job(CLEAN)
    assert clean.key == "song0|N3|65|p"
    assert trial_key("song0", "N3", "left", 65.0, "p") == "song0|N3|left|65|p"
    assert clean.trial_keys()[0] == "song0|N3|left|65|p"
    assert clean.noise_seed is None
    jobs = [clean] + [_job(Condition("noisy", n, s)) for n in ("pink", "ssn") for s in (0.0, 5.0)]
    keys = [k for j in jobs for k in j.trial_keys()]
    assert len(keys) == len(set(keys)) == 10
    assert len({j.key for j in jobs}) == 5
    # one noise realisation per (clip, noise type): the same at every SNR, listener, SPL
    a = _job(Condition("noisy", "ssn", 0.0))
    assert a.noise_seed == _job(Condition("noisy", "ssn", 10.0), spl_db=55, listener="N2").noise_seed
    assert a.noise_seed != _job(Condition("noisy", "pink", 0.0)).noise_seed
    assert a.noise_seed != _job(Condition("noisy", "ssn", 0.0), clip_id="song1").noise_seed
    assert a.processor_seed("p") != clean.processor_seed("p")


def _config(**kw):
    return SweepConfig((ProcessorSpec("nalr"),), (65.0,), tuple(listeners_from_names(["N3", "N2"])),
                       **kw)


def test_clean_config_hash_is_the_one_from_before_noisy_scenarios():
    config = _config()
    assert "scenarios" not in config.as_dict()
    assert config.config_hash == "51a42ae4c087"  # computed with the code before this feature
    noisy = _config(scenarios=("clean", "noisy"), noises=("ssn",), snrs_db=(5,))
    assert noisy.config_hash != config.config_hash
    assert [c.label for c in noisy.conditions] == ["clean", "ssn 5 dB SNR"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(scenarios=("noisy",), noises=("bable",), snrs_db=(5,)), "did you mean 'babble'"),
    (dict(scenarios=("noisy",), noises=("ssn",), snrs_db=(75,)), "out of range"),
    (dict(scenarios=("clean",), noises=("ssn",), snrs_db=(5,)), "noisy scenario only"),
    (dict(scenarios=("nosy",)), "did you mean 'noisy'"),
    (dict(scenarios=("noisy",), noises=("ssn", "ssn"), snrs_db=(5,)), "listed twice"),
])
def test_bad_scenarios_are_clear_errors(kwargs, message):
    with pytest.raises(BenchError, match=message):
        _config(**kwargs)


def test_parse_scenarios():
    assert parse_scenarios("clean", None, None) == (("clean",), (), ())
    assert parse_scenarios("noisy", None, None) == (("noisy",), ("ssn", "babble"), (5.0,))
    assert parse_scenarios("clean,noisy", "pink", "-5,10") == (("clean", "noisy"), ("pink",),
                                                               (-5.0, 10.0))
    with pytest.raises(BenchError, match="--snr applies only to the noisy scenario"):
        parse_scenarios("clean", None, "5")
    with pytest.raises(BenchError, match="not a number"):
        parse_scenarios("noisy", "ssn", "five")


# -- leaderboard --------------------------------------------------------------------------

def _table(conditions):
    rows = []
    for c in range(3):
        for scenario, noise, snr in conditions:
            for pid, base in (("a", 0.8), ("b", 0.5)):
                rows.append({"trial_key": f"c{c}|{noise}{snr}|{pid}", "clip_id": f"c{c}",
                             "listener": "N3", "audiogram": "N3", "severity": "mild",
                             "pta_db_hl": 30.0, "spl_db": 65.0, "processor_id": pid,
                             "processor_label": pid, "status": "ok", "error": "",
                             "error_stage": "", "ear": "left", "corpus": "x", "run_id": "r",
                             "finished_at": "2026-01-01T00:00:00+00:00", "scenario": scenario,
                             "noise": noise, "snr_db": snr,
                             "haaqi": base - (0 if scenario == "clean" else 0.3 - snr / 100)})
    return pd.DataFrame(rows)


def test_clean_table_renders_as_before_noisy_scenarios():
    from benchmark import leaderboard

    table = _table([("clean", "none", float("nan"))])
    old = table.drop(columns=["scenario", "noise", "snr_db"])
    assert leaderboard.render(table) == leaderboard.render(old)
    assert "By noise" not in leaderboard.render(table)


def test_leaderboard_sections_per_scenario_noise_and_snr():
    from benchmark import leaderboard

    table = _table([("clean", "none", float("nan")), ("noisy", "ssn", 0.0), ("noisy", "ssn", 10.0),
                    ("noisy", "pink", 0.0), ("noisy", "pink", 10.0)])
    text = leaderboard.render(table)
    for heading in ("## Per listening condition", "## By scenario", "## By noise", "## By SNR",
                    "### noise: pink", "### noise: ssn", "### SNR: 10 dB", "### scenario: clean"):
        assert heading in text, heading
    assert text.index("### noise: pink") < text.index("### noise: ssn")  # pink, ssn, babble order
    assert "| `a` | 0.800 (3) | 0.500 (3) | 0.600 (3) | 0.500 (3) | 0.600 (3) |" in text
    only = leaderboard.render(table, by=("noise",))
    assert "## By noise" in only and "## By scenario" not in only
    with pytest.raises(BenchError, match="did you mean 'noise'"):
        leaderboard.render(table, by=("nois",))


# -- end to end ---------------------------------------------------------------------------

def test_noisy_sweep_end_to_end(tmp_path, audio_folder):
    results = tmp_path / "results"
    args = ["run", "--processor", "unprocessed,nalr", "--spl", "65", "--audiograms", "N3",
            "--corpus", str(audio_folder), "--limit", "1", "--excerpt-s", "1", "--workers", "0",
            "--no-haaqinet", "--scenario", "noisy", "--noise", "pink,ssn", "--snr", "5",
            "--results", str(results), "--run-id", "noisy"]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    run_dir = results / "noisy"
    table = pd.read_parquet(run_dir / "scores.parquet")
    # 1 clip x 1 listener x 1 SPL x 2 noise types x 1 SNR x 2 processors x 2 ears
    assert len(table) == 8 and table["trial_key"].is_unique
    assert (table["status"] == "ok").all() and table["haaqi"].between(0, 1).all()
    assert set(table["scenario"]) == {"noisy"} and set(table["noise"]) == {"pink", "ssn"}
    assert (table["snr_db"] == 5.0).all()
    assert table.groupby("noise")["seed_noise"].nunique().eq(1).all()
    assert table["trial_key"].str.contains(r"\|(?:pink|ssn)@5dB\|").all()
    # noise lowers HAAQI below the clean ceiling of nalr under the nalr convention
    assert table[table["processor"] == "nalr"]["haaqi"].max() < 0.99
    assert (run_dir / "plots" / "haaqi_vs_snr.png").stat().st_size > 1000
    assert (run_dir / "plots" / "heatmap_processor_condition.png").stat().st_size > 1000
    board = (run_dir / "leaderboard.md").read_text()
    assert "## By noise" in board and "Scenarios:** noisy; noise pink, ssn at 5 dB SNR" in board
    out = tmp_path / "board.md"
    res = CliRunner().invoke(app, ["leaderboard", str(run_dir), "--by", "noise", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "### noise: pink" in text and "### noise: ssn" in text and "--by noise" in text
    # rerun resumes: nothing new
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0 and "0 ok, 0 failed, 8 resumed" in res.output


@pytest.mark.parametrize("args, message", [
    (["--noise", "ssn"], "--noise applies only to the noisy scenario"),
    (["--scenario", "noisy", "--noise", "pinkk"], "did you mean 'pink'"),
    (["--scenario", "noisy", "--snr", "90"], "out of range"),
    (["--scenario", "clean,noisier"], "did you mean 'noisy'"),
])
def test_bad_scenario_options_fail_before_work(tmp_path, audio_folder, args, message):
    res = CliRunner().invoke(app, ["run", "--processor", "nalr", "--audiograms", "N2", "--corpus",
                                   str(audio_folder), "--workers", "0", *args,
                                   "--results", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "r").exists()


def test_leaderboard_by_unknown_column_is_an_error(tmp_path):
    res = CliRunner().invoke(app, ["leaderboard", str(tmp_path), "--by", "snrr"])
    assert res.exit_code == 2 and "did you mean 'snr'" in res.output


def test_journal_from_before_noisy_scenarios_resumes(tmp_path, audio_folder):
    """Clean rows without scenario columns (older runs) are skipped, then read as clean."""
    import json

    args = ["run", "--processor", "unprocessed", "--spl", "65", "--audiograms", "N3", "--corpus",
            str(audio_folder), "--limit", "2", "--excerpt-s", "1", "--workers", "0",
            "--no-haaqinet", "--results", str(tmp_path), "--run-id", "old"]
    assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    journal = tmp_path / "old" / "journal.jsonl"
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    for row in rows:
        for column in ("scenario", "noise", "snr_db"):
            del row[column]
    journal.write_text("".join(json.dumps(r) + "\n" for r in rows[:-2]))  # the last job is lost
    (tmp_path / "old" / "scores.parquet").unlink()
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0 and "2 ok, 0 failed, 2 resumed" in res.output, res.output
    table = pd.read_parquet(tmp_path / "old" / "scores.parquet")
    assert len(table) == 4 and (table["scenario"] == "clean").all()
    assert (table["noise"] == "none").all() and table["snr_db"].isna().all()
