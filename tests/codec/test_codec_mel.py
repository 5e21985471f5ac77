"""Mel analysis and Griffin-Lim: exact STFT round trip, shapes, and phase recovery."""

import math

import torch

from songtrace.codec import mel


def tone(n: int, sr: int = 16000) -> torch.Tensor:
    t = torch.arange(n) / sr
    return (0.3 * torch.sin(2 * math.pi * 440 * t) + 0.1 * torch.sin(2 * math.pi * 1250 * t)).unsqueeze(0)


def test_stft_istft_round_trip_is_exact_and_frames_are_hops():
    window = torch.hann_window(1024)
    x = torch.randn(2, 384 * 20)
    spec = mel.stft(x, 1024, 384, window)
    assert spec.shape == (2, 513, 20)
    assert torch.allclose(mel.istft(spec, 1024, 384, window), x, atol=1e-5)


def test_log_mel_shape_floor_and_padding():
    window, filters = torch.hann_window(1024), mel.mel_filters(16000, 1024, 64)
    assert filters.shape == (64, 513)
    x = mel.pad_to_multiple(tone(5000), 1536)
    assert x.shape[-1] == 6144
    lm = mel.log_mel(x, 1024, 384, window, filters)
    assert lm.shape == (1, 64, 16)
    silent = mel.log_mel(torch.zeros(1, 1536), 1024, 384, window, filters)
    assert torch.all(silent == math.log(mel.LOG_FLOOR))
    assert lm.max() > math.log(mel.LOG_FLOOR) + 5


def test_griffin_lim_recovers_a_tone_and_is_deterministic():
    window = torch.hann_window(1024)
    x = tone(384 * 40)
    mag = mel.stft(x, 1024, 384, window).abs()
    y = mel.griffin_lim(mag, 1024, 384, window, n_iter=32)
    assert y.shape == x.shape
    sc = mel.spectral_convergence(mag, mel.stft(y, 1024, 384, window).abs())
    assert float(sc) < 0.2
    assert torch.equal(y, mel.griffin_lim(mag, 1024, 384, window, n_iter=32))


def test_spectral_convergence_is_zero_for_identical_and_one_for_zero_estimate():
    a = torch.rand(3, 10, 7)
    assert torch.allclose(mel.spectral_convergence(a, a), torch.zeros(3))
    assert torch.allclose(mel.spectral_convergence(a, torch.zeros_like(a)), torch.ones(3))
