"""The opt-out unlearning methods, behind one registry: name -> (config dataclass, run function).

| name       | what moves the weights                                                              |
|------------|--------------------------------------------------------------------------------------|
| `ga`       | gradient ascent on the forget set (seed 000)                                         |
| `rl`       | random labels: the forget audio trained on other tracks' captions (seed 000)         |
| `graddiff` | ascent on the forget set plus descent on the retain set                              |
| `ewc`      | ascent with the diagonal-Fisher penalty (N/2) δᵀFδ: seed 002's Eq. 5 on a set        |
| `newton`   | seed 002's closed-form Eq. 6 step for the whole set (`attribution.unlearn`'s math)   |
| `salun`    | random labels on the most salient weights only (a mask over a chosen fraction)       |
| `bounded`  | MUCS-style mirrored ascent L_r − λ·min(L_f, L_null), stopping at the null loss       |
| `retrain`  | the gold standard: the model's own recipe from scratch without the forget set        |

Every config is a small `StageConfig` with its hyperparameters and a step budget; every run takes
an `UnlearnSetup` and returns the new weights. All randomness is seeded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from songtrace.artifacts import StageConfig, check_choice, check_finite, check_positive, load_safetensors
from songtrace.attribution.fisher import Fisher, FisherConfig, check_fits, compute_fisher
from songtrace.attribution.groups import split_params, target_params
from songtrace.attribution.score import item_losses
from songtrace.attribution.unlearn import DAMPING_MODES, UnlearnConfig, apply_delta, damping_value, query_gradient, unlearn_step
from songtrace.data.latents import LatentSet
from songtrace.diffusion.loss import make_plan
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, as_task, eval_mode
from songtrace.optout.loop import PAIRINGS, LoopConfig, StepTerms, UnlearnSetup, run_loop
from songtrace.optout.objectives import (
    ascent_objective,
    bounded_objective,
    ewc_objective,
    ewc_penalty,
    graddiff_objective,
    saliency_mask,
)

Params = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- configs


# the common settings (`optout --steps/--lr/--seed`, the demo) -> where a method that nests them keeps them
SHORTCUTS: dict[str, dict[str, str]] = {"steps": {"newton": "unlearn.steps"}, "lr": {"newton": "unlearn.lr"},
                                        "seed": {"newton": "unlearn.seed"}}


def setting_path(method: str, name: str) -> str:
    """Where `method` keeps the common setting `name` (a dotted path: newton's lr is unlearn.lr, everyone else's lr is lr)."""
    return SHORTCUTS.get(name, {}).get(method, name)


def common_settings(method: str, **values: Any) -> dict[str, Any]:
    """Method settings from the common names (steps, lr, seed; None = not given), nested where `method` keeps them."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        *groups, leaf = setting_path(method, name).split(".")
        node = out
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = value
    return out


@dataclasses.dataclass(frozen=True)
class GAConfig(LoopConfig):
    """Gradient ascent on the forget set: unbounded, so the step budget is what stops it."""

    steps: int = 30
    lr: float = 3e-4


@dataclasses.dataclass(frozen=True)
class RLConfig(LoopConfig):
    """Random labels: minimise the forget audio's loss under donor captions (+ retain_weight × the retain loss).

    pairing "forget_audio" is seed 000's labelling (the forget audio with other tracks' captions);
    "forget_captions" pairs the forget captions with other tracks' audio instead.
    """

    steps: int = 60
    lr: float = 3e-4
    retain_weight: float = 0.0
    pairing: str = "forget_audio"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_finite("retain_weight", self.retain_weight)
        check_positive("retain_weight", self.retain_weight, allow_zero=True)
        check_choice("random-label pairing", self.pairing, PAIRINGS)


@dataclasses.dataclass(frozen=True)
class GradDiffConfig(LoopConfig):
    """−L_f + α L_r."""

    steps: int = 60
    lr: float = 3e-4
    alpha: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_finite("alpha", self.alpha)
        check_positive("alpha", self.alpha, allow_zero=True)


