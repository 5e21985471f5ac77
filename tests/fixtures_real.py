"""Tiny random real-library models, built offline and saved to tmp folders (nothing from a hub).

- `write_tiny_t5(folder, d_model)`: a 1-layer random `T5EncoderModel` with a word-level tokenizer
  (`model_max_length` 8) built with `tokenizers`, saved with `save_pretrained`.
- `tiny_pipeline_dir`: a diffusers `StableAudioPipeline` folder (StableAudioDiTModel, AutoencoderOobleck,
  that T5, StableAudioProjectionModel, CosineDPMSolverMultistepScheduler) of a few thousand weights.
- `tiny_sat_dir`: a stable-audio-tools folder (`model_config.json` + `model.safetensors`) of a
  `diffusion_cond` DiT with a T5 text conditioner, timing conditioners and an Oobleck VAE pretransform,
  built by the library's own `create_model_from_config`. stable-audio-tools loads its T5 by name
  (`t5-small`) through transformers, which takes a folder of that name in the working directory
  first; `sat_t5_cwd` is that directory.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
import torch

WORDS = "a the piano violin choir bach folk slow fast song in major minor with and of organ dance quiet loud".split()
CAPTIONS = ["a slow piano song in minor", "fast folk dance with violin", "quiet choir and organ", "loud bach organ"]
T5_MAX = 8


def write_tiny_t5(folder: Path, d_model: int = 16, seed: int = 0) -> Path:
    """A random one-layer T5 encoder and a word-level tokenizer, saved in `folder`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                        model_max_length=T5_MAX)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = T5Config(vocab_size=len(vocab), d_model=d_model, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                          relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
        encoder = T5EncoderModel(config).eval()
    encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _randomise(module: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    """Give every weight a random value (libraries zero-init some layers, which would hide mapping errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def write_tiny_pipeline(folder: Path, seed: int = 0) -> Path:
    """A diffusers StableAudioPipeline of tiny random components, saved with `save_pretrained`."""
    from diffusers import AutoencoderOobleck, CosineDPMSolverMultistepScheduler, StableAudioDiTModel, StableAudioPipeline
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
    from transformers import AutoTokenizer, T5EncoderModel

    t5_dir = write_tiny_t5(folder.parent / f"{folder.name}-t5", d_model=16, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderOobleck(encoder_hidden_size=8, downsampling_ratios=[8, 8], decoder_channels=4, decoder_input_channels=4,
                                 audio_channels=2, channel_multiples=[1, 2], sampling_rate=500)  # 16 frames = 2.048 s
        transformer = StableAudioDiTModel(sample_size=16, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
                                          num_key_value_attention_heads=1, out_channels=4, cross_attention_dim=16, time_proj_dim=16,
                                          global_states_input_dim=32, cross_attention_input_dim=16)
        projection = StableAudioProjectionModel(text_encoder_dim=16, conditioning_dim=16, min_value=0, max_value=64)
    _randomise(transformer, seed + 1)
    pipe = StableAudioPipeline(vae=vae, text_encoder=T5EncoderModel.from_pretrained(t5_dir).eval(), projection_model=projection,
                               tokenizer=AutoTokenizer.from_pretrained(t5_dir), transformer=transformer,
                               scheduler=CosineDPMSolverMultistepScheduler())
    pipe.save_pretrained(folder)
    return folder


@contextlib.contextmanager
def working_directory(path: Path):
    """Run the block in `path` (restored after)."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def tiny_sat_config(sample_size: int = 256) -> dict:
    """A stable-audio-tools `diffusion_cond` config: Oobleck VAE (16x), T5 `t5-small` prompt, timing, a DiT of depth 2.

    Heads of 32: the library rotates max(head // 2, 32) dims and needs cond_dim >= head.
    """
    return {
        "model_type": "diffusion_cond", "sample_size": sample_size, "sample_rate": 128, "audio_channels": 1,  # 2 s
        "model": {
            "pretransform": {"type": "autoencoder", "config": {
                "encoder": {"type": "oobleck", "requires_grad": False, "config": {
                    "in_channels": 1, "channels": 4, "c_mults": [1, 2], "strides": [4, 4], "latent_dim": 8, "use_snake": True}},
                "decoder": {"type": "oobleck", "config": {
                    "out_channels": 1, "channels": 4, "c_mults": [1, 2], "strides": [4, 4], "latent_dim": 4, "use_snake": True,
                    "final_tanh": False}},
                "bottleneck": {"type": "vae"}, "latent_dim": 4, "downsampling_ratio": 16, "io_channels": 1}},
            "conditioning": {"configs": [
                {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-small", "max_length": T5_MAX}},
                {"id": "seconds_start", "type": "number", "config": {"min_val": 0, "max_val": 512}},
                {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 512}}], "cond_dim": 32},
            "diffusion": {"cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                          "global_cond_ids": ["seconds_start", "seconds_total"], "type": "dit",
                          "config": {"io_channels": 4, "embed_dim": 64, "depth": 2, "num_heads": 2, "cond_token_dim": 32,
                                     "global_cond_dim": 64, "project_cond_tokens": False, "transformer_type": "continuous_transformer"}},
            "io_channels": 4},
    }


def build_full_sat(config: dict):
    """The library's whole model (with T5 conditioner and pretransform); call inside `sat_t5_cwd`."""
    from songtrace.extras import import_sat

    return import_sat().create_model_from_config(config)


def write_tiny_sat(folder: Path, t5_cwd: Path, seed: int = 0) -> Path:
    """Build the tiny config with the library, randomise every weight, save `model_config.json` + `model.safetensors`."""
    from safetensors.torch import save_file

    config = tiny_sat_config()
    with working_directory(t5_cwd), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_full_sat(config)
    _randomise(model.model, seed + 1, scale=0.08)  # O(1) predictions: deeper than the diffusers fixture
    _randomise(model.conditioner, seed + 2)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A saved tiny StableAudioPipeline folder (skips without diffusers)."""
    pytest.importorskip("diffusers")
    pytest.importorskip("torchsde", reason="diffusers' CosineDPMSolverMultistepScheduler needs torchsde (the diffusers extra)")
    return write_tiny_pipeline(tmp_path_factory.mktemp("diffusers") / "pipeline")


@pytest.fixture(scope="session")
def sat_t5_cwd(tmp_path_factory):
    """A directory holding `t5-small/` (a tiny random T5 and tokenizer), where stable-audio-tools finds it by name."""
    root = tmp_path_factory.mktemp("sat-t5")
    write_tiny_t5(root / "t5-small", d_model=512)
    return root


@pytest.fixture(scope="session")
def tiny_sat_dir(tmp_path_factory, sat_t5_cwd):
    """A saved tiny stable-audio-tools folder (skips without the `sat` extra)."""
    pytest.importorskip("stable_audio_tools", reason="the stable-audio-tools extra is not installed (make setup-sat)")
    return write_tiny_sat(tmp_path_factory.mktemp("sat") / "model", sat_t5_cwd)
