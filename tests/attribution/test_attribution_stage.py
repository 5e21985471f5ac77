"""The Fisher stage and attribution runs from artifact directories (tiny trained DiT), and the CLI."""

import json
import shutil

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from songtrace.artifacts import load_safetensors, read_json, save_safetensors
from songtrace.attribution import (
    AttributeConfig,
    Fisher,
    FisherConfig,
    ScoreConfig,
    UnlearnConfig,
    attribute,
    compute_fisher,
    fit_fisher,
)
from songtrace.cli import app
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.registry import load_model

FISHER = FisherConfig(n_timesteps=2, batch_size=2, sample_chunk=8)
CONFIG = AttributeConfig(unlearn=UnlearnConfig(lr=1e-2, n_timesteps=16), score=ScoreConfig(n_timesteps=4, batch_size=4))


@pytest.fixture(scope="module")
def fisher_dir(tmp_path_factory, tiny_model, tiny_latents):
    out = tmp_path_factory.mktemp("fisher") / "tiny"
    fit_fisher(tiny_model, tiny_latents, FISHER, out)
    return out


def test_fisher_artifact_records_its_inputs_and_matches_in_memory(fisher_dir, tiny_model, tiny_latents):
    fisher = Fisher.load(fisher_dir)
    record = read_json(fisher_dir / "config.json")
    latents = LatentSet.load(tiny_latents)
    assert record["complete"] and record["n_items"] == len(latents.subset("train")) == fisher.n_items
    assert set(record["inputs"]) == {"model", "latents"} and record["inputs"]["latents"] == latents.content_hash()
    assert record["config"] == FISHER.to_dict()
    model = load_model(tiny_model)
    ref = compute_fisher(model, latents, FISHER)
    assert sorted(ref.diag) == sorted(fisher.diag)
    assert all(torch.equal(ref.diag[k], fisher.diag[k]) for k in ref.diag)
    assert not (fisher_dir / "partial").exists()


def test_fisher_resumes_after_interruption_bit_for_bit(tmp_path, fisher_dir, tiny_model, tiny_latents):
    out = tmp_path / "fisher"
    fit_fisher(tiny_model, tiny_latents, FISHER, out, checkpoint_every=1, max_batches=2)
    assert (out / "partial" / "rank-00000.safetensors").exists() and not (out / "config.json").exists()
    with pytest.raises(SongtraceError, match="no Fisher here"):
        Fisher.load(out)
    fit_fisher(tiny_model, tiny_latents, FISHER, out, checkpoint_every=1, max_batches=1)
    fit_fisher(tiny_model, tiny_latents, FISHER, out)
    resumed, whole = load_safetensors(out / "fisher.safetensors"), load_safetensors(fisher_dir / "fisher.safetensors")
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
    with pytest.raises(SongtraceError, match="different config"):
        fit_fisher(tiny_model, tiny_latents, FisherConfig(n_timesteps=3), out)


