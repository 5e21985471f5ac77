"""Fast mode: attribution by a Fisher-preconditioned gradient inner product against a stored index.

To first order in the unlearning step (Eq. 6 with one step),

    τ(ẑ, z_i) = L(z_i, θ0 + δ) − L(z_i, θ0) ≈ ∇L(z_i)ᵀ δ,   δ = η/N · (F + λ)⁻¹ ∇L(ẑ),

so τ_i ≈ η/N · φ_iᵀ φ̂ with φ = P (F + λ)^(-1/2) ∇L: the gradients scaled by the inverse square
root of the damped Fisher, then projected to k dimensions by a seeded random map P (TRAK's
Johnson-Lindenstrauss trick; `projection.Projector`). The preconditioning is applied to both
sides identically, so the index's scaling and the query's always match.

- item gradients ∇L(z_i) = ∇ (1/T) Σ_t L_t(z_i, θ0) use the scoring plan of exact mode (the
  `ScoreConfig`'s T timesteps and noise seeded per item id) and the attribution mask M_L;
- the query gradient is exactly the one unlearning takes (the `UnlearnConfig`'s plan and M_U).

`songtrace index build` writes the index (`build_index`): one float32 `[rows, k]` memory-mapped
`.npy` shard per item range, each resumable (progress saved every batch) and buildable in its own
process (`build_index_shard`: the unit a torchrun launcher hands to each rank). `attribute_fast`
answers a query with one gradient, one projection and one matrix-vector product per shard.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from songtrace.artifacts import (
    StageConfig,
    abandon_stage,
    artifact_hash,
    atomic_path,
    begin_stage,
    check_choice,
    check_positive,
    finish_stage,
    hash_json,
    load_stage_config,
    read_json,
    sha256_file,
    unlock_stage,
    write_json,
)
from songtrace.attribution.fisher import Fisher, check_fisher, check_fits, check_inputs, per_sample_grads
from songtrace.attribution.groups import split_params, target_params
from songtrace.attribution.projection import PROJECTIONS, Projector
from songtrace.attribution.score import ScoreConfig
from songtrace.attribution.shard import SINGLE, Job
from songtrace.attribution.unlearn import DAMPING_MODES, UnlearnConfig, damping_value, query_gradient, query_plan
from songtrace.data.batch import Batch
from songtrace.data.latents import LatentSet
from songtrace.diffusion.loss import make_plan
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, as_task, check_latents_fit, eval_mode
from songtrace.progress import progress_bar

SHARDS_DIR = "shards"


@dataclasses.dataclass(frozen=True)
class IndexConfig(StageConfig):
    """The fast index: k, the projection, the target layers and damping (they must match the unlearning config
    queries use), the items' gradient plan (`score`) and mask (M_L), items per shard and gradient chunking."""

    dim: int = 1024
    projection: str = "srdct"
    projection_seed: int = 0
    group: str = "all"
    damping: float = 1e-3
    damping_mode: str = "relative"
    mask_loss: bool = False
    score: ScoreConfig = dataclasses.field(default_factory=lambda: ScoreConfig(n_timesteps=32, batch_size=8))
    shard_items: int = 4096
    sample_chunk: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("dim", "shard_items", "sample_chunk"):
            check_positive(name, getattr(self, name))
        check_positive("damping", self.damping, allow_zero=True)
        check_choice("projection", self.projection, PROJECTIONS)
        check_choice("damping mode", self.damping_mode, DAMPING_MODES)

    def check_matches(self, unlearn: UnlearnConfig, source: str = "the index") -> None:
        """Refuse a query config whose target layers, damping or attribution mask differ from the index's."""
        pairs = (("group", self.group, unlearn.group), ("damping", self.damping, unlearn.damping),
                 ("damping_mode", self.damping_mode, unlearn.damping_mode), ("mask_loss", self.mask_loss, unlearn.mask_loss))
        wrong = [f"{k}: index {a!r}, query {b!r}" for k, a, b in pairs if a != b]
        if wrong:
            raise SongtraceError(f"{source} was built for other unlearning settings ({'; '.join(wrong)}); rebuild it with "
                                 "`songtrace index build` for these settings or attribute with matching options")


