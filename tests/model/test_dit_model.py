"""The DiT: shapes, layer groups, masks, conditioning, determinism and per-sample gradients under vmap."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, vmap

from fixtures_model import synthetic_latent_set
from songtrace.artifacts import hash_tensors
from songtrace.attribution import per_sample_grads, split_params, target_params
from songtrace.data.batch import Batch, Conditioning
from songtrace.diffusion.loss import make_plan
from songtrace.errors import SongtraceError
from songtrace.model.dit import DiT, DiTConfig, DiTTask, tiny_dit
from songtrace.model.task import GROUPS, task_for

C, L, S = 4, 16, 5


def inputs(b: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(b, S, dtype=torch.bool)
    text_mask[0, 3:] = False
    return {
        "x_t": torch.randn(b, C, L, generator=g),
        "t": torch.rand(b, generator=g),
        "text": torch.randn(b, S, 384, generator=g),
        "text_mask": text_mask,
        "seconds_start": torch.zeros(b),
        "seconds_total": torch.rand(b, generator=g) * 4,
    }


def run(model, x: dict[str, torch.Tensor], frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The model's forward on the flat inputs of `inputs()` (conditioning gathered into one value)."""
    cond = Conditioning(x["text"], x["text_mask"], x["seconds_start"], x["seconds_total"])
    return model(x["x_t"], x["t"], cond, frame_mask)


def frame_mask(n_frames: list[int]) -> torch.Tensor:
    return torch.arange(L)[None, :] < torch.tensor(n_frames)[:, None]


def test_forward_shape_and_interface():
    model = tiny_dit(C, L)
    task = task_for(model)
    assert isinstance(task, DiTTask) and task.latent_shape == (C, L)
    v = run(model, inputs())
    assert v.shape == (3, C, L) and torch.isfinite(v).all()
    assert 5_000 < model.num_params() < 30_000


def test_layer_groups_cover_the_right_names():
    model = tiny_dit(C, L)
    groups = task_for(model).layer_groups()
    names = [n for n, _ in model.named_parameters()]
    assert tuple(groups) == GROUPS
    assert groups["all"] == [n for n in names if n.startswith("layers.")]
    assert len(groups["all"]) < len(names)  # embeddings and projections are outside the blocks
    assert groups["to_kv"] == [f"layers.{i}.cross_attn.to_kv.weight" for i in range(2)]
    assert set(groups["to_kv"]) < set(groups["cross_attn"]) < set(groups["all"])
    assert set(groups["self_attn"]) < set(groups["all"])
    assert not set(groups["self_attn"]) & set(groups["cross_attn"])
    for i in range(2):
        assert f"layers.{i}.self_attn.to_qkv.weight" in groups["self_attn"]
        assert f"layers.{i}.self_attn.to_out.weight" in groups["self_attn"]
        assert {f"layers.{i}.cross_attn.to_q.weight", f"layers.{i}.cross_attn.to_out.weight"} <= set(groups["cross_attn"])
        assert f"layers.{i}.ff.ff.0.proj.weight" in groups["all"]


def test_frame_mask_makes_padding_content_irrelevant():
    model = tiny_dit(C, L)
    x = inputs()
    fm = frame_mask([10, 16, 7])
    changed = dict(x, x_t=torch.where(fm[:, None, :], x["x_t"], 5.0 * torch.randn(3, C, L)))
    v1, v2 = run(model, x, fm), run(model, changed, fm)
    real = fm[:, None, :].expand_as(v1)
    assert torch.equal(v1[real], v2[real])
    # without the mask, padding content leaks into the real frames through self-attention
    u1, u2 = run(model, x), run(model, changed)
    assert not torch.allclose(u1[real], u2[real], atol=1e-4)


def test_masked_loss_ignores_padding_content():
    model = tiny_dit(C, L)
    x = inputs()
    n_frames = torch.tensor([10, 16, 7])
    batch = Batch(["a", "b", "c"], x["x_t"], n_frames, x["text"], x["text_mask"], x["seconds_start"], x["seconds_total"])
    pad = ~batch.frame_mask()[:, None, :]
    other = Batch(batch.ids, torch.where(pad, torch.randn(3, C, L), batch.latents), *[getattr(batch, k) for k in
                  ("n_frames", "text", "text_mask", "seconds_start", "seconds_total")])
    plan = make_plan(batch.ids, 3, (C, L), seed=0)
    task = task_for(model)
    masked = task.loss(None, batch, plan, mask=True), task.loss(None, other, plan, mask=True)
    assert torch.equal(*masked)
    unmasked = task.loss(None, batch, plan), task.loss(None, other, plan)
    assert not torch.allclose(*unmasked)


