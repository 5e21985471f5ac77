"""Rendering a planned track: score excerpt -> note events -> General MIDI SoundFont synthesis -> mono audio.

We drive tinysoundfont note by note instead of writing MIDI files: that gives each voice of an
artist's ensemble its own channel and program, and tempo and transposition come straight from the
plan. A fresh synthesiser per track keeps tracks independent, so a resumed build is bit-identical.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np

from songtrace.artifacts import sha256_file
from songtrace.errors import SongtraceError
from songtrace.world.artists import Artist, Voice
from songtrace.world.corpus import PieceNotes

SOUNDFONT_NAME = "TimGM6mb.sf2"
DRUM_CHANNEL = 9
MELODIC_CHANNELS = tuple(c for c in range(16) if c != DRUM_CHANNEL)
KEY_RANGE = (28, 100)  # MIDI keys notes are folded into by octaves
TARGET_RMS = 0.1  # -20 dBFS
PEAK_LIMIT = 0.95
FADE_IN_S, FADE_OUT_S = 0.005, 0.05
# Conventional tonic spellings per mode (Db major but C# minor, Ab major but G# minor).
TONIC_NAMES = {
    "major": ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"),
    "minor": ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"),
}
# Krumhansl-Kessler key profiles (major, minor), tonic first.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclasses.dataclass
class Excerpt:
    """Notes of a stretch of a piece, onsets relative to its start (quarter notes), with the bar lines inside it."""

    parts: list[np.ndarray]
    measure_starts: np.ndarray
    length: float


def soundfont_path() -> Path:
    """The General MIDI SoundFont that ships inside the pretty_midi package."""
    import pretty_midi

    path = Path(pretty_midi.__file__).parent / SOUNDFONT_NAME
    if not path.exists():
        raise SongtraceError(f"{path}: SoundFont not found; reinstall pretty_midi (its wheel ships {SOUNDFONT_NAME})")
    return path


@functools.cache
def soundfont_bytes() -> bytes:
    """The SoundFont's bytes, read once per process."""
    return soundfont_path().read_bytes()


@functools.cache
def soundfont_sha256() -> str:
    """Content hash of the SoundFont (an input of the world stage)."""
    return sha256_file(soundfont_path())


def excerpt(notes: PieceNotes, start_frac: float, length: float) -> Excerpt:
    """The `length` quarter notes starting at a measure chosen by `start_frac`; the piece loops if it is shorter.

    Notes still sounding at the start are kept (cut to start there), so a held chord is heard.
    """
    total = notes.length
    latest = max(0.0, total - length)
    onsets = np.sort(np.concatenate([a[:, 0] for a in notes.parts]))
    bars = notes.measure_starts
    # start only on a bar where a note starts within the excerpt's first bar (chorales with instrumental
    # interludes are silent in between; a long held note would leave a short excerpt without onsets)
    window = min(length, notes.bar_length)
    played = np.searchsorted(onsets, bars + window - 1e-9) > np.searchsorted(onsets, bars - 1e-9)
    starts = bars[(bars <= latest + 1e-9) & played]
    if len(starts) == 0:
        starts = np.array([onsets[0] if onsets[0] <= latest + 1e-9 else 0.0])
    start = float(starts[min(int(start_frac * len(starts)), len(starts) - 1)])
    end = start + length
    reps = max(1, math.ceil(end / total))
    shift = np.arange(reps, dtype=np.float64) * total
    parts = []
    for a in notes.parts:
        tiled = np.concatenate([a + np.array([s, 0.0, 0.0]) for s in shift])
        keep = (tiled[:, 0] < end - 1e-9) & (tiled[:, 0] + tiled[:, 1] > start + 1e-9)  # includes notes held into the start
        part = tiled[keep].copy()
        onset = np.maximum(part[:, 0], start)
        part[:, 1] = part[:, 0] + part[:, 1] - onset
        part[:, 0] = onset - start
        parts.append(part)
    bars = (notes.measure_starts[None, :] + shift[:, None]).ravel() - start
    bars = np.unique(bars[(bars >= -1e-9) & (bars < length)])
    return Excerpt(parts=parts, measure_starts=bars, length=length)


def voice_assignment(n_parts: int, voices: tuple[Voice, ...]) -> list[tuple[int, Voice]]:
    """(part index, voice) pairs: every part gets a voice (cycling), extra voices double parts (cycling)."""
    return [(j % n_parts, voices[j % len(voices)]) for j in range(min(max(n_parts, len(voices)), len(MELODIC_CHANNELS)))]


def _fold(keys: np.ndarray) -> np.ndarray:
    """Fold MIDI keys into `KEY_RANGE` by whole octaves."""
    lo, hi = KEY_RANGE
    keys = keys.copy()
    while (keys < lo).any():
        keys[keys < lo] += 12
    while (keys > hi).any():
        keys[keys > hi] -= 12
    return keys


def beat_length(meter: str) -> float:
    """The felt beat in quarter notes: dotted quarters in compound meters (6/8, 9/8, 12/8), else the denominator."""
    num, _, den = meter.partition("/")
    try:
        n, d = int(num), int(den)
    except ValueError:
        return 1.0
    return 1.5 if d == 8 and n % 3 == 0 and n > 3 else 4.0 / d


