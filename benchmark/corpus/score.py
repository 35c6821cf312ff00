"""From a music21 corpus score to MIDI: the symbolic half of the built-in corpus.

The score is parsed from its file in music21's corpus (never from music21's
pickle cache), cut to the measures an excerpt needs, stripped of tempo marks,
repeat barlines, repeat signs, volta brackets and instruments (unbalanced
repeats make music21's MIDI writer raise), given one fixed tempo, and written
as MIDI with one track per part, named ``part<i>``.
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

from benchmark.corpus.recipe import Arrangement
from benchmark.errors import BenchError


@dataclass(frozen=True)
class ScoreMidi:
    """The symbolic material of one arrangement.

    Attributes:
        midi: music21's MIDI file bytes; track ``part<i>`` holds score part i.
        derived: ``{gm_program: [(start_s, end_s, midi_pitch, velocity), ...]}``
            for the chord and bass parts realised from chord symbols.
        beats: ``(time_s, beat_index, beats_per_bar, beat_s)`` of every beat
            of every full measure (empty unless the arrangement has drums).
        complete: the excerpt reaches the end of the score.
    """

    midi: bytes
    derived: dict
    beats: list
    complete: bool


def score_midi(arr: Arrangement, *, seconds: float) -> ScoreMidi:
    """Parse, crop and clean ``arr``'s score and write ``seconds`` of it as MIDI."""
    from music21 import midi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score, truncated = _parse(arr, seconds)
        if len(score.parts) != len(arr.programs):
            raise BenchError(
                f"{arr.source} has {len(score.parts)} parts; recipe {arr.clip_id!r} gives {len(arr.programs)}"
            )
        score, complete = _crop(score, arr, seconds)
        _clean(score, arr)
        beats = _beat_grid(score, arr.bpm) if arr.drums else []
        derived = _chord_parts(score, arr)
        raw = midi.translate.streamToMidiFile(score).writestr()
    return ScoreMidi(raw, derived, beats, complete and not truncated)


def _parse(arr: Arrangement, seconds: float):
    """Parse ``arr.source`` from its file (never music21's pickle cache).

    MusicXML scores are first cut after the measures that ``seconds`` can need
    (every measure lasts at least a quarter note), which makes parsing the
    long quartet movements ten times faster. Returns (score, truncated).
    """
    from music21 import converter, corpus

    path = corpus.getWork(arr.source)
    xml = _musicxml_bytes(Path(path)) if isinstance(path, (str, Path)) else None
    if xml is None:
        return corpus.parse(arr.source, forceSource=True), False
    n_keep = int(seconds * arr.bpm / 60.0) + 3
    xml, truncated = _truncate_musicxml(xml, arr.first_measure, n_keep)
    return converter.parseData(xml, format="musicxml", forceSource=True), truncated


def _musicxml_bytes(path: Path) -> bytes | None:
    """The MusicXML document of an .xml/.musicxml/.mxl file, else None."""
    suffix = path.suffix.lower()
    if suffix in (".xml", ".musicxml"):
        return path.read_bytes()
    if suffix != ".mxl":
        return None
    with zipfile.ZipFile(path) as z:
        container = ET.fromstring(z.read("META-INF/container.xml"))
        rootfile = next((e.get("full-path") for e in container.iter() if e.tag.endswith("rootfile")), None)
        return z.read(rootfile) if rootfile else None


_PART_RE = re.compile(rb"<part\b[^>]*>(.*?)</part>", re.S)
_MEASURE_RE = re.compile(rb"<measure\b[^>]*?\bnumber=\"([^\"]*)\"")


def _truncate_musicxml(xml: bytes, first_measure: int, n_keep: int) -> tuple[bytes, bool]:
    """Drop every measure after the ``n_keep`` starting at ``first_measure``.

    Works on the text (a partwise score's parts hold their measures in
    order), which is much faster than a DOM round trip.
    """
    if b"<score-partwise" not in xml:
        return xml, False
    out, pos, truncated = [], 0, False
    for part in _PART_RE.finditer(xml):
        starts = [(m.start(), m.group(1)) for m in _MEASURE_RE.finditer(xml, part.start(1), part.end(1))]
        numbers = [num for _, num in starts]
        first = numbers.index(str(first_measure).encode()) if str(first_measure).encode() in numbers else 0
        if first + n_keep < len(starts):
            cut = starts[first + n_keep][0]
            out += [xml[pos:cut]]
            pos = part.end(1)
            truncated = True
    out.append(xml[pos:])
    return b"".join(out), truncated


