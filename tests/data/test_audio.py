"""The one mono conversion and the one resampler every stage uses."""

from __future__ import annotations

import numpy as np
import pytest

from songtrace.data.audio import resample, to_mono
from songtrace.errors import SongtraceError


def test_to_mono_reads_both_channel_layouts():
    stereo = np.stack([np.ones(100), np.zeros(100)])  # [ch, S]
    assert np.allclose(to_mono(stereo), 0.5) and to_mono(stereo).shape == (100,)
    assert np.allclose(to_mono(stereo.T), 0.5)  # soundfile's [S, ch]
    assert to_mono(np.ones((5, 1))).shape == (5,)
    assert to_mono(np.arange(4.0)).dtype == np.float32


def test_to_mono_refuses_non_finite_samples_and_odd_shapes():
    with pytest.raises(SongtraceError, match=r"x\.wav: audio contains NaN"):
        to_mono(np.array([0.0, np.nan]), "x.wav")
    with pytest.raises(SongtraceError, match=r"not \(samples, channels\) audio"):
        to_mono(np.zeros((20, 30)))
    with pytest.raises(SongtraceError, match="must be"):
        to_mono(np.zeros((2, 2, 2)))


def test_resample_keeps_a_tone_and_is_identity_at_the_same_rate():
    sr = 16000
    tone = np.sin(2 * np.pi * 440 * np.arange(sr) / sr).astype(np.float32)
    assert resample(tone, sr, sr) is not None and np.array_equal(resample(tone, sr, sr), tone)
    up = resample(tone, sr, 44100)
    assert len(up) == 44100 and up.dtype == np.float32
    peak = np.argmax(np.abs(np.fft.rfft(up))) * 44100 / len(up)
    assert abs(peak - 440) < 2
    with pytest.raises(SongtraceError, match="sample rates"):
        resample(tone, 0, sr)
