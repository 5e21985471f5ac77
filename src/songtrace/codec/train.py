"""Training the codec on a world's train split: resumable, bit-for-bit deterministic for a seed.

The world's train tracks are analysed to log-mel once; each step draws latent-frame-aligned crops
from a generator seeded by (seed, step), so a resumed run sees exactly the batches an uninterrupted
run would. A checkpoint (weights, Adam state, step) is written every `checkpoint_every` steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from songtrace.artifacts import begin_stage, finish_stage, hash_tensors, load_safetensors, read_json, save_safetensors, write_json
from songtrace.codec import mel
from songtrace.codec.config import CodecConfig
from songtrace.codec.io import MODEL_FILE, as_world, split_ids, track_tensor
from songtrace.codec.model import Codec
from songtrace.errors import SongtraceError
from songtrace.progress import progress, progress_bar

CHECKPOINT_FILE = "checkpoint.safetensors"
METRICS_FILE = "metrics.json"


# --------------------------------------------------------------------------- pure pieces


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), summed over channels, averaged over items and frames."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(1).mean()


def codec_loss(
    codec: Codec, target: torch.Tensor, noise: torch.Tensor, kl_weight: float, sc_weight: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, log-mel L1, KL) for a log-mel batch `[B, n_mels, 4F]`, sampling z with the given noise.

    The total adds `sc_weight` times the mel spectral convergence, which weights loud bins as the ear does.
    """
    mean, logvar = codec.posterior(target)
    z = mean + noise * (0.5 * logvar).exp()
    output = codec.decode_normed(z)
    recon = (output - target).abs().mean()
    kl = kl_divergence(mean, logvar)
    total = recon + kl_weight * kl
    if sc_weight:
        total = total + sc_weight * mel.spectral_convergence(target.exp(), output.clamp(max=20.0).exp()).mean()
    return total, recon, kl


