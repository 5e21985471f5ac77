"""songclap: config round trip, training beats random retrieval, determinism, save/load, the world stage."""

import dataclasses

import numpy as np
import pytest

from songtrace.artifacts import begin_stage, finish_stage, hash_tensors, read_json, save_safetensors, write_json
from songtrace.embedders import load_embedder
from songtrace.embedders.songclap import MODEL_FILE, SongClapConfig, SongClapEmbedder
from songtrace.embedders.songclap_train import fit_songclap, songclap_report
from songtrace.errors import SongtraceError
from synth_audio import synthetic_tracks

TINY = SongClapConfig(channels=(16, 32), dim=16, text_hidden=32, window_seconds=1.0, hop_seconds=0.5, batch_size=12,
                      steps=60, warmup_steps=5, lr=3e-3, random_baseline_seeds=10)


def _split(tracks):
    """First 4 tracks of each artist to train, the rest held out."""
    order = {a: 0 for a in tracks.artists}
    train, valid = [], []
    for i, a in enumerate(tracks.artists):
        (train if order[a] < 4 else valid).append(i)
        order[a] += 1
    return tracks.select(train), tracks.select(valid)


@pytest.fixture(scope="module")
def trained():
    train, valid = _split(synthetic_tracks(6, seconds=(1.0, 2.0)))
    model, log = fit_songclap(TINY, train)
    return model, log, train, valid


def test_config_round_trips_and_validates():
    assert SongClapConfig.from_dict(TINY.to_dict()) == TINY
    assert TINY.window_frames == round(16000 / 512)
    with pytest.raises(SongtraceError, match="batch_size"):
        dataclasses.replace(TINY, batch_size=1)
    with pytest.raises(SongtraceError, match="channels"):
        dataclasses.replace(TINY, channels=())
    with pytest.raises(SongtraceError, match="lr"):
        dataclasses.replace(TINY, lr=0.0)


def test_songclap_beats_random_retrieval(trained):
    model, log, train, valid = trained
    assert log["loss_last"] < log["loss_first"]
    report = songclap_report(SongClapEmbedder(model, TINY, "test"), train, valid, random_seeds=10)
    ours, rnd = report["songclap"], report["random"]
    assert report["n_query"] == 8 and report["n_gallery"] == 16 and report["n_unique_captions"] == 4
    assert ours["text_to_audio_recall@1"] >= rnd["text_to_audio_recall@1"] + 0.3
    assert ours["artist_nn_accuracy"] >= rnd["artist_nn_accuracy"] + 0.3
    assert set(report["dsp"]) == {"artist_nn_accuracy"}


def test_text_and_audio_share_a_space(trained):
    model, _, _, valid = trained
    e = SongClapEmbedder(model, TINY, "test")
    audio = e.embed_audio(valid.waves, valid.sr)
    text = e.embed_text(valid.captions)
    assert audio.shape == text.shape == (len(valid), TINY.dim)
    assert np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    matched = np.sum(audio * text, axis=1).mean()
    assert matched > (audio @ text.T).mean()
    assert e.embed_windows(np.zeros(16000 * 3, np.float32) + 0.01, 16000).shape == (5, TINY.dim)


def test_training_is_deterministic_for_a_seed():
    train, _ = _split(synthetic_tracks(5, seconds=(1.0, 1.5)))
    cfg = dataclasses.replace(TINY, steps=4)
    a, _ = fit_songclap(cfg, train)
    b, _ = fit_songclap(cfg, train)
    c, _ = fit_songclap(dataclasses.replace(cfg, seed=1), train)
    assert hash_tensors(a.state_dict()) == hash_tensors(b.state_dict())
    assert hash_tensors(a.state_dict()) != hash_tensors(c.state_dict())


def test_saved_artifact_loads_by_name_and_path(trained, tmp_path):
    model, _, _, valid = trained
    out = tmp_path / "embedders" / "songclap"
    state = model.state_dict()
    begin_stage(out, TINY, {"world": "synthetic"})
    save_safetensors(out / MODEL_FILE, state)
    finish_stage(out, TINY, {"world": "synthetic"}, content_hash=hash_tensors(state))
    by_name = load_embedder("songclap", home=tmp_path)
    by_path = load_embedder(out)
    assert by_name.content_hash == by_path.content_hash == hash_tensors(state)
    expected = SongClapEmbedder(model, TINY, "x").embed_audio(valid.waves[:2], valid.sr)
    assert np.allclose(by_path.embed_audio(valid.waves[:2], valid.sr), expected, atol=1e-6)
    save_safetensors(out / MODEL_FILE, {"junk": state["mel_mean"]})
    with pytest.raises(SongtraceError, match=r"corrupt: model\.safetensors has"):  # the completion marker sees the changed file
        load_embedder(out)
    record = read_json(out / "config.json")
    del record["files"]  # as an artifact made before markers listed files: the loader's own check speaks
    write_json(out / "config.json", record)
    with pytest.raises(SongtraceError, match="do not match"):
        load_embedder(out)
