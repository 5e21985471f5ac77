"""The latent cache (`songtrace encode`) and audio <-> latent helpers for single tracks.

Every track is zero-padded (or cropped) to the world's `max_seconds`, rounded up to whole latent
frames, and encoded; `n_frames` counts the frames that hold real audio. Later stages read
`sample_rate`, `samples_per_frame`, `latent_length` and `seconds_per_frame` from config.json.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from songtrace.artifacts import artifact_hash, begin_stage, finish_stage
from songtrace.codec.config import EncodeConfig
from songtrace.codec.io import as_world, load_codec, track_tensor
from songtrace.codec.model import Codec
from songtrace.data.audio import resample, to_mono
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.progress import progress_bar


def fit_length(wav: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Zero-pad or crop the last axis to exactly `n_samples`."""
    if wav.shape[-1] >= n_samples:
        return wav[..., :n_samples]
    return torch.nn.functional.pad(wav, (0, n_samples - wav.shape[-1]))


@torch.no_grad()
def encode_audio(codec: Codec, wav: np.ndarray, sr: int, n_frames_total: int | None = None) -> torch.Tensor:
    """Latent `[C, F]` of one track (any rate, mono or multichannel); padded/cropped to `n_frames_total` frames if given."""
    mono = resample(to_mono(wav), int(sr), codec.sample_rate)
    if mono.size == 0:
        raise SongtraceError("cannot encode empty audio")
    x = torch.from_numpy(np.ascontiguousarray(mono))
    frames = codec.frames_for(x.shape[-1]) if n_frames_total is None else n_frames_total
    return codec.encode(fit_length(x, frames * codec.samples_per_frame)[None])[0]


@torch.no_grad()
def decode_to_wav(codec: Codec, latent: torch.Tensor, n_frames: int | None = None, n_iter: int = 32) -> np.ndarray:
    """Audio (float32 at `codec.sample_rate`) of a latent `[C, F]` (-> `[S]`) or `[B, C, F]` (-> `[B, S]`), cut to `n_frames`."""
    single = latent.dim() == 2
    batch = latent[None] if single else latent
    if batch.dim() != 3 or batch.shape[1] != codec.latent_channels:
        raise SongtraceError(f"latent must be [C, F] or [B, C, F] with C={codec.latent_channels}, got {tuple(latent.shape)}")
    if n_frames is not None:
        batch = batch[..., :n_frames]
    wav = codec.decode(batch.float(), n_iter=n_iter).numpy().astype(np.float32)
    return wav[0] if single else wav


def latent_length(codec: Codec, max_seconds: float) -> int:
    """Frames of the model length: `max_seconds` rounded up to whole latent frames."""
    return codec.frames_for(math.ceil(round(max_seconds * codec.sample_rate, 6)))


def encode_world(
    world: Any,
    codec_dir: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    config: EncodeConfig | None = None,
) -> LatentSet:
    """Encode every track of a world (directory or loaded `World`) with a trained codec into a latent cache.

    `codec_dir` is a `songtrace codec train` directory, or `diffusers:DIR` / `sat:DIR`: the VAE and text
    encoder of a real model (`songtrace.codec.external`).
    """
    from songtrace.codec.external import encode_world_external, is_external, load_external_codec
    from songtrace.codec.text import encode_tokens

    config = config or EncodeConfig()
    world = as_world(world)
    out_dir = Path(out_dir)
    if isinstance(codec_dir, str) and is_external(codec_dir):
        return encode_world_external(world, load_external_codec(codec_dir), out_dir, overwrite, config.batch_size, config)
    codec = load_codec(codec_dir)
    inputs = {"world": world.content_hash, "codec": artifact_hash(codec_dir)}
    if begin_stage(out_dir, config, inputs, overwrite):
        return LatentSet.load(out_dir)
    manifest = world.manifest.reset_index(drop=True)
    length = latent_length(codec, float(world.config.max_seconds))
    n_samples = length * codec.samples_per_frame
    n = len(manifest)
    if n == 0:
        raise SongtraceError("the world's manifest has no tracks to encode")
    latents = torch.zeros(n, codec.latent_channels, length)
    n_frames = torch.zeros(n, dtype=torch.long)
    texts, masks = [], []
    bar = progress_bar(n, desc="encode", unit="track")
    try:
        for lo in range(0, n, config.batch_size):
            rows = manifest.iloc[lo : lo + config.batch_size]
            wavs = [track_tensor(world, str(i), codec.sample_rate) for i in rows["id"]]
            for j, w in enumerate(wavs):
                n_frames[lo + j] = min(codec.frames_for(w.shape[-1]), length)
            latents[lo : lo + len(wavs)] = codec.encode(torch.stack([fit_length(w, n_samples) for w in wavs]))
            text, mask = encode_tokens([str(c) for c in rows["caption"]])
            texts.append(text)
            masks.append(mask)
            bar.update(len(wavs))
    finally:
        bar.close()
    latent_set = LatentSet(
        ids=[str(i) for i in manifest["id"]],
        artists=[str(a) for a in manifest["artist"]],
        splits=[str(s) for s in manifest["split"]],
        latents=latents,
        n_frames=n_frames,
        text=torch.cat(texts),
        text_mask=torch.cat(masks),
        seconds_start=torch.zeros(n),
        seconds_total=torch.tensor(manifest["duration"].to_numpy(dtype=np.float32)),
    )
    latent_set.save(out_dir)
    finish_stage(
        out_dir,
        config,
        inputs,
        content_hash=latent_set.content_hash(),
        extra={
            "sample_rate": codec.sample_rate,
            "samples_per_frame": codec.samples_per_frame,
            "latent_length": length,
            "latent_channels": codec.latent_channels,
            "seconds_per_frame": codec.config.seconds_per_frame,
            "max_seconds": float(world.config.max_seconds),
        },
    )
    return latent_set
