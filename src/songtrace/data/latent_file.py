"""A query latent on disk, `<stem>.latent.safetensors`: one latent with its conditioning, in the latent cache's tensor names.

`songtrace generate` writes it (`write_latent_file`); attributing it (`PATH.latent.safetensors`
queries) and any caller that wants the saved generation back as a `Batch` read it with the one
reader, `read_latent_file`. Files from elsewhere may carry only the latent (as `latents [1, C, F]`
or `latent [C, F]`); what they lack is None and the caller supplies it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import safetensors
import torch

from songtrace.artifacts import load_safetensors, save_safetensors
from songtrace.data.batch import Batch, check_batch
from songtrace.errors import SongtraceError

LATENT_SUFFIX = ".latent.safetensors"


@dataclasses.dataclass
class LatentFile:
    """What a `.latent.safetensors` holds: the latent as stored, how many frames are real, and the conditioning it has."""

    id: str  # the file name without `.latent.safetensors`
    latent: torch.Tensor  # [C, F] float32, as stored (generations are saved at the model length, zero beyond n_frames)
    n_frames: int  # real frames (<= F)
    text: torch.Tensor | None  # [S, D] caption tokens, None when the file has none
    text_mask: torch.Tensor | None  # [S] bool
    seconds_start: float
    seconds_total: float | None  # None when the file does not say
    metadata: dict[str, str]  # e.g. prompt, seed, model_hash of a generation

    def batch(self, item_id: str | None = None) -> Batch:
        """The latent as a one-item `Batch`, as stored; a file without caption tokens or duration cannot be one."""
        if self.text is None or self.text_mask is None or self.seconds_total is None:
            raise SongtraceError(f"{self.id}{LATENT_SUFFIX}: not a generated-track latent (no caption tokens or seconds_total); "
                                 "attribute it as a query, which fills them in")
        batch = Batch.single(item_id or self.id, self.latent, self.n_frames, self.text, self.text_mask, self.seconds_start,
                             self.seconds_total)
        check_batch(batch, f"{self.id}{LATENT_SUFFIX}")
        return batch


def _first(t: torch.Tensor, key: str = "value", path: Path | None = None) -> float:
    """The one number a timing or length tensor holds, refusing an empty or longer one (an empty n_frames is not 'no frames')."""
    if t.numel() != 1:
        raise SongtraceError(f"{path}: {key} must hold one value, got shape {tuple(t.shape)}")
    return float(t.reshape(-1)[0])


def read_latent_file(path: str | Path) -> LatentFile:
    """Read a `.latent.safetensors`; errors name the file when it is missing, holds no latent, or has mismatched shapes."""
    path = Path(path)
    if not path.exists():
        raise SongtraceError(f"{path}: latent file not found")
    t = load_safetensors(path)
    key = "latents" if "latents" in t else "latent"
    if key not in t:
        raise SongtraceError(f"{path}: no 'latents' tensor (keys: {sorted(t)}); is it a latent written by `songtrace generate`?")
    latent = t[key]
    if latent.dim() == 3 and latent.shape[0] == 1:
        latent = latent[0]
    if latent.dim() != 2:
        raise SongtraceError(f"{path}: expected a latent [C, F] (or [1, C, F]), got shape {tuple(latent.shape)}")
    frames = int(latent.shape[1])
    if frames < 1:
        raise SongtraceError(f"{path}: the latent has no frames")
    if "n_frames" in t:
        n_frames = _first(t["n_frames"], "n_frames", path)
        if not math.isfinite(n_frames) or n_frames != int(n_frames) or n_frames < 1:
            raise SongtraceError(f"{path}: n_frames must be a whole number >= 1, got {n_frames:g}")
        if n_frames > frames:
            raise SongtraceError(f"{path}: n_frames is {n_frames:g}, more than the {frames} frames the latent stores")
        frames = int(n_frames)
    text = mask = None
    if "text" in t and "text_mask" in t:
        text, mask = t["text"], t["text_mask"]
        if text.dim() == 3:
            text, mask = text[0], mask[0]
        if text.dim() != 2 or mask.shape != text.shape[:1]:
            raise SongtraceError(f"{path}: caption tokens must be [S, D] with a mask [S], got {tuple(text.shape)} and {tuple(mask.shape)}")
        text, mask = text.float(), mask.bool()
    name = path.name
    with safetensors.safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
    return LatentFile(
        id=name[: -len(LATENT_SUFFIX)] if name.endswith(LATENT_SUFFIX) else path.stem,
        latent=latent.float(),
        n_frames=frames,
        text=text,
        text_mask=mask,
        seconds_start=_first(t["seconds_start"], "seconds_start", path) if "seconds_start" in t else 0.0,
        seconds_total=_first(t["seconds_total"], "seconds_total", path) if "seconds_total" in t else None,
        metadata=metadata,
    )


def write_latent_file(path: str | Path, batch: Batch, metadata: dict[str, str] | None = None) -> Path:
    """Write item 0 of `batch` as a `.latent.safetensors` (atomically), readable by `read_latent_file`."""
    path = Path(path)
    if not path.name.endswith(LATENT_SUFFIX):
        raise SongtraceError(f"{path}: a query latent's name must end in {LATENT_SUFFIX}")
    one = batch.select(slice(0, 1))
    save_safetensors(
        path,
        {
            "latents": one.latents,
            "n_frames": one.n_frames.to(torch.int64),
            "text": one.text,
            "text_mask": one.text_mask.to(torch.uint8),
            "seconds_start": one.seconds_start.float(),
            "seconds_total": one.seconds_total.float(),
        },
        metadata=dict(metadata or {}),
    )
    return path
