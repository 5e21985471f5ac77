"""Training songclap: symmetric InfoNCE between random log-mel crops and their captions.

`fit_songclap` is the loop on in-memory tracks; `train_songclap` is the stage: it reads a world,
trains on its "train" split, saves `model.safetensors` + `config.json` and reports retrieval on the
held-out "valid" split against random embeddings (`metrics.json`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from songtrace.artifacts import begin_stage, finish_stage, hash_tensors, read_json, save_safetensors, write_json
from songtrace.data.audio import resample, to_mono
from songtrace.embedders.songclap import (
    METRICS_FILE,
    MODEL_FILE,
    SongClapConfig,
    SongClapEmbedder,
    SongClapModel,
    contrastive_loss,
    gain_to_log,
    log_mel,
)
from songtrace.errors import SongtraceError
from songtrace.progress import progress
from songtrace.world.tracks import TrackSet, world_tracks


def learning_rate(step: int, config: SongClapConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress_frac = (step - config.warmup_steps) / span
    return config.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress_frac)))


def crop_batch(mels: list[torch.Tensor], rows: np.ndarray, width: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops of `width` frames (zero-padded, with valid lengths, when a track is shorter)."""
    n_mels = mels[0].shape[0]
    batch = torch.zeros(len(rows), n_mels, width)
    lengths = torch.zeros(len(rows), dtype=torch.long)
    for j, i in enumerate(rows):
        mel = mels[i]
        n = mel.shape[-1]
        if n > width:
            start = int(rng.integers(0, n - width + 1))
            batch[j] = mel[:, start : start + width]
            lengths[j] = width
        else:
            batch[j, :, :n] = mel
            lengths[j] = n
    return batch, lengths


def fit_songclap(config: SongClapConfig, train: TrackSet) -> tuple[SongClapModel, dict[str, Any]]:
    """Train a songclap model on tracks with captions; deterministic for `config.seed`."""
    from songtrace.codec.text import encode_sentences

    if len(train) < 2:
        raise SongtraceError(f"songclap needs at least 2 training tracks with captions, got {len(train)}")
    mels = [log_mel(resample(to_mono(w), train.sr, config.sample_rate), config) for w in train.waves]
    frames = torch.cat(mels, dim=-1).double()
    sentences = encode_sentences(train.captions)
    rng = np.random.default_rng(config.seed)
    batch_size = min(config.batch_size, len(train))
    losses: list[float] = []
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = SongClapModel(config)
        model.mel_mean.copy_(frames.mean(-1).float())
        model.mel_std.copy_(frames.std(-1).clamp_min(1e-3).float())
        decay = [p for n, p in model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=config.lr)
        model.train()
        for step in progress(range(config.steps), total=config.steps, desc="songclap", unit="step"):
            for group in opt.param_groups:
                group["lr"] = learning_rate(step, config)
            rows = rng.choice(len(train), size=batch_size, replace=False)
            mel, lengths = crop_batch(mels, rows, config.window_frames, rng)
            gains = torch.from_numpy(rng.uniform(-config.gain_db, config.gain_db, size=batch_size)).float()
            mel = mel + gain_to_log(gains)[:, None, None]
            loss = contrastive_loss(model.encode_audio(mel, lengths), model.encode_text(sentences[torch.from_numpy(rows)]), model.scale())
            if not torch.isfinite(loss):
                raise SongtraceError(f"songclap training diverged at step {step} (loss {loss.item()}); lower lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
    model.eval()
    tail = max(1, min(50, len(losses) // 5))
    log = {
        "steps": config.steps,
        "loss_first": float(np.mean(losses[:tail])),
        "loss_last": float(np.mean(losses[-tail:])),
        "loss_chance": float(math.log(batch_size)),
        "temperature": 1.0 / model.scale().item(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return model, log


def songclap_report(embedder: SongClapEmbedder, train: TrackSet, valid: TrackSet, random_seeds: int) -> dict[str, Any]:
    """Retrieval of held-out tracks by songclap, by `dsp` and by random embeddings."""
    from songtrace.embedders.dsp import DspEmbedder
    from songtrace.embedders.retrieval import retrieval_report

    def report(e):
        return retrieval_report(e, valid.waves, valid.captions, valid.artists, train.waves, train.artists, train.sr, random_seeds)

    ours = report(embedder)
    dsp = report(DspEmbedder(embedder.window_seconds, embedder.hop_seconds))
    return {
        "eval_split": valid.source,
        "n_query": ours["n_query"],
        "n_gallery": ours["n_gallery"],
        "n_unique_captions": ours["n_unique_captions"],
        "songclap": ours["metrics"],
        "random": ours["random"],
        "chance": ours["chance"],
        "dsp": dsp["metrics"],
    }


def config_for_world(world_dir: str | Path, **overrides: Any) -> SongClapConfig:
    """A config whose windows are scaled to the world's longest track (`scaled_windows`), unless overridden."""
    from songtrace.embedders.base import scaled_windows
    from songtrace.world import load_world

    window, hop = scaled_windows(float(load_world(world_dir).manifest["duration"].max()))
    return SongClapConfig(**{"window_seconds": window, "hop_seconds": hop, **overrides})


def train_songclap(config: SongClapConfig, world_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """The `embedder train` stage: train on the world's train split, report on its valid split."""
    from songtrace.world import load_world

    out_dir = Path(out_dir)
    world = load_world(world_dir)
    inputs = {"world": world.content_hash}
    if begin_stage(out_dir, config, inputs, overwrite):
        return read_json(out_dir / METRICS_FILE)
    train = world_tracks(world_dir, split="train")
    has_valid = bool((world.manifest["split"] == "valid").any())
    valid = world_tracks(world_dir, split="valid") if has_valid else TrackSet([], [], train.sr)
    if len(valid) < 2:  # a tiny world may hold no held-out tracks: report on the training tracks, and say so
        valid = train
    valid.source = "valid" if valid is not train else "train (no valid split)"
    start = time.perf_counter()
    model, log = fit_songclap(config, train)
    log["train_seconds"] = round(time.perf_counter() - start, 2)
    state = model.state_dict()
    content_hash = hash_tensors(state)
    save_safetensors(out_dir / MODEL_FILE, state, metadata={"content_hash": content_hash})
    embedder = SongClapEmbedder(model, config, content_hash, name=out_dir.name)
    start = time.perf_counter()
    metrics = {"training": log, **songclap_report(embedder, train, valid, config.random_baseline_seeds)}
    metrics["eval_seconds"] = round(time.perf_counter() - start, 2)
    write_json(out_dir / METRICS_FILE, metrics)
    finish_stage(out_dir, config, inputs, content_hash=content_hash,
                 extra={"summary": {"text_to_audio_recall@1": metrics["songclap"].get("text_to_audio_recall@1"),
                                    "artist_nn_accuracy": metrics["songclap"]["artist_nn_accuracy"]}})
    return metrics