@dataclasses.dataclass(frozen=True)
class EWCConfig(LoopConfig):
    """−Σ_S L + weight · (N/2) δᵀ(F + λ)δ; F is the diagonal Fisher of the training data (fisher_timesteps T per item)."""

    steps: int = 60
    lr: float = 3e-4
    weight: float = 1.0
    damping: float = 1e-3
    damping_mode: str = "relative"
    fisher_timesteps: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("weight", "damping"):
            check_finite(name, getattr(self, name))
            check_positive(name, getattr(self, name), allow_zero=True)
        check_positive("fisher_timesteps", self.fisher_timesteps)
        check_choice("damping mode", self.damping_mode, DAMPING_MODES)


@dataclasses.dataclass(frozen=True)
class NewtonConfig(StageConfig):
    """Seed 002's Eq. 6 for the set S: θ' = θ0 + η (1/N) (F + λ)⁻¹ ∇ Σ_S L, `unlearn.steps` (1-4) times.

    item_chunk: forget items per gradient pass (bounds memory; the sum is the same).
    """

    unlearn: UnlearnConfig = dataclasses.field(default_factory=lambda: UnlearnConfig(lr=1e-4, n_timesteps=16, timestep_chunk=16))
    fisher_timesteps: int = 8
    item_chunk: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("fisher_timesteps", self.fisher_timesteps)
        check_positive("item_chunk", self.item_chunk)

    @property
    def seed(self) -> int:
        """The seed of the forget items' timesteps and noise."""
        return self.unlearn.seed


@dataclasses.dataclass(frozen=True)
class SalUnConfig(LoopConfig):
    """Random labels on the `fraction` of target weights with the largest forget-loss gradient (+ α × retain loss).

    The default pairing is the forget captions with other tracks' audio: on the tiny and benchmark
    models seed 000's pairing (forget audio, other captions) damaged the retain set more than the forget set.
    """

    steps: int = 60
    lr: float = 3e-4
    fraction: float = 0.5
    retain_weight: float = 1.0
    saliency_timesteps: int = 8
    pairing: str = "forget_captions"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("random-label pairing", self.pairing, PAIRINGS)
        check_finite("fraction", self.fraction)
        if not 0 < self.fraction <= 1:
            raise SongtraceError(f"fraction must be in (0, 1], got {self.fraction}")
        check_finite("retain_weight", self.retain_weight)
        check_positive("retain_weight", self.retain_weight, allow_zero=True)
        check_positive("saliency_timesteps", self.saliency_timesteps)


@dataclasses.dataclass(frozen=True)
class BoundedConfig(LoopConfig):
    """L_r − lam · mean min(L_f, L_null), stopping once the forget loss (fixed plan, `check_timesteps` T) reaches L_null."""

    steps: int = 200
    lr: float = 3e-4
    lam: float = 1.0
    check_every: int = 2
    check_timesteps: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check_finite("lam", self.lam)
        check_positive("lam", self.lam)
        check_positive("check_every", self.check_every)
        check_positive("check_timesteps", self.check_timesteps)


@dataclasses.dataclass(frozen=True)
class RetrainConfig(StageConfig):
    """Retraining has no settings of its own: it is the model's recipe (architecture, TrainConfig, seed) as recorded."""


# --------------------------------------------------------------------------- shared pieces


@dataclasses.dataclass
class MethodOutcome:
    """The unlearned weights (every parameter of the model), whether the run finished, and what it logged."""

    params: Params
    finished: bool
    log: dict[str, Any]


def training_fisher(setup: UnlearnSetup, group: str, n_timesteps: int, seed: int) -> Fisher:
    """The diagonal Fisher of the model's training data (the given one when it covers the target layers)."""
    task = setup.task
    target, _ = split_params(task, target_params(task, group))
    if setup.fisher is not None:
        check_fits(setup.fisher, target, source="the given Fisher")
        return setup.fisher
    setup.fisher = compute_fisher(task, setup.training, FisherConfig(group=group, n_timesteps=n_timesteps, seed=seed, split="train"))
    return setup.fisher


