"""`gradient` (TRAK / D-TRAK-like): similarity of randomly projected diffusion-loss gradients.

For each item, φ(z) = P ∇θ L(z, θ0): the gradient of the v-objective loss over the target layers
(a layer group or a regex, as for unlearning), averaged over a fixed plan of T timesteps with
shared noise (the same draws for every item and query, so gradients are comparable), then
projected to k dimensions by a seeded random map P (see `projection`). Scores:
- `cosine` (default): cos(φ(ẑ), φ(z_i)), D-TRAK's normalised gradient similarity;
- `dot`: φ(ẑ)ᵀ φ(z_i);
- `trak`: φ(ẑ)ᵀ (ΦᵀΦ + λI)⁻¹ φ(z_i), TRAK's preconditioning by the training features Φ
  (λ = damping · trace(ΦᵀΦ) / k).
Training features are computed and projected once per training set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from songtrace.attribution.fisher import PER_SAMPLE_METHODS, per_sample_grads
from songtrace.attribution.groups import split_params, target_params
from songtrace.attribution.projection import PROJECTIONS, Projector
from songtrace.baselines.base import QueryItem, TrainingSet, method_cache_key, register_method
from songtrace.baselines.features import row_batches
from songtrace.data.batch import Batch
from songtrace.diffusion.loss import NoisePlan, make_plan
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, as_task, eval_mode
from songtrace.progress import progress

NORMALIZATIONS = ("cosine", "dot", "trak")


def shared_plan(n_items: int, n_timesteps: int, latent_shape: tuple[int, int], seed: int) -> NoisePlan:
    """One plan (T stratified timesteps and their noise) repeated for every item of a batch."""
    plan = make_plan(["gradient-baseline"], n_timesteps, latent_shape, seed)
    return NoisePlan(plan.t.expand(n_items, -1).contiguous(), plan.noise.expand(n_items, *plan.noise.shape[1:]).contiguous())


def precondition(train_feats: torch.Tensor, damping: float) -> torch.Tensor:
    """Φ (ΦᵀΦ + λI)⁻¹ `[N, k]`, so that a TRAK score is `that @ φ(ẑ)`."""
    gram = train_feats.T @ train_feats
    lam = damping * float(torch.trace(gram)) / gram.shape[0]
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    return torch.linalg.solve(gram + max(lam, 1e-12) * eye, train_feats.T).T


@register_method("gradient")
@dataclasses.dataclass
class GradientSimilarity:
    """TRAK/D-TRAK-like: cosine (or preconditioned inner product) of projected loss gradients."""

    model: nn.Module | ModelTask
    group: str = "all"
    dim: int = 1024
    n_timesteps: int = 4
    seed: int = 0
    mask: bool = True
    projection: str = "srdct"
    normalize: str = "cosine"
    damping: float = 1e-2
    batch_size: int = 8
    grad_method: str = "vmap"
    name: str = "gradient"

    def __post_init__(self) -> None:
        if self.dim < 1 or self.n_timesteps < 1 or self.batch_size < 1:
            raise SongtraceError("gradient: dim, n_timesteps and batch_size must be >= 1")
        for label, value, valid in (("projection", self.projection, PROJECTIONS), ("normalize", self.normalize, NORMALIZATIONS),
                                    ("grad_method", self.grad_method, tuple(PER_SAMPLE_METHODS))):
            if value not in valid:
                raise SongtraceError(f"gradient: unknown {label} {value!r}; valid: {', '.join(valid)}")
        self.model = as_task(self.model)
        self.names = target_params(self.model, self.group)
        n_params = sum(int(p.numel()) for n, p in self.model.module.named_parameters() if n in set(self.names))
        self.projector = Projector(self.projection, n_params, self.dim, self.seed)

    @property
    def cache_key(self) -> str:
        """Key of this configuration's training features in `TrainingSet.cache`."""
        return method_cache_key(self)

    def gradients(self, batch: Batch) -> torch.Tensor:
        """∇θ L(z, θ0) over the target layers, mean over the plan's timesteps: `[B, P]`."""
        target, frozen = split_params(self.model, self.names)
        plan = shared_plan(len(batch), self.n_timesteps, tuple(batch.latents.shape[1:]), self.seed)
        with eval_mode(self.model.module):
            grads = per_sample_grads(self.model, target, frozen, batch, plan, self.mask, method=self.grad_method)
        flat = torch.cat([grads[n].reshape(len(batch), self.n_timesteps, -1) for n in self.names], dim=-1)
        return flat.mean(dim=1).detach()

    def features(self, batch: Batch) -> torch.Tensor:
        """Projected gradients φ `[B, k]`."""
        return self.projector.project(self.gradients(batch))

    def train_features(self, train: TrainingSet) -> dict[str, torch.Tensor]:
        """Φ of the training set, ready to score against (computed once per training set)."""

        def build() -> dict[str, torch.Tensor]:
            rows = list(row_batches(len(train), self.batch_size))
            feats = torch.cat([self.features(train.latents.batch(r)) for r in progress(rows, total=len(rows),
                                                                                       desc="gradient: training items")])
            if self.normalize == "cosine":
                return {"phi": nn.functional.normalize(feats, dim=1)}
            if self.normalize == "trak":
                return {"phi": precondition(feats, self.damping)}
            return {"phi": feats}

        return train.cached(self.cache_key, build)

    def prepare(self, train: TrainingSet) -> None:
        """Compute the training features now (else on the first query)."""
        self.train_features(train)

    def score_many(self, queries: Sequence[QueryItem], train: TrainingSet) -> np.ndarray:
        """Scores `[Q, N]` (the queries' gradients are projected together)."""
        phi = self.train_features(train)["phi"]
        if not queries:
            return np.zeros((0, phi.shape[0]))
        q = torch.cat([self.features(Batch.concat([qi.batch() for qi in queries[r[0] : r[-1] + 1]]))
                       for r in row_batches(len(queries), self.batch_size)])
        if self.normalize == "cosine":
            q = nn.functional.normalize(q, dim=1)
        return (q @ phi.T).numpy()

    def score(self, query: QueryItem, train: TrainingSet) -> np.ndarray:
        """Scores `[N]` of one query."""
        return self.score_many([query], train)[0]
