"""The v-objective diffusion loss L_t(z, θ) with optional padding mask, and the noise plan.

`L(z, θ) = (1/T) Σ_t L_t(z, θ)`; each L_t is the mean squared error between the predicted and the
true v over latent channels and frames (only real frames when masked). A `NoisePlan` fixes the
timesteps and the noise per item (seeded by the item's id), so that Fisher, unlearning and
scoring see the same draws for θ0 and θ' (common random numbers).

Everything here is model-agnostic: the model enters as `predict(x_t, t, cond, frame_mask) -> v`
(a `ModelTask` binds its weights into one), so the same loss serves training, Fisher, unlearning,
scoring and every baseline. `flatten_samples` lays a batch × plan out as one row per
(item, timestep); `samples_loss` is the loss of such rows, batched or (under `vmap`) one at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from songtrace.data.batch import Batch, Conditioning
from songtrace.diffusion.schedule import add_noise, v_target
from songtrace.errors import SongtraceError

# predict(x_t [S, C, L], t [S], cond (S items), frame_mask [S, L] | None) -> v [S, C, L]
Predict = Callable[[torch.Tensor, torch.Tensor, Conditioning, torch.Tensor | None], torch.Tensor]

# Which frames a loss counts: False = every frame, True = the real (non-padded) frames,
# a `[B, L]` bool tensor = exactly those frames (e.g. one window of a query).
FrameMask = bool | torch.Tensor


@dataclasses.dataclass
class NoisePlan:
    """Timesteps `t [B, T]` in (0, 1) and noise `[B, T, C, L]` for each item of a batch."""

    t: torch.Tensor
    noise: torch.Tensor

    def select_timesteps(self, index: slice) -> NoisePlan:
        """The plan restricted to a range of its T timesteps (for chunked evaluation)."""
        return NoisePlan(self.t[:, index], self.noise[:, index])

    def select_items(self, index: slice | list[int] | torch.Tensor) -> NoisePlan:
        """The plan of a subset of the batch's items."""
        return NoisePlan(self.t[index], self.noise[index])


def item_seed(seed: int, item_id: str) -> int:
    """A 63-bit seed for one item, independent of its position in any batch."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{item_id}".encode()).digest()[:8], "little") >> 1


def make_plan(
    ids: Sequence[str],
    n_timesteps: int,
    latent_shape: tuple[int, int],
    seed: int,
    stratified: bool = True,
    device: torch.device | str | None = None,
) -> NoisePlan:
    """Draw T timesteps and T noise tensors per item, seeded per (seed, item id).

    Stratified timesteps (one uniform draw in each of T equal bins) lower the variance of the
    T-average without biasing it. The plan is drawn on `device` with that device's generator
    (no host-device copy; CUDA draws differ from CPU draws, which is why the device is part of
    every config that makes plans); on "meta" it has the shapes only (dry runs).
    """
    device = torch.device("cpu" if device is None else device)
    if device.type == "meta":
        b = len(ids)
        return NoisePlan(torch.empty(b, n_timesteps, device=device), torch.empty(b, n_timesteps, *latent_shape, device=device))
    ts, noises = [], []
    for item_id in ids:
        g = torch.Generator(device=device).manual_seed(item_seed(seed, item_id))
        u = torch.rand(n_timesteps, generator=g, dtype=torch.float64, device=device)
        if stratified:
            u = (torch.arange(n_timesteps, dtype=torch.float64, device=device) + u) / n_timesteps
        ts.append(u.clamp(1e-4, 1 - 1e-4).float())
        noises.append(torch.randn(n_timesteps, *latent_shape, generator=g, device=device))
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


class Samples(NamedTuple):
    """One row per (item, timestep): the model's input, its conditioning, the v target and the frame mask."""

    x_t: torch.Tensor  # [S, C, L]
    t: torch.Tensor  # [S]
    cond: Conditioning  # S items
    target: torch.Tensor  # [S, C, L]
    frame_mask: torch.Tensor | None  # [S, L] or None (unmasked loss)

    def select(self, index: slice) -> Samples:
        """A range of rows."""
        fm = None if self.frame_mask is None else self.frame_mask[index]
        return Samples(self.x_t[index], self.t[index], self.cond.select(index), self.target[index], fm)

    def unsqueeze(self) -> Samples:
        """One unbatched row (as `vmap` hands it over) made a batch of one."""
        fm = None if self.frame_mask is None else self.frame_mask[None]
        return Samples(self.x_t[None], self.t[None], Conditioning(*(x[None] for x in self.cond)), self.target[None], fm)


def loss_frames(batch: Batch, mask: FrameMask) -> torch.Tensor | None:
    """The frame mask `[B, L]` of a `FrameMask` setting: None (every frame), the real frames, or the given one."""
    if not isinstance(mask, torch.Tensor):
        return batch.frame_mask() if mask else None
    if mask.dtype != torch.bool or tuple(mask.shape) != (len(batch), batch.latents.shape[-1]):
        raise SongtraceError(f"a frame mask must be a bool tensor [{len(batch)}, {batch.latents.shape[-1]}], "
                             f"got {mask.dtype} {tuple(mask.shape)}")
    return mask


def flatten_samples(batch: Batch, plan: NoisePlan, mask: FrameMask) -> Samples:
    """Lay a batch and its plan out item-major: rows i*T .. i*T+T-1 are item i's T timesteps.

    x_t = α_t z + σ_t ε and v = α_t ε − σ_t z (cosine schedule); with `mask` (see `FrameMask`), each
    row carries its item's frame mask (other frames excluded from the loss and, as attention keys, from the model).
    """
    b, n_t = plan.t.shape
    x0 = batch.latents[:, None].expand(b, n_t, *batch.latents.shape[1:])
    shape = (b * n_t, *batch.latents.shape[1:])
    frames = loss_frames(batch, mask)
    fm = frames.repeat_interleave(n_t, dim=0) if frames is not None else None
    return Samples(
        x_t=add_noise(x0, plan.noise, plan.t).reshape(shape),
        t=plan.t.reshape(b * n_t),
        cond=batch.cond.repeat_interleave(n_t),
        target=v_target(x0, plan.noise, plan.t).reshape(shape),
        frame_mask=fm,
    )


def samples_loss(predict: Predict, samples: Samples) -> torch.Tensor:
    """L_t of every row `[S]`: the (masked) mean squared error of the predicted v."""
    v = predict(samples.x_t, samples.t, samples.cond, samples.frame_mask)
    return masked_mse(v, samples.target, samples.frame_mask)


def v_objective_loss(predict: Predict, batch: Batch, plan: NoisePlan, mask: FrameMask = False) -> torch.Tensor:
    """Per-item, per-timestep losses `L_t(z_i, θ)` as a `[B, T]` tensor.

    With `mask`, padded frames are excluded from the loss and (as attention keys) from the model,
    as stable-audio-tools does under `mask_padding`; padding content then cannot change the loss.
    A tensor `mask` restricts both to the frames it marks instead (a window of a query).
    """
    b, n_t = plan.t.shape
    return samples_loss(predict, flatten_samples(batch, plan, mask)).reshape(b, n_t)
