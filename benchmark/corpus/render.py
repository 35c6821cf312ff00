"""Render one :class:`~benchmark.corpus.recipe.Arrangement` to a 44.1-kHz excerpt.

Pipeline (deterministic for fixed package versions):

1. :mod:`benchmark.corpus.score`: parse the score from music21's corpus,
   crop it, strip tempo marks and repeats, set one tempo, write MIDI; derive
   chord and bass parts from chord symbols and the beat grid for drums.
2. Set programs, pan and reverb per part, and add the drum part on channel
   10, with pretty_midi.
3. Synthesise with ``midirenderer`` and the General-MIDI soundfont
   ``TimGM6mb.sf2`` shipped in the pretty_midi wheel (48 kHz stereo).
4. Resample to 44.1 kHz (polyphase, 147/160), trim the leading silence, take
   ``excerpt_s`` seconds, fade the ends (5 ms in, 50 ms out) and set the level
   to -23 dBFS RMS, lowered where needed so that no peak exceeds -1 dBFS.
"""

from __future__ import annotations

import copy
import importlib.util
import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from benchmark.corpus.base import samples_sha256
from benchmark.corpus.recipe import Arrangement
from benchmark.corpus.score import score_midi
from benchmark.errors import BenchError

SAMPLE_RATE_HZ = 44100
TARGET_RMS_DBFS = -23.0
PEAK_LIMIT_DBFS = -1.0
ONSET_BELOW_PEAK_DB = 50.0
FADE_IN_S, FADE_OUT_S = 0.005, 0.05
REVERB_CC91, CHORUS_CC93, VOLUME_CC7 = 40, 0, 100
#: Extra music rendered beyond the excerpt (covers leading rests), in seconds.
MARGIN_S = 3.0

# General-MIDI drum notes (channel 10): kick, snare, closed hi-hat, crash.
KICK, SNARE, HIHAT, CRASH = 36, 38, 42, 49


def soundfont_path() -> Path:
    """Path of ``TimGM6mb.sf2`` inside the installed pretty_midi package."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("pretty_midi is not installed; it provides the soundfont for the built-in corpus")
    path = Path(list(spec.submodule_search_locations)[0]) / "TimGM6mb.sf2"
    if not path.is_file():
        raise BenchError(f"soundfont not found at {path}; reinstall pretty_midi")
    return path


@lru_cache(maxsize=2)
def _soundfont_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


def render_to_file(arr: Arrangement, *, excerpt_s: float, out_path: Path) -> tuple[int, str]:
    """Render ``arr`` and write it as a float WAV; returns (n_samples, sha256)."""
    x = render_excerpt(arr, excerpt_s=excerpt_s)
    sf.write(str(out_path), x.T, SAMPLE_RATE_HZ, subtype="FLOAT")
    return x.shape[1], samples_sha256(x)


def render_excerpt(arr: Arrangement, *, excerpt_s: float) -> np.ndarray:
    """The excerpt of ``arr``: float32, shape (2, n_samples), 44.1 kHz."""
    n_excerpt = round(excerpt_s * SAMPLE_RATE_HZ)
    margin_s = MARGIN_S
    for _ in range(4):
        midi, complete = arrangement_midi(arr, seconds=excerpt_s + margin_s)
        audio = synthesise(midi)
        onset = _onset(audio)
        if audio.shape[1] - onset >= n_excerpt or complete:
            break
        margin_s *= 3
    return _finish(audio[:, onset : onset + n_excerpt])


def synthesise(midi_bytes: bytes) -> np.ndarray:
    """MIDI bytes -> float64 array, shape (2, n_samples), 44.1 kHz."""
    import midirenderer

    wav = midirenderer.render_wave_from(_soundfont_bytes(str(soundfont_path())), midi_bytes)
    x, sr = sf.read(io.BytesIO(wav), dtype="float64", always_2d=True)
    if sr != 48000 or x.shape[1] != 2:
        raise BenchError(f"midirenderer returned {x.shape[1]} channels at {sr} Hz; expected stereo 48 kHz")
    return resample_poly(x.T, 147, 160, axis=1)


def arrangement_midi(arr: Arrangement, *, seconds: float) -> tuple[bytes, bool]:
    """MIDI bytes of ``arr``'s first ``seconds`` (whole measures); and whether the score ended."""
    music = score_midi(arr, seconds=seconds)
    return _arrange(music.midi, arr, music.derived, music.beats), music.complete