# --------------------------------------------------------------------------- pure pieces


def fisher_scale(fisher_diag: Mapping[str, torch.Tensor], names: Sequence[str], lam: float) -> torch.Tensor:
    """(F + λ)^(-1/2) over the target parameters, flattened in `names` order `[P]` (float64)."""
    return torch.cat([(fisher_diag[n].double().reshape(-1) + lam).rsqrt() for n in names])


def flatten(grads: Mapping[str, torch.Tensor], names: Sequence[str], rows: int) -> torch.Tensor:
    """Per-row gradients name -> [rows, *shape] as one `[rows, P]` float64 matrix in `names` order."""
    return torch.cat([grads[n].reshape(rows, -1).double() for n in names], dim=1)


def item_gradients(task: ModelTask, target: Mapping[str, torch.Tensor], frozen: Mapping[str, torch.Tensor], batch: Batch,
                   config: IndexConfig) -> torch.Tensor:
    """∇θ (1/T) Σ_t L_t(z_i, θ0) for every item of the batch `[B, P]`, on the scoring plan, `sample_chunk` samples at a time."""
    names = list(target)
    plan = make_plan(batch.ids, config.score.n_timesteps, task.latent_shape, config.score.seed)
    n_t = config.score.n_timesteps
    out = torch.zeros(len(batch), sum(int(v.numel()) for v in target.values()), dtype=torch.float64)
    per_chunk = max(1, config.sample_chunk // n_t)
    for s in range(0, len(batch), per_chunk):
        rows = list(range(s, min(len(batch), s + per_chunk)))
        sub = batch.select(rows)
        g = per_sample_grads(task, dict(target), dict(frozen), sub, plan.select_items(rows), config.mask_loss)
        out[rows] = flatten(g, names, len(rows) * n_t).reshape(len(rows), n_t, -1).mean(1)
    return out


def index_features(grads: torch.Tensor, scale: torch.Tensor, projector: Projector) -> torch.Tensor:
    """φ = P (F + λ)^(-1/2) g for gradients `[B, P]`: `[B, k]` (float64)."""
    return projector.project(grads * scale[None, :])


def fast_scores(index_rows: np.ndarray | torch.Tensor, query_feature: torch.Tensor, lr: float, n_train: int) -> torch.Tensor:
    """τ ≈ η/N · Φ φ̂ for index rows `[N, k]` and one query feature `[k]`: `[N]` (float64)."""
    phi = torch.from_numpy(np.array(index_rows, dtype=np.float64))
    return (phi @ query_feature.double()) * (lr / n_train)


# --------------------------------------------------------------------------- the index in memory


@dataclasses.dataclass
class IndexContext:
    """What building and querying an index needs: the task, target/frozen weights, (F + λ)^(-1/2), the projector, N."""

    task: ModelTask
    names: list[str]
    target: dict[str, torch.Tensor]
    frozen: dict[str, torch.Tensor]
    scale: torch.Tensor
    projector: Projector
    n_train: int

    @classmethod
    def make(cls, model: nn.Module | ModelTask, fisher: Fisher, config: IndexConfig) -> IndexContext:
        """Split the weights into the target group, check the Fisher covers it and form its preconditioner."""
        task = as_task(model)
        names = target_params(task, config.group)
        target, frozen = split_params(task, names)
        check_fits(fisher, target)
        diag = {n: fisher.diag[n] for n in names}
        lam = damping_value(diag, config.damping, config.damping_mode)
        check_fisher(diag, damping=lam)
        n_params = sum(int(v.numel()) for v in target.values())
        projector = Projector(config.projection, n_params, config.dim, config.projection_seed)
        return cls(task, names, target, frozen, fisher_scale(diag, names, lam), projector, fisher.n_items)

    def item_features(self, batch: Batch, config: IndexConfig) -> torch.Tensor:
        """φ of a batch of training items `[B, k]`."""
        with eval_mode(self.task.module):
            grads = item_gradients(self.task, self.target, self.frozen, batch, config)
        return index_features(grads, self.scale, self.projector)

    def query_feature(self, query: Batch, unlearn: UnlearnConfig) -> torch.Tensor:
        """φ̂ of one query `[k]`: the gradient unlearning takes (its plan and M_U), preconditioned and projected."""
        if unlearn.steps != 1:
            raise SongtraceError(f"fast mode is the first-order form of one unlearning step; got steps={unlearn.steps} (use exact mode)")
        with eval_mode(self.task.module):
            g = query_gradient(self.task, self.target, self.frozen, query, query_plan(query, unlearn), unlearn.mask_unlearn,
                               unlearn.timestep_chunk)
        return index_features(flatten(g, self.names, 1) / max(1, len(query)), self.scale, self.projector)[0]


def item_feature_matrix(ctx: IndexContext, data: LatentSet, config: IndexConfig, rows: range | None = None) -> torch.Tensor:
    """φ for items `rows` of `data` (all by default) `[R, k]`, in batches of `config.score.batch_size` (in memory)."""
    rows = rows if rows is not None else range(len(data))
    parts = [ctx.item_features(data.batch(list(rows[s : s + config.score.batch_size])), config)
             for s in range(0, len(rows), config.score.batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, ctx.projector.out_dim, dtype=torch.float64)


# --------------------------------------------------------------------------- on disk: shards


def shard_ranges(n_items: int, shard_items: int) -> list[tuple[int, int]]:
    """The item ranges [start, stop) of the shards."""
    return [(s, min(n_items, s + shard_items)) for s in range(0, n_items, shard_items)]


def shard_path(out_dir: Path, start: int, stop: int) -> Path:
    """The `.npy` file of one shard."""
    return out_dir / SHARDS_DIR / f"{start:09d}-{stop:09d}.npy"


def _progress_path(shard: Path) -> Path:
    return shard.with_suffix(".json")


def shard_done(shard: Path, rows: int) -> bool:
    """True when a shard holds all its rows."""
    p = _progress_path(shard)
    return shard.exists() and p.exists() and int(read_json(p).get("done", -1)) == rows


def build_index_shard(ctx: IndexContext, data: LatentSet, config: IndexConfig, start: int, stop: int, out_dir: Path) -> Path:
    """Write (or finish) the rows [start, stop) of the index into their memory-mapped shard; resumable batch by batch.

    Pure orchestration around `IndexContext.item_features`: any launcher (a loop, a process pool, one
    torchrun rank per shard) can call it for disjoint ranges.
    """
    shard = shard_path(out_dir, start, stop)
    rows, k = stop - start, ctx.projector.out_dim
    progress = _progress_path(shard)
    done = int(read_json(progress)["done"]) if shard.exists() and progress.exists() else 0
    if done == rows:
        return shard
    if done == 0:
        with atomic_path(shard) as tmp:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, k)).flush()
    mm = np.lib.format.open_memmap(shard, mode="r+")
    if mm.shape != (rows, k):
        raise SongtraceError(f"{shard}: holds {mm.shape}, expected {(rows, k)}; delete it to rebuild")
    bar = progress_bar(rows, desc=f"index {start}-{stop}", unit="item", initial=done)
    try:
        while done < rows:
            take = list(range(start + done, min(stop, start + done + config.score.batch_size)))
            mm[done : done + len(take)] = ctx.item_features(data.batch(take), config).numpy().astype(np.float32)
            mm.flush()
            done += len(take)
            write_json(progress, {"done": done, "rows": rows})
            bar.update(len(take))
    finally:
        bar.close()
        del mm
    return shard


