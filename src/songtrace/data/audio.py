"""The audio helpers every stage shares: one way to make mono float audio and one way to resample it.

Files come as `[S]`, `[S, ch]` (soundfile's layout) or `[ch, S]` (librosa's and torch's); a
2-D array whose smaller side has at most 8 entries is read as channels on that side. Resampling
is soxr's high quality mode (deterministic), a no-op when the rates match.
"""

from __future__ import annotations

import numpy as np

from songtrace.errors import SongtraceError

MAX_CHANNELS = 8


def to_mono(wave: np.ndarray, source: str = "audio") -> np.ndarray:
    """Mono float32 audio `[S]` from `[S]`, `[S, ch]` or `[ch, S]`; refuses NaN/inf samples and other shapes."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:
        small = int(np.argmin(wave.shape))
        if wave.shape[small] > MAX_CHANNELS:
            raise SongtraceError(f"{source}: a 2-D array of shape {wave.shape} is not (samples, channels) audio")
        wave = wave.mean(axis=small).astype(np.float32)
    if wave.ndim != 1:
        raise SongtraceError(f"{source}: audio must be [samples] or [samples, channels], got shape {wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise SongtraceError(f"{source}: audio contains NaN or infinite samples")
    return wave


def resample(wave: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Resample mono float audio from `sr_from` to `sr_to` Hz (soxr high quality); identity when the rates match."""
    if sr_from <= 0 or sr_to <= 0:
        raise SongtraceError(f"sample rates must be > 0, got {sr_from} -> {sr_to}")
    if sr_from == sr_to:
        return np.asarray(wave, dtype=np.float32)
    import librosa

    return librosa.resample(np.asarray(wave, dtype=np.float32), orig_sr=sr_from, target_sr=sr_to, res_type="soxr_hq").astype(np.float32)
