"""Retraining a model's own recipe on a subset of its training split (the gold standard of opt-out)."""

from __future__ import annotations

import json

import pytest

from fixtures_model import TINY_DIT, synthetic_latent_set
from songtrace.artifacts import artifact_hash
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.train import TrainConfig, model_recipe, retrain_without, train_model

CFG = TrainConfig(steps=6, batch_size=4, lr=3e-3, warmup=2, checkpoint_every=3, valid_every=3, valid_timesteps=2, log_every=2)


@pytest.fixture(scope="module")
def original(tmp_path_factory, synthetic_latents):
    out = tmp_path_factory.mktemp("retrain") / "orig"
    train_model(CFG, TINY_DIT, synthetic_latents, out)
    return out


def test_retrain_without_nothing_repeats_the_original_bit_for_bit(tmp_path, original, synthetic_latents):
    retrain_without(original, synthetic_latents, [], tmp_path / "same")
    assert artifact_hash(tmp_path / "same") == artifact_hash(original)
    assert model_recipe(tmp_path / "same") == model_recipe(original)


def test_retrain_excludes_exactly_the_given_ids(tmp_path, original, synthetic_latents):
    train_ids = LatentSet.load(synthetic_latents).subset("train").ids
    forget = train_ids[:2]
    metrics = retrain_without(original, synthetic_latents, forget, tmp_path / "r")
    assert metrics["train_items"] == len(train_ids) - 2
    record = json.loads((tmp_path / "r" / "config.json").read_text())
    assert record["excluded_ids"] == sorted(forget) and "excluded" in record["inputs"]
    assert model_recipe(tmp_path / "r") == model_recipe(original)
    assert artifact_hash(tmp_path / "r") != artifact_hash(original)
    # the same as training the recipe directly with the exclusion
    direct = train_model(CFG, TINY_DIT, synthetic_latents, tmp_path / "d", exclude_ids=list(reversed(forget)))
    assert artifact_hash(tmp_path / "d") == artifact_hash(tmp_path / "r") and direct["train_items"] == metrics["train_items"]


def test_retrain_refuses_bad_exclusions_and_other_data(tmp_path, original, synthetic_latents):
    data = LatentSet.load(synthetic_latents)
    with pytest.raises(SongtraceError, match="not in the train split"):
        retrain_without(original, synthetic_latents, ["nope"], tmp_path / "a")
    valid_id = data.subset("valid").ids[0]
    with pytest.raises(SongtraceError, match="not in the train split"):
        retrain_without(original, synthetic_latents, [valid_id], tmp_path / "b")
    with pytest.raises(SongtraceError, match="leaves no training item"):
        retrain_without(original, synthetic_latents, data.subset("train").ids, tmp_path / "c")
    other = tmp_path / "other_latents"
    synthetic_latent_set(seed=5).save(other)
    with pytest.raises(SongtraceError, match="trained on other data"):
        retrain_without(original, other, [], tmp_path / "e")
    assert not any((tmp_path / n).exists() for n in "abce")
