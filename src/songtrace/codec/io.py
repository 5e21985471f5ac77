"""Reading worlds' audio for the codec, resampling, and loading a trained codec from its directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from songtrace.artifacts import CONFIG_FILE, artifact_hash, load_safetensors, load_stage_config
from songtrace.codec.config import CodecConfig
from songtrace.codec.model import Codec
from songtrace.data.audio import resample, to_mono
from songtrace.errors import SongtraceError

MODEL_FILE = "model.safetensors"


def as_world(world: Any) -> Any:
    """A loaded world: `world` itself, or `songtrace.world.load_world(world)` for a path."""
    if isinstance(world, (str, Path)):
        from songtrace.world import load_world

        return load_world(world)
    return world


def split_ids(world: Any, split: str) -> list[str]:
    """Ids of a world's tracks in one split, in manifest order."""
    manifest = world.manifest
    return [str(i) for i in manifest.loc[manifest["split"] == split, "id"]]


def track_tensor(world: Any, track_id: str, sample_rate: int) -> torch.Tensor:
    """One world track as a mono float32 tensor at `sample_rate`."""
    wav = to_mono(world.audio(track_id))
    return torch.from_numpy(np.ascontiguousarray(resample(wav, int(world.sample_rate), sample_rate)))


def load_codec(codec_dir: str | Path) -> Codec:
    """A trained codec (eval mode) from a `songtrace codec train` directory, with clear errors."""
    codec_dir = Path(codec_dir)
    if not (codec_dir / CONFIG_FILE).exists():
        raise SongtraceError(f"{codec_dir}: no codec here (missing {CONFIG_FILE}); run `songtrace codec train` first")
    config = load_stage_config(codec_dir, CodecConfig)
    state = load_safetensors(codec_dir / MODEL_FILE)
    codec = Codec(config)
    try:
        codec.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise SongtraceError(f"{codec_dir / MODEL_FILE}: weights do not match the codec config ({str(e).splitlines()[0]})") from None
    if not all(bool(torch.isfinite(t).all()) for t in state.values()):
        raise SongtraceError(f"{codec_dir / MODEL_FILE}: weights contain NaN or inf")
    codec.source_dir = codec_dir  # type: ignore[attr-defined]  # for messages and records downstream
    codec.content_hash = artifact_hash(codec_dir)  # type: ignore[attr-defined]
    return codec.eval()
