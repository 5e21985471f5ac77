"""Weights load only from safetensors: a folder whose weights are pickles is refused unless opted in (issue 15, part 3)."""

import json

import pytest

from songtrace.artifacts import allow_pickle
from songtrace.embedders.clap import check_clap_dir
from songtrace.errors import SongtraceError
from songtrace.extras import check_pipeline_dir, pretrained_options


def _pipeline(folder, weights="diffusion_pytorch_model.bin"):
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableAudioPipeline"}))
    for part in ("transformer", "projection_model", "scheduler"):
        (folder / part).mkdir()
        (folder / part / "config.json").write_text("{}")
    (folder / "transformer" / weights).write_bytes(b"\x80\x04 not loaded")
    return folder


def test_a_pipeline_of_pickled_weights_is_refused_unless_allowed(tmp_path):
    folder = _pipeline(tmp_path / "pipe")
    with pytest.raises(SongtraceError, match=r"transformer/diffusion_pytorch_model.bin: the transformer weights is a pickle-capable"):
        check_pipeline_dir(folder)
    assert pretrained_options() == {"use_safetensors": True}  # from_pretrained never falls back to a pickle
    with allow_pickle():
        check_pipeline_dir(folder)
        assert pretrained_options() == {"use_safetensors": None}


def test_a_pipeline_with_safetensors_weights_passes(tmp_path):
    folder = _pipeline(tmp_path / "pipe", weights="diffusion_pytorch_model.safetensors")
    (folder / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"ignored: from_pretrained is told to use safetensors")
    assert check_pipeline_dir(folder)["_class_name"] == "StableAudioPipeline"


def test_a_clap_folder_of_pickled_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clap"}))
    (tmp_path / "preprocessor_config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(SongtraceError, match="pickle-capable"):
        check_clap_dir(tmp_path)
    with allow_pickle():
        assert check_clap_dir(tmp_path) == [tmp_path / "pytorch_model.bin"]
