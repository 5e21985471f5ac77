"""Planning the demo world without rendering: catalogues, pieces, tempi, keys, durations, versions and the split.

Everything here is a pure function of the config (and the list of corpus pieces), drawn from one
`numpy.random.Generator(seed)`, so a plan of 400 tracks is checked in tests without any audio.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from songtrace.world.artists import ARTISTS, Artist
from songtrace.world.config import WorldConfig
from songtrace.world.corpus import Piece, list_pieces

MIN_CATALOGUE = 3  # tracks per artist in a full-size world
MIN_TRAIN_PER_ARTIST = 2
MIN_TEMPO_CHANGE = 0.1  # a planted version's tempo differs from its original's by at least 10 %


@dataclasses.dataclass(frozen=True)
class TrackPlan:
    """What one track will be: who plays which piece, how fast, in which key, how long, and its role."""

    id: str
    artist: str
    piece: Piece
    bpm: float
    transpose: int  # semitones applied to the score (the artist's register plus a per-track shift)
    duration: float  # seconds
    start_frac: float  # where in the piece the excerpt starts, as a fraction of the possible start measures
    version_group: str
    version_of: str
    split: str


def active_artists(n_tracks: int, artists: Sequence[Artist] = ARTISTS) -> list[Artist]:
    """All artists when every one can have `MIN_CATALOGUE` tracks, else the first `n_tracks // 3` (at least one)."""
    if n_tracks >= MIN_CATALOGUE * len(artists):
        return list(artists)
    return list(artists[: max(1, n_tracks // MIN_CATALOGUE)])


def catalogue_sizes(n_tracks: int, artists: Sequence[Artist]) -> list[int]:
    """Tracks per artist: `MIN_CATALOGUE` each, the rest shared by weight (largest remainder); even split for tiny worlds."""
    k = len(artists)
    if n_tracks < MIN_CATALOGUE * k:
        return [n_tracks // k + (1 if i < n_tracks % k else 0) for i in range(k)]
    weights = np.asarray([a.weight for a in artists], dtype=np.float64)
    extra = n_tracks - MIN_CATALOGUE * k
    ideal = extra * weights / weights.sum() if weights.sum() > 0 else np.full(k, extra / k)
    counts = np.floor(ideal).astype(int)
    order = sorted(range(k), key=lambda i: (-(ideal[i] - counts[i]), i))
    for i in order[: extra - int(counts.sum())]:
        counts[i] += 1
    return [MIN_CATALOGUE + int(c) for c in counts]


def duration_targets(n: int, n_total: int, config: WorldConfig, rng: np.random.Generator) -> np.ndarray:
    """Durations (s, ms grid) of `n` tracks: a quota of short ones (below a third of the maximum), full-length ones, and the rest between.

    Quotas are counted on `n_total` so that the short fraction holds for the whole world.
    """
    lo, hi = config.min_seconds, config.max_seconds
    third = max(lo, hi / 3.0)
    n_short = min(n, math.ceil(config.short_fraction * n_total))
    n_full = min(n - n_short, round(config.full_fraction * n_total))
    kinds = np.array([0] * n_short + [2] * n_full + [1] * (n - n_short - n_full))
    kinds = kinds[rng.permutation(n)]
    u = rng.random(n)
    short = lo + u * max(0.0, third - lo - 1e-3)
    medium = third + u * (hi - third)
    out = np.where(kinds == 0, short, np.where(kinds == 1, medium, hi))
    return np.clip(np.floor(out * 1000.0) / 1000.0, lo, hi)


def assign_splits(artists: Sequence[str], locked: Sequence[bool], valid_fraction: float, rng: np.random.Generator) -> list[str]:
    """"train"/"valid" per track: about `valid_fraction` valid, stratified by artist, each artist keeping >= 2 train tracks.

    Locked tracks (planted versions and their originals) always stay in train.
    """
    n = len(artists)
    total = round(valid_fraction * n)
    names = sorted(set(artists))
    rows = {a: [i for i in range(n) if artists[i] == a] for a in names}
    eligible = {a: [i for i in rows[a] if not locked[i]] for a in names}
    cap = {a: max(0, min(len(eligible[a]), len(rows[a]) - MIN_TRAIN_PER_ARTIST)) for a in names}
    ideal = {a: valid_fraction * len(rows[a]) for a in names}
    quota = {a: min(math.floor(ideal[a]), cap[a]) for a in names}
    while sum(quota.values()) < total:
        room = [a for a in names if quota[a] < cap[a]]
        if not room:
            break
        best = max(room, key=lambda a: (ideal[a] - quota[a], len(rows[a])))
        quota[best] += 1
    splits = ["train"] * n
    for a in names:
        if quota[a]:
            for i in rng.choice(eligible[a], size=quota[a], replace=False):
                splits[int(i)] = "valid"
    return splits


def n_versions(config: WorldConfig) -> int:
    """How many planted versions: `version_fraction` of the tracks, at least one when the world has 6 or more tracks."""
    if config.version_fraction <= 0:
        return 0
    n = round(config.version_fraction * config.tracks)
    return max(n, 1) if config.tracks >= 6 else n


def _version_tempo(bpm_original: float, artist: Artist, rng: np.random.Generator) -> float:
    """A tempo in the version artist's range, pushed at least 10 % away from the original's."""
    bpm = float(rng.integers(artist.tempo[0], artist.tempo[1] + 1))
    if abs(bpm / bpm_original - 1.0) < MIN_TEMPO_CHANGE:
        bpm = float(round(bpm_original * (1.15 if rng.random() < 0.5 else 0.87)))
    return bpm


def _version_transpose(original: int, artist: Artist, rng: np.random.Generator) -> int:
    """The version artist's register plus a 2-5 semitone shift, never landing in the original's key."""
    shift = int(rng.choice([-5, -4, -3, -2, 2, 3, 4, 5]))
    transpose = artist.transpose + shift
    if (transpose - original) % 12 == 0:
        transpose += 2
    return transpose


def plan_world(config: WorldConfig, pieces: Mapping[str, Sequence[Piece]] | None = None) -> list[TrackPlan]:
    """Plan every track of the demo world (sorted by id). `pieces` maps collection -> pieces (default: music21's corpus)."""
    rng = np.random.default_rng(config.seed)
    n = config.tracks
    artists = active_artists(n)
    sizes = catalogue_sizes(n, artists)
    slot_artist = [a for a, size in zip(artists, sizes, strict=True) for _ in range(size)]
    ids = [f"t{i:04d}" for i in rng.permutation(n)]

    # planted versions: a slot of artist B re-plays the piece of a slot of another artist A
    n_ver = n_versions(config)
    version_slots = sorted(int(i) for i in rng.choice(n, size=n_ver, replace=False)) if n_ver else []
    original_of: dict[int, int] = {}
    taken = set(version_slots)
    for v in version_slots:
        candidates = [i for i in range(n) if i not in taken and slot_artist[i].name != slot_artist[v].name]
        if not candidates:
            continue
        o = int(rng.choice(candidates))
        original_of[v] = o
        taken.add(o)
    originals = [i for i in range(n) if i not in original_of]

    # originals: pieces drawn without replacement per collection (cycling only if a collection runs out)
    cursor: dict[str, int] = {}
    perms: dict[str, np.ndarray] = {}
    durations = duration_targets(len(originals), n, config, rng)
    plans: dict[int, TrackPlan] = {}
    for slot, duration in zip(originals, durations, strict=True):
        artist = slot_artist[slot]
        pool = pieces[artist.collection] if pieces is not None else list_pieces(artist.collection)
        if artist.collection not in perms:
            perms[artist.collection] = rng.permutation(len(pool))
        k = cursor.get(artist.collection, 0)
        cursor[artist.collection] = k + 1
        piece = pool[int(perms[artist.collection][k % len(pool)])]
        plans[slot] = TrackPlan(
            id=ids[slot],
            artist=artist.name,
            piece=piece,
            bpm=float(rng.integers(artist.tempo[0], artist.tempo[1] + 1)),
            transpose=artist.transpose + int(rng.integers(-2, 3)),
            duration=float(duration),
            start_frac=float(rng.random()),
            version_group=ids[slot],
            version_of="",
            split="train",
        )

    # versions: same piece and excerpt, another artist's ensemble, tempo and key; the excerpt keeps its beats
    for v, o in sorted(original_of.items()):
        artist, orig = slot_artist[v], plans[o]
        bpm = _version_tempo(orig.bpm, artist, rng)
        duration = min(config.max_seconds, max(config.min_seconds, math.floor(orig.duration * orig.bpm / bpm * 1000) / 1000))
        plans[v] = TrackPlan(
            id=ids[v],
            artist=artist.name,
            piece=orig.piece,
            bpm=bpm,
            transpose=_version_transpose(orig.transpose, artist, rng),
            duration=duration,
            start_frac=orig.start_frac,
            version_group=orig.id,
            version_of=orig.id,
            split="train",
        )

    locked = [i in original_of or i in original_of.values() for i in range(n)]
    splits = assign_splits([a.name for a in slot_artist], locked, config.valid_fraction, rng)
    out = [dataclasses.replace(plans[i], split=splits[i]) for i in range(n)]
    return sorted(out, key=lambda p: p.id)
