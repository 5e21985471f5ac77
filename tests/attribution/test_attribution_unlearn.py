"""The unlearning step (seed 002, Eq. 6): hand-computed update, target restriction, masks, config."""

import pytest
import torch
from toy_attribution_model import TwoLayer, hand_grads

from fixtures_model import synthetic_latent_set, tiny_dit
from songtrace.attribution import (
    MASKS,
    UnlearnConfig,
    apply_delta,
    damping_value,
    first_query_gradient,
    query_gradient,
    split_params,
    target_params,
    unlearn,
    unlearn_iterates,
    unlearn_step,
)
from songtrace.data.batch import Batch
from songtrace.diffusion.loss import make_plan
from songtrace.errors import SongtraceError


def toy_query(n_real: int = 4, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(1, 3, 6, generator=g)
    lat[..., n_real:] = 0
    return Batch(
        ids=["q"],
        latents=lat,
        n_frames=torch.tensor([n_real]),
        text=torch.zeros(1, 2, 4),
        text_mask=torch.ones(1, 2, dtype=torch.bool),
        seconds_start=torch.zeros(1),
        seconds_total=torch.ones(1),
    )


def toy_fisher(model: TwoLayer, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) + 0.05 for n, p in model.named_parameters()}


def hand_query_grad(w1, w2, query: Batch, cfg: UnlearnConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(1/T) Σ_t of the hand gradients, with the query's own plan."""
    plan = make_plan(query.ids, cfg.n_timesteps, (3, 6), cfg.seed)
    n_real = int(query.n_frames[0]) if cfg.mask_unlearn else None
    g1 = torch.zeros(w1.shape, dtype=torch.float64)
    g2 = torch.zeros(w2.shape, dtype=torch.float64)
    for k in range(cfg.n_timesteps):
        a, b = hand_grads(w1, w2, query.latents[0], plan.noise[0, k], float(plan.t[0, k]), n_real)
        g1, g2 = g1 + a, g2 + b
    return g1 / cfg.n_timesteps, g2 / cfg.n_timesteps


@pytest.mark.parametrize("mask", ["none", "mixed"])
def test_one_step_equals_hand_formula(mask):
    model = TwoLayer()
    fisher = toy_fisher(model)
    query = toy_query()
    cfg = UnlearnConfig(lr=0.3, damping=0.01, damping_mode="absolute", n_timesteps=5, timestep_chunk=2, mask=mask)
    delta = unlearn(model, fisher, query, cfg, n_train=7)
    w1, w2 = model.layer1.weight.detach(), model.layer2.weight.detach()
    g1, g2 = hand_query_grad(w1, w2, query, cfg)
    expect1 = 0.3 / 7 * g1 / (fisher["layer1.weight"].double() + 0.01)
    expect2 = 0.3 / 7 * g2 / (fisher["layer2.weight"].double() + 0.01)
    torch.testing.assert_close(delta["layer1.weight"].double(), expect1, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(delta["layer2.weight"].double(), expect2, rtol=1e-5, atol=1e-9)


def test_two_steps_reevaluate_the_gradient():
    model = TwoLayer()
    fisher = toy_fisher(model)
    query = toy_query()
    cfg = UnlearnConfig(lr=2.0, steps=2, damping=0.0, damping_mode="absolute", n_timesteps=4, mask="none")
    delta = unlearn(model, fisher, query, cfg, n_train=3)
    w1, w2 = model.layer1.weight.detach().double(), model.layer2.weight.detach().double()
    f1, f2 = fisher["layer1.weight"].double(), fisher["layer2.weight"].double()
    g1, g2 = hand_query_grad(w1, w2, query, cfg)
    d1, d2 = 2.0 / 3 * g1 / f1, 2.0 / 3 * g2 / f2
    h1, h2 = hand_query_grad(w1 + d1, w2 + d2, query, cfg)
    torch.testing.assert_close(delta["layer1.weight"].double(), d1 + 2.0 / 3 * h1 / f1, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(delta["layer2.weight"].double(), d2 + 2.0 / 3 * h2 / f2, rtol=1e-4, atol=1e-8)
    one_cfg = UnlearnConfig(lr=2.0, steps=1, damping=0.0, damping_mode="absolute", n_timesteps=4, mask="none")
    one_step = unlearn(model, fisher, query, one_cfg, n_train=3)
    assert not torch.allclose(one_step["layer1.weight"], delta["layer1.weight"])


def test_the_iteration_yields_every_step_of_unlearn_and_reuses_a_first_gradient_exactly():
    """`unlearn_iterates` is the loop `unlearn` runs: its k-th iterate is `unlearn` with steps=k, bit for bit,
    and a first gradient computed over a union of groups (as the self-influence grid does) changes nothing."""
    model = tiny_dit()
    data = synthetic_latent_set()
    fisher = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(3)) + 0.1 for n, p in model.named_parameters()}
    query = data.batch([2])
    cfg = UnlearnConfig(lr=3e-2, steps=3, group="cross_attn", n_timesteps=6, timestep_chunk=4)
    iterates = list(unlearn_iterates(model, fisher, query, cfg, n_train=9))
    assert len(iterates) == 3
    for k, delta in enumerate(iterates, start=1):
        ref = unlearn(model, fisher, query, UnlearnConfig(**{**cfg.to_dict(), "steps": k}), n_train=9)
        assert sorted(delta) == sorted(ref) == sorted(target_params(model, "cross_attn"))
        assert all(torch.equal(delta[n], ref[n]) for n in ref)
    assert not torch.equal(iterates[0][sorted(ref)[0]], iterates[1][sorted(ref)[0]])  # the gradient is re-evaluated
    union = first_query_gradient(model, query, cfg, names=target_params(model, "all"))
    assert set(union) == set(target_params(model, "all"))
    reused = list(unlearn_iterates(model, fisher, query, cfg, n_train=9, grad0=union))
    assert all(torch.equal(a[n], b[n]) for a, b in zip(iterates, reused, strict=True) for n in a)
    with pytest.raises(SongtraceError, match="lacks target parameters"):
        unlearn_iterates(model, fisher, query, UnlearnConfig(group="self_attn"), n_train=9,
                         grad0=first_query_gradient(model, query, cfg))  # checked before the first step, not on first use


def test_unlearn_step_is_pure_and_relative_damping_scales_with_mean_f():
    theta = {"w": torch.tensor([1.0, 2.0])}
    g = {"w": torch.tensor([0.5, -1.0])}
    f = {"w": torch.tensor([0.25, 0.75])}
    lam = damping_value(f, 0.1, "relative")
    assert lam == pytest.approx(0.05)
    out = unlearn_step(theta, g, f, lr=2.0, n_train=4, damping=lam)
    torch.testing.assert_close(out["w"], torch.tensor([1.0 + 0.5 * 0.5 / 0.30, 2.0 - 0.5 * 1.0 / 0.80]))
    assert torch.equal(theta["w"], torch.tensor([1.0, 2.0]))


def test_restricting_the_group_leaves_other_weights_bit_identical():
    model = tiny_dit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = synthetic_latent_set()
    names = target_params(model, "to_kv")
    fisher = {n: torch.rand(p.shape) + 0.1 for n, p in model.named_parameters()}
    delta = unlearn(model, fisher, data.batch([0]), UnlearnConfig(lr=1e-2, group="to_kv", n_timesteps=8), n_train=9)
    assert sorted(delta) == sorted(names) and all(d.abs().sum() > 0 for d in delta.values())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    theta0 = dict(model.named_parameters())
    theta1 = {**{k: v.detach() for k, v in theta0.items()}, **apply_delta(theta0, delta)}
    changed = {k for k in theta0 if not torch.equal(theta1[k], theta0[k].detach())}
    assert changed == set(names)


def test_toy_group_restriction_matches_hand_formula_for_the_target_only():
    model = TwoLayer()
    fisher = toy_fisher(model)
    cfg = UnlearnConfig(lr=0.5, group="layer1", damping=0.0, damping_mode="absolute", n_timesteps=3, mask="none")
    delta = unlearn(model, fisher, toy_query(), cfg, n_train=2)
    assert list(delta) == ["layer1.weight"]
    g1, _ = hand_query_grad(model.layer1.weight.detach(), model.layer2.weight.detach(), toy_query(), cfg)
    torch.testing.assert_close(delta["layer1.weight"].double(), 0.25 * g1 / fisher["layer1.weight"].double(), rtol=1e-5, atol=1e-9)


def test_padding_content_cannot_change_the_masked_unlearning_gradient():
    model = tiny_dit()
    data = synthetic_latent_set()
    row = int(torch.argmin(data.n_frames))
    query = data.batch([row])
    n = int(query.n_frames[0])
    assert n < data.latent_shape[1]
    noisy = data.batch([row])
    noisy.latents = noisy.latents.clone()
    noisy.latents[..., n:] = 5.0 * torch.randn_like(noisy.latents[..., n:])
    target, frozen = split_params(model, target_params(model, "all"))
    plan = make_plan(query.ids, 6, data.latent_shape, 0)
    masked = [query_gradient(model, target, frozen, q, plan, mask=True, chunk=4) for q in (query, noisy)]
    unmasked = [query_gradient(model, target, frozen, q, plan, mask=False, chunk=4) for q in (query, noisy)]
    for k in target:
        torch.testing.assert_close(masked[0][k], masked[1][k], rtol=1e-6, atol=1e-9)
    assert any(not torch.allclose(unmasked[0][k], unmasked[1][k]) for k in target)


def test_query_gradient_does_not_depend_on_the_timestep_chunk():
    model = tiny_dit()
    query = synthetic_latent_set().batch([1])
    target, frozen = split_params(model, target_params(model, "cross_attn"))
    plan = make_plan(query.ids, 8, (4, 16), 3)
    a = query_gradient(model, target, frozen, query, plan, mask=False, chunk=8)
    b = query_gradient(model, target, frozen, query, plan, mask=False, chunk=3)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-8)


