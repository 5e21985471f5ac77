"""Shared tiny fixtures: a world of a dozen 1-2 s tracks, a tiny codec, its latent cache, a tiny DiT.

Each stage's fixtures live in its own plugin module (session-scoped, built once per test run).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("SONGTRACE_QUIET", "1")

import torch

# Tiny models run fastest, and reproducibly, on one thread; CI machines are small and shared.
torch.set_num_threads(1)

pytest_plugins = ["fixtures_world", "fixtures_codec", "fixtures_model", "fixtures_optout", "fixtures_real"]
