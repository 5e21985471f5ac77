"""Session fixtures for the model stage (see conftest.py).

- `tiny_dit(...)`: an untrained DiT of ~20 k weights (width 16, depth 2, heads 2), for unit tests.
- `synthetic_latent_set(...)`: a small LatentSet with artist-dependent latents and random caption
  tokens, so model tests need neither a codec nor the text encoder.
- `distinct_latent_set(...)`: tracks that differ only in content (one sinusoid each), one shared caption.
- `tiny_model`: Path of a tiny DiT trained ~50 steps on `tiny_latents` (takes seconds).
- `tiny_diffusers(...)`: diffusers' `StableAudioDiTModel` adapter on a tiny random config (~27 k weights,
  latents 4 x 16, 384-d caption tokens like `synthetic_latent_set`); needs diffusers.
"""

from __future__ import annotations

import pytest
import torch

from songtrace.data.latents import LatentSet
from songtrace.model.dit import tiny_dit
from songtrace.model.train import TrainConfig, train_model

__all__ = ["TINY_DIFFUSERS", "TINY_DIT", "TINY_TRAIN", "distinct_latent_set", "synthetic_latent_set", "tiny_diffusers", "tiny_dit"]

TINY_DIT = {"width": 16, "depth": 2, "heads": 2, "cond_dim": 16, "timestep_features": 16, "timing_features": 8}
TINY_DIFFUSERS = {
    "arch": "diffusers-stable-audio",
    "spec": {
        "transformer": {"sample_size": 16, "in_channels": 4, "num_layers": 2, "attention_head_dim": 8, "num_attention_heads": 2,
                        "num_key_value_attention_heads": 1, "out_channels": 4, "cross_attention_dim": 16, "time_proj_dim": 16,
                        "global_states_input_dim": 32, "cross_attention_input_dim": 16},
        "projection": {"text_encoder_dim": 384, "conditioning_dim": 16, "min_value": 0, "max_value": 64},
    },
}
TINY_TRAIN = TrainConfig(steps=50, batch_size=8, lr=3e-3, warmup=5, checkpoint_every=20, valid_every=25, valid_timesteps=2, log_every=5)


def tiny_diffusers(seed: int = 0):
    """The diffusers Stable Audio DiT adapter with random weights (seeded), in eval mode."""
    from songtrace.model.registry import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(TINY_DIFFUSERS).eval()


def synthetic_latent_set(n: int = 12, channels: int = 4, length: int = 16, seed: int = 0, n_tokens: int = 6) -> LatentSet:
    """Items of 3 artists: each artist's latents are its own sinusoid pattern plus noise, zero-padded after n_frames."""
    g = torch.Generator().manual_seed(seed)
    artists = [f"artist{i % 3}" for i in range(n)]
    frames = torch.arange(length, dtype=torch.float32)
    latents = torch.zeros(n, channels, length)
    n_frames = torch.randint(length // 2, length + 1, (n,), generator=g)
    artist_tokens = torch.randn(3, n_tokens, 384, generator=g)
    text = torch.zeros(n, n_tokens + 2, 384)
    text_mask = torch.zeros(n, n_tokens + 2, dtype=torch.bool)
    for i in range(n):
        a = i % 3
        pattern = torch.sin(frames[None] * (a + 1) * 0.4 + torch.arange(channels)[:, None])
        latents[i, :, : n_frames[i]] = (pattern + 0.1 * torch.randn(channels, length, generator=g))[:, : n_frames[i]]
        k = n_tokens - (i % 2)  # captions of different lengths
        text[i, :k] = artist_tokens[a, :k] + 0.05 * torch.randn(k, 384, generator=g)
        text_mask[i, :k] = True
    seconds_total = n_frames.float() * 0.1
    return LatentSet(
        ids=[f"s{i:03d}" for i in range(n)],
        artists=artists,
        splits=["valid" if i % 4 == 3 else "train" for i in range(n)],
        latents=latents,
        n_frames=n_frames.long(),
        text=text,
        text_mask=text_mask,
        seconds_start=torch.zeros(n),
        seconds_total=seconds_total,
    )


def distinct_latent_set(n: int = 12, channels: int = 4, length: int = 32, seed: int = 0, n_tokens: int = 6,
                        shared_caption: bool = True) -> LatentSet:
    """Tracks told apart by their content alone: track i is a sinusoid of its own frequency (0.2 + 0.23 i rad/frame).

    With `shared_caption` every track has the same caption tokens; otherwise each has its own random ones.
    10 latent frames per second; 4 artists in turn.
    """
    g = torch.Generator().manual_seed(seed)
    frames = torch.arange(length, dtype=torch.float32)
    latents = torch.zeros(n, channels, length)
    for i in range(n):
        phase = torch.rand(channels, 1, generator=g) * 2 * torch.pi
        latents[i] = torch.sin(frames[None] * (0.2 + 0.23 * i) + phase) + 0.1 * torch.randn(channels, length, generator=g)
    caption = torch.randn(n_tokens, 384, generator=g)
    text = caption.expand(n, n_tokens, 384).clone() if shared_caption else torch.randn(n, n_tokens, 384, generator=g)
    return LatentSet(
        ids=[f"d{i:03d}" for i in range(n)],
        artists=[f"artist{i % 4}" for i in range(n)],
        splits=["train"] * n,
        latents=latents,
        n_frames=torch.full((n,), length, dtype=torch.long),
        text=text,
        text_mask=torch.ones(n, n_tokens, dtype=torch.bool),
        seconds_start=torch.zeros(n),
        seconds_total=torch.full((n,), length / 10.0),
    )


@pytest.fixture(scope="session")
def synthetic_latents(tmp_path_factory):
    """Path of a saved `synthetic_latent_set()`."""
    out = tmp_path_factory.mktemp("synthetic_latents") / "syn"
    synthetic_latent_set().save(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_latents):
    """Path of a tiny DiT (width 16, depth 2, heads 2) trained 50 steps on `tiny_latents`."""
    out = tmp_path_factory.mktemp("model") / "tiny"
    train_model(TINY_TRAIN, TINY_DIT, tiny_latents, out)
    return out
