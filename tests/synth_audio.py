"""Synthetic audio for the evaluate tests: harmonic tones whose pitch and timbre define an 'artist'."""

from __future__ import annotations

import numpy as np

from songtrace.embedders.base import Embedder
from songtrace.world.tracks import TrackSet

ARTISTS = {"low organ": (110.0, 0.8), "mid flute": (330.0, 0.1), "high organ": (880.0, 0.8), "bass sine": (55.0, 0.0)}


def tone(f0: float, brightness: float, seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """A harmonic tone with vibrato-free tremolo and a little noise; `brightness` weights the overtones."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(brightness ** (k - 1) * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) for k in range(1, 7) if f0 * k < sr / 2)
    wave = wave / np.max(np.abs(wave)) * (0.3 + 0.1 * np.sin(2 * np.pi * 1.5 * t))
    return (wave + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def synthetic_tracks(per_artist: int, sr: int = 16000, seconds: tuple[float, float] = (1.5, 3.0), seed: int = 0) -> TrackSet:
    """`per_artist` tracks of each synthetic artist, with captions naming its pitch and timbre."""
    rng = np.random.default_rng(seed)
    ids, waves, artists, captions = [], [], [], []
    for a, (name, (f0, bright)) in enumerate(ARTISTS.items()):
        for k in range(per_artist):
            detune = 2 ** (rng.uniform(-2, 2) / 12)
            waves.append(tone(f0 * detune, bright, rng.uniform(*seconds), sr, seed=seed * 1000 + a * 100 + k))
            ids.append(f"{a}-{k}")
            artists.append(name)
            captions.append(f"a {name} tone")
    return TrackSet(ids, waves, sr, artists, captions, source="synthetic")


class BandEmbedder(Embedder):
    """A tiny hand-made CLAP-like embedder: audio -> energy in four octave bands; text -> the band its
    pitch word names. Counts how many windows it embeds, so caching can be checked."""

    BANDS = ((40.0, 80.0), (80.0, 200.0), (200.0, 600.0), (600.0, 1200.0))
    WORDS = ("bass", "low", "mid", "high")

    def __init__(self, window_seconds: float = 0.5, hop_seconds: float = 0.25) -> None:
        self.name, self.content_hash, self.sample_rate, self.dim = "bands", "bands-v1", 8000, 4
        self.window_seconds, self.hop_seconds = window_seconds, hop_seconds
        self.windows_embedded = 0

    @property
    def has_text(self) -> bool:
        return True

    def _embed_track(self, wave: np.ndarray) -> np.ndarray:
        rows = []
        for w in self.windows(wave):
            spec = np.abs(np.fft.rfft(w)) ** 2
            freqs = np.fft.rfftfreq(len(w), 1 / self.sample_rate)
            rows.append([spec[(freqs >= lo) & (freqs < hi)].sum() for lo, hi in self.BANDS])
            self.windows_embedded += 1
        return np.sqrt(np.asarray(rows)) + 1e-6

    def embed_text(self, texts):
        out = np.zeros((len(texts), 4), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i, [j for j, word in enumerate(self.WORDS) if word in text]] = 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
