import numpy as np
import pytest
import soundfile as sf


def music_like(duration_s: float, rate: int, seed: int) -> np.ndarray:
    """A deterministic stereo 'music' signal: harmonic notes with envelopes, shape (2, n)."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * rate)
    t = np.arange(n) / rate
    out = np.zeros((2, n))
    note_s = 0.25
    for k in range(int(duration_s / note_s)):
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        seg = (t >= k * note_s) & (t < (k + 1) * note_s)
        env = np.exp(-(t[seg] - k * note_s) * 6)
        for h in range(1, 6):
            out[:, seg] += env * np.sin(2 * np.pi * f0 * h * t[seg]) / h
    out[1] *= 0.8
    return (0.1 * out / np.abs(out).max()).astype(np.float32)


@pytest.fixture
def audio_folder(tmp_path):
    """A user corpus folder with three short stereo clips at 24 kHz."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(3):
        sf.write(folder / f"song{i}.wav", music_like(1.0, 24000, i).T, 24000, subtype="FLOAT")
    return folder


@pytest.fixture
def pair_files(tmp_path):
    """A stereo reference and a noisy processed version at 24 kHz, 0.8 s."""
    ref = music_like(0.8, 24000, 7)
    noisy = ref + 0.01 * np.random.default_rng(0).standard_normal(ref.shape).astype(np.float32)
    sf.write(tmp_path / "ref.wav", ref.T, 24000, subtype="FLOAT")
    sf.write(tmp_path / "proc.wav", noisy.T, 24000, subtype="FLOAT")
    sf.write(tmp_path / "mono.wav", ref[0], 24000, subtype="FLOAT")
    return tmp_path / "ref.wav", tmp_path / "proc.wav", tmp_path / "mono.wav"
