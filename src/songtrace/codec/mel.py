"""Log-mel analysis and Griffin-Lim synthesis in torch: pure, deterministic functions.

Framing: the signal (a whole number of hops long) is zero-padded by `(n_fft - hop) / 2` on both
sides, so `S` samples give exactly `S / hop` frames and frame k is centred on hop k's middle.
`stft` and `istft` share that framing, so Griffin-Lim round-trips to the same sample grid.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

LOG_FLOOR = 1e-5  # magnitude floor before the log: silence maps to log(1e-5) ~ -11.5


@functools.lru_cache(maxsize=8)
def _mel_filters_np(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32)


def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """Slaney mel filterbank `[n_mels, n_fft // 2 + 1]` (librosa's)."""
    return torch.from_numpy(_mel_filters_np(sample_rate, n_fft, n_mels, float(fmin), fmax).copy())


def pad_to_multiple(wav: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the last axis up to a whole number of `multiple` samples."""
    extra = (-wav.shape[-1]) % multiple
    return F.pad(wav, (0, extra)) if extra else wav


def stft(wav: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Complex STFT `[B, n_fft // 2 + 1, S / hop]` of `wav [B, S]` (S a multiple of hop)."""
    if wav.shape[-1] % hop:
        raise ValueError(f"signal length {wav.shape[-1]} is not a multiple of hop {hop}")
    side = (n_fft - hop) // 2
    padded = F.pad(wav, (side, side))
    return torch.stft(padded, n_fft, hop, window=window, center=False, return_complex=True)


def istft(spec: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Inverse of `stft` by weighted overlap-add: `[B, F, T] -> [B, T * hop]`."""
    n_frames = spec.shape[-1]
    side = (n_fft - hop) // 2
    total = (n_frames - 1) * hop + n_fft
    frames = torch.fft.irfft(spec.transpose(1, 2), n=n_fft) * window  # [B, T, n_fft]
    ola = F.fold(frames.transpose(1, 2), output_size=(1, total), kernel_size=(1, n_fft), stride=(1, hop)).reshape(spec.shape[0], total)
    env_frames = (window * window).expand(1, n_frames, n_fft).transpose(1, 2)
    envelope = F.fold(env_frames, output_size=(1, total), kernel_size=(1, n_fft), stride=(1, hop)).reshape(1, total)
    out = ola / envelope.clamp_min(1e-8)
    return out[:, side : side + n_frames * hop]


def magnitude_to_log_mel(magnitude: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Log mel magnitudes `[B, n_mels, T]` from linear STFT magnitudes `[B, F, T]`."""
    return torch.log(torch.clamp(filters @ magnitude, min=LOG_FLOOR))


def log_mel(wav: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Log mel magnitude spectrogram `[B, n_mels, S / hop]` of `wav [B, S]`."""
    return magnitude_to_log_mel(stft(wav, n_fft, hop, window).abs(), filters)


def mel_to_magnitude(log_mel_spec: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Approximate linear STFT magnitudes from log-mel: non-negative pseudo-inverse of the filterbank."""
    inverse = torch.linalg.pinv(filters)  # [F, n_mels]
    return torch.clamp(inverse @ torch.exp(log_mel_spec), min=0.0)


def griffin_lim(
    magnitude: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, n_iter: int = 32, momentum: float = 0.99
) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al.) from zero phase: deterministic waveform `[B, T * hop]`."""
    angles = torch.ones_like(magnitude, dtype=torch.complex64)
    previous = torch.zeros_like(angles)
    for _ in range(n_iter):
        rebuilt = stft(istft(magnitude * angles, n_fft, hop, window), n_fft, hop, window)
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    return istft(magnitude * angles, n_fft, hop, window)


def spectral_convergence(reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Per-item spectral convergence ||ref - est||_F / ||ref||_F of magnitudes `[B, F, T]`."""
    num = torch.linalg.vector_norm((reference - estimate).flatten(1), dim=1)
    den = torch.linalg.vector_norm(reference.flatten(1), dim=1).clamp_min(1e-12)
    return num / den
