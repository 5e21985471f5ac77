"""`unlearning`: attribution by unlearning (seed 002, Eq. 6 then Eq. 2) behind the common method interface.

A thin wrapper over `songtrace.attribution`: unlearn the query with `unlearn` (the one Eq. 6
iteration, `unlearn_iterates`: θ' = θ0 + η (1/N) F⁻¹ ∇L(ẑ, θ) on the target layers, `steps` times),
then τ(ẑ, z_i) = L(z_i, θ') − L(z_i, θ0) with common random numbers. The base losses L(z_i, θ0) are
computed once per training set; `score_many` scores all queries in one pass over the data.
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
from songtrace.attribution.score import ScoreConfig, base_losses, score_many
from songtrace.attribution.unlearn import UnlearnConfig, unlearn
from songtrace.baselines.base import QueryItem, TrainingSet, method_cache_key, register_method
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, as_task
from songtrace.progress import progress


@register_method("unlearning")
@dataclasses.dataclass
class UnlearningAttribution:
    """τ(ẑ, z_i) = L(z_i, θ') − L(z_i, θ0) after unlearning ẑ (Eq. 6); larger = more attributed."""

    model: nn.Module | ModelTask
    fisher: Any  # a Fisher, or the directory of one
    unlearn_config: UnlearnConfig = dataclasses.field(default_factory=UnlearnConfig)
    score_config: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    cache_dir: Path | None = None  # where base losses are cached on disk (optional)
    name: str = "unlearning"

    def __post_init__(self) -> None:
        self.model = as_task(self.model)
        if isinstance(self.fisher, str | Path):
            self.fisher = Fisher.load(self.fisher)
        if not isinstance(self.fisher, Fisher):
            raise SongtraceError("unlearning needs a Fisher (or the directory of one written by `songtrace fisher`)")

    @property
    def cache_key(self) -> str:
        """Key of the base losses in `TrainingSet.cache`."""
        return method_cache_key(self)

    def _base(self, train: TrainingSet) -> torch.Tensor:
        return train.cached(self.cache_key, lambda: base_losses(self.model, train.latents, self.score_config,
                                                                self.unlearn_config.mask_loss, cache_dir=self.cache_dir))

    def prepare(self, train: TrainingSet) -> None:
        """Compute the base losses L(z_i, θ0) now (else on the first query)."""
        self._base(train)

    def score_many(self, queries: Sequence[QueryItem], train: TrainingSet) -> np.ndarray:
        """τ for every query and training item `[Q, N]`, in one scoring pass over the data."""
        if train.latents.subset(self.score_config.split).ids != train.ids:
            raise SongtraceError(f"unlearning scores the {self.score_config.split!r} split; pass a training set holding only it")
        base = self._base(train)
        deltas = [unlearn(self.model, self.fisher, q.batch(), self.unlearn_config)
                  for q in progress(queries, total=len(queries), desc="unlearn", unit="query")]
        if not deltas:
            return np.zeros((0, len(train)))
        return score_many(self.model, deltas, train.latents, self.score_config, self.unlearn_config.mask_loss, base=base).numpy()

    def score(self, query: QueryItem, train: TrainingSet) -> np.ndarray:
        """τ of one query `[N]`."""
        return self.score_many([query], train)[0]


@register_method("attribute_by_unlearning")
@dataclasses.dataclass
class AttributeByUnlearning(UnlearningAttribution):
    """Attribute-by-Unlearning-style (Wang et al. 2024): Eq. 6 on the cross-attention `to_kv` weights only, one step.

    The other settings (η, damping, masks, timesteps) are the given unlearning config's.
    """

    name: str = "attribute_by_unlearning"

    def __post_init__(self) -> None:
        self.unlearn_config = dataclasses.replace(self.unlearn_config, group="to_kv", steps=1)
        super().__post_init__()
