"""Conditioning of the DiT, as in Stable Audio: timestep features, timing (seconds) embedders.

Design (one of the options stable-audio-tools offers, the one Stable Audio Open uses):

- The caption's frozen MiniLM token embeddings `[B, S, 384]` and two timing tokens (learned
  Fourier features of `seconds_start` and `seconds_total`, normalised by `max_seconds`) form the
  cross-attention context `[B, S + 2, cond_dim]`; the caption's mask is extended with two True
  entries, so the context always has at least the two timing keys.
- The two timing embeddings, concatenated, go through an MLP into a *global* vector; the timestep
  embedding is added to it, and the sum is *prepended* to the frame tokens as one extra token
  (`global_cond_type="prepend"`). There is no adaLN.
- The unconditional path for classifier-free guidance drops the caption only: its mask becomes
  all False (and its embeddings zero), so cross-attention sees the timing tokens alone. Caption
  dropout in training (`Conditioning.drop`) does exactly this, so the unconditional path is trained.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FourierFeatures(nn.Module):
    """Random (learned) Fourier features of a scalar, `[B] -> [B, out_features]` (stable-audio's timestep features)."""

    def __init__(self, out_features: int, std: float = 1.0) -> None:
        super().__init__()
        if out_features % 2:
            raise ValueError("out_features must be even")
        self.weight = nn.Parameter(torch.randn(out_features // 2, 1) * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * x[:, None] * self.weight[:, 0][None, :]
        return torch.cat([f.cos(), f.sin()], dim=-1)


class LearnedPositionalEmbedding(nn.Module):
    """`[B] -> [B, dim + 1]`: the value itself and sin/cos of it at learned frequencies."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError("dim must be even")
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        freqs = x[:, None] * self.weights[None, :] * 2 * math.pi
        return torch.cat([x[:, None], freqs.sin(), freqs.cos()], dim=-1)


class NumberEmbedder(nn.Module):
    """Embed a number of seconds, clamped to [0, max_value] and normalised to [0, 1] (stable-audio's NumberConditioner)."""

    def __init__(self, features: int, max_value: float, fourier_dim: int = 64) -> None:
        super().__init__()
        self.max_value = float(max_value)
        self.embedding = nn.Sequential(LearnedPositionalEmbedding(fourier_dim), nn.Linear(fourier_dim + 1, features))

    def forward(self, seconds: torch.Tensor) -> torch.Tensor:
        x = seconds.to(self.embedding[1].weight.dtype).clamp(0.0, self.max_value) / self.max_value
        return self.embedding(x)
