"""`embedding` (CLAP-like): cosine of windowed audio embeddings, all-against-all, max over window pairs.

Seed 002 (section 3.3) embeds 10 s windows every 1 s with CLAP and takes, as the score of a
training track, the maximum cosine between any query window and any of its windows. Any
`Embedder` works: the demo's own contrastive `songclap` by default, real CLAP where its weights
are present, or the training-free `dsp` embedder. The windows are the embedder's own.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from songtrace.baselines.base import QueryItem, TrainingSet, method_cache_key, register_method
from songtrace.baselines.windows import WindowBank
from songtrace.progress import progress


def resolve_embedder(embedder: Any, home: Any = None) -> Any:
    """An `Embedder` instance from an instance, a registered name ("songclap", "dsp") or a directory."""
    if not isinstance(embedder, str):
        return embedder
    from songtrace.embedders import load_embedder

    try:
        return load_embedder(embedder, home=home)
    except TypeError:  # a loader without the `home` keyword
        return load_embedder(embedder)


@register_method("embedding")
@dataclasses.dataclass
class EmbeddingSimilarity:
    """CLAP-like: max over (query window, training window) pairs of the embedding cosine."""

    embedder: Any = "songclap"
    home: Any = None
    name: str = "embedding"

    def __post_init__(self) -> None:
        self.embedder = resolve_embedder(self.embedder, self.home)

    @property
    def cache_key(self) -> str:
        """Key of this embedder's training windows in `TrainingSet.cache`."""
        return method_cache_key(self)

    def bank(self, train: TrainingSet) -> WindowBank:
        """Window embeddings of every training item (computed once per training set)."""

        def build() -> WindowBank:
            per_item = []
            for item_id in progress(train.ids, total=len(train), desc=f"embedding ({self.embedder.name}): training items"):
                wav, sr = train.audio(item_id)
                per_item.append(np.asarray(self.embedder.embed_windows(wav, sr), dtype=np.float32))
            return WindowBank.from_items(per_item)

        return train.cached(self.cache_key, build)

    def prepare(self, train: TrainingSet) -> None:
        """Compute the training features now (else on the first query)."""
        self.bank(train)

    def score(self, query: QueryItem, train: TrainingSet) -> np.ndarray:
        """Max window-pair cosine to every training item: `[N]`."""
        bank = self.bank(train)
        wav, sr = query.audio()
        return bank.max_similarity(np.asarray(self.embedder.embed_windows(wav, sr), dtype=np.float32))
