"""The diffusers StableAudioDiTModel adapter on a tiny random config (skipped without diffusers)."""

from __future__ import annotations

import pytest
import torch

from songtrace.data.batch import Conditioning
from songtrace.diffusion.sampler import sample
from songtrace.model.registry import build_model
from songtrace.model.task import GROUPS, task_for

pytest.importorskip("diffusers")

TRANSFORMER = {"sample_size": 16, "in_channels": 4, "num_layers": 2, "attention_head_dim": 8, "num_attention_heads": 2,
               "num_key_value_attention_heads": 1, "out_channels": 4, "cross_attention_dim": 16, "time_proj_dim": 16,
               "global_states_input_dim": 32, "cross_attention_input_dim": 16}
PROJECTION = {"text_encoder_dim": 384, "conditioning_dim": 16, "min_value": 0, "max_value": 64}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model({"arch": "diffusers-stable-audio", "diffusers": {"transformer": TRANSFORMER, "projection": PROJECTION}}).eval()


def args(b: int = 3):
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(b, 5, dtype=torch.bool)
    mask[0, 3:] = False
    x, t, text = torch.randn(b, 4, 16, generator=g), torch.rand(b, generator=g), torch.randn(b, 5, 384, generator=g)
    return x, t, Conditioning(text, mask, torch.zeros(b), torch.full((b,), 3.0))


def test_forward_shape_and_interface(model):
    from songtrace.model.adapters.diffusers_dit import DiffusersStableAudioTask

    task = task_for(model)
    assert isinstance(task, DiffusersStableAudioTask) and task.latent_shape == (4, 16)
    assert model(*args()).shape == (3, 4, 16)
    cond = args(2)[2]
    assert sample(model, torch.randn(2, 4, 16), cond, steps=3, cfg_scale=2.0).shape == (2, 4, 16)


def test_layer_groups_use_diffusers_names(model):
    groups = task_for(model).layer_groups()
    assert tuple(groups) == GROUPS
    assert groups["to_kv"] == [f"transformer.transformer_blocks.{i}.attn2.{p}.weight" for i in range(2) for p in ("to_k", "to_v")]
    assert set(groups["to_kv"]) < set(groups["cross_attn"]) < set(groups["all"])
    assert all(".attn1." in n for n in groups["self_attn"]) and len(groups["self_attn"]) == 8
    names = [n for n, _ in model.named_parameters()]
    assert groups["all"] == [n for n in names if n.startswith("transformer.transformer_blocks.")]


def test_frame_mask_hides_padding(model):
    x, *rest = args()
    fm = torch.arange(16)[None] < torch.tensor([10, 16, 7])[:, None]
    changed = torch.where(fm[:, None], x, torch.randn(3, 4, 16))
    v1, v2 = model(x, *rest, fm), model(changed, *rest, fm)
    real = fm[:, None].expand_as(v1)
    assert torch.allclose(v1[real], v2[real], atol=1e-6)
    assert not torch.allclose(model(x, *rest)[real], model(changed, *rest)[real], atol=1e-4)
