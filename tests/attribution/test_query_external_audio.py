"""An audio query of an imported model is encoded with its own VAE and T5 exactly as `songtrace encode` encodes training tracks.

So the output of a user's own Stable Audio model (a WAV) is a query: attributing a training track's own audio gives the
training item's latent, caption tokens, frames and timing, and hence its scores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from songtrace.attribution.query import QueryContext, resolve_query
from songtrace.codec.encode import encode_world
from songtrace.errors import SongtraceError
from songtrace.world import load_world


@pytest.fixture(scope="module")
def external_cache(tiny_world, tiny_pipeline_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("latents") / "dif"
    return encode_world(tiny_world, f"diffusers:{tiny_pipeline_dir}", out)


def test_a_training_track_as_audio_query_is_its_cached_item(external_cache, tiny_world, tiny_pipeline_dir, tmp_path):
    world = load_world(tiny_world)
    row = world.manifest[world.manifest["id"] == external_cache.ids[1]].iloc[0]
    wav = tmp_path / "out.wav"
    sf.write(str(wav), world.audio(str(row["id"])), world.sample_rate, subtype="FLOAT")
    ctx = QueryContext(external_cache, codec_dir=Path(f"diffusers:{tiny_pipeline_dir}"), caption=str(row["caption"]))
    query = resolve_query(str(wav), ctx)
    item = external_cache.batch([1])
    assert query.kind == "audio" and query.query_id == "out"
    assert torch.allclose(query.batch.latents, item.latents, atol=1e-5)
    assert torch.equal(query.batch.n_frames, item.n_frames)
    assert torch.allclose(query.batch.text, item.text, atol=1e-6) and torch.equal(query.batch.text_mask, item.text_mask)
    assert torch.equal(query.batch.seconds_total, item.seconds_total) and torch.equal(query.batch.seconds_start, item.seconds_start)
    # without a caption: the null caption (zeros, all masked), as for the demo codec
    bare = resolve_query(str(wav), QueryContext(external_cache, codec_dir=Path(f"diffusers:{tiny_pipeline_dir}")))
    assert not bare.batch.text_mask.any() and torch.allclose(bare.batch.latents, item.latents, atol=1e-5)


def test_an_audio_query_against_a_cache_of_another_text_encoder_is_refused(tiny_latents, tiny_world, tiny_pipeline_dir, tmp_path):
    from songtrace.data.latents import LatentSet

    world = load_world(tiny_world)
    wav = tmp_path / "x.wav"
    sf.write(str(wav), world.audio(str(world.manifest["id"].iloc[0])), world.sample_rate)
    ctx = QueryContext(LatentSet.load(tiny_latents), codec_dir=Path(f"diffusers:{tiny_pipeline_dir}"), caption="a chorale")
    with pytest.raises(SongtraceError, match="text encoder"):
        resolve_query(str(wav), ctx)