def note_events(ex: Excerpt, artist: Artist, bpm: float, transpose: int, meter: str, sample_rate: int, n_samples: int) -> np.ndarray:
    """Note-on/off events [n, 5] (sample, on?, channel, key, velocity) sorted so offs come before ons at one sample."""
    spq = 60.0 / bpm  # seconds per quarter note
    bars = np.round(ex.measure_starts, 6)
    rows = []
    for channel, (part, voice) in zip(MELODIC_CHANNELS, voice_assignment(len(ex.parts), artist.voices), strict=False):
        a = ex.parts[part]
        if not len(a):
            continue
        keys = _fold(a[:, 2].astype(np.int64) + transpose + 12 * voice.octave)
        on = np.round(a[:, 0] * spq * sample_rate).astype(np.int64)
        off = on + np.maximum(np.round(a[:, 1] * spq * artist.legato * sample_rate), 0.03 * sample_rate).astype(np.int64)
        vel = np.clip(voice.velocity + 8 * np.isin(np.round(a[:, 0], 6), bars), 1, 127)
        rows.append(np.stack([on, np.ones_like(on), np.full_like(on, channel), keys, vel], axis=1))
        rows.append(np.stack([off, np.zeros_like(on), np.full_like(on, channel), keys, np.zeros_like(on)], axis=1))
    if artist.drums is not None:
        beats = np.arange(0.0, ex.length - 1e-9, beat_length(meter))
        down = np.isin(np.round(beats, 6), bars)
        on = np.round(beats * spq * sample_rate).astype(np.int64)
        keys = np.where(down, artist.drums[0], artist.drums[1])
        vel = np.where(down, 100, 70)
        chan = np.full_like(on, DRUM_CHANNEL)
        rows.append(np.stack([on, np.ones_like(on), chan, keys, vel], axis=1))
        rows.append(np.stack([on + int(0.1 * sample_rate), np.zeros_like(on), chan, keys, np.zeros_like(on)], axis=1))
    if not rows:
        return np.zeros((0, 5), dtype=np.int64)
    ev = np.concatenate(rows).astype(np.int64)
    ev = ev[ev[:, 0] < n_samples]
    return ev[np.lexsort((ev[:, 3], ev[:, 2], ev[:, 1], ev[:, 0]))]


def synthesize(events: np.ndarray, programs: dict[int, int], n_samples: int, sample_rate: int) -> np.ndarray:
    """Play note events on a fresh tinysoundfont synthesiser; returns mono float32 of `n_samples`."""
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=sample_rate)
    sfid = synth.sfload(soundfont_bytes())
    for channel, program in programs.items():
        if channel == DRUM_CHANNEL:
            synth.program_select(channel, sfid, 128, 0, is_drums=True)
        else:
            synth.program_select(channel, sfid, 0, program)
    out = np.zeros((n_samples, 2), dtype=np.float32)
    view = memoryview(out.reshape(-1)).cast("B")
    frame = 2 * 4
    pos = 0
    for sample, on, channel, key, vel in events.tolist():
        if sample > pos:
            synth.generate_simple(sample - pos, buffer=view[pos * frame : sample * frame])
            pos = sample
        if on:
            synth.noteon(channel, key, vel)
        else:
            synth.noteoff(channel, key)
    if pos < n_samples:
        synth.generate_simple(n_samples - pos, buffer=view[pos * frame :])
    return out.mean(axis=1, dtype=np.float64).astype(np.float32)


def normalise(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS to -20 dBFS with a peak limit, short fades at both ends (deterministic, float32)."""
    x = audio.astype(np.float64)
    rms = float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    if rms < 1e-7:
        raise SongtraceError("rendered audio is silent")
    gain = TARGET_RMS / rms
    peak = float(np.abs(x).max()) * gain
    if peak > PEAK_LIMIT:
        gain *= PEAK_LIMIT / peak
    x *= gain
    n_in, n_out = min(len(x), int(FADE_IN_S * sample_rate)), min(len(x), int(FADE_OUT_S * sample_rate))
    x[:n_in] *= np.linspace(0.0, 1.0, n_in, endpoint=False)
    x[len(x) - n_out :] *= np.linspace(1.0, 0.0, n_out)
    return x.astype(np.float32)


def estimate_key(parts: list[np.ndarray], transpose: int) -> str:
    """Key and mode ("D minor") by the Krumhansl-Kessler profiles on duration-weighted pitch classes."""
    hist = np.zeros(12)
    for a in parts:
        if len(a):
            np.add.at(hist, (a[:, 2].astype(np.int64) + transpose) % 12, a[:, 1])
    if hist.sum() == 0:
        return "C major"
    best, best_r = "C major", -np.inf
    for mode, profile in (("major", _MAJOR), ("minor", _MINOR)):
        for tonic in range(12):
            r = np.corrcoef(hist, np.roll(profile, tonic))[0, 1]
            if r > best_r + 1e-12:
                best, best_r = f"{TONIC_NAMES[mode][tonic]} {mode}", r
    return best


def render_excerpt(notes: PieceNotes, artist: Artist, bpm: float, transpose: int, duration: float, start_frac: float, sample_rate: int):
    """Render `duration` seconds of a piece as the artist plays it. Returns (audio float32 mono, key string)."""
    n_samples = round(duration * sample_rate)
    ex = excerpt(notes, start_frac, duration * bpm / 60.0)
    if not any(len(p) for p in ex.parts):  # insurance: a rest-only stretch falls back to the piece's start
        ex = excerpt(notes, 0.0, duration * bpm / 60.0)
    events = note_events(ex, artist, bpm, transpose, notes.meter, sample_rate, n_samples)
    programs = {c: v.program for c, (_, v) in zip(MELODIC_CHANNELS, voice_assignment(len(ex.parts), artist.voices), strict=False)}
    if artist.drums is not None:
        programs[DRUM_CHANNEL] = 0
    audio = normalise(synthesize(events, programs, n_samples, sample_rate), sample_rate)
    return audio, estimate_key(ex.parts, transpose)
