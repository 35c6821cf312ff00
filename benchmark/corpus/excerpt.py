"""Reading audio files and choosing excerpt windows.

Layout everywhere: float32 arrays of shape (n_channels, n_samples), full
scale = 1.0, time last. Mono files are duplicated to two channels; files with
more than two channels are refused.

Window choice for user files (deterministic):

1. The file is cut into 0.1-s blocks and the mean power of each block is taken
   over all channels.
2. Candidate windows of ``excerpt_s`` start on a 0.5-s grid and lie wholly
   inside the file. Their level is the mean power of the blocks they cover.
3. The chosen window is the *earliest* candidate whose level is within 3 dB of
   the loudest candidate and whose first 0.5 s is no more than 20 dB below
   the window's level (so it does not open on silence). If no candidate has
   such an opening, the earliest one within 3 dB is taken.
4. A file no longer than ``excerpt_s`` is used whole.

Reading: soundfile (libsndfile) for wav/flac/ogg/mp3; if libsndfile cannot
open an mp3 or ogg file, librosa (audioread) is tried. Files are read in
chunks, so memory does not grow with their length. Lossy formats are decoded
from the start rather than seeked, so a window's samples do not depend on
seek accuracy.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmark.calibration import SILENCE_RMS
from benchmark.corpus.base import Clip, samples_sha256
from benchmark.errors import AudioError

logger = logging.getLogger(__name__)

#: Block length for the level analysis, in seconds.
BLOCK_S = 0.1
#: Spacing of candidate window starts, in seconds.
GRID_S = 0.5
#: A candidate window must be within this many dB of the loudest one.
WITHIN_DB = 3.0
#: Length of a window's opening that must not be silent, in seconds.
HEAD_S = 0.5
#: How far the opening may lie below the window's level, in dB.
HEAD_BELOW_DB = 20.0
#: Files shorter than this are refused, in seconds.
MIN_DURATION_S = 1.0

#: Suffixes for which librosa (audioread) is tried when libsndfile fails.
_LIBROSA_SUFFIXES = (".mp3", ".ogg")
#: libsndfile formats in which seeking is sample-exact.
_SEEKABLE = {"WAV", "WAVEX", "W64", "RF64", "FLAC", "AIFF", "CAF"}
_CHUNK_FRAMES = 1 << 18
_SF_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError)


@dataclass(frozen=True)
class Window:
    """An excerpt window chosen in a file.

    Attributes:
        start_s: window start, in seconds (a whole number of samples).
        duration_s: window length, in seconds (a whole number of samples).
        sample_rate_hz: the file's sample rate.
        sha256: SHA-256 of the window's float32 samples, shape (2, n_samples).
    """

    start_s: float
    duration_s: float
    sample_rate_hz: int
    sha256: str


class Decoder:
    """Sequential or seeking reads of one audio file, via soundfile or librosa (mp3/ogg fallback).

    Shared by the corpus reader and :func:`benchmark.audio_io.read_audio`. Use as a context manager;
    raises AudioError for a file neither can decode.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = None
        self._whole = None  # librosa's decoded samples, shape (n_samples, n_channels)
        try:
            self._file = sf.SoundFile(str(path))
            self.sample_rate_hz, self.n_channels = self._file.samplerate, self._file.channels
        except _SF_ERRORS as exc:
            if self.path.suffix.lower() not in _LIBROSA_SUFFIXES:
                raise AudioError(f"cannot read audio: {exc}") from exc
            self._whole, self.sample_rate_hz = _read_with_librosa(self.path, exc)
            self.n_channels = self._whole.shape[1]

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()

    def chunks(self, start: int = 0) -> Iterator[np.ndarray]:
        """float32 chunks, shape (n, n_channels), from sample ``start`` to the end."""
        if self._whole is not None:
            for i in range(start, len(self._whole), _CHUNK_FRAMES):
                yield self._whole[i : i + _CHUNK_FRAMES]
            return
        f = self._file
        if f.format in _SEEKABLE:
            f.seek(start)
            skip = 0
        else:
            f.seek(0)
            skip = start
        while True:
            x = f.read(_CHUNK_FRAMES, dtype="float32", always_2d=True)
            if len(x) == 0:
                return
            if skip >= len(x):
                skip -= len(x)
                continue
            yield x[skip:]
            skip = 0

    def read(self, start: int, frames: int) -> np.ndarray:
        """Up to ``frames`` samples from ``start``: float32, shape (n_channels, n)."""
        parts, n = [], 0
        for x in self.chunks(start):
            parts.append(x[: frames - n])
            n += len(parts[-1])
            if n >= frames:
                break
        x = np.concatenate(parts) if parts else np.zeros((0, self.n_channels), np.float32)
        return np.ascontiguousarray(x.T)


def _read_with_librosa(path: Path, first_error: Exception) -> tuple[np.ndarray, int]:
    """Fallback decoder; returns float32 (n_samples, n_channels) and the rate."""
    try:
        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "PySoundFile failed. Trying audioread instead."
            y, sr = librosa.load(str(path), sr=None, mono=False, dtype=np.float32)
    except Exception as exc:  # audioread raises many unrelated types
        raise AudioError(f"cannot read audio: {first_error}; librosa: {type(exc).__name__} {exc}".rstrip()) from exc
    return np.ascontiguousarray(np.atleast_2d(y).T), int(sr)