def test_unlearning_is_deterministic_for_a_seed_and_changes_with_it():
    model = tiny_dit()
    data = synthetic_latent_set()
    fisher = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(0)) + 0.1 for n, p in model.named_parameters()}
    cfg = UnlearnConfig(lr=1e-2, n_timesteps=8, seed=5)
    a = unlearn(model, fisher, data.batch([2]), cfg, n_train=9)
    b = unlearn(model, fisher, data.batch([2]), cfg, n_train=9)
    c = unlearn(model, fisher, data.batch([2]), UnlearnConfig(lr=1e-2, n_timesteps=8, seed=6), n_train=9)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_masks_registry_and_config_validation():
    assert MASKS == {"none": (False, False), "both": (True, True), "M_L": (False, True), "mixed": (True, False)}
    cfg = UnlearnConfig(mask="mixed")
    assert cfg.mask_unlearn and not cfg.mask_loss
    assert UnlearnConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(SongtraceError, match="valid: none, both, M_L, mixed"):
        UnlearnConfig(mask="M_U")
    for steps in (0, 5):
        with pytest.raises(SongtraceError, match="steps"):
            UnlearnConfig(steps=steps)
    with pytest.raises(SongtraceError, match="damping mode"):
        UnlearnConfig(damping_mode="fraction")


