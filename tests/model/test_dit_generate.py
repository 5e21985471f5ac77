"""Generation end to end on the tiny codec and tiny model, the saved query, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from songtrace.artifacts import artifact_hash
from songtrace.cli import app
from songtrace.data.latent_file import read_latent_file
from songtrace.diffusion.loss import make_plan
from songtrace.errors import SongtraceError
from songtrace.model.generate import generate, save_generated
from songtrace.model.registry import load_model
from songtrace.model.task import task_for


def test_generate_saves_a_ready_attribution_query(tmp_path, tiny_model, tiny_codec):
    track = generate(tiny_model, tiny_codec, "a short piece by artist1", seconds=1.0, seed=3, steps=4, cfg_scale=2.0)
    model = load_model(tiny_model)
    c, length = model.latent_shape
    assert track.latent.shape == (c, length) and 0 < track.n_frames <= length
    assert not track.latent[:, track.n_frames :].any() and track.latent[:, : track.n_frames].abs().sum() > 0
    assert track.wav.shape == (track.sample_rate,) and np.isfinite(track.wav).all()
    assert track.model_hash == artifact_hash(tiny_model) and track.codec_hash == artifact_hash(tiny_codec)
    again = generate(tiny_model, tiny_codec, "a short piece by artist1", seconds=1.0, seed=3, steps=4, cfg_scale=2.0)
    assert torch.equal(track.latent, again.latent)
    other = generate(tiny_model, tiny_codec, "a short piece by artist1", seconds=1.0, seed=4, steps=4, cfg_scale=2.0)
    assert not torch.equal(track.latent, other.latent)

    record = save_generated(track, tmp_path / "gen.wav")
    wav, sr = sf.read(tmp_path / "gen.wav")
    assert sr == track.sample_rate and len(wav) == len(track.wav)
    saved = json.loads((tmp_path / "gen.json").read_text())
    assert saved == json.loads(json.dumps(record)) and saved["seed"] == 3 and saved["sampler"]["steps"] == 4
    saved_latent = read_latent_file(tmp_path / "gen.latent.safetensors")
    assert saved_latent.metadata == {"prompt": track.prompt, "seed": "3", "model_hash": track.model_hash}
    query = saved_latent.batch()
    assert query.ids == ["gen"] and torch.equal(query.latents[0], track.latent)
    assert int(query.n_frames[0]) == track.n_frames and float(query.seconds_total[0]) == 1.0
    losses = task_for(model).loss(None, query, make_plan(query.ids, 2, model.latent_shape, seed=0), mask=True)
    assert losses.shape == (1, 2) and torch.isfinite(losses).all()


def test_generate_refuses_a_track_longer_than_the_model(tiny_model, tiny_codec):
    with pytest.raises(SongtraceError, match="at most"):
        generate(tiny_model, tiny_codec, "x", seconds=60.0, seed=0, steps=2)


def test_cli_train_and_generate(tmp_path, tiny_latents, tiny_codec):
    runner = CliRunner()
    home = tmp_path / "home"
    result = runner.invoke(app, ["train", "--latents", str(tiny_latents), "--name", "t", "--steps", "6", "--batch-size", "4",
                                 "--width", "16", "--depth", "1", "--heads", "2", "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["steps"] == 6 and out["model_dir"] == str(home / "models" / "t")
    wav = tmp_path / "g.wav"
    result = runner.invoke(app, ["generate", "--model", "t", "--codec", str(tiny_codec), "--prompt", "a short piece", "--seconds", "0.5",
                                 "--steps", "3", "--cfg", "1.5", "--out", str(wav), "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)
    assert rec["sampler"] == {"method": "dpmpp-2m", "steps": 3, "cfg_scale": 1.5}
    assert wav.exists() and (tmp_path / "g.latent.safetensors").exists() and (tmp_path / "g.json").exists()
