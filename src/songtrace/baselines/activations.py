"""`activations` (LPIPS-like): similarity of the DiT's own layer outputs for the query and a training item.

LPIPS compares two signals through the same network: at each layer it unit-normalises the
channel vector at every position and compares positions. Seed 002 (section 3.3) computes a
similarity at each DiT layer's output and averages over layers, windowed, max over window pairs.

Here, for each fixed timestep t (shared noise ε, the same for query and items):
1. run the model on `x_t = α_t z + σ_t ε` and take every block's frame tokens `[L, D]`;
2. unit-normalise each token (LPIPS' channel normalisation);
3. mean-pool the normalised tokens over each window of real frames and unit-normalise that
   (pooling makes the comparison robust to small time shifts inside a window);
4. window similarity = the mean over layers and timesteps of these cosines; score = max over
   (query window, item window) pairs.

By default the caption is replaced by the null caption (`conditioning="null"`), so the network is
the same function for query and item and only the audio is compared, as in LPIPS; `"own"` runs
each with its own caption / prompt.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from songtrace.baselines.base import QueryItem, TrainingSet, method_cache_key, register_method
from songtrace.baselines.features import (
    check_white_box,
    fixed_noise,
    noisy_inputs,
    row_batches,
)
from songtrace.data.batch import Batch
from songtrace.data.latents import frame_rate
from songtrace.data.windows import WindowBank, window_starts
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, as_task, eval_mode
from songtrace.progress import progress


def window_features(states: list[torch.Tensor], n_frames: int, window: int, hop: int) -> np.ndarray:
    """One item's window vectors `[W, K * D]` from its per-(timestep, layer) tokens `K x [L, D]`.

    Each of the K blocks is a unit vector scaled by 1/sqrt(K), so a dot product of two window
    vectors is the mean over (timestep, layer) of the cosines.
    """
    k = len(states)
    n = max(1, int(n_frames))
    rows = []
    for s in window_starts(n, window, hop):
        parts = []
        for h in states:
            tok = nn.functional.normalize(h[s : min(n, s + window)], dim=-1)
            parts.append(nn.functional.normalize(tok.mean(0), dim=-1) / k**0.5)
        rows.append(torch.cat(parts))
    return torch.stack(rows).detach().double().numpy().astype(np.float32)


@register_method("activations")
@dataclasses.dataclass
class ActivationSimilarity:
    """LPIPS-like: per-layer cosine of unit-normalised, window-pooled DiT activations, averaged over layers."""

    model: nn.Module | ModelTask
    timesteps: tuple[float, ...] = (0.3, 0.6)
    seed: int = 0
    conditioning: str = "null"
    window_seconds: float = 4.0
    hop_seconds: float = 1.0
    key_mask: bool = False
    batch_size: int = 16
    name: str = "activations"

    def __post_init__(self) -> None:
        self.timesteps = check_white_box("activations", self.timesteps, self.conditioning)
        if self.window_seconds <= 0 or self.hop_seconds <= 0:
            raise SongtraceError("activations: window and hop must be > 0 seconds")
        self.model = as_task(self.model)

    @property
    def cache_key(self) -> str:
        """Key of this configuration's training features in `TrainingSet.cache`."""
        return method_cache_key(self)

    def _windows(self, train: TrainingSet) -> tuple[int, int]:
        rate = frame_rate(train.latents.seconds_total, train.latents.n_frames)
        return max(1, round(self.window_seconds * rate)), max(1, round(self.hop_seconds * rate))

    @torch.no_grad()
    def features(self, batch: Batch, window: int, hop: int) -> list[np.ndarray]:
        """Window vectors of every item of a batch."""
        noise = fixed_noise(tuple(batch.latents.shape[1:]), len(self.timesteps), self.seed)
        with eval_mode(self.model.module):
            per_t = [self.model.layer_outputs(*noisy_inputs(batch, noise[k], t, self.conditioning, self.key_mask))
                     for k, t in enumerate(self.timesteps)]
        out = []
        for i in range(len(batch)):
            states = [layer[i] for layers in per_t for layer in layers]
            out.append(window_features(states, int(batch.n_frames[i]), window, hop))
        return out

    def bank(self, train: TrainingSet) -> dict[str, Any]:
        """Window vectors of every training item (computed once per training set)."""

        def build() -> dict[str, Any]:
            window, hop = self._windows(train)
            per_item: list[np.ndarray] = []
            rows = list(row_batches(len(train), self.batch_size))
            for r in progress(rows, total=len(rows), desc="activations: training items"):
                per_item.extend(self.features(train.latents.batch(r), window, hop))
            return {"bank": WindowBank.from_items(per_item), "window": window, "hop": hop}

        return train.cached(self.cache_key, build)

    def prepare(self, train: TrainingSet) -> None:
        """Compute the training features now (else on the first query)."""
        self.bank(train)

    def score(self, query: QueryItem, train: TrainingSet) -> np.ndarray:
        """Max over window pairs of the layer-averaged activation cosine: `[N]`."""
        built = self.bank(train)
        q = self.features(query.batch(), built["window"], built["hop"])[0]
        return built["bank"].max_similarity(q)
