"""Training the DiT on a latent cache: v-objective, caption dropout, AdamW, EMA, resumable.

Each step draws its items, timesteps, noise and caption-dropout flags from a generator seeded by
(seed, step) alone, so a run killed and resumed from its last checkpoint repeats the
uninterrupted run bit for bit. Tracks are zero-padded to the model length (by the latent cache);
with `mask_padding` the padded frames are excluded from the loss and as attention keys (off by
default: the paper's model is trained without it).

Writes `<out>/model.safetensors` (EMA weights), `<out>/config.json` and `<out>/metrics.json`
(validation loss of the untrained and trained model on a fixed noise plan, loss curves).

`retrain_without(model_dir, latents_dir, exclude_ids, out_dir)` trains a model's own recipe
(architecture, `TrainConfig`, seed) from scratch on its training split minus some items: the gold
standard of opt-out unlearning and the counterfactual of leave-some-out ground truth.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from songtrace.artifacts import (
    StageConfig,
    begin_stage,
    check_positive,
    finish_stage,
    hash_json,
    hash_tensors,
    read_json,
    save_safetensors,
    write_json,
)
from songtrace.data.batch import Batch
from songtrace.data.latents import LatentSet
from songtrace.diffusion.loss import NoisePlan, item_seed, make_plan
from songtrace.errors import SongtraceError
from songtrace.model.checkpoint import STATE_FILE, TrainState, load_state, save_state
from songtrace.model.dit import DiT, DiTConfig
from songtrace.model.registry import MODEL_FILE, architecture_record, model_record
from songtrace.model.task import ModelTask, as_task
from songtrace.progress import progress_bar

METRICS_FILE = "metrics.json"


@dataclasses.dataclass(frozen=True)
class TrainConfig(StageConfig):
    """Optimisation settings of the DiT.

    The defaults train the demo DiT (width 128, depth 4, 1.6 M weights, 125 frames): about 7 min at
    ~7 steps/s on two idle CPU cores, 13 min on one core.
    """

    steps: int = 3000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup: int = 100
    min_lr_ratio: float = 0.1  # cosine decay from lr to lr * min_lr_ratio after warmup
    ema_decay: float = 0.999
    cfg_dropout: float = 0.1
    mask_padding: bool = False
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 250
    valid_every: int = 500
    valid_timesteps: int = 8
    log_every: int = 10

    def __post_init__(self) -> None:
        """Validate every field, naming the bad one."""
        super().__post_init__()
        for name in ("steps", "batch_size", "lr", "checkpoint_every", "valid_every", "valid_timesteps", "log_every", "grad_clip"):
            check_positive(name, getattr(self, name))
        for name in ("weight_decay", "warmup", "seed", "min_lr_ratio"):
            check_positive(name, getattr(self, name), allow_zero=True)
        for name in ("ema_decay", "cfg_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise SongtraceError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class ModelConfig(StageConfig):
    """What `config.json` of a model directory records: the architecture and how it was trained."""

    arch: str = "dit"
    dit: DiTConfig = dataclasses.field(default_factory=DiTConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- pure pieces


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay with a warmup, so early averages are not dominated by the random init."""
    return min(decay, (1 + step) / (10 + step))


def ema_update(ema: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor], decay: float) -> dict[str, torch.Tensor]:
    """ema ← decay · ema + (1 − decay) · θ."""
    return {k: torch.lerp(ema[k], params[k].detach(), 1.0 - decay) for k in ema}


@dataclasses.dataclass
class StepDraws:
    """The random choices of one training step."""

    rows: torch.Tensor  # [B] item rows
    t: torch.Tensor  # [B]
    noise: torch.Tensor  # [B, C, L]
    drop: torch.Tensor  # [B] bool: caption dropped


def draw_step(n_items: int, cfg: TrainConfig, step: int, latent_shape: tuple[int, int]) -> StepDraws:
    """Items, timesteps, noise and caption dropout of step `step`, seeded by (seed, step) only."""
    g = torch.Generator().manual_seed(item_seed(cfg.seed, f"train-step-{step}"))
    if n_items >= cfg.batch_size:
        rows = torch.randperm(n_items, generator=g)[: cfg.batch_size]
    else:
        rows = torch.randint(n_items, (cfg.batch_size,), generator=g)
    t = torch.rand(cfg.batch_size, generator=g)
    noise = torch.randn(cfg.batch_size, *latent_shape, generator=g)
    drop = torch.rand(cfg.batch_size, generator=g) < cfg.cfg_dropout
    return StepDraws(rows, t, noise, drop)