@dataclasses.dataclass
class AttributionIndex:
    """A finished index: its config, the items it covers (in data order) and its shards, memory-mapped."""

    out_dir: Path
    config: IndexConfig
    ids: list[str]
    n_train: int
    record: dict[str, Any]

    def shards(self) -> list[np.ndarray]:
        """The shards as read-only memory maps, in item order."""
        return [np.load(shard_path(self.out_dir, a, b), mmap_mode="r") for a, b in shard_ranges(len(self.ids), self.config.shard_items)]

    def scores(self, query_feature: torch.Tensor, lr: float) -> torch.Tensor:
        """τ ≈ η/N · Φ φ̂ over every item `[N]`: one matrix-vector product per shard."""
        return torch.cat([fast_scores(s, query_feature, lr, self.n_train) for s in self.shards()])


def load_index(out_dir: str | Path) -> AttributionIndex:
    """Read a finished index."""
    out_dir = Path(out_dir)
    config = load_stage_config(out_dir, IndexConfig)
    record = read_json(out_dir / "config.json")
    return AttributionIndex(out_dir, config, list(record["ids"]), int(record["n_fisher_items"]), record)


def build_index(model_dir: str | Path, latents_dir: str | Path, fisher_dir: str | Path, config: IndexConfig, out_dir: str | Path,
                shard: int | None = None, overwrite: bool = False, job: Job = SINGLE) -> AttributionIndex | None:
    """Build (or resume, or skip) the index of the `config.score.split` items; returns it when every shard is done.

    `shard=i` builds only the i-th item range (one process per shard, by hand); the call that finds
    every shard done finishes the stage. Under torchrun (`job`), each rank builds a contiguous block
    of the shards and rank 0 finishes the stage. Refuses a Fisher of another model or data.
    """
    from songtrace.model.registry import load_task

    out_dir = Path(out_dir)
    task = load_task(model_dir)
    latents = LatentSet.load(latents_dir)
    fisher = Fisher.load(fisher_dir)
    check_inputs(fisher, task.identity(), latents.content_hash(), source=f"the Fisher at {fisher_dir}")
    data = latents.subset(config.score.split)
    check_latents_fit(task, data)
    inputs = {"model": task.identity(), "latents": latents.content_hash(), "fisher": artifact_hash(fisher_dir)}
    if job.main_first(lambda: begin_stage(out_dir, config, inputs, overwrite=overwrite)):
        return load_index(out_dir)
    ranges = shard_ranges(len(data), config.shard_items)
    if shard is not None and not 0 <= shard < len(ranges):
        raise SongtraceError(f"--shard {shard} is out of range: the index has {len(ranges)} shards (0..{len(ranges) - 1})")
    if shard is not None:
        unlock_stage(out_dir)  # one process per shard shares the artifact: each writes only its own shard file
    ctx = IndexContext.make(task, fisher, config)
    started = time.perf_counter()
    for i in job.block(range(len(ranges))) if shard is None else [shard]:
        build_index_shard(ctx, data, config, *ranges[i], out_dir)
    job.barrier()
    if not all(shard_done(shard_path(out_dir, a, b), b - a) for a, b in ranges):
        abandon_stage(out_dir, failed=False)  # other shards still to build: unlock (if still held), keep it resumable
        return None
    if not job.main:
        job.barrier()  # rank 0 finishes the stage
        return load_index(out_dir)
    content = hash_json({"shards": [sha256_file(shard_path(out_dir, a, b)) for a, b in ranges], "inputs": inputs})
    finish_stage(out_dir, config, inputs, content_hash=content, extra={
        "ids": data.ids, "n_items": len(data), "n_fisher_items": fisher.n_items, "k": ctx.projector.out_dim,
        "n_params": ctx.projector.n_params,
        "shards": len(ranges), "seconds_this_call": round(time.perf_counter() - started, 2), "fisher_dir": str(fisher_dir),
        "model_dir": str(model_dir), "latents_dir": str(latents_dir), "ranks": job.world})
    job.barrier()
    return load_index(out_dir)


