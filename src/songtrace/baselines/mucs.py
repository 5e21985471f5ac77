"""`mucs` (MUCS-style; Serrà et al., Sony 2026): mirrored unlearning with a bounded ascent, scored by a noise-consistent skew.

1. Mirrored unlearning: fine-tune a copy of the target weights by gradient ascent (Adam) on the
   query's diffusion loss over a fixed plan of T timesteps and noise (seeded by the query id).
   The ascent is bounded by a null-loss reference: each timestep's loss is clipped at the loss
   of the null prediction v = 0 (‖v‖² averaged), so once a timestep is as bad as predicting
   nothing it stops pushing, and the model is not driven arbitrarily far.
2. Noise-consistent skew: each training item's per-timestep losses under θ0 and the unlearned
   θ_u on the same timesteps and noise, turned into the normalised skew
   (L_u − L_0) / (L_u + L_0 + ε) per draw and averaged over the draws. The normalisation
   keeps items with large losses (short, noisy, hard tracks) from dominating, as a raw τ would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from songtrace.attribution.groups import split_params, target_params
from songtrace.baselines.base import QueryItem, TrainingSet, method_cache_key, register_method
from songtrace.baselines.features import row_batches
from songtrace.data.batch import Batch
from songtrace.diffusion.loss import NoisePlan, flatten_samples, make_plan
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, as_task, eval_mode
from songtrace.progress import progress


def null_loss(batch: Batch, plan: NoisePlan, mask: bool) -> torch.Tensor:
    """The loss of predicting v = 0 at every planned timestep `[B, T]` (the bound of the ascent)."""
    samples = flatten_samples(batch, plan, mask)
    sq = samples.target**2
    if samples.frame_mask is None:
        per = sq.mean(dim=(-2, -1))
    else:
        m = samples.frame_mask.to(sq.dtype)[:, None, :]
        per = (sq * m).sum(dim=(-2, -1)) / (m.sum(dim=(-2, -1)) * sq.shape[-2]).clamp_min(1.0)
    return per.reshape(plan.t.shape)


def bounded_ascent_loss(losses: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """−mean_t min(L_t, bound_t): minimising it raises the query's loss until each timestep reaches its bound."""
    return -torch.minimum(losses, bound).mean()


def normalised_skew(loss_u: torch.Tensor, loss_0: torch.Tensor, eps: float) -> torch.Tensor:
    """(L_u − L_0) / (L_u + L_0 + ε) per draw, averaged over the last axis (the draws)."""
    return ((loss_u - loss_0) / (loss_u + loss_0 + eps)).mean(dim=-1)


@register_method("mucs")
@dataclasses.dataclass
class MirroredUnlearningSkew:
    """MUCS-style: bounded mirrored-ascent fine-tune with consistent noise, scored by the normalised loss skew."""

    model: nn.Module | ModelTask
    group: str = "all"
    steps: int = 5
    lr: float = 1e-3
    n_timesteps: int = 64
    score_timesteps: int = 8
    seed: int = 0
    mask: bool = False
    eps: float = 1e-8
    batch_size: int = 16
    name: str = "mucs"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.n_timesteps < 1 or self.score_timesteps < 1 or self.batch_size < 1:
            raise SongtraceError("mucs: steps, n_timesteps, score_timesteps and batch_size must be >= 1")
        if not (self.lr > 0 and np.isfinite(self.lr)) or self.eps < 0:
            raise SongtraceError(f"mucs: lr must be a positive number and eps >= 0, got lr={self.lr}, eps={self.eps}")
        self.model = as_task(self.model)
        self.names = target_params(self.model, self.group)

    @property
    def cache_key(self) -> str:
        """Key of the training items' θ0 losses in `TrainingSet.cache`."""
        return method_cache_key(self)

    def unlearned(self, query: Batch) -> dict[str, torch.Tensor]:
        """The target weights after `steps` Adam steps of bounded ascent on the query's loss (consistent noise)."""
        target, frozen = split_params(self.model, self.names)
        plan = make_plan(query.ids, self.n_timesteps, self.model.latent_shape, self.seed)
        bound = null_loss(query, plan, self.mask)
        theta = {k: v.clone().requires_grad_(True) for k, v in target.items()}
        opt = torch.optim.Adam(theta.values(), lr=self.lr)
        with eval_mode(self.model.module):
            for _ in range(self.steps):
                opt.zero_grad(set_to_none=True)
                loss = bounded_ascent_loss(self.model.loss({**frozen, **theta}, query, plan, mask=self.mask), bound)
                loss.backward()
                opt.step()
        return {k: v.detach() for k, v in theta.items()}

    @torch.no_grad()
    def item_losses(self, params: dict[str, torch.Tensor] | None, train: TrainingSet) -> torch.Tensor:
        """Per-timestep losses `[N, T]` of every training item on its own plan (seeded by its id), float64."""
        out = []
        with eval_mode(self.model.module):
            for rows in row_batches(len(train), self.batch_size):
                batch = train.latents.batch(rows)
                plan = make_plan(batch.ids, self.score_timesteps, self.model.latent_shape, self.seed)
                out.append(self.model.loss(params, batch, plan, mask=self.mask).double())
        return torch.cat(out)

    def base(self, train: TrainingSet) -> torch.Tensor:
        """θ0's per-timestep item losses, once per training set."""
        return train.cached(self.cache_key, lambda: self.item_losses(None, train))

    def prepare(self, train: TrainingSet) -> None:
        """Compute θ0's item losses now (else on the first query)."""
        self.base(train)

    def score_many(self, queries: Sequence[QueryItem], train: TrainingSet) -> np.ndarray:
        """Normalised skews `[Q, N]`."""
        base = self.base(train)
        rows = []
        for q in progress(queries, total=len(queries), desc="mucs: unlearn", unit="query"):
            rows.append(normalised_skew(self.item_losses(self.unlearned(q.batch()), train), base, self.eps).numpy())
        return np.stack(rows) if rows else np.zeros((0, len(train)))

    def score(self, query: QueryItem, train: TrainingSet) -> np.ndarray:
        """Normalised skews `[N]` of one query."""
        return self.score_many([query], train)[0]
