"""Tests for benchmark.corpus: the built-in corpus and user folders."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import soundfile as sf

from benchmark.corpus import MANIFEST_COLUMNS, Clip, build_builtin, load_corpus, load_excerpt
from benchmark.corpus.excerpt import choose_window
from benchmark.corpus.recipe import BUILTIN_RECIPE
from benchmark.errors import AudioError, BenchError

EXCERPT_S = 2.0
SR = 44100


# --------------------------------------------------------------------------- built-in


@pytest.fixture(scope="session")
def builtin_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("haaqi-bench-cache")


@pytest.fixture(scope="session")
def builtin(builtin_cache):
    return build_builtin(excerpt_s=EXCERPT_S, cache_dir=builtin_cache)


def test_builtin_has_enough_clips_and_textures(builtin):
    ids = [c.clip_id for c in builtin.clips]
    assert len(ids) >= 24 and len(set(ids)) == len(ids)
    textures = {c.instrumentation for c in builtin.clips}
    assert len(textures) >= 6
    assert {"piano", "strings", "organ", "brass", "winds", "guitar", "ensemble+percussion"} <= textures
    assert builtin.name == "builtin" and builtin.skipped == ()


def test_builtin_excerpts_are_stereo_44k_leveled_and_start_with_sound(builtin):
    for clip in builtin.clips:
        x, sr = load_excerpt(clip)
        assert sr == SR
        assert x.dtype == np.float32 and x.shape == (2, round(EXCERPT_S * SR)), clip.clip_id
        assert clip.start_s == 0.0 and clip.duration_s == pytest.approx(EXCERPT_S)
        rms_db = 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
        assert -35.0 < rms_db < -22.95, clip.clip_id  # -23 dBFS unless peak-limited
        assert np.max(np.abs(x)) <= 10 ** (-1 / 20) + 1e-6
        blocks = x.mean(axis=0, dtype=np.float64)[: x.shape[1] // 4410 * 4410].reshape(-1, 4410)
        block_db = 10 * np.log10(np.mean(blocks**2, axis=1) + 1e-20)
        assert block_db.min() > -60.0, clip.clip_id  # no silent opening, no silent gaps
        assert not np.array_equal(x[0], x[1]), clip.clip_id  # panned, really stereo


def test_builtin_manifest_and_recipe(builtin):
    manifest = builtin.root / "manifest.csv"
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == MANIFEST_COLUMNS
    assert [r["clip_id"] for r in rows] == [c.clip_id for c in builtin.clips]
    assert all(r["sample_rate_hz"] == str(SR) for r in rows)
    assert builtin.manifest_hash == hashlib.sha256(manifest.read_bytes()).hexdigest()
    recipe = json.loads((builtin.root / "recipe.json").read_text())
    assert recipe["excerpt_s"] == EXCERPT_S and len(recipe["arrangements"]) == len(BUILTIN_RECIPE)
    assert builtin.root.name.startswith("builtin-")


def test_load_corpus_reuses_the_cache(builtin, builtin_cache):
    mtime = builtin.clips[0].path.stat().st_mtime_ns
    again = load_corpus("builtin", excerpt_s=EXCERPT_S, cache_dir=builtin_cache)
    assert again == builtin
    assert builtin.clips[0].path.stat().st_mtime_ns == mtime
    other = load_corpus(None, excerpt_s=EXCERPT_S, cache_dir=builtin_cache)
    assert other.manifest_hash == builtin.manifest_hash


def test_builtin_rebuild_is_bit_identical(builtin, builtin_cache):
    # A damaged cache (a missing clip) is rebuilt in place; the rebuild must match bit for bit.
    builtin.clips[0].path.unlink()
    calls = []
    rebuilt = build_builtin(excerpt_s=EXCERPT_S, cache_dir=builtin_cache, progress=lambda *a: calls.append(a))
    assert builtin.clips[0].path.is_file()
    assert rebuilt.manifest_hash == builtin.manifest_hash
    assert [c.sha256 for c in rebuilt.clips] == [c.sha256 for c in builtin.clips]
    assert len(calls) == len(BUILTIN_RECIPE) and calls[-1][:2] == (len(BUILTIN_RECIPE), len(BUILTIN_RECIPE))
    leftovers = [p.name for p in builtin.root.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary build folders


# --------------------------------------------------------------------------- user folders


def tone(seconds, sr=SR, channels=2, amp=0.1, freq=440.0):
    t = np.arange(round(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([x * (1 + 0.1 * k) for k in range(channels)], axis=1).astype(np.float32)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "my music"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "a.wav", tone(3.0), SR)
    sf.write(root / "sub" / "b.flac", tone(5.0, sr=22050, channels=1), 22050)
    sf.write(root / "silent.wav", np.zeros((SR * 3, 2), np.float32), SR)
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk" * 10)
    (root / "notes.txt").write_text("not audio")
    return root


def test_user_folder_clips_and_skips(folder, tmp_path):
    corpus = load_corpus(folder, excerpt_s=EXCERPT_S, cache_dir=tmp_path / "cache")
    assert corpus.name == "my music" and corpus.root == folder.resolve()
    assert [c.clip_id for c in corpus.clips] == ["a", "sub-b"]
    assert all(c.instrumentation == "unknown" for c in corpus.clips)
    reasons = {p.rsplit("/", 1)[-1]: r for p, r in corpus.skipped}
    assert set(reasons) == {"silent.wav", "broken.wav"}
    assert "silent" in reasons["silent.wav"] and "cannot read" in reasons["broken.wav"]


def test_user_excerpt_mono_to_stereo_and_exact_window(folder, tmp_path):
    corpus = load_corpus(folder, excerpt_s=EXCERPT_S, cache_dir=tmp_path / "cache")
    x, sr = load_excerpt(corpus.clip("sub-b"))
    assert sr == 22050 and x.shape == (2, round(EXCERPT_S * 22050)) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], x[1])
    clip = corpus.clip("a")
    x, sr = load_excerpt(clip)
    full = sf.read(clip.path, dtype="float32", always_2d=True)[0].T
    start = round(clip.start_s * sr)
    np.testing.assert_array_equal(x, full[:, start : start + x.shape[1]])


def test_user_manifest_hash_is_stable_and_cached(folder, tmp_path):
    first = load_corpus(folder, excerpt_s=EXCERPT_S, cache_dir=tmp_path / "c1")
    cached = load_corpus(folder, excerpt_s=EXCERPT_S, cache_dir=tmp_path / "c1")
    fresh = load_corpus(folder, excerpt_s=EXCERPT_S, cache_dir=tmp_path / "c2")
    assert first == cached == fresh
    assert load_corpus(folder, excerpt_s=2.5, cache_dir=tmp_path / "c1").manifest_hash != first.manifest_hash


def test_changed_file_is_detected(folder, tmp_path):
    corpus = load_corpus(folder, excerpt_s=EXCERPT_S, cache_dir=tmp_path / "cache")
    sf.write(folder / "a.wav", tone(3.0, amp=0.2), SR)
    with pytest.raises(AudioError, match="changed"):
        load_excerpt(corpus.clip("a"))
    reloaded = load_corpus(folder, excerpt_s=EXCERPT_S, cache_dir=tmp_path / "cache")
    assert reloaded.clip("a").sha256 != corpus.clip("a").sha256


def test_window_skips_leading_silence_and_short_files_are_whole(tmp_path):
    root = tmp_path / "w"
    root.mkdir()
    x = np.concatenate([np.zeros((3 * SR, 2), np.float32), tone(4.0)])
    sf.write(root / "late.wav", x, SR)
    sf.write(root / "short.wav", tone(1.5), SR)
    corpus = load_corpus(root, excerpt_s=EXCERPT_S, cache_dir=tmp_path / "cache")
    late, short = corpus.clip("late"), corpus.clip("short")
    assert late.start_s >= 3.0 and late.duration_s == EXCERPT_S
    assert short.start_s == 0.0 and short.duration_s == 1.5
    assert load_excerpt(short)[0].shape == (2, round(1.5 * SR))


def test_choose_window_known_answer():
    # 0.1-s blocks: quiet (-30 dB) everywhere, loud from 6.0 s to 8.0 s; 2-s window.
    power = np.full(100, 1e-3)
    power[60:80] = 1.0
    assert choose_window(power, block_frames=4410, n_frames=100 * 4410, excerpt_frames=2 * SR) == 60 * 4410
    # Two equally loud sections: the earlier one wins.
    power[20:40] = 1.0
    assert choose_window(power, block_frames=4410, n_frames=100 * 4410, excerpt_frames=2 * SR) == 20 * 4410


def test_musdb_layout_uses_only_mixtures(tmp_path):
    root = tmp_path / "musdb18hq"
    for split, track in (("train", "Artist - Song A"), ("test", "Artist - Song B")):
        d = root / split / track
        d.mkdir(parents=True)
        for stem in ("mixture", "vocals", "drums", "bass", "other"):
            sf.write(d / f"{stem}.wav", tone(2.5), SR)
    corpus = load_corpus(root, excerpt_s=EXCERPT_S, cache_dir=tmp_path / "cache")
    assert [c.clip_id for c in corpus.clips] == ["artist-song-a", "artist-song-b"]
    assert all(c.path.name == "mixture.wav" for c in corpus.clips)
    assert corpus.clip("artist-song-a").title == "Artist - Song A"


def test_lossy_and_multichannel_files(tmp_path):
    root = tmp_path / "formats"
    root.mkdir()
    sf.write(root / "c.ogg", tone(3.0), SR, format="OGG", subtype="VORBIS")
    sf.write(root / "d.mp3", tone(3.0, channels=1), SR, format="MP3", subtype="MPEG_LAYER_III")
    sf.write(root / "surround.wav", tone(3.0, channels=6), SR)
    corpus = load_corpus(root, excerpt_s=EXCERPT_S, cache_dir=tmp_path / "cache")
    assert [c.clip_id for c in corpus.clips] == ["c", "d"]
    for clip in corpus.clips:
        x, sr = load_excerpt(clip)
        assert sr == SR and x.shape == (2, round(EXCERPT_S * SR)) and np.abs(x).max() > 0.05
    assert len(corpus.skipped) == 1 and "6 channels" in corpus.skipped[0][1]
    bad = Clip("surround", root / "surround.wav", "s", "unknown", 0.0, 1.0, "")
    with pytest.raises(AudioError, match="channels"):
        load_excerpt(bad)


def test_clear_errors(tmp_path):
    with pytest.raises(BenchError, match="not found"):
        load_corpus(tmp_path / "nope", cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no audio files"):
        load_corpus(tmp_path / "empty", cache_dir=tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    sf.write(bad / "quiet.wav", np.zeros((SR * 2, 2), np.float32), SR)
    (bad / "junk.flac").write_bytes(b"not a flac file")
    with pytest.raises(AudioError, match="none of the 2 audio files"):
        load_corpus(bad, cache_dir=tmp_path)
    with pytest.raises(BenchError, match="excerpt length"):
        load_corpus(tmp_path / "empty", excerpt_s=0.0)
    with pytest.raises(AudioError, match="not found"):
        load_excerpt(Clip("x", tmp_path / "gone.wav", "x", "unknown", 0.0, 1.0, ""))


@pytest.mark.parametrize("fmt, subtype", [("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")])
def test_lossy_window_is_sample_exact(tmp_path, fmt, subtype):
    root = tmp_path / "lossy"
    root.mkdir()
    path = root / f"late.{fmt.lower()}"
    sf.write(path, np.concatenate([np.zeros((2 * SR, 2), np.float32), tone(4.0)]), SR, format=fmt, subtype=subtype)
    clip = load_corpus(root, excerpt_s=EXCERPT_S, cache_dir=tmp_path / "cache").clips[0]
    assert clip.start_s >= 2.0
    x, sr = load_excerpt(clip)
    full = sf.read(path, dtype="float32", always_2d=True)[0].T
    start = round(clip.start_s * sr)
    np.testing.assert_array_equal(x, full[:, start : start + x.shape[1]])


def test_clip_ids_stay_unique(tmp_path):
    root = tmp_path / "dups"
    (root / "A b").mkdir(parents=True)
    for name in ("x.wav", "x.flac", "A b/c.wav", "A-b-c.wav"):
        sf.write(root / name, tone(1.5), SR)
    corpus = load_corpus(root, excerpt_s=EXCERPT_S, cache_dir=tmp_path / "cache")
    ids = {c.path.relative_to(root).as_posix(): c.clip_id for c in corpus.clips}
    assert ids == {"A b/c.wav": "a-b-c.wav", "A-b-c.wav": "a-b-c.wav-2", "x.flac": "x.flac", "x.wav": "x.wav"}


def test_truncate_musicxml_keeps_the_needed_measures():
    from benchmark.corpus.score import _truncate_musicxml

    part = "".join(f'<measure number="{k}"><note/></measure>' for k in range(0, 6))
    xml = f'<score-partwise><part id="P1">{part}</part><part id="P2">{part}</part></score-partwise>'.encode()
    out, truncated = _truncate_musicxml(xml, first_measure=1, n_keep=2)
    assert truncated and out.count(b"<measure") == 6  # measures 0, 1, 2 in both parts
    assert b'number="3"' not in out and out.endswith(b"</part></score-partwise>")
    assert _truncate_musicxml(xml, first_measure=1, n_keep=10) == (xml, False)


def test_analysis_cache_of_deleted_folders_is_pruned(tmp_path):
    cache = tmp_path / "cache"
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        sf.write(tmp_path / name / "a.wav", tone(1.5), SR)
    load_corpus(tmp_path / "one", excerpt_s=EXCERPT_S, cache_dir=cache)
    assert len(list((cache / "corpus" / "user").glob("*.json"))) == 1
    (tmp_path / "one" / "a.wav").unlink()
    (tmp_path / "one").rmdir()
    load_corpus(tmp_path / "two", excerpt_s=EXCERPT_S, cache_dir=cache)
    assert [p.name.split("-")[0] for p in (cache / "corpus" / "user").glob("*.json")] == ["two"]
