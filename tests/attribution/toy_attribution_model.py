"""A 2-layer toy model whose diffusion-loss gradients are computed by hand, for the attribution tests.

`TwoLayer`: v = W2 W1 x_t applied per frame (t and the conditioning ignored). `hand_grads` gives
∂L_t/∂W1 and ∂L_t/∂W2 of the (optionally masked) v-objective in closed form, in float64.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TwoLayer(nn.Module):
    """v = W2 W1 x_t per frame."""

    def __init__(self, channels: int = 3, hidden: int = 5, frames: int = 6, seed: int = 0) -> None:
        super().__init__()
        self.latent_shape = (channels, frames)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.layer1 = nn.Linear(channels, hidden, bias=False)
            self.layer2 = nn.Linear(hidden, channels, bias=False)

    def forward(self, x_t, t, cond, frame_mask=None):
        return self.layer2(self.layer1(x_t.transpose(1, 2))).transpose(1, 2)

    def named_layer_groups(self) -> dict[str, list[str]]:
        return {"layer1": ["layer1.weight"], "layer2": ["layer2.weight"], "all": ["layer1.weight", "layer2.weight"]}


def hand_grads(w1: torch.Tensor, w2: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: float, n_real: int | None):
    """(∂L_t/∂W1, ∂L_t/∂W2) for one item and timestep, by hand (float64).

    x_t = α x0 + σ ε, v = α ε − σ x0, R = W2 W1 x_t − v (masked to the first n_real frames if given),
    L_t = Σ R² / (C · frames) ⇒ ∂L/∂W2 = 2/(C·frames) R (W1 x_t)ᵀ, ∂L/∂W1 = 2/(C·frames) W2ᵀ R x_tᵀ.
    """
    w1, w2, x0, noise = (a.double() for a in (w1, w2, x0, noise))
    t = torch.tensor(float(t), dtype=torch.float32).double()  # the plan stores t in float32
    a, s = math.cos(float(t) * math.pi / 2), math.sin(float(t) * math.pi / 2)
    x_t = a * x0 + s * noise
    v = a * noise - s * x0
    r = w2 @ w1 @ x_t - v
    c, frames = x0.shape
    if n_real is not None:
        r[:, n_real:] = 0
        frames = n_real
    scale = 2.0 / (c * frames)
    return scale * w2.T @ r @ x_t.T, scale * r @ (w1 @ x_t).T


class LinearV(nn.Module):
    """v = A x_t + t · B x_t + c per frame: linear in its weights, so the diffusion loss is an exact quadratic in θ."""

    def __init__(self, channels: int = 3, frames: int = 4) -> None:
        super().__init__()
        self.latent_shape = (channels, frames)
        self.a = nn.Parameter(torch.zeros(channels, channels))
        self.b = nn.Parameter(torch.zeros(channels, channels))
        self.c = nn.Parameter(torch.zeros(channels))

    def forward(self, x_t, t, cond, frame_mask=None):
        ax = torch.einsum("ij,bjl->bil", self.a, x_t)
        bx = torch.einsum("ij,bjl->bil", self.b, x_t)
        return ax + t[:, None, None] * bx + self.c[None, :, None]

    def named_layer_groups(self) -> dict[str, list[str]]:
        return {"all": ["a", "b", "c"]}
