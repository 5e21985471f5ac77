"""The ground-truth stage: retrain with the recipe on subsets and leave-outs, measure the queries, assemble the truth.

`build_ground_truth(config, latents_dir, world_dir, codec_dir, out_dir, workers)` trains θ0 (the
full-data model of the recipe's seed), makes the queries (held-out tracks; tracks θ0 generates),
runs every job (`plan_jobs`) in worker processes, and writes into `out_dir`:

- `models/<job>/` and `losses/<job>.safetensors` (per job; the resumable cache);
- `queries/` (the queries every method scores);
- `truth.safetensors`: subset masks `[M, N]`, the subset models' query losses `[M, Q]`, the
  full-data, leave-one-out and leave-one-artist-out losses;
- `jobs.parquet`, `summary.json` (measurement noise, seed-noise floor, effect sizes), `config.json`.

`load_ground_truth(out_dir)` reads it back as a `GroundTruth`; adding a method never retrains.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from songtrace.artifacts import (
    artifact_hash,
    begin_stage,
    finish_stage,
    hash_tensors,
    load_safetensors,
    load_stage_config,
    read_json,
    save_safetensors,
    write_json,
    write_parquet,
)
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.groundtruth.config import GroundTruthConfig
from songtrace.groundtruth.measure import split_half_noise
from songtrace.groundtruth.plan import Job, plan_jobs
from songtrace.groundtruth.queries import GroundTruthQuery, generated_queries, held_out_queries, load_queries, save_queries
from songtrace.groundtruth.retrain import QUERIES_DIR, load_losses, model_dir, run_jobs, train_job

TRUTH_FILE = "truth.safetensors"
SUMMARY_FILE = "summary.json"
JOBS_FILE = "jobs.parquet"


@dataclasses.dataclass
class GroundTruth:
    """What retraining measured: every query's loss under the subset, full-data and leave-out models."""

    out_dir: Path
    config: GroundTruthConfig
    train_ids: list[str]
    train_artists: list[str]
    queries: list[GroundTruthQuery]
    masks: np.ndarray  # [M, N] bool: item i in subset m
    subset_loss: np.ndarray  # [M, Q]: T-averaged loss, mean over the subset seeds
    full_seeds: list[int]
    full_loss: np.ndarray  # [S, Q] one row per full-data seed
    loo_items: list[str]
    loo_seeds: list[int]
    loo_loss: np.ndarray  # [I, S_loo, Q]
    loao_artists: list[str]
    loao_seeds: list[int]
    loao_loss: np.ndarray  # [A, S_loao, Q]
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def base_model_dir(self) -> Path:
        """θ0: the full-data model of the recipe's seed (what every method attributes with)."""
        return self.out_dir / "models" / f"full-s{self.config.base_seed}"

    def _full_for(self, seeds: list[int]) -> np.ndarray:
        return self.full_loss[[self.full_seeds.index(s) for s in seeds]]

    def loo_effect(self) -> np.ndarray:
        """ΔL(q, i) = mean over seeds of L(q, θ_{−i}) − L(q, θ_full) (same seeds): `[I, Q]`; > 0 = item i helped query q."""
        return (self.loo_loss - self._full_for(self.loo_seeds)[None]).mean(axis=1)

    def loao_effect(self) -> np.ndarray:
        """ΔL(q, a) for leaving artist a out, as for `loo_effect`: `[A, Q]`."""
        return (self.loao_loss - self._full_for(self.loao_seeds)[None]).mean(axis=1)

    @property
    def query_ids(self) -> list[str]:
        return [q.item.id for q in self.queries]


# --------------------------------------------------------------------------- figures of the truth itself


