"""Fisher, one Eq. 6 unlearning step, the scores and the white-box baselines on imported real models.

Each family (a diffusers StableAudioPipeline, a stable-audio-tools checkpoint) is imported from a
tiny random folder and run on a small latent cache whose caption tokens have that model's text
shape. The references are plain autograd on `task.loss`, one (item, timestep) at a time.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fixtures_model import synthetic_latent_set
from songtrace.attribution import FisherConfig, ScoreConfig, UnlearnConfig, compute_fisher, influence, unlearn
from songtrace.attribution.groups import target_params
from songtrace.baselines.base import QueryItem, TrainingSet, get_method, score_many
from songtrace.diffusion.loss import make_plan
from songtrace.model.importer import import_model
from songtrace.model.registry import load_task

T = 2
TEXT = {"diffusers": (8, 16), "sat": (8, 512)}  # caption tokens × width of each fixture's text encoder


@pytest.fixture(scope="module", params=["diffusers", "sat"])
def family(request, tmp_path_factory):
    if request.param == "diffusers":
        folder = request.getfixturevalue("tiny_pipeline_dir")
    else:
        folder = request.getfixturevalue("tiny_sat_dir")
    out = tmp_path_factory.mktemp(f"imported-{request.param}") / "m"
    import_model(request.param, folder, out)
    task = load_task(out)
    tokens, width = TEXT[request.param]
    lat = synthetic_latent_set(n=8, channels=4, length=16, n_tokens=tokens - 2)
    g = torch.Generator().manual_seed(4)
    lat = dataclasses.replace(lat, text=torch.randn(len(lat), tokens, width, generator=g) * lat.text_mask[..., None],
                              text_encoder=task.module.text_encoder)
    return request.param, task, lat


def test_fisher_is_the_mean_of_squared_per_sample_gradients(family):
    _, task, lat = family
    config = FisherConfig(group="to_kv", n_timesteps=T, batch_size=3)
    fisher = compute_fisher(task, lat, config)
    names = target_params(task, "to_kv")
    params = dict(task.module.named_parameters())
    ref = {k: torch.zeros_like(params[k], dtype=torch.float64) for k in names}
    train = lat.subset("train")  # the Fisher averages over the training split
    for i in range(len(train)):
        item = train.batch([i])
        plan = make_plan(item.ids, T, task.latent_shape, config.seed)
        for t in range(T):
            loss = task.loss(None, item, plan.select_timesteps(slice(t, t + 1)))[0, 0]
            grads = torch.autograd.grad(loss, [params[k] for k in names])
            for k, gk in zip(names, grads, strict=True):
                ref[k] += gk.double() ** 2
    for k in names:
        assert torch.allclose(fisher.diag[k].double(), ref[k] / (len(train) * T), rtol=1e-4, atol=1e-12), k
    assert fisher.n_items == len(train)


def test_one_unlearning_step_is_eq6_and_the_scores_are_the_loss_change(family):
    _, task, lat = family
    fisher = compute_fisher(task, lat, FisherConfig(group="to_kv", n_timesteps=T, batch_size=4))
    config = UnlearnConfig(lr=1e-4, steps=1, group="to_kv", n_timesteps=T, mask="mixed", damping=1e-3, damping_mode="absolute")
    query = lat.batch([0])
    delta = unlearn(task, fisher, query, config)
    params = dict(task.module.named_parameters())
    names = target_params(task, "to_kv")
    plan = make_plan(query.ids, T, task.latent_shape, config.seed)
    loss = task.loss(None, query, plan, mask=True).mean()  # M_U: padded frames out of the unlearning loss
    grads = dict(zip(names, torch.autograd.grad(loss, [params[k] for k in names]), strict=True))
    for k in names:  # θ' − θ0 = η (1/N) (F + λ)⁻¹ ∇L(ẑ, θ0)
        expected = config.lr / fisher.n_items * grads[k].double() / (fisher.diag[k].double() + config.damping)
        assert torch.allclose(delta[k].double(), expected, rtol=1e-4, atol=1e-12), k
    score = ScoreConfig(n_timesteps=T, batch_size=4, timestep_chunk=T)
    tau = influence(task, delta, lat, score, mask_loss=False)
    theta1 = {k: params[k].detach() + delta[k] for k in names}
    train = lat.subset("train")  # scores are over the split of the score config
    assert tau.shape == (len(train),)
    with torch.no_grad():
        for i in range(len(train)):
            item = train.batch([i])
            p = make_plan(item.ids, T, task.latent_shape, score.seed)
            expected = task.loss(theta1, item, p).mean() - task.loss(None, item, p).mean()
            assert torch.allclose(tau[i], expected.double(), rtol=1e-3, atol=1e-7), (i, float(tau[i]), float(expected))
    assert tau[0] == tau.max()  # the unlearned query lost the most


def test_white_box_baselines_run_through_the_task(family):
    _, task, lat = family
    train = TrainingSet(lat)
    queries = [QueryItem.from_latents(train.latents, i) for i in train.ids[:3]]
    for name, kwargs in {"activations": {}, "representer": {},
                         "gradient": {"dim": 1 << 16, "projection": "srdct", "n_timesteps": T}}.items():
        scores = score_many(get_method(name, model=task, **kwargs), queries, train)
        assert scores.shape == (3, len(lat)) and np.isfinite(scores).all(), name
        if name != "representer":  # a training item compared with itself at cosine 1 ranks itself first
            assert [int(np.argmax(scores[q])) for q in range(3)] == [0, 1, 2], name