# --------------------------------------------------------------------------- answering queries


def attribute_fast(queries: Sequence[str], unlearn: UnlearnConfig, model_dir: str | Path, latents_dir: str | Path,
                   fisher_dir: str | Path, index_dir: str | Path, out_dir: str | Path, home: str | Path | None = None,
                   codec_dir: str | Path | None = None, caption: str | None = None, seconds: float | None = None,
                   overwrite: bool = False) -> Any:
    """`songtrace attribute --mode fast`: one gradient and one matrix-vector product per query; writes the exact mode's files.

    scores.parquet / credits.parquet / config.json as `attribution.run.attribute` writes them (the
    scores are the first-order τ), plus each query's seconds in the record.
    """

    from songtrace.artifacts import hash_tensors
    from songtrace.attribution.diagnostics import score_diagnostics
    from songtrace.attribution.query import QueryContext, resolve_query
    from songtrace.attribution.run import Attribution, AttributionRun, credits_table, item_titles, ranking_table, write_score_tables
    from songtrace.model.registry import load_task

    if not queries:
        raise SongtraceError("no query given; pass --query (train:ID, a .latent.safetensors, an audio file or prompt:TEXT@SEED)")
    out_dir = Path(out_dir)
    index = load_index(index_dir)
    index.config.check_matches(unlearn, source=f"the index at {index_dir}")
    task = load_task(model_dir)
    latents = LatentSet.load(latents_dir)
    fisher = Fisher.load(fisher_dir)
    check_inputs(fisher, task.identity(), latents.content_hash(), source=f"the Fisher at {fisher_dir}")
    if index.record.get("inputs", {}).get("model") != task.identity() or index.record["inputs"].get("fisher") != artifact_hash(fisher_dir):
        raise SongtraceError(f"the index at {index_dir} was built for another model or Fisher; rebuild it with `songtrace index build`")
    data = latents.subset(index.config.score.split)
    if data.ids != index.ids:
        raise SongtraceError(f"the index at {index_dir} covers other items than the latent cache's {index.config.score.split!r} split")
    ctx = QueryContext(latents, Path(model_dir), Path(codec_dir) if codec_dir else None, caption=caption, seconds=seconds, model=task)
    resolved = [resolve_query(q, ctx) for q in queries]
    config = FastAttributeConfig(unlearn=unlearn, index=artifact_hash(index_dir))
    inputs = {"model": task.identity(), "latents": latents.content_hash(), "fisher": artifact_hash(fisher_dir),
              "index": artifact_hash(index_dir),
              "queries": hash_json([[q.query_id, hash_tensors({"latent": q.batch.latents, "text": q.batch.text})] for q in resolved])}
    if begin_stage(out_dir, config, inputs, overwrite=overwrite):
        from songtrace.attribution.run import load_attribution

        return load_attribution(out_dir)
    context = IndexContext.make(task, fisher, index.config)
    titles = item_titles(latents_dir, home)
    results, seconds_per_query = [], []
    for q in resolved:
        t0 = time.perf_counter()
        s = index.scores(context.query_feature(q.batch, unlearn), unlearn.lr)
        seconds_per_query.append(time.perf_counter() - t0)
        table = ranking_table(q.query_id, s, data, titles, config.config_hash())
        meta = {"kind": q.kind, "source": q.source, **q.meta}
        results.append(Attribution(q.query_id, s, table, credits_table(q.query_id, s, data), meta))
    scores = write_score_tables(out_dir, results, data.ids)
    matrix = np.stack([r.scores.numpy() for r in results])
    record = finish_stage(out_dir, config, inputs, content_hash=hash_tensors({"s": scores["score"].to_numpy()}), extra={
        "mode": "fast", "queries": [{"query_id": r.query_id, **r.meta} for r in results], "n_items": len(data),
        "seconds_per_query": seconds_per_query, "index_dir": str(index_dir), "k": index.record.get("k"),
        "diagnostics": score_diagnostics(matrix, data.ids)})
    return AttributionRun(out_dir, results, record)


@dataclasses.dataclass(frozen=True)
class FastAttributeConfig(StageConfig):
    """A fast-mode run: the unlearning settings of the (one-step) query update and the index it reads (by content hash)."""

    unlearn: UnlearnConfig = dataclasses.field(default_factory=UnlearnConfig)
    index: str = ""
