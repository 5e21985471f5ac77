"""Rendering pieces: excerpts, voices, keys, loudness, captions, and corpus listing/parsing."""

from __future__ import annotations

import numpy as np
import pytest

from songtrace.world import artist_by_name
from songtrace.world.captions import make_caption, tempo_words
from songtrace.world.corpus import COLLECTIONS, Piece, PieceNotes, list_pieces, parse_piece
from songtrace.world.render import beat_length, estimate_key, excerpt, render_excerpt, voice_assignment


def _scale_piece(midi: list[int], meter: str = "4/4") -> PieceNotes:
    notes = np.array([[i, 1.0, m] for i, m in enumerate(midi)], dtype=np.float64)
    bars = np.arange(0.0, len(midi), 4.0)
    return PieceNotes(parts=[notes], length=float(len(midi)), measure_starts=bars, meter=meter, bar_length=4.0, title="t")


def test_excerpt_starts_on_a_bar_and_loops_short_pieces():
    piece = _scale_piece([60, 62, 64, 65, 67, 69, 71, 72])
    ex = excerpt(piece, start_frac=0.99, length=4.0)
    assert ex.parts[0][:, 2].tolist() == [67, 69, 71, 72]  # last bar that fits
    assert ex.parts[0][0, 0] == 0.0
    looped = excerpt(piece, start_frac=0.0, length=20.0)
    assert len(looped.parts[0]) == 20 and looped.parts[0][8, 2] == 60
    assert looped.measure_starts.tolist() == [0.0, 4.0, 8.0, 12.0, 16.0]


def test_voice_assignment_covers_parts_and_doubles_melodies():
    organ, fiddle_guitar = artist_by_name("St. Thomas Organ Works").voices, artist_by_name("Kilfenora Road").voices
    assert [p for p, _ in voice_assignment(4, organ)] == [0, 1, 2, 3]
    pairs = voice_assignment(1, fiddle_guitar)
    assert [p for p, _ in pairs] == [0, 0] and [v.program for _, v in pairs] == [110, 24]


def test_estimate_key_finds_major_and_minor():
    c_major = np.array([[i, 1.0, m] for i, m in enumerate([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60, 60])], dtype=float)
    a_minor = np.array([[i, 1.0, m] for i, m in enumerate([57, 59, 60, 62, 64, 65, 68, 69, 64, 60, 57, 57])], dtype=float)
    assert estimate_key([c_major], 0) == "C major"
    assert estimate_key([c_major], 2) == "D major"
    assert estimate_key([a_minor], 0) == "A minor"


def test_beat_length():
    assert beat_length("6/8") == 1.5 and beat_length("3/4") == 1.0 and beat_length("4/2") == 2.0 and beat_length("x") == 1.0


def test_render_has_the_planned_length_and_loudness():
    piece = _scale_piece([60, 62, 64, 65, 67, 69, 71, 72])
    for name in ("Kilfenora Road", "The Highland Pipers"):  # with and without drums
        audio, key = render_excerpt(piece, artist_by_name(name), bpm=120, transpose=0, duration=1.25, start_frac=0.0, sample_rate=16000)
        assert audio.dtype == np.float32 and audio.shape == (20000,)
        assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) == pytest.approx(0.1, rel=0.05)
        assert np.abs(audio).max() <= 0.95 + 1e-6
        assert key == "C major"
    again, _ = render_excerpt(piece, artist_by_name("Kilfenora Road"), 120, 0, 1.25, 0.0, 16000)
    first, _ = render_excerpt(piece, artist_by_name("Kilfenora Road"), 120, 0, 1.25, 0.0, 16000)
    assert np.array_equal(again, first)


def test_ensembles_sound_different():
    piece = _scale_piece([60, 62, 64, 65, 67, 69, 71, 72])
    a, _ = render_excerpt(piece, artist_by_name("St. Thomas Organ Works"), 100, 0, 1.0, 0.0, 16000)
    b, _ = render_excerpt(piece, artist_by_name("Appalachian Banjo Club"), 100, 0, 1.0, 0.0, 16000)
    spec = [np.abs(np.fft.rfft(x)) for x in (a, b)]
    cos = float(spec[0] @ spec[1] / np.linalg.norm(spec[0]) / np.linalg.norm(spec[1]))
    assert cos < 0.8


def test_captions_name_the_metadata():
    rng = np.random.default_rng(0)
    texts = {make_caption("Airds Harp", "celtic harp", ["harp"], 70, "G major", "6/8", rng) for _ in range(30)}
    assert len(texts) >= 3
    for text in texts:
        for word in ("Airds Harp", "harp", "70 BPM", "G major", "6/8"):
            assert word in text
    assert tempo_words(70) == ("adagio", "slow") and tempo_words(200)[0] == "presto"


def test_every_collection_lists_pieces_and_one_parses():
    for name in COLLECTIONS:
        pieces = list_pieces(name)
        assert len(pieces) >= 3 and len({p.source for p in pieces}) == len(pieces)
    notes = parse_piece(list_pieces("ryans_mammoth")[0])
    assert notes.parts and notes.length > 0 and notes.meter and notes.title
    chorale = parse_piece(Piece("bach_chorales", "bach/bwv1.6.mxl"))
    assert len(chorale.parts) == 4  # SATB; the horn doubling is dropped
