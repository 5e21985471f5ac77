"""Ground truth by retraining: the plan, the noise measurement, and the stage end to end on the tiny fixtures."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from songtrace.attribution.score import ScoreConfig
from songtrace.attribution.unlearn import UnlearnConfig
from songtrace.errors import SongtraceError
from songtrace.groundtruth import GroundTruthConfig, build_ground_truth, load_ground_truth, plan_jobs, subset_masks
from songtrace.groundtruth.evaluate import EvaluateConfig, evaluate_methods
from songtrace.groundtruth.measure import split_half_noise
from songtrace.groundtruth.plan import loo_targets
from songtrace.groundtruth.retrain import model_dir
from songtrace.model.train import TrainConfig

TINY = GroundTruthConfig(subsets=3, loo_items=1, loo_seeds=(0, 1), loao_seeds=(0,), generated=1, sampler_steps=2,
                         measure_timesteps=4,
                         train=TrainConfig(steps=3, batch_size=4, warmup=1, checkpoint_every=10, valid_every=10, valid_timesteps=1,
                                           log_every=1),
                         dit={"width": 16, "depth": 1, "heads": 2, "cond_dim": 16, "timestep_features": 16, "timing_features": 8})


def test_subsets_are_seeded_fixed_size_and_extend_by_prefix():
    a = subset_masks(20, 8, 0.5, seed=3)
    assert a.shape == (8, 20) and (a.sum(1) == 10).all()
    assert np.array_equal(a, subset_masks(20, 8, 0.5, seed=3)) and not np.array_equal(a, subset_masks(20, 8, 0.5, seed=4))
    assert np.array_equal(subset_masks(20, 12, 0.5, seed=3)[:8], a)  # more subsets keep the first ones


def test_plan_puts_theta0_first_and_names_every_job():
    ids = [f"t{i}" for i in range(9)]
    artists = ["a"] * 5 + ["b"] * 3 + ["c"]
    jobs, masks = plan_jobs(TINY, ids, artists)
    assert jobs[0].name == "full-s0" and jobs[0].exclude_ids == ()
    assert [j.name for j in jobs if j.kind == "full"] == ["full-s0", "full-s1"]
    assert loo_targets(ids, artists, 2) == ["t8", "t5"]  # smallest catalogues first
    loo = [j for j in jobs if j.kind == "loo"]
    assert [j.exclude_ids for j in loo] == [("t8",), ("t8",)] and {j.seed for j in loo} == {0, 1}
    loao = {j.target: j.exclude_ids for j in jobs if j.kind == "loao"}
    assert loao["b"] == ("t5", "t6", "t7") and set(loao) == {"a", "b", "c"}
    for j in (j for j in jobs if j.kind == "subset"):
        assert set(j.exclude_ids) == {i for i, k in zip(ids, masks[int(j.target)], strict=True) if not k}
    assert len({j.name for j in jobs}) == len(jobs)
    two, _ = plan_jobs(dataclasses.replace(TINY, loao_artists=2), ids, artists)
    assert sorted(j.target for j in two if j.kind == "loao") == ["a", "b"]


def test_split_half_noise_tells_signal_from_noise():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(30, 3, 1)) * np.array([1.0, 1.0, 0.0])[None, :, None]
    losses = signal + 0.05 * rng.normal(size=(30, 3, 64))
    out = split_half_noise(losses)
    assert (out["ratio"][:2] < 0.1).all() and out["reliability"][0] > 0.95
    assert out["signal_sd"][2] < out["noise_sd"][2] * 2  # the third query has no signal at all


def test_config_validation():
    assert GroundTruthConfig.from_dict(TINY.to_dict()) == TINY
    for bad in ({"alpha": 1.0}, {"measure_timesteps": 3}, {"loo_seeds": (0, 0)}, {"subsets": 2}, {"alpha": float("nan")}):
        with pytest.raises(SongtraceError):
            dataclasses.replace(TINY, **bad)


@pytest.mark.slow
def test_ground_truth_stage_end_to_end(tmp_path, tiny_latents, tiny_world, tiny_codec, one_thread):
    out = tmp_path / "gt"
    gt = build_ground_truth(TINY, tiny_latents, tiny_world, tiny_codec, out)
    q = len(gt.queries)
    assert {x.kind for x in gt.queries} == {"held_out", "generated"}
    assert gt.masks.shape == (3, len(gt.train_ids)) and gt.subset_loss.shape == (3, q)
    assert gt.full_loss.shape == (2, q) and gt.loo_effect().shape == (1, q) and gt.loao_effect().shape == (len(gt.loao_artists), q)
    assert np.isfinite(gt.subset_loss).all() and gt.summary["measurement"]["all"]["median_noise_to_signal"] >= 0
    # the left-out item really was left out, and a finished stage reads back without training
    stamp = (model_dir(out, type("J", (), {"name": "subset-000-s0"})) / "model.safetensors").stat().st_mtime_ns
    again = load_ground_truth(out)
    assert np.array_equal(again.subset_loss, gt.subset_loss)
    assert build_ground_truth(TINY, tiny_latents, tiny_world, tiny_codec, out).summary == gt.summary
    assert (model_dir(out, type("J", (), {"name": "subset-000-s0"})) / "model.safetensors").stat().st_mtime_ns == stamp
    ev = EvaluateConfig(methods=("unlearning", "fast k=64", "mucs", "representer"), unlearn=UnlearnConfig(lr=1e-3, n_timesteps=4),
                        score=ScoreConfig(n_timesteps=2, batch_size=4), n_boot=20, fisher_timesteps=1)
    results = evaluate_methods(gt, ev, tiny_latents, tiny_world, tiny_codec)
    table = {r["method"]: r for r in results["table"]}
    assert set(table) == {"unlearning", "fast k=64", "mucs", "representer"}
    for r in table.values():
        lo, hi = r["lds_all_ci"]
        assert -1 <= lo <= hi <= 1 and "loo_spearman" in r and "artist_spearman" in r and "hub_share" in r
    assert "fast k=64" in results["fast_vs_exact"] and "unlearning - representer" in results["paired_lds_difference"]
    cached = (out / "evaluation" / "methods" / "mucs.npy").stat().st_mtime_ns
    more = dataclasses.replace(ev, methods=(*ev.methods, "attribute_by_unlearning"))
    evaluate_methods(gt, more, tiny_latents, tiny_world, tiny_codec)
    assert (out / "evaluation" / "methods" / "mucs.npy").stat().st_mtime_ns == cached  # a new method scores only itself
    assert (out / "evaluation" / "table.md").read_text().count("\n") == 2 + 5
