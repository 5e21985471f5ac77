"""Windows of a track and all-against-all window matching: the one windowing rule and the one L2 normaliser.

Seed 002 (section 3.3) cuts every track into overlapping windows (10 s every 1 s on 2-minute
tracks), compares every query window with every training window and keeps the maximum, so a short
shared passage anywhere in two tracks is found. Embedders (audio samples), the CLEWS-like baseline
(chroma frames) and the LPIPS-like baseline (latent frames) all window with `window_starts`, and
all match with `WindowBank`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from songtrace.errors import SongtraceError

# Named in every embedder's `describe()` and in caches of window embeddings, so a change of rule is visible.
WINDOW_RULE = "tail-covered"


def window_starts(n: int, window: int, hop: int) -> list[int]:
    """Start positions of windows of `window` steps every `hop` steps over a track of `n` steps (samples or frames).

    The rule (the same for every embedder and baseline):
    - a track no longer than one window is one window at 0 (a short window: the whole track);
    - otherwise windows start at 0, hop, 2 hop, ... while they fit, and when the last of those
      ends before the track does, one more window is aligned to the track's end.

    Why the end-aligned window: every step of the track then lies in some window, so a passage in
    the last `hop` steps (up to a second at the paper's 1 s hop) can still be matched; fixed-hop
    framing drops it, which matters most for short tracks (a 10.9 s track with 10 s windows would
    lose its last 0.9 s). The extra window overlaps its neighbour by more than the others do; that
    changes a max over window pairs only by what the tail adds.
    """
    if window < 1 or hop < 1:
        raise SongtraceError(f"window ({window}) and hop ({hop}) must be at least 1 sample or frame")
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, hop))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


def l2_normalise(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """`x` scaled to unit L2 norm along `axis`, so dot products are cosines (zero rows stay zero).

    Floating inputs keep their dtype (cast first for another dtype);
    integer inputs become float64.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, np.asarray(eps, dtype=x.dtype))


@dataclasses.dataclass
class WindowBank:
    """Unit-normalised window vectors of N items, concatenated; item i owns rows `offsets[i]:offsets[i + 1]`.

    Built once for the training side; a query is then one matrix product and a segmented max.
    """

    vectors: np.ndarray  # [M, D] float32, unit rows
    offsets: np.ndarray  # [N + 1] int64

    @classmethod
    def from_items(cls, per_item: Sequence[np.ndarray]) -> WindowBank:
        """Build from one `[W_i, D]` array per item (every item needs at least one window)."""
        if not per_item:
            raise SongtraceError("no items to build a window bank from")
        for i, w in enumerate(per_item):
            if np.ndim(w) != 2 or np.shape(w)[0] < 1:
                raise SongtraceError(f"item {i}: expected at least one window vector, got shape {np.shape(w)}")
        counts = np.array([np.shape(w)[0] for w in per_item], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(vectors=l2_normalise(np.concatenate(per_item, axis=0).astype(np.float32)), offsets=offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def max_similarity(self, query_windows: np.ndarray) -> np.ndarray:
        """Per item, the max cosine over (query window, item window) pairs: `[N]` float64."""
        return self.max_similarity_matrix([query_windows])[0]

    def max_similarity_matrix(self, queries: Sequence[np.ndarray], block: int = 1 << 24) -> np.ndarray:
        """`[Q, N]` float64: per query and item, the max cosine over window pairs.

        All queries' windows go into one product per slice of the bank; slices are sized so that one
        block of similarities holds about `block` numbers (64 MB), whatever the number of windows.
        """
        if not queries:
            return np.zeros((0, len(self)))
        q = [l2_normalise(np.asarray(w, dtype=np.float32)) for w in queries]
        for w in q:
            if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] != self.vectors.shape[1]:
                raise SongtraceError(f"query windows have shape {w.shape}; the bank holds {self.vectors.shape[1]}-d vectors")
        q_all = np.concatenate(q)
        q_starts = np.concatenate([[0], np.cumsum([len(w) for w in q])])[:-1]
        step = max(1, block // len(q_all))
        best = np.empty((len(q), self.vectors.shape[0]), dtype=np.float32)  # per query, per bank window
        for s in range(0, self.vectors.shape[0], step):
            best[:, s : s + step] = np.maximum.reduceat(q_all @ self.vectors[s : s + step].T, q_starts, axis=0)
        return np.maximum.reduceat(best, self.offsets[:-1], axis=1).astype(np.float64)