def _arrange(raw: bytes, arr: Arrangement, derived: dict, beats: list) -> bytes:
    """Rewrite music21's MIDI: one instrument per (part, program), pan, reverb, drums."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(io.BytesIO(raw))
    parts = [[n for inst in pm.instruments if inst.name == f"part{i}" for n in inst.notes]
             for i in range(len(arr.programs))]
    parts += [[pretty_midi.Note(v, p, t0, t1) for t0, t1, p, v in notes] for notes in derived.values()]
    programs = list(arr.programs) + [(prog,) for prog in derived]
    out = pretty_midi.PrettyMIDI(initial_tempo=float(arr.bpm))
    for i, (notes, progs) in enumerate(zip(parts, programs)):
        controls = ((7, VOLUME_CC7), (10, _pan(i, len(programs))), (91, REVERB_CC91), (93, CHORUS_CC93))
        for prog in progs:
            inst = pretty_midi.Instrument(program=prog, name=f"part{i}-{prog}")
            inst.notes = sorted(copy.deepcopy(notes), key=lambda n: (n.start, n.pitch, n.end))
            inst.control_changes = [pretty_midi.ControlChange(c, v, 0.0) for c, v in controls]
            out.instruments.append(inst)
    if beats:
        out.instruments.append(_drum_part(beats, pretty_midi))
    buf = io.BytesIO()
    out.write(buf)
    return buf.getvalue()


def _drum_part(beats, pretty_midi):
    """Kick on the downbeat (and mid-bar in 4), snare on the other beats, hi-hat in half beats."""
    drums = pretty_midi.Instrument(program=0, is_drum=True, name="drums")

    def hit(pitch, t, velocity):
        drums.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch, start=t, end=t + 0.1))

    hit(CRASH, beats[0][0], 80)
    for t, k, n, beat_s in beats:
        if k == 0 or (n == 4 and k == 2):
            hit(KICK, t, 96)
        else:
            hit(SNARE, t, 64 if n == 3 else 80)
        hit(HIHAT, t, 64)
        hit(HIHAT, t + beat_s / 2, 48)
    drums.notes.sort(key=lambda n: (n.start, n.pitch))
    return drums


def _pan(i: int, n: int) -> int:
    """Spread n parts from left (24) to right (104)."""
    return 64 if n == 1 else round(24 + 80 * i / (n - 1))


def _onset(x: np.ndarray) -> int:
    """First sample within ONSET_BELOW_PEAK_DB of the peak, minus 5 ms."""
    env = np.max(np.abs(x), axis=0)
    peak = float(env.max()) if env.size else 0.0
    if peak == 0.0:
        raise BenchError("the rendered audio is silent")
    first = int(np.argmax(env > peak * 10 ** (-ONSET_BELOW_PEAK_DB / 20)))
    return max(0, first - round(0.005 * SAMPLE_RATE_HZ))


def _finish(x: np.ndarray) -> np.ndarray:
    """Fade the ends and set the level; returns float32 (2, n_samples)."""
    x = np.array(x, dtype=np.float64)
    n_in = min(round(FADE_IN_S * SAMPLE_RATE_HZ), x.shape[1])
    n_out = min(round(FADE_OUT_S * SAMPLE_RATE_HZ), x.shape[1])
    x[:, :n_in] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(n_in) / n_in)  # raised-cosine ramps
    x[:, x.shape[1] - n_out :] *= 0.5 + 0.5 * np.cos(np.pi * (np.arange(n_out) + 1) / n_out)
    rms = float(np.sqrt(np.mean(np.square(x))))
    gain = 10 ** (TARGET_RMS_DBFS / 20) / rms
    peak = float(np.max(np.abs(x)))
    gain = min(gain, 10 ** (PEAK_LIMIT_DBFS / 20) / peak)
    return np.ascontiguousarray(x * gain, dtype=np.float32)
