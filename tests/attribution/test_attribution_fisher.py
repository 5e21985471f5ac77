"""The diagonal Fisher (seed 002, section 2.2): per-sample gradients, hand check, checks of F."""

import pytest
import torch
from toy_attribution_model import TwoLayer, hand_grads

from fixtures_model import synthetic_latent_set, tiny_dit
from songtrace.attribution import (
    FisherConfig,
    check_fisher,
    compute_fisher,
    per_sample_grads,
    split_params,
    target_params,
)
from songtrace.diffusion.loss import make_plan
from songtrace.errors import SongtraceError
from songtrace.model.task import task_for


@pytest.mark.parametrize("mask", [False, True])
def test_vmap_per_sample_grads_equal_the_python_loop(mask):
    model = tiny_dit()
    data = synthetic_latent_set()
    target, frozen = split_params(model, target_params(model, "all"))
    batch = data.batch([0, 1, 2])
    plan = make_plan(batch.ids, 3, data.latent_shape, 0)
    fast = per_sample_grads(model, target, frozen, batch, plan, mask, method="vmap")
    slow = per_sample_grads(model, target, frozen, batch, plan, mask, method="loop")
    for k in target:
        assert fast[k].shape == (9, *target[k].shape)
        torch.testing.assert_close(fast[k], slow[k], rtol=1e-4, atol=1e-7)


def test_per_sample_grads_are_the_gradients_of_diffusion_loss_entries():
    model = tiny_dit()
    data = synthetic_latent_set()
    names = target_params(model, "to_kv")
    target, frozen = split_params(model, names)
    batch = data.batch([3, 4])
    plan = make_plan(batch.ids, 2, data.latent_shape, 1)
    grads = per_sample_grads(model, target, frozen, batch, plan, mask=True)
    params = {k: v.clone().requires_grad_(True) for k, v in target.items()}
    loss = task_for(model).loss({**frozen, **params}, batch, plan, mask=True)  # [B, T]
    ref = torch.autograd.grad(loss[1, 0], list(params.values()))
    for (k, _), r in zip(params.items(), ref, strict=True):
        torch.testing.assert_close(grads[k][2], r, rtol=1e-4, atol=1e-8)  # item-major: row 1*T + 0


def test_fisher_is_the_mean_of_squared_per_timestep_gradients_by_hand():
    model = TwoLayer()
    data = synthetic_latent_set(n=6, channels=3, length=6)
    cfg = FisherConfig(n_timesteps=3, seed=2, batch_size=2, sample_chunk=4)
    fisher = compute_fisher(model, data, cfg)
    train = data.subset("train")
    w1, w2 = model.layer1.weight.detach(), model.layer2.weight.detach()
    sq1, sq2 = torch.zeros(5, 3, dtype=torch.float64), torch.zeros(3, 5, dtype=torch.float64)
    mean_sq1 = torch.zeros(5, 3, dtype=torch.float64)
    for i in range(len(train)):
        plan = make_plan([train.ids[i]], 3, (3, 6), 2)
        g_mean = torch.zeros(5, 3, dtype=torch.float64)
        for k in range(3):
            a, b = hand_grads(w1, w2, train.latents[i], plan.noise[0, k], float(plan.t[0, k]), None)
            sq1, sq2, g_mean = sq1 + a**2, sq2 + b**2, g_mean + a / 3
        mean_sq1 += g_mean**2
    n = len(train) * 3
    assert fisher.n_items == len(train)
    torch.testing.assert_close(fisher.diag["layer1.weight"].double(), sq1 / n, rtol=1e-4, atol=1e-10)
    torch.testing.assert_close(fisher.diag["layer2.weight"].double(), sq2 / n, rtol=1e-4, atol=1e-10)
    # the square of the T-averaged gradient is a different (smaller) quantity: the test can tell them apart
    assert not torch.allclose(fisher.diag["layer1.weight"].double(), mean_sq1 / len(train), rtol=1e-2)


def test_fisher_does_not_depend_on_batching_and_is_deterministic():
    model = tiny_dit()
    data = synthetic_latent_set()
    a = compute_fisher(model, data, FisherConfig(group="cross_attn", n_timesteps=2, batch_size=2, sample_chunk=3))
    b = compute_fisher(model, data, FisherConfig(group="cross_attn", n_timesteps=2, batch_size=5, sample_chunk=7))
    c = compute_fisher(model, data, FisherConfig(group="cross_attn", n_timesteps=2, batch_size=2, sample_chunk=3))
    assert sorted(a.diag) == sorted(target_params(model, "cross_attn"))
    for k in a.diag:
        torch.testing.assert_close(a.diag[k], b.diag[k], rtol=1e-5, atol=1e-12)
        assert torch.equal(a.diag[k], c.diag[k])


def test_check_fisher_names_the_bad_parameter():
    good = {"a.weight": torch.ones(2, 2), "b.weight": torch.ones(3)}
    check_fisher(good, damping=0.0)
    zero = {**good, "b.weight": torch.tensor([1.0, 0.0, 2.0])}
    with pytest.raises(SongtraceError, match=r"'b.weight' has 1 zero entries.*damping > 0"):
        check_fisher(zero, damping=0.0)
    check_fisher(zero, damping=1e-6)
    nan = {**good, "a.weight": torch.tensor([[1.0, float("nan")], [1.0, 1.0]])}
    with pytest.raises(SongtraceError, match=r"'a.weight' has 1 NaN/inf"):
        check_fisher(nan, damping=1.0)
    with pytest.raises(SongtraceError, match="negative"):
        check_fisher({"a.weight": torch.tensor([-1.0])}, damping=1.0)


def test_fisher_config_round_trips_and_validates():
    cfg = FisherConfig(group="re:layers\\.0\\.", n_timesteps=4, mask=True)
    assert FisherConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(SongtraceError, match="valid: vmap, loop"):
        FisherConfig(method="jvp")
    with pytest.raises(SongtraceError, match="n_timesteps"):
        FisherConfig(n_timesteps=0)
