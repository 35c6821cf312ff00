"""Reading audio files into the project's layout: float32, shape (n_channels, n_samples)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.errors import AudioError


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a wav/flac/ogg (soundfile) or mp3 (librosa) file.

    Returns:
        (signal, sample_rate_hz): float32, shape (n_channels, n_samples), full scale = 1.0.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        import soundfile as sf

        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        signal = data.T
    except Exception as sf_exc:  # soundfile cannot read mp3 on every libsndfile
        try:
            import librosa

            signal, rate = librosa.load(str(path), sr=None, mono=False, dtype=np.float32)
            signal = np.atleast_2d(signal)
        except Exception:
            raise AudioError(f"cannot read audio file {path}: {sf_exc}") from None
    if signal.shape[1] == 0:
        raise AudioError(f"audio file {path} has no samples")
    if not np.all(np.isfinite(signal)):
        raise AudioError(f"audio file {path} contains NaN or infinite samples")
    return np.ascontiguousarray(signal, dtype=np.float32), int(rate)
