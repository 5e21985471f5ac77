"""The user's own VAE and text encoder as a songtrace codec: `songtrace encode --codec diffusers:DIR | sat:DIR`.

An `ExternalCodec` encodes audio with the model's own autoencoder (diffusers' `AutoencoderOobleck`,
or the stable-audio-tools pretransform) and captions with the model's own text encoder (T5), once,
into the latent cache, so Fisher, unlearning and scoring never run either again.

Conventions (those of the libraries' training data path, stable-audio-tools' `PadCrop_Normalized_T`):

- audio is resampled to the VAE's rate, mono repeated to its channel count (as `set_audio_channels`
  and the diffusers pipeline do), zero-padded or cropped from the start to the model length
  (`sample_size` latent frames) and encoded; the latent is the posterior mean of the VAE (the
  deterministic encoding; training draws a sample), divided by the pretransform's `scale`;
- `n_frames` = ceil(samples / downsampling ratio), capped at the model length (the library's
  padding mask interpolated to latent frames);
- timing: `seconds_start = 0` (the crop starts at 0) and `seconds_total = ceil(track seconds)`;
- text: the T5 `last_hidden_state` (stable-audio-tools runs its T5 in float16; stored as float32)
  and the tokenizer's attention mask, padded to the encoder's `max_length` exactly as the library
  tokenizes (the padded positions are part of the model's cross-attention).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from songtrace.artifacts import hash_tensors
from songtrace.data.audio import resample, to_mono
from songtrace.errors import SongtraceError
from songtrace.extras import (
    check_pipeline_dir,
    diffusers_text_encoder_id,
    files_hash,
    import_diffusers,
    import_sat,
    pretrained_options,
    read_sat_config,
    read_sat_weights,
    sat_text_encoder_id,
)


@dataclasses.dataclass
class ExternalCodec:
    """A model family's own autoencoder and text encoder, behind what `encode_world` needs."""

    kind: str  # "diffusers" | "sat"
    source: Path
    sample_rate: int
    audio_channels: int
    samples_per_frame: int
    latent_channels: int
    latent_length: int
    text_encoder: str  # identity of the text encoder (recorded in the latent cache, checked against the model)
    identity: str  # content hash of the VAE weights (the latent cache's input hash)
    encode_latents: Callable[[torch.Tensor], torch.Tensor]  # audio [B, ch, S] -> latents [B, C, L]
    encode_text: Callable[[Sequence[str]], tuple[torch.Tensor, torch.Tensor]]  # captions -> ([B, S, D], [B, S] bool)

    @property
    def n_samples(self) -> int:
        """Audio samples of the model length."""
        return self.latent_length * self.samples_per_frame

    @property
    def seconds_per_frame(self) -> float:
        """Seconds per latent frame."""
        return self.samples_per_frame / self.sample_rate

    def frames_for(self, n_samples: int) -> int:
        """Latent frames holding `n_samples` of audio (rounded up, at most the model length)."""
        return min(math.ceil(n_samples / self.samples_per_frame), self.latent_length)

    def record(self) -> dict[str, Any]:
        """What the latent cache's config.json says about the encoder."""
        return {"kind": self.kind, "source": str(self.source), "sample_rate": self.sample_rate, "audio_channels": self.audio_channels,
                "samples_per_frame": self.samples_per_frame, "latent_channels": self.latent_channels,
                "latent_length": self.latent_length, "text_encoder": self.text_encoder, "identity": self.identity}


def prepare_audio(wav: np.ndarray, sr: int, codec: ExternalCodec) -> tuple[torch.Tensor, int]:
    """(audio `[channels, n_samples]` at the codec's rate, padded/cropped to the model length; real samples)."""
    mono = resample(to_mono(wav), int(sr), codec.sample_rate)
    if mono.size == 0:
        raise SongtraceError("cannot encode empty audio")
    x = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    real = int(x.shape[-1])
    x = x[: codec.n_samples] if real >= codec.n_samples else torch.nn.functional.pad(x, (0, codec.n_samples - real))
    return x[None].repeat(codec.audio_channels, 1), real


def encode_track(codec: ExternalCodec, wav: np.ndarray, sr: int, caption: str) -> dict[str, Any]:
    """One track as the latent cache holds it (the same conventions): latent `[C, L]`, real frames, caption tokens `[S, D]` and
    mask `[S]`, seconds_start and seconds_total. `songtrace attribute` encodes an audio query of an imported model with it."""
    audio, real = prepare_audio(wav, sr, codec)
    latent = codec.encode_latents(audio[None]).float()[0]
    text, mask = codec.encode_text([caption])
    start, total = timing(real / codec.sample_rate)
    return {"latent": latent, "n_frames": codec.frames_for(real), "text": text[0].float(), "text_mask": mask[0].bool(),
            "seconds_start": start, "seconds_total": total}


