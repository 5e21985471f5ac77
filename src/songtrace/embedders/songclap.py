"""`songclap`: a small contrastive audio-text embedder (CLAP-style) trained on the world itself.

Audio: a 1-D conv net over standardised log-mel windows, masked mean+max pooling, projection to a
shared space. Text: the frozen MiniLM sentence embedding (`songtrace.codec.text`) through a learned
two-layer projection. The substitute for CLAP where no pretrained audio model can be downloaded.
Training lives in `songclap_train.py`; this file holds the config, the network and the embedder.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from songtrace.artifacts import StageConfig, artifact_hash, check_positive, load_safetensors, load_stage_config
from songtrace.data.windows import window_starts
from songtrace.embedders.base import Embedder
from songtrace.errors import SongtraceError

MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
TEXT_DIM = 384


@dataclasses.dataclass(frozen=True)
class SongClapConfig(StageConfig):
    """Everything that makes a songclap embedder: front end, network, windows, training."""

    sample_rate: int = 16000
    n_fft: int = 1024
    mel_hop: int = 512
    n_mels: int = 64
    window_seconds: float = 4.0  # the paper's 10 s / 1 s on 2-minute tracks, scaled to 12 s tracks
    hop_seconds: float = 1.0
    channels: tuple[int, ...] = (64, 96, 128, 128)
    dim: int = 128
    text_hidden: int = 256
    steps: int = 1000
    batch_size: int = 48
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    temperature: float = 0.07
    gain_db: float = 6.0
    seed: int = 0
    random_baseline_seeds: int = 20

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "mel_hop", "n_mels", "window_seconds", "hop_seconds", "dim", "text_hidden",
                     "steps", "batch_size", "lr", "temperature", "random_baseline_seeds"):
            check_positive(name, getattr(self, name))
        for name in ("weight_decay", "warmup_steps", "gain_db"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if not self.channels or any(c <= 0 for c in self.channels):
            raise SongtraceError(f"channels must be a non-empty list of positive widths, got {self.channels}")
        if self.batch_size < 2:
            raise SongtraceError(f"batch_size must be >= 2 for a contrastive loss, got {self.batch_size}")

    @property
    def window_frames(self) -> int:
        """Mel frames in one window."""
        return max(1, round(self.window_seconds * self.sample_rate / self.mel_hop))


# --------------------------------------------------------------------------- front end


def log_mel(wave: np.ndarray, config: SongClapConfig) -> torch.Tensor:
    """Log-mel magnitudes `[n_mels, frames]` of mono audio at `config.sample_rate` (the codec's analysis)."""
    from songtrace.codec.mel import log_mel as codec_log_mel
    from songtrace.codec.mel import mel_filters, pad_to_multiple

    wav = pad_to_multiple(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None], config.mel_hop)
    window = torch.hann_window(config.n_fft)
    filters = mel_filters(config.sample_rate, config.n_fft, config.n_mels)
    return codec_log_mel(wav, config.n_fft, config.mel_hop, window, filters)[0]


def gain_to_log(gain_db: torch.Tensor) -> torch.Tensor:
    """The shift a gain of `gain_db` decibels makes to log-magnitudes."""
    return gain_db * (math.log(10.0) / 20.0)


# --------------------------------------------------------------------------- network


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    groups = math.gcd(8, c_out)
    return nn.Sequential(nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(groups, c_out), nn.GELU())