def set_gradient(task: ModelTask, theta: Params, frozen: Params, data: LatentSet, n_timesteps: int, seed: int, mask: bool,
                 item_chunk: int, timestep_chunk: int) -> Params:
    """∇θ Σ_{z∈data} (1/T) Σ_t L_t(z, θ) over the target weights, summed over chunks of items (same per-item plans)."""
    total: Params | None = None
    for start in range(0, len(data), item_chunk):
        batch = data.batch(range(start, min(len(data), start + item_chunk)))
        plan = make_plan(batch.ids, n_timesteps, task.latent_shape, seed)
        g = query_gradient(task, theta, frozen, batch, plan, mask, timestep_chunk)
        total = g if total is None else {k: total[k] + g[k] for k in total}
    assert total is not None
    return total


def fixed_plan_loss(task: ModelTask, params: Params | None, data: LatentSet, n_timesteps: int, seed: int, mask: bool) -> float:
    """Mean over items of L(z, θ) on a fixed plan (seeded per item id): comparable across models and steps."""
    plan = make_plan(data.ids, n_timesteps, task.latent_shape, seed)
    with torch.no_grad(), eval_mode(task.module):
        losses = [item_losses(task, params, data.batch(range(s, min(len(data), s + 16))), plan.select_items(slice(s, s + 16)), mask,
                              n_timesteps) for s in range(0, len(data), 16)]
    return float(torch.cat(losses).mean())


def _full(setup: UnlearnSetup, target: Params) -> Params:
    return {**{k: v.detach() for k, v in setup.task.module.named_parameters()}, **{k: v.detach() for k, v in target.items()}}


def _loop_outcome(setup: UnlearnSetup, result: Any, extra: dict[str, Any] | None = None) -> MethodOutcome:
    log = {"steps_run": result.steps, "stop_reason": result.stop_reason, "curve": result.curve, **(extra or {})}
    return MethodOutcome(_full(setup, result.target), result.finished, log)


# --------------------------------------------------------------------------- the methods


def run_ga(setup: UnlearnSetup, cfg: GAConfig, work_dir: Path | None, max_steps: int | None) -> MethodOutcome:
    """Gradient ascent on the forget set."""
    result = run_loop(setup, cfg, lambda terms, _t, _t0: ascent_objective(terms.forget_loss()), "optout ga", work_dir=work_dir,
                      max_steps=max_steps)
    return _loop_outcome(setup, result)


def run_rl(setup: UnlearnSetup, cfg: RLConfig, work_dir: Path | None, max_steps: int | None) -> MethodOutcome:
    """Random labelling of the forget audio (optionally with retain descent)."""

    def objective(terms: StepTerms, _t: Params, _t0: Params) -> torch.Tensor:
        loss = terms.relabelled_loss(cfg.pairing)
        return loss + cfg.retain_weight * terms.retain_loss() if cfg.retain_weight else loss

    return _loop_outcome(setup, run_loop(setup, cfg, objective, "optout rl", work_dir=work_dir, max_steps=max_steps))


def run_graddiff(setup: UnlearnSetup, cfg: GradDiffConfig, work_dir: Path | None, max_steps: int | None) -> MethodOutcome:
    """Ascent on the forget set, descent on the retain set."""
    result = run_loop(setup, cfg, lambda terms, _t, _t0: graddiff_objective(terms.forget_loss(), terms.retain_loss(), cfg.alpha),
                      "optout graddiff", work_dir=work_dir, max_steps=max_steps)
    return _loop_outcome(setup, result)


