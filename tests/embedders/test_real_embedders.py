"""Loaders for real CLAP / LAION-CLAP / openl3 weights: a tiny random ClapModel the test saves, and clear
errors when weights or packages are missing (no hub access anywhere)."""

import importlib.util
import json

import numpy as np
import pytest

from songtrace.embedders import detect_kind, load_embedder
from songtrace.errors import SongtraceError
from songtrace.metrics.fd import fd_between
from songtrace.metrics.similarity import window_similarity_matrix
from synth_audio import tone


def _byte_level_vocab():
    """The 256 byte-level BPE symbols (GPT-2's byte-to-unicode table) plus RoBERTa's specials."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [chr(c) for c in codes] + ["<mask>"]
    return {s: i for i, s in enumerate(symbols)}


@pytest.fixture(scope="module")
def tiny_clap_dir(tmp_path_factory):
    """A randomly initialised, tiny transformers ClapModel + processor saved to disk (2 s windows)."""
    pytest.importorskip("transformers")
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    path = tmp_path_factory.mktemp("clap")
    text = {"vocab_size": 300, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
            "max_position_embeddings": 64}
    audio = {"spec_size": 256, "window_size": 8, "num_mel_bins": 64, "patch_size": 4, "patch_stride": (4, 4), "hidden_size": 32,
             "patch_embeds_hidden_size": 16, "depths": [1, 1], "num_attention_heads": [2, 2], "enable_fusion": False,
             "projection_hidden_size": 16}
    torch.manual_seed(0)
    ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=8)).save_pretrained(path)
    (path / "vocab.json").write_text(json.dumps(_byte_level_vocab()))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = RobertaTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    extractor = ClapFeatureExtractor(max_length_s=2, truncation="rand_trunc")
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(path)
    return path


def test_clap_loader_embeds_audio_and_text(tiny_clap_dir):
    assert detect_kind(tiny_clap_dir) == "clap"
    e = load_embedder(tiny_clap_dir)
    assert (e.name, e.sample_rate, e.window_seconds, e.dim) == ("clap", 48000, 2.0, 8)
    wave = tone(220.0, 0.5, 3.0, 16000)
    windows = e.embed_windows(wave, 16000)  # resampled to 48 kHz; 3 s with 2 s windows, 1 s hop
    assert windows.shape == (2, 8)
    assert np.allclose(np.linalg.norm(windows, axis=1), 1.0, atol=1e-5)
    assert np.allclose(e.embed_windows(wave, 16000), windows)  # deterministic (no random crops)
    text = e.embed_text(["a calm piano piece", "loud drums"])
    assert text.shape == (2, 8) and np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    assert e.has_text and len(e.content_hash) == 64
    other = load_embedder("clap", path=tiny_clap_dir)  # by name, with an explicit path
    assert other.content_hash == e.content_hash


def test_metrics_run_on_the_clap_embedder(tiny_clap_dir):
    e = load_embedder(tiny_clap_dir)
    waves = [tone(f, 0.3, 2.5, 16000, i) for i, f in enumerate([110.0, 220.0, 440.0])]
    sim = window_similarity_matrix(e, waves[:1], waves, 16000)
    assert sim.shape == (1, 3) and sim[0, 0] == pytest.approx(1.0, abs=1e-5)
    result = fd_between(e, waves, waves[::-1], 16000, extrapolate=False)
    assert result.fd == pytest.approx(0.0, abs=1e-6) and result.embedder == "clap"


def test_missing_clap_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(SongtraceError, match=r"no CLAP weights here.*save_pretrained"):
        load_embedder("clap", home=tmp_path)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text(json.dumps({"model_type": "clap"}))
    with pytest.raises(SongtraceError, match="no weights"):
        load_embedder(tmp_path / "half")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(SongtraceError, match="model_type is 'bert'"):
        load_embedder("clap", path=tmp_path / "bert")


def test_missing_laion_clap_checkpoint(tmp_path):
    with pytest.raises(SongtraceError, match="LAION-CLAP checkpoint not found"):
        load_embedder("laion-clap", home=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SongtraceError, match=r"no LAION-CLAP checkpoint \(\*\.pt\)"):
        load_embedder("laion-clap", path=tmp_path / "empty")


def test_missing_openl3_weights(tmp_path):
    with pytest.raises(SongtraceError, match=r"openl3 weights not found.*openl3_audio_mel256_music\.h5"):
        load_embedder("openl3", home=tmp_path)
    with pytest.raises(SongtraceError, match="input_repr"):
        load_embedder("openl3", path=tmp_path, input_repr="mel999")


@pytest.mark.skipif(importlib.util.find_spec("openl3") is not None, reason="openl3 is installed here")
def test_openl3_weights_without_the_package(tmp_path):
    weights = tmp_path / "openl3_audio_mel256_music.h5"
    weights.write_bytes(b"not really weights")
    assert detect_kind(weights) == "openl3" and detect_kind(tmp_path) == "openl3"
    with pytest.raises(SongtraceError, match="needs the openl3 package"):
        load_embedder(weights)


@pytest.mark.skipif(importlib.util.find_spec("laion_clap") is not None, reason="laion_clap is installed here")
def test_laion_checkpoint_without_the_package(tmp_path):
    ckpt = tmp_path / "music_audioset_epoch_15_esc_90.14.pt"
    ckpt.write_bytes(b"not really a checkpoint")
    assert detect_kind(ckpt) == "laion-clap"
    with pytest.raises(SongtraceError, match="pickle-capable"):  # a .pt can run code when loaded: refused unless opted in
        load_embedder(ckpt)
    from songtrace.artifacts import allow_pickle

    with allow_pickle(), pytest.raises(SongtraceError, match="needs the laion_clap package"):
        load_embedder(ckpt)
