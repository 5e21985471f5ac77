"""Training the DiT: it learns, it is deterministic, it resumes bit for bit, and mask_padding ignores padding."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from fixtures_model import TINY_DIT, synthetic_latent_set
from songtrace.artifacts import artifact_hash, hash_tensors, load_safetensors
from songtrace.errors import SongtraceError
from songtrace.model import train as train_module
from songtrace.model.checkpoint import STATE_FILE
from songtrace.model.registry import MODEL_FILE
from songtrace.model.train import ModelConfig, TrainConfig, draw_step, ema_decay_at, lr_at, train_model

CFG = TrainConfig(steps=12, batch_size=4, lr=3e-3, warmup=2, checkpoint_every=4, valid_every=6, valid_timesteps=2, log_every=2)


def weights(out) -> dict[str, torch.Tensor]:
    return load_safetensors(out / MODEL_FILE)


def test_training_learns_and_writes_the_artifact(tmp_path, synthetic_latents):
    cfg = dataclasses.replace(CFG, steps=60, lr=5e-3)
    metrics = train_model(cfg, TINY_DIT, synthetic_latents, tmp_path / "m")
    assert metrics["valid_loss"] < 0.9 * metrics["valid_loss_init"]
    assert metrics["train_items"] == 9 and metrics["valid_items"] == 3
    assert [s for s, _ in metrics["train_loss_curve"]] == list(range(2, 61, 2))
    assert [s for s, _ in metrics["valid_curve"]] == [6, 12, 18, 24, 30, 36, 42, 48, 54, 60]
    record = json.loads((tmp_path / "m" / "config.json").read_text())
    config = ModelConfig.from_dict(record["config"])
    assert config.train == cfg and config.dit.width == 16 and config.dit.latent_shape == (4, 16)
    assert record["content_hash"] == hash_tensors(weights(tmp_path / "m"))
    assert set(record["inputs"]) == {"latents"}
    assert not (tmp_path / "m" / STATE_FILE).exists()
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["valid_loss"] == metrics["valid_loss"]


def test_training_is_deterministic_and_skips_when_done(tmp_path, synthetic_latents):
    a = train_model(CFG, TINY_DIT, synthetic_latents, tmp_path / "a")
    b = train_model(CFG, TINY_DIT, synthetic_latents, tmp_path / "b")
    assert artifact_hash(tmp_path / "a") == artifact_hash(tmp_path / "b")
    assert a["valid_loss"] == b["valid_loss"]
    stamp = (tmp_path / "a" / MODEL_FILE).stat().st_mtime_ns
    assert train_model(CFG, TINY_DIT, synthetic_latents, tmp_path / "a")["valid_loss"] == a["valid_loss"]
    assert (tmp_path / "a" / MODEL_FILE).stat().st_mtime_ns == stamp
    other_seed = train_model(dataclasses.replace(CFG, seed=1), TINY_DIT, synthetic_latents, tmp_path / "c")
    assert artifact_hash(tmp_path / "c") != artifact_hash(tmp_path / "a") and other_seed["valid_loss"] != a["valid_loss"]
    with pytest.raises(SongtraceError, match="different config"):
        train_model(dataclasses.replace(CFG, steps=13), TINY_DIT, synthetic_latents, tmp_path / "a")
    train_model(dataclasses.replace(CFG, steps=13), TINY_DIT, synthetic_latents, tmp_path / "a", overwrite=True)


class Killed(Exception):
    pass


def test_killed_run_resumes_bit_for_bit(tmp_path, synthetic_latents, monkeypatch):
    full = train_model(CFG, TINY_DIT, synthetic_latents, tmp_path / "full")
    real_step_loss = train_module.step_loss
    calls = {"n": 0}

    def dying_step_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # killed during step 7, after the checkpoint of step 4
            raise Killed
        return real_step_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "step_loss", dying_step_loss)
    with pytest.raises(Killed):
        train_model(CFG, TINY_DIT, synthetic_latents, tmp_path / "resumed")
    assert (tmp_path / "resumed" / STATE_FILE).exists() and not (tmp_path / "resumed" / MODEL_FILE).exists()
    monkeypatch.setattr(train_module, "step_loss", real_step_loss)
    resumed = train_model(CFG, TINY_DIT, synthetic_latents, tmp_path / "resumed")
    w_full, w_res = weights(tmp_path / "full"), weights(tmp_path / "resumed")
    assert all(torch.equal(w_full[k], w_res[k]) for k in w_full)
    assert resumed["train_loss_curve"] == full["train_loss_curve"]
    assert resumed["valid_loss"] == full["valid_loss"]


def test_mask_padding_makes_training_blind_to_padding(tmp_path):
    data = synthetic_latent_set()
    noisy = dataclasses.replace(data)
    pad = torch.arange(16)[None, None, :] >= data.n_frames[:, None, None]
    noisy.latents = torch.where(pad, torch.randn(data.latents.shape), data.latents)
    data.save(tmp_path / "clean")
    noisy.save(tmp_path / "noisy")
    cfg = dataclasses.replace(CFG, mask_padding=True)
    train_model(cfg, TINY_DIT, tmp_path / "clean", tmp_path / "m_clean")
    train_model(cfg, TINY_DIT, tmp_path / "noisy", tmp_path / "m_noisy")
    assert hash_tensors(weights(tmp_path / "m_clean")) == hash_tensors(weights(tmp_path / "m_noisy"))
    # without the mask, padding content is learned from
    train_model(CFG, TINY_DIT, tmp_path / "clean", tmp_path / "u_clean")
    train_model(CFG, TINY_DIT, tmp_path / "noisy", tmp_path / "u_noisy")
    assert hash_tensors(weights(tmp_path / "u_clean")) != hash_tensors(weights(tmp_path / "u_noisy"))


def test_schedules_and_draws():
    cfg = TrainConfig(steps=100, batch_size=4, lr=1e-3, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4) and lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(10, cfg) == pytest.approx(1e-3) and lr_at(100, cfg) == pytest.approx(1e-4)
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1) and ema_decay_at(10**6, 0.999) == 0.999
    a, b = draw_step(9, cfg, 5, (4, 16)), draw_step(9, cfg, 5, (4, 16))
    assert torch.equal(a.noise, b.noise) and torch.equal(a.rows, b.rows) and len(set(a.rows.tolist())) == 4
    assert not torch.equal(draw_step(9, cfg, 6, (4, 16)).noise, a.noise)
    few = draw_step(3, cfg, 0, (4, 16)).rows
    assert few.max() < 3 and len(few) == 4  # fewer items than the batch: with replacement


def test_config_validation():
    assert TrainConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(SongtraceError, match="cfg_dropout"):
        TrainConfig(cfg_dropout=1.0)
    with pytest.raises(SongtraceError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(SongtraceError, match="latent_length"):
        train_module.dit_config_for(synthetic_latent_set(), {"latent_length": 3})
