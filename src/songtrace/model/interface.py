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

import dataclasses
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.func import functional_call

from songtrace.errors import SongtraceError

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


@dataclasses.dataclass
class Batch:
    """Training items (or queries) ready for the model: latents zero-padded to the model length."""

    ids: list[str]
    latents: torch.Tensor  # [B, C, L]
    n_frames: torch.Tensor  # [B] number of real (non-padded) latent frames
    text: torch.Tensor  # [B, S, D] token embeddings of the caption
    text_mask: torch.Tensor  # [B, S] bool
    seconds_start: torch.Tensor  # [B]
    seconds_total: torch.Tensor  # [B]

    def __len__(self) -> int:
        return len(self.ids)

    def frame_mask(self) -> torch.Tensor:
        """[B, L] bool, True on real frames, False on padding."""
        length = self.latents.shape[-1]
        return torch.arange(length)[None, :] < self.n_frames[:, None]

    def select(self, index: slice | list[int] | torch.Tensor) -> Batch:
        """A sub-batch (slice or index list)."""
        if isinstance(index, slice):
            ids = self.ids[index]
        else:
            idx = [int(i) for i in index]
            ids = [self.ids[i] for i in idx]
            index = torch.tensor(idx, dtype=torch.long)
        return Batch(
            ids=ids,
            latents=self.latents[index],
            n_frames=self.n_frames[index],
            text=self.text[index],
            text_mask=self.text_mask[index],
            seconds_start=self.seconds_start[index],
            seconds_total=self.seconds_total[index],
        )

    @staticmethod
    def concat(batches: list[Batch]) -> Batch:
        """Concatenate batches along the item axis."""
        return Batch(
            ids=[i for b in batches for i in b.ids],
            latents=torch.cat([b.latents for b in batches]),
            n_frames=torch.cat([b.n_frames for b in batches]),
            text=torch.cat([b.text for b in batches]),
            text_mask=torch.cat([b.text_mask for b in batches]),
            seconds_start=torch.cat([b.seconds_start for b in batches]),
            seconds_total=torch.cat([b.seconds_total for b in batches]),
        )


# The tensor fields of a `Batch` and the dtype each is stored in (float tensors may be saved in other dtypes).
BATCH_DTYPES: dict[str, torch.dtype] = {
    "latents": torch.float32,
    "n_frames": torch.long,
    "text": torch.float32,
    "text_mask": torch.bool,
    "seconds_start": torch.float32,
    "seconds_total": torch.float32,
}


def batch_tensors(tensors: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The `Batch` fields from a loaded tensor file, cast to their dtypes; an error naming `source` if any is missing."""
    missing = sorted(set(BATCH_DTYPES) - set(tensors))
    if missing:
        raise SongtraceError(f"{source}: missing tensors {missing}")
    return {k: tensors[k].to(dtype) for k, dtype in BATCH_DTYPES.items()}


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
