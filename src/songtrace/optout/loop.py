"""The optimisation loop the iterative unlearning methods share: seeded draws, Adam, a step budget, resume.

Each step draws its forget items, retain items, donor captions (random labels), timesteps, noise
and caption-dropout flags from a generator seeded by (seed, step) alone, as training does, so a run
killed and resumed from its last checkpoint repeats the uninterrupted one bit for bit. A method
supplies the objective of one step (`objectives.py`), optionally a gradient mask (SalUn) and a
stopping test (the bounded method stops at the null loss). Only the target layers move.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from songtrace.artifacts import StageConfig, check_choice, check_finite, check_positive, load_safetensors, save_safetensors
from songtrace.attribution.groups import split_params, target_params
from songtrace.data.batch import Batch
from songtrace.data.latents import LatentSet
from songtrace.diffusion.loss import NoisePlan, item_seed
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, eval_mode
from songtrace.optout.objectives import relabel
from songtrace.progress import progress_bar

Params = dict[str, torch.Tensor]
STATE_FILE = Path("state") / "optout.safetensors"
# random labels: which side keeps the forget set's content (seed 000 pairs the forget audio with other captions)
PAIRINGS = ("forget_audio", "forget_captions")


@dataclasses.dataclass(frozen=True)
class LoopConfig(StageConfig):
    """Settings every iterative method has: the step budget, Adam's learning rate, batch, target layers, seed.

    mask_forget: exclude padded frames from the forget-set losses (seed 002's M_U; otherwise short
    tracks are forgotten mostly as silence, which every artist shares); retain losses follow the
    model's own training (unmasked). cfg_dropout: the share of forget and retain items whose caption
    is dropped, as in training, so the unconditional branch that guidance uses forgets too.
    """

    steps: int = 100
    lr: float = 1e-4
    batch_size: int = 8
    group: str = "all"
    mask_forget: bool = True
    cfg_dropout: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "lr", "batch_size", "grad_clip", "checkpoint_every"):
            check_finite(name, getattr(self, name))
            check_positive(name, getattr(self, name))
        check_positive("seed", self.seed, allow_zero=True)
        if not 0 <= self.cfg_dropout < 1:
            raise SongtraceError(f"cfg_dropout must be in [0, 1), got {self.cfg_dropout}")


@dataclasses.dataclass
class UnlearnSetup:
    """What a method works on: the model (θ0 = its weights), its training data split into forget and retain."""

    task: ModelTask
    training: LatentSet  # the model's training data (forget + retain)
    forget: LatentSet
    retain: LatentSet
    mask_retain: bool = False  # the recipe's mask_padding
    fisher: Any = None  # a precomputed attribution.Fisher over `training` (EWC, Newton), else computed
    untrained: Callable[[], nn.Module] | None = None  # builds the recipe's untrained model (the null loss)
    model_dir: Path | None = None
    latents_dir: Path | None = None
    exclude_ids: tuple[str, ...] = ()  # everything the result must not have trained on (earlier opt-outs + this one)


@dataclasses.dataclass
class StepDraws:
    """The random choices of one unlearning step."""

    forget_rows: list[int]
    retain_rows: list[int]
    donor_rows: list[int]  # retain items whose captions relabel the forget items
    t_forget: torch.Tensor
    noise_forget: torch.Tensor
    t_retain: torch.Tensor
    noise_retain: torch.Tensor
    drop_forget: torch.Tensor
    drop_retain: torch.Tensor


def _rows(n: int, b: int, g: torch.Generator) -> list[int]:
    if n >= b:
        return torch.randperm(n, generator=g)[:b].tolist()
    return torch.randint(n, (b,), generator=g).tolist()


def draw_optout_step(n_forget: int, n_retain: int, cfg: LoopConfig, step: int, latent_shape: tuple[int, int]) -> StepDraws:
    """Items, donors, timesteps, noise and caption dropout of step `step`, seeded by (seed, step) only."""
    g = torch.Generator().manual_seed(item_seed(cfg.seed, f"optout-step-{step}"))
    b = cfg.batch_size
    forget_rows, retain_rows = _rows(n_forget, b, g), _rows(n_retain, b, g)
    donor_rows = torch.randint(n_retain, (b,), generator=g).tolist()
    t_f, t_r = torch.rand(b, generator=g), torch.rand(b, generator=g)
    noise_f, noise_r = torch.randn(b, *latent_shape, generator=g), torch.randn(b, *latent_shape, generator=g)
    drop_f, drop_r = torch.rand(b, generator=g) < cfg.cfg_dropout, torch.rand(b, generator=g) < cfg.cfg_dropout
    return StepDraws(forget_rows, retain_rows, donor_rows, t_f, noise_f, t_r, noise_r, drop_f, drop_r)


class StepTerms:
    """The loss terms of one step, each computed on first use: per-item forget losses, retain loss, relabelled loss."""

    def __init__(self, task: ModelTask, params: Params, setup: UnlearnSetup, cfg: LoopConfig, draws: StepDraws) -> None:
        self.task, self.params, self.setup, self.cfg, self.draws = task, params, setup, cfg, draws
        self._cache: dict[str, torch.Tensor] = {}

    def _loss(self, batch: Batch, t: torch.Tensor, noise: torch.Tensor, mask: bool) -> torch.Tensor:
        return self.task.loss(self.params, batch, NoisePlan(t[:, None], noise[:, None]), mask=mask)[:, 0]

    def _forget_batch(self) -> Batch:
        return self.setup.forget.batch(self.draws.forget_rows)

    def forget_losses(self) -> torch.Tensor:
        """L_t of each drawn forget item `[B]` (captions dropped as drawn)."""
        if "forget" not in self._cache:
            batch = self._forget_batch()
            batch = batch.with_cond(batch.cond.drop(self.draws.drop_forget))
            self._cache["forget"] = self._loss(batch, self.draws.t_forget, self.draws.noise_forget, self.cfg.mask_forget)
        return self._cache["forget"]

    def forget_loss(self) -> torch.Tensor:
        """Mean forget loss of the step."""
        return self.forget_losses().mean()

    def retain_loss(self) -> torch.Tensor:
        """Mean retain loss of the step (masked as the model was trained)."""
        if "retain" not in self._cache:
            batch = self.setup.retain.batch(self.draws.retain_rows)
            batch = batch.with_cond(batch.cond.drop(self.draws.drop_retain))
            self._cache["retain"] = self._loss(batch, self.draws.t_retain, self.draws.noise_retain, self.setup.mask_retain).mean()
        return self._cache["retain"]

    def relabelled_loss(self, pairing: str = "forget_audio") -> torch.Tensor:
        """The random-label objective: mean loss of the forget audio under donor (retain) captions ("forget_audio"),
        or of the donors' audio under the forget captions ("forget_captions")."""
        key = f"relabelled-{pairing}"
        if key not in self._cache:
            check_choice("random-label pairing", pairing, PAIRINGS)
            forget, donors = self._forget_batch(), self.setup.retain.batch(self.draws.donor_rows)
            if pairing == "forget_audio":
                batch, mask = relabel(forget, donors), self.cfg.mask_forget
            else:
                batch, mask = relabel(donors, forget), self.setup.mask_retain
            self._cache[key] = self._loss(batch, self.draws.t_forget, self.draws.noise_forget, mask).mean()
        return self._cache[key]


