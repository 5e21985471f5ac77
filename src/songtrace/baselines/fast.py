"""`fast`: the fast attribution index (`songtrace.attribution.index`) behind the common method interface.

τ_i ≈ η/N · φ_iᵀ φ̂, φ = P (F + λ)^(-1/2) ∇L: the first-order form of one unlearning step (Eq. 6),
with the items' gradients projected to k dimensions once per training set (in memory here; on
disk, memory-mapped and sharded, with `songtrace index build`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from songtrace.attribution.fisher import Fisher
from songtrace.attribution.index import IndexConfig, IndexContext, item_feature_matrix
from songtrace.attribution.score import ScoreConfig
from songtrace.attribution.unlearn import UnlearnConfig
from songtrace.baselines.base import QueryItem, TrainingSet, method_cache_key, register_method
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, as_task


@register_method("fast")
@dataclasses.dataclass
class FastIndexAttribution:
    """First-order unlearning scores from a projected, Fisher-preconditioned gradient index."""

    model: nn.Module | ModelTask
    fisher: Any  # a Fisher, or the directory of one
    unlearn_config: UnlearnConfig = dataclasses.field(default_factory=UnlearnConfig)
    score_config: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    dim: int = 1024
    projection: str = "srdct"
    projection_seed: int = 0
    name: str = "fast"

    def __post_init__(self) -> None:
        self.model = as_task(self.model)
        if isinstance(self.fisher, str | Path):
            self.fisher = Fisher.load(self.fisher)
        if not isinstance(self.fisher, Fisher):
            raise SongtraceError("fast needs a Fisher (or the directory of one written by `songtrace fisher`)")
        u = self.unlearn_config
        self.index_config = IndexConfig(dim=self.dim, projection=self.projection, projection_seed=self.projection_seed, group=u.group,
                                        damping=u.damping, damping_mode=u.damping_mode, mask_loss=u.mask_loss, score=self.score_config)
        self.context = IndexContext.make(self.model, self.fisher, self.index_config)

    @property
    def cache_key(self) -> str:
        """Key of the index rows in `TrainingSet.cache`."""
        return method_cache_key(self)

    def rows(self, train: TrainingSet) -> torch.Tensor:
        """The index Φ `[N, k]` of the training set (built once)."""
        return train.cached(self.cache_key, lambda: item_feature_matrix(self.context, train.latents, self.index_config))

    def prepare(self, train: TrainingSet) -> None:
        """Build the index now (else on the first query)."""
        self.rows(train)

    def score_many(self, queries: Sequence[QueryItem], train: TrainingSet) -> np.ndarray:
        """τ ≈ η/N Φ φ̂ for every query `[Q, N]`."""
        phi = self.rows(train)
        if not queries:
            return np.zeros((0, phi.shape[0]))
        q = torch.stack([self.context.query_feature(qi.batch(), self.unlearn_config) for qi in queries])
        return ((q @ phi.T) * (self.unlearn_config.lr / self.context.n_train)).numpy()

    def score(self, query: QueryItem, train: TrainingSet) -> np.ndarray:
        """Scores `[N]` of one query."""
        return self.score_many([query], train)[0]
