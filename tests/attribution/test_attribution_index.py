"""Fast mode: with the identity projection the index equals the first-order formula computed directly; random
projections approximate it; the index stage shards, resumes and refuses mismatched settings; attribute_fast writes runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from songtrace.attribution import FisherConfig, ScoreConfig, UnlearnConfig, compute_fisher, fit_fisher, unlearn
from songtrace.attribution.diagnostics import score_diagnostics
from songtrace.attribution.index import (
    IndexConfig,
    IndexContext,
    attribute_fast,
    build_index,
    build_index_shard,
    item_feature_matrix,
    item_gradients,
    shard_path,
)
from songtrace.attribution.query import QueryContext, resolve_query
from songtrace.attribution.run import load_attribution
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.registry import load_task

FISHER = FisherConfig(n_timesteps=2, batch_size=2, sample_chunk=8)
UNLEARN = UnlearnConfig(lr=1e-3, n_timesteps=8, mask="mixed")
INDEX = IndexConfig(dim=64, projection="identity", score=ScoreConfig(n_timesteps=4, batch_size=3), shard_items=4, sample_chunk=8)


@pytest.fixture(scope="module")
def fisher_dir(tmp_path_factory, tiny_model, tiny_latents):
    out = tmp_path_factory.mktemp("fisher") / "tiny"
    fit_fisher(tiny_model, tiny_latents, FISHER, out)
    return out


def test_identity_projection_equals_the_first_order_formula(tiny_model, tiny_latents):
    task = load_task(tiny_model)
    latents = LatentSet.load(tiny_latents)
    data = latents.subset("train")
    fisher = compute_fisher(task, latents, FISHER)
    ctx = IndexContext.make(task, fisher, INDEX)
    phi = item_feature_matrix(ctx, data, INDEX)
    query = resolve_query(f"train:{data.ids[0]}", QueryContext(latents)).batch
    fast = (phi @ ctx.query_feature(query, UNLEARN)) * UNLEARN.lr / fisher.n_items
    # directly: δ from Eq. 6 (one step) and τ_i ≈ ∇L(z_i)ᵀ δ on the same scoring plan
    delta = unlearn(task, fisher, query, UNLEARN)
    names = list(ctx.target)
    grads = item_gradients(task, ctx.target, ctx.frozen, data.batch(list(range(len(data)))), INDEX)
    direct = grads @ torch.cat([delta[n].double().reshape(-1) for n in names])
    assert torch.allclose(fast, direct, rtol=1e-4, atol=1e-12 * float(direct.abs().max()))
    # and the first order is what exact mode measures for a small step
    from songtrace.attribution import influence

    tiny = dataclasses.replace(UNLEARN, lr=1e-5)
    exact = influence(task, unlearn(task, fisher, query, tiny), latents, INDEX.score, mask_loss=False)
    first = direct * (tiny.lr / UNLEARN.lr)
    assert np.corrcoef(exact.numpy(), first.numpy())[0, 1] > 0.99


def test_random_projections_preserve_the_scores(tiny_model, tiny_latents):
    task = load_task(tiny_model)
    latents = LatentSet.load(tiny_latents)
    data = latents.subset("train")
    fisher = compute_fisher(task, latents, FISHER)
    query = resolve_query(f"train:{data.ids[1]}", QueryContext(latents)).batch
    ref_ctx = IndexContext.make(task, fisher, INDEX)
    ref = item_feature_matrix(ref_ctx, data, INDEX) @ ref_ctx.query_feature(query, UNLEARN)
    n_params = ref_ctx.projector.n_params
    for kind in ("srdct", "gaussian"):
        cfg = dataclasses.replace(INDEX, projection=kind, dim=n_params // 2)
        ctx = IndexContext.make(task, fisher, cfg)
        approx = item_feature_matrix(ctx, data, cfg) @ ctx.query_feature(query, UNLEARN)
        assert np.corrcoef(ref.numpy(), approx.numpy())[0, 1] > 0.8


def test_index_stage_shards_resumes_and_answers_queries(tmp_path, tiny_model, tiny_latents, fisher_dir):
    out = tmp_path / "index"
    n = len(LatentSet.load(tiny_latents).subset("train"))
    assert build_index(tiny_model, tiny_latents, fisher_dir, INDEX, out, shard=1) is None  # one shard of several
    assert shard_path(out, 4, 8).exists() and not shard_path(out, 0, 4).exists()
    with pytest.raises(SongtraceError, match="out of range"):
        build_index(tiny_model, tiny_latents, fisher_dir, INDEX, out, shard=99)
    index = build_index(tiny_model, tiny_latents, fisher_dir, INDEX, out)
    assert index is not None and len(index.ids) == n and sum(s.shape[0] for s in index.shards()) == n
    # a shard rebuilt from scratch holds the same rows (resuming never changes the result)
    task = load_task(tiny_model)
    ctx = IndexContext.make(task, compute_fisher(task, LatentSet.load(tiny_latents), FISHER), INDEX)
    again = build_index_shard(ctx, LatentSet.load(tiny_latents).subset("train"), INDEX, 0, 4, tmp_path / "again")
    assert np.array_equal(np.load(again), np.load(shard_path(out, 0, 4)))
    train_id = LatentSet.load(tiny_latents).subset("train").ids[0]
    run = attribute_fast([f"train:{train_id}"], UNLEARN, tiny_model, tiny_latents, fisher_dir, out, tmp_path / "run")
    assert run.record["mode"] == "fast" and len(run.results[0].scores) == n and "diagnostics" in run.record
    assert load_attribution(tmp_path / "run").results[0].table["score"].notna().all()
    with pytest.raises(SongtraceError, match="other unlearning settings"):
        attribute_fast([f"train:{train_id}"], dataclasses.replace(UNLEARN, group="to_kv"), tiny_model, tiny_latents, fisher_dir, out,
                       tmp_path / "run2")
    with pytest.raises(SongtraceError, match="steps=2"):
        ctx.query_feature(LatentSet.load(tiny_latents).batch([0]), dataclasses.replace(UNLEARN, steps=2))
    assert score_diagnostics(np.stack([r.scores.numpy() for r in run.results]))["n_queries"] == 1


def test_index_config_round_trips_and_validates():
    assert IndexConfig.from_dict(INDEX.to_dict()) == INDEX
    with pytest.raises(SongtraceError, match="projection"):
        IndexConfig(projection="nope")
    with pytest.raises(SongtraceError, match="dim"):
        IndexConfig(dim=0)
