"""Reading a diffusion model's internal features at a fixed evaluation plan (shared by the white-box baselines).

The LPIPS-like, representer and gradient baselines all run the model on `x_t = α_t z + σ_t ε` for
a few fixed timesteps and one fixed noise tensor per timestep, the same for the query and every
training item (common random numbers), and read layer outputs or the last layer's input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from songtrace.data.batch import Batch
from songtrace.diffusion.schedule import add_noise
from songtrace.errors import SongtraceError
from songtrace.model.conditioning import null_text

LAYER_PATTERN = re.compile(r"(^|\.)layers\.\d+$")
CONDITIONINGS = ("null", "own")


def fixed_noise(latent_shape: tuple[int, int], n: int, seed: int) -> torch.Tensor:
    """`n` noise tensors `[n, C, L]` drawn from a private seeded generator (one per timestep)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, *latent_shape, generator=g)


def frame_rate(seconds_total: torch.Tensor, n_frames: torch.Tensor) -> float:
    """Latent frames per second, the median of n_frames / seconds over items with a known duration."""
    ok = seconds_total > 0
    if not bool(ok.any()):
        return 1.0
    return float(torch.median(n_frames[ok].double() / seconds_total[ok].double()))


def noisy_inputs(batch: Batch, noise: torch.Tensor, t: float, conditioning: str, key_mask: bool = False) -> tuple[Any, ...]:
    """Model inputs at timestep `t` with the shared noise `[C, L]`: (x_t, t, text, text_mask, start, total, frame_mask).

    `key_mask` passes the padding mask to the model (padded frames excluded as attention keys); off
    by default, as the demo model is trained without it.
    """
    if conditioning not in CONDITIONINGS:
        raise SongtraceError(f"unknown conditioning {conditioning!r}; valid: {', '.join(CONDITIONINGS)}")
    b = len(batch)
    tt = torch.full((b,), float(t))
    x_t = add_noise(batch.latents, noise[None].expand_as(batch.latents), tt)
    text, text_mask = (batch.text, batch.text_mask) if conditioning == "own" else null_text(batch.text, batch.text_mask)
    return x_t, tt, text, text_mask, batch.seconds_start, batch.seconds_total, batch.frame_mask() if key_mask else None


def _first_tensor(out: object) -> torch.Tensor:
    return out[0] if isinstance(out, tuple | list) else out  # type: ignore[return-value]


def layer_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The transformer blocks (`...layers.{i}`), in order."""
    found = [(n, m) for n, m in model.named_modules() if LAYER_PATTERN.search(n)]
    if not found:
        raise SongtraceError(f"{type(model).__name__}: no transformer blocks named like 'layers.<i>' to read activations from")
    return found


def hidden_states(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """Frame tokens `[B, L, D]` after every transformer block.

    Uses the model's own `hidden_states` when it has one (the demo DiT); otherwise forward hooks on
    `layers.{i}`, keeping the last L tokens (dropping prepended conditioning tokens).
    """
    if hasattr(model, "hidden_states"):
        return list(model.hidden_states(*inputs))
    length = inputs[0].shape[-1]
    captured: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: captured.append(_first_tensor(out))) for _, m in layer_modules(model)]
    try:
        model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return [h[:, -length:] if h.shape[1] >= length else h for h in captured]


def last_layer(model: nn.Module, name: str | None) -> nn.Linear:
    """The final projection (features -> v per frame): `name`, else `project_out`, else the last Linear to C channels."""
    modules = dict(model.named_modules())
    if name is not None:
        if name not in modules:
            raise SongtraceError(f"{type(model).__name__} has no module {name!r}")
        mod = modules[name]
    elif "project_out" in modules:
        mod = modules["project_out"]
    else:
        channels = int(model.latent_shape[0])
        linears = [m for m in modules.values() if isinstance(m, nn.Linear) and m.out_features == channels]
        if not linears:
            raise SongtraceError(f"{type(model).__name__}: cannot find the last layer; pass its module name")
        mod = linears[-1]
    if not isinstance(mod, nn.Linear):
        raise SongtraceError(f"the last layer must be a Linear (per-frame projection), got {type(mod).__name__}")
    return mod


@contextmanager
def capture_input(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the inputs of `module` during the block (the hook is removed afterwards)."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    try:
        yield seen
    finally:
        handle.remove()


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
