"""End-to-end `songtrace compare` on the tiny fixtures: every output is written and consistent."""

import json

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from fixtures_model import TINY_DIT, TINY_TRAIN
from songtrace.attribution.fisher import FisherConfig, fit_fisher
from songtrace.attribution.score import ScoreConfig
from songtrace.attribution.unlearn import UnlearnConfig
from songtrace.cli.compare import parse_options, register
from songtrace.codec import encode_world
from songtrace.compare.run import ALL_METHODS, CompareConfig, run_compare
from songtrace.errors import SongtraceError
from songtrace.model.train import train_model


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_world, tiny_codec):
    """A consistent world -> latents -> model -> Fisher stack on the tiny demo world."""
    root = tmp_path_factory.mktemp("compare_stack")
    latents = root / "latents"
    encode_world(tiny_world, tiny_codec, latents)
    model = root / "model"
    train_model(TINY_TRAIN, TINY_DIT, latents, model)
    fisher = root / "fisher"
    fit_fisher(model, latents, FisherConfig(n_timesteps=2, batch_size=4), fisher)
    return {"world": tiny_world, "codec": tiny_codec, "latents": latents, "model": model, "fisher": fisher, "home": root / "home"}


def tiny_config(**kw):
    base = dict(queries=2, sampler_steps=4, planted_versions=1, planted_artists=1, small_artist_tracks=3,
                unlearn=UnlearnConfig(lr=1e-4, n_timesteps=4, timestep_chunk=4), score=ScoreConfig(n_timesteps=2, batch_size=4),
                options={"gradient": {"dim": 64, "n_timesteps": 1}, "activations": {"window_seconds": 0.5}})
    base.update(kw)
    return CompareConfig(**base)


def test_compare_writes_every_output(stack, tmp_path):
    out = tmp_path / "cmp"
    summary = run_compare(tiny_config(), stack["model"], stack["codec"], stack["latents"], stack["world"], out,
                          fisher_dir=stack["fisher"], home=stack["home"])
    for name in ("scores.parquet", "queries.parquet", "correlations.json", "correlations_pearson.csv", "concentration.parquet",
                 "planted.parquet", "planted_summary.parquet", "timing.json", "fig1_scores.png", "fig2_correlations.png",
                 "summary.json", "config.json"):
        assert (out / name).exists(), name
    scores = pd.read_parquet(out / "scores.parquet")
    queries = pd.read_parquet(out / "queries.parquet")
    n_train = summary["n_items"]
    assert set(scores["method"]) == set(ALL_METHODS)
    assert len(scores) == len(ALL_METHODS) * len(queries) * n_train
    assert np.isfinite(scores["score"]).all()
    for (_, _), g in scores.groupby(["query_id", "method"]):
        assert sorted(g["rank"]) == list(range(1, n_train + 1))
    assert summary["queries"]["generated"] == 2 and summary["queries"]["planted_version"] == 1
    assert summary["queries"]["planted_artist"] == 1
    assert all("same_tracks_flag" in d and "effective_rank" in d for d in summary["diagnostics"].values())
    assert (out / "queries" / "gen00.wav").exists() and (out / "queries" / "version00.wav").exists()
    corr = json.loads((out / "correlations.json").read_text())
    assert set(corr) == {"pearson", "spearman", "pearson_pooled", "spearman_pooled"}
    assert corr["pearson"]["unlearning"]["unlearning"] == pytest.approx(1.0)
    planted = pd.read_parquet(out / "planted.parquet")
    assert set(planted["kind"]) == {"planted_version", "planted_artist"} and (planted["rank"] >= 1).all()
    timing = json.loads((out / "timing.json").read_text())
    assert set(timing) == set(ALL_METHODS) and all(t["seconds_per_query"] > 0 for t in timing.values())
    record = json.loads((out / "config.json").read_text())
    assert record["complete"] and record["embedder"] == "dsp"
    # a rerun with the same config skips and returns the same summary
    again = run_compare(tiny_config(), stack["model"], stack["codec"], stack["latents"], stack["world"], out,
                        fisher_dir=stack["fisher"], home=stack["home"])
    assert again == json.loads((out / "summary.json").read_text())
    with pytest.raises(SongtraceError, match="different config"):
        run_compare(tiny_config(seed=1), stack["model"], stack["codec"], stack["latents"], stack["world"], out,
                    fisher_dir=stack["fisher"], home=stack["home"])


