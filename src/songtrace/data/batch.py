"""The value types every stage passes around: a `Batch` of items and the `Conditioning` a model sees.

A `Batch` holds latents zero-padded to the model length, how many frames are real, and the frozen
conditioning of each item (caption token embeddings and mask, timing in seconds). Training,
Fisher, unlearning, scoring, generation and the baselines all take these types.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

from songtrace.errors import SongtraceError


class Conditioning(NamedTuple):
    """What a model is conditioned on, batched: caption token embeddings and mask, timing in seconds.

    One value travels from the latent cache to every model call (`ModelTask.predict_v(params, x_t, t, cond)`).
    It is a NamedTuple, so `torch.func` (vmap, functional_call) treats it as a tree of tensors.
    """

    text: torch.Tensor  # [B, S, D] token embeddings of the caption
    text_mask: torch.Tensor  # [B, S] bool
    seconds_start: torch.Tensor  # [B]
    seconds_total: torch.Tensor  # [B]

    def null(self) -> Conditioning:
        """The unconditional caption (zero embeddings, all-False mask), timing kept: the CFG branch and caption dropout."""
        return self._replace(text=torch.zeros_like(self.text), text_mask=torch.zeros_like(self.text_mask))

    def drop(self, drop: torch.Tensor) -> Conditioning:
        """Replace the captions of items where `drop [B]` is True by the null caption (caption dropout for CFG)."""
        keep = ~drop.bool()
        return self._replace(text=self.text * keep[:, None, None].to(self.text.dtype), text_mask=self.text_mask & keep[:, None])

    def repeat_interleave(self, n: int) -> Conditioning:
        """Each item repeated `n` times in place (item-major), to pair with `n` timesteps per item."""
        return Conditioning(*(x.repeat_interleave(n, dim=0) for x in self))

    def select(self, index: slice | torch.Tensor) -> Conditioning:
        """The conditioning of a subset of items."""
        return Conditioning(*(x[index] for x in self))

    def to(self, device: torch.device | str) -> Conditioning:
        """The same conditioning on another device (no copy when it is already there)."""
        return Conditioning(*(x.to(device) for x in self))

    @staticmethod
    def cat(conds: Sequence[Conditioning]) -> Conditioning:
        """Concatenate along the item axis."""
        return Conditioning(*(torch.cat(parts) for parts in zip(*conds, strict=True)))


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

    @classmethod
    def single(cls, item_id: str, latent: torch.Tensor, n_frames: int, text: torch.Tensor, text_mask: torch.Tensor,
               seconds_start: float = 0.0, seconds_total: float = 0.0) -> Batch:
        """A one-item batch (a query) from one item's parts: latent `[C, L]`, caption tokens `[S, D]` and mask `[S]`."""
        return cls(
            ids=[item_id],
            latents=latent[None].float(),
            n_frames=torch.tensor([int(n_frames)], dtype=torch.long),
            text=text[None].float(),
            text_mask=text_mask[None].bool(),
            seconds_start=torch.tensor([float(seconds_start)]),
            seconds_total=torch.tensor([float(seconds_total)]),
        )

    @property
    def cond(self) -> Conditioning:
        """The items' conditioning as one value."""
        return Conditioning(self.text, self.text_mask, self.seconds_start, self.seconds_total)

    def with_cond(self, cond: Conditioning) -> Batch:
        """The same items with another conditioning (e.g. captions dropped)."""
        return dataclasses.replace(self, text=cond.text, text_mask=cond.text_mask, seconds_start=cond.seconds_start,
                                   seconds_total=cond.seconds_total)

    def frame_mask(self) -> torch.Tensor:
        """[B, L] bool, True on real frames, False on padding."""
        length = self.latents.shape[-1]
        return torch.arange(length, device=self.n_frames.device)[None, :] < self.n_frames[:, None]

    def to(self, device: torch.device | str) -> Batch:
        """The same items on another device (one copy per batch, before the inner loops; none when already there)."""
        return Batch(ids=self.ids, **{k: getattr(self, k).to(device) for k in BATCH_DTYPES})

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


def check_items(
    tensors: Mapping[str, torch.Tensor],
    source: str,
    latent_shape: tuple[int, int] | None = None,
    text_dim: int | None = None,
) -> None:
    """Refuse items that would silently give a wrong result, before any work: the one check of latent caches and queries.

    Shapes `latents [B, C, L]` (L >= 1), `n_frames [B]` with 1 <= n_frames <= L, `text [B, S, D]` with
    `text_mask [B, S]`, timing `[B]`; no NaN or inf anywhere; `seconds_total` > 0 and `seconds_start` >= 0.
    `latent_shape` / `text_dim` are the (C, L) and token width the model or the data expect.
    """
    missing = sorted(set(BATCH_DTYPES) - set(tensors))
    if missing:
        raise SongtraceError(f"{source}: missing tensors {missing}")
    lat, n_frames, text, mask = tensors["latents"], tensors["n_frames"], tensors["text"], tensors["text_mask"]
    if lat.dim() != 3 or lat.shape[0] < 1 or lat.shape[1] < 1 or lat.shape[2] < 1:
        raise SongtraceError(f"{source}: latents must be [items, channels, frames] with at least one frame, got {tuple(lat.shape)}")
    b, c, length = (int(x) for x in lat.shape)
    if latent_shape is not None and (c, length) != tuple(latent_shape):
        raise SongtraceError(f"{source}: latents are {c} channels × {length} frames, the model's are {tuple(latent_shape)}")
    for name in ("n_frames", "seconds_start", "seconds_total"):
        if tuple(tensors[name].shape) != (b,):
            raise SongtraceError(f"{source}: {name} must hold one value per item ({b}), got shape {tuple(tensors[name].shape)}")
    if n_frames.is_floating_point() and not bool((n_frames == n_frames.round()).all()):
        raise SongtraceError(f"{source}: n_frames must be whole numbers")
    low, high = int(n_frames.min()), int(n_frames.max())
    if low < 1 or high > length:
        raise SongtraceError(f"{source}: n_frames must be between 1 and the {length} latent frames, got values from {low} to {high}")
    if text.dim() != 3 or text.shape[0] != b or tuple(mask.shape) != tuple(text.shape[:2]):
        raise SongtraceError(f"{source}: caption tokens must be text [items, tokens, width] with text_mask [items, tokens], "
                             f"got {tuple(text.shape)} and {tuple(mask.shape)}")
    if text_dim is not None and int(text.shape[2]) != int(text_dim):
        raise SongtraceError(f"{source}: caption tokens are {int(text.shape[2])} wide, the model's are {int(text_dim)}")
    for name in ("latents", "text", "seconds_start", "seconds_total"):
        t = tensors[name]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise SongtraceError(f"{source}: {name} has {int((~torch.isfinite(t)).sum())} NaN/inf entries")
    if not bool((tensors["seconds_total"] > 0).all()):
        raise SongtraceError(f"{source}: seconds_total must be > 0, got {float(tensors['seconds_total'].min()):g}")
    if not bool((tensors["seconds_start"] >= 0).all()):
        raise SongtraceError(f"{source}: seconds_start must be >= 0, got {float(tensors['seconds_start'].min()):g}")


def check_batch(batch: Batch, source: str, latent_shape: tuple[int, int] | None = None, text_dim: int | None = None) -> None:
    """`check_items` on a `Batch`."""
    check_items({k: getattr(batch, k) for k in BATCH_DTYPES}, source, latent_shape, text_dim)