def noise_summary(gt: GroundTruth, per_timestep: np.ndarray, kinds: list[str]) -> dict[str, Any]:
    """Measurement noise of the T-average (split halves over every model), the seed-noise floor and the effect sizes."""
    noise = split_half_noise(per_timestep)
    kinds_arr = np.asarray(kinds)
    out: dict[str, Any] = {"measurement": {}, "n_models": int(per_timestep.shape[0]), "timesteps": int(per_timestep.shape[2])}
    for kind in ("all", *sorted(set(kinds))):
        sel = np.ones(len(kinds), bool) if kind == "all" else kinds_arr == kind
        out["measurement"][kind] = {"median_noise_to_signal": float(np.median(noise["ratio"][sel])),
                                    "max_noise_to_signal": float(np.max(noise["ratio"][sel])),
                                    "median_reliability": float(np.median(noise["reliability"][sel])),
                                    "median_noise_sd": float(np.median(noise["noise_sd"][sel])),
                                    "median_signal_sd": float(np.median(noise["signal_sd"][sel]))}
    seed_sd = gt.full_loss.std(axis=0, ddof=1) if len(gt.full_seeds) > 1 else np.full(len(kinds), np.nan)
    subset_sd = gt.subset_loss.std(axis=0, ddof=1)
    out["seed_noise"] = {"full_seeds": gt.full_seeds, "median_seed_sd": float(np.nanmedian(seed_sd)),
                         "median_subset_sd": float(np.median(subset_sd)),
                         "median_subset_to_seed_sd": float(np.nanmedian(subset_sd / seed_sd))}
    if gt.loo_items:
        eff = gt.loo_effect()
        se = seed_sd[None] * np.sqrt(2.0 / len(gt.loo_seeds))
        out["loo"] = {"items": gt.loo_items, "seeds": gt.loo_seeds, "mean_abs_effect": float(np.abs(eff).mean()),
                      "noise_floor_se": float(np.nanmedian(se)), "share_beyond_2se": float(np.nanmean(np.abs(eff) > 2 * se)),
                      "max_abs_effect": float(np.abs(eff).max())}
    if gt.loao_artists:
        eff = gt.loao_effect()
        se = seed_sd[None] * np.sqrt(1.0 / len(gt.loao_seeds) + 1.0 / len(gt.loao_seeds))
        out["loao"] = {"artists": len(gt.loao_artists), "seeds": gt.loao_seeds, "mean_abs_effect": float(np.abs(eff).mean()),
                       "noise_floor_se": float(np.nanmedian(se)), "share_beyond_2se": float(np.nanmean(np.abs(eff) > 2 * se))}
    return out


# --------------------------------------------------------------------------- the stage


def _truth_tensors(jobs: list[Job], masks: np.ndarray, out_dir: Path, config: GroundTruthConfig, n_queries: int
                   ) -> tuple[dict[str, torch.Tensor], dict[str, Any], np.ndarray]:
    """Assemble the per-job losses into the truth tensors; also every model's per-timestep losses `[J, Q, T]`."""
    per_job = {j.name: load_losses(out_dir, j).numpy() for j in jobs}
    stack = np.stack([per_job[j.name] for j in jobs])
    mean = {k: v.mean(axis=1) for k, v in per_job.items()}
    subset = np.zeros((len(masks), n_queries))
    for m in range(len(masks)):
        subset[m] = np.mean([mean[j.name] for j in jobs if j.kind == "subset" and j.target == str(m)], axis=0)
    full_seeds = sorted(j.seed for j in jobs if j.kind == "full")
    full = np.stack([mean[f"full-s{s}"] for s in full_seeds])

    def grouped(kind: str, seeds: tuple[int, ...]) -> tuple[list[str], np.ndarray]:
        targets = list(dict.fromkeys(j.target for j in jobs if j.kind == kind))
        by = {(j.target, j.seed): mean[j.name] for j in jobs if j.kind == kind}
        arr = np.stack([np.stack([by[(t, s)] for s in seeds]) for t in targets]) if targets else np.zeros((0, len(seeds), n_queries))
        return targets, arr

    loo_items, loo = grouped("loo", config.loo_seeds)
    loao_artists, loao = grouped("loao", config.loao_seeds)
    tensors = {"masks": torch.from_numpy(masks.astype(np.uint8)), "subset_loss": torch.from_numpy(subset),
               "full_loss": torch.from_numpy(full), "loo_loss": torch.from_numpy(loo), "loao_loss": torch.from_numpy(loao)}
    meta = {"full_seeds": full_seeds, "loo_items": loo_items, "loao_artists": loao_artists}
    return tensors, meta, stack


