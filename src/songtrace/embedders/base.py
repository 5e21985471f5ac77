"""The `Embedder` interface: audio (any rate) -> vectors, optionally text -> vectors in the same space.

Every embedder cuts audio into windows (the paper: 10 s windows, 1 s hop on 2-minute tracks; the
demo world's 12 s tracks use 4 s / 1 s) by the one rule of `songtrace.data.windows.window_starts`
(the tail is covered), embeds each window to an L2-normalised vector, and pools a track as the
normalised mean of its windows. Its `name` and `content_hash` go into every result.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from songtrace.data.audio import resample, to_mono
from songtrace.data.windows import WINDOW_RULE, l2_normalise, window_starts
from songtrace.errors import SongtraceError


def scaled_windows(max_seconds: float) -> tuple[float, float]:
    """Window and hop (seconds) scaled to a world's longest track: a third of it, between 1 s and the
    paper's 10 s, with the paper's 1 s hop (less for windows under 4 s). 120 s -> (10, 1); 12 s -> (4, 1); 2 s -> (1, 0.25)."""
    if max_seconds <= 0:
        raise SongtraceError(f"max_seconds must be > 0, got {max_seconds}")
    window = float(min(10.0, max(1.0, max_seconds / 3.0)))
    return window, min(1.0, window / 4.0)


def split_windows(wave: np.ndarray, window: int, hop: int) -> list[np.ndarray]:
    """The windows of a waveform by `window_starts`' rule (the whole waveform when it is shorter than one window)."""
    return [wave[s : s + window] for s in window_starts(len(wave), window, hop)]


class Embedder(abc.ABC):
    """Audio -> vectors (and, for CLAP-like models, text -> vectors in the same space).

    Subclasses set `name`, `content_hash`, `sample_rate`, `window_seconds`, `hop_seconds`, `dim`
    and implement `_embed_track`: one track at `sample_rate` -> one row per window.
    """

    name: str
    content_hash: str
    sample_rate: int
    window_seconds: float
    hop_seconds: float
    dim: int

    @abc.abstractmethod
    def _embed_track(self, wave: np.ndarray) -> np.ndarray:
        """Embed the windows of one mono track at `sample_rate` -> `[W, D]` (raw, not normalised)."""

    @property
    def has_text(self) -> bool:
        """Whether `embed_text` maps text into the audio space."""
        return False

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Text -> `[B, D]` L2-normalised vectors in the audio space; errors for audio-only embedders."""
        raise SongtraceError(f"embedder {self.name!r} has no text side; use a CLAP-like embedder (songclap, clap)")

    @property
    def window_samples(self) -> int:
        """Window length in samples at the native rate."""
        return max(1, round(self.window_seconds * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        """Hop length in samples at the native rate."""
        return max(1, round(self.hop_seconds * self.sample_rate))

    def windows(self, wave: np.ndarray) -> list[np.ndarray]:
        """The windows of a native-rate track (the whole track when it is shorter than one window)."""
        return split_windows(wave, self.window_samples, self.hop_samples)

    def prepare(self, wave: np.ndarray, sr: int) -> np.ndarray:
        """Mono float32 audio at the embedder's native rate."""
        return resample(to_mono(wave), sr, self.sample_rate)

    def embed_windows(self, wave: np.ndarray, sr: int, normalise: bool = True) -> np.ndarray:
        """Per-window embeddings `[W, D]`, windows of `window_seconds` every `hop_seconds`.

        L2-normalised by default (for cosine similarities); `normalise=False` gives the raw vectors
        that Frechet distances are computed on (as fadtk and stable-audio-metrics do).
        """
        wave = self.prepare(wave, sr)
        if len(wave) == 0:
            raise SongtraceError(f"embedder {self.name!r}: cannot embed empty audio")
        emb = np.asarray(self._embed_track(wave), dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise SongtraceError(f"embedder {self.name!r} returned shape {emb.shape}, expected [windows, {self.dim}]")
        return l2_normalise(emb) if normalise else emb

    def embed_audio(self, waves: Sequence[np.ndarray], sr: int) -> np.ndarray:
        """One vector per track `[B, D]`: the L2-normalised mean of its normalised window embeddings."""
        if len(waves) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([l2_normalise(self.embed_windows(w, sr).mean(axis=0)) for w in waves]).astype(np.float32)

    def describe(self) -> dict[str, object]:
        """What results record about the embedder that made them."""
        return {
            "name": self.name,
            "content_hash": self.content_hash,
            "sample_rate": self.sample_rate,
            "window_seconds": self.window_seconds,
            "hop_seconds": self.hop_seconds,
            "dim": self.dim,
            "window_rule": WINDOW_RULE,
        }

    def __repr__(self) -> str:
        cls = type(self).__name__
        return f"{cls}(name={self.name!r}, hash={self.content_hash[:12]}, window={self.window_seconds}s, hop={self.hop_seconds}s)"
