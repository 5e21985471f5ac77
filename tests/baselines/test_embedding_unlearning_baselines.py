"""The CLAP-like `embedding` baseline and the `unlearning` wrapper behind the common interface."""

import numpy as np
import pytest
import torch

from fixtures_codec import SyntheticWorld
from fixtures_model import synthetic_latent_set
from songtrace.attribution.fisher import FisherConfig, compute_fisher
from songtrace.attribution.score import ScoreConfig, influence
from songtrace.attribution.unlearn import UnlearnConfig, unlearn
from songtrace.baselines.base import QueryItem, TrainingSet, get_method, score_many
from songtrace.data.latents import LatentSet
from songtrace.embedders import load_embedder
from songtrace.errors import SongtraceError
from songtrace.metrics.similarity import window_similarity_matrix
from songtrace.model.dit import tiny_dit


def audio_training_set(world):
    ids = world.manifest["id"].tolist()
    n = len(ids)
    lat = LatentSet(
        ids=ids, artists=world.manifest["artist"].tolist(), splits=["train"] * n,
        latents=torch.zeros(n, 2, 8), n_frames=torch.full((n,), 8), text=torch.zeros(n, 3, 4),
        text_mask=torch.ones(n, 3, dtype=torch.bool), seconds_start=torch.zeros(n), seconds_total=torch.ones(n),
    )
    return TrainingSet(lat, audio_fn=world.audio, sample_rate=world.sample_rate)


def test_embedding_matches_window_similarity_and_finds_itself():
    world = SyntheticWorld(n_tracks=8, seed=3)
    train = audio_training_set(world)
    embedder = load_embedder("dsp")
    method = get_method("embedding", embedder=embedder)
    qid = train.ids[4]
    q = QueryItem("q", torch.zeros(2, 8), 8, torch.zeros(3, 4), torch.ones(3, dtype=torch.bool),
                  wav=world.audio(qid), sr=world.sample_rate)
    s = method.score(q, train)
    assert s.shape == (8,) and np.all(np.isfinite(s))
    assert int(np.argmax(s)) == 4 and s[4] == pytest.approx(1.0, abs=1e-5)
    ref = window_similarity_matrix(embedder, [world.audio(qid)], [world.audio(i) for i in train.ids], world.sample_rate)[0]
    assert np.allclose(s, ref, atol=1e-5)
    no_audio = QueryItem("x", torch.zeros(2, 8), 8, torch.zeros(3, 4), torch.ones(3, dtype=torch.bool))
    with pytest.raises(SongtraceError, match="no audio"):
        method.score(no_audio, train)
    with pytest.raises(SongtraceError, match="no audio"):
        get_method("version").score(q, TrainingSet(train.latents))


def test_unlearning_wrapper_equals_the_attribution_engine():
    lat = synthetic_latent_set(n=12)
    train = TrainingSet(lat.subset("train"))
    model = tiny_dit(latent_channels=4, latent_length=16, seed=2)
    fisher = compute_fisher(model, lat, FisherConfig(n_timesteps=2, batch_size=4))
    ucfg = UnlearnConfig(lr=1e-4, n_timesteps=4, timestep_chunk=4)
    scfg = ScoreConfig(n_timesteps=4, batch_size=4)
    method = get_method("unlearning", model=model, fisher=fisher, unlearn_config=ucfg, score_config=scfg)
    queries = [QueryItem.from_latents(lat, train.ids[i]) for i in (0, 3)]
    got = score_many(method, queries, train)
    for q, row in zip(queries, got, strict=True):
        delta = unlearn(model, fisher, q.batch(), ucfg)
        ref = influence(model, delta, lat, scfg, ucfg.mask_loss).numpy()
        assert np.allclose(row, ref, rtol=1e-10, atol=1e-14)
    assert int(np.argmax(got[0])) == 0  # Train-to-Train: the unlearned item itself loses most
    with pytest.raises(SongtraceError, match="split"):
        method.score(queries[0], TrainingSet(lat))