def run_ewc(setup: UnlearnSetup, cfg: EWCConfig, work_dir: Path | None, max_steps: int | None) -> MethodOutcome:
    """Ascent with the (N/2) δᵀ(F + λ)δ penalty of seed 002's Eq. 5."""
    fisher = training_fisher(setup, cfg.group, cfg.fisher_timesteps, cfg.seed)
    names = target_params(setup.task, cfg.group)
    diag = {k: fisher.diag[k] for k in names}
    lam = damping_value(diag, cfg.damping, cfg.damping_mode)
    n_train, n_forget = len(setup.training), len(setup.forget)

    def objective(terms: StepTerms, target: Params, theta0: Params) -> torch.Tensor:
        penalty = ewc_penalty({k: target[k] - theta0[k] for k in target}, diag, n_train, lam)
        return ewc_objective(terms.forget_loss(), n_forget, penalty, cfg.weight)

    result = run_loop(setup, cfg, objective, "optout ewc", work_dir=work_dir, max_steps=max_steps)
    return _loop_outcome(setup, result, {"n_train": n_train, "damping": lam})


def run_newton(setup: UnlearnSetup, cfg: NewtonConfig, work_dir: Path | None, max_steps: int | None) -> MethodOutcome:
    """Eq. 6 for the whole forget set: `attribution.unlearn`'s gradient and update, the gradient summed over item chunks."""
    u = cfg.unlearn
    task = setup.task
    fisher = training_fisher(setup, u.group, cfg.fisher_timesteps, u.seed)
    names = target_params(task, u.group)
    theta0, frozen = split_params(task, names)
    diag = {k: fisher.diag[k] for k in names}
    lam = damping_value(diag, u.damping, u.damping_mode)
    delta = {k: torch.zeros_like(v) for k, v in theta0.items()}
    with eval_mode(task.module):
        for _ in range(u.steps):
            g = set_gradient(task, apply_delta(theta0, delta), frozen, setup.forget, u.n_timesteps, u.seed, u.mask_unlearn,
                             cfg.item_chunk, u.timestep_chunk)
            delta = unlearn_step(delta, g, diag, u.lr, len(setup.training), lam)
    norm = float(sum(float(d.double().square().sum()) for d in delta.values()) ** 0.5)
    return MethodOutcome(_full(setup, apply_delta(theta0, delta)), True,
                         {"steps_run": u.steps, "delta_norm": norm, "n_train": len(setup.training), "damping": lam})


def run_salun(setup: UnlearnSetup, cfg: SalUnConfig, work_dir: Path | None, max_steps: int | None) -> MethodOutcome:
    """Random labels on the salient weights: the mask keeps the top `fraction` of |∇θ Σ_S L| at θ0."""
    task = setup.task
    theta0, frozen = split_params(task, target_params(task, cfg.group))
    with eval_mode(task.module):
        g = set_gradient(task, theta0, frozen, setup.forget, cfg.saliency_timesteps, cfg.seed, cfg.mask_forget, 8, cfg.saliency_timesteps)
    mask = saliency_mask(g, cfg.fraction)

    def objective(terms: StepTerms, _t: Params, _t0: Params) -> torch.Tensor:
        return terms.relabelled_loss(cfg.pairing) + cfg.retain_weight * terms.retain_loss()

    result = run_loop(setup, cfg, objective, "optout salun", grad_mask=mask, work_dir=work_dir, max_steps=max_steps)
    kept = sum(int(m.sum()) for m in mask.values())
    return _loop_outcome(setup, result, {"salient_weights": kept, "target_weights": sum(m.numel() for m in mask.values())})


def null_loss(setup: UnlearnSetup, n_timesteps: int, seed: int, mask: bool) -> float:
    """L_null: the forget set's loss under the recipe's untrained model, on the fixed plan the stopping test uses."""
    if setup.untrained is None:
        raise SongtraceError("the bounded method needs the model's untrained counterpart (its recipe) to measure the null loss")
    return fixed_plan_loss(as_task(setup.untrained()), None, setup.forget, n_timesteps, seed, mask)