# objective(terms, target, theta0) -> scalar to minimise
Objective = Callable[[StepTerms, Params, Params], torch.Tensor]
# stop(step, target) -> a reason string once the method should stop early, else None
StopTest = Callable[[int, Params], str | None]


@dataclasses.dataclass
class LoopResult:
    """Where the loop ended: the target weights, steps run, why it stopped, the loss curve."""

    target: Params
    steps: int
    finished: bool
    stop_reason: str
    curve: list[list[float]]


def run_loop(
    setup: UnlearnSetup,
    cfg: LoopConfig,
    objective: Objective,
    desc: str,
    grad_mask: dict[str, torch.Tensor] | None = None,
    stop: StopTest | None = None,
    work_dir: Path | None = None,
    max_steps: int | None = None,
) -> LoopResult:
    """Minimise `objective` over the target layers for `cfg.steps` steps (or until `stop`), checkpointing into `work_dir`.

    `max_steps` ends this call after that many steps (the run stays resumable): used for time slices and resume tests.
    """
    task = setup.task
    theta0, frozen = split_params(task, target_params(task, cfg.group))
    target = {k: v.clone().requires_grad_(True) for k, v in theta0.items()}
    optimizer = torch.optim.Adam(list(target.values()), lr=cfg.lr)
    step, log = 0, {"curve": [], "stop_reason": ""}
    state_path = work_dir / STATE_FILE if work_dir is not None else None
    if state_path is not None and state_path.exists():
        step, log = load_loop_state(state_path, target, optimizer)
    if log.get("stop_reason"):
        return LoopResult({k: v.detach() for k, v in target.items()}, step, True, log["stop_reason"], log["curve"])
    end = cfg.steps if max_steps is None else min(cfg.steps, step + max_steps)
    bar = progress_bar(cfg.steps, desc=desc, unit="step", initial=step)
    reason = ""
    try:
        with eval_mode(task.module):
            while step < end:
                draws = draw_optout_step(len(setup.forget), len(setup.retain), cfg, step, task.latent_shape)
                terms = StepTerms(task, {**frozen, **target}, setup, cfg, draws)
                loss = objective(terms, target, theta0)
                if not torch.isfinite(loss):
                    raise SongtraceError(f"{desc}: the objective became {float(loss)} at step {step}; lower the learning rate (lr)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_mask is not None:
                    for k, p in target.items():
                        if p.grad is not None:
                            p.grad.mul_(grad_mask[k].to(p.grad.dtype))
                nn.utils.clip_grad_norm_(list(target.values()), cfg.grad_clip)
                optimizer.step()
                step += 1
                log["curve"].append([step, float(loss.detach())])
                bar.update(1)
                if stop is not None:
                    reason = stop(step, {k: v.detach() for k, v in target.items()}) or ""
                if reason or step == cfg.steps:
                    log["stop_reason"] = reason or f"step budget ({cfg.steps}) spent"
                if state_path is not None and (log["stop_reason"] or step % cfg.checkpoint_every == 0 or step == end):
                    save_loop_state(state_path, target, optimizer, step, log)
                if reason:
                    break
    finally:
        bar.close()
    done = bool(log["stop_reason"])
    return LoopResult({k: v.detach() for k, v in target.items()}, step, done, log["stop_reason"], log["curve"])


def save_loop_state(path: Path, target: Params, optimizer: torch.optim.Optimizer, step: int, log: dict[str, Any]) -> None:
    """Checkpoint the target weights, Adam's moments, the step and the log (atomically)."""
    tensors: dict[str, torch.Tensor] = {"step": torch.tensor([step], dtype=torch.int64)}
    for name in sorted(target):
        p = target[name]
        tensors[f"target/{name}"] = p.detach()
        for key, value in optimizer.state.get(p, {}).items():
            tensors[f"adam_{key}/{name}"] = value if torch.is_tensor(value) else torch.tensor(float(value))
    save_safetensors(path, tensors, metadata={"log": json.dumps(log)})


def load_loop_state(path: Path, target: Params, optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, Any]]:
    """Restore a checkpoint of `save_loop_state` into the target tensors and the optimiser; returns (step, log)."""
    from safetensors import safe_open

    tensors = load_safetensors(path)
    with safe_open(str(path), framework="pt") as f:
        log = json.loads((f.metadata() or {}).get("log", "{}"))
    missing = [k for k in target if f"target/{k}" not in tensors]
    if missing:
        raise SongtraceError(f"{path}: the checkpoint does not match the target layers (missing {missing[:3]}); rerun with --overwrite")
    with torch.no_grad():
        for name, p in target.items():
            p.copy_(tensors[f"target/{name}"])
            state = {key.split("/", 1)[0].removeprefix("adam_"): v for key, v in tensors.items()
                     if key.startswith("adam_") and key.split("/", 1)[1] == name}
            if state:
                optimizer.state[p] = {k: (v if k != "step" else v.clone()) for k, v in state.items()}
    return int(tensors["step"][0]), log
