"""Is the unlearned model otherwise unharmed? FD of a few fixed generations, before and after unlearning.

Seed 002 (Table 1) reports FD_openl3 of the unlearned checkpoint against a reference set (110.5, the
same as the original). The cheap version here: a handful of generations with fixed prompts
(captions of training tracks, with their durations) and fixed seeds, from θ0 and from θ0 + δ,
decoded by the codec and embedded; we report FD(θ' generations, training tracks) next to the
original's FD(θ0 generations, training tracks), and FD(θ' generations, θ0 generations). With so
few samples FD is biased upward; only compare values computed with the same sample count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from songtrace.attribution.unlearn import apply_delta
from songtrace.data.latents import LatentSet
from songtrace.diffusion.sampler import sample
from songtrace.embedders.base import Embedder
from songtrace.metrics.fd import frechet_distance
from songtrace.model.generate import noise_for
from songtrace.model.task import ModelTask, as_task, eval_mode


def probe_rows(n_items: int, n_prompts: int) -> list[int]:
    """Rows of the training items whose captions and durations serve as prompts: evenly spread over the data."""
    n_prompts = max(1, min(n_prompts, n_items))
    return sorted({int(i * n_items / n_prompts) for i in range(n_prompts)})


class GenerationProbe:
    """Fixed prompts and seeds; `embed(model, delta)` generates, decodes and embeds them."""

    def __init__(
        self,
        codec,  # songtrace.codec.Codec
        embedder: Embedder,
        items: LatentSet,
        n_prompts: int,
        seed: int,
        sampler_steps: int,
        cfg_scale: float = 1.0,
    ) -> None:
        self.codec = codec
        self.embedder = embedder
        self.rows = probe_rows(len(items), n_prompts)
        batch = items.batch(self.rows)
        self.cond = batch.cond
        self.n_frames = [int(n) for n in batch.n_frames]
        shape = items.latent_shape
        self.noise = torch.cat([noise_for(seed * 1000 + i, shape) for i in range(len(self.rows))])
        self.sampler_steps = sampler_steps
        self.cfg_scale = cfg_scale

    @property
    def n_samples(self) -> int:
        """Generations per FD evaluation."""
        return len(self.rows)

    def embed(self, model: nn.Module | ModelTask, delta: Mapping[str, torch.Tensor] | None = None) -> np.ndarray | None:
        """Embeddings `[n, D]` of the probe's generations with θ0 (+ δ); None when the model generates non-finite audio."""
        from songtrace.codec import decode_to_wav

        task = as_task(model)
        params = apply_delta(task.params(), delta) if delta else None
        with eval_mode(task.module):
            latents = sample(task.predictor(params), self.noise.clone(), self.cond, steps=self.sampler_steps, cfg_scale=self.cfg_scale)
        if not torch.isfinite(latents).all():
            return None
        waves = [decode_to_wav(self.codec, latents[i], n_frames=n) for i, n in enumerate(self.n_frames)]
        if not all(np.isfinite(w).all() for w in waves):
            return None
        return self.embedder.embed_audio(waves, self.codec.sample_rate)


def fd_metrics(generated: np.ndarray | None, original: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """FD of the unlearned model's generations to the reference set and to the original model's generations (inf: broken model)."""
    if generated is None:
        return {"fd": float("inf"), "fd_vs_original": float("inf")}
    return {"fd": frechet_distance(generated, reference), "fd_vs_original": frechet_distance(generated, original)}


def mean_fd(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Average FD metrics over several unlearned targets."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
