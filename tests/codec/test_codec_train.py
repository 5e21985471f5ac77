"""Codec training: learns, resumes bit for bit, skips when done, and loads with clear errors."""

import dataclasses
import shutil

import pytest
import torch

from fixtures_codec import TINY_CODEC
from songtrace.artifacts import artifact_hash, finish_stage, read_json
from songtrace.codec import Codec, CodecConfig, EncodeConfig, load_codec, reconstruction_metrics, train_codec
from songtrace.codec.io import split_ids, track_tensor
from songtrace.codec.train import fit_mel_stats
from songtrace.errors import SongtraceError
from songtrace.world import load_world


def test_training_reduces_mel_l1_against_init(tmp_path, synthetic_world, one_thread):
    config = dataclasses.replace(TINY_CODEC, hidden=32, steps=200, checkpoint_every=1000)
    metrics = train_codec(config, synthetic_world, tmp_path / "c")
    valid = [track_tensor(synthetic_world, i, 16000) for i in split_ids(synthetic_world, "valid")]
    train = [track_tensor(synthetic_world, i, 16000) for i in split_ids(synthetic_world, "train")]
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        init = Codec(config).eval()
    mean, std = fit_mel_stats([init.log_mel(w[None])[0] for w in train])
    init.mel_mean.copy_(mean)
    init.mel_std.copy_(std)
    before = reconstruction_metrics(init, valid, n_iter=2)
    assert metrics["eval_split"] == "valid" and metrics["n_eval_tracks"] == len(valid)
    assert metrics["mel_l1"] < 0.8 * before["mel_l1"]
    assert metrics["mel_l1"] < metrics["baseline_mel_l1"]
    assert metrics["mel_sc"] < metrics["baseline_mel_sc"]
    assert 0 < metrics["oracle_wave_sc"] < metrics["wave_sc"] <= 1.5


def test_resumed_run_equals_uninterrupted_run(tmp_path, tiny_world, tiny_codec, one_thread):
    out = tmp_path / "resumed"

    def kill_at_15(step, loss):
        if step == 15:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_codec(TINY_CODEC, tiny_world, out, on_step=kill_at_15)
    assert (out / "checkpoint.safetensors").exists() and not (out / "config.json").exists()
    metrics = train_codec(TINY_CODEC, tiny_world, out)
    assert metrics["resumed_from_step"] == 10
    assert artifact_hash(out) == artifact_hash(tiny_codec)
    reference = read_json(tiny_codec / "metrics.json")
    assert metrics["mel_l1"] == reference["mel_l1"] and metrics["latent_scale"] == reference["latent_scale"]
    assert not (out / "checkpoint.safetensors").exists()


def test_finished_codec_is_skipped_and_other_config_refused(tiny_codec, tiny_world):
    before = (tiny_codec / "model.safetensors").stat().st_mtime_ns
    metrics = train_codec(TINY_CODEC, tiny_world, tiny_codec)
    assert metrics == read_json(tiny_codec / "metrics.json")
    assert (tiny_codec / "model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(SongtraceError, match="overwrite"):
        train_codec(dataclasses.replace(TINY_CODEC, steps=31), tiny_world, tiny_codec)


def test_config_json_records_inputs_and_frame_facts(tiny_codec, tiny_world):
    rec = read_json(tiny_codec / "config.json")
    assert rec["stage"] == "CodecConfig" and rec["inputs"] == {"world": load_world(tiny_world).content_hash}
    assert rec["samples_per_frame"] == 1536 and rec["latent_scale"] > 0
    assert CodecConfig.from_dict(rec["config"]) == TINY_CODEC


def test_load_codec_round_trips_and_reports_bad_directories(tmp_path, tiny_codec):
    codec = load_codec(tiny_codec)
    assert not codec.training and float(codec.latent_scale) == read_json(tiny_codec / "config.json")["latent_scale"]
    with pytest.raises(SongtraceError, match="no codec here"):
        load_codec(tmp_path / "missing")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_codec, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SongtraceError, match=r"model\.safetensors"):
        load_codec(broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(SongtraceError, match="not found"):
        load_codec(broken)
    other = tmp_path / "other"
    finish_stage(other, EncodeConfig(), {})
    with pytest.raises(SongtraceError, match="expected CodecConfig"):
        load_codec(other)
    mismatched = tmp_path / "mismatched"
    shutil.copytree(tiny_codec, mismatched)
    rec = read_json(mismatched / "config.json")
    rec["config"]["hidden"] = 8
    (mismatched / "config.json").write_text(__import__("json").dumps(rec))
    with pytest.raises(SongtraceError, match="do not match"):
        load_codec(mismatched)
