"""Reading a diffusion model's internal features at a fixed evaluation plan (shared by the white-box baselines).

The LPIPS-like, representer and gradient baselines all run the model on `x_t = α_t z + σ_t ε` for
a few fixed timesteps and one fixed noise tensor per timestep, the same for the query and every
training item (common random numbers), and read layer outputs or the last layer's input through the model's task (`ModelTask.layer_outputs`,
`ModelTask.last_layer_features`), so they work on every model family songtrace can load.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from songtrace.data.batch import Batch, Conditioning
from songtrace.diffusion.schedule import add_noise
from songtrace.errors import SongtraceError

CONDITIONINGS = ("null", "own")


def check_white_box(method: str, timesteps: tuple[float, ...], conditioning: str) -> tuple[float, ...]:
    """The evaluation timesteps as floats, refusing an empty set, one outside (0, 1) or an unknown conditioning."""
    if not timesteps or not all(0.0 < t < 1.0 for t in timesteps):
        raise SongtraceError(f"{method}: timesteps must lie in (0, 1), got {timesteps}")
    if conditioning not in CONDITIONINGS:
        raise SongtraceError(f"{method}: unknown conditioning {conditioning!r}; valid: {', '.join(CONDITIONINGS)}")
    return tuple(float(t) for t in timesteps)


def fixed_noise(latent_shape: tuple[int, int], n: int, seed: int) -> torch.Tensor:
    """`n` noise tensors `[n, C, L]` drawn from a private seeded generator (one per timestep)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, *latent_shape, generator=g)


def noisy_inputs(batch: Batch, noise: torch.Tensor, t: float, conditioning: str, key_mask: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, Conditioning, torch.Tensor | None]:
    """Model inputs at timestep `t` with the shared noise `[C, L]`: (x_t, t, cond, frame_mask), as `ModelTask` takes them.

    `key_mask` passes the padding mask to the model (padded frames excluded as attention keys); off
    by default, as the demo model is trained without it.
    """
    if conditioning not in CONDITIONINGS:
        raise SongtraceError(f"unknown conditioning {conditioning!r}; valid: {', '.join(CONDITIONINGS)}")
    b = len(batch)
    tt = torch.full((b,), float(t))
    x_t = add_noise(batch.latents, noise[None].expand_as(batch.latents), tt)
    cond = batch.cond if conditioning == "own" else batch.cond.null()
    return x_t, tt, cond, batch.frame_mask() if key_mask else None


def real_frame_means(tokens: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
    """Mean over each item's real frames of `[B, L, D]` tokens: `[B, D]`."""
    length = tokens.shape[1]
    mask = (torch.arange(length)[None, :] < n_frames[:, None]).to(tokens.dtype)
    return (tokens * mask[..., None]).sum(1) / mask.sum(1).clamp_min(1.0)[:, None]


def row_batches(n: int, size: int) -> Iterator[list[int]]:
    """Consecutive row lists of at most `size`."""
    for s in range(0, n, size):
        yield list(range(s, min(n, s + size)))


def as_numpy(x: torch.Tensor) -> np.ndarray:
    """Detached float64 numpy copy."""
    return x.detach().double().cpu().numpy()
