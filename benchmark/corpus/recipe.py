"""The built-in corpus recipe: which scores, arranged for which instruments.

Every score ships inside the ``music21`` wheel (``music21.corpus``). Each
:class:`Arrangement` names a score, the General-MIDI programs of its parts
(0-based GM numbers, several per part to double it), a fixed tempo and the
measure to start from. The recipe is part of the built-in corpus's cache key:
changing anything here gives a new corpus with a new manifest hash.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# General-MIDI programs (0-based) used below.
PIANO, ORGAN, NYLON_GUITAR, STEEL_GUITAR = 0, 19, 24, 25
ACOUSTIC_BASS, ELECTRIC_BASS = 32, 33
VIOLIN, VIOLA, CELLO, CONTRABASS, HARP = 40, 41, 42, 43, 46
CHOIR_AAHS, VOICE_OOHS = 52, 53
TRUMPET, TROMBONE, TUBA, FRENCH_HORN = 56, 57, 58, 60
ALTO_SAX, OBOE, BASSOON, CLARINET, FLUTE = 65, 68, 70, 71, 73

STRING_QUARTET = ((VIOLIN,), (VIOLIN,), (VIOLA,), (CELLO,))
BRASS_QUARTET = ((TRUMPET,), (FRENCH_HORN,), (TROMBONE,), (TUBA,))
WIND_QUARTET = ((FLUTE,), (OBOE,), (CLARINET,), (BASSOON,))


@dataclass(frozen=True)
class Arrangement:
    """One built-in clip: a score from music21's corpus and how to play it.

    Attributes:
        clip_id: the clip's id (filesystem-safe).
        source: music21 corpus path, e.g. ``"bach/bwv269"``.
        title: human-readable title.
        instrumentation: the texture label recorded in the manifest.
        programs: GM programs per score part (0-based); a part with several
            programs is doubled.
        bpm: tempo in quarter notes per minute (replaces the score's marks).
        first_measure: measure number to start from (0 = a pickup measure).
        drums: add a General-MIDI drum kit (channel 10) that follows the beat.
        chord_program: play the score's chord symbols with this program.
        bass_program: play the chord symbols' roots as a bass line.
    """

    clip_id: str
    source: str
    title: str
    instrumentation: str
    programs: tuple[tuple[int, ...], ...]
    bpm: float
    first_measure: int = 1
    drums: bool = False
    chord_program: int | None = None
    bass_program: int | None = None

    def as_dict(self) -> dict:
        """JSON-ready form (tuples become lists)."""
        return asdict(self)


def _a(*args, **kwargs) -> Arrangement:
    return Arrangement(*args, **kwargs)


BUILTIN_RECIPE: tuple[Arrangement, ...] = (
    # piano
    _a("joplin-maple-leaf-rag-piano", "joplin/maple_leaf_rag", "Joplin: Maple Leaf Rag",
       "piano", ((PIANO,), (PIANO,)), 92, first_measure=0),
    _a("mozart-k545-1-piano", "mozart/k545/movement1_exposition", "Mozart: Sonata K. 545, i",
       "piano", ((PIANO,), (PIANO,)), 126),
    _a("cpebach-h186-piano", "cpebach/h186", "C. P. E. Bach: Sonata H. 186",
       "piano", ((PIANO,), (PIANO,)), 96),
    _a("chopin-mazurka-op6no2-piano", "chopin/mazurka06-2", "Chopin: Mazurka Op. 6 No. 2",
       "piano", ((PIANO,), (PIANO,)), 138),
    _a("schumann-clara-polonaise-op1no1-piano", "schumann_clara/polonaise_op1n1", "C. Schumann: Polonaise Op. 1 No. 1",
       "piano", ((PIANO,), (PIANO,)), 100),
    # strings
    _a("mozart-k155-1-strings", "mozart/k155/movement1", "Mozart: Quartet K. 155, i",
       "strings", STRING_QUARTET, 132),
    _a("mozart-k80-1-strings", "mozart/k80/movement1", "Mozart: Quartet K. 80, i",
       "strings", STRING_QUARTET, 60),
    _a("haydn-op74no1-1-strings", "haydn/opus74no1/movement1", "Haydn: Quartet Op. 74 No. 1, i",
       "strings", STRING_QUARTET, 120, first_measure=3),
    _a("beethoven-op18no1-1-strings", "beethoven/opus18no1/movement1.mxl", "Beethoven: Quartet Op. 18 No. 1, i",
       "strings", STRING_QUARTET, 168, first_measure=29),
    _a("corelli-op3no1-grave-strings", "corelli/opus3no1/1grave", "Corelli: Sonata Op. 3 No. 1, Grave",
       "strings", ((VIOLIN,), (VIOLIN,), (CELLO, CONTRABASS)), 56),
    # organ
    _a("bach-bwv269-organ", "bach/bwv269", "Bach: Chorale BWV 269",
       "organ", ((ORGAN,),) * 4, 80, first_measure=0),
    _a("bach-bwv4.8-organ", "bach/bwv4.8", "Bach: Chorale BWV 4.8",
       "organ", ((ORGAN,),) * 4, 76, first_measure=0),
    _a("bach-bwv1.6-organ", "bach/bwv1.6", "Bach: Chorale BWV 1.6",
       "organ", ((ORGAN,),) * 5, 84, first_measure=0),
    # choir
    _a("palestrina-agnus-01-choir", "palestrina/Agnus_01", "Palestrina: Agnus Dei",
       "choir", ((CHOIR_AAHS,),) * 5, 120, first_measure=6),
    _a("monteverdi-madrigal-3.1-choir", "monteverdi/madrigal.3.1.mxl", "Monteverdi: Madrigal III.1",
       "choir", ((VOICE_OOHS,), (CHOIR_AAHS,), (VOICE_OOHS,), (CHOIR_AAHS,), (CHOIR_AAHS,)), 100, first_measure=16),
    # brass
    _a("bach-bwv10.7-brass", "bach/bwv10.7", "Bach: Chorale BWV 10.7", "brass", BRASS_QUARTET, 84),
    _a("bach-bwv40.8-brass", "bach/bwv40.8", "Bach: Chorale BWV 40.8",
       "brass", ((TRUMPET,), (TRUMPET,), (TROMBONE,), (TUBA,)), 80),
    _a("bach-bwv11.6-brass", "bach/bwv11.6", "Bach: Chorale BWV 11.6", "brass", BRASS_QUARTET, 88),
    # winds
    _a("bach-bwv13.6-winds", "bach/bwv13.6", "Bach: Chorale BWV 13.6",
       "winds", WIND_QUARTET, 76, first_measure=0),
    _a("bach-bwv17.7-winds", "bach/bwv17.7", "Bach: Chorale BWV 17.7",
       "winds", WIND_QUARTET, 88, first_measure=0),
    _a("haydn-op1no1-1-winds", "haydn/opus1no1/movement1", "Haydn: Quartet Op. 1 No. 1, i",
       "winds", WIND_QUARTET, 132, first_measure=0),
    # guitar / plucked
    _a("bach-bwv14.5-guitar", "bach/bwv14.5", "Bach: Chorale BWV 14.5",
       "guitar", ((STEEL_GUITAR,), (NYLON_GUITAR,), (NYLON_GUITAR,), (NYLON_GUITAR,)), 80, first_measure=0),
    _a("mozart-k156-1-guitar", "mozart/k156/movement1", "Mozart: Quartet K. 156, i",
       "guitar", ((NYLON_GUITAR,), (NYLON_GUITAR,), (HARP,), (NYLON_GUITAR,)), 144),
    _a("foster-jeanie-guitar", "leadSheet/fosterBrownHair", "Foster: Jeanie with the Light Brown Hair",
       "guitar", ((STEEL_GUITAR,),), 96, chord_program=NYLON_GUITAR),
    # ensemble with percussion
    _a("joplin-maple-leaf-rag-band", "joplin/maple_leaf_rag", "Joplin: Maple Leaf Rag (band)",
       "ensemble+percussion", ((PIANO, CLARINET), (PIANO,)), 92, drums=True),
    _a("berlin-alexanders-ragtime-band", "leadSheet/berlinAlexandersRagtime", "Berlin: Alexander's Ragtime Band",
       "ensemble+percussion", ((TRUMPET,),), 120, drums=True, chord_program=PIANO, bass_program=ACOUSTIC_BASS),
    _a("haydn-op74no1-4-band", "haydn/opus74no1/movement4", "Haydn: Quartet Op. 74 No. 1, iv (band)",
       "ensemble+percussion", ((VIOLIN, FLUTE), (HARP,), (PIANO,), (ELECTRIC_BASS,)), 144, drums=True),
    _a("bach-bwv32.6-band", "bach/bwv32.6", "Bach: Chorale BWV 32.6 (band)",
       "ensemble+percussion", ((PIANO, ALTO_SAX), (PIANO,), (PIANO,), (ELECTRIC_BASS,)), 96, drums=True),
)
