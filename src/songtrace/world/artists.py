"""The demo world's artists: each a style a listener can tell apart (source, ensemble, tempo, register).

An artist plays pieces of one music21 corpus collection on its own ensemble of General MIDI
programs, in its own tempo range and register. Artists may share a collection and still differ in
ensemble and tempo (chorales sung by a choir, played on organ, by brass or on electric piano).
Catalogue sizes follow `weight`: every artist has at least three tracks and the rest are shared
out in proportion to the weights, so some catalogues have 3 tracks and some about 60.
The order of `ARTISTS` interleaves collections, so a small world (which keeps only the first few
artists) still spans several sources and ensembles.
"""

from __future__ import annotations

import dataclasses

from songtrace.errors import SongtraceError

# Human names of the General MIDI programs the artists use (0-based program numbers), for captions.
INSTRUMENT_NAMES: dict[int, str] = {
    4: "electric piano",
    6: "harpsichord",
    8: "celesta",
    10: "music box",
    19: "church organ",
    21: "accordion",
    24: "nylon-string guitar",
    32: "acoustic bass",
    38: "synth bass",
    40: "violin",
    41: "viola",
    42: "cello",
    46: "harp",
    52: "choir",
    53: "voices",
    56: "trumpet",
    57: "trombone",
    58: "tuba",
    60: "french horn",
    68: "shawm",
    70: "bassoon",
    72: "fife",
    73: "flute",
    74: "recorder",
    78: "tin whistle",
    89: "warm synth pad",
    105: "banjo",
    109: "bagpipes",
    110: "fiddle",
}

# General MIDI percussion keys the artists use, with their caption names.
DRUM_NAMES: dict[int, str] = {36: "bass drum", 38: "snare drum", 41: "bodhran", 45: "bodhran"}


@dataclasses.dataclass(frozen=True)
class Voice:
    """One instrument of an ensemble: a GM program, an octave offset and a loudness (MIDI velocity)."""

    program: int
    octave: int = 0
    velocity: int = 90


@dataclasses.dataclass(frozen=True)
class Artist:
    """An artist's consistent style: collection, ensemble, tempo range (quarter-note BPM), register and catalogue weight."""

    name: str
    collection: str
    genre: str
    voices: tuple[Voice, ...]
    tempo: tuple[int, int]
    transpose: int = 0
    weight: float = 1.0
    drums: tuple[int, int] | None = None  # GM drum keys for the downbeat and the other beats
    legato: float = 0.92

    def __post_init__(self) -> None:
        if not self.voices:
            raise SongtraceError(f"artist {self.name!r}: needs at least one voice")
        for v in self.voices:
            if v.program not in INSTRUMENT_NAMES:
                raise SongtraceError(f"artist {self.name!r}: GM program {v.program} has no caption name")
        if not 20 <= self.tempo[0] <= self.tempo[1] <= 300:
            raise SongtraceError(f"artist {self.name!r}: bad tempo range {self.tempo}")

    def instruments(self) -> list[str]:
        """Caption names of the ensemble's instruments, in order, without repeats."""
        names = [INSTRUMENT_NAMES[v.program] for v in self.voices]
        if self.drums is not None:
            names += [DRUM_NAMES[k] for k in self.drums]
        return list(dict.fromkeys(names))


V = Voice

CHOIR = (V(52, 0, 92), V(52, 0, 80), V(53, 0, 80), V(52, 0, 88))
BRASS = (V(56, 0, 92), V(60, 0, 84), V(57, 0, 84), V(58, 0, 88))
RECORDERS = (V(74, 1, 92), V(74, 0, 84), V(73, 0, 84), V(70, 0, 88))
STRINGS = (V(40, 0, 92), V(40, 0, 84), V(41, 0, 84), V(42, 0, 88))
ELECTRIC = (V(4, 0, 92), V(89, 0, 70), V(89, 0, 70), V(38, -1, 90))

ARTISTS: tuple[Artist, ...] = (
    Artist("Leipzig Cantorei", "bach_chorales", "sacred choral", CHOIR, (56, 72), weight=60),
    Artist("Capella Sistina Revival", "palestrina", "renaissance polyphony", (V(53, 0, 90), V(52, 0, 80)), (46, 60), weight=45),
    Artist("Kilfenora Road", "oneills1850", "irish traditional", (V(110, 0, 100), V(24, -1, 72)), (108, 132), weight=35),
    Artist("The Highland Pipers", "ryans_mammoth", "scottish pipe band", (V(109, 0, 96),), (88, 112), drums=(36, 38), weight=25),
    Artist("Schwarzwald Quetschn", "essen_folk", "german folk", (V(21, 0, 96), V(58, -2, 84)), (100, 126), weight=30, legato=0.8),
    Artist("St. Thomas Organ Works", "bach_chorales", "baroque organ chorale", (V(19, 0, 90),), (60, 80), weight=40, legato=0.97),
    Artist("Mantova Lute & Viols", "monteverdi", "italian madrigal", (V(24, 0, 96), V(41, 0, 72), V(42, -1, 80)), (72, 92), weight=14),
    Artist("Appalachian Banjo Club", "ryans_mammoth", "old-time americana", (V(105, 0, 100), V(32, -2, 88)), (128, 152), weight=28,
           legato=0.7),
    Artist("Little Music Box", "essen_children", "lullaby", (V(10, 0, 96), V(8, -1, 64)), (66, 88), transpose=12, weight=15),
    Artist("Brass of the Old Town", "bach_chorales", "brass chorale", BRASS, (84, 104), transpose=-2, weight=22),
    Artist("The Recorder Consort", "palestrina", "early music consort", RECORDERS, (66, 84), weight=18),
    Artist("Tin Whistle Society", "oneills1850", "celtic folk", (V(78, 1, 100), V(46, -1, 70)), (96, 120), drums=(41, 45), weight=10),
    Artist("Quartetto Classico", "string_quartets", "classical string quartet", STRINGS, (104, 132), weight=8),
    Artist("Nordlicht Electric", "bach_chorales", "ambient electronic", ELECTRIC, (70, 90), transpose=-3, weight=12),
    Artist("Airds Harp", "airds_airs", "celtic harp", (V(46, 0, 100), V(46, -1, 76)), (64, 84), weight=3),
    Artist("Concord Fife & Drum Corps", "american_fife", "military march", (V(72, 0, 96),), (108, 124), drums=(36, 38), weight=1),
    Artist("Ars Nova Players", "trecento", "medieval", (V(68, 0, 92), V(74, 0, 84), V(24, -1, 84)), (80, 100), weight=0),
)


def artist_table() -> list[Artist]:
    """All artists of the demo world, in planning order."""
    return list(ARTISTS)


def artist_by_name(name: str) -> Artist:
    """Look up an artist by name, listing the valid names when unknown."""
    for artist in ARTISTS:
        if artist.name == name:
            return artist
    raise SongtraceError(f"unknown artist {name!r}; valid: {', '.join(a.name for a in ARTISTS)}")
