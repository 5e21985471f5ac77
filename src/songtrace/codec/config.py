"""The codec stage's config: mel front end, autoencoder size, KL weight and the training schedule."""

from __future__ import annotations

import dataclasses
import math

from songtrace.artifacts import StageConfig, check_positive
from songtrace.errors import SongtraceError


@dataclasses.dataclass(frozen=True)
class CodecConfig(StageConfig):
    """An audio <-> latent autoencoder over log-mel frames, KL-regularised like the Stable Audio VAE.

    One latent frame covers `hop_length * downsample` samples (1536 at the defaults: 96 ms,
    about 10.4 frames per second, so a 12 s track is 125 frames).
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 384  # samples per mel frame
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None  # None = Nyquist
    downsample: int = 4  # mel frames per latent frame (a power of two: one stride-2 conv per halving)
    latent_channels: int = 8
    hidden: int = 64
    res_blocks: int = 1  # residual blocks per resolution
    kl_weight: float = 1e-4
    sc_weight: float = 1.0  # weight of the mel spectral-convergence loss beside the log-mel L1
    steps: int = 3000
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 50
    grad_clip: float = 1.0
    segment_seconds: float = 3.0  # training crop length
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate every field, naming the bad one."""
        super().__post_init__()
        for name in (
            "sample_rate",
            "n_fft",
            "hop_length",
            "n_mels",
            "downsample",
            "latent_channels",
            "hidden",
            "steps",
            "batch_size",
            "lr",
            "segment_seconds",
            "checkpoint_every",
            "grad_clip",
        ):
            check_positive(name, getattr(self, name))
        for name in ("res_blocks", "kl_weight", "sc_weight", "warmup_steps", "fmin", "seed"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if self.hop_length >= self.n_fft or (self.n_fft - self.hop_length) % 2:
            raise SongtraceError(
                f"hop_length must be < n_fft with an even difference, got n_fft={self.n_fft}, hop_length={self.hop_length}"
            )
        if self.n_mels > self.n_fft // 2 + 1:
            raise SongtraceError(f"n_mels ({self.n_mels}) must be <= n_fft // 2 + 1 ({self.n_fft // 2 + 1})")
        if self.downsample & (self.downsample - 1):
            raise SongtraceError(f"downsample must be a power of two, got {self.downsample}")
        nyquist = self.sample_rate / 2
        fmax = nyquist if self.fmax is None else self.fmax
        if not self.fmin < fmax <= nyquist:
            raise SongtraceError(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, fmax={self.fmax}")
        if self.segment_frames < 1:
            raise SongtraceError(
                f"segment_seconds={self.segment_seconds} is shorter than one latent frame ({self.seconds_per_frame:.3f} s)"
            )

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per latent frame."""
        return self.hop_length * self.downsample

    @property
    def seconds_per_frame(self) -> float:
        """Seconds per latent frame."""
        return self.samples_per_frame / self.sample_rate

    @property
    def segment_frames(self) -> int:
        """Latent frames per training crop."""
        return int(self.segment_seconds * self.sample_rate) // self.samples_per_frame

    def frames_for(self, n_samples: int) -> int:
        """Latent frames needed to hold `n_samples` audio samples (rounded up)."""
        return math.ceil(n_samples / self.samples_per_frame)


@dataclasses.dataclass(frozen=True)
class EncodeConfig(StageConfig):
    """The latent-cache stage (`songtrace encode`): how many tracks to encode at once."""

    batch_size: int = 16

    def __post_init__(self) -> None:
        """Validate."""
        super().__post_init__()
        check_positive("batch_size", self.batch_size)
