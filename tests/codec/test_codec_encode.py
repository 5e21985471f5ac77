"""The latent cache and the single-track helpers: frame counts, padding, determinism, decoding."""

import math

import numpy as np
import pytest
import torch

from songtrace.artifacts import artifact_hash, read_json
from songtrace.codec import decode_to_wav, encode_audio, encode_world, latent_length, load_codec
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.world import load_world


def test_latent_cache_shapes_frames_and_metadata(tiny_latents, tiny_codec, tiny_world):
    cache = LatentSet.load(tiny_latents)
    codec = load_codec(tiny_codec)
    length = math.ceil(2.0 * 16000 / 1536)
    assert cache.latent_shape == (codec.latent_channels, length) == (4, 21)
    world = load_world(tiny_world)
    manifest = world.manifest
    assert cache.ids == manifest["id"].tolist() and cache.splits == manifest["split"].tolist()
    assert cache.artists == manifest["artist"].tolist()
    for i, track_id in enumerate(cache.ids):
        n = len(world.audio(track_id))
        assert int(cache.n_frames[i]) == math.ceil(n / 1536) == math.ceil(round(manifest["duration"][i] * 16000) / 1536)
    assert torch.equal(cache.seconds_total, torch.tensor(manifest["duration"].to_numpy(dtype=np.float32)))
    assert torch.all(cache.seconds_start == 0)
    assert cache.text.shape == (12, 64, 384) and cache.text_mask[:, 0].all() and not cache.text_mask[:, -1].any()
    rec = read_json(tiny_latents / "config.json")
    assert rec["inputs"] == {"world": world.content_hash, "codec": artifact_hash(tiny_codec)}
    assert rec["content_hash"] == cache.content_hash()
    assert rec["latent_length"] == length and rec["samples_per_frame"] == 1536 and rec["sample_rate"] == 16000
    assert rec["seconds_per_frame"] == pytest.approx(0.096)


def test_padded_frames_hold_the_encoding_of_silence(tiny_latents, tiny_codec):
    cache = LatentSet.load(tiny_latents)
    silence = load_codec(tiny_codec).encode(torch.zeros(1, 21 * 1536))[0]
    shortest = int(torch.argmin(cache.n_frames))
    n = int(cache.n_frames[shortest])
    assert n < 21 - 7
    # Beyond the receptive field (about 5 frames) of the last real frame, the latents are those of silence.
    assert torch.allclose(cache.latents[shortest, :, n + 6 :], silence[:, n + 6 :], atol=1e-4)
    assert not torch.allclose(cache.latents[shortest, :, : n - 1], silence[:, : n - 1], atol=1e-3)


def test_encode_world_is_deterministic_and_skips_when_done(tmp_path, tiny_latents, tiny_codec, tiny_world, one_thread):
    again = encode_world(tiny_world, tiny_codec, tmp_path / "again")
    assert again.content_hash() == artifact_hash(tiny_latents)
    before = (tmp_path / "again" / "latents.safetensors").stat().st_mtime_ns
    assert encode_world(tiny_world, tiny_codec, tmp_path / "again").content_hash() == again.content_hash()
    assert (tmp_path / "again" / "latents.safetensors").stat().st_mtime_ns == before


def test_encode_audio_resamples_and_matches_the_cache(tiny_latents, tiny_codec, tiny_world):
    import librosa

    codec = load_codec(tiny_codec)
    cache = LatentSet.load(tiny_latents)
    track_id = cache.ids[0]
    wav = load_world(tiny_world).audio(track_id)
    z = encode_audio(codec, wav, 16000, n_frames_total=21)
    assert torch.allclose(z, cache.latents[0], atol=1e-5)
    z_native = encode_audio(codec, wav, 16000)
    assert z_native.shape == (4, math.ceil(len(wav) / 1536))
    stereo_44k = np.stack([librosa.resample(wav, orig_sr=16000, target_sr=44100)] * 2, axis=1)
    z_44k = encode_audio(codec, stereo_44k, 44100)
    assert z_44k.shape == z_native.shape
    assert float((z_44k - z_native).abs().mean()) < 0.1 * float(z_native.abs().mean())
    with pytest.raises(SongtraceError, match="empty"):
        encode_audio(codec, np.zeros(0, dtype=np.float32), 16000)


def test_decode_to_wav_returns_audio_of_the_right_length(tiny_latents, tiny_codec):
    codec = load_codec(tiny_codec)
    cache = LatentSet.load(tiny_latents)
    n = int(cache.n_frames[0])
    wav = decode_to_wav(codec, cache.latents[0], n_frames=n, n_iter=4)
    assert wav.dtype == np.float32 and wav.shape == (n * 1536,) and np.isfinite(wav).all()
    batch = decode_to_wav(codec, cache.latents[:2], n_iter=4)
    assert batch.shape == (2, 21 * 1536)
    with pytest.raises(SongtraceError, match="latent must be"):
        decode_to_wav(codec, torch.zeros(3, 5))
    assert latent_length(codec, 12.0) == 125 and latent_length(codec, 2.0) == 21
