"""HAAQI-Net prediction on arrays and files, with the model loaded once.

>>> p = Predictor()                                   # the shipped checkpoint, CPU
>>> p.predict_file("song.wav", audiogram="N3", spl_db=70)
[{'file': 'song.wav', 'ear': 'left', 'haaqinet': 0.71}, {'file': 'song.wav', 'ear': 'right', ...}]

Inputs:

* Audio of any sample rate of at least 8 kHz, resampled to 16 kHz (polyphase).
  A mono file is one ear ("mono"); a stereo file is judged per ear (channel 0
  left, channel 1 right); more channels are refused.
* ``spl_db``: the RMS presentation level of the *file* in dB SPL (over both
  channels for stereo, as in :mod:`benchmark.calibration`). Each ear's level is
  derived from it: ``spl_db + 20 log10(rms(channel) / rms(file))``.
* ``audiogram``: a built-in name, 8 dB HL values (``"10,20,30,40,50,60,60,60"``),
  or a :class:`~benchmark.audiogram.Audiogram`.
* ``input_spl_db`` (optional): the RMS level in dB SPL at which the clean music
  was presented to the hearing aid (``bench run --spl``); None or NaN where it is
  not known. Networks trained with it (``input_level``) use it, others ignore it.

Errors are :class:`~benchmark.errors.BenchError` (unreadable, silent, too-low
sample rate, bad audiogram, missing or incompatible checkpoint).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmark.errors import AudioError, BenchError

#: The shipped teacher: one network, the one the student is distilled from (docs/haaqinet.md); it takes the
#: clean music's presentation level (``input_level``).
TEACHER_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "haaqinet-auditory.pt"
#: The shipped distilled student (docs/haaqinet-distill.md).
STUDENT_CHECKPOINT = TEACHER_CHECKPOINT.with_name("haaqinet-auditory-student.pt")
#: The shipped ensemble: the mean of four networks that take the clean music's level, the teacher, two more
#: seeds of its recipe and one with ``level_channels`` (``haaqinet/ensemble.py``, docs/haaqinet-data.md, session 18).
ENSEMBLE_CHECKPOINT = TEACHER_CHECKPOINT.with_name("haaqinet-auditory-ensemble.pt")
#: The checkpoint used where none is named: the most accurate shipped one, with the clean music's level known
#: (``bench run`` always knows it) or not.
DEFAULT_CHECKPOINT = ENSEMBLE_CHECKPOINT
#: Names accepted wherever a checkpoint path is (``--checkpoint student``, ``--haaqinet-checkpoint student``).
CHECKPOINT_NAMES = {"default": DEFAULT_CHECKPOINT, "teacher": TEACHER_CHECKPOINT, "student": STUDENT_CHECKPOINT,
                    "ensemble": ENSEMBLE_CHECKPOINT}
MODEL_RATE_HZ = 16000
#: Lowest accepted input sample rate in Hz (below it the 16-kHz model would see an empty upper band).
MIN_RATE_HZ = 8000
SILENCE_RMS = 1e-5


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """The file of a checkpoint given by path or by name.

    ``None``, ``"default"`` and ``"ensemble"`` are the shipped ensemble ``haaqinet-auditory-ensemble.pt``;
    ``"teacher"`` is the single network ``haaqinet-auditory.pt``; ``"student"`` is the distilled
    ``haaqinet-auditory-student.pt``. An existing file always wins over a name.
    """
    if checkpoint is None:
        return DEFAULT_CHECKPOINT
    path = Path(checkpoint)
    if path.exists():
        return path
    return CHECKPOINT_NAMES.get(str(checkpoint), path)


def predict_arrays(model, waveforms_16k: np.ndarray, audiograms_db_hl: np.ndarray, spl_db: np.ndarray, *,
                   batch_size: int = 32, device: str = "cpu", n_samples: np.ndarray | None = None,
                   input_spl_db: np.ndarray | None = None) -> np.ndarray:
    """Clip scores of a batch of equal-length (zero-padded) 16-kHz signals.

    Args:
        model: a HAAQINet (or its :class:`haaqinet.fast.FastHAAQINet`).
        waveforms_16k: float32 (n_items, n_samples), 16 kHz, any digital scale.
        audiograms_db_hl: float32 (n_items, 8), dB HL at 250..8000 Hz.
        spl_db: float32 (n_items,), RMS level of each signal in dB SPL.
        n_samples: optional int (n_items,), unpadded lengths.
        input_spl_db: optional float32 (n_items,), the level in dB SPL at which the clean music is presented to
            the hearing aid (NaN: unknown); used by networks with ``input_level``, ignored by others.

    Returns:
        float64 (n_items,) predictions in (0, 1).
    """
    import torch

    model = model.to(device).eval()
    out = np.zeros(len(waveforms_16k))
    with torch.inference_mode():
        for i in range(0, len(waveforms_16k), batch_size):
            sl = slice(i, i + batch_size)
            x = torch.as_tensor(np.asarray(waveforms_16k[sl], dtype=np.float32), device=device)
            a = torch.as_tensor(np.asarray(audiograms_db_hl[sl], dtype=np.float32), device=device)
            s = torch.as_tensor(np.asarray(spl_db[sl], dtype=np.float32), device=device)
            n = None if n_samples is None else torch.as_tensor(np.asarray(n_samples[sl]), device="cpu")
            li = None if input_spl_db is None else torch.as_tensor(
                np.asarray(input_spl_db[sl], dtype=np.float32), device=device)
            clip, _ = model(x, a, s, n, input_spl_db=li)
            out[sl] = clip.double().cpu().numpy()
    return out


def to_16k(signal: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Resample (n_channels, n_samples) audio to 16 kHz; rates below 8 kHz are refused."""
    from scipy.signal import resample_poly

    rate = int(sample_rate_hz)
    if rate < MIN_RATE_HZ:
        raise AudioError(f"sample rate {rate} Hz is too low; HAAQI-Net needs at least {MIN_RATE_HZ} Hz "
                         f"(it judges 16-kHz audio)")
    if rate == MODEL_RATE_HZ:
        return np.asarray(signal, dtype=np.float32)
    g = math.gcd(rate, MODEL_RATE_HZ)
    return resample_poly(np.asarray(signal, dtype=np.float64), MODEL_RATE_HZ // g, rate // g, axis=-1).astype(
        np.float32)


