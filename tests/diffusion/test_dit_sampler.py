"""The sampler: exact on Gaussian data (where the probability-flow ODE is known), deterministic, CFG."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from songtrace.data.batch import Conditioning
from songtrace.diffusion.sampler import dpmpp_2m, guided_v, sample, timesteps
from songtrace.diffusion.schedule import alpha_sigma
from songtrace.errors import SongtraceError
from songtrace.model.dit import tiny_dit


class GaussianDenoiser(nn.Module):
    """The exact v-prediction for data x0 ~ N(0, s² I); s = 0.5 with a caption, 2 without.

    Its probability-flow ODE maps the noise ε to x0 = s ε, so a sampler's output is known exactly.
    """

    def forward(self, x_t, t, cond, frame_mask=None):
        s2 = torch.where(cond.text_mask.any(-1), 0.25, 4.0)[:, None, None]
        a, s = alpha_sigma(t)
        a, s = a[:, None, None], s[:, None, None]
        return a * s * (1 - s2) * x_t / (a * a * s2 + s * s)


def cond(b: int, seed: int = 0) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    return Conditioning(torch.randn(b, 3, 384, generator=g), torch.ones(b, 3, dtype=torch.bool), torch.zeros(b), torch.full((b,), 1.5))


def test_samplers_solve_the_gaussian_flow():
    noise = torch.randn(32, 4, 16, generator=torch.Generator().manual_seed(0))
    model = GaussianDenoiser()
    err = {m: (sample(model, noise, cond(32), steps=50, cfg_scale=1.0, method=m) - 0.5 * noise).abs().max() for m in ("dpmpp-2m", "ddim")}
    assert err["dpmpp-2m"] < 0.02
    assert err["ddim"] < 0.1
    assert err["dpmpp-2m"] < err["ddim"]  # the second-order solver is the more accurate
    coarse = (sample(model, noise, cond(32), steps=10, cfg_scale=1.0) - 0.5 * noise).abs().max()
    assert coarse > err["dpmpp-2m"]


def test_sampling_is_deterministic_given_noise():
    model = tiny_dit()
    noise = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(1))
    a = sample(model, noise, cond(2), steps=6, cfg_scale=2.0)
    b = sample(model, noise.clone(), cond(2), steps=6, cfg_scale=2.0)
    assert torch.equal(a, b)
    assert not torch.allclose(a, sample(model, noise + 0.1, cond(2), steps=6, cfg_scale=2.0))
    assert timesteps(4) == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_cfg_scale_one_is_the_conditional_model():
    model = tiny_dit()
    noise = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(1))
    c = cond(2)
    plain = dpmpp_2m(lambda x, t: model(x, torch.full((2,), t), c), noise, timesteps(5))
    assert torch.allclose(sample(model, noise, c, steps=5, cfg_scale=1.0), plain, atol=1e-6)


def test_guidance_combines_conditional_and_unconditional_predictions():
    model = tiny_dit()
    x = torch.randn(3, 4, 16)
    c = cond(3)
    t = torch.full((3,), 0.4)
    v_cond = model(x, t, c)
    v_uncond = model(x, t, Conditioning(torch.zeros_like(c.text), torch.zeros_like(c.text_mask), c.seconds_start, c.seconds_total))
    assert torch.allclose(guided_v(model, x, 0.4, c, 3.0), v_uncond + 3.0 * (v_cond - v_uncond), atol=1e-5)
    # on Gaussian data, guidance beyond 1 pushes away from the unconditional (wide) distribution
    noise = torch.randn(64, 4, 16, generator=torch.Generator().manual_seed(2))
    std1 = sample(GaussianDenoiser(), noise, cond(64), steps=20, cfg_scale=1.0).std()
    std3 = sample(GaussianDenoiser(), noise, cond(64), steps=20, cfg_scale=3.0).std()
    assert std3 < std1


def test_unknown_sampler_lists_valid_ones():
    with pytest.raises(SongtraceError, match="dpmpp-2m"):
        sample(tiny_dit(), torch.randn(1, 4, 16), cond(1), steps=2, method="euler-a")
