"""Loading a model directory: the happy path, clear errors, and the latent-shape check."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fixtures_model import TINY_DIT, synthetic_latent_set
from songtrace.artifacts import artifact_hash, hash_tensors, load_safetensors, save_safetensors
from songtrace.errors import SongtraceError
from songtrace.model.dit import DiT
from songtrace.model.registry import MODEL_FILE, build_model, load_model
from songtrace.model.task import check_latents_fit
from songtrace.model.train import TrainConfig, train_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, synthetic_latents):
    out = tmp_path_factory.mktemp("registry") / "m"
    train_model(TrainConfig(steps=4, batch_size=4, warmup=1), TINY_DIT, synthetic_latents, out)
    return out


def test_load_model_gives_the_saved_ema_weights_in_eval_mode(model_dir):
    model = load_model(model_dir)
    assert isinstance(model, DiT) and not model.training
    weights = load_safetensors(model_dir / MODEL_FILE)
    assert hash_tensors(dict(model.state_dict())) == hash_tensors(weights) == artifact_hash(model_dir)
    check_latents_fit(model, synthetic_latent_set())


def test_check_model_matches_names_both_shapes(model_dir):
    model = load_model(model_dir)
    other = synthetic_latent_set(channels=3, length=20)
    with pytest.raises(SongtraceError, match=r"expects latents 4×16.*has 3×20"):
        check_latents_fit(model, other, "latents/other")


def test_load_errors_name_the_file(tmp_path, model_dir):
    with pytest.raises(SongtraceError, match=r"config\.json"):
        load_model(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / MODEL_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(SongtraceError, match=MODEL_FILE):
        load_model(broken)
    (broken / MODEL_FILE).unlink()
    with pytest.raises(SongtraceError, match="not found"):
        load_model(broken)
    weights = load_safetensors(model_dir / MODEL_FILE)
    weights["layers.0.self_attn.to_qkv.weight"] = torch.zeros(3, 3)
    save_safetensors(broken / MODEL_FILE, weights)
    with pytest.raises(SongtraceError, match=r"corrupt: model\.safetensors has"):  # the completion marker sees the change first
        load_model(broken)
    record = json.loads((broken / "config.json").read_text())
    del record["files"]  # as a model written before markers listed files: the loader's own checks speak
    (broken / "config.json").write_text(json.dumps(record))
    with pytest.raises(SongtraceError, match="to_qkv"):
        load_model(broken)
    del weights["layers.0.self_attn.to_qkv.weight"]
    save_safetensors(broken / MODEL_FILE, weights)
    with pytest.raises(SongtraceError, match="missing"):
        load_model(broken)
    record = json.loads((model_dir / "config.json").read_text())
    record["complete"] = False
    (broken / "config.json").write_text(json.dumps(record))
    with pytest.raises(SongtraceError, match="did not finish"):
        load_model(broken)


def test_unknown_architecture_lists_valid_ones():
    with pytest.raises(SongtraceError, match="valid: diffusers-stable-audio, dit"):
        build_model({"arch": "unet"})


def test_a_derived_checkpoint_loads_from_the_record_it_carries(tmp_path, model_dir):
    record = json.loads((model_dir / "config.json").read_text())
    derived = tmp_path / "derived"
    derived.mkdir()
    weights = load_safetensors(model_dir / MODEL_FILE)
    weights = {k: v + 1.0 for k, v in weights.items()}
    save_safetensors(derived / MODEL_FILE, weights)
    (derived / "config.json").write_text(json.dumps({"stage": "SomeUnlearning", "config": {"method": "x"}, "complete": True,
                                                     "model": record["config"], "inputs": record["inputs"]}))
    model = load_model(derived)
    assert hash_tensors(dict(model.state_dict())) == hash_tensors(weights)
    (derived / "config.json").write_text(json.dumps({"stage": "SomeUnlearning", "config": {}, "complete": True}))
    with pytest.raises(SongtraceError, match="not a model"):
        load_model(derived)
