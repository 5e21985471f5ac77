"""`dsp`: an embedder with no learned weights (MFCC, chroma, spectral statistics pooled over windows).

The fallback that always works. Frame features are computed once per track and pooled per window.
Each block (timbre, timbre dynamics, harmony, spectral shape) is scaled to (at most) unit length,
so the cosine of two embeddings is about the mean of the blocks' cosines rather than being
dominated by whichever feature has the largest units.
"""

from __future__ import annotations

import numpy as np

from songtrace.artifacts import hash_json
from songtrace.data.windows import window_starts
from songtrace.embedders.base import Embedder

FEATURE_VERSION = 3  # bump when the features change, so the content hash changes (3: windows cover the tail)
N_MFCC = 20
N_CHROMA = 12
N_SHAPE = 5
BLOCKS = ("timbre", "dynamics", "harmony", "shape")


def frame_features(wave: np.ndarray, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """Per-frame features `[T, 19 + 12 + 5]`: MFCC 1..19, chroma, log spectral shape statistics."""
    import librosa

    if len(wave) < n_fft:
        wave = np.pad(wave, (0, n_fft - len(wave)))
    mag = np.abs(librosa.stft(wave, n_fft=n_fft, hop_length=hop, center=True))
    power = mag**2
    mel = librosa.feature.melspectrogram(S=power, sr=sample_rate, n_mels=n_mels, fmax=sample_rate / 2)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel, ref=1.0, amin=1e-10), n_mfcc=N_MFCC)[1:]
    chroma = librosa.feature.chroma_stft(S=power, sr=sample_rate, n_fft=n_fft, tuning=0.0)
    centroid = librosa.feature.spectral_centroid(S=mag, sr=sample_rate, n_fft=n_fft)
    bandwidth = librosa.feature.spectral_bandwidth(S=mag, sr=sample_rate, n_fft=n_fft)
    rolloff = librosa.feature.spectral_rolloff(S=mag, sr=sample_rate, n_fft=n_fft)
    flatness = librosa.feature.spectral_flatness(S=mag)
    rms = librosa.feature.rms(S=mag, frame_length=n_fft)
    shape = np.concatenate(
        [
            np.log2(np.maximum(centroid, 1.0) / 1000.0),
            np.log2(np.maximum(bandwidth, 1.0) / 1000.0),
            np.log2(np.maximum(rolloff, 1.0) / 2000.0),
            np.log10(np.maximum(flatness, 1e-8)) / 2.0 + 1.5,
            np.log10(np.maximum(rms, 1e-6)) + 1.5,
        ]
    )
    return np.concatenate([mfcc, chroma, shape]).T.astype(np.float64)


def soft_unit(block: np.ndarray, floor: float) -> np.ndarray:
    """Scale a block to unit length, but never up by more than 1/floor: near-empty blocks stay small
    instead of turning their noise into a full-weight direction."""
    return block / max(float(np.linalg.norm(block)), floor)


def pool_window(frames: np.ndarray) -> np.ndarray:
    """One window's embedding from its frame features: four centred blocks of at most unit length."""
    mfcc, chroma, shape = frames[:, : N_MFCC - 1], frames[:, N_MFCC - 1 : N_MFCC - 1 + N_CHROMA], frames[:, -N_SHAPE:]
    timbre = soft_unit(mfcc.mean(axis=0), 10.0)  # dB units
    dynamics = soft_unit(mfcc.std(axis=0), 5.0)  # how much the timbre moves, dB
    harmony = chroma.mean(axis=0)
    harmony = soft_unit(harmony - harmony.mean(), 0.2)
    shape_stats = soft_unit(np.concatenate([shape.mean(axis=0), shape.std(axis=0) - 0.5]), 0.5)
    return np.concatenate([timbre, dynamics, harmony, shape_stats]) / np.sqrt(len(BLOCKS))


class DspEmbedder(Embedder):
    """MFCC + chroma + spectral statistics; deterministic, weight-free, audio only."""

    def __init__(
        self,
        window_seconds: float = 4.0,
        hop_seconds: float = 1.0,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        frame_hop: int = 512,
        n_mels: int = 64,
    ) -> None:
        self.name = "dsp"
        self.sample_rate = int(sample_rate)
        self.window_seconds = float(window_seconds)
        self.hop_seconds = float(hop_seconds)
        self.n_fft = int(n_fft)
        self.frame_hop = int(frame_hop)
        self.n_mels = int(n_mels)
        self.dim = (N_MFCC - 1) * 2 + N_CHROMA + 2 * N_SHAPE
        settings = {"v": FEATURE_VERSION, "sr": self.sample_rate, "n_fft": self.n_fft, "hop": self.frame_hop, "n_mels": self.n_mels}
        self.content_hash = hash_json(settings)

    def _frame_range(self, start: int, length: int, n_frames: int) -> slice:
        """Frames (centred STFT) whose centres fall inside samples [start, start + length)."""
        first = int(np.ceil(start / self.frame_hop))
        last = int(np.ceil((start + length) / self.frame_hop))
        first = min(first, n_frames - 1)
        return slice(first, max(first + 1, min(last, n_frames)))

    def _embed_track(self, wave: np.ndarray) -> np.ndarray:
        """Per-window embeddings `[W, D]`; frame features are computed once for the whole track."""
        feats = frame_features(wave, self.sample_rate, self.n_fft, self.frame_hop, self.n_mels)
        length = min(self.window_samples, len(wave))
        starts = window_starts(len(wave), self.window_samples, self.hop_samples)
        return np.stack([pool_window(feats[self._frame_range(s, length, len(feats))]) for s in starts])