def _audiogram(audiogram):
    from benchmark.audiogram import STANDARD_FREQUENCIES_HZ, Audiogram, parse_audiogram

    a = audiogram if isinstance(audiogram, Audiogram) else parse_audiogram(str(audiogram))
    return np.asarray(a.at(STANDARD_FREQUENCIES_HZ), dtype=np.float32)


class Predictor:
    """A loaded HAAQI-Net: predictions for arrays, files and manifests.

    Args:
        checkpoint: a checkpoint path, or a name of :data:`CHECKPOINT_NAMES` (``"student"``; default:
            :data:`DEFAULT_CHECKPOINT`, the shipped ensemble ``haaqinet-auditory-ensemble.pt``).
        device: torch device string.
        batch_size: clips per forward pass.
        frontend_path: where an external encoder (beats/hf) now lives, if it moved.

    ``model`` is the network; predictions run ``runner``, its fast CPU inference form where there is one
    (:func:`haaqinet.fast.inference_model`: the same scores up to float32 rounding), else the model.
    """

    def __init__(self, checkpoint: str | Path | None = None, *, device: str = "cpu", batch_size: int = 16,
                 frontend_path: str | Path | None = None):
        from haaqinet.checkpoint import load_checkpoint
        from haaqinet.fast import inference_model

        path = resolve_checkpoint(checkpoint)
        named = checkpoint is None or str(checkpoint) in CHECKPOINT_NAMES or path in CHECKPOINT_NAMES.values()
        if named and not path.is_file():
            raise BenchError(f"the shipped HAAQI-Net checkpoint {path.name} is missing ({path}); reinstall "
                             f"haaqi-bench or pass --checkpoint")
        self.checkpoint = path
        self.device, self.batch_size = device, batch_size
        self.model = load_checkpoint(path, map_location=device, frontend_path=frontend_path)
        self.runner = inference_model(self.model)

    @property
    def uses_input_level(self) -> bool:
        """Whether the network takes the clean music's presentation level (every member, for an ensemble)."""
        return bool(getattr(self.model, "input_level", False))

    def predict_signals(self, signals: list[np.ndarray], audiograms: list, spl_db,
                        input_spl_db=None) -> np.ndarray:
        """Scores of 1-D 16-kHz signals (each one ear at its own level), float64 (n,).

        ``input_spl_db``: optional, one clean-music presentation level per signal (NaN: unknown).

        Signals of equal length are batched together (no padding), so a score
        does not depend on what else is in the call.
        """
        if not signals:
            return np.zeros(0)
        levels = np.stack([_audiogram(a) for a in audiograms])
        spl = np.asarray(spl_db, dtype=np.float32).reshape(-1)
        inp = (np.full(len(signals), np.nan, np.float32) if input_spl_db is None
               else np.asarray(input_spl_db, dtype=np.float32).reshape(-1))
        if len(inp) != len(signals):
            raise BenchError(f"{len(inp)} input levels for {len(signals)} signals")
        by_length: dict[int, list[int]] = {}
        for i, s in enumerate(signals):
            by_length.setdefault(int(s.size), []).append(i)
        out = np.zeros(len(signals))
        for length, members in sorted(by_length.items()):
            for k in range(0, len(members), self.batch_size):
                idx = np.asarray(members[k:k + self.batch_size])
                batch = np.stack([np.asarray(signals[j], dtype=np.float32) for j in idx])
                out[idx] = predict_arrays(self.runner, batch, levels[idx], spl[idx], batch_size=len(idx),
                                          device=self.device, input_spl_db=inp[idx])
        return out

    def ears(self, signal: np.ndarray, sample_rate_hz: int, spl_db: float, what: str = "signal"):
        """Split a (n_channels, n_samples) signal into ears: [(ear, 16-kHz 1-D signal, ear spl_db)]."""
        x = np.asarray(signal, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[0] > 2:
            raise AudioError(f"{what}: expected mono or stereo (n_channels, n_samples), got shape {x.shape}")
        total = float(np.sqrt(np.mean(np.square(x))))
        if not math.isfinite(total) or total < SILENCE_RMS:
            raise AudioError(f"{what} is silent (RMS {total:.3g}); HAAQI-Net needs audible music")
        x16 = to_16k(x, sample_rate_hz)
        if x16.shape[1] < 0.5 * MODEL_RATE_HZ:
            raise AudioError(f"{what} is too short ({x.shape[1] / sample_rate_hz:.2f} s); give at least 0.5 s")
        names = ("mono",) if x.shape[0] == 1 else ("left", "right")
        out = []
        for ear, ch, ch16 in zip(names, x, x16):
            r = float(np.sqrt(np.mean(np.square(ch))))
            if r < SILENCE_RMS:
                raise AudioError(f"{what}: the {ear} channel is silent")
            out.append((ear, ch16, float(spl_db) + 20.0 * math.log10(r / total)))
        return out

    def predict_file(self, path: str | Path, *, audiogram, spl_db: float,
                     input_spl_db: float | None = None) -> list[dict]:
        """``[{"file", "ear", "haaqinet"}]``, one entry per ear of an audio file."""
        return self.predict_files([path], audiogram=audiogram, spl_db=spl_db, input_spl_db=input_spl_db)

    def predict_files(self, paths, *, audiogram, spl_db: float, input_spl_db: float | None = None) -> list[dict]:
        """Every ear of every file, one audiogram and level (and clean-music level, if known) for all."""
        input_spl_db = check_input_spl(input_spl_db)
        rows, signals = [], []
        for path in paths:
            for ear, x16, ear_spl in self._read(path, spl_db):
                rows.append({"file": str(path), "ear": ear})
                signals.append((x16, ear_spl))
        scores = self.predict_signals([s for s, _ in signals], [audiogram] * len(signals),
                                      [v for _, v in signals], [input_spl_db] * len(signals))
        return [{**r, "haaqinet": float(v)} for r, v in zip(rows, scores)]

    def predict_manifest(self, table, *, base_dir: str | Path | None = None):
        """A manifest DataFrame (``file``, ``audiogram``, ``spl_db``, optionally ``input_spl_db``: the clean
        music's presentation level, blank where unknown) with a ``haaqinet`` column added.

        A stereo file's score is the mean of its two ears; ``haaqinet_left`` and
        ``haaqinet_right`` hold the ears. Rows keep their order. Relative file
        names are read relative to ``base_dir``.
        """
        import pandas as pd

        missing = {"file", "audiogram", "spl_db"} - set(table.columns)
        if missing:
            raise BenchError(f"manifest lacks the columns {sorted(missing)} (needs file, audiogram, spl_db)")
        signals, audiograms, levels, inputs, owner = [], [], [], [], []
        input_col = table["input_spl_db"] if "input_spl_db" in table.columns else [None] * len(table)
        for i, (row, input_spl) in enumerate(zip(table.itertuples(index=False), input_col)):
            _audiogram(row.audiogram)  # fail early on a bad audiogram
            input_spl = check_input_spl(input_spl, what=f"manifest row {i + 1}: input_spl_db")
            path = Path(str(row.file))
            path = path if path.is_absolute() or base_dir is None else Path(base_dir) / path
            for ear, x16, ear_spl in self._read(path, float(row.spl_db)):
                signals.append(x16)
                audiograms.append(row.audiogram)
                levels.append(ear_spl)
                inputs.append(input_spl)
                owner.append((i, ear))
        scores = self.predict_signals(signals, audiograms, levels, inputs)
        per = {}
        for (i, ear), v in zip(owner, scores):
            per.setdefault(i, {})[ear] = float(v)
        out = pd.DataFrame(table).copy()
        out["haaqinet"] = [float(np.mean(list(per[i].values()))) for i in range(len(out))]
        out["haaqinet_left"] = [per[i].get("left", per[i].get("mono")) for i in range(len(out))]
        out["haaqinet_right"] = [per[i].get("right", per[i].get("mono")) for i in range(len(out))]
        return out

    def _read(self, path, spl_db: float):
        from benchmark.audio_io import read_audio
        from benchmark.calibration import check_spl

        check_spl(spl_db)
        signal, rate = read_audio(path)
        return self.ears(signal, rate, spl_db, what=str(path))


def check_input_spl(value, what: str = "input_spl_db") -> float:
    """A clean-music presentation level in dB SPL, or NaN for None, NaN or a blank: unknown."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise BenchError(f"{what} must be a level in dB SPL or blank (unknown), got {value!r}") from None
    if math.isnan(level):
        return level
    from benchmark.calibration import check_spl

    try:
        return check_spl(level)
    except BenchError as exc:
        raise BenchError(f"{what}: {exc}") from None


def read_manifest(path: str | Path):
    """A manifest CSV (``file``, ``audiogram``, ``spl_db``) and the folder relative files are in (its own)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise BenchError(f"manifest not found: {path}")
    try:
        table = pd.read_csv(path, dtype={"audiogram": str, "file": str})
    except Exception as exc:  # noqa: BLE001 - pandas raises many types
        raise BenchError(f"cannot read manifest {path}: {exc}") from None
    return table, path.parent