def build_ground_truth(config: GroundTruthConfig, latents_dir: str | Path, world_dir: str | Path, codec_dir: str | Path,
                       out_dir: str | Path, workers: int = 1, overwrite: bool = False) -> GroundTruth:
    """Run (or resume, or read back) the ground-truth stage into `out_dir`."""
    from songtrace.codec import load_codec
    from songtrace.model.registry import load_task
    from songtrace.world import load_world

    out_dir, latents_dir = Path(out_dir), Path(latents_dir)
    latents = LatentSet.load(latents_dir)
    inputs = {"latents": latents.content_hash(), "world": artifact_hash(world_dir), "codec": artifact_hash(codec_dir)}
    if begin_stage(out_dir, config, inputs, overwrite=overwrite):
        return load_ground_truth(out_dir)
    started = time.perf_counter()
    train = latents.subset("train")
    jobs, masks = plan_jobs(config, train.ids, train.artists)
    train_job(jobs[0], config, latents_dir, out_dir)  # θ0, needed to generate the queries
    query_dir = out_dir / QUERIES_DIR
    if not (query_dir / "queries.parquet").exists():
        world = load_world(world_dir)
        queries = held_out_queries(latents, world, config.held_out)
        queries += generated_queries(load_task(model_dir(out_dir, jobs[0])), load_codec(codec_dir), latents, world, config.generated,
                                     config.sampler_steps, config.cfg_scale, config.base_seed)
        save_queries(queries, query_dir)
    queries = load_queries(query_dir)
    run_jobs(jobs, config, latents_dir, out_dir, workers=workers)
    tensors, meta, per_timestep = _truth_tensors(jobs, masks, out_dir, config, len(queries))
    save_safetensors(out_dir / TRUTH_FILE, tensors)
    write_json(out_dir / "truth.json", {**meta, "train_ids": train.ids, "train_artists": train.artists,
                                        "query_ids": [q.item.id for q in queries]})
    rows = []
    for j in jobs:
        metrics = read_json(model_dir(out_dir, j) / "metrics.json")
        rows.append({"name": j.name, "kind": j.kind, "seed": j.seed, "target": j.target, "n_train": metrics["train_items"],
                     "train_seconds": metrics["train_seconds"], "valid_loss": metrics["valid_loss"]})
    write_parquet(out_dir / JOBS_FILE, pd.DataFrame(rows))
    gt = _assemble(out_dir, config, queries)
    summary = noise_summary(gt, per_timestep, [q.kind for q in queries])
    summary.update({"n_train": len(train), "n_queries": len(queries), "n_jobs": len(jobs), "workers": workers,
                    "queries": {k: sum(q.kind == k for q in queries) for k in sorted({q.kind for q in queries})},
                    "median_train_seconds": float(np.median([r["train_seconds"] for r in rows])),
                    "wall_seconds_this_call": round(time.perf_counter() - started, 1)})
    write_json(out_dir / SUMMARY_FILE, summary)
    finish_stage(out_dir, config, inputs, content_hash=hash_tensors(tensors),
                 extra={"n_jobs": len(jobs), "base_model": str(gt.base_model_dir)})
    gt.summary = summary
    return gt


def _assemble(out_dir: Path, config: GroundTruthConfig, queries: list[GroundTruthQuery]) -> GroundTruth:
    t = load_safetensors(out_dir / TRUTH_FILE)
    meta = read_json(out_dir / "truth.json")
    if meta["query_ids"] != [q.item.id for q in queries]:
        raise SongtraceError(f"{out_dir}: the truth and the queries disagree; rerun `songtrace groundtruth --overwrite`")
    summary = read_json(out_dir / SUMMARY_FILE) if (out_dir / SUMMARY_FILE).exists() else {}
    return GroundTruth(out_dir=out_dir, config=config, train_ids=meta["train_ids"], train_artists=meta["train_artists"], queries=queries,
                       masks=t["masks"].numpy().astype(bool), subset_loss=t["subset_loss"].numpy(), full_seeds=meta["full_seeds"],
                       full_loss=t["full_loss"].numpy(), loo_items=meta["loo_items"], loo_seeds=list(config.loo_seeds),
                       loo_loss=t["loo_loss"].numpy(), loao_artists=meta["loao_artists"], loao_seeds=list(config.loao_seeds),
                       loao_loss=t["loao_loss"].numpy(), summary=summary)


def load_ground_truth(out_dir: str | Path) -> GroundTruth:
    """Read a finished ground-truth stage back."""
    out_dir = Path(out_dir)
    config = load_stage_config(out_dir, GroundTruthConfig)
    return _assemble(out_dir, config, load_queries(out_dir / QUERIES_DIR))
