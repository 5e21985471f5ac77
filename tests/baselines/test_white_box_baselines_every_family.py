"""Every white-box baseline (LPIPS-like activations, RPS, TRAK-like gradient, unlearning) on both model families
songtrace ships a task for: the demo DiT and diffusers' StableAudioDiTModel adapter (tiny random configs).

The methods reach the model only through its task, so nothing here names a block or a parameter. A training
item as the query must rank itself first where that is the method's nature: activations and gradients compare
the query with itself at cosine 1; unlearning, with its query loss drawn with the same timesteps and noise as the
scoring loss (same item id, T and seed, no masks), is gradient ascent on exactly the loss it scores, so the
target's τ is positive and (on these models, all 9 targets, both families) the largest.
"""

import numpy as np
import pytest
import torch

from fixtures_model import synthetic_latent_set, tiny_diffusers, tiny_dit
from songtrace.attribution import FisherConfig, ScoreConfig, UnlearnConfig, compute_fisher, influence, unlearn
from songtrace.baselines.base import QueryItem, TrainingSet, get_method, score_many
from songtrace.model.task import as_task

FAMILIES = ("dit", "diffusers")
T = 16  # timesteps of both the unlearning and the scoring loss


@pytest.fixture(scope="module")
def lat():
    return synthetic_latent_set(n=12)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, lat):
    if request.param == "diffusers":
        pytest.importorskip("diffusers")
        model = tiny_diffusers(seed=0)
    else:
        model = tiny_dit(latent_channels=4, latent_length=16, seed=1)
    train = TrainingSet(lat.subset("train"))
    queries = [QueryItem.from_latents(train.latents, i) for i in train.ids]  # query id = item id: the same noise plans
    fisher = compute_fisher(model, lat, FisherConfig(n_timesteps=2, batch_size=4))
    return {"name": request.param, "model": model, "train": train, "queries": queries, "fisher": fisher}


def methods(f):
    return {
        "activations": get_method("activations", model=f["model"]),
        "representer": get_method("representer", model=f["model"]),
        "gradient": get_method("gradient", model=f["model"], dim=1 << 20, projection="srdct", n_timesteps=2),
        "unlearning": get_method("unlearning", model=f["model"], fisher=f["fisher"],
                                 unlearn_config=UnlearnConfig(lr=1e-6, n_timesteps=T, timestep_chunk=T, mask="none"),
                                 score_config=ScoreConfig(n_timesteps=T, batch_size=9, timestep_chunk=T)),
    }


def self_ranks(scores: np.ndarray) -> list[int]:
    """Rank of each query's own item (1 = first; ties count against it)."""
    return [int((row >= row[i]).sum()) for i, row in enumerate(scores)]


def test_every_white_box_baseline_runs_on_both_families_and_finds_the_training_query(family):
    n = len(family["train"])
    for name, method in methods(family).items():
        scores = score_many(method, family["queries"], family["train"])
        assert scores.shape == (n, n) and np.isfinite(scores).all(), (family["name"], name)
        assert np.ptp(scores, axis=1).min() > 0, (family["name"], name)  # scores tell items apart
        single = method.score(family["queries"][3], family["train"])
        np.testing.assert_allclose(single, scores[3], rtol=1e-6, atol=1e-12 * np.abs(scores).max())
        if name == "representer":
            continue  # RPS scores need not peak at the query itself (Yeh et al. 2018)
        assert self_ranks(scores) == [1] * n, (family["name"], name, self_ranks(scores))
        if name == "unlearning":
            assert (np.diag(scores) > 0).all()


def test_unlearning_baseline_is_the_attribution_engine_on_both_families(family, lat):
    method = methods(family)["unlearning"]
    got = score_many(method, family["queries"][:2], family["train"])
    for q, row in zip(family["queries"][:2], got, strict=True):
        ref = influence(family["model"], unlearn(family["model"], family["fisher"], q.batch(), method.unlearn_config), lat,
                        method.score_config, mask_loss=False).numpy()
        np.testing.assert_array_equal(row, ref)


def test_the_task_reads_the_layers_the_baselines_use(family, lat):
    task = as_task(family["model"])
    batch = lat.batch([0, 1])
    t = torch.full((2,), 0.5)
    with torch.no_grad():
        outputs = task.layer_outputs(batch.latents, t, batch.cond)
        features, v = task.last_layer_features(batch.latents, t, batch.cond)
    assert len(outputs) == len(task.block_names()) == 2
    assert all(h.shape[:2] == (2, 16) for h in outputs)  # frame tokens only, conditioning tokens dropped
    assert features.shape == (2, 16, task.last_layer().in_features) and v.shape == (2, 4, 16)
    projected = task.last_layer()(features).transpose(1, 2)
    if family["name"] == "dit":
        torch.testing.assert_close(projected, v)  # nothing follows the last layer in the demo DiT
    else:
        assert projected.shape == v.shape  # diffusers adds a residual 1x1 conv after proj_out
