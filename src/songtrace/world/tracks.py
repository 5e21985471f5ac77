"""Sets of tracks that metrics compare: a world split (or one artist, or half of it) or a folder of audio.

A source spec names a set on the command line: a folder of audio files, or
`world:NAME[:SPLIT][:artist=ARTIST][:half=0|1]` for tracks of a world under `<home>/worlds/NAME`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from songtrace.errors import SongtraceError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


@dataclasses.dataclass
class TrackSet:
    """Tracks with their metadata, all at one sample rate (mono float32)."""

    ids: list[str]
    waves: list[np.ndarray]
    sr: int
    artists: list[str] = dataclasses.field(default_factory=list)
    captions: list[str] = dataclasses.field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.waves) != n:
            raise SongtraceError(f"{self.source or 'track set'}: {n} ids but {len(self.waves)} waveforms")
        self.artists = list(self.artists) or [""] * n
        self.captions = list(self.captions) or [""] * n
        if len(self.artists) != n or len(self.captions) != n:
            raise SongtraceError(f"{self.source or 'track set'}: ids, artists and captions differ in length")

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, rows: Sequence[int]) -> TrackSet:
        """The tracks at `rows`, in that order."""
        rows = list(rows)
        return TrackSet([self.ids[i] for i in rows], [self.waves[i] for i in rows], self.sr,
                        [self.artists[i] for i in rows], [self.captions[i] for i in rows], self.source)

    def half(self, which: int, seed: int = 0) -> TrackSet:
        """One of two disjoint random halves (stratified by artist), for same-distribution baselines."""
        if which not in (0, 1):
            raise SongtraceError(f"half must be 0 or 1, got {which}")
        rng = np.random.default_rng(seed)
        rows: list[int] = []
        for artist in sorted(set(self.artists)):
            members = [i for i, a in enumerate(self.artists) if a == artist]
            members = [members[j] for j in rng.permutation(len(members))]
            rows += members[which::2]
        return self.select(sorted(rows))


def world_tracks(world_dir: str | Path, split: str | None = None, artist: str | None = None) -> TrackSet:
    """Tracks of a world (optionally one split and/or one artist), with artists and captions."""
    from songtrace.world import load_world

    world = load_world(world_dir)
    m = world.manifest
    if split is not None:
        splits = sorted(set(m["split"]))
        if split not in splits:
            raise SongtraceError(f"{world_dir}: no split {split!r}; valid: {', '.join(splits)}")
        m = m[m["split"] == split]
    if artist is not None:
        artists = sorted(set(m["artist"]))
        if artist not in artists:
            raise SongtraceError(f"{world_dir}: no artist {artist!r}; valid: {', '.join(artists)}")
        m = m[m["artist"] == artist]
    ids = [str(i) for i in m["id"]]
    return TrackSet(ids, [world.audio(i) for i in ids], int(world.sample_rate), [str(a) for a in m["artist"]],
                    [str(c) for c in m["caption"]], source=str(world_dir))


def folder_tracks(folder: str | Path, sr: int | None = None) -> TrackSet:
    """Every audio file under a folder (sorted), mono, resampled to `sr` (default: the first file's rate)."""
    import soundfile as sf

    from songtrace.data.audio import resample, to_mono

    folder = Path(folder)
    if not folder.is_dir():
        raise SongtraceError(f"{folder}: not a folder of audio files")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise SongtraceError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    waves = []
    for path in files:
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as e:  # soundfile raises several types for unreadable files
            raise SongtraceError(f"{path}: not readable audio ({e})") from None
        sr = sr or int(rate)
        waves.append(resample(to_mono(data, str(path)), int(rate), sr))
    return TrackSet([str(p.relative_to(folder)) for p in files], waves, int(sr), source=str(folder))


def parse_source(spec: str, home: str | Path | None = None) -> TrackSet:
    """A `TrackSet` from a folder path or `world:NAME[:SPLIT][:artist=A][:half=0|1]`."""
    if not spec.startswith("world:"):
        return folder_tracks(spec)
    from songtrace.home import stage_dir

    parts = spec.split(":")[1:]
    if not parts or not parts[0]:
        raise SongtraceError(f"{spec!r}: expected world:NAME[:SPLIT][:artist=A][:half=0|1]")
    name, split, artist, half = parts[0], None, None, None
    for part in parts[1:]:
        if part.startswith("artist="):
            artist = part.split("=", 1)[1]
        elif part.startswith("half="):
            try:
                half = int(part.split("=", 1)[1])
            except ValueError:
                raise SongtraceError(f"{spec!r}: half must be 0 or 1") from None
        elif part:
            split = part
    tracks = world_tracks(stage_dir(home, "worlds", name), split=split, artist=artist)
    tracks.source = spec
    return tracks.half(half) if half is not None else tracks