def step_loss(model: nn.Module | ModelTask, batch: Batch, draws: StepDraws, mask_padding: bool) -> torch.Tensor:
    """Mean v-objective loss of one step, captions of dropped items replaced by the null caption."""
    batch = batch.with_cond(batch.cond.drop(draws.drop))
    plan = NoisePlan(draws.t[:, None], draws.noise[:, None])
    return as_task(model).loss(None, batch, plan, mask=mask_padding).mean()


@torch.no_grad()
def validation_loss(
    model: nn.Module | ModelTask,
    params: Mapping[str, torch.Tensor] | None,
    data: LatentSet,
    plan: NoisePlan,
    batch_size: int,
    mask: bool = False,
    drop_text: bool = False,
) -> float:
    """Mean diffusion loss over `data` on a fixed plan (optionally with every caption dropped)."""
    task = as_task(model)
    total = 0.0
    for start in range(0, len(data), batch_size):
        rows = list(range(start, min(start + batch_size, len(data))))
        batch = data.batch(rows)
        if drop_text:
            batch = batch.with_cond(batch.cond.null())
        total += float(task.loss(params, batch, plan.select_items(rows), mask=mask).sum())
    return total / (len(data) * plan.t.shape[1])


# --------------------------------------------------------------------------- orchestration


def dit_config_for(latent_set: LatentSet, overrides: Mapping[str, Any] | None) -> DiTConfig:
    """The DiT config for a latent cache: its latent shape, `max_seconds` from its longest track unless given."""
    fields = dict(overrides or {})
    for key in ("latent_channels", "latent_length"):
        if key in fields:
            raise SongtraceError(f"{key} comes from the latent cache; do not override it")
    if "max_seconds" not in fields:
        fields["max_seconds"] = float(max(1.0, math.ceil(float((latent_set.seconds_start + latent_set.seconds_total).max()))))
    channels, length = latent_set.latent_shape
    return DiTConfig(latent_channels=channels, latent_length=length, **fields)


def _split_or_none(latent_set: LatentSet, split: str) -> LatentSet | None:
    return latent_set.subset(split) if split in latent_set.splits else None


def training_subset(train_set: LatentSet, exclude_ids: Sequence[str], source: str = "the latent cache") -> LatentSet:
    """The training split minus `exclude_ids`, refusing ids outside it and an exclusion of every item."""
    unknown = sorted(set(exclude_ids) - set(train_set.ids))
    if unknown:
        raise SongtraceError(f"{len(unknown)} excluded ids are not in the train split of {source} (e.g. {unknown[:3]})")
    kept = train_set.without(exclude_ids)
    if len(kept) == 0:
        raise SongtraceError(f"excluding {len(set(exclude_ids))} ids leaves no training item in {source}")
    return kept


def train_model(
    train_cfg: TrainConfig,
    dit_cfg_overrides: Mapping[str, Any] | None,
    latents_dir: str | Path,
    out_dir: str | Path,
    overwrite: bool = False,
    exclude_ids: Sequence[str] = (),
) -> dict[str, Any]:
    """Train (or resume, or skip if finished) a DiT on the "train" split of a latent cache; returns the metrics.

    `exclude_ids` leaves those training items out (recorded in config.json as `inputs.excluded`,
    a hash, and `excluded_ids`); everything else, the draws of each step included, follows the recipe.
    """
    out_dir = Path(out_dir)
    latent_set = LatentSet.load(latents_dir)
    train_set = latent_set.subset("train")
    excluded = sorted(set(exclude_ids))
    if excluded:
        train_set = training_subset(train_set, excluded, str(latents_dir))
    valid_set = _split_or_none(latent_set, "valid")
    config = ModelConfig(dit=dit_config_for(latent_set, dit_cfg_overrides), train=train_cfg)
    inputs = {"latents": latent_set.content_hash()}
    if excluded:
        inputs["excluded"] = hash_json(excluded)
    if begin_stage(out_dir, config, inputs, overwrite=overwrite):
        return read_json(out_dir / METRICS_FILE)

    model = DiT(config.dit, seed=train_cfg.seed).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    state = TrainState(model, optimizer, {k: v.detach().clone() for k, v in model.named_parameters()})
    valid_plan = make_plan(valid_set.ids, train_cfg.valid_timesteps, config.dit.latent_shape, train_cfg.seed) if valid_set else None

    def validate(params: Mapping[str, torch.Tensor] | None, drop_text: bool = False) -> float | None:
        if valid_set is None or valid_plan is None:
            return None
        return validation_loss(model, params, valid_set, valid_plan, train_cfg.batch_size, train_cfg.mask_padding, drop_text)

    if (out_dir / STATE_FILE).exists():
        state = load_state(out_dir / STATE_FILE, state)
    else:
        state.log = {"valid_loss_init": validate(None), "curve": [], "valid_curve": []}
    state = run_training(state, train_set, train_cfg, out_dir, validate)

    ema = state.ema
    save_safetensors(out_dir / MODEL_FILE, ema)
    metrics = {
        "params": sum(v.numel() for v in ema.values()),
        "steps": train_cfg.steps,
        "train_items": len(train_set),
        "valid_items": len(valid_set) if valid_set else 0,
        "valid_loss_init": state.log["valid_loss_init"],
        "valid_loss": validate(ema),
        "valid_loss_null_text": validate(ema, drop_text=True),
        "train_loss_curve": state.log["curve"],
        "valid_curve": state.log["valid_curve"],
        "train_seconds": round(state.log.get("train_seconds", 0.0), 2),
        "steps_per_second": round(train_cfg.steps / max(state.log.get("train_seconds", 0.0), 1e-9), 2),
    }
    write_json(out_dir / METRICS_FILE, metrics)
    summary = {k: metrics[k] for k in ("params", "valid_loss_init", "valid_loss")}
    extra: dict[str, Any] = {"metrics": summary}
    if excluded:
        extra["excluded_ids"] = excluded
    finish_stage(out_dir, config, inputs, content_hash=hash_tensors(ema), extra=extra)
    shutil.rmtree(out_dir / STATE_FILE.parent, ignore_errors=True)
    return metrics


