"""Influence scores τ = L(z_i, θ') − L(z_i, θ0): common random numbers, the base-loss cache, many queries at once."""

import pytest
import torch

from fixtures_model import synthetic_latent_set, tiny_dit
from songtrace.artifacts import load_safetensors, save_safetensors
from songtrace.attribution import (
    ScoreConfig,
    base_losses,
    credit_shares,
    influence,
    ranks,
    score_many,
    split_params,
    target_params,
)
from songtrace.errors import SongtraceError

CFG = ScoreConfig(n_timesteps=6, batch_size=4, timestep_chunk=4)


def random_delta(model, group="all", scale=1e-2, seed=0):
    g = torch.Generator().manual_seed(seed)
    target, _ = split_params(model, target_params(model, group))
    return {k: scale * torch.randn(v.shape, generator=g) for k, v in target.items()}


@pytest.mark.parametrize("mask_loss", [False, True])
def test_theta0_against_itself_scores_exactly_zero(mask_loss):
    model = tiny_dit()
    data = synthetic_latent_set()
    zero = {k: torch.zeros_like(v) for k, v in random_delta(model).items()}
    base = base_losses(model, data, CFG, mask_loss)
    assert torch.equal(score_many(model, [zero], data, CFG, mask_loss, base=base)[0], torch.zeros(len(base), dtype=torch.float64))
    assert torch.equal(influence(model, zero, data, CFG, mask_loss), torch.zeros(len(base), dtype=torch.float64))
    # a real weight change gives a nonzero score for every item
    assert (influence(model, random_delta(model), data, CFG, mask_loss, base=base) != 0).all()


def test_many_queries_in_one_pass_equal_one_at_a_time():
    model = tiny_dit()
    data = synthetic_latent_set()
    deltas = [random_delta(model, "all", seed=1), random_delta(model, "to_kv", seed=2), random_delta(model, "self_attn", seed=3)]
    base = base_losses(model, data, CFG, False)
    together = score_many(model, deltas, data, CFG, False, base=base)
    assert together.shape == (3, len(data.subset("train")))
    for k, d in enumerate(deltas):
        assert torch.equal(together[k], influence(model, d, data, CFG, False, base=base))
    assert torch.equal(together, score_many(model, deltas, data, CFG, False))  # base recomputed in the same pass


def test_scores_are_deterministic_and_items_do_not_depend_on_their_batch():
    model = tiny_dit()
    data = synthetic_latent_set()
    d = random_delta(model)
    a = influence(model, d, data, CFG, False)
    assert torch.equal(a, influence(model, d, data, CFG, False))
    other_batching = ScoreConfig(n_timesteps=6, batch_size=3, timestep_chunk=6)
    torch.testing.assert_close(a, influence(model, d, data, other_batching, False), rtol=1e-4, atol=1e-7)


def test_cached_base_losses_equal_recomputed_and_a_stale_cache_is_replaced(tmp_path):
    model = tiny_dit()
    data = synthetic_latent_set()
    fresh = base_losses(model, data, CFG, True)
    first = base_losses(model, data, CFG, True, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and torch.equal(first, fresh)
    assert torch.equal(load_safetensors(files[0])["loss"], fresh)
    assert torch.equal(base_losses(model, data, CFG, True, cache_dir=tmp_path), fresh)
    # another mask, T or seed is another cache entry
    base_losses(model, data, CFG, False, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    # a cache whose first batch does not reproduce is recomputed and rewritten
    save_safetensors(files[0], {"loss": fresh + 1.0})
    assert torch.equal(base_losses(model, data, CFG, True, cache_dir=tmp_path), fresh)
    assert torch.equal(load_safetensors(files[0])["loss"], fresh)


def test_base_of_the_wrong_length_is_refused():
    model = tiny_dit()
    data = synthetic_latent_set()
    with pytest.raises(SongtraceError, match="base losses have shape"):
        score_many(model, [random_delta(model)], data, CFG, False, base=torch.zeros(3, dtype=torch.float64))


def test_ranks_and_credit_shares():
    scores = torch.tensor([0.5, -1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    assert ranks(scores).tolist() == [3, 5, 1, 4, 2]
    credits = credit_shares(scores, ["a", "b", "a", "c", "b"])
    shares = {r["artist"]: r["share"] for r in credits}
    assert shares == pytest.approx({"a": 2.5 / 4.5, "b": 1.5 / 4.5, "c": 0.5 / 4.5})
    assert sum(shares.values()) == pytest.approx(1.0)
    assert [r["artist"] for r in credits] == ["a", "b", "c"]
    none_positive = credit_shares(-scores.abs(), ["a", "b", "a", "c", "b"])
    assert all(r["share"] == 0.0 for r in none_positive)
