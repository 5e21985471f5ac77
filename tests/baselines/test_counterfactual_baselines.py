"""MUCS-style, Attribute-by-Unlearning-style and fast-index methods behind the common interface, on a tiny DiT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures_model import synthetic_latent_set
from songtrace.attribution import FisherConfig, ScoreConfig, UnlearnConfig, compute_fisher
from songtrace.baselines.base import QueryItem, TrainingSet, build_method, method_names, score_many
from songtrace.baselines.mucs import bounded_ascent_loss, normalised_skew
from songtrace.errors import SongtraceError
from songtrace.model.dit import tiny_dit


@pytest.fixture(scope="module")
def setup():
    latents = synthetic_latent_set(n=12)
    model = tiny_dit(latent_channels=4, latent_length=16, seed=1)
    fisher = compute_fisher(model, latents, FisherConfig(n_timesteps=2, batch_size=4))
    train = TrainingSet(latents.subset("train"))
    queries = [QueryItem.from_latents(train.latents, i, query_id=f"q{i}") for i in train.ids[:3]]
    resources = {"model": model, "fisher": fisher, "unlearn_config": UnlearnConfig(lr=1e-3, n_timesteps=8, mask="none"),
                 "score_config": ScoreConfig(n_timesteps=4, batch_size=4)}
    return train, queries, resources


def test_new_methods_are_registered():
    assert {"mucs", "attribute_by_unlearning", "fast"} <= set(method_names())


def test_mucs_pieces():
    losses, bound = torch.tensor([[0.5, 2.0]]), torch.tensor([[1.0, 1.0]])
    assert float(bounded_ascent_loss(losses, bound)) == pytest.approx(-0.75)  # the second timestep is past its bound
    assert torch.allclose(normalised_skew(torch.tensor([[3.0, 1.0]]), torch.tensor([[1.0, 1.0]]), 0.0), torch.tensor([0.25]))


def test_mucs_scores_are_bounded_and_find_the_query_itself(setup):
    train, queries, resources = setup
    method = build_method("mucs", resources, steps=3, lr=1e-2, n_timesteps=8, score_timesteps=4)
    scores = score_many(method, queries, train)
    assert scores.shape == (3, len(train)) and np.all(np.abs(scores) <= 1)
    self_rank = [int((s > s[i]).sum()) + 1 for i, s in enumerate(scores)]  # the query is training item i
    assert np.mean(self_rank) < len(train) / 2
    with pytest.raises(SongtraceError, match="lr"):
        build_method("mucs", resources, lr=0.0)


def test_attribute_by_unlearning_is_to_kv_one_step(setup):
    train, queries, resources = setup
    cfg = UnlearnConfig(lr=1e-3, steps=3, group="all", n_timesteps=8, mask="none")
    abu = build_method("attribute_by_unlearning", {**resources, "unlearn_config": cfg})
    assert abu.unlearn_config.group == "to_kv" and abu.unlearn_config.steps == 1 and abu.unlearn_config.lr == cfg.lr
    same = build_method("unlearning", {**resources, "unlearn_config": abu.unlearn_config})
    assert np.allclose(score_many(abu, queries[:1], train), score_many(same, queries[:1], train))


def test_fast_method_tracks_one_step_unlearning(setup):
    train, queries, resources = setup
    exact = score_many(build_method("unlearning", resources), queries, train)
    fast = score_many(build_method("fast", resources, dim=4096, projection="gaussian"), queries, train)
    assert np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(exact, fast, strict=True)]) > 0.8