def model_recipe(model_dir: str | Path) -> ModelConfig:
    """The recipe (architecture and training settings) a trained model, or a model derived from one, records."""
    record = model_record(model_dir)
    try:
        return ModelConfig.from_dict(architecture_record(record))
    except (KeyError, TypeError) as e:
        raise SongtraceError(f"{Path(model_dir) / 'config.json'}: malformed model config ({e})") from None


def retrain_without(
    model_dir: str | Path,
    latents_dir: str | Path,
    exclude_ids: Sequence[str],
    out_dir: str | Path,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train `model_dir`'s recipe from scratch on its training split minus `exclude_ids`; returns the metrics.

    The same architecture, `TrainConfig` and seed (hence the same init and per-step draws) as the
    original; refuses a latent cache other than the one the model was trained on. Resumes and skips
    like `train_model`.
    """
    record = model_record(model_dir)
    recipe = model_recipe(model_dir)
    if recipe.arch != "dit":
        raise SongtraceError(f"{model_dir}: retraining is implemented for the demo DiT, not for {recipe.arch!r} models")
    trained_on = record.get("inputs", {}).get("latents")
    latents_hash = LatentSet.load(latents_dir).content_hash()
    if trained_on and trained_on != latents_hash:
        raise SongtraceError(
            f"{model_dir} was trained on other data (latents {trained_on[:12]}), not on {latents_dir} ({latents_hash[:12]})"
        )
    overrides = {k: v for k, v in recipe.dit.to_dict().items() if k not in ("latent_channels", "latent_length")}
    return train_model(recipe.train, overrides, latents_dir, out_dir, overwrite=overwrite, exclude_ids=exclude_ids)


def run_training(state: TrainState, train_set: LatentSet, cfg: TrainConfig, out_dir: Path, validate: Any) -> TrainState:
    """The step loop from `state.step` to `cfg.steps`, checkpointing and validating on schedule."""
    model, optimizer = state.model, state.optimizer
    model.train()
    params = dict(model.named_parameters())
    window: list[float] = []
    bar = progress_bar(cfg.steps, desc="train DiT", unit="step", initial=state.step)
    started = time.perf_counter() - float(state.log.get("train_seconds", 0.0))
    try:
        while state.step < cfg.steps:
            step = state.step
            draws = draw_step(len(train_set), cfg, step, train_set.latent_shape)
            loss = step_loss(model, train_set.batch(draws.rows.tolist()), draws, cfg.mask_padding)
            if not torch.isfinite(loss):
                raise SongtraceError(f"training diverged at step {step} (loss {float(loss)}); lower the learning rate (--lr)")
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            state.ema = ema_update(state.ema, params, ema_decay_at(step, cfg.ema_decay))
            state.step = step + 1
            window.append(float(loss.detach()))
            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                state.log["curve"].append([state.step, sum(window) / len(window)])
                bar.set_postfix(loss=f"{sum(window) / len(window):.4f}")
                window = []
            if state.step % cfg.valid_every == 0 and state.step < cfg.steps:
                state.log["valid_curve"].append([state.step, validate(state.ema)])
                model.train()
            state.log["train_seconds"] = time.perf_counter() - started
            if state.step % cfg.checkpoint_every == 0 and state.step < cfg.steps:
                save_state(out_dir / STATE_FILE, state)
            bar.update(1)
    finally:
        bar.close()
    state.log["valid_curve"].append([state.step, validate(state.ema)])
    model.eval()
    return state
