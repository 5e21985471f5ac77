"""The in-memory Python API on a user's own model (no artifact directories): Fisher, unlearn, score, rank."""

import pytest
import torch
from toy_attribution_model import TwoLayer

from fixtures_model import synthetic_latent_set
from songtrace.attribution import (
    AttributeConfig,
    FisherConfig,
    QueryContext,
    ScoreConfig,
    UnlearnConfig,
    attribute_queries,
    base_losses,
    compute_fisher,
    influence,
    resolve_query,
    unlearn,
)


def test_notebook_workflow_on_an_own_model():
    model = TwoLayer(channels=3, hidden=5, frames=6)
    latents = synthetic_latent_set(n=12, channels=3, length=6)
    fisher = compute_fisher(model, latents, FisherConfig(n_timesteps=4))
    queries = [resolve_query(f"train:{i}", QueryContext(latents=latents)) for i in ("s000", "s001")]
    config = AttributeConfig(unlearn=UnlearnConfig(lr=1e-3, n_timesteps=32, mask="none"), score=ScoreConfig(n_timesteps=8))
    results = attribute_queries(model, fisher, latents, queries, config)
    train = latents.subset("train")
    for r, q in zip(results, queries, strict=True):
        assert r.query_id == q.query_id and len(r.table) == len(train)
        assert r.table["rank"].tolist() == list(range(1, len(train) + 1))
        assert r.table["score"].is_monotonic_decreasing
        assert r.credits["share"].sum() == pytest.approx(1.0)
    # the same numbers from the three building blocks
    delta = unlearn(model, fisher, queries[0].batch, config.unlearn)
    base = base_losses(model, latents, config.score, config.unlearn.mask_loss)
    assert torch.equal(influence(model, delta, latents, config.score, config.unlearn.mask_loss, base=base), results[0].scores)
