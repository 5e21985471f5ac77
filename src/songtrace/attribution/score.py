"""Influence scores τ(ẑ, z_i) = L(z_i, θ') − L(z_i, θ0) for every training item (seed 002, Eq. 2).

Common random numbers: both losses use the same timesteps and noise for item i (seeded by its id),
and the same batching and code path, so τ is the effect of the weight change and not sampling
noise: scoring θ0 against itself gives exactly zero. L(z_i, θ0) does not depend on the query, so
`base_losses` computes it once per (model, data, T, seed, mask, batching) and caches it on disk.
`score_many` scores several queries in one pass over the data (each batch's noise plan is built
once and reused for every query); only the deltas θ' − θ0 are held, and θ0 + δ is formed per batch
for the target parameters only, never a second copy of the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from songtrace.artifacts import StageConfig, check_positive, hash_json, load_safetensors, save_safetensors
from songtrace.attribution.unlearn import apply_delta
from songtrace.data.batch import Batch
from songtrace.data.latents import LatentSet
from songtrace.diffusion.loss import NoisePlan, make_plan
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, as_task, check_latents_fit, eval_mode
from songtrace.progress import progress_bar

Params = dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class ScoreConfig(StageConfig):
    """How the losses L(z_i, θ) are estimated: T timesteps per item, seeded per item id.

    batch_size and timestep_chunk fix the shapes of every forward pass; they are part of the
    base-loss cache key because float results can depend on them.
    """

    n_timesteps: int = 32
    seed: int = 0
    batch_size: int = 16
    timestep_chunk: int = 32
    split: str = "train"

    def __post_init__(self) -> None:
        check_positive("n_timesteps", self.n_timesteps)
        check_positive("batch_size", self.batch_size)
        check_positive("timestep_chunk", self.timestep_chunk)


# --------------------------------------------------------------------------- losses


def item_losses(
    model: nn.Module | ModelTask,
    params: Mapping[str, torch.Tensor] | None,
    batch: Batch,
    plan: NoisePlan,
    mask: bool,
    timestep_chunk: int,
) -> torch.Tensor:
    """L(z_i, θ) = (1/T) Σ_t L_t(z_i, θ) per item `[B]` (float64), evaluated `timestep_chunk` timesteps at a time."""
    task = as_task(model)
    n_t = plan.t.shape[1]
    parts = [
        task.loss(params, batch, plan.select_timesteps(slice(s, min(n_t, s + timestep_chunk))), mask=mask)
        for s in range(0, n_t, timestep_chunk)
    ]
    return torch.cat(parts, dim=1).to(torch.float64).mean(dim=1)


def _row_batches(n: int, batch_size: int) -> list[slice]:
    return [slice(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]


def loss_pass(
    model: nn.Module | ModelTask,
    deltas: Sequence[Mapping[str, torch.Tensor]],
    data: LatentSet,
    config: ScoreConfig,
    mask_loss: bool,
    with_base: bool,
    desc: str = "scoring",
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """One pass over `data`: L(z_i, θ0) (if `with_base`) and L(z_i, θ0 + δ_k) for every delta; ([N] | None, [K, N]).

    Each batch's plan is drawn once and shared by θ0 and every θ0 + δ_k (common random numbers).
    """
    task = as_task(model)
    names = sorted({k for d in deltas for k in d})
    theta0 = {n: p.detach() for n, p in task.module.named_parameters() if n in names}
    missing = set(names) - set(theta0)
    if missing:
        raise SongtraceError(f"the weight delta names parameters the model lacks: {sorted(missing)[:3]}")
    shape = task.latent_shape
    n = len(data)
    base = torch.empty(n, dtype=torch.float64) if with_base else None
    losses = torch.empty(len(deltas), n, dtype=torch.float64)
    bar = progress_bar(n, desc=desc, unit="item")
    try:
        with torch.no_grad(), eval_mode(task.module):
            for rows in _row_batches(n, config.batch_size):
                batch = data.batch(rows)
                plan = make_plan(batch.ids, config.n_timesteps, shape, config.seed)
                if base is not None:
                    base[rows] = item_losses(task, None, batch, plan, mask_loss, config.timestep_chunk)
                for k, delta in enumerate(deltas):
                    losses[k, rows] = item_losses(task, apply_delta(theta0, delta), batch, plan, mask_loss, config.timestep_chunk)
                bar.update(rows.stop - rows.start)
    finally:
        bar.close()
    return base, losses


# --------------------------------------------------------------------------- base losses (cached)


def base_cache_key(model_hash: str, latents_hash: str, config: ScoreConfig, mask_loss: bool) -> str:
    """The cache key of L(z_i, θ0): everything the numbers depend on."""
    return hash_json({"model": model_hash, "latents": latents_hash, "score": config.to_dict(), "mask_loss": mask_loss})[:32]


def base_losses(
    model: nn.Module | ModelTask,
    latents: LatentSet,
    config: ScoreConfig,
    mask_loss: bool,
    cache_dir: str | Path | None = None,
    verify: bool = True,
    model_hash: str | None = None,
) -> torch.Tensor:
    """L(z_i, θ0) for every item of `config.split` `[N]` (float64), from the cache when present.

    With `cache_dir`, the losses are stored as `<cache_dir>/<key>.safetensors`. With `verify`, the
    first batch is recomputed and compared bit for bit with the cache (a different BLAS or thread
    count could change the floats); on a mismatch everything is recomputed and the cache rewritten.
    """
    task = as_task(model)
    data = latents.subset(config.split)
    check_latents_fit(task, data)
    path = None
    if cache_dir is not None:
        key = base_cache_key(model_hash or task.identity(), latents.content_hash(), config, mask_loss)
        path = Path(cache_dir) / f"{key}.safetensors"
        if path.exists():
            cached = load_safetensors(path)["loss"]
            if cached.shape == (len(data),) and (not verify or _first_batch_matches(task, data, config, mask_loss, cached)):
                return cached
    base, _ = loss_pass(task, [], data, config, mask_loss, with_base=True, desc="base losses")
    assert base is not None
    if path is not None:
        save_safetensors(path, {"loss": base}, metadata={"n_items": str(len(data)), "split": config.split})
    return base


def _first_batch_matches(task: ModelTask, data: LatentSet, config: ScoreConfig, mask_loss: bool, cached: torch.Tensor) -> bool:
    """Recompute the first batch of base losses and compare it exactly with the cache."""
    rows = _row_batches(len(data), config.batch_size)[0]
    batch = data.batch(rows)
    plan = make_plan(batch.ids, config.n_timesteps, task.latent_shape, config.seed)
    with torch.no_grad(), eval_mode(task.module):
        fresh = item_losses(task, None, batch, plan, mask_loss, config.timestep_chunk)
    return bool(torch.equal(fresh, cached[rows]))


# --------------------------------------------------------------------------- influence


def score_many(
    model: nn.Module | ModelTask,
    deltas: Sequence[Mapping[str, torch.Tensor]],
    latents: LatentSet,
    config: ScoreConfig,
    mask_loss: bool,
    base: torch.Tensor | None = None,
) -> torch.Tensor:
    """τ(ẑ_k, z_i) = L(z_i, θ0 + δ_k) − L(z_i, θ0) for K queries in one data pass: `[K, N]` (float64).

    Pass `base` (from `base_losses`, same config and mask) to skip recomputing L(z_i, θ0).
    """
    data = latents.subset(config.split)
    check_latents_fit(model, data)
    if base is not None and base.shape != (len(data),):
        raise SongtraceError(f"base losses have shape {tuple(base.shape)}, expected ({len(data)},) for split {config.split!r}")
    fresh, losses = loss_pass(model, deltas, data, config, mask_loss, with_base=base is None)
    reference = base if base is not None else fresh
    assert reference is not None
    return losses - reference[None, :]


def influence(
    model: nn.Module | ModelTask,
    delta: Mapping[str, torch.Tensor],
    latents: LatentSet,
    config: ScoreConfig,
    mask_loss: bool,
    base: torch.Tensor | None = None,
) -> torch.Tensor:
    """τ(ẑ, z_i) for one query's delta: `[N]` (float64). Larger = z_i lost more when ẑ was unlearned."""
    return score_many(model, [delta], latents, config, mask_loss, base)[0]


