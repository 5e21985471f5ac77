"""`songtrace model import --diffusers`: a saved StableAudioPipeline becomes a model directory whose loss is the pipeline's.

The reference loss is what `StableAudioPipeline` + `CosineDPMSolverMultistepScheduler` imply for
training: noise in the scheduler's own EDM terms (`x = x0 + σ ε`), the model fed
`scheduler.precondition_inputs(x, σ)` at `scheduler.precondition_noise(σ)` with the pipeline's own
`encode_prompt` / `encode_duration` conditioning, and the v target being the output that
`scheduler.precondition_outputs` turns into x0 exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

from fixtures_real import CAPTIONS
from songtrace.artifacts import artifact_hash
from songtrace.data.batch import Batch
from songtrace.diffusion.loss import make_plan
from songtrace.errors import SongtraceError
from songtrace.model.importer import import_model
from songtrace.model.registry import load_task

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    from diffusers import StableAudioPipeline

    return StableAudioPipeline.from_pretrained(tiny_pipeline_dir).to("cpu")


@pytest.fixture(scope="module")
def imported(tiny_pipeline_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "sa"
    summary = import_model("diffusers", tiny_pipeline_dir, out)
    return out, summary


def t5_tokens(pipe, captions):
    """What songtrace caches per caption: T5 last_hidden_state and the tokenizer mask, padded to model_max_length."""
    enc = pipe.tokenizer(captions, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = pipe.text_encoder(enc.input_ids, attention_mask=enc.attention_mask)[0]
    return hidden, enc.attention_mask.bool()


def a_batch(pipe, n_frames=(16, 11, 7, 16)):
    g = torch.Generator().manual_seed(1)
    b = len(CAPTIONS)
    text, mask = t5_tokens(pipe, CAPTIONS)
    latents = torch.randn(b, 4, 16, generator=g)
    return Batch(ids=[f"x{i}" for i in range(b)], latents=latents, n_frames=torch.tensor(n_frames), text=text, text_mask=mask,
                 seconds_start=torch.tensor([0.0, 1.0, 0.0, 2.0]), seconds_total=torch.tensor([8.0, 5.0, 3.0, 30.0]))


def pipeline_loss(pipe, batch, plan, mask=False):
    """L_t per (item, timestep), computed the way the pipeline and its scheduler define model input, timestep and output."""
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    sch = pipe.scheduler
    with torch.no_grad():
        text = pipe.encode_prompt(list(CAPTIONS), "cpu", False)  # the pipeline's own tokenizer, T5 and projection
    out = torch.zeros(plan.t.shape)
    for i in range(len(batch)):
        with torch.no_grad():
            start, end = pipe.encode_duration(float(batch.seconds_start[i]), float(batch.seconds_total[i]), "cpu", False, 1)
        context = torch.cat([text[i : i + 1], start, end], dim=1)
        global_states = torch.cat([start, end], dim=2)
        rotary = get_1d_rotary_pos_embed(pipe.rotary_embed_dim, 16 + 1, use_real=True, repeat_interleave_real=False)
        for j, t in enumerate(plan.t[i]):
            sigma = torch.tan(t * math.pi / 2)
            x0, eps = batch.latents[i : i + 1], plan.noise[i, j : j + 1]
            x = x0 + sigma * eps
            with torch.no_grad():
                v = pipe.transformer(sch.precondition_inputs(x, sigma), sch.precondition_noise(sigma).reshape(1),
                                     encoder_hidden_states=context, global_hidden_states=global_states, rotary_embedding=rotary,
                                     return_dict=False)[0]
            zero, one = sch.precondition_outputs(x, torch.zeros_like(x), sigma), sch.precondition_outputs(x, torch.ones_like(x), sigma)
            target = (x0 - zero) / (one - zero)  # the v for which the scheduler's x0 estimate is exact
            sq = (v - target) ** 2
            if mask:
                real = (torch.arange(16) < batch.n_frames[i]).float()
                out[i, j] = (sq * real).sum() / (real.sum() * sq.shape[1])
            else:
                out[i, j] = sq.mean()
    return out


def test_import_writes_a_model_directory_every_command_loads(imported, pipe):
    out, summary = imported
    task = load_task(out)
    assert task.kind == "diffusers-stable-audio" and task.latent_shape == (4, 16)
    assert task.identity() == summary["identity"] == artifact_hash(out)
    own = dict(task.module.transformer.state_dict())
    for name, tensor in pipe.transformer.state_dict().items():
        assert torch.equal(own[name], tensor), name
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()


def test_importing_again_skips_and_other_weights_are_refused(imported, tiny_pipeline_dir, tmp_path):
    out, _ = imported
    assert import_model("diffusers", tiny_pipeline_dir, out)["skipped"]
    from fixtures_real import write_tiny_pipeline

    other = write_tiny_pipeline(tmp_path / "other", seed=5)
    with pytest.raises(SongtraceError, match="--overwrite"):
        import_model("diffusers", other, out)


@pytest.mark.parametrize("mask", [False, True])
def test_loss_equals_the_pipelines_own_convention(imported, pipe, mask):
    task = load_task(imported[0])
    batch = a_batch(pipe)
    plan = make_plan(batch.ids, 3, task.latent_shape, seed=0)
    with torch.no_grad():
        ours = task.loss(None, batch, plan, mask=mask)
    ref = pipeline_loss(pipe, batch, plan, mask=mask)
    assert ours.shape == (4, 3)
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-5), (ours - ref).abs().max()


def test_text_padding_is_zeroed_not_masked_as_the_pipeline_does(imported, pipe):
    """The pipeline passes no encoder_attention_mask; passing one would change the prediction (so the choice matters)."""
    task = load_task(imported[0])
    module = task.module
    batch = a_batch(pipe)
    x, t = batch.latents, torch.full((4,), 0.4)
    context, global_states = module.context(batch.cond)
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    rotary = get_1d_rotary_pos_embed(8 // 2, 17, use_real=True, repeat_interleave_real=False)
    key_mask = torch.cat([batch.text_mask, torch.ones(4, 2, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        masked = module.transformer(x, t, encoder_hidden_states=context, global_hidden_states=global_states, rotary_embedding=rotary,
                                    encoder_attention_mask=key_mask, return_dict=False)[0]
        ours = module(x, t, batch.cond)
    assert not batch.text_mask.all()
    assert (ours - masked).abs().max() > 1e-4


def test_frame_mask_masks_the_loss_only_unless_asked(imported, pipe):
    from songtrace.model.adapters.diffusers_dit import DiffusersStableAudioDiT

    module = load_task(imported[0]).module
    batch = a_batch(pipe)
    x, t = batch.latents, torch.full((4,), 0.5)
    fm = batch.frame_mask()
    changed = torch.where(fm[:, None], x, torch.randn(x.shape, generator=torch.Generator().manual_seed(3)))
    real = fm[:, None].expand_as(x)
    with torch.no_grad():
        assert not torch.allclose(module(x, t, batch.cond, fm)[real], module(changed, t, batch.cond, fm)[real], atol=1e-5)
        hiding = DiffusersStableAudioDiT(module.transformer, module.projection, attend_padding=False)
        assert torch.allclose(hiding(x, t, batch.cond, fm)[real], hiding(changed, t, batch.cond, fm)[real], atol=1e-5)


def test_layer_groups_map_attn1_attn2_ff(imported):
    groups = load_task(imported[0]).layer_groups()
    assert groups["to_kv"] == [f"transformer.transformer_blocks.{i}.attn2.{p}.weight" for i in range(2) for p in ("to_k", "to_v")]
    assert set(groups["to_kv"]) < set(groups["cross_attn"]) < set(groups["all"])
    assert all(".attn1." in n for n in groups["self_attn"]) and all(".attn2." in n for n in groups["cross_attn"])
    assert any(".ff." in n for n in groups["all"]) and not set(groups["self_attn"]) & set(groups["cross_attn"])


def test_bad_folders_are_named(tmp_path, tiny_pipeline_dir):
    with pytest.raises(SongtraceError, match=r"model_index\.json"):
        import_model("diffusers", tmp_path, tmp_path / "out")
    with pytest.raises(SongtraceError, match="valid: diffusers, sat"):
        import_model("onnx", tiny_pipeline_dir, tmp_path / "out")
    from songtrace.model.adapters.diffusers_dit import scheduler_matches

    with pytest.raises(SongtraceError, match="v_prediction"):
        scheduler_matches({"_class_name": "X", "prediction_type": "epsilon"})
    with pytest.raises(SongtraceError, match="sigma_data"):
        scheduler_matches({"_class_name": "X", "sigma_data": 0.5})


def test_a_model_built_from_configs_runs_the_sampler():
    from songtrace.diffusion.sampler import sample
    from songtrace.model.registry import build_model
    from songtrace.model.task import task_for

    transformer = {"sample_size": 16, "in_channels": 4, "num_layers": 2, "attention_head_dim": 8, "num_attention_heads": 2,
                   "num_key_value_attention_heads": 1, "out_channels": 4, "cross_attention_dim": 16, "time_proj_dim": 16,
                   "global_states_input_dim": 32, "cross_attention_input_dim": 16}
    projection = {"text_encoder_dim": 384, "conditioning_dim": 16, "min_value": 0, "max_value": 64}
    model = build_model({"arch": "diffusers-stable-audio", "spec": {"transformer": transformer, "projection": projection}}).eval()
    assert task_for(model).latent_shape == (4, 16)
    from songtrace.data.batch import Conditioning

    cond = Conditioning(torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.bool), torch.zeros(2), torch.full((2,), 3.0))
    assert sample(model, torch.randn(2, 4, 16), cond, steps=3, cfg_scale=2.0).shape == (2, 4, 16)
