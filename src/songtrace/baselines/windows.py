"""All-against-all window matching: each track is a set of window vectors; score = max over window pairs.

Seed 002 (section 3.3) windows every track into overlapping segments, compares every query window
with every training window and keeps the maximum, so a short shared passage anywhere in two tracks
is found. `WindowBank` holds the training side once (all windows, unit-normalised, concatenated
with per-item offsets); a query is then one matrix product and a segmented max.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from songtrace.errors import SongtraceError


def window_starts(n_frames: int, window: int, hop: int) -> list[int]:
    """Start frames of windows of `window` frames every `hop` frames; one window at 0 if the track is shorter.

    The last window is aligned to the end so the track's tail is covered.
    """
    if window < 1 or hop < 1:
        raise SongtraceError(f"window ({window}) and hop ({hop}) must be >= 1 frame")
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, hop))
    if starts[-1] != n_frames - window:
        starts.append(n_frames - window)
    return starts


def unit_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, eps)


@dataclasses.dataclass
class WindowBank:
    """Unit-normalised window vectors of N items, concatenated; item i owns rows offsets[i]:offsets[i+1]."""

    vectors: np.ndarray  # [M, D] float32, unit rows
    offsets: np.ndarray  # [N + 1] int64

    @classmethod
    def from_items(cls, per_item: Sequence[np.ndarray]) -> WindowBank:
        """Build from one `[W_i, D]` array per item (every item needs at least one window)."""
        if not per_item:
            raise SongtraceError("no training items to build a window bank from")
        for i, w in enumerate(per_item):
            if w.ndim != 2 or w.shape[0] < 1:
                raise SongtraceError(f"item {i}: expected at least one window vector, got shape {w.shape}")
        counts = np.array([w.shape[0] for w in per_item], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(vectors=unit_rows(np.concatenate(per_item, axis=0)), offsets=offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def max_similarity(self, query_windows: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Per item, the max cosine over (query window, item window) pairs: `[N]`."""
        q = unit_rows(query_windows)
        if q.ndim != 2 or q.shape[1] != self.vectors.shape[1]:
            raise SongtraceError(f"query windows have shape {q.shape}; the bank holds {self.vectors.shape[1]}-d vectors")
        best = np.empty(self.vectors.shape[0], dtype=np.float32)
        for s in range(0, self.vectors.shape[0], chunk):
            best[s : s + chunk] = (self.vectors[s : s + chunk] @ q.T).max(axis=1)
        return np.maximum.reduceat(best, self.offsets[:-1]).astype(np.float64)
