"""The self-influence search end to end on the tiny fixtures: targets, engine equivalence, outputs, resuming, CLI."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from songtrace.attribution import FisherConfig, ScoreConfig, compute_fisher, influence, unlearn
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.registry import load_model
from songtrace.model.task import model_identity
from songtrace.selfinfluence.fd import GenerationProbe, fd_metrics
from songtrace.selfinfluence.grid import TARGETS_FILE, Cell
from songtrace.selfinfluence.metrics import scale_k
from songtrace.selfinfluence.run import (
    GRID_COLUMNS,
    SelfInfluenceConfig,
    SelfInfluenceData,
    run_self_influence,
    select_stratified_targets,
    select_targets,
)
from songtrace.selfinfluence.scorer import CellScorer

TINY = SelfInfluenceConfig(
    targets=2, stage_a_targets=2, lrs=(1e-3, 1e-1), steps=(1,), groups=("all", "to_kv"), masks=("mixed", "none"),
    score_timesteps=2, unlearn_timesteps=4, batch_size=8, embedder="dsp", fd_prompts=3, fd_sampler_steps=2,
)


@pytest.fixture(scope="module")
def si_data(tiny_model, tiny_latents, tiny_codec, tiny_world):
    from songtrace.codec import load_codec
    from songtrace.embedders import load_embedder
    from songtrace.world import load_world

    model = load_model(tiny_model)
    latents = LatentSet.load(tiny_latents)
    fisher = compute_fisher(model, latents, FisherConfig(n_timesteps=2))
    items = latents.subset("train")
    embedder = load_embedder("dsp")
    world = load_world(tiny_world)
    emb = embedder.embed_audio([world.audio(i) for i in items.ids], world.sample_rate)
    versions = ["g" if i in (0, 4) else "" for i in range(len(items))]  # a planted version pair among the training tracks
    probe = GenerationProbe(load_codec(tiny_codec), embedder, items, n_prompts=3, seed=0, sampler_steps=2)
    return SelfInfluenceData(model, fisher, latents, emb, versions, "dsp", probe, inputs={"model": model_identity(model)})


def test_generation_probe_is_deterministic_and_sees_the_delta(si_data):
    from songtrace.attribution.unlearn import apply_delta
    from songtrace.data.batch import Conditioning
    from songtrace.model.task import task_for

    probe = si_data.probe
    zero = {n: torch.zeros_like(p) for n, p in si_data.model.named_parameters() if n.startswith("layers.")}
    base = probe.embed(si_data.model)
    np.testing.assert_array_equal(base, probe.embed(si_data.model))
    np.testing.assert_allclose(probe.embed(si_data.model, zero), base, atol=1e-6)
    g = torch.Generator().manual_seed(0)
    moved = {n: 0.05 * torch.randn(p.shape, generator=g) for n, p in zero.items()}
    assert not np.allclose(probe.embed(si_data.model, moved), base, atol=1e-3)
    broken = {n: torch.full_like(p, 1e30) for n, p in zero.items()}
    assert probe.embed(si_data.model, broken) is None
    assert fd_metrics(None, base, base)["fd"] == float("inf")
    x = torch.randn(2, *si_data.latents.latent_shape)
    args = (x, torch.rand(2), Conditioning(si_data.latents.text[:2], si_data.latents.text_mask[:2], torch.zeros(2), torch.ones(2)))
    task = task_for(si_data.model)
    with torch.no_grad():  # θ0 + 0 through the task is the module itself
        torch.testing.assert_close(task.predictor(apply_delta(task.params(), zero))(*args, None), si_data.model(*args))
    assert probe.n_samples == 3


def test_config_validates_and_round_trips():
    assert SelfInfluenceConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(SongtraceError, match="unknown group"):
        SelfInfluenceConfig(groups=("everything",))
    with pytest.raises(SongtraceError, match="unknown mask"):
        SelfInfluenceConfig(masks=("M_U",))
    with pytest.raises(SongtraceError, match="steps"):
        SelfInfluenceConfig(steps=(5,))


def test_targets_are_one_per_cluster_deterministic_and_diverse_in_order():
    rng = np.random.default_rng(0)
    centers = np.eye(8)[:4] * 5
    x = np.concatenate([c + 0.1 * rng.normal(size=(10 + 5 * i, 8)) for i, c in enumerate(centers)])
    cluster = np.repeat(np.arange(4), [10, 15, 20, 25])
    targets = select_targets(x, 4, seed=0)
    assert sorted(cluster[targets].tolist()) == [0, 1, 2, 3]
    assert targets == select_targets(x, 4, seed=0)
    assert cluster[targets[0]] == 3  # the largest cluster first
    # each representative is its cluster's member nearest the centroid
    for t in targets:
        members = np.flatnonzero(cluster == cluster[t])
        centroid = x[members].mean(axis=0)
        assert t == members[np.argmin(np.linalg.norm(x[members] - centroid, axis=1))]


def test_stratified_targets_represent_short_tracks_in_proportion():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 6))
    short = np.arange(60) < 18  # 30 % short tracks
    targets = select_stratified_targets(x, 10, seed=0, strata=short)
    assert len(set(targets)) == 10 and short[targets].sum() == 3
    assert short[targets[:4]].sum() >= 1  # a prefix (stage A) keeps the proportion
    assert targets == select_stratified_targets(x, 10, seed=0, strata=short)
    assert short[select_stratified_targets(x, 2, seed=0, strata=np.arange(60) < 3)].sum() == 1  # a rare stratum still gets one
    assert select_stratified_targets(x, 5, seed=0, strata=np.zeros(60, bool)) == select_targets(x, 5, seed=0)


def test_cell_scorer_matches_the_attribution_engine_bit_for_bit(si_data):
    """The grid's speed-ups (one θ0 gradient over the union of groups, shared trajectories, cached base losses)
    give exactly `unlearn` + `influence`: the same δ and the same τ, bit for bit, in any order of cells."""
    items = si_data.latents.subset("train")
    score = ScoreConfig(n_timesteps=2, batch_size=4, timestep_chunk=2)
    groups = ["all", "to_kv", "cross_attn", "self_attn"]
    scorer = CellScorer(si_data.model, si_data.fisher, si_data.latents, groups, score, 4, 1e-3, "relative", 0)
    cells = [Cell(0.05, 1, "to_kv", "mixed"), Cell(1e-3, 3, "all", "none"), Cell(1e-3, 2, "all", "M_L"), Cell(1e-4, 4, "all", "none"),
             Cell(1e-4, 1, "all", "M_L"),
             Cell(1e-2, 2, "self_attn", "both"), Cell(1e-2, 1, "cross_attn", "both"), Cell(0.05, 2, "to_kv", "mixed")]
    for target in (items.ids[1], items.ids[4]):
        query = scorer.query(target)
        for cell in cells:
            ours = scorer.delta(cell, target)
            ref = unlearn(si_data.model, si_data.fisher, query, scorer.unlearn_config(cell))
            assert set(ours) == set(ref) and all(torch.isfinite(ref[n]).all() for n in ref), (cell, target)
            assert all(torch.equal(ours[n], ref[n]) for n in ref), cell
            assert not all(torch.equal(ours[n], torch.zeros_like(ours[n])) for n in ours)
        for cell in (Cell(1e-3, 1, "all", "both"), Cell(1e-3, 2, "cross_attn", "mixed")):
            tau, _ = scorer.scores(cell, target)
            ref_tau = influence(si_data.model, unlearn(si_data.model, si_data.fisher, query, scorer.unlearn_config(cell)), si_data.latents,
                                score, mask_loss=scorer.unlearn_config(cell).mask_loss)
            np.testing.assert_array_equal(tau, ref_tau.numpy())
            assert np.abs(tau).max() > 0


def test_end_to_end_tiny_run_writes_grid_table_plots_and_best_config(si_data, tmp_path):
    best_path = tmp_path / "home" / "attribution" / "best_config.json"
    config = dataclasses.replace(TINY, stage_b="product")
    result = run_self_influence(si_data, config, tmp_path / "si", best_config_path=best_path)
    grid = pq.read_table(tmp_path / "si" / "grid.parquet").to_pandas()
    assert set(GRID_COLUMNS) <= set(grid.columns)
    for col in ("artist_precision", "version_recall", "mean_rank_short", "mean_rank_long", "fd_vs_original", "fd_original", "rel_update"):
        assert col in grid.columns
    assert (grid["stage"] == "A").sum() == 2 and (grid["stage"] == "B").sum() == 4
    assert set(grid.loc[grid["stage"] == "B", "group"]) == {"all", "to_kv"}
    n = len(si_data.latents.subset("train"))
    assert grid["mean_rank"].between(1, n).all() and grid["k"].eq(scale_k(n)).all() and grid["n_items"].eq(n).all()
    assert grid["fd"].notna().all() and (grid["fd_samples"] == 3).all()
    # relative learning rates: the larger one moves the weights ~100x more
    a = grid[grid["stage"] == "A"].sort_values("lr")
    ratio = a["rel_update"].iloc[1] / a["rel_update"].iloc[0]
    assert 30 < ratio < 300
    table = (tmp_path / "si" / "table.md").read_text()
    assert "| Target Layer | M_U | M_L | R(z_tar) | embed_topk | embed_botk | FD" in table
    assert "Cross-Attention's to_kv weights" in table
    for name in ("rank_vs_lr.png", "metrics_by_mask.png", "targets.parquet", "best_config.json"):
        assert (tmp_path / "si" / name).exists()
    best = json.loads(best_path.read_text())
    assert best == result.best and best["unlearn"]["group"] in ("all", "to_kv") and best["unlearn"]["lr"] in set(grid["lr"])
    per_target = pq.read_table(tmp_path / "si" / "targets.parquet").to_pandas()
    assert per_target["stage"].value_counts().to_dict() == {"A": 2 * 2, "B": 4 * 2, "V": 1} and per_target["rank"].ge(1).all()
    # the track with a planted version (rows 0 and 4 share a group) is unlearned at the best cell for version recall
    version = grid[grid["stage"] == "V"]
    assert len(version) == 1 and version["version_recall"].iloc[0] in (0.0, 1.0)
    assert best["version_targets"] == [si_data.latents.subset("train").ids[0]]
    # a finished run is read back, not recomputed
    again = run_self_influence(si_data, config, tmp_path / "si")
    pd.testing.assert_frame_equal(again.grid, result.grid)


class Stop(Exception):
    pass


def test_killed_run_resumes_without_recomputing(si_data, tmp_path):
    config = dataclasses.replace(TINY, fd=False)
    seen = []

    def kill_after_three(cell, target):
        if target is not None:
            seen.append((cell, target))
        if len(seen) == 3:
            raise Stop

    with pytest.raises(Stop):
        run_self_influence(si_data, config, tmp_path / "si", on_progress=kill_after_three)
    assert len((tmp_path / "si" / TARGETS_FILE).read_text().splitlines()) == 3
    resumed = []
    result = run_self_influence(si_data, config, tmp_path / "si", on_progress=lambda c, t: resumed.append((c, t)) if t else None)
    # stage A 2x2, stage B 3x2, one version target; minus the killed run's 3 and stage B's (all, mixed) shared with stage A
    assert len(resumed) == 2 * 2 + 3 * 2 + 1 - 3 - 2
    assert not set(resumed) & set(seen)
    keys = [(r["cell_key"], r["target_id"]) for r in map(json.loads, (tmp_path / "si" / TARGETS_FILE).read_text().splitlines())]
    assert len(keys) == len(set(keys))
    assert len(result.grid) == 6 and result.grid["fd"].isna().all()
    cells = set(zip(result.grid["group"], result.grid["mask"], result.grid["stage"], strict=True))
    assert cells - {(result.best["unlearn"]["group"], result.best["unlearn"]["mask"], "V")} == {
        ("all", "mixed", "A"), ("all", "mixed", "B"), ("to_kv", "mixed", "B"), ("all", "none", "B")}
    # a different config into the same directory is refused
    with pytest.raises(SongtraceError, match="different"):
        run_self_influence(si_data, dataclasses.replace(config, score_timesteps=3), tmp_path / "si")
    # the resumed grid records the content hash of an uninterrupted one (its columns were built in another order)
    whole = run_self_influence(si_data, config, tmp_path / "whole")
    assert result.record["content_hash"] == whole.record["content_hash"]


def test_cli_runs_the_search_from_a_home_and_saves_the_best_config(tmp_path, tiny_world, tiny_codec, tiny_model, tiny_latents):
    import typer
    from typer.testing import CliRunner

    from songtrace.cli.selfinfluence import register

    home = tmp_path / "home"
    for stage, src in (("worlds", tiny_world), ("codecs", tiny_codec), ("models", tiny_model), ("latents", tiny_latents)):
        (home / stage).mkdir(parents=True)
        (home / stage / "demo").symlink_to(src)

    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    args = ["selfinfluence", "--home", str(home), "--out", str(tmp_path / "si"), "--targets", "2", "--stage-a-targets", "1",
            "--lrs", "1e-4,1e-2", "--steps", "1,2", "--groups", "all,self_attn", "--masks", "mixed,both", "--score-timesteps", "2",
            "--unlearn-timesteps", "4", "--embedder", "dsp", "--no-fd", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["best"]["unlearn"]["group"] in ("all", "self_attn")
    stages = [c["stage"] for c in summary["grid"]]
    # lr sweep at 1 step, 2 steps at the best lr, Table 1's cross of group/mask, and the planted version at the best cell
    assert stages == ["A"] * 3 + ["B"] * 3 + ["V"]
    stage_a = [c for c in summary["grid"] if c["stage"] == "A"]
    assert sorted(c["steps"] for c in stage_a) == [1, 1, 2] and len({c["lr"] for c in stage_a if c["steps"] == 2}) == 1
    from songtrace.attribution.best_config import best_config_path
    from songtrace.model.registry import load_task

    best = json.loads(best_config_path(home, load_task(home / "models" / "demo").identity()).read_text())  # one file per model
    assert best["unlearn"] == summary["best"]["unlearn"]
    assert (home / "fisher" / "demo" / "config.json").exists()  # fitted on the way
    grid = pq.read_table(tmp_path / "si" / "grid.parquet").to_pandas()
    assert set(GRID_COLUMNS) <= set(grid.columns) and grid["fd"].isna().all()
    bad = CliRunner().invoke(app, [*args[:-1], "--masks", "M_U"])
    assert bad.exit_code != 0 and "unknown mask" in str(bad.exception)


def test_cli_defaults_are_the_config_defaults():
    import inspect

    from songtrace.cli.selfinfluence import selfinfluence

    d = {k: v.default for k, v in inspect.signature(selfinfluence).parameters.items()}
    c = SelfInfluenceConfig()
    for name in ("targets", "stage_a_targets", "lr_mode", "k", "score_timesteps", "unlearn_timesteps", "damping", "embedder", "fd",
                 "fd_prompts", "seed"):
        assert d[name] == getattr(c, name), name
    assert tuple(float(x) for x in d["lrs"].split(",")) == c.lrs and tuple(int(x) for x in d["steps"].split(",")) == c.steps
    assert tuple(d["groups"].split(",")) == c.groups and tuple(d["masks"].split(",")) == c.masks and d["full"] is (not c.staged)
