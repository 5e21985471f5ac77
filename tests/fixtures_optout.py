"""Session fixtures for the opt-out stage (see conftest.py).

`optout_model` is the tiny DiT of `tiny_model` trained 200 steps instead of 50 (about 10 s), so that
the forget and retain losses it is unlearned against mean something. `FORGET_ARTIST` (3 training
tracks of the tiny world; 8 remain to retain) is what the tests make it forget.
"""

from __future__ import annotations

import dataclasses

import pytest

from fixtures_codec import single_thread
from fixtures_model import TINY_DIT, TINY_TRAIN
from songtrace.model.train import train_model

FORGET_ARTIST = "Kilfenora Road"
OPTOUT_TRAIN = dataclasses.replace(TINY_TRAIN, steps=200, checkpoint_every=100, valid_every=100)


@pytest.fixture(scope="session")
def optout_model(tmp_path_factory, tiny_latents):
    """Path of a tiny DiT (width 16, depth 2) trained 200 steps on `tiny_latents`."""
    out = tmp_path_factory.mktemp("optout_model") / "tiny"
    with single_thread():
        train_model(OPTOUT_TRAIN, TINY_DIT, tiny_latents, out)
    return out


@pytest.fixture(scope="session")
def optout_retrained(tmp_path_factory, optout_model, tiny_latents):
    """Path of the `retrain` opt-out of FORGET_ARTIST from `optout_model` (the gold standard the tests compare with)."""
    from songtrace.optout import ForgetSpec, optout

    out = tmp_path_factory.mktemp("optout_retrained") / "retrain"
    with single_thread():
        optout(optout_model, tiny_latents, ForgetSpec(artist=FORGET_ARTIST), "retrain", out)
    return out
