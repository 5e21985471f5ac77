"""The diagonal empirical Fisher of seed 002, section 2.2, over the training set.

    (F_diag)_jj = (1/N) Σ_i (1/T) Σ_t (∂L_t(z_i, θ0) / ∂θ_j)²

The square is of the gradient of each single (item, timestep) loss, not of the T-averaged
gradient. Per-sample gradients come from `torch.func.grad` + `vmap` over the flattened
(item × timestep) axis, in chunks to bound memory; squares are summed in float64. The timesteps
and noise of item i are seeded by its id (`make_plan`), so batching does not change F.

`fit_fisher` is the stage: it streams over the training split with a progress bar, checkpoints the
partial float64 sums every few batches, resumes after an interruption, and writes
`fisher.safetensors` (float32 F per target parameter) and `config.json`. Under torchrun each rank
sums a contiguous block of the batches still missing into its own checkpoint (`shard.SumShards`)
and the ranks' sums are all-reduced; the math (`batch_square_sums`, `fisher_diag`) is the same.
Plans, batches and sums live on the config's device; `precision="bf16"` runs the per-sample
gradients under bf16 autocast (gradients and sums stay float32 / float64).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn
from torch.func import grad, vmap

from songtrace.artifacts import (
    StageConfig,
    abandon_stage,
    begin_stage,
    check_choice,
    check_positive,
    finish_stage,
    hash_tensors,
    load_safetensors,
    load_stage_config,
    read_json,
    save_safetensors,
)
from songtrace.attribution.groups import split_params, target_params
from songtrace.attribution.shard import SINGLE, Job, SumShards, batches_of, missing_spans
from songtrace.data.batch import Batch, Conditioning
from songtrace.data.latents import LatentSet
from songtrace.diffusion.loss import NoisePlan, Samples, flatten_samples, make_plan
from songtrace.errors import SongtraceError
from songtrace.model.registry import load_task
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

FISHER_FILE = "fisher.safetensors"
SHARDS_DIR = "partial"  # per-rank checkpoints of the float64 sums while the stage is unfinished

Params = dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class FisherConfig(StageConfig):
    """How the diagonal Fisher is estimated.

    group: target layers (a layer group or a regex, see `target_params`); n_timesteps: T per item;
    mask: exclude padded frames from the loss (the model was trained unmasked, so False matches
    training); batch_size: items per data batch; sample_chunk: (item, timestep) samples per vmap
    call (bounds memory: about sample_chunk × |θ_target| × 20 bytes for the float32 gradients and their
    float64 squares, plus sample_chunk rows of activations); method: "vmap" or "loop" (reference);
    device: where plans, batches and gradients live ("cpu", "cuda": the rank's GPU, "meta": shapes only);
    precision: "fp32" or "bf16" (autocast of the forward and backward passes).
    """

    group: str = "all"
    n_timesteps: int = 16
    seed: int = 0
    mask: bool = False
    batch_size: int = 8
    sample_chunk: int = 64
    method: str = "vmap"
    split: str = "train"
    device: str = "cpu"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_positive("n_timesteps", self.n_timesteps)
        check_positive("batch_size", self.batch_size)
        check_positive("sample_chunk", self.sample_chunk)
        check_choice("per-sample gradient method", self.method, PER_SAMPLE_METHODS)
        check_device(self.device)
        check_precision(self.precision)


# --------------------------------------------------------------------------- per-sample gradients


def _grads_vmap(task: ModelTask, frozen: Params, target: Params, samples: Samples) -> Params:
    """Per-sample gradients by `vmap(grad(sample_loss))` over the rows."""

    def loss(tgt: Params, row: Samples) -> torch.Tensor:
        return task.sample_loss({**frozen, **tgt}, row)

    dims = Samples(0, 0, Conditioning(0, 0, 0, 0), 0, None if samples.frame_mask is None else 0)
    return vmap(grad(loss), in_dims=(None, dims))(target, samples)


def _grads_loop(task: ModelTask, frozen: Params, target: Params, samples: Samples) -> Params:
    """Per-sample gradients one row at a time (the reference the vmap path is tested against)."""

    def loss(tgt: Params, row: Samples) -> torch.Tensor:
        return task.sample_loss({**frozen, **tgt}, row)

    g = grad(loss)
    rows = [g(target, _row(samples, s)) for s in range(samples.t.shape[0])]
    return {k: torch.stack([r[k] for r in rows]) for k in target}


def _row(samples: Samples, s: int) -> Samples:
    """Row `s` of the samples, unbatched (as vmap would hand it over)."""
    return Samples(samples.x_t[s], samples.t[s], Conditioning(*(x[s] for x in samples.cond)), samples.target[s],
                   None if samples.frame_mask is None else samples.frame_mask[s])


PER_SAMPLE_METHODS: dict[str, Callable[..., Params]] = {"vmap": _grads_vmap, "loop": _grads_loop}


def per_sample_grads(
    model: nn.Module | ModelTask,
    params_target: Params,
    params_frozen: Params,
    batch: Batch,
    plan: NoisePlan,
    mask: bool,
    method: str = "vmap",
) -> Params:
    """∂L_t(z_i, θ)/∂θ for every (item, timestep) of the batch: name -> [B*T, *shape] (item-major)."""
    check_choice("per-sample gradient method", method, PER_SAMPLE_METHODS)
    samples = flatten_samples(batch, plan, mask)
    return PER_SAMPLE_METHODS[method](as_task(model), dict(params_frozen), params_target, samples)


def accumulate_squares(sums: Params, grads: Mapping[str, torch.Tensor]) -> Params:
    """sums[n] + Σ_samples grads[n]² in float64 (pure: returns new tensors)."""
    return {k: sums[k] + grads[k].to(torch.float64).square().sum(0) for k in sums}


def batch_square_sums(
    task: ModelTask,
    params_target: Params,
    params_frozen: Params,
    batch: Batch,
    config: FisherConfig,
) -> Params:
    """Σ over the batch's items and T timesteps of the squared per-sample gradients (float64, on the task's device).

    The batch goes to the device once; the plan is drawn there; the chunks of `sample_chunk` rows
    run under the config's precision.
    """
    device = task.device
    batch = batch.to(device)
    plan = make_plan(batch.ids, config.n_timesteps, task.latent_shape, config.seed, device=device)
    sums = {k: torch.zeros(v.shape, dtype=torch.float64, device=device) for k, v in params_target.items()}
    samples = flatten_samples(batch, plan, config.mask)
    n = samples.t.shape[0]
    for start in range(0, n, config.sample_chunk):
        chunk = samples.select(slice(start, min(n, start + config.sample_chunk)))
        with autocast(device, config.precision):
            grads = PER_SAMPLE_METHODS[config.method](task, params_frozen, params_target, chunk)
        sums = accumulate_squares(sums, grads)
    return sums


def fisher_diag(sums: Mapping[str, torch.Tensor], n_items: int, n_timesteps: int) -> Params:
    """F = sums / (N·T) as float32: the mean over items and timesteps of the squared gradients."""
    if n_items <= 0:
        raise SongtraceError("the Fisher needs at least one training item")
    return {k: (v / (n_items * n_timesteps)).to(torch.float32) for k, v in sums.items()}


# --------------------------------------------------------------------------- the Fisher object


@dataclasses.dataclass
class Fisher:
    """A diagonal Fisher with what it was computed on: F per parameter, N, config, input hashes."""

    diag: Params
    n_items: int
    config: FisherConfig
    model_hash: str = ""
    latents_hash: str = ""

    def save(self, out_dir: str | Path) -> None:
        """Write `fisher.safetensors` (the config.json is written by the stage)."""
        save_safetensors(Path(out_dir) / FISHER_FILE, self.diag, metadata={"n_items": str(self.n_items)})

    @classmethod
    def load(cls, fisher_dir: str | Path) -> Fisher:
        """Read a finished Fisher artifact, checking it for NaN/inf/negative entries."""
        fisher_dir = Path(fisher_dir)
        if not (fisher_dir / FISHER_FILE).exists() and not (fisher_dir / "config.json").exists():
            raise SongtraceError(f"{fisher_dir}: no Fisher here; run `songtrace fisher` first")
        config = load_stage_config(fisher_dir, FisherConfig)
        record = read_json(fisher_dir / "config.json")
        diag = load_safetensors(fisher_dir / FISHER_FILE)
        fisher = cls(
            diag=diag,
            n_items=int(record["n_items"]),
            config=config,
            model_hash=str(record["inputs"].get("model", "")),
            latents_hash=str(record["inputs"].get("latents", "")),
        )
        check_fisher(fisher.diag, damping=None, source=str(fisher_dir / FISHER_FILE))
        return fisher


def check_fisher(diag: Mapping[str, torch.Tensor], damping: float | None = 0.0, source: str = "Fisher") -> None:
    """Refuse a Fisher that cannot be inverted: NaN/inf or negative entries always; zeros unless damping > 0.

    `damping=None` checks only NaN/inf/negative (loading); with damping > 0, F + λ > 0 so zeros are fine.
    """
    for name, f in diag.items():
        if not torch.isfinite(f).all():
            bad = int((~torch.isfinite(f)).sum())
            raise SongtraceError(f"{source}: the Fisher of {name!r} has {bad} NaN/inf entries; refit it (check the model and data for NaN)")
        if (f < 0).any():
            raise SongtraceError(f"{source}: the Fisher of {name!r} has negative entries; a diagonal Fisher is a mean of squares")
        if damping is not None and damping <= 0 and (f == 0).any():
            zeros = int((f == 0).sum())
            raise SongtraceError(
                f"{source}: the Fisher of {name!r} has {zeros} zero entries, so F⁻¹ is infinite; "
                "use a damping > 0 or drop that parameter from the target group"
            )


def check_fits(fisher: Fisher | Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor], source: str = "Fisher") -> None:
    """Refuse a Fisher whose parameter names or shapes do not cover the target parameters."""
    diag = fisher.diag if isinstance(fisher, Fisher) else fisher
    missing = [n for n in params if n not in diag]
    if missing:
        raise SongtraceError(
            f"{source} has no entries for {len(missing)} target parameters (e.g. {missing[:3]}); "
            "it was fitted on another layer group or another model; refit it with --group covering the target"
        )
    wrong = [f"{n}: Fisher {list(diag[n].shape)} vs model {list(p.shape)}" for n, p in params.items() if diag[n].shape != p.shape]
    if wrong:
        raise SongtraceError(f"{source} does not fit this model's parameter shapes: {'; '.join(wrong[:3])}")


def check_inputs(fisher: Fisher, model_hash: str, latents_hash: str, source: str = "Fisher") -> None:
    """Refuse a Fisher fitted on other weights or other data (hash mismatch)."""
    if fisher.model_hash and fisher.model_hash != model_hash:
        raise SongtraceError(
            f"{source} was fitted on another model (weights hash {fisher.model_hash[:12]}, this model {model_hash[:12]}); "
            "refit it with `songtrace fisher` for this model"
        )
    if fisher.latents_hash and fisher.latents_hash != latents_hash:
        raise SongtraceError(
            f"{source} was fitted on other data (latents hash {fisher.latents_hash[:12]}, these latents {latents_hash[:12]}); "
            "refit it with `songtrace fisher` for this data"
        )


# --------------------------------------------------------------------------- fitting


def _batches(n: int, batch_size: int, start: int = 0) -> list[range]:
    """Row ranges of consecutive batches covering items start..n."""
    return [range(s, min(n, s + batch_size)) for s in range(start, n, batch_size)]


def compute_fisher(model: nn.Module | ModelTask, latents: LatentSet, config: FisherConfig) -> Fisher:
    """The diagonal Fisher of `model` over `latents` (its `config.split`), in memory, for notebooks and tests."""
    task = as_task(model)
    data = latents.subset(config.split)
    check_latents_fit(task, data)
    with on_device(task.module, runtime_device(config.device)), eval_mode(task.module):
        target, frozen = split_params(task, target_params(task, config.group))
        sums = {k: torch.zeros(v.shape, dtype=torch.float64, device=task.device) for k, v in target.items()}
        for rows in _batches(len(data), config.batch_size):
            part = batch_square_sums(task, target, frozen, data.batch(rows), config)
            sums = {k: sums[k] + part[k] for k in sums}
    sums = {k: v.cpu() for k, v in sums.items()}
    return Fisher(fisher_diag(sums, len(data), config.n_timesteps), len(data), config, task.identity(), latents.content_hash())


def fit_fisher(
    model_dir: str | Path,
    latents_dir: str | Path,
    config: FisherConfig,
    out_dir: str | Path,
    overwrite: bool = False,
    checkpoint_every: int = 10,
    max_batches: int | None = None,
    model: nn.Module | ModelTask | None = None,
    job: Job = SINGLE,
) -> Path:
    """Fit the Fisher stage into `out_dir`, resuming partial work; returns `out_dir`.

    Every `checkpoint_every` batches a rank's float64 sums and the rows they cover go to
    `partial/rank-<r>.safetensors`; a rerun with the same config computes only the rows no file
    covers (with one process, the same F bit for bit). `max_batches` stops after that many batches
    in this call (time-sliced jobs): the stage then stays pending and a later call finishes it.
    With `job` (a torchrun job), each rank takes a contiguous block of the missing batches and
    the sums are all-reduced; rank 0 writes the artifact.
    """
    out_dir = Path(out_dir)
    check_positive("checkpoint_every", checkpoint_every)
    if max_batches is not None:
        check_positive("max_batches", max_batches)
    task = as_task(model) if model is not None else load_task(model_dir)
    latents = LatentSet.load(latents_dir)
    data = latents.subset(config.split)
    check_latents_fit(task, data, latents_dir)
    inputs = {"model": task.identity(), "latents": latents.content_hash()}
    if job.main_first(lambda: begin_stage(out_dir, config, inputs, overwrite=overwrite)):
        return out_dir
    n = len(data)
    shards = SumShards(out_dir / SHARDS_DIR, job)
    with on_device(task.module, runtime_device(config.device)), eval_mode(task.module):
        target, frozen = split_params(task, target_params(task, config.group))
        covered = job.main_first(shards.covered)
        batches = job.block(batches_of(missing_spans(n, covered), config.batch_size))
        if max_batches is not None:
            batches = batches[:max_batches]
        sums, spans = shards.load(target)
        bar = progress_bar(sum(len(r) for r in batches), desc="fisher" if job.world == 1 else f"fisher rank {job.rank}", unit="item")
        try:
            for i, rows in enumerate(batches, 1):
                part = batch_square_sums(task, target, frozen, data.batch(rows), config)
                sums = {k: sums[k] + part[k] for k in sums}
                spans.append((rows.start, rows.stop))
                bar.update(len(rows))
                if i % checkpoint_every == 0 or i == len(batches):
                    shards.save(sums, spans)
        finally:
            bar.close()
        job.barrier()
        if job.main_first(lambda: bool(missing_spans(n, shards.covered()))):
            if job.main:
                abandon_stage(out_dir, failed=False)  # unfinished by design (max_batches): unlock, keep it resumable
            return out_dir
        total = {k: v.cpu() for k, v in shards.merged(sums).items()}
    if job.main:
        fisher = Fisher(fisher_diag(total, n, config.n_timesteps), n, config, inputs["model"], inputs["latents"])
        check_fisher(fisher.diag, damping=None, source=str(out_dir / FISHER_FILE))
        fisher.save(out_dir)
        zeros = sum(int((f == 0).sum()) for f in fisher.diag.values())
        finish_stage(
            out_dir,
            config,
            inputs,
            content_hash=hash_tensors(fisher.diag),
            extra={
                "n_items": n,
                "n_params": sum(f.numel() for f in fisher.diag.values()),
                "n_zero_entries": zeros,
                "mean_f": mean_fisher(fisher.diag),
                "ranks": job.world,
            },
        )
        shards.clear()
    job.barrier()
    return out_dir


def mean_fisher(diag: Mapping[str, torch.Tensor]) -> float:
    """Mean of F over all entries (the scale a relative damping refers to)."""
    total = sum(float(f.double().sum()) for f in diag.values())
    count = sum(f.numel() for f in diag.values())
    return total / count if count else math.nan
