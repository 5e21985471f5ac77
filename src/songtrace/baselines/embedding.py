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

from songtrace.baselines.base import register_method
from songtrace.baselines.windows import AudioWindowMethod
from songtrace.embedders.registry import resolve_embedder


@register_method("embedding")
@dataclasses.dataclass
class EmbeddingSimilarity(AudioWindowMethod):
    """CLAP-like: max over (query window, training window) pairs of the embedding cosine."""

    embedder: Any = "songclap"
    home: Any = None
    name: str = "embedding"

    def __post_init__(self) -> None:
        self.embedder = resolve_embedder(self.embedder, self.home)

    def item_windows(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """The embedder's normalised window embeddings `[W, D]`."""
        return self.embedder.embed_windows(wav, sr)
