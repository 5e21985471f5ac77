"""Audio methods that score by all-against-all window matching: the training windows are built once per training set.

Seed 002 (section 3.3) windows every track, compares every query window with every training
window and keeps the maximum. The CLAP-like (`embedding`) and CLEWS-like (`version`) baselines
differ only in what a window vector is; `AudioWindowMethod` holds the rest once: the training
side as one `songtrace.data.windows.WindowBank` in `TrainingSet.cache`, and the segmented max.
"""

from __future__ import annotations

import numpy as np

from songtrace.baselines.base import QueryItem, TrainingSet, method_cache_key
from songtrace.data.windows import WindowBank
from songtrace.progress import progress


class AudioWindowMethod:
    """Mixin for a dataclass method: define `item_windows` and `query_windows` (audio -> `[W, D]`); get bank, prepare, score."""

    name: str

    def item_windows(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """The window vectors `[W, D]` of one training item."""
        raise NotImplementedError

    def query_windows(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """The window vectors `[W', D]` of a query (by default those of a training item)."""
        return self.item_windows(wav, sr)

    @property
    def cache_key(self) -> str:
        """Key of this configuration's training windows in `TrainingSet.cache`."""
        return method_cache_key(self)

    def bank(self, train: TrainingSet) -> WindowBank:
        """Window vectors of every training item (computed once per training set)."""

        def build() -> WindowBank:
            rows = progress(train.ids, total=len(train), desc=f"{self.name}: training items")
            return WindowBank.from_items([np.asarray(self.item_windows(*train.audio(i)), dtype=np.float32) for i in rows])

        return train.cached(self.cache_key, build)

    def prepare(self, train: TrainingSet) -> None:
        """Compute the training windows now (else on the first query)."""
        self.bank(train)

    def score(self, query: QueryItem, train: TrainingSet) -> np.ndarray:
        """Max over (query window, training window) pairs of the cosine, per training item: `[N]`."""
        bank = self.bank(train)
        return bank.max_similarity(self.query_windows(*query.audio()))