def to_stereo(signal: np.ndarray, what: str = "signal") -> np.ndarray:
    """Mono -> two identical channels; stereo unchanged; more -> AudioError."""
    n_channels = signal.shape[0]
    if n_channels == 1:
        return np.ascontiguousarray(np.repeat(signal, 2, axis=0))
    if n_channels == 2:
        return signal
    raise AudioError(f"{what} has {n_channels} channels; only mono and stereo are supported")


def choose_window(block_power: np.ndarray, *, block_frames: int, n_frames: int, excerpt_frames: int) -> int:
    """Start sample of the excerpt window (see the module docstring).

    Args:
        block_power: float array, shape (n_blocks,), mean power of each whole block.
        block_frames: samples per block.
        n_frames: samples in the file.
        excerpt_frames: samples in the window.
    """
    if n_frames <= excerpt_frames:
        return 0
    n_win = math.ceil(excerpt_frames / block_frames)
    starts = np.arange(0, len(block_power) - n_win + 1, max(1, round(GRID_S / BLOCK_S)))
    if starts.size == 0:
        return 0
    csum = np.concatenate([[0.0], np.cumsum(block_power, dtype=np.float64)])
    win_db = _db((csum[starts + n_win] - csum[starts]) / n_win)
    n_head = min(n_win, max(1, round(HEAD_S / BLOCK_S)))
    head_db = _db((csum[starts + n_head] - csum[starts]) / n_head)
    loud = win_db >= win_db.max() - WITHIN_DB
    good = loud & (head_db >= win_db - HEAD_BELOW_DB)
    pick = np.flatnonzero(good if good.any() else loud)[0]
    return int(starts[pick]) * block_frames


def analyse_file(path: Path, *, excerpt_s: float) -> Window:
    """Choose and fingerprint the excerpt window of one file.

    Raises:
        AudioError: unreadable, >2 channels, too short, non-finite or silent.
    """
    with Decoder(path) as dec:
        sr = dec.sample_rate_hz
        to_stereo(np.zeros((dec.n_channels, 0), np.float32), "the file")  # channel check
        block_frames = max(1, round(BLOCK_S * sr))
        power, n_frames = _block_power(dec.chunks(), block_frames)
        if n_frames < MIN_DURATION_S * sr:
            raise AudioError(f"shorter than {MIN_DURATION_S:g} s ({n_frames / sr:.3g} s)")
        excerpt_frames = min(n_frames, round(excerpt_s * sr))
        start = choose_window(power, block_frames=block_frames, n_frames=n_frames, excerpt_frames=excerpt_frames)
        excerpt = to_stereo(dec.read(start, excerpt_frames))
    level = float(np.sqrt(np.mean(np.square(excerpt, dtype=np.float64))))
    if level < SILENCE_RMS:
        raise AudioError(f"silent (excerpt RMS {level:.3g} < {SILENCE_RMS:g})")
    return Window(start / sr, excerpt_frames / sr, int(sr), samples_sha256(excerpt))


def _block_power(chunks: Iterator[np.ndarray], block_frames: int) -> tuple[np.ndarray, int]:
    """Mean power of each whole block, shape (n_blocks,), and the total sample count."""
    powers, n_frames = [], 0
    carry = None
    for x in chunks:
        if not np.isfinite(x).all():
            raise AudioError("contains NaN or infinite samples")
        n_frames += len(x)
        x = x if carry is None else np.concatenate([carry, x])
        n_blocks = len(x) // block_frames
        blocks = x[: n_blocks * block_frames].reshape(n_blocks, -1)  # (n_blocks, block_frames * n_channels)
        powers.append(np.mean(np.square(blocks, dtype=np.float64), axis=1))
        carry = x[n_blocks * block_frames :]
    return (np.concatenate(powers) if powers else np.zeros(0)), n_frames


def load_excerpt(clip: Clip) -> tuple[np.ndarray, int]:
    """The clip's excerpt: exactly its window, as two channels.

    Returns:
        (signal, sample_rate_hz); signal: float32, shape (2, n_samples),
        full scale = 1.0, n_samples = round(duration_s * sample_rate_hz).

    Raises:
        AudioError: the file is missing, unreadable, has more than two
            channels, or no longer matches the clip's ``sha256``.
    """
    path = Path(clip.path)
    if not path.is_file():
        raise AudioError(f"audio file of clip {clip.clip_id!r} not found: {path}")
    with Decoder(path) as dec:
        sr = dec.sample_rate_hz
        start, frames = round(clip.start_s * sr), round(clip.duration_s * sr)
        x = to_stereo(dec.read(start, frames), str(path))
    if x.shape[1] != frames:
        raise AudioError(f"{path} is shorter than clip {clip.clip_id!r}'s window ({x.shape[1]} of {frames} samples)")
    if clip.sha256 and samples_sha256(x) != clip.sha256:
        raise AudioError(f"{path} changed since the corpus was loaded (clip {clip.clip_id!r}); reload the corpus")
    return x, sr


def _db(power: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(power, 1e-20))
