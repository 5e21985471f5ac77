"""Running the retraining jobs: train a model with the recipe, measure every query's loss under it, cache both.

A job's model is a normal model directory (`<out>/models/<job>/`, the training stage resumes and
skips as always) and its measured losses go to `<out>/losses/<job>.safetensors` (`[Q, T]`,
tagged with the queries' hash and the model's identity). A job whose losses are there for the same
queries is done, so an interrupted stage resumes at the next job. `run_jobs` runs them in worker
processes (spawned, one torch thread each), since the retrains are independent.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from songtrace.artifacts import load_safetensors, save_safetensors
from songtrace.groundtruth.config import GroundTruthConfig
from songtrace.groundtruth.measure import measure_plan, query_losses
from songtrace.groundtruth.plan import Job
from songtrace.groundtruth.queries import load_queries, queries_hash, query_batch
from songtrace.progress import progress_bar

MODELS_DIR = "models"
LOSSES_DIR = "losses"
QUERIES_DIR = "queries"


def model_dir(out_dir: Path, job: Job) -> Path:
    """Where a job's model lives."""
    return out_dir / MODELS_DIR / job.name


def losses_path(out_dir: Path, job: Job) -> Path:
    """Where a job's measured query losses live."""
    return out_dir / LOSSES_DIR / f"{job.name}.safetensors"


def job_done(out_dir: Path, job: Job, q_hash: str) -> bool:
    """True when the job's losses exist for these queries."""
    from safetensors import safe_open

    path = losses_path(out_dir, job)
    if not path.exists():
        return False
    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("queries") == q_hash


def train_job(job: Job, config: GroundTruthConfig, latents_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Train (or resume, or skip) the job's model: the recipe with the job's seed, minus its left-out items; returns its metrics."""
    from songtrace.model.train import train_model

    train_cfg = dataclasses.replace(config.train, seed=job.seed)
    return train_model(train_cfg, config.dit, latents_dir, model_dir(out_dir, job), exclude_ids=job.exclude_ids)


def run_job(job: Job, config: GroundTruthConfig, latents_dir: Path, out_dir: Path) -> str:
    """Train the job's model and measure every query's per-timestep loss under it (skipped when done); returns the job name."""
    from songtrace.model.registry import load_task

    queries = load_queries(out_dir / QUERIES_DIR)
    q_hash = queries_hash(queries)
    if job_done(out_dir, job, q_hash):
        return job.name
    train_job(job, config, latents_dir, out_dir)
    task = load_task(model_dir(out_dir, job))
    batch = query_batch(queries)
    plan = measure_plan(batch.ids, config.measure_timesteps, task.latent_shape, config.measure_seed)
    losses = query_losses(task, batch, plan, config.measure_mask, config.measure_chunk)
    save_safetensors(losses_path(out_dir, job), {"loss": losses}, metadata={"queries": q_hash, "model": task.identity()})
    return job.name


def load_losses(out_dir: Path, job: Job) -> Any:
    """A finished job's per-timestep query losses `[Q, T]` (float64)."""
    return load_safetensors(losses_path(out_dir, job))["loss"]


def _init_worker() -> None:
    """Each worker process runs torch on one thread (the retrains run side by side)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(1)


def _work(job: Job, config_dict: dict[str, Any], latents_dir: str, out_dir: str) -> str:
    return run_job(job, GroundTruthConfig.from_dict(config_dict), Path(latents_dir), Path(out_dir))


def run_jobs(jobs: Sequence[Job], config: GroundTruthConfig, latents_dir: Path, out_dir: Path, workers: int = 1,
             on_done: Callable[[str], None] | None = None) -> None:
    """Run every job not done yet, in `workers` spawned processes (1: in this process)."""
    q_hash = queries_hash(load_queries(out_dir / QUERIES_DIR))
    todo = [j for j in jobs if not job_done(out_dir, j, q_hash)]
    bar = progress_bar(len(jobs), desc="ground truth: retrain + measure", unit="model", initial=len(jobs) - len(todo))
    try:
        if workers <= 1:
            for job in todo:
                name = run_job(job, config, latents_dir, out_dir)
                bar.update(1)
                if on_done:
                    on_done(name)
            return
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
            futures = [pool.submit(_work, job, config.to_dict(), str(latents_dir), str(out_dir)) for job in todo]
            for future in concurrent.futures.as_completed(futures):
                name = future.result()
                bar.update(1)
                if on_done:
                    on_done(name)
    finally:
        bar.close()
