"""Sampling a v-prediction model over the cosine schedule, with classifier-free guidance.

Samplers are plain functions `(v_fn, x, ts) -> x0` in the style of stable-audio-tools / k-diffusion:
no scheduler state. The model enters as `predict(x_t, t, cond, frame_mask) -> v` (`ModelTask.predictor`).
`ts` runs from t = 1 (pure noise) to t = 0. DPM-Solver++(2M) (Lu et al. 2022) works on the data
prediction x0 = α x_t − σ v and the half log-SNR λ = log(α/σ); DDIM is
its first-order special case. Given the noise, sampling is deterministic.

Guidance: v = v_uncond + s · (v_cond − v_uncond), where the unconditional branch drops the
caption (`Conditioning.null`) and keeps the timing; s = 1 is the plain
conditional model (one forward pass per step).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

from songtrace.artifacts import check_choice, check_finite, check_range
from songtrace.data.batch import Conditioning
from songtrace.diffusion.loss import Predict
from songtrace.diffusion.schedule import alpha_sigma

DEFAULT_STEPS = 50
DEFAULT_CFG_SCALE = 3.0

VFn = Callable[[torch.Tensor, float], torch.Tensor]


def timesteps(steps: int) -> list[float]:
    """`steps + 1` times evenly spaced from 1 to 0."""
    return [1.0 - i / steps for i in range(steps + 1)]


def _alpha_sigma(t: float) -> tuple[float, float]:
    a, s = alpha_sigma(torch.tensor(t, dtype=torch.float64))
    return float(a), float(s)


def ddim(v_fn: VFn, x: torch.Tensor, ts: list[float]) -> torch.Tensor:
    """Deterministic DDIM: x_next = α_next x0 + σ_next ε, with (x0, ε) from the v-prediction."""
    for t, t_next in itertools.pairwise(ts):
        a, s = _alpha_sigma(t)
        v = v_fn(x, t)
        x0, eps = a * x - s * v, s * x + a * v
        a_n, s_n = _alpha_sigma(t_next)
        x = a_n * x0 + s_n * eps
    return x


def dpmpp_2m(v_fn: VFn, x: torch.Tensor, ts: list[float]) -> torch.Tensor:
    """DPM-Solver++(2M) in data prediction; the first and last steps are first order."""
    x0_prev: torch.Tensor | None = None
    h_prev: float | None = None
    for t, t_next in itertools.pairwise(ts):
        a, s = _alpha_sigma(t)
        x0 = a * x - s * v_fn(x, t)
        a_n, s_n = _alpha_sigma(t_next)
        if s_n == 0.0:  # t = 0: the answer is the data prediction
            return x0
        h = math.log(a_n / s_n) - math.log(a / s)
        d = x0
        if x0_prev is not None and h_prev is not None:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = (s_n / s) * x + a_n * (-math.expm1(-h)) * d
        x0_prev, h_prev = x0, h
    return x


SAMPLERS: dict[str, Callable[[VFn, torch.Tensor, list[float]], torch.Tensor]] = {"dpmpp-2m": dpmpp_2m, "ddim": ddim}


def guided_v(
    predict: Predict,
    x: torch.Tensor,
    t: float,
    cond: Conditioning,
    cfg_scale: float,
    frame_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The model's v at time t with classifier-free guidance (cond and uncond in one batched call)."""
    b = x.shape[0]
    t_vec = torch.full((b,), float(t), dtype=x.dtype)
    if cfg_scale == 1.0:
        return predict(x, t_vec, cond, frame_mask)

    def two(a: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, a])

    v = predict(two(x), two(t_vec), Conditioning.cat([cond, cond.null()]), two(frame_mask) if frame_mask is not None else None)
    v_cond, v_uncond = v[:b], v[b:]
    return v_uncond + cfg_scale * (v_cond - v_uncond)


@torch.no_grad()
def sample(
    predict: Predict,
    noise: torch.Tensor,
    cond: Conditioning,
    steps: int = DEFAULT_STEPS,
    cfg_scale: float = DEFAULT_CFG_SCALE,
    frame_mask: torch.Tensor | None = None,
    method: str = "dpmpp-2m",
) -> torch.Tensor:
    """Turn noise `[B, C, L]` into latents `[B, C, L]` by integrating the model's probability-flow ODE from t=1 to 0.

    `predict` is `ModelTask.predictor(params)` (or any function with its signature).
    """
    check_choice("sampler", method, SAMPLERS)
    check_range("sampler steps", steps, 1)
    check_finite("cfg_scale", cfg_scale)
    return SAMPLERS[method](lambda x, t: guided_v(predict, x, t, cond, cfg_scale, frame_mask), noise, timesteps(steps))