def test_compare_cli_without_unlearning(stack, tmp_path):
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # keep typer in multi-command mode
    out = tmp_path / "cli"
    args = ["compare", "--queries", "2", "--out", str(out), "--methods", "version,activations", "--reference", "activations",
            "--sampler-steps", "3", "--planted-versions", "0", "--planted-artists", "0", "--option", "activations.window_seconds=0.5",
            "--model", str(stack["model"]), "--codec", str(stack["codec"]), "--latents", str(stack["latents"]),
            "--world", str(stack["world"]), "--home", str(stack["home"]), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["out_dir"] == str(out) and set(summary["pearson_with_reference"]) == {"version"}
    assert summary["planted"] == []


def test_config_validation_and_option_parsing():
    with pytest.raises(SongtraceError, match="unknown attribution method"):
        CompareConfig(methods=("unlearning", "bogus"))
    with pytest.raises(SongtraceError, match="reference"):
        CompareConfig(methods=("version",))
    c = CompareConfig(options={"gradient": {"dim": 8}})
    assert CompareConfig.from_dict(c.to_dict()) == c
    assert parse_options(["gradient.dim=512", "activations.timesteps=[0.2,0.5]", "embedding.embedder=dsp"]) == {
        "gradient": {"dim": 512}, "activations": {"timesteps": [0.2, 0.5]}, "embedding": {"embedder": "dsp"}}
    with pytest.raises(SongtraceError, match=r"METHOD\.KEY"):
        parse_options(["dim=3"])


def test_baseline_cli_scores_a_training_query(stack, tmp_path):
    from songtrace.cli.baselines import register as register_baseline

    app = typer.Typer()
    register_baseline(app)
    app.command("noop")(lambda: None)
    train_id = pd.read_parquet(stack["latents"] / "items.parquet").query("split == 'train'")["id"].iloc[0]
    out = tmp_path / "base"
    args = ["baseline", "--method", "version", "--query", f"train:{train_id}", "--out", str(out), "--top", "3",
            "--model", str(stack["model"]), "--codec", str(stack["codec"]), "--latents", str(stack["latents"]),
            "--world", str(stack["world"]), "--home", str(stack["home"]), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    top = json.loads(result.stdout)["top"][f"train:{train_id}"]
    assert top[0]["train_id"] == train_id and top[0]["rank"] == 1  # a track is its own best version match
    assert (out / "scores.parquet").exists() and json.loads((out / "config.json").read_text())["complete"]


def test_planted_query_builders(stack):
    from songtrace.compare.queries import diverse_captions, small_artists, world_version_queries
    from songtrace.data.latents import LatentSet
    from songtrace.world import load_world

    world = load_world(stack["world"])
    latents = LatentSet.load(stack["latents"]).subset("train")
    qs = world_version_queries(world, latents, 5)
    m = world.manifest
    pairs = m[(m["version_of"] != "") & m["id"].isin(latents.ids) & m["version_of"].isin(latents.ids)]
    assert len(qs) == len(pairs) >= 1
    q = qs[0]
    assert q.exclude == [q.meta["version_item"]] and q.meta["original"] in q.true_sources
    assert q.meta["version_item"] not in q.true_sources and q.item.wav is not None
    caps = ["a calm choral piece", "a calm choral piece", "fast fiddle reel", "slow harp air", "pipe band march"]
    picked = diverse_captions(caps, 3, seed=0)
    assert len(picked) == 3 and len({caps[i] for i in picked}) == 3
    assert diverse_captions(caps, 10, seed=0) == [0, 2, 3, 4]
    assert small_artists(m, 3) == sorted(m[m["split"] == "train"].groupby("artist").size().loc[lambda s: s <= 3].index)


def test_rendered_versions_only_from_plans_that_reproduce_the_world(stack):
    import dataclasses

    from songtrace.compare.queries import plan_matches, reproduces
    from songtrace.world import load_world, plan_world

    world = load_world(stack["world"])
    plans = {p.id: p for p in plan_world(world.config)}
    row = world.manifest.iloc[0]
    plan = plans[row["id"]]
    assert plan_matches(plan, row) and reproduces(world, plan)
    other = dataclasses.replace(plan, bpm=plan.bpm + 7)
    assert not plan_matches(other, row) and not reproduces(world, other)