def masked_mean_max(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenated mean and max over the valid frames of `h [B, C, T]` -> `[B, 2C]`."""
    valid = torch.arange(h.shape[-1], device=h.device)[None, :] < lengths[:, None]
    mask = valid[:, None, :].to(h.dtype)
    mean = (h * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
    peak = h.masked_fill(~valid[:, None, :], float("-inf")).amax(-1)
    return torch.cat([mean, peak], dim=-1)


class SongClapModel(nn.Module):
    """Audio encoder + text projection into one normalised space, with a learnable temperature."""

    def __init__(self, config: SongClapConfig) -> None:
        super().__init__()
        c = config.channels
        self.register_buffer("mel_mean", torch.zeros(config.n_mels))
        self.register_buffer("mel_std", torch.ones(config.n_mels))
        layers = [_block(config.n_mels, c[0], 1)]
        for c_in, c_out in itertools.pairwise(c):
            layers += [_block(c_in, c_out, 2), _block(c_out, c_out, 1)]
        self.audio_layers = nn.ModuleList(layers)
        self.audio_proj = nn.Sequential(nn.Linear(2 * c[-1], c[-1]), nn.GELU(), nn.Linear(c[-1], config.dim))
        self.text_proj = nn.Sequential(nn.Linear(TEXT_DIM, config.text_hidden), nn.GELU(), nn.Linear(config.text_hidden, config.dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))

    def encode_audio(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised audio embeddings `[B, dim]` from log-mel `[B, n_mels, T]` (valid frames `lengths`)."""
        if lengths is None:
            lengths = torch.full((mel.shape[0],), mel.shape[-1], dtype=torch.long)
        h = (mel - self.mel_mean[:, None]) / self.mel_std[:, None]
        valid = torch.arange(h.shape[-1])[None, :] < lengths[:, None]
        h = h * valid[:, None, :]
        for layer in self.audio_layers:
            stride = layer[0].stride[0]
            h = layer(h)
            lengths = (lengths + stride - 1) // stride
        return F.normalize(self.audio_proj(masked_mean_max(h, lengths)), dim=-1)

    def encode_text(self, sentences: torch.Tensor) -> torch.Tensor:
        """Normalised text embeddings `[B, dim]` from frozen MiniLM sentence embeddings `[B, 384]`."""
        return F.normalize(self.text_proj(sentences), dim=-1)

    def scale(self) -> torch.Tensor:
        """The logit scale 1/temperature, clamped at 100 as in CLIP."""
        return self.logit_scale.clamp(max=math.log(100.0)).exp()


def contrastive_loss(audio: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matched (audio, text) pairs."""
    logits = scale * audio @ text.T
    target = torch.arange(audio.shape[0])
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


# --------------------------------------------------------------------------- embedder


class SongClapEmbedder(Embedder):
    """A trained songclap model behind the `Embedder` interface (audio and text)."""

    def __init__(self, model: SongClapModel, config: SongClapConfig, content_hash: str, name: str = "songclap",
                 window_seconds: float | None = None, hop_seconds: float | None = None) -> None:
        self.model = model.eval()
        self.config = config
        self.name = name
        self.content_hash = content_hash
        self.sample_rate = config.sample_rate
        self.window_seconds = float(window_seconds or config.window_seconds)
        self.hop_seconds = float(hop_seconds or config.hop_seconds)
        self.dim = config.dim

    @classmethod
    def from_dir(cls, path: str | Path, **kw) -> SongClapEmbedder:
        """Load a trained songclap artifact (`config.json` + `model.safetensors`)."""
        path = Path(path)
        if not (path / "config.json").exists():
            raise SongtraceError(f"{path}: no trained songclap embedder here; run `songtrace embedder train` first")
        config = load_stage_config(path, SongClapConfig)
        model = SongClapModel(config)
        state = load_safetensors(path / MODEL_FILE)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise SongtraceError(f"{path / MODEL_FILE}: weights do not match config.json ({e})") from None
        return cls(model, config, artifact_hash(path), name=kw.pop("name", path.name), **kw)

    @property
    def has_text(self) -> bool:
        return True

    @torch.no_grad()
    def _embed_track(self, wave: np.ndarray) -> np.ndarray:
        """Per-window embeddings `[W, D]`: the track's log-mel is computed once and sliced into windows."""
        mel = log_mel(wave, self.config)
        hop = self.config.mel_hop
        width = min(max(1, round(self.window_samples / hop)), mel.shape[-1])
        starts = [min(s // hop, mel.shape[-1] - width) for s in window_starts(len(wave), self.window_samples, self.hop_samples)]
        batch = torch.stack([mel[:, s : s + width] for s in starts])
        return self.model.encode_audio(batch).numpy()

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Captions -> `[B, D]` in the audio space (frozen MiniLM + learned projection)."""
        from songtrace.codec.text import encode_sentences

        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.model.encode_text(encode_sentences(list(texts))).numpy().astype(np.float32)
