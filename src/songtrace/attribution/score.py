"""Influence scores τ(ẑ, z_i) = L(z_i, θ') − L(z_i, θ0) for every training item (seed 002, Eq. 2).

Common random numbers: both losses use the same timesteps and noise for item i (seeded by its id),
and the same batching and code path, so τ is the effect of the weight change and not sampling
noise: scoring θ0 against itself gives exactly zero. L(z_i, θ0) does not depend on the query, so
`base_losses` computes it once per (model, data, T, seed, mask, batching) and caches it on disk.
`score_many` scores several queries in one pass over the data (each batch's noise plan is built
once and reused for every query); only the deltas θ' − θ0 are held, and θ0 + δ is formed per batch
for the target parameters only, never a second copy of the model.

On a GPU (`device="cuda"`) each batch is copied to the device once, its plan is drawn there, and the
losses stay there until the pass ends; `precision="bf16"` runs the forward passes under autocast.
With `job` (a torchrun job) the rows are sharded (`shard.map_shards`): each rank scores a block
of shards (written to a `ShardStore` when given, so a rerun skips finished shards) and every rank
gets the merged `[K, N]`, bit for bit the single-process result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from songtrace.artifacts import (
    StageConfig,
    check_positive,
    hash_json,
    load_safetensors,
    safetensors_metadata,
    save_safetensors,
    sha256_bytes,
)
from songtrace.attribution.shard import SINGLE, Job, ShardStore, aligned, default_shard_rows, map_shards
from songtrace.attribution.unlearn import apply_delta
from songtrace.data.batch import Batch
from songtrace.data.latents import LatentSet
from songtrace.diffusion.loss import NoisePlan, make_plan
from songtrace.errors import SongtraceError
from songtrace.model.task import (
    ModelTask,
    as_task,
    autocast,
    check_device,
    check_latents_fit,
    check_precision,
    eval_mode,
    on_device,
    runtime_device,
)
from songtrace.progress import progress_bar

Params = dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class ScoreConfig(StageConfig):
    """How the losses L(z_i, θ) are estimated: T timesteps per item, seeded per item id.

    batch_size and timestep_chunk fix the shapes of every forward pass (batch_size × timestep_chunk
    rows per forward: the memory bound for long tracks); they, the device ("cpu", "cuda", "meta")
    and the precision ("fp32", "bf16" autocast) are part of the base-loss cache key because the
    floats (and, across devices, the noise draws) depend on them.
    """

    n_timesteps: int = 32
    seed: int = 0
    batch_size: int = 16
    timestep_chunk: int = 32
    split: str = "train"
    device: str = "cpu"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_positive("n_timesteps", self.n_timesteps)
        check_positive("batch_size", self.batch_size)
        check_positive("timestep_chunk", self.timestep_chunk)
        check_device(self.device)
        check_precision(self.precision)


# --------------------------------------------------------------------------- losses


def item_losses(
    model: nn.Module | ModelTask,
    params: Mapping[str, torch.Tensor] | None,
    batch: Batch,
    plan: NoisePlan,
    mask: bool,
    timestep_chunk: int,
    precision: str = "fp32",
) -> torch.Tensor:
    """L(z_i, θ) = (1/T) Σ_t L_t(z_i, θ) per item `[B]` (float64), evaluated `timestep_chunk` timesteps at a time."""
    task = as_task(model)
    n_t = plan.t.shape[1]
    with autocast(plan.t.device, precision):
        parts = [
            task.loss(params, batch, plan.select_timesteps(slice(s, min(n_t, s + timestep_chunk))), mask=mask).float()
            for s in range(0, n_t, timestep_chunk)
        ]
    return torch.cat(parts, dim=1).to(torch.float64).mean(dim=1)


def _row_batches(n: int, batch_size: int) -> list[slice]:
    return [slice(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]


def rows_of(data: LatentSet, rows: range) -> LatentSet:
    """The items at a range of rows, as a LatentSet (a shard of the data)."""
    index = slice(rows.start, rows.stop)
    return LatentSet(ids=data.ids[index], artists=data.artists[index], splits=data.splits[index],
                     **{k: v[index] for k, v in data.tensors().items()})


def loss_pass(
    model: nn.Module | ModelTask,
    deltas: Sequence[Mapping[str, torch.Tensor]],
    data: LatentSet,
    config: ScoreConfig,
    mask_loss: bool,
    with_base: bool,
    desc: str = "scoring",
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """One pass over `data`: L(z_i, θ0) (if `with_base`) and L(z_i, θ0 + δ_k) for every delta; ([N] | None, [K, N]) on the CPU.

    Each batch's plan is drawn once and shared by θ0 and every θ0 + δ_k (common random numbers).
    Runs on `config.device`: the deltas and each batch are copied there once, the losses come back at the end.
    """
    task = as_task(model)
    names = sorted({k for d in deltas for k in d})
    with on_device(task.module, runtime_device(config.device)), torch.no_grad(), eval_mode(task.module):
        device = task.device
        theta0 = {n: p.detach() for n, p in task.module.named_parameters() if n in names}
        missing = set(names) - set(theta0)
        if missing:
            raise SongtraceError(f"the weight delta names parameters the model lacks: {sorted(missing)[:3]}")
        on_dev = [{k: v.to(device) for k, v in d.items()} for d in deltas]
        shape = task.latent_shape
        n = len(data)
        base = torch.empty(n, dtype=torch.float64, device=device) if with_base else None
        losses = torch.empty(len(deltas), n, dtype=torch.float64, device=device)
        bar = progress_bar(n, desc=desc, unit="item")
        try:
            for rows in _row_batches(n, config.batch_size):
                batch = data.batch(rows).to(device)
                plan = make_plan(batch.ids, config.n_timesteps, shape, config.seed, device=device)
                if base is not None:
                    base[rows] = item_losses(task, None, batch, plan, mask_loss, config.timestep_chunk, config.precision)
                for k, delta in enumerate(on_dev):
                    params = apply_delta(theta0, delta)
                    losses[k, rows] = item_losses(task, params, batch, plan, mask_loss, config.timestep_chunk, config.precision)
                bar.update(rows.stop - rows.start)
        finally:
            bar.close()
    return (None if base is None else base.cpu()), losses.cpu()


def sharded_loss_pass(
    model: nn.Module | ModelTask,
    deltas: Sequence[Mapping[str, torch.Tensor]],
    data: LatentSet,
    config: ScoreConfig,
    mask_loss: bool,
    with_base: bool,
    job: Job = SINGLE,
    store: ShardStore | None = None,
    shard_rows: int | None = None,
    desc: str = "scoring",
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """`loss_pass` with the rows sharded over the ranks (and kept in `store` when given); the same result on every rank.

    Shards are whole batches of `config.batch_size`, so each batch is the one a single process sees:
    the merged losses equal `loss_pass`'s bit for bit.
    """
    if job.world == 1 and store is None:
        return loss_pass(model, deltas, data, config, mask_loss, with_base, desc=desc)
    n = len(data)
    size = aligned(shard_rows or default_shard_rows(n, config.batch_size, job.world), config.batch_size)
    label = desc if job.world == 1 else f"{desc} rank {job.rank}"

    def compute(rows: range) -> dict[str, torch.Tensor]:
        base, losses = loss_pass(model, deltas, rows_of(data, rows), config, mask_loss, with_base, desc=label)
        return {"losses": losses, **({"base": base} if base is not None else {})}

    out = map_shards(n, size, compute, job, store, desc=f"{desc} shards")
    return out.get("base"), out["losses"]


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
    job: Job = SINGLE,
) -> torch.Tensor:
    """L(z_i, θ0) for every item of `config.split` `[N]` (float64), from the cache when present.

    With `cache_dir`, the losses are stored as `<cache_dir>/<key>.safetensors` with the sha256 of
    their bytes. A cache that is unreadable, of the wrong shape, not finite or whose bytes do not hash
    to the recorded sha256 is recomputed. With `verify`, a sample of batches spread over the whole set
    (`verify_batches`: first, last and evenly between) is recomputed and compared bit for bit with the
    cache (a different BLAS or thread count could change the floats); on a mismatch everything is
    recomputed and the cache rewritten.
    Under torchrun (`job`) the pass is sharded, its finished shards kept in `<key>.shards/` until
    the merged cache is written, so a rerun after a dead rank recomputes only the missing shards.
    """
    task = as_task(model)
    data = latents.subset(config.split)
    check_latents_fit(task, data)
    path = store = None
    if cache_dir is not None:
        key = base_cache_key(model_hash or task.identity(), latents.content_hash(), config, mask_loss)
        path = Path(cache_dir) / f"{key}.safetensors"
        store = ShardStore(Path(cache_dir) / f"{key}.shards")
        if job.main_first(lambda: _cache_valid(path, task, data, config, mask_loss, verify)):
            return load_safetensors(path)["loss"]
    base, _ = sharded_loss_pass(task, [], data, config, mask_loss, with_base=True, job=job, store=store, desc="base losses")
    assert base is not None
    if path is not None and store is not None and job.main:
        save_safetensors(path, {"loss": base}, metadata={"n_items": str(len(data)), "split": config.split, "sha256": _loss_sha(base)})
        store.clear()
    job.barrier()
    return base


VERIFY_BATCHES = 3  # batches of a cached base-loss set recomputed to check it (first, last, and evenly between)


def _loss_sha(loss: torch.Tensor) -> str:
    return sha256_bytes(loss.detach().cpu().contiguous().numpy().tobytes())


def _cache_valid(path: Path, task: ModelTask, data: LatentSet, config: ScoreConfig, mask_loss: bool, verify: bool) -> bool:
    """Whether the cached base losses at `path` are intact (readable, right shape, finite, their recorded hash) and reproduce a sample."""
    if not path.exists():
        return False
    try:
        cached = load_safetensors(path).get("loss")
        recorded = safetensors_metadata(path).get("sha256")
    except SongtraceError:
        return False
    if cached is None or cached.shape != (len(data),) or cached.dtype != torch.float64 or not bool(torch.isfinite(cached).all()):
        return False
    if recorded != _loss_sha(cached):
        return False
    return not verify or _sample_matches(task, data, config, mask_loss, cached)


def verify_batches(n_batches: int, k: int = VERIFY_BATCHES) -> list[int]:
    """Indices of `k` batches spread over `n_batches` (first and last included), the sample a cache check recomputes."""
    if n_batches <= k:
        return list(range(n_batches))
    if k <= 1:
        return [0][:k]
    return sorted({round(i * (n_batches - 1) / (k - 1)) for i in range(k)})


def _sample_matches(task: ModelTask, data: LatentSet, config: ScoreConfig, mask_loss: bool, cached: torch.Tensor) -> bool:
    """Recompute a sample of batches of base losses spread over the set and compare them exactly with the cache."""
    batches = _row_batches(len(data), config.batch_size)
    for i in verify_batches(len(batches)):
        rows = batches[i]
        fresh, _ = loss_pass(task, [], rows_of(data, range(rows.start, rows.stop)), config, mask_loss, with_base=True, desc="verify cache")
        assert fresh is not None
        if not torch.equal(fresh, cached[rows]):
            return False
    return True


# --------------------------------------------------------------------------- influence


def score_many(
    model: nn.Module | ModelTask,
    deltas: Sequence[Mapping[str, torch.Tensor]],
    latents: LatentSet,
    config: ScoreConfig,
    mask_loss: bool,
    base: torch.Tensor | None = None,
    job: Job = SINGLE,
    store: ShardStore | None = None,
) -> torch.Tensor:
    """τ(ẑ_k, z_i) = L(z_i, θ0 + δ_k) − L(z_i, θ0) for K queries in one data pass: `[K, N]` (float64).

    Pass `base` (from `base_losses`, same config and mask) to skip recomputing L(z_i, θ0). Under
    torchrun pass `job` (and a `store` for shard files a rerun can reuse); every rank gets all scores.
    """
    data = latents.subset(config.split)
    check_latents_fit(model, data)
    if base is not None and base.shape != (len(data),):
        raise SongtraceError(f"base losses have shape {tuple(base.shape)}, expected ({len(data)},) for split {config.split!r}")
    fresh, losses = sharded_loss_pass(model, deltas, data, config, mask_loss, with_base=base is None, job=job, store=store)
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
