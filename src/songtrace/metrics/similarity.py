"""Windowed embedding similarity, all against all, max over window pairs (seed 002's CLAP baseline).

Every track is cut into windows (10 s / 1 s hop in the paper), each window embedded once; the
similarity of a query and a training track is the largest cosine over all pairs of their windows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from songtrace.embedders.base import Embedder
from songtrace.errors import SongtraceError


class WindowBank:
    """Per-track window embeddings, computed once per key and reused across queries."""

    def __init__(self, embedder: Embedder, sr: int) -> None:
        self.embedder = embedder
        self.sr = int(sr)
        self._cache: dict[str, np.ndarray] = {}

    def get(self, key: str, wave: np.ndarray) -> np.ndarray:
        """Normalised window embeddings `[W, D]` of a track, embedded on first use."""
        if key not in self._cache:
            self._cache[key] = self.embedder.embed_windows(wave, self.sr)
        return self._cache[key]

    def __len__(self) -> int:
        return len(self._cache)


def stack_windows(per_track: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All windows in one matrix `[sum W, D]` and each track's start row (`offsets [N + 1]`)."""
    if not per_track:
        raise SongtraceError("no tracks to compare")
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in per_track])])
    return np.concatenate(per_track).astype(np.float32), offsets


def max_window_similarity(query: np.ndarray, item: np.ndarray) -> float:
    """The largest cosine between any window of `query [Wq, D]` and any window of `item [Wi, D]` (normalised rows)."""
    return float((query @ item.T).max())


def max_similarity_matrix(queries: Sequence[np.ndarray], items: Sequence[np.ndarray], chunk_windows: int = 1 << 18) -> np.ndarray:
    """`[Q, N]` max-over-window-pairs cosine, from normalised window embeddings; items in column chunks."""
    q_all, q_off = stack_windows(queries)
    out = np.empty((len(queries), len(items)), dtype=np.float32)
    start = 0
    while start < len(items):  # chunk items so one block of similarities stays small
        stop, n_win = start, 0
        while stop < len(items) and (n_win == 0 or n_win + len(items[stop]) <= chunk_windows):
            n_win += len(items[stop])
            stop += 1
        i_all, i_off = stack_windows(items[start:stop])
        sim = q_all @ i_all.T  # [sum Wq, sum Wi]
        per_query = np.maximum.reduceat(sim, q_off[:-1], axis=0)  # [Q, sum Wi]
        out[:, start:stop] = np.maximum.reduceat(per_query, i_off[:-1], axis=1)
        start = stop
    return out


def window_similarity_matrix(embedder: Embedder, queries: Sequence[np.ndarray], items: Sequence[np.ndarray], sr: int,
                             query_ids: Sequence[str] | None = None, item_ids: Sequence[str] | None = None,
                             bank: WindowBank | None = None) -> np.ndarray:
    """`[Q, N]` similarity of each query track to each item track: max cosine over all window pairs.

    Pass ids and a `WindowBank` to embed each track once across many calls (e.g. the training set
    scored against query after query).
    """
    bank = WindowBank(embedder, sr) if bank is None else bank
    if bank.embedder is not embedder or bank.sr != int(sr):
        raise SongtraceError("window similarity: the WindowBank was made for another embedder or sample rate")

    def embed(ids: Sequence[str] | None, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        if ids is None:  # no ids: nothing to key a cache on
            return [embedder.embed_windows(w, sr) for w in waves]
        if len(ids) != len(waves):
            raise SongtraceError(f"window similarity: {len(ids)} ids but {len(waves)} tracks")
        return [bank.get(str(k), w) for k, w in zip(ids, waves, strict=True)]

    return max_similarity_matrix(embed(query_ids, queries), embed(item_ids, items))


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarities `[A, B]` of two sets of (pooled) embeddings."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T