def learning_rate(config: CodecConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of `lr`."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress_frac = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_frac))))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator for one training step: depends only on (seed, step)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def sample_crops(mels: torch.Tensor, lengths: torch.Tensor, batch: int, crop: int, align: int, gen: torch.Generator) -> torch.Tensor:
    """`batch` crops of `crop` mel frames from `mels [N, n_mels, T]`, starting on multiples of `align`."""
    rows = torch.randint(0, mels.shape[0], (batch,), generator=gen)
    max_start = (lengths[rows] - crop).clamp_min(0) // align
    starts = (torch.rand(batch, generator=gen) * (max_start + 1).float()).long().clamp_max(max_start) * align
    return torch.stack([mels[r, :, s : s + crop] for r, s in zip(rows.tolist(), starts.tolist(), strict=True)])


def fit_mel_stats(mels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and std of log-mel over all frames of the training tracks."""
    allm = torch.cat(mels, dim=1).double()
    return allm.mean(1).float(), allm.std(1).clamp_min(1e-3).float()


def stack_mels(mels: list[torch.Tensor], min_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mels `[n_mels, T_i]` as one tensor `[N, n_mels, max(T_i, min_width)]` padded with silence, and the T_i."""
    width = max(min_width, max(m.shape[-1] for m in mels))
    stacked = torch.full((len(mels), mels[0].shape[0], width), math.log(mel.LOG_FLOOR))
    for i, m in enumerate(mels):
        stacked[i, :, : m.shape[-1]] = m
    return stacked, torch.tensor([m.shape[-1] for m in mels])


@torch.no_grad()
def fit_latent_scale(codec: Codec, mels: list[torch.Tensor], real_frames: list[int]) -> float:
    """1 / std of the posterior means over the real latent frames of the training tracks."""
    values = []
    for m, f in zip(mels, real_frames, strict=True):
        mean, _ = codec.posterior(m[None])
        values.append(mean[0, :, :f].flatten().double())
    std = float(torch.cat(values).std())
    if not math.isfinite(std) or std <= 0:
        raise SongtraceError(f"codec latents have std {std}; training diverged")
    return 1.0 / std


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def reconstruction_metrics(codec: Codec, wavs: list[torch.Tensor], n_iter: int = 32) -> dict[str, float]:
    """Log-mel L1 and spectral convergence of encode -> decode, vs the mean-training-mel baseline and Griffin-Lim.

    `mel_*`: codec mel reconstruction; `baseline_mel_*`: predicting the mean training mel for every frame;
    `wave_sc`: STFT spectral convergence of the decoded waveform; `oracle_wave_sc`: the same for
    Griffin-Lim from the true mel (what the mel -> audio step alone loses).
    """
    c = codec.config
    sums: dict[str, float] = {}
    for wav in progress(wavs, total=len(wavs), desc="codec eval"):
        real = math.ceil(wav.shape[-1] / c.hop_length)
        padded = mel.pad_to_multiple(wav[None].float(), codec.samples_per_frame)
        target = codec.log_mel(padded)
        rec = codec.decode_mel(codec.encode(padded))
        base = codec.mel_mean[None, :, None].expand_as(target)
        ref_mag = mel.stft(padded, c.n_fft, c.hop_length, codec.window).abs()[..., :real]
        gl = codec.decode(codec.encode(padded), n_iter=n_iter)
        oracle = mel.griffin_lim(mel.mel_to_magnitude(target, codec.filters), c.n_fft, c.hop_length, codec.window, n_iter=n_iter)
        row = {
            "mel_l1": (rec - target)[..., :real].abs().mean(),
            "mel_sc": mel.spectral_convergence(target[..., :real].exp(), rec[..., :real].exp())[0],
            "baseline_mel_l1": (base - target)[..., :real].abs().mean(),
            "baseline_mel_sc": mel.spectral_convergence(target[..., :real].exp(), base[..., :real].exp())[0],
            "wave_sc": mel.spectral_convergence(ref_mag, mel.stft(gl, c.n_fft, c.hop_length, codec.window).abs()[..., :real])[0],
            "oracle_wave_sc": mel.spectral_convergence(ref_mag, mel.stft(oracle, c.n_fft, c.hop_length, codec.window).abs()[..., :real])[0],
        }
        for k, v in row.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return {k: v / max(1, len(wavs)) for k, v in sums.items()}


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, codec: Codec, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Weights, Adam state and the step count, in one safetensors file."""
    tensors = {f"model.{k}": v for k, v in codec.state_dict().items()}
    for i, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim.{i}.{key}"] = torch.as_tensor(value)
    tensors["step"] = torch.tensor(step, dtype=torch.long)
    save_safetensors(path, tensors)


def load_checkpoint(path: Path, codec: Codec, optimizer: torch.optim.Optimizer) -> int:
    """Restore weights and Adam state from `save_checkpoint`; returns the step to continue from."""
    tensors = load_safetensors(path)
    codec.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return int(tensors["step"])


# --------------------------------------------------------------------------- orchestration


def train_codec(
    config: CodecConfig,
    world: Any,
    out_dir: str | Path,
    overwrite: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train a codec on a world (a directory or a loaded `World`) and write `<out_dir>`; returns its metrics.

    Writes `model.safetensors`, `config.json` and `metrics.json` (reconstruction quality on the
    valid split). A killed run resumes from its last checkpoint and ends with the same weights.
    `on_step(step, loss)` is called after every step; an exception it raises stops training there.
    """
    world = as_world(world)
    out_dir = Path(out_dir)
    inputs = {"world": world.content_hash}
    if begin_stage(out_dir, config, inputs, overwrite):
        return read_json(out_dir / METRICS_FILE)

    train_ids = split_ids(world, "train")
    if not train_ids:
        raise SongtraceError(f"world {getattr(world, 'dir', '')}: no tracks in the train split to train a codec on")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        codec = Codec(config)
    mels = [codec.log_mel(track_tensor(world, i, config.sample_rate)[None])[0] for i in progress(train_ids, desc="codec mels")]
    mel_mean, mel_std = fit_mel_stats(mels)
    codec.mel_mean.copy_(mel_mean)
    codec.mel_std.copy_(mel_std)
    crop = config.segment_frames * config.downsample
    stacked, length_t = stack_mels(mels, crop)

    optimizer = torch.optim.Adam(codec.parameters(), lr=config.lr)
    ckpt = out_dir / CHECKPOINT_FILE
    start = load_checkpoint(ckpt, codec, optimizer) if ckpt.exists() else 0
    codec.train()
    started = time.perf_counter()
    bar = progress_bar(config.steps, desc="codec train", unit="step", initial=start)
    loss_value: float | None = None
    try:
        for step in range(start, config.steps):
            gen = step_generator(config.seed, step)
            target = sample_crops(stacked, length_t, config.batch_size, crop, config.downsample, gen)
            noise = torch.randn((config.batch_size, config.latent_channels, config.segment_frames), generator=gen)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            loss, recon, kl = codec_loss(codec, target, noise, config.kl_weight, config.sc_weight)
            if not torch.isfinite(loss):
                raise SongtraceError(f"codec training diverged at step {step} (loss {float(loss)}); lower lr in the codec config")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(codec.parameters(), config.grad_clip)
            optimizer.step()
            loss_value = float(loss.detach())
            done = step + 1
            if done % config.checkpoint_every == 0 or done == config.steps:
                save_checkpoint(ckpt, codec, optimizer, done)
            bar.update(1)
            bar.set_postfix(mel_l1=f"{float(recon.detach()):.3f}", kl=f"{float(kl.detach()):.2f}")
            if on_step is not None:
                on_step(done, loss_value)
    finally:
        bar.close()
    train_seconds = time.perf_counter() - started

    codec.eval()
    codec.latent_scale.fill_(fit_latent_scale(codec, mels, [m.shape[-1] // config.downsample for m in mels]))
    eval_split = "valid" if split_ids(world, "valid") else "train"
    eval_wavs = [track_tensor(world, i, config.sample_rate) for i in split_ids(world, eval_split)]
    metrics: dict[str, Any] = {
        "eval_split": eval_split,
        "n_eval_tracks": len(eval_wavs),
        "n_train_tracks": len(train_ids),
        **reconstruction_metrics(codec, eval_wavs),
        "final_train_loss": loss_value,
        "latent_scale": float(codec.latent_scale),
        "n_params": sum(p.numel() for p in codec.parameters()),
        "steps": config.steps,
        "resumed_from_step": start,
        "train_seconds": train_seconds,
    }
    weights = codec.state_dict()
    save_safetensors(out_dir / MODEL_FILE, weights, metadata={"songtrace": "codec"})
    write_json(out_dir / METRICS_FILE, metrics)
    finish_stage(
        out_dir,
        config,
        inputs,
        content_hash=hash_tensors(weights),
        extra={
            "latent_scale": float(codec.latent_scale),
            "samples_per_frame": config.samples_per_frame,
            "seconds_per_frame": config.seconds_per_frame,
            "latent_channels": config.latent_channels,
        },
    )
    ckpt.unlink(missing_ok=True)
    return metrics
