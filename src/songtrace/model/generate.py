"""Text-to-music generation with a trained DiT and its codec; a generated track is an attribution query.

`generate` encodes the prompt with the frozen MiniLM, samples a latent of the model length
(conditioned on `seconds_start = 0`, `seconds_total = seconds`), zeroes the frames beyond the
requested length (as the latent cache zero-pads training tracks) and decodes the real frames.
`save_generated` writes the WAV, `<stem>.latent.safetensors` (the latent with its conditioning, by
`songtrace.data.latent_file.write_latent_file`, so `read_latent_file(path).batch()` gives it back
as a ready `Batch`) and `<stem>.json`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from songtrace.artifacts import atomic_path, check_new_file, check_positive, check_range, write_json
from songtrace.data.batch import Batch, Conditioning
from songtrace.data.latent_file import LATENT_SUFFIX, write_latent_file
from songtrace.diffusion.sampler import DEFAULT_CFG_SCALE, DEFAULT_STEPS, sample
from songtrace.errors import SongtraceError
from songtrace.model.registry import load_task
from songtrace.model.task import ModelTask, as_task, eval_mode

MAX_SAMPLER_STEPS = 10_000
MAX_CFG_SCALE = 100.0


@dataclasses.dataclass
class GeneratedTrack:
    """A generated track: audio, its latent (zero beyond `n_frames`) and how it was made."""

    wav: np.ndarray  # [S] float32
    sample_rate: int
    latent: torch.Tensor  # [C, L]
    n_frames: int
    prompt: str
    seed: int
    seconds: float
    text: torch.Tensor  # [S_text, 384]
    text_mask: torch.Tensor  # [S_text]
    model_hash: str
    codec_hash: str
    steps: int
    cfg_scale: float
    sampler: str


def noise_for(seed: int, latent_shape: tuple[int, int]) -> torch.Tensor:
    """The initial noise `[1, C, L]` of a generation, from its seed alone."""
    return torch.randn(1, *latent_shape, generator=torch.Generator().manual_seed(seed))


def generate(
    model: str | Path | nn.Module | ModelTask,
    codec: str | Path | Any,
    prompt: str,
    seconds: float,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    cfg_scale: float = DEFAULT_CFG_SCALE,
    sampler: str = "dpmpp-2m",
) -> GeneratedTrack:
    """Generate `seconds` of music for `prompt`, deterministic for a seed.

    `model` and `codec` are directories or already loaded objects (`load_task`, `load_codec`), so a
    caller generating many tracks loads them once.
    """
    from songtrace.codec import decode_to_wav, load_codec
    from songtrace.codec.text import encode_tokens

    task = load_task(model) if isinstance(model, str | Path) else as_task(model)
    codec = load_codec(codec) if isinstance(codec, str | Path) else codec
    model_dir = getattr(task.module, "source_dir", "the model")
    codec_dir = getattr(codec, "source_dir", "the codec")
    channels, length = task.latent_shape
    if codec.latent_channels != channels:
        raise SongtraceError(f"model {model_dir} works on {channels}-channel latents, codec {codec_dir} makes {codec.latent_channels}")
    check_positive("seconds", seconds)
    check_range("sampler steps", steps, 1, MAX_SAMPLER_STEPS)
    if steps != int(steps):
        raise SongtraceError(f"sampler steps must be a whole number, got {steps}")
    check_range("cfg_scale", cfg_scale, 0, MAX_CFG_SCALE)
    if not prompt or not prompt.strip():
        raise SongtraceError("the prompt is empty; give the text to generate from")
    n_samples = round(seconds * codec.sample_rate)
    n_frames = codec.frames_for(n_samples)
    if n_frames > length:
        raise SongtraceError(
            f"model {model_dir} generates at most {length * codec.samples_per_frame / codec.sample_rate:.2f} s "
            f"({length} frames); asked for {seconds} s"
        )
    text, text_mask = encode_tokens([prompt])
    cond = Conditioning(text, text_mask, torch.zeros(1), torch.tensor([float(seconds)]))
    with eval_mode(task.module):
        latent = sample(task.predictor(), noise_for(seed, (channels, length)), cond, steps=steps, cfg_scale=cfg_scale, method=sampler)[0]
    latent = torch.where(torch.arange(length)[None, :] < n_frames, latent, torch.zeros(()))
    wav = decode_to_wav(codec, latent, n_frames=n_frames)[:n_samples]
    return GeneratedTrack(
        wav=wav.astype(np.float32),
        sample_rate=codec.sample_rate,
        latent=latent,
        n_frames=n_frames,
        prompt=prompt,
        seed=seed,
        seconds=float(seconds),
        text=text[0],
        text_mask=text_mask[0],
        model_hash=task.identity(),
        codec_hash=str(getattr(codec, "content_hash", "")),
        steps=steps,
        cfg_scale=float(cfg_scale),
        sampler=sampler,
    )


def query_paths(out_wav: str | Path) -> tuple[Path, Path, Path]:
    """(wav, latent, json) paths of a generation saved as `out_wav`."""
    out_wav = Path(out_wav)
    return out_wav, out_wav.with_suffix(LATENT_SUFFIX), out_wav.with_suffix(".json")


def check_generation_out(out_wav: str | Path, overwrite: bool = False) -> None:
    """Refuse a place to save a generation (before any work): not a .wav, inside a songtrace artifact folder (it would replace
    or add to the artifact's files), or an existing WAV/latent/record unless `overwrite`."""
    out_wav = Path(out_wav)
    if out_wav.suffix.lower() != ".wav":
        raise SongtraceError(f"--out {out_wav}: a generation is saved as a WAV; give a path ending in .wav")
    for path in query_paths(out_wav):
        check_new_file(path, overwrite, what="generation")


def save_generated(track: GeneratedTrack, out_wav: str | Path) -> dict[str, Any]:
    """Write the WAV, the latent query and the JSON record of a generated track; returns the record."""
    import soundfile as sf

    wav_path, latent_path, json_path = query_paths(out_wav)
    with atomic_path(wav_path) as tmp:
        sf.write(str(tmp), track.wav, track.sample_rate, format="WAV", subtype="PCM_16")
    query = Batch.single(wav_path.stem, track.latent, track.n_frames, track.text, track.text_mask, 0.0, track.seconds)
    write_latent_file(latent_path, query, metadata={"prompt": track.prompt, "seed": str(track.seed), "model_hash": track.model_hash})
    record = {
        "prompt": track.prompt,
        "seed": track.seed,
        "seconds": track.seconds,
        "n_frames": track.n_frames,
        "sample_rate": track.sample_rate,
        "model_hash": track.model_hash,
        "codec_hash": track.codec_hash,
        "sampler": {"method": track.sampler, "steps": track.steps, "cfg_scale": track.cfg_scale},
        "wav": wav_path.name,
        "latent": latent_path.name,
    }
    write_json(json_path, record)
    return record