def _crop(score, arr: Arrangement, seconds: float):
    """Measures ``first_measure`` onwards lasting ``seconds``; and whether they reach the score's end."""
    from music21 import stream

    measures = list(score.parts[0].getElementsByClass(stream.Measure))
    numbers = [m.number for m in measures]
    if arr.first_measure not in numbers:
        raise BenchError(f"{arr.source} has no measure {arr.first_measure}")
    need_ql = seconds * arr.bpm / 60.0
    total, last = 0.0, numbers[-1]
    for m in measures[numbers.index(arr.first_measure) :]:
        total += float(m.duration.quarterLength)
        if total >= need_ql:
            last = m.number
            break
    return score.measures(arr.first_measure, last), last == numbers[-1]


def _clean(score, arr: Arrangement) -> None:
    """Remove tempo marks, repeats, voltas and instruments; set one tempo; label the parts."""
    from music21 import bar, instrument, repeat, spanner, stream, tempo
    from music21.exceptions21 import StreamException

    for cls in (tempo.TempoIndication, repeat.RepeatExpression, instrument.Instrument, spanner.RepeatBracket):
        for el in list(score.recurse(includeSelf=True).getElementsByClass(cls)):
            for site in list(el.sites.get()):
                if isinstance(site, stream.Stream):
                    try:
                        site.remove(el)
                    except StreamException:  # a stale site that no longer holds it
                        pass
    for m in score.recurse().getElementsByClass(stream.Measure):
        if isinstance(m.leftBarline, bar.Repeat):
            m.leftBarline = bar.Barline("regular")
        if isinstance(m.rightBarline, bar.Repeat):
            m.rightBarline = bar.Barline("regular")
    for i, part in enumerate(score.parts):
        inst = instrument.Instrument()
        inst.partName = inst.instrumentName = part.partName = f"part{i}"
        part.getElementsByClass(stream.Measure).first().insert(0, inst)
    first = score.parts[0].getElementsByClass(stream.Measure).first()
    first.insert(0, tempo.MetronomeMark(number=arr.bpm, referent=1.0))


def _chord_parts(score, arr: Arrangement) -> dict[int, list[tuple[float, float, int, int]]]:
    """Chord and bass notes realised from part 0's chord symbols.

    Returns:
        {program: [(start_s, end_s, midi_pitch, velocity), ...]}: chords struck
        on every beat, the root (octave 2) on every half note.
    """
    from music21 import harmony, pitch

    if arr.chord_program is None and arr.bass_program is None:
        return {}
    s_per_ql = 60.0 / arr.bpm
    flat = score.parts[0].flatten()
    symbols = [cs for cs in flat.getElementsByClass(harmony.ChordSymbol) if cs.pitches]
    ends = [float(cs.offset) for cs in symbols[1:]] + [float(flat.highestTime)]
    chords, bass = [], []
    for cs, end in zip(symbols, ends):
        t = float(cs.offset)
        root = pitch.Pitch(cs.root().name + "2").midi
        while t < end - 1e-9:
            chords += [(t * s_per_ql, min(t + 0.9, end) * s_per_ql, p.midi, 64) for p in cs.pitches]
            if (t - float(cs.offset)) % 2 == 0:
                bass.append((t * s_per_ql, min(t + 1.8, end) * s_per_ql, root, 90))
            t += 1.0
    out = {}
    if arr.chord_program is not None:
        out[arr.chord_program] = chords
    if arr.bass_program is not None:
        out[arr.bass_program] = bass
    return out


def _beat_grid(score, bpm: float) -> list[tuple[float, int, int, float]]:
    """(time_s, beat_index, beats_per_bar, beat_s) of every beat of every full measure."""
    from music21 import meter, stream

    grid = []
    for m in score.parts[0].getElementsByClass(stream.Measure):
        ts = m.getContextByClass(meter.TimeSignature)
        if ts is None or m.duration.quarterLength < ts.barDuration.quarterLength:
            continue  # pickup or incomplete measure: no drums
        beat_ql = float(ts.beatDuration.quarterLength)
        for k in range(ts.beatCount):
            grid.append(((float(m.offset) + k * beat_ql) * 60.0 / bpm, k, ts.beatCount, beat_ql * 60.0 / bpm))
    return grid
