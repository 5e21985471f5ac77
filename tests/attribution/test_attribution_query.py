"""Query specs: training items, generated latents, audio files, prompts; clear errors for the rest."""

import numpy as np
import pytest
import soundfile as sf
import torch

from fixtures_model import synthetic_latent_set
from songtrace.artifacts import save_safetensors
from songtrace.attribution import QueryContext, query_kind, resolve_query
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError


def ctx(**kw):
    return QueryContext(latents=synthetic_latent_set(), **kw)


def test_train_query_is_the_item_itself():
    c = ctx()
    q = resolve_query("train:s004", c)
    assert q.query_id == "train:s004" and q.kind == "train" and q.meta["train_id"] == "s004"
    row = c.latents.index_of("s004")
    assert torch.equal(q.batch.latents[0], c.latents.latents[row]) and int(q.batch.n_frames[0]) == int(c.latents.n_frames[row])
    with pytest.raises(SongtraceError, match="no item 'nope'"):
        resolve_query("train:nope", c)


def test_latent_file_query_is_padded_to_the_model_length(tmp_path):
    path = tmp_path / "gen1.latent.safetensors"
    latent = torch.randn(4, 10)
    save_safetensors(path, {"latent": latent, "n_frames": torch.tensor([9]), "text": torch.randn(1, 3, 384),
                            "text_mask": torch.tensor([[True, True, False]]), "seconds_total": torch.tensor([0.9])})
    q = resolve_query(str(path), ctx())
    assert q.query_id == "gen1" and q.kind == "latent"
    assert q.batch.latents.shape == (1, 4, 16) and int(q.batch.n_frames[0]) == 9
    assert torch.equal(q.batch.latents[0, :, :10], latent) and (q.batch.latents[0, :, 10:] == 0).all()
    assert q.batch.text.shape == (1, 8, 384) and q.batch.text_mask[0].tolist() == [True, True] + [False] * 6
    assert float(q.batch.seconds_total[0]) == pytest.approx(0.9)


def test_bad_latent_files(tmp_path):
    long = tmp_path / "long.latent.safetensors"
    save_safetensors(long, {"latent": torch.randn(4, 40)})
    with pytest.raises(SongtraceError, match="longer than the model's 16"):
        resolve_query(str(long), ctx())
    nokey = tmp_path / "x.latent.safetensors"
    save_safetensors(nokey, {"z": torch.randn(4, 4)})
    with pytest.raises(SongtraceError, match="no 'latents' tensor"):
        resolve_query(str(nokey), ctx())
    with pytest.raises(SongtraceError, match="not found"):
        resolve_query(str(tmp_path / "missing.latent.safetensors"), ctx())


def test_unknown_query_forms_list_the_valid_ones():
    with pytest.raises(SongtraceError, match=r"valid forms: train:ID; prompt:TEXT@SEED; PATH\.latent\.safetensors; PATH\.wav"):
        query_kind("song.mp3")
    with pytest.raises(SongtraceError, match="prompt:TEXT@SEED"):
        resolve_query("prompt:no seed here", ctx())


def test_audio_query_without_a_codec_is_refused(tmp_path):
    wav = tmp_path / "take.wav"
    sf.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    with pytest.raises(SongtraceError, match="needs the codec"):
        resolve_query(str(wav), ctx())


def test_audio_query_is_encoded_with_the_codec(tmp_path, tiny_codec, tiny_latents, tiny_world):
    from songtrace.world import load_world

    world = load_world(tiny_world)
    latents = LatentSet.load(tiny_latents)
    wav = tmp_path / "copy.wav"
    track = latents.ids[0]
    sf.write(wav, world.audio(track), world.sample_rate, subtype="FLOAT")
    q = resolve_query(str(wav), QueryContext(latents=latents, codec_dir=tiny_codec, caption=None))
    row = latents.index_of(track)
    assert q.kind == "audio" and q.query_id == "copy"
    assert int(q.batch.n_frames[0]) == int(latents.n_frames[row])
    assert not q.batch.text_mask.any()  # no caption: the null caption
    torch.testing.assert_close(q.batch.latents[0], latents.latents[row], rtol=1e-4, atol=1e-5)


def test_prompt_query_generates_and_matches_its_saved_latent(tmp_path, tiny_model, tiny_codec, tiny_latents):
    from songtrace.model.generate import save_generated

    latents = LatentSet.load(tiny_latents)
    context = QueryContext(latents=latents, model_dir=tiny_model, codec_dir=tiny_codec, seconds=1.0, generate_options={"steps": 2})
    q = resolve_query("prompt:a short piece@3", context)
    assert q.kind == "prompt" and q.meta["seed"] == 3 and q.meta["prompt"] == "a short piece"
    assert q.batch.latents.shape[1:] == latents.latents.shape[1:] and q.batch.text_mask.any()
    n = int(q.batch.n_frames[0])
    assert 0 < n < latents.latent_shape[1] and (q.batch.latents[0, :, n:] == 0).all()
    save_generated(q.generated, tmp_path / "gen.wav")
    saved = resolve_query(str(tmp_path / "gen.latent.safetensors"), QueryContext(latents=latents))
    assert saved.query_id == "gen" and int(saved.batch.n_frames[0]) == n
    for field in ("latents", "text", "text_mask", "seconds_total"):
        assert torch.equal(getattr(saved.batch, field), getattr(q.batch, field)), field