def run_bounded(setup: UnlearnSetup, cfg: BoundedConfig, work_dir: Path | None, max_steps: int | None) -> MethodOutcome:
    """Mirrored ascent bounded by the null loss; stops as soon as the forget loss reaches it."""
    task = setup.task
    null = null_loss(setup, cfg.check_timesteps, cfg.seed, cfg.mask_forget)
    start = fixed_plan_loss(task, None, setup.forget, cfg.check_timesteps, cfg.seed, cfg.mask_forget)
    _, frozen = split_params(task, target_params(task, cfg.group))
    seen: dict[str, float] = {}

    def stop(step: int, target: Params) -> str | None:
        if step % cfg.check_every:
            return None
        seen["forget_loss"] = fixed_plan_loss(task, {**frozen, **target}, setup.forget, cfg.check_timesteps, cfg.seed, cfg.mask_forget)
        if seen["forget_loss"] >= null:
            return f"forget loss {seen['forget_loss']:.4f} reached the null loss {null:.4f} at step {step}"
        return None

    result = run_loop(setup, cfg, lambda terms, _t, _t0: bounded_objective(terms.forget_losses(), terms.retain_loss(), null, cfg.lam),
                      "optout bounded", stop=stop, work_dir=work_dir, max_steps=max_steps)
    return _loop_outcome(setup, result, {"null_loss": null, "forget_loss_start": start, "forget_loss_last_check": seen.get("forget_loss")})


def run_retrain(setup: UnlearnSetup, cfg: RetrainConfig, work_dir: Path | None, max_steps: int | None) -> MethodOutcome:
    """The model's recipe from scratch on its training data minus everything forgotten (`model.train.retrain_without`)."""
    from songtrace.model.registry import MODEL_FILE
    from songtrace.model.train import retrain_without

    if setup.model_dir is None or setup.latents_dir is None or work_dir is None:
        raise SongtraceError("retrain needs the model and latent cache directories (its recipe and data) and an output directory")
    metrics = retrain_without(setup.model_dir, setup.latents_dir, setup.exclude_ids, work_dir / "retrain")
    weights = load_safetensors(work_dir / "retrain" / MODEL_FILE)
    log = {k: metrics[k] for k in ("steps", "train_items", "valid_loss", "train_seconds") if k in metrics}
    return MethodOutcome(weights, True, log)


# --------------------------------------------------------------------------- the registry


@dataclasses.dataclass(frozen=True)
class Method:
    """One unlearning method: its config class, its run function and a line saying what it does."""

    name: str
    config: type[StageConfig]
    run: Callable[[UnlearnSetup, Any, Path | None, int | None], MethodOutcome]
    summary: str


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ga", GAConfig, run_ga, "gradient ascent on the forget set"),
        Method("rl", RLConfig, run_rl, "random labels: forget audio with other tracks' captions"),
        Method("graddiff", GradDiffConfig, run_graddiff, "ascent on the forget set, descent on the retain set"),
        Method("ewc", EWCConfig, run_ewc, "ascent with the (N/2) δᵀFδ Fisher penalty (seed 002 Eq. 5)"),
        Method("newton", NewtonConfig, run_newton, "closed-form Eq. 6 step for the whole set (seed 002)"),
        Method("salun", SalUnConfig, run_salun, "random labels on the most salient weights only"),
        Method("bounded", BoundedConfig, run_bounded, "MUCS-style ascent bounded by the null loss"),
        Method("retrain", RetrainConfig, run_retrain, "retrain the same recipe without the forget set (gold standard)"),
    )
}


def method(name: str) -> Method:
    """A method by name, with an error listing the valid ones."""
    if name not in METHODS:
        raise SongtraceError(f"unknown opt-out method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]


def method_config(name: str, settings: dict[str, Any] | None = None) -> StageConfig:
    """The config of method `name` from settings (defaults for the rest); unknown or bad settings name the field."""
    return method(name).config.from_dict(dict(settings or {}))
