"""Unlearning the query ẑ (seed 002, Eq. 6), on the target layers only.

Eq. 6 is the fixed point θ = θ0 + (1/N) F⁻¹ ∇L(ẑ, θ) of the objective
−L(ẑ, θ) + (N/2)(θ − θ0)ᵀ F (θ − θ0) (Eq. 5). We iterate it as preconditioned gradient ascent
on the query loss, with learning rate η and damping λ:

    θ_{k+1} = θ_k + η · (1/N) · (F + λ)⁻¹ ∇θ L(ẑ, θ_k),     k = 0 .. steps−1,

the gradient being re-evaluated at θ_k each step (steps = 1 is θ' = θ0 + η (1/N) F⁻¹ ∇L(ẑ, θ0)).
`unlearn_iterates` is the one implementation of this loop: `unlearn` (attribution runs, the unlearning
baseline) takes its last iterate, and the self-influence grid walks it step by step, starting from a
first gradient computed once over a union of groups (`first_query_gradient`).
L(ẑ, θ) = (1/T) Σ_t L_t(ẑ, θ) over T timesteps (the paper uses T = 2048); the same timesteps and
noise (seeded by the query id) are used at every step, so each step sees the same objective.

On a GPU (`device="cuda"`) the query, its plan, θ0 and F live on the device for the whole iteration;
`precision="bf16"` runs the query gradient's forward and backward under autocast (the gradient and
the update stay float32 / float64).

Damping: "absolute" adds λ = damping to F; "relative" adds λ = damping · mean(F) over the target
parameters, which keeps the setting meaningful across models whose Fisher scales differ.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.func import grad

from songtrace.artifacts import StageConfig, check_choice, check_positive
from songtrace.attribution.fisher import Fisher, check_fisher, check_fits, mean_fisher
from songtrace.attribution.groups import split_params, target_params
from songtrace.data.batch import Batch
from songtrace.diffusion.loss import FrameMask, NoisePlan, make_plan
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, as_task, autocast, check_device, check_precision, eval_mode, on_device, runtime_device

Params = dict[str, torch.Tensor]

# Mask name -> (M_U: mask padding in the unlearning loss, M_L: mask padding in the attribution loss).
MASKS: dict[str, tuple[bool, bool]] = {
    "none": (False, False),
    "both": (True, True),
    "M_L": (False, True),
    "mixed": (True, False),  # the paper's best: M_U only
}

DAMPING_MODES: dict[str, Callable[[Mapping[str, torch.Tensor], float], float]] = {
    "absolute": lambda diag, damping: damping,
    "relative": lambda diag, damping: damping * mean_fisher(diag),
}

MAX_STEPS = 4


def mask_setting(name: str) -> tuple[bool, bool]:
    """(mask_unlearn M_U, mask_loss M_L) of a mask name, with a clear error listing the names."""
    check_choice("mask", name, MASKS)
    return MASKS[name]


@dataclasses.dataclass(frozen=True)
class UnlearnConfig(StageConfig):
    """The unlearning step's settings (seed 002 section 3.2 grid: lr, steps, target layers, masks).

    lr: η (η = 1 is Eq. 6 as written; the scale is model dependent: the paper's best, 1e-6, also ranks
    unlearned training tracks first on the demo DiT, where 1e-2 wrecks the model; choose it by self-influence);
    steps: 1..4 updates with the gradient re-evaluated; group: target layers; damping and
    damping_mode: λ added to F (see module doc); n_timesteps: T of the query loss (paper: 2048);
    seed: seeds the query's timesteps and noise; mask: none | both | M_L | mixed;
    timestep_chunk: timesteps per forward/backward (bounds memory, not the result);
    device: "cpu", "cuda" (the rank's GPU) or "meta"; precision: "fp32" or "bf16" (autocast of the query gradient).
    """

    lr: float = 1e-6
    steps: int = 1
    group: str = "all"
    damping: float = 1e-3
    damping_mode: str = "relative"
    n_timesteps: int = 256
    seed: int = 0
    mask: str = "mixed"
    timestep_chunk: int = 64
    device: str = "cpu"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_positive("lr", self.lr)
        if not 1 <= self.steps <= MAX_STEPS:
            raise SongtraceError(f"steps must be between 1 and {MAX_STEPS}, got {self.steps}")
        check_positive("damping", self.damping, allow_zero=True)
        check_choice("damping mode", self.damping_mode, DAMPING_MODES)
        check_positive("n_timesteps", self.n_timesteps)
        check_positive("timestep_chunk", self.timestep_chunk)
        check_choice("mask", self.mask, MASKS)
        check_device(self.device)
        check_precision(self.precision)

    @property
    def mask_unlearn(self) -> bool:
        """M_U: padded frames excluded from the unlearning loss."""
        return MASKS[self.mask][0]

    @property
    def mask_loss(self) -> bool:
        """M_L: padded frames excluded from the attribution loss."""
        return MASKS[self.mask][1]


# --------------------------------------------------------------------------- pure math


def damping_value(diag: Mapping[str, torch.Tensor], damping: float, mode: str) -> float:
    """The absolute λ added to F, from a damping setting and its mode."""
    check_choice("damping mode", mode, DAMPING_MODES)
    return float(DAMPING_MODES[mode](diag, damping))


def unlearn_step(
    theta: Mapping[str, torch.Tensor],
    grad_query: Mapping[str, torch.Tensor],
    fisher: Mapping[str, torch.Tensor],
    lr: float,
    n_train: int,
    damping: float,
) -> Params:
    """One step of Eq. 6: θ + η · (1/N) · (F + λ)⁻¹ ∇L(ẑ, θ), for the parameters in `grad_query`.

    Works equally on θ or on the delta θ − θ0 (the update is additive). Computed in float64, returned
    in θ's dtype.
    """
    out = {}
    for k, g in grad_query.items():
        step = lr / n_train * g.to(torch.float64) / (fisher[k].to(torch.float64) + damping)
        out[k] = (theta[k].to(torch.float64) + step).to(theta[k].dtype)
    return out


def apply_delta(theta0: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> Params:
    """θ0 + δ for the parameters δ names (the others are left to the module)."""
    return {k: theta0[k] + d for k, d in delta.items()}


# --------------------------------------------------------------------------- gradients


def query_gradient(
    model: nn.Module | ModelTask,
    params_target: Mapping[str, torch.Tensor],
    params_frozen: Mapping[str, torch.Tensor],
    query: Batch,
    plan: NoisePlan,
    mask: FrameMask,
    chunk: int = 64,
    precision: str = "fp32",
) -> Params:
    """∇θ of the T-averaged query loss (1/T) Σ_t L_t(ẑ, θ) over the target parameters.

    Accumulated over timestep chunks (float64, on the parameters' device), so memory is bounded by
    `chunk` timesteps. For a batch of several queries, the gradient of the sum of their T-averaged
    losses. `mask`: M_U (True: real frames only), or a `[B, L]` frame mask the loss is restricted to.
    `precision="bf16"` runs each chunk under autocast.
    """
    task = as_task(model)
    n_t = plan.t.shape[1]
    frozen = dict(params_frozen)

    def chunk_loss(target: Params, sub: NoisePlan) -> torch.Tensor:
        return task.loss({**frozen, **target}, query, sub, mask=mask).sum() / n_t

    g_fn = grad(chunk_loss)
    total = {k: torch.zeros(v.shape, dtype=torch.float64, device=v.device) for k, v in params_target.items()}
    for start in range(0, n_t, chunk):
        with autocast(plan.t.device, precision):
            g = g_fn(dict(params_target), plan.select_timesteps(slice(start, min(n_t, start + chunk))))
        total = {k: total[k] + g[k].to(torch.float64) for k in total}
    return {k: v.to(params_target[k].dtype) for k, v in total.items()}


def query_plan(query: Batch, config: UnlearnConfig, device: torch.device | str | None = None) -> NoisePlan:
    """The query's T timesteps and noise, seeded by (seed, query id), drawn on `device`."""
    shape = (int(query.latents.shape[1]), int(query.latents.shape[2]))
    return make_plan(query.ids, config.n_timesteps, shape, config.seed, device=device)


def _fisher_and_n(fisher: Fisher | Mapping[str, torch.Tensor], n_train: int | None) -> tuple[dict[str, torch.Tensor], int]:
    """(F per parameter, N): from a `Fisher`, or from a dict of F plus `n_train`."""
    diag = fisher.diag if isinstance(fisher, Fisher) else dict(fisher)
    n = n_train if n_train is not None else (fisher.n_items if isinstance(fisher, Fisher) else None)
    if not n:
        raise SongtraceError("unlearn needs N, the number of training items the Fisher averages over (pass n_train)")
    return diag, int(n)


def first_query_gradient(
    model: nn.Module | ModelTask,
    query: Batch,
    config: UnlearnConfig,
    names: Sequence[str] | None = None,
) -> Params:
    """∇θ L(ẑ, θ0) over the parameters `names` (default: `config.group`'s), exactly as `unlearn_iterates` computes its first step.

    Pass it back as `unlearn_iterates(..., grad0=...)` to reuse it: for a union of several groups it serves
    every group (the self-influence grid computes it once per target and M_U).
    """
    task = as_task(model)
    device = runtime_device(config.device)
    with on_device(task.module, device), eval_mode(task.module):
        theta0, frozen = split_params(task, list(names) if names is not None else target_params(task, config.group))
        return query_gradient(task, theta0, frozen, query.to(device), query_plan(query, config, device), config.mask_unlearn,
                              config.timestep_chunk, config.precision)


def unlearn_iterates(
    model: nn.Module | ModelTask,
    fisher: Fisher | Mapping[str, torch.Tensor],
    query: Batch,
    config: UnlearnConfig,
    n_train: int | None = None,
    grad0: Mapping[str, torch.Tensor] | None = None,
    frames: torch.Tensor | None = None,
) -> Iterator[Params]:
    """The Eq. 6 iteration: δ_1, ..., δ_steps (δ_k = θ_k − θ0 on the target parameters), the one implementation of it.

    Lazy: the gradient at θ_k is evaluated only when δ_{k+1} is asked for, so a caller that needs the first
    s steps of a longer trajectory pays for s. `grad0` is a precomputed ∇θ L(ẑ, θ0) (`first_query_gradient`)
    over the target parameters or any superset of them. Inputs are checked before the first step.
    `frames` (`[B, L]` bool) restricts the unlearning loss to those frames, a window of the query
    (intersected with the real frames under M_U). The model is not modified.
    """
    diag, n = _fisher_and_n(fisher, n_train)
    task = as_task(model)
    names = target_params(task, config.group)
    theta0, _ = split_params(task, names)  # for the checks; the iteration splits again on the device
    check_fits(diag, theta0)
    f_target = {k: diag[k] for k in names}
    lam = damping_value(f_target, config.damping, config.damping_mode)
    check_fisher(f_target, damping=lam)
    if grad0 is not None:
        missing = [k for k in names if k not in grad0]
        if missing:
            raise SongtraceError(f"the precomputed query gradient lacks target parameters of group {config.group!r}: {missing[:3]}")
        for k in names:
            if tuple(grad0[k].shape) != tuple(theta0[k].shape):
                raise SongtraceError(f"the precomputed query gradient of {k} has shape {tuple(grad0[k].shape)}, "
                                     f"the parameter {tuple(theta0[k].shape)}")
    device = runtime_device(config.device)

    def steps() -> Iterator[Params]:
        # on the device for the whole iteration (a caller walking it step by step keeps the model there meanwhile)
        with on_device(task.module, device), eval_mode(task.module):
            theta, rest = split_params(task, names)
            f_dev = {k: v.to(device) for k, v in f_target.items()}
            q, plan = query.to(device), query_plan(query, config, device)
            window = None if frames is None else frames.to(device=device, dtype=torch.bool)
            mask = config.mask_unlearn if window is None else (window & q.frame_mask() if config.mask_unlearn else window)
            delta = {k: torch.zeros_like(v) for k, v in theta.items()}
            for k in range(config.steps):
                if k == 0 and grad0 is not None:
                    g = {name: grad0[name].to(device) for name in names}
                else:
                    g = query_gradient(task, apply_delta(theta, delta), rest, q, plan, mask, config.timestep_chunk, config.precision)
                delta = unlearn_step(delta, g, f_dev, config.lr, n, lam)
                yield delta

    return steps()


def unlearn(
    model: nn.Module | ModelTask,
    fisher: Fisher | Mapping[str, torch.Tensor],
    query: Batch,
    config: UnlearnConfig,
    n_train: int | None = None,
    frames: torch.Tensor | None = None,
) -> Params:
    """Unlearn the query from θ0 (Eq. 6, `config.steps` times); returns only δ = θ' − θ0 on the target parameters.

    `fisher` is a `Fisher` (its N is used) or a dict of F per parameter (then pass `n_train`); `frames`
    restricts the loss to a window (see `unlearn_iterates`). The model is not modified. The last of `unlearn_iterates`.
    """
    return collections.deque(unlearn_iterates(model, fisher, query, config, n_train, frames=frames), maxlen=1)[0]


def delta_norm(delta: Mapping[str, torch.Tensor]) -> float:
    """‖δ‖₂ over all target parameters (a quick size check of an unlearning step)."""
    return float(sum(float(d.double().square().sum()) for d in delta.values()) ** 0.5)
