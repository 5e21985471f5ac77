"""The latent cache: every track of a world as a codec latent, plus its caption's token embeddings.

Written once by `songtrace encode` and read by training, Fisher, unlearning and scoring. Latents are
the codec's encoding of the track's audio zero-padded to the model length (as Stable Audio pads
audio before its VAE), so padded frames hold the latent of silence, not literal zeros; `n_frames`
says how many frames are real audio (the rest is padding, which the masks M_U / M_L exclude).

On disk (`<home>/latents/<name>/`): `latents.safetensors` (latents, n_frames, text, text_mask,
seconds_start, seconds_total), `items.parquet` (id, artist, split, row), `config.json`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import torch

from songtrace.artifacts import (
    CONFIG_FILE,
    check_intact,
    hash_json,
    hash_tensors,
    load_safetensors,
    read_parquet,
    save_safetensors,
    write_parquet,
)
from songtrace.data.batch import Batch, batch_tensors, check_items
from songtrace.errors import SongtraceError

TENSOR_FILE = "latents.safetensors"
ITEMS_FILE = "items.parquet"
# The text encoder of the demo path (songtrace.codec.text); a cache made by another encoder records its own
# identity (as `text_encoder` metadata of latents.safetensors), and a model made for another refuses this one.
DEMO_TEXT_ENCODER = "minilm-l6-v2"


def frame_rate(seconds_total: torch.Tensor, n_frames: torch.Tensor) -> float:
    """Latent frames per second, the median of n_frames / seconds over items with a known duration."""
    ok = seconds_total > 0
    if not bool(ok.any()):
        return 1.0
    return float(torch.median(n_frames[ok].double() / seconds_total[ok].double()))


@dataclasses.dataclass
class LatentSet:
    """All items of a world in model-ready form, indexable into `Batch`es."""

    ids: list[str]
    artists: list[str]
    splits: list[str]
    latents: torch.Tensor  # [N, C, L] float32
    n_frames: torch.Tensor  # [N] int64
    text: torch.Tensor  # [N, S, D] float32
    text_mask: torch.Tensor  # [N, S] bool
    seconds_start: torch.Tensor  # [N] float32
    seconds_total: torch.Tensor  # [N] float32
    text_encoder: str = DEMO_TEXT_ENCODER  # which encoder made `text` (see DEMO_TEXT_ENCODER)

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("latents", "n_frames", "text", "text_mask", "seconds_start", "seconds_total"):
            if getattr(self, name).shape[0] != n:
                raise SongtraceError(f"latent cache: {name} has {getattr(self, name).shape[0]} rows, expected {n}")
        if len(set(self.ids)) != n:
            raise SongtraceError("latent cache: duplicate item ids")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(channels, frames) of every latent."""
        return int(self.latents.shape[1]), int(self.latents.shape[2])

    def index_of(self, item_id: str) -> int:
        """Row of an item id, with a clear error for unknown ids."""
        try:
            return self.ids.index(item_id)
        except ValueError:
            raise SongtraceError(f"no item {item_id!r} in the latent cache") from None

    def batch(self, rows: Sequence[int] | slice) -> Batch:
        """The items at `rows` as a `Batch`."""
        if isinstance(rows, slice):
            rows = range(len(self.ids))[rows]
        idx = torch.tensor(list(rows), dtype=torch.long)
        return Batch(ids=[self.ids[int(i)] for i in idx], **{k: v[idx] for k, v in self.tensors().items()})

    def subset(self, split: str | None) -> LatentSet:
        """Only the items of one split ("train", "valid"); None keeps all."""
        if split is None:
            return self
        rows = [i for i, s in enumerate(self.splits) if s == split]
        if not rows:
            raise SongtraceError(f"latent cache has no items in split {split!r}")
        return self.take(rows)

    def take(self, rows: Sequence[int]) -> LatentSet:
        """The items at `rows`, in that order, as a LatentSet."""
        rows = [int(i) for i in rows]
        idx = torch.tensor(rows, dtype=torch.long)
        return LatentSet(
            ids=[self.ids[i] for i in rows],
            artists=[self.artists[i] for i in rows],
            splits=[self.splits[i] for i in rows],
            **{k: v[idx] for k, v in self.tensors().items()},
            text_encoder=self.text_encoder,
        )

    def without(self, ids: Sequence[str]) -> LatentSet:
        """The items whose ids are not in `ids` (data order kept); every id must be present."""
        drop = set(ids)
        unknown = sorted(drop - set(self.ids))
        if unknown:
            raise SongtraceError(f"{len(unknown)} ids are not in this set of items (e.g. {unknown[:3]})")
        return self.take([i for i, item in enumerate(self.ids) if item not in drop])

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor fields by name."""
        return {
            "latents": self.latents,
            "n_frames": self.n_frames,
            "text": self.text,
            "text_mask": self.text_mask,
            "seconds_start": self.seconds_start,
            "seconds_total": self.seconds_total,
        }

    def content_hash(self) -> str:
        """Hash of the tensors and the item table: identifies the data a result came from."""
        tensors = dict(self.tensors())
        tensors["text_mask"] = tensors["text_mask"].to(torch.uint8)
        return hash_json({"tensors": hash_tensors(tensors), "ids": self.ids, "splits": self.splits})

    def save(self, out_dir: str | Path) -> None:
        """Write the tensors and the item table (atomically)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tensors = self.tensors()
        tensors["text_mask"] = tensors["text_mask"].to(torch.uint8)
        save_safetensors(out_dir / TENSOR_FILE, tensors, metadata={"text_encoder": self.text_encoder})
        table = pa.table({"id": self.ids, "artist": self.artists, "split": self.splits, "row": list(range(len(self.ids)))})
        write_parquet(out_dir / ITEMS_FILE, table)

    @classmethod
    def load(cls, in_dir: str | Path) -> LatentSet:
        """Read a latent cache written by `save`, with errors naming the file."""
        in_dir = Path(in_dir)
        if not (in_dir / ITEMS_FILE).exists():
            raise SongtraceError(f"{in_dir}: no latent cache here (missing {ITEMS_FILE}); run `songtrace encode` first")
        if (in_dir / CONFIG_FILE).exists():
            check_intact(in_dir, remedy="re-encode it with `songtrace encode --overwrite`")
        t = load_safetensors(in_dir / TENSOR_FILE)
        items = read_parquet(in_dir / ITEMS_FILE)
        for col in ("id", "artist", "split"):
            if col not in items:
                raise SongtraceError(f"{in_dir / ITEMS_FILE}: no {col!r} column; re-encode with `songtrace encode --overwrite`")
        tensors = batch_tensors(t, str(in_dir / TENSOR_FILE))
        if len(items) != tensors["latents"].shape[0]:
            raise SongtraceError(f"{in_dir}: {ITEMS_FILE} lists {len(items)} items, {TENSOR_FILE} holds {tensors['latents'].shape[0]}; "
                                 "re-encode with `songtrace encode --overwrite`")
        check_items(tensors, str(in_dir / TENSOR_FILE))
        return cls(
            ids=[str(i) for i in items["id"]],
            artists=[str(a) for a in items["artist"]],
            splits=[str(s) for s in items["split"]],
            **tensors,
            text_encoder=tensor_metadata(in_dir / TENSOR_FILE).get("text_encoder", DEMO_TEXT_ENCODER),
        )


def tensor_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
