"""The unlearned delta θ' − θ0 of an attribution run, saved as an artifact: the scores recompute from it bit for bit."""

import numpy as np
import pandas as pd
import pytest
import torch

from songtrace.artifacts import artifact_hash, load_safetensors, read_json, save_safetensors
from songtrace.attribution import (
    AttributeConfig,
    Fisher,
    FisherConfig,
    ScoreConfig,
    UnlearnConfig,
    attribute,
    fit_fisher,
    load_delta,
    load_run_delta,
    recompute_scores,
    unlearn,
)
from songtrace.attribution.query import QueryContext, resolve_query
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.registry import load_task

CONFIG = AttributeConfig(unlearn=UnlearnConfig(lr=1e-4, steps=2, n_timesteps=8, mask="both"),
                         score=ScoreConfig(n_timesteps=3, batch_size=4))


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model, tiny_latents):
    root = tmp_path_factory.mktemp("delta_run")
    fit_fisher(tiny_model, tiny_latents, FisherConfig(n_timesteps=2, batch_size=4), root / "fisher")
    ids = LatentSet.load(tiny_latents).subset("train").ids
    queries = [f"train:{ids[0]}", f"train:{ids[2]}"]
    result = attribute(queries, CONFIG, tiny_model, tiny_latents, root / "fisher", root / "run", home=root / "home")
    return {"root": root, "queries": queries, "result": result}


def test_each_query_delta_is_saved_listed_and_names_what_made_it(run, tiny_model, tiny_latents):
    out, fisher_dir = run["root"] / "run", run["root"] / "fisher"
    record = read_json(out / "config.json")
    assert [d["query_id"] for d in record["deltas"]] == run["queries"]
    task = load_task(tiny_model)
    latents = LatentSet.load(tiny_latents)
    for q, result in zip(run["queries"], run["result"].results, strict=True):
        saved = load_run_delta(out, q)
        assert saved.meta["query_id"] == q and saved.meta["config_hash"] == CONFIG.config_hash()
        assert saved.meta["model"] == task.identity() and saved.meta["fisher"] == artifact_hash(fisher_dir)
        assert saved.meta["latents"] == latents.content_hash() and saved.unlearn_config() == CONFIG.unlearn.to_dict()
        assert set(saved.delta) == set(result.delta) and all(torch.equal(saved.delta[k], result.delta[k]) for k in result.delta)
        # the delta is Eq. 6 itself: the same as unlearning the query again
        again = unlearn(task, Fisher.load(fisher_dir), resolve_query(q, QueryContext(latents=latents)).batch, CONFIG.unlearn)
        assert all(torch.equal(saved.delta[k], again[k]) for k in again)
    with pytest.raises(SongtraceError, match="no saved delta"):
        load_run_delta(out, "train:nope")


def test_scores_recompute_from_the_saved_delta_bit_for_bit(run):
    out = run["root"] / "run"
    scores = pd.read_parquet(out / "scores.parquet")
    for q in run["queries"]:
        saved = scores[scores.query_id == q]["score"].to_numpy()  # data order
        recomputed = recompute_scores(out, q).numpy()
        assert recomputed.dtype == saved.dtype == np.float64
        assert np.array_equal(recomputed, saved)
        assert np.abs(saved).max() > 0


def test_a_diverged_unlearning_step_is_an_error_not_nan_scores(run, tiny_model, tiny_latents, tmp_path):
    wild = AttributeConfig(unlearn=UnlearnConfig(lr=1e2, steps=2, n_timesteps=8), score=CONFIG.score)
    with pytest.raises(SongtraceError, match="diverged"):
        attribute(run["queries"][:1], wild, tiny_model, tiny_latents, run["root"] / "fisher", tmp_path / "wild", home=run["root"] / "home")


def test_a_changed_delta_file_or_another_model_is_refused(run, tmp_path, tiny_model):
    out = run["root"] / "run"
    listed = read_json(out / "config.json")["deltas"][0]
    path = out / listed["file"]
    tensors = load_safetensors(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1.0
    forged = tmp_path / "forged.safetensors"
    save_safetensors(forged, tensors, metadata=header)
    with pytest.raises(SongtraceError, match="do not match the delta_hash"):
        load_delta(forged)
    save_safetensors(tmp_path / "plain.safetensors", tensors)
    with pytest.raises(SongtraceError, match="not a songtrace delta"):
        load_delta(tmp_path / "plain.safetensors")
    other = load_task(tiny_model)
    with torch.no_grad():
        next(other.module.parameters()).add_(1e-3)
    with pytest.raises(SongtraceError, match="not the model this delta was unlearned from"):
        recompute_scores(out, listed["query_id"], model=other)
