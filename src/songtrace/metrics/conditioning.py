"""Conditioning check: is audio generated from an artist's prompt closer to that artist's training tracks?

For each artist, the centroid of its training tracks' embeddings; each generation is compared with
every artist's centroid. A model that follows its text conditioning puts its generations nearest
their own artist (chance: 1 / number of artists).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from songtrace.data.windows import l2_normalise
from songtrace.embedders.base import Embedder
from songtrace.errors import SongtraceError
from songtrace.progress import progress


def artist_centroids(embedder: Embedder, training: Mapping[str, Sequence[np.ndarray]], sr: int) -> tuple[list[str], np.ndarray]:
    """Sorted artist names and their normalised mean track embeddings `[A, D]`."""
    artists = sorted(training)
    if len(artists) < 2:
        raise SongtraceError(f"conditioning check needs at least 2 artists with training tracks, got {len(artists)}")
    rows = []
    for artist in progress(artists, total=len(artists), desc="artist centroids", unit="artist"):
        if not training[artist]:
            raise SongtraceError(f"conditioning check: artist {artist!r} has no training tracks")
        rows.append(l2_normalise(embedder.embed_audio(training[artist], sr).mean(axis=0)))
    return artists, np.stack(rows)


def centroid_scores(sims: np.ndarray, own: int, artists: Sequence[str]) -> dict[str, Any]:
    """Summary of generations' cosines `[G, A]` to every centroid, for the artist at column `own`."""
    own_sim = sims[:, own]
    others = np.delete(sims, own, axis=1)
    nearest = Counter(artists[j] for j in sims.argmax(axis=1)).most_common(1)[0][0]
    return {
        "n": int(sims.shape[0]),
        "own": float(own_sim.mean()),
        "other_mean": float(others.mean()),
        "other_max": float(others.max(axis=1).mean()),
        "margin": float(own_sim.mean() - others.mean()),
        "fraction_closer_to_own": float(np.mean(own_sim > others.max(axis=1))),
        "nearest_artist": nearest,
    }


def conditioning_check(embedder: Embedder, generated: Mapping[str, Sequence[np.ndarray]],
                       training: Mapping[str, Sequence[np.ndarray]], sr: int, generated_sr: int | None = None) -> dict[str, Any]:
    """Per artist: mean cosine of its generations to its own training centroid vs to the other artists'.

    Returns per-artist scores and overall `fraction_closer_to_own` (over all generations), mean
    `margin` (own minus other-artist cosine), chance level and the embedder that judged.
    """
    artists, centroids = artist_centroids(embedder, training, sr)
    unknown = sorted(set(generated) - set(artists))
    if unknown:
        raise SongtraceError(f"conditioning check: generated artists {unknown} have no training tracks; valid: {', '.join(artists)}")
    per_artist: dict[str, Any] = {}
    closer: list[bool] = []
    for artist in sorted(generated):
        if not generated[artist]:
            continue
        emb = embedder.embed_audio(generated[artist], generated_sr or sr)
        sims = np.asarray(emb, np.float64) @ centroids.T.astype(np.float64)
        own = artists.index(artist)
        per_artist[artist] = centroid_scores(sims, own, artists)
        closer += list(sims[:, own] > np.delete(sims, own, axis=1).max(axis=1))
    if not per_artist:
        raise SongtraceError("conditioning check: no generated audio")
    return {
        "embedder": embedder.describe(),
        "artists": len(artists),
        "generations": len(closer),
        "fraction_closer_to_own": float(np.mean(closer)),
        "mean_margin": float(np.mean([v["margin"] for v in per_artist.values()])),
        "chance": 1.0 / len(artists),
        "per_artist": per_artist,
    }