def test_text_mask_and_timing_condition_the_output():
    model = tiny_dit(C, L)
    x = inputs()
    masked_out = dict(x, text=torch.where(x["text_mask"][..., None], x["text"], torch.randn(3, S, 384)))
    assert torch.equal(run(model, x), run(model, masked_out))
    assert not torch.allclose(run(model, x), run(model, dict(x, text=torch.randn(3, S, 384))), atol=1e-5)
    assert not torch.allclose(run(model, x), run(model, dict(x, seconds_total=x["seconds_total"] + 1.0)), atol=1e-5)
    # the unconditional path (no caption tokens at all) is well defined
    null = dict(x, text_mask=torch.zeros(3, S, dtype=torch.bool))
    assert torch.isfinite(run(model, null)).all()
    assert torch.equal(run(model, null), run(model, dict(null, text=torch.randn(3, S, 384))))


def test_items_are_independent_in_a_batch():
    model = tiny_dit(C, L)
    x = inputs()
    v = run(model, x)
    v0 = run(model, {k: t[:1] for k, t in x.items()})
    assert torch.allclose(v[:1], v0, atol=1e-6)


def test_init_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = tiny_dit(seed=0), tiny_dit(seed=0), tiny_dit(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert hash_tensors(task_for(a).params()) == hash_tensors(task_for(b).params()) != hash_tensors(task_for(c).params())
    assert task_for(a).identity() == task_for(b).identity() != task_for(c).identity()


def test_functional_call_with_params_matches_forward():
    model = tiny_dit(C, L)
    x = inputs()
    task = task_for(model)
    params = {k: v * 1.01 for k, v in task.params().items() if k.startswith("layers.0.")}
    v = task.predict_v(params, x["x_t"], x["t"], Conditioning(x["text"], x["text_mask"], x["seconds_start"], x["seconds_total"]))
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k in params:
                p.mul_(1.01)
    assert torch.allclose(v, run(model, x), atol=1e-6)


@pytest.mark.parametrize("masked", [False, True])
def test_vmap_per_sample_grads_equal_a_loop(masked):
    model = tiny_dit(C, L)
    params = task_for(model).params()
    x = inputs(b=4)
    fm = frame_mask([10, 16, 7, 12])
    target = torch.randn(4, C, L, generator=torch.Generator().manual_seed(3))

    def loss(p, x_t, t, text, text_mask, s0, s1, fm_i, y):
        cond = Conditioning(text[None], text_mask[None], s0[None], s1[None])
        v = functional_call(model, p, (x_t[None], t[None], cond, fm_i[None] if masked else None))
        return ((v - y[None]) ** 2).mean()

    args = (*x.values(), fm, target)
    batched = vmap(grad(loss), in_dims=(None, *([0] * len(args))))(params, *args)
    for i in range(4):
        single = grad(loss)(params, *[a[i] for a in args])
        for k in params:
            assert torch.allclose(batched[k][i], single[k], atol=1e-6, rtol=1e-5), k
    assert all(batched[k].abs().sum() > 0 for k in task_for(model).layer_groups()["all"])


def test_config_round_trips_and_validates():
    cfg = DiTConfig(latent_channels=8, latent_length=64, width=32, heads=2)
    assert DiTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(SongtraceError, match="heads"):
        DiTConfig(width=30, heads=4)
    with pytest.raises(SongtraceError, match="depth"):
        DiTConfig(depth=0)
    assert DiT(cfg).latent_shape == (8, 64)


def test_fused_attention_equals_the_written_out_attention_and_its_per_sample_gradients():
    math_model = tiny_dit(attention="math")
    fused = tiny_dit(attention="sdpa")
    fused.load_state_dict(math_model.state_dict())
    data = synthetic_latent_set()
    batch = data.batch([0, 1, 2])
    plan = make_plan(batch.ids, 2, data.latent_shape, 0)
    for mask in (False, True):
        a = task_for(math_model).loss(None, batch, plan, mask=mask)
        b = task_for(fused).loss(None, batch, plan, mask=mask)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    target, frozen = split_params(math_model, target_params(math_model, "all"))
    ga = per_sample_grads(math_model, target, frozen, batch.select([0]), plan.select_items([0]), True)
    gb = per_sample_grads(fused, target, frozen, batch.select([0]), plan.select_items([0]), True)
    for k in target:
        torch.testing.assert_close(ga[k], gb[k], rtol=1e-4, atol=1e-6)


def test_identity_is_kept_until_a_weight_changes_in_place():
    task = task_for(tiny_dit(seed=0))
    first = task.identity()
    assert task.identity() == first == task_for(tiny_dit(seed=0)).identity()
    with torch.no_grad():
        next(task.module.parameters()).add_(1e-3)  # an in-place update bumps the tensor's version counter
    changed = task.identity()
    assert changed != first and changed == hash_tensors(dict(task.module.state_dict()))
    task.module.load_state_dict(tiny_dit(seed=0).state_dict())  # copy_ back: same bytes, new versions
    assert task.identity() == first
