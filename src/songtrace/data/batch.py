"""The value types every stage passes around: a `Batch` of items and the `Conditioning` a model sees.

A `Batch` holds latents zero-padded to the model length, how many frames are real, and the frozen
conditioning of each item (caption token embeddings and mask, timing in seconds). Training,
Fisher, unlearning, scoring, generation and the baselines all take these types.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch

from songtrace.errors import SongtraceError


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