def test_attribute_writes_scores_credits_and_config(tmp_path, fisher_dir, tiny_model, tiny_latents, tiny_world):
    latents = LatentSet.load(tiny_latents)
    train = latents.subset("train")
    shutil.copytree(tiny_world, tmp_path / "home" / "worlds" / "tiny")  # titles come from the world the cache was made from
    queries = [f"train:{train.ids[0]}", f"train:{train.ids[3]}"]
    run = attribute(queries, CONFIG, tiny_model, tiny_latents, fisher_dir, tmp_path / "run", home=tmp_path / "home")
    scores = pd.read_parquet(tmp_path / "run" / "scores.parquet")
    assert {"query_id", "train_id", "artist", "title", "score", "rank", "config_hash"} <= set(scores.columns)
    assert len(scores) == 2 * len(train)
    for q in queries:
        part = scores[scores.query_id == q]
        assert part.train_id.tolist() == train.ids and sorted(part["rank"]) == list(range(1, len(train) + 1))
        assert part.set_index("train_id").artist.to_dict() == dict(zip(train.ids, train.artists, strict=True))
        assert (part.title != "").all()
    credits = pd.read_parquet(tmp_path / "run" / "credits.parquet")
    for q in queries:
        assert credits[credits.query_id == q].share.sum() == pytest.approx(1.0)
    record = read_json(tmp_path / "run" / "config.json")
    assert set(record["inputs"]) == {"model", "latents", "fisher", "queries"} and record["complete"]
    assert AttributeConfig.from_dict(record["config"]) == CONFIG
    assert {"hub_share", "effective_rank", "same_tracks_flag"} <= set(record["diagnostics"])
    assert record["mask_unlearn"] is True and record["mask_loss"] is False
    assert len(list((tmp_path / "home" / "cache" / "base_losses").glob("*.safetensors"))) == 1
    assert [r.query_id for r in run.results] == queries
    # a rerun with the same config reads the finished results back
    again = attribute(queries, CONFIG, tiny_model, tiny_latents, fisher_dir, tmp_path / "run", home=tmp_path / "home")
    assert all(torch.equal(a.scores, b.scores) for a, b in zip(run.results, again.results, strict=True))
    assert again.results[0].table["train_id"].tolist() == run.results[0].table["train_id"].tolist()


def test_a_fisher_for_other_weights_or_data_is_refused(tmp_path, fisher_dir, tiny_model, tiny_latents):
    other_model = tmp_path / "model"
    shutil.copytree(tiny_model, other_model)
    weights = load_safetensors(other_model / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3
    save_safetensors(other_model / "model.safetensors", weights)
    with pytest.raises(SongtraceError, match="fitted on another model"):
        attribute(["train:x"], CONFIG, other_model, tiny_latents, fisher_dir, tmp_path / "a", home=tmp_path)
    latents = LatentSet.load(tiny_latents)
    latents.latents[0, 0, 0] += 1.0
    latents.save(tmp_path / "latents")
    shutil.copy(tiny_latents / "config.json", tmp_path / "latents" / "config.json")
    with pytest.raises(SongtraceError, match="fitted on other data"):
        attribute(["train:x"], CONFIG, tiny_model, tmp_path / "latents", fisher_dir, tmp_path / "b", home=tmp_path)


def test_cli_fisher_and_attribute_json(tmp_path, tiny_model, tiny_latents):
    runner = CliRunner()
    home = tmp_path / "home"
    common = ["--home", str(home), "--model", str(tiny_model), "--latents", str(tiny_latents)]
    res = runner.invoke(app, ["fisher", *common, "--timesteps", "2", "--group", "cross_attn", "--name", "ca", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_items"] > 0 and summary["config"]["group"] == "cross_attn"
    train_id = LatentSet.load(tiny_latents).subset("train").ids[1]
    args = ["attribute", *common, "--fisher", "ca", "--group", "to_kv", "--query", f"train:{train_id}", "--top", "4",
            "--timesteps", "8", "--score-timesteps", "2", "--lr", "0.01", "--out", str(tmp_path / "out"), "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    top = out["queries"][0]["top"]
    assert [r["rank"] for r in top] == [1, 2, 3, 4] and top[0]["score"] >= top[1]["score"]
    assert sum(c["share"] for c in out["queries"][0]["credits"]) == pytest.approx(1.0)
    assert list((tmp_path / "out" / "deltas").glob("*.safetensors"))  # kept by default, for `songtrace verify`
    res = runner.invoke(app, [*args[:-3], "--out", str(tmp_path / "out-nodelta"), "--no-save-deltas", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["queries"][0]["top"] == top  # the same scores, no delta files
    assert not (tmp_path / "out-nodelta" / "deltas").exists()
    res = runner.invoke(app, [*args[:-3], "--out", str(tmp_path / "out2"), "--group", "all"])  # the Fisher covers only cross_attn
    assert res.exit_code != 0 and "no entries for" in str(res.exception)
