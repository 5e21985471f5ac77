"""Session fixtures for the codec stage (see conftest.py).

`tiny_codec` is a 16-wide codec trained for 30 steps on `tiny_world`; `tiny_latents` is the latent
cache of `tiny_world` made with it. `synthetic_world` is an in-memory world of harmonic note
sequences (the `World` attributes the codec reads), used where a test needs audio it controls.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from songtrace.artifacts import hash_json
from songtrace.codec import CodecConfig, encode_world, train_codec

TINY_CODEC = CodecConfig(
    hidden=16, latent_channels=4, steps=30, batch_size=4, segment_seconds=0.5, checkpoint_every=10, lr=3e-3, warmup_steps=5
)


@dataclasses.dataclass(frozen=True)
class SyntheticWorldConfig:
    max_seconds: float = 2.0


def harmonic_track(rng: np.random.Generator, seconds: float, sr: int, base_midi: int) -> np.ndarray:
    """A sequence of harmonic notes (1/k partials, decaying envelopes) plus a little noise."""
    n = round(seconds * sr)
    out = np.zeros(n, dtype=np.float64)
    note_len = int(0.25 * sr)
    t = np.arange(note_len) / sr
    env = np.exp(-4.0 * t) * np.minimum(1.0, t / 0.01)
    for start in range(0, n, note_len):
        f0 = 440.0 * 2 ** ((base_midi + int(rng.choice([0, 2, 4, 5, 7, 9, 11, 12])) - 69) / 12)
        note = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 6) if k * f0 < sr / 2)
        seg = (0.2 * env * note)[: n - start]
        out[start : start + len(seg)] += seg
    out += 0.003 * rng.standard_normal(n)
    return out.astype(np.float32)


class SyntheticWorld:
    """In-memory world of harmonic tracks with the attributes the codec reads."""

    def __init__(self, n_tracks: int = 12, sample_rate: int = 16000, seed: int = 0, min_seconds: float = 1.0, max_seconds: float = 2.0):
        rng = np.random.default_rng(seed)
        self.sample_rate = sample_rate
        self.config = SyntheticWorldConfig(max_seconds=max_seconds)
        durations = np.round(rng.uniform(min_seconds, max_seconds, n_tracks), 3)
        artists = [f"artist{i % 3}" for i in range(n_tracks)]
        self._audio = {f"t{i:03d}": harmonic_track(rng, d, sample_rate, 48 + 7 * (i % 3)) for i, d in enumerate(durations)}
        self.manifest = pd.DataFrame(
            {
                "id": list(self._audio),
                "artist": artists,
                "caption": [f"a short piece by {a}" for a in artists],
                "duration": [len(a) / sample_rate for a in self._audio.values()],
                "split": ["valid" if i % 4 == 3 else "train" for i in range(n_tracks)],
            }
        )
        self.content_hash = hash_json({"synthetic": seed, "n": n_tracks, "sr": sample_rate})

    def audio(self, track_id: str) -> np.ndarray:
        return self._audio[track_id].copy()


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread and restore the setting: two threads on a shared 2-core box are far slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """`single_thread` for one test."""
    with single_thread():
        yield


@pytest.fixture(scope="session")
def synthetic_world() -> SyntheticWorld:
    return SyntheticWorld()


@pytest.fixture(scope="session")
def tiny_codec(tmp_path_factory, tiny_world):
    """Path of a tiny codec (16 wide, 4 latent channels) trained for 30 steps on `tiny_world`."""
    out = tmp_path_factory.mktemp("codec") / "tiny"
    with single_thread():
        train_codec(TINY_CODEC, tiny_world, out)
    return out


@pytest.fixture(scope="session")
def tiny_latents(tmp_path_factory, tiny_world, tiny_codec):
    """Path of the latent cache of `tiny_world` encoded with `tiny_codec` ([12, 4, 21] latents)."""
    out = tmp_path_factory.mktemp("latents") / "tiny"
    with single_thread():
        encode_world(tiny_world, tiny_codec, out)
    return out
