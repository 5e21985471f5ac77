"""Retrieval metrics for an embedder: text->audio recall@k and artist accuracy by nearest neighbour.

Pure functions over embedding matrices, plus `retrieval_report`, which embeds held-out tracks and
compares the embedder with random embeddings of the same shape (and with chance).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from songtrace.data.windows import l2_normalise
from songtrace.embedders.base import Embedder

KS = (1, 5, 10)


def recall_at_k(similarity: np.ndarray, ks: Sequence[int] = KS, relevant: np.ndarray | None = None) -> dict[str, float]:
    """Fraction of queries (rows) with a relevant item in their top k (default: the item in the same column).

    `relevant [Q, N]` marks every correct item (e.g. tracks sharing the query's caption). Ties count
    against the query: the best relevant item must beat a non-relevant one strictly to rank above it.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    rel = np.eye(*sim.shape, dtype=bool) if relevant is None else np.asarray(relevant, dtype=bool)
    best = np.where(rel, sim, -np.inf).max(axis=1, keepdims=True)
    rank = ((sim >= best) & ~rel).sum(axis=1) + 1  # 1 = best
    return {f"recall@{k}": float(np.mean(rank <= k)) for k in ks}


def nearest_neighbour_accuracy(query: np.ndarray, query_labels: Sequence[str], gallery: np.ndarray, gallery_labels: Sequence[str]) -> float:
    """Fraction of queries whose most cosine-similar gallery item has the same label."""
    if len(query) == 0 or len(gallery) == 0:
        return float("nan")
    sim = l2_normalise(np.asarray(query, np.float64)) @ l2_normalise(np.asarray(gallery, np.float64)).T
    nearest = np.asarray(gallery_labels)[np.argmax(sim, axis=1)]
    return float(np.mean(nearest == np.asarray(query_labels)))


def chance_artist_accuracy(query_labels: Sequence[str], gallery_labels: Sequence[str]) -> float:
    """Expected accuracy of a uniformly random nearest neighbour: sum over labels of p_query * p_gallery."""
    q, g = Counter(query_labels), Counter(gallery_labels)
    return float(sum(q[a] / len(query_labels) * g[a] / len(gallery_labels) for a in q))


def same_caption(captions: Sequence[str]) -> np.ndarray:
    """`[N, N]` True where two tracks share a caption (each is a correct answer for the other's text)."""
    c = np.asarray(list(captions), dtype=object)
    return c[:, None] == c[None, :]


def retrieval_metrics(audio: np.ndarray, text: np.ndarray | None, captions: Sequence[str], labels: Sequence[str],
                      gallery: np.ndarray, gallery_labels: Sequence[str]) -> dict[str, float]:
    """Text->audio and audio->text recall@k (when there is text) and artist nearest-neighbour accuracy."""
    out: dict[str, float] = {}
    if text is not None:
        sim = l2_normalise(np.asarray(text, np.float64)) @ l2_normalise(np.asarray(audio, np.float64)).T
        relevant = same_caption(captions)
        out.update({f"text_to_audio_{k}": v for k, v in recall_at_k(sim, relevant=relevant).items()})
        out.update({f"audio_to_text_{k}": v for k, v in recall_at_k(sim.T, relevant=relevant).items()})
    out["artist_nn_accuracy"] = nearest_neighbour_accuracy(audio, labels, gallery, gallery_labels)
    return out


def random_baseline(n_gallery: int, dim: int, captions: Sequence[str], labels: Sequence[str], gallery_labels: Sequence[str],
                    with_text: bool, seeds: int) -> dict[str, float]:
    """The same metrics for random Gaussian embeddings, averaged over `seeds` draws."""
    runs = []
    n = len(labels)
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        audio = rng.standard_normal((n, dim))
        text = rng.standard_normal((n, dim)) if with_text else None
        runs.append(retrieval_metrics(audio, text, captions, labels, rng.standard_normal((n_gallery, dim)), gallery_labels))
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


def retrieval_report(embedder: Embedder, query_waves: Sequence[np.ndarray], query_captions: Sequence[str],
                     query_artists: Sequence[str], gallery_waves: Sequence[np.ndarray], gallery_artists: Sequence[str],
                     sr: int, random_seeds: int = 20) -> dict[str, Any]:
    """Embed held-out tracks (queries) and a gallery (training tracks); score them against random embeddings.

    Text->audio recall@k ranks each held-out caption's track (or any held-out track with the same
    caption) among all held-out tracks; artist accuracy takes the artist of each held-out track's
    nearest training track.
    """
    audio = embedder.embed_audio(query_waves, sr)
    text = embedder.embed_text(query_captions) if embedder.has_text else None
    gallery = embedder.embed_audio(gallery_waves, sr)
    n = len(query_waves)
    return {
        "embedder": embedder.describe(),
        "n_query": n,
        "n_gallery": len(gallery),
        "n_unique_captions": len(set(query_captions)),
        "metrics": retrieval_metrics(audio, text, query_captions, query_artists, gallery, gallery_artists),
        "random": random_baseline(len(gallery), embedder.dim, query_captions, query_artists, gallery_artists,
                                  text is not None, random_seeds),
        "chance": {"artist_nn_accuracy": chance_artist_accuracy(query_artists, gallery_artists)},
    }
