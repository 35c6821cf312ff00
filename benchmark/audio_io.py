"""Reading whole audio files into the project's layout: float32, shape (n_channels, n_samples).

The decoding (soundfile, with librosa as the fallback for mp3/ogg that libsndfile
cannot open) is the corpus reader's (:mod:`benchmark.corpus.excerpt`), so files
read here and excerpts read for a sweep go through the same code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from benchmark.errors import AudioError


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a whole wav/flac/ogg/mp3 file.

    Returns:
        (signal, sample_rate_hz): float32, shape (n_channels, n_samples), full scale = 1.0.
    """
    from benchmark.corpus.excerpt import Decoder

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        with Decoder(path) as decoder:
            signal, rate = decoder.read(0, sys.maxsize), decoder.sample_rate_hz
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from None
    except Exception as exc:  # a damaged file can fail mid-read with libsndfile's errors
        raise AudioError(f"cannot read audio file {path}: {exc}") from None
    if signal.shape[1] == 0:
        raise AudioError(f"audio file {path} has no samples")
    if not np.all(np.isfinite(signal)):
        raise AudioError(f"audio file {path} contains NaN or infinite samples")
    return signal, int(rate)