def test_zero_or_nan_fisher_is_caught_with_a_clear_error():
    model = TwoLayer()
    query = toy_query()
    fisher = toy_fisher(model)
    fisher["layer2.weight"][0, 0] = 0.0
    with pytest.raises(SongtraceError, match=r"'layer2.weight' has 1 zero entries"):
        unlearn(model, fisher, query, UnlearnConfig(damping=0.0, n_timesteps=2), n_train=3)
    unlearn(model, fisher, query, UnlearnConfig(damping=1e-3, n_timesteps=2), n_train=3)  # damping makes zeros fine
    fisher["layer1.weight"][1, 1] = float("nan")
    with pytest.raises(SongtraceError, match=r"'layer1.weight' has 1 NaN/inf"):
        unlearn(model, fisher, query, UnlearnConfig(damping=1e-3, damping_mode="absolute", n_timesteps=2), n_train=3)


def test_fisher_missing_target_parameters_is_refused():
    model = TwoLayer()
    fisher = {"layer1.weight": torch.ones(5, 3)}
    with pytest.raises(SongtraceError, match="no entries for 1 target parameters"):
        unlearn(model, fisher, toy_query(), UnlearnConfig(n_timesteps=2), n_train=3)
    with pytest.raises(SongtraceError, match="shapes"):
        unlearn(model, {"layer1.weight": torch.ones(3, 5), "layer2.weight": torch.ones(3, 5)}, toy_query(), UnlearnConfig(n_timesteps=2), 3)
