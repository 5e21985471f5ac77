"""Captions that read like real music captions, built only from a track's metadata.

They name the artist, genre, instrumentation, tempo (word and BPM), key and mode, and meter, in
one of a few sentence shapes chosen per track from the world's seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# (upper BPM bound, Italian tempo marking, plain adjective)
TEMPO_WORDS: tuple[tuple[float, str, str], ...] = (
    (60, "largo", "very slow"),
    (72, "adagio", "slow"),
    (92, "andante", "relaxed"),
    (112, "moderato", "moderate"),
    (132, "allegro", "brisk"),
    (160, "vivace", "lively"),
    (float("inf"), "presto", "fast"),
)

TEMPLATES: tuple[str, ...] = (
    "{A_adj} {genre} piece by {artist}, played on {instruments}. {Marking} at {bpm} BPM in {key}, {meter} time.",
    "{artist} performs {a_adj} {genre} tune on {instruments} in {key}; {meter} meter, around {bpm} BPM.",
    "{Genre} in {key} by {artist}: {instruments}, {marking} ({bpm} BPM), {meter}.",
    "{A_adj}, {meter} {genre} track in {key} at {bpm} BPM, featuring {instruments}. By {artist}.",
    "{Instruments} {carry} this {adj} {genre} piece by {artist}; {key}, {meter}, {bpm} BPM, {marking}.",
)


def tempo_words(bpm: float) -> tuple[str, str]:
    """(Italian marking, plain adjective) for a tempo in BPM."""
    for bound, marking, adj in TEMPO_WORDS:
        if bpm < bound:
            return marking, adj
    return TEMPO_WORDS[-1][1:]


def join_names(names: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _article(word: str) -> str:
    """"a" or "an" for the word that follows."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _cap(text: str) -> str:
    """Capitalise the first letter only."""
    return text[:1].upper() + text[1:]


def make_caption(artist: str, genre: str, instruments: Sequence[str], bpm: float, key: str, meter: str, rng: np.random.Generator) -> str:
    """One caption for a track, its sentence shape drawn from `rng`."""
    marking, adj = tempo_words(bpm)
    fields = {
        "artist": artist,
        "genre": genre,
        "Genre": _cap(genre),
        "instruments": join_names(instruments),
        "Instruments": _cap(join_names(instruments)),
        "bpm": f"{bpm:.0f}",
        "key": key,
        "meter": meter,
        "marking": marking,
        "Marking": _cap(marking),
        "carry": "carry" if len(instruments) > 1 else "carries",
        "adj": adj,
        "a_adj": f"{_article(adj)} {adj}",
        "A_adj": _cap(f"{_article(adj)} {adj}"),
    }
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return template.format(**fields)