# --------------------------------------------------------------------------- ranking and credit


def ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank of each item (1 = largest score; ties keep data order)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    out = torch.empty_like(order)
    out[order] = torch.arange(1, len(scores) + 1)
    return out


def credit_shares(scores: torch.Tensor, artists: Sequence[str]) -> list[dict[str, float | str | int]]:
    """Per-artist credit: the artist's sum of positive scores over the total positive score (shares sum to 1).

    Items with τ ≤ 0 earn nothing. When no score is positive every share is 0. Sorted by share.
    """
    if len(scores) != len(artists):
        raise SongtraceError(f"{len(scores)} scores but {len(artists)} artists")
    positive = scores.clamp_min(0).to(torch.float64)
    total = float(positive.sum())
    per: dict[str, dict[str, float | str | int]] = {}
    for artist, s, p in zip(artists, scores.tolist(), positive.tolist(), strict=True):
        row = per.setdefault(artist, {"artist": artist, "positive_score": 0.0, "n_items": 0, "n_positive": 0, "best_score": float("-inf")})
        row["positive_score"] = float(row["positive_score"]) + p
        row["n_items"] = int(row["n_items"]) + 1
        row["n_positive"] = int(row["n_positive"]) + int(s > 0)
        row["best_score"] = max(float(row["best_score"]), s)
    for row in per.values():
        row["share"] = float(row["positive_score"]) / total if total > 0 else 0.0
    return sorted(per.values(), key=lambda r: (-float(r["share"]), -float(r["best_score"]), str(r["artist"])))
