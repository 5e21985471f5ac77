"""`representer` (RPS): representer point scores on the model's last layer (Yeh et al. 2018; seed 002's [31]).

The representer theorem writes the last layer's prediction of a test input as a sum over training
points, Φ(ẑ) = Σ_i α_i f(z_i)ᵀ f(ẑ), with α_i = −1/(2λn) ∂L(z_i)/∂Φ(z_i). For the MSE v-objective
seed 002 rewrites α_i = −1/(λn) (Φ(z_i) − target_i) and scores item i by "the average of the
signed sum of its components" of α_i f(z_i)ᵀ f(ẑ).

Our reading, for a DiT whose last layer is a per-frame linear projection (`project_out`:
features f ∈ R^D of frame l -> v ∈ R^C of frame l):
- every real frame l of a training item is a point of the masked-mean loss, so its representer
  value is α_{i,l} = −1/(λ n) (Φ(z_i)_l − v_{i,l}) / n_i  (n_i real frames; n training items);
- item i's contribution to the query's prediction at frame l' is Σ_l α_{i,l} f_{i,l}ᵀ f̂_{l'} ∈ R^C;
- its score is that vector averaged over components c and over the query's real frames l':
  τ(ẑ, z_i) = mean_c (Σ_l α_{i,l,c} f_{i,l})ᵀ mean_{l'} f̂_{l'} — one D-vector per item
  (`a_i = mean_c Σ_l α_{i,l,c} f_{i,l}`), so scoring a query is one matrix-vector product;
- Φ and f depend on (t, ε): we average τ over a few fixed timesteps with shared noise, the same
  draws for the query and the training items.
Φ is the model's v prediction (the last layer's output; in the demo DiT nothing follows it) and
f the last layer's input, both read through `ModelTask.last_layer_features`. λ only scales all scores;
it is kept for the formula's sake.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from songtrace.baselines.base import QueryItem, TrainingSet, method_cache_key, register_method
from songtrace.baselines.features import (
    check_white_box,
    fixed_noise,
    noisy_inputs,
    real_frame_means,
    row_batches,
)
from songtrace.data.batch import Batch
from songtrace.diffusion.schedule import v_target
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, as_task, eval_mode
from songtrace.progress import progress


def representer_values(pred_v: torch.Tensor, target_v: torch.Tensor, n_frames: torch.Tensor, lam: float, n_train: int) -> torch.Tensor:
    """α `[B, L, C]`: −1/(λ n) (Φ − v) / n_i on real frames, 0 on padding (per-frame points of the masked-mean loss)."""
    resid = (pred_v - target_v).transpose(1, 2)  # [B, L, C]
    length = resid.shape[1]
    real = (torch.arange(length)[None, :] < n_frames[:, None]).to(resid.dtype)
    per_item = real / n_frames.clamp_min(1).to(resid.dtype)[:, None]
    return -resid * per_item[..., None] / (lam * n_train)


def item_vectors(alpha: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """a_i = mean_c Σ_l α_{i,l,c} f_{i,l}: `[B, D]` from α `[B, L, C]` and f `[B, L, D]`."""
    return torch.einsum("blc,bld->bd", alpha, features) / alpha.shape[-1]


@register_method("representer")
@dataclasses.dataclass
class RepresenterPoints:
    """RPS on the last layer: τ(ẑ, z_i) = mean over components of α_i f(z_i)ᵀ f(ẑ), averaged over timesteps."""

    model: nn.Module | ModelTask
    timesteps: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    seed: int = 0
    lam: float = 1.0
    conditioning: str = "own"
    key_mask: bool = False
    batch_size: int = 16
    name: str = "representer"

    def __post_init__(self) -> None:
        self.timesteps = check_white_box("representer", self.timesteps, self.conditioning)
        if self.lam <= 0:
            raise SongtraceError(f"representer: lam must be > 0, got {self.lam}")
        self.model = as_task(self.model)

    @property
    def cache_key(self) -> str:
        """Key of this configuration's training vectors in `TrainingSet.cache`."""
        return method_cache_key(self)

    @torch.no_grad()
    def _run(self, batch: Batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per timestep: the v prediction `[B, C, L]` and the last layer's input `[B, L, D]` (via the model's task)."""
        noise = fixed_noise(tuple(batch.latents.shape[1:]), len(self.timesteps), self.seed)
        preds, feats = [], []
        with eval_mode(self.model.module):
            for k, t in enumerate(self.timesteps):
                f, v = self.model.last_layer_features(*noisy_inputs(batch, noise[k], t, self.conditioning, self.key_mask))
                preds.append(v)
                feats.append(f)
        return preds, feats

    def train_vectors(self, train: TrainingSet) -> torch.Tensor:
        """a_{i,k} `[N, K, D]` for every training item and timestep (computed once per training set)."""

        def build() -> torch.Tensor:
            n = len(train)
            out = []
            rows = list(row_batches(n, self.batch_size))
            for r in progress(rows, total=len(rows), desc="representer: training items"):
                batch = train.latents.batch(r)
                preds, feats = self._run(batch)
                noise = fixed_noise(tuple(batch.latents.shape[1:]), len(self.timesteps), self.seed)
                per_t = []
                for k, t in enumerate(self.timesteps):
                    tt = torch.full((len(batch),), t)
                    target = v_target(batch.latents, noise[k][None].expand_as(batch.latents), tt)
                    alpha = representer_values(preds[k], target, batch.n_frames, self.lam, n)
                    per_t.append(item_vectors(alpha, feats[k]))
                out.append(torch.stack(per_t, dim=1))
            return torch.cat(out).double()

        return train.cached(self.cache_key, build)

    def prepare(self, train: TrainingSet) -> None:
        """Compute the training vectors now (else on the first query)."""
        self.train_vectors(train)

    def query_features(self, query: QueryItem) -> torch.Tensor:
        """f(ẑ) per timestep, mean over the query's real frames: `[K, D]`."""
        batch = query.batch()
        _, feats = self._run(batch)
        return torch.stack([real_frame_means(f, batch.n_frames)[0] for f in feats]).double()

    def score(self, query: QueryItem, train: TrainingSet) -> np.ndarray:
        """τ(ẑ, z_i) for every training item: `[N]`."""
        a = self.train_vectors(train)
        f = self.query_features(query)
        return torch.einsum("nkd,kd->n", a, f).div(len(self.timesteps)).numpy()
