"""Windowed embedding similarity, all against all, max over window pairs (seed 002's CLAP baseline), and cosines.

Every track is cut into windows (10 s / 1 s hop in the paper), each window embedded once; the
similarity of a query and a training track is the largest cosine over all pairs of their windows.
The windows and the matching are `songtrace.data.windows` (`window_starts`, `WindowBank`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from songtrace.data.windows import WindowBank, l2_normalise
from songtrace.embedders.base import Embedder


def embed_window_bank(embedder: Embedder, waves: Sequence[np.ndarray], sr: int) -> WindowBank:
    """The normalised window embeddings of `waves` as one `WindowBank` (embed a training set once, match many queries)."""
    return WindowBank.from_items([embedder.embed_windows(w, sr) for w in waves])


def window_similarity_matrix(embedder: Embedder, queries: Sequence[np.ndarray], items: Sequence[np.ndarray] | WindowBank,
                             sr: int) -> np.ndarray:
    """`[Q, N]` similarity of each query track to each item track: max cosine over all window pairs.

    `items` is the item tracks' audio, or their `embed_window_bank` when it was built before (by the
    same embedder), so that a training set scored against query after query is embedded once.
    """
    bank = items if isinstance(items, WindowBank) else embed_window_bank(embedder, items, sr)
    return bank.max_similarity_matrix([embedder.embed_windows(q, sr) for q in queries])


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarities `[A, B]` of two sets of (pooled) embeddings, in float64."""
    return l2_normalise(np.asarray(a, np.float64)) @ l2_normalise(np.asarray(b, np.float64)).T