def timing(seconds: float) -> tuple[float, float]:
    """(seconds_start, seconds_total) of a track encoded from its start, as stable-audio-tools' dataset gives them."""
    return 0.0, float(math.ceil(round(float(seconds), 6)))


# --------------------------------------------------------------------------- diffusers


def _t5_tokens(tokenizer: Any, model: nn.Module, captions: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(list(captions), truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    mask = enc["attention_mask"].bool()
    with torch.no_grad():
        hidden = model(input_ids=enc["input_ids"], attention_mask=mask)["last_hidden_state"]
    return hidden.float(), mask


def diffusers_codec(pipeline_dir: str | Path) -> ExternalCodec:
    """The VAE (`vae/`), tokenizer and T5 (`text_encoder/`) of a StableAudioPipeline folder."""
    pipeline_dir = Path(pipeline_dir)
    check_pipeline_dir(pipeline_dir, parts=("transformer", "vae", "text_encoder", "tokenizer"))
    lib = import_diffusers()
    from transformers import AutoTokenizer, T5EncoderModel

    try:
        vae = lib.AutoencoderOobleck.from_pretrained(str(pipeline_dir), subfolder="vae", **pretrained_options()).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(pipeline_dir / "tokenizer"))
        text_model = T5EncoderModel.from_pretrained(str(pipeline_dir / "text_encoder"), **pretrained_options()).eval()
        transformer = lib.StableAudioDiTModel.load_config(str(pipeline_dir), subfolder="transformer")
    except (OSError, ValueError) as e:
        raise SongtraceError(f"{pipeline_dir}: diffusers could not load the VAE / text encoder ({e})") from None

    @torch.no_grad()
    def encode_latents(audio: torch.Tensor) -> torch.Tensor:
        return vae.encode(audio).latent_dist.mean

    max_length = int(tokenizer.model_max_length)
    return ExternalCodec(
        kind="diffusers", source=pipeline_dir, sample_rate=int(vae.config.sampling_rate), audio_channels=int(vae.config.audio_channels),
        samples_per_frame=int(vae.hop_length), latent_channels=int(vae.config.decoder_input_channels),
        latent_length=int(transformer["sample_size"]), text_encoder=diffusers_text_encoder_id(pipeline_dir),
        identity=files_hash([pipeline_dir / "vae"]),
        encode_latents=encode_latents, encode_text=lambda captions: _t5_tokens(tokenizer, text_model, captions, max_length),
    )


# --------------------------------------------------------------------------- stable-audio-tools


def sat_codec(sat_dir: str | Path) -> ExternalCodec:
    """The pretransform (VAE) and the T5 text conditioner of a stable-audio-tools folder, built by the library's factories.

    The T5 is loaded by stable-audio-tools itself, by the name in `model_config.json`, through
    transformers (the Hugging Face cache, or a folder of that name in the working directory).
    """
    sat_dir = Path(sat_dir)
    config = read_sat_config(sat_dir)
    model = config["model"]
    if "pretransform" not in model:
        raise SongtraceError(f"{sat_dir}: the model has no pretransform (VAE); songtrace encodes latents with it")
    sat = import_sat()
    text_configs = [c for c in model["conditioning"]["configs"] if c.get("type") == "t5"]
    if len(text_configs) != 1:
        raise SongtraceError(f"{sat_dir / 'model_config.json'}: expected one t5 text conditioner, found {len(text_configs)}")
    try:
        pretransform = sat.create_pretransform_from_config(model["pretransform"], int(config["sample_rate"]))
        conditioner = sat.create_multi_conditioner_from_conditioning_config(
            {"configs": text_configs, "cond_dim": model["conditioning"]["cond_dim"]}).conditioners[text_configs[0]["id"]]
    except (AssertionError, KeyError, TypeError, ValueError, OSError) as e:
        raise SongtraceError(f"{sat_dir}: stable-audio-tools cannot build the pretransform / T5 ({type(e).__name__}: {e})") from None
    state = read_sat_weights(sat_dir)
    own = {k[len("pretransform."):]: v for k, v in state.items() if k.startswith("pretransform.")}
    try:
        # the checkpoint's keys; AutoencoderPretransform's own load_state_dict expects its inner model's
        nn.Module.load_state_dict(pretransform, own, strict=True)
    except RuntimeError as e:
        raise SongtraceError(f"{sat_dir}: the pretransform weights do not match model_config.json ({str(e).splitlines()[0]})") from None
    pretransform.eval()
    vae_mean = type(getattr(pretransform.model, "bottleneck", None)).__name__ == "VAEBottleneck"

    @torch.no_grad()
    def encode_latents(audio: torch.Tensor) -> torch.Tensor:
        if vae_mean:  # the posterior mean: the bottleneck's input is [mean, scale], divided by the pretransform's scale
            return pretransform.encode(audio, skip_bottleneck=True).chunk(2, dim=1)[0]
        return pretransform.encode(audio)

    ratio = int(pretransform.downsampling_ratio)
    return ExternalCodec(
        kind="sat", source=sat_dir, sample_rate=int(config["sample_rate"]), audio_channels=int(config.get("audio_channels", 2)),
        samples_per_frame=ratio, latent_channels=int(model["io_channels"]), latent_length=int(config["sample_size"]) // ratio,
        text_encoder=sat_text_encoder_id(text_configs[0]), identity=hash_tensors(own),
        encode_latents=encode_latents,
        encode_text=lambda captions: _t5_tokens(conditioner.tokenizer, conditioner.model, captions, int(conditioner.max_length)),
    )


# prefix of `--codec` -> loader of a folder
EXTERNAL_CODECS: dict[str, Callable[[str | Path], ExternalCodec]] = {"diffusers": diffusers_codec, "sat": sat_codec}


def is_external(spec: str) -> bool:
    """Whether a `--codec` value names an external codec (`diffusers:DIR`, `sat:DIR`)."""
    return any(str(spec).startswith(f"{k}:") for k in EXTERNAL_CODECS)


def looks_external(spec: str) -> bool:
    """Whether a `--codec` value has the `KIND:DIR` form (a word, a colon, a path) and names no existing path: an external codec,
    valid or not (`load_external_codec` then lists the valid kinds), rather than a codec's name or directory."""
    kind, sep, path = str(spec).partition(":")
    return bool(sep) and kind.isidentifier() and bool(path) and not Path(spec).exists()


def load_external_codec(spec: str) -> ExternalCodec:
    """`diffusers:DIR` or `sat:DIR` as an `ExternalCodec`, with an error listing the valid prefixes."""
    kind, sep, path = str(spec).partition(":")
    if not sep or kind not in EXTERNAL_CODECS or not path:
        raise SongtraceError(f"--codec {spec!r}: unknown codec kind {kind!r}; expected a codec name, or one of "
                             f"{', '.join(f'{k}:DIR' for k in EXTERNAL_CODECS)}")
    if not Path(path).is_dir():
        raise SongtraceError(f"--codec {spec!r}: {path} is not a folder")
    return EXTERNAL_CODECS[kind](path)


# --------------------------------------------------------------------------- the latent cache


def encode_world_external(world: Any, codec: ExternalCodec, out_dir: Path, overwrite: bool, batch_size: int, config: Any) -> Any:
    """Encode every track of a loaded world with an external codec into a latent cache (the `encode_world` stage body)."""
    from songtrace.artifacts import begin_stage, finish_stage
    from songtrace.data.latents import LatentSet
    from songtrace.progress import progress_bar

    inputs = {"world": world.content_hash, "codec": codec.identity}
    if begin_stage(out_dir, config, inputs, overwrite):
        return LatentSet.load(out_dir)
    manifest = world.manifest.reset_index(drop=True)
    n = len(manifest)
    if n == 0:
        raise SongtraceError("the world's manifest has no tracks to encode")
    latents, texts, masks = [], [], []
    n_frames = torch.zeros(n, dtype=torch.long)
    seconds = torch.tensor([timing(float(d)) for d in manifest["duration"]], dtype=torch.float32)
    bar = progress_bar(n, desc=f"encode ({codec.kind})", unit="track")
    try:
        for lo in range(0, n, batch_size):
            rows = manifest.iloc[lo : lo + batch_size]
            audio = []
            for j, track_id in enumerate(rows["id"]):
                x, real = prepare_audio(world.audio(str(track_id)), world.sample_rate, codec)
                audio.append(x)
                n_frames[lo + j] = codec.frames_for(real)
            z = codec.encode_latents(torch.stack(audio)).float()
            if tuple(z.shape[1:]) != (codec.latent_channels, codec.latent_length):
                raise SongtraceError(f"{codec.source}: the VAE made latents {tuple(z.shape[1:])}, the model expects "
                                     f"{(codec.latent_channels, codec.latent_length)}")
            latents.append(z)
            text, mask = codec.encode_text([str(c) for c in rows["caption"]])
            texts.append(text)
            masks.append(mask)
            bar.update(len(audio))
    finally:
        bar.close()
    latent_set = LatentSet(
        ids=[str(i) for i in manifest["id"]], artists=[str(a) for a in manifest["artist"]], splits=[str(s) for s in manifest["split"]],
        latents=torch.cat(latents), n_frames=n_frames, text=torch.cat(texts), text_mask=torch.cat(masks),
        seconds_start=seconds[:, 0].contiguous(), seconds_total=seconds[:, 1].contiguous(), text_encoder=codec.text_encoder,
    )
    latent_set.save(out_dir)
    finish_stage(out_dir, config, inputs, content_hash=latent_set.content_hash(), extra={
        "sample_rate": codec.sample_rate, "samples_per_frame": codec.samples_per_frame, "latent_length": codec.latent_length,
        "latent_channels": codec.latent_channels, "seconds_per_frame": codec.seconds_per_frame,
        "max_seconds": codec.n_samples / codec.sample_rate, "codec": codec.record(),
    })
    return latent_set
