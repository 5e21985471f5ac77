"""The codec: a 1-D convolutional VAE over log-mel frames, decoded to audio by Griffin-Lim.

encode: wav -> log-mel [n_mels, 4F] -> conv encoder (stride 2 per halving) -> posterior mean
[C, F] times `latent_scale` (set after training so cached latents have about unit std).
decode: latent -> conv decoder (transposed convs) -> log-mel -> linear magnitude -> Griffin-Lim.
No normalisation layers, so a frame's latent depends only on nearby audio, never on batch or padding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from songtrace.codec import mel
from songtrace.codec.config import CodecConfig


class ResBlock(nn.Module):
    """Two 3-wide convolutions with a SiLU between, added back to the input."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(width, width, 3, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(self.act(x))))


def _stages(config: CodecConfig) -> int:
    """Number of stride-2 stages: log2(downsample)."""
    return int(math.log2(config.downsample))


class Encoder(nn.Module):
    """Normalised log-mel `[B, n_mels, 4F]` -> posterior mean and log-variance `[B, 2C, F]`."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        h = config.hidden
        layers: list[nn.Module] = [nn.Conv1d(config.n_mels, h, 3, padding=1)]
        for _ in range(_stages(config)):
            layers += [ResBlock(h) for _ in range(config.res_blocks)]
            layers += [nn.SiLU(), nn.Conv1d(h, h, 4, stride=2, padding=1)]
        layers += [ResBlock(h) for _ in range(config.res_blocks)]
        layers += [nn.SiLU(), nn.Conv1d(h, 2 * config.latent_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Latent `[B, C, F]` -> normalised log-mel `[B, n_mels, 4F]`."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        h = config.hidden
        layers: list[nn.Module] = [nn.Conv1d(config.latent_channels, h, 3, padding=1)]
        for _ in range(_stages(config)):
            layers += [ResBlock(h) for _ in range(config.res_blocks)]
            layers += [nn.SiLU(), nn.ConvTranspose1d(h, h, 4, stride=2, padding=1)]
        layers += [ResBlock(h) for _ in range(config.res_blocks)]
        layers += [nn.SiLU(), nn.Conv1d(h, config.n_mels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Codec(nn.Module):
    """Audio <-> continuous latents `[B, C, F]`, one frame per `samples_per_frame` samples."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        # Derived from the config, so not saved with the weights.
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        self.register_buffer(
            "filters", mel.mel_filters(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax), persistent=False
        )
        # Fitted on training data and saved with the weights.
        self.register_buffer("mel_mean", torch.zeros(config.n_mels))
        self.register_buffer("mel_std", torch.ones(config.n_mels))
        self.register_buffer("latent_scale", torch.ones(()))

    # ------------------------------------------------------------------ frame arithmetic

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per latent frame."""
        return self.config.samples_per_frame

    @property
    def sample_rate(self) -> int:
        """Sample rate the codec works at."""
        return self.config.sample_rate

    @property
    def latent_channels(self) -> int:
        """Channels C of a latent."""
        return self.config.latent_channels

    def frames_for(self, n_samples: int) -> int:
        """Latent frames needed for `n_samples` samples (rounded up)."""
        return self.config.frames_for(n_samples)

    # ------------------------------------------------------------------ analysis

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """Log-mel `[B, n_mels, downsample * F]` of `wav [B, S]` zero-padded to whole latent frames."""
        wav = mel.pad_to_multiple(wav.float(), self.samples_per_frame)
        return mel.log_mel(wav, self.config.n_fft, self.config.hop_length, self.window, self.filters)

    def posterior(self, log_mel_spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled posterior mean and log-variance `[B, C, F]` of a log-mel `[B, n_mels, 4F]`."""
        normed = (log_mel_spec - self.mel_mean[:, None]) / self.mel_std[:, None]
        mean, logvar = self.encoder(normed).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_normed(self, z: torch.Tensor) -> torch.Tensor:
        """Log-mel from an unscaled latent (the training path)."""
        return self.decoder(z) * self.mel_std[:, None] + self.mel_mean[:, None]

    # ------------------------------------------------------------------ public API

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Latents `[B, C, F]` of `wav [B, S]`, F = frames_for(S): scaled posterior mean (deterministic)."""
        mean, _ = self.posterior(self.log_mel(wav))
        return mean * self.latent_scale

    @torch.no_grad()
    def decode_mel(self, latent: torch.Tensor) -> torch.Tensor:
        """Log-mel `[B, n_mels, downsample * F]` of latents `[B, C, F]`."""
        return self.decode_normed(latent / self.latent_scale).clamp_min(math.log(mel.LOG_FLOOR))

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, n_iter: int = 32) -> torch.Tensor:
        """Audio `[B, F * samples_per_frame]` of latents `[B, C, F]`: mel -> linear -> Griffin-Lim."""
        magnitude = mel.mel_to_magnitude(self.decode_mel(latent), self.filters)
        return mel.griffin_lim(magnitude, self.config.n_fft, self.config.hop_length, self.window, n_iter=n_iter)
