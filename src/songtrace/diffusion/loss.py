"""The v-objective diffusion loss L_t(z, θ) with optional padding mask, and the noise plan.

`L(z, θ) = (1/T) Σ_t L_t(z, θ)`; each L_t is the mean squared error between the predicted and the
true v over latent channels and frames (only real frames when masked). A `NoisePlan` fixes the
timesteps and the noise per item (seeded by the item's id), so that Fisher, unlearning and
scoring see the same draws for θ0 and θ' (common random numbers).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from songtrace.data.batch import Batch
from songtrace.diffusion.schedule import add_noise, v_target
from songtrace.model.interface import predict_v


@dataclasses.dataclass
class NoisePlan:
    """Timesteps `t [B, T]` in (0, 1) and noise `[B, T, C, L]` for each item of a batch."""

    t: torch.Tensor
    noise: torch.Tensor

    def select_timesteps(self, index: slice) -> NoisePlan:
        """The plan restricted to a range of its T timesteps (for chunked evaluation)."""
        return NoisePlan(self.t[:, index], self.noise[:, index])


def item_seed(seed: int, item_id: str) -> int:
    """A 63-bit seed for one item, independent of its position in any batch."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:8], "little") >> 1


def make_plan(
    ids: Sequence[str],
    n_timesteps: int,
    latent_shape: tuple[int, int],
    seed: int,
    stratified: bool = True,
) -> NoisePlan:
    """Draw T timesteps and T noise tensors per item, seeded per (seed, item id).

    Stratified timesteps (one uniform draw in each of T equal bins) lower the variance of the
    T-average without biasing it.
    """
    ts, noises = [], []
    for item_id in ids:
        g = torch.Generator().manual_seed(item_seed(seed, item_id))
        u = torch.rand(n_timesteps, generator=g, dtype=torch.float64)
        if stratified:
            u = (torch.arange(n_timesteps, dtype=torch.float64) + u) / n_timesteps
        ts.append(u.clamp(1e-4, 1 - 1e-4).float())
        noises.append(torch.randn(n_timesteps, *latent_shape, generator=g))
    return NoisePlan(torch.stack(ts), torch.stack(noises))


def masked_mse(pred: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over (channels, frames) per leading index; over real frames only if masked.

    pred/target: [..., C, L]; frame_mask: broadcastable to [..., L] (True = real frame).
    """
    sq = (pred - target) ** 2
    if frame_mask is None:
        return sq.mean(dim=(-2, -1))
    m = frame_mask.to(sq.dtype)[..., None, :]
    return (sq * m).sum(dim=(-2, -1)) / (m.sum(dim=(-2, -1)) * sq.shape[-2]).clamp_min(1.0)


def diffusion_loss(
    model: nn.Module,
    params: Mapping[str, torch.Tensor] | None,
    batch: Batch,
    plan: NoisePlan,
    mask: bool = False,
) -> torch.Tensor:
    """Per-item, per-timestep losses `L_t(z_i, θ)` as a `[B, T]` tensor.

    With `mask`, padded frames are excluded from the loss and (as attention keys) from the model,
    as stable-audio-tools does under `mask_padding`; padding content then cannot change the loss.
    """
    b, n_t = plan.t.shape
    x0 = batch.latents[:, None].expand(b, n_t, *batch.latents.shape[1:])
    x_t = add_noise(x0, plan.noise, plan.t)
    target = v_target(x0, plan.noise, plan.t)
    fm = batch.frame_mask() if mask else None

    def rep(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(n_t, dim=0)

    v = predict_v(
        model,
        params,
        x_t.reshape(b * n_t, *x_t.shape[2:]),
        plan.t.reshape(b * n_t),
        rep(batch.text),
        rep(batch.text_mask),
        rep(batch.seconds_start),
        rep(batch.seconds_total),
        rep(fm) if fm is not None else None,
    ).reshape(b, n_t, *x_t.shape[2:])
    return masked_mse(v, target, fm[:, None] if fm is not None else None)
