"""The cosine schedule of the v-objective: `x_t = α_t x0 + σ_t ε`, `α_t = cos(πt/2)`, `σ_t = sin(πt/2)`."""

from __future__ import annotations

import math

import torch


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(α_t, σ_t) for timesteps t in [0, 1]."""
    return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = α_t x0 + σ_t ε; `t` broadcasts over the trailing (channel, frame) dims."""
    a, s = alpha_sigma(t)
    a, s = a[..., None, None], s[..., None, None]
    return a * x0 + s * noise


def v_target(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v = α_t ε − σ_t x0."""
    a, s = alpha_sigma(t)
    a, s = a[..., None, None], s[..., None, None]
    return a * noise - s * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Recover (x0, ε) from a v-prediction: x0 = α x_t − σ v, ε = σ x_t + α v."""
    a, s = alpha_sigma(t)
    a, s = a[..., None, None], s[..., None, None]
    return a * x_t - s * v, s * x_t + a * v
