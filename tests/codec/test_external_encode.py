"""`songtrace encode --codec diffusers:DIR | sat:DIR`: the latent cache made with the model's own VAE and T5.

The latents must be the library VAE's posterior mean of the padded audio, the caption tokens the
library's own text-encoder output, padding and timing as stable-audio-tools' dataset gives them, and
the cache must record its text encoder, so an imported model refuses a cache made by another.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from fixtures_real import build_full_sat, working_directory
from songtrace.artifacts import load_safetensors
from songtrace.codec.encode import encode_world
from songtrace.codec.external import load_external_codec, prepare_audio
from songtrace.data.latents import DEMO_TEXT_ENCODER, LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.importer import import_model
from songtrace.model.registry import load_task
from songtrace.model.task import check_latents_fit
from songtrace.world import load_world


def check_cache(latents: LatentSet, world, codec) -> None:
    """Padding, timing and ids as stable-audio-tools' dataset gives them."""
    manifest = world.manifest.reset_index(drop=True)
    assert latents.ids == [str(i) for i in manifest["id"]] and latents.latent_shape == (codec.latent_channels, codec.latent_length)
    for row, item in manifest.iterrows():
        _, real = prepare_audio(world.audio(str(item["id"])), world.sample_rate, codec)
        assert int(latents.n_frames[row]) == min(math.ceil(real / codec.samples_per_frame), codec.latent_length)
        assert float(latents.seconds_total[row]) == math.ceil(float(item["duration"])) and float(latents.seconds_start[row]) == 0.0
    assert int(latents.n_frames.min()) < codec.latent_length  # some tracks are padded
    assert latents.text_encoder == codec.text_encoder != DEMO_TEXT_ENCODER


@pytest.fixture(scope="module")
def diffusers_cache(tiny_world, tiny_pipeline_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("latents") / "dif"
    return encode_world(tiny_world, f"diffusers:{tiny_pipeline_dir}", out), out


def test_diffusers_cache_holds_the_vae_mean_and_the_t5_tokens(diffusers_cache, tiny_world, tiny_pipeline_dir):
    from diffusers import StableAudioPipeline

    latents, out = diffusers_cache
    assert LatentSet.load(out).text_encoder == latents.text_encoder
    world = load_world(tiny_world)
    codec = load_external_codec(f"diffusers:{tiny_pipeline_dir}")
    check_cache(latents, world, codec)
    pipe = StableAudioPipeline.from_pretrained(tiny_pipeline_dir)
    first = str(world.manifest["id"].iloc[0])
    audio, _ = prepare_audio(world.audio(first), world.sample_rate, codec)
    with torch.no_grad():
        assert torch.allclose(latents.latents[0], pipe.vae.encode(audio[None]).latent_dist.mode()[0], atol=1e-6)
        caption = str(world.manifest["caption"].iloc[0])
        enc = pipe.tokenizer([caption], padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt")
        hidden = pipe.text_encoder(enc.input_ids, attention_mask=enc.attention_mask)[0]
    assert torch.equal(latents.text[0], hidden[0]) and torch.equal(latents.text_mask[0], enc.attention_mask[0].bool())


def test_an_imported_model_refuses_a_cache_of_another_text_encoder(diffusers_cache, tiny_pipeline_dir, tmp_path):
    import dataclasses

    latents, _ = diffusers_cache
    import_model("diffusers", tiny_pipeline_dir, tmp_path / "m")
    task = load_task(tmp_path / "m")
    check_latents_fit(task, latents)
    with pytest.raises(SongtraceError, match="text encoder"):
        check_latents_fit(task, dataclasses.replace(latents, text_encoder=DEMO_TEXT_ENCODER))


@pytest.fixture(scope="module")
def sat_cache(tiny_world, tiny_sat_dir, sat_t5_cwd, tmp_path_factory):
    out = tmp_path_factory.mktemp("latents") / "sat"
    with working_directory(sat_t5_cwd):
        return encode_world(tiny_world, f"sat:{tiny_sat_dir}", out), out


def test_sat_cache_holds_the_pretransform_mean_and_the_conditioner_tokens(sat_cache, tiny_world, tiny_sat_dir, sat_t5_cwd, tmp_path):
    latents, _ = sat_cache
    world = load_world(tiny_world)
    with working_directory(sat_t5_cwd):
        codec = load_external_codec(f"sat:{tiny_sat_dir}")
        full = build_full_sat(json.loads((tiny_sat_dir / "model_config.json").read_text()))
    full.load_state_dict(load_safetensors(tiny_sat_dir / "model.safetensors"))
    full.eval()
    check_cache(latents, world, codec)
    first = str(world.manifest["id"].iloc[0])
    audio, _ = prepare_audio(world.audio(first), world.sample_rate, codec)
    with torch.no_grad():
        _, info = full.pretransform.model.encode(audio[None], return_info=True)
        mean = info["pre_bottleneck_latents"].chunk(2, dim=1)[0] / full.pretransform.scale
    assert torch.allclose(latents.latents[0], mean[0], atol=1e-6)
    # the model's conditioning from the cache is the library conditioner's on the caption and timing
    import_model("sat", tiny_sat_dir, tmp_path / "m")
    task = load_task(tmp_path / "m")
    check_latents_fit(task, latents)
    batch = latents.batch([0, 1])
    meta = [{"prompt": str(world.manifest["caption"].iloc[i]), "seconds_start": float(batch.seconds_start[i]),
             "seconds_total": float(batch.seconds_total[i])} for i in range(2)]
    with torch.no_grad():
        theirs = full.conditioner(meta, "cpu")
        ours = task.module.conditioning_tensors(batch.cond)
    for key in theirs:
        assert torch.equal(ours[key][0], theirs[key][0].float()), key


def test_bad_codec_specs_are_named(tmp_path):
    with pytest.raises(SongtraceError, match="diffusers:DIR"):
        load_external_codec("onnx:/x")
    with pytest.raises(SongtraceError, match="not a folder"):
        load_external_codec(f"sat:{tmp_path / 'nowhere'}")
