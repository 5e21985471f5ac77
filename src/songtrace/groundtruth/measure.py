"""Measuring a query's diffusion loss under a retrained model, and how much of it is measurement noise.

Every query gets one plan of T timesteps and noise (seeded by the query id), the same under every
retrained model (common random numbers), so model-to-model differences are not plan noise. The
per-timestep losses `[Q, T]` are kept; the even and odd timesteps (each stratified over (0, 1))
are two independent half-measurements, which is how the noise left in the T-average is measured.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from songtrace.data.batch import Batch
from songtrace.diffusion.loss import NoisePlan, make_plan
from songtrace.model.task import ModelTask, as_task, eval_mode


def measure_plan(query_ids: list[str], n_timesteps: int, latent_shape: tuple[int, int], seed: int) -> NoisePlan:
    """The fixed timesteps and noise of each query, identical under every retrained model."""
    return make_plan(query_ids, n_timesteps, latent_shape, seed)


@torch.no_grad()
def query_losses(model: nn.Module | ModelTask, queries: Batch, plan: NoisePlan, mask: bool, chunk: int = 64) -> torch.Tensor:
    """L_t(ẑ_q, θ) for every query and planned timestep: `[Q, T]` float64, `chunk` timesteps per forward pass."""
    task = as_task(model)
    n_t = plan.t.shape[1]
    with eval_mode(task.module):
        parts = [task.loss(None, queries, plan.select_timesteps(slice(s, min(n_t, s + chunk))), mask=mask) for s in range(0, n_t, chunk)]
    return torch.cat(parts, dim=1).to(torch.float64)


def split_half_noise(losses: np.ndarray) -> dict[str, np.ndarray]:
    """Per query, from per-timestep losses `[M, Q, T]` of M models: the signal and the noise of the T-average across models.

    noise_sd: the standard deviation of the T-average's measurement error, sqrt(var_m(L_even − L_odd) / 4);
    signal_sd: the spread across models left after removing it; ratio = noise_sd / signal_sd;
    reliability: the Spearman-Brown split-half correlation of the models' T-averages.
    """
    x = np.asarray(losses, dtype=np.float64)
    even, odd = x[..., 0::2].mean(-1), x[..., 1::2].mean(-1)
    full = x.mean(-1)
    noise_var = np.var(even - odd, axis=0, ddof=1) / 4.0
    signal_var = np.maximum(np.var(full, axis=0, ddof=1) - noise_var, 0.0)
    r = np.array([np.corrcoef(even[:, q], odd[:, q])[0, 1] for q in range(x.shape[1])])
    return {
        "noise_sd": np.sqrt(noise_var),
        "signal_sd": np.sqrt(signal_var),
        "ratio": np.sqrt(noise_var) / np.maximum(np.sqrt(signal_var), 1e-300),
        "reliability": 2 * r / (1 + r),
    }
