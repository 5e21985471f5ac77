"""The small interface through which every stage reaches a model.

A model is an `nn.Module` whose forward predicts v from a noisy latent and its conditioning:

    model(x_t [B, C, L], t [B], text [B, S, D], text_mask [B, S], seconds_start [B],
          seconds_total [B], frame_mask [B, L] | None) -> v [B, C, L]

plus `named_layer_groups()` (group name -> parameter names that attribution can target) and a
`latent_shape` (C, L). The demo DiT, the diffusers adapter and the stable-audio-tools adapter all
satisfy it, so Fisher, unlearning and scoring never see model internals. `frame_mask` (True = real
frame) excludes padded frames as attention keys; it is passed only when a padding mask is in use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.func import functional_call

GROUPS = ("to_kv", "cross_attn", "self_attn", "all")


@runtime_checkable
class DiffusionModel(Protocol):
    """What songtrace needs from a text-to-music latent diffusion model."""

    latent_shape: tuple[int, int]

    def __call__(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        seconds_start: torch.Tensor,
        seconds_total: torch.Tensor,
        frame_mask: torch.Tensor | None = None,
    ) -> torch.Tensor: ...

    def named_layer_groups(self) -> dict[str, list[str]]: ...


def model_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the model's named parameters (θ as a dict, for `torch.func`)."""
    return {k: v.detach() for k, v in model.named_parameters()}


def predict_v(
    model: nn.Module,
    params: Mapping[str, torch.Tensor] | None,
    x_t: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    seconds_start: torch.Tensor,
    seconds_total: torch.Tensor,
    frame_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the model with parameters `params` (any subset; the rest are the module's own)."""
    args = (x_t, t, text, text_mask, seconds_start, seconds_total, frame_mask)
    if params is None:
        return model(*args)
    return functional_call(model, dict(params), args, strict=False)
