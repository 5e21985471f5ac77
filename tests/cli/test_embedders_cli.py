"""The evaluate stages on the tiny world and through the CLI: songclap training, embedding a world, FD."""

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from songtrace.cli import app
from songtrace.embedders import load_embedder
from songtrace.embedders.songclap import SongClapConfig
from songtrace.embedders.songclap_train import config_for_world, train_songclap
from songtrace.embedders.world import load_world_embeddings
from songtrace.errors import SongtraceError
from songtrace.world import load_world
from songtrace.world.tracks import folder_tracks, parse_source, world_tracks
from synth_audio import tone

runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_world):
    """A data directory whose `worlds/tiny` is the tiny world."""
    home = tmp_path_factory.mktemp("home")
    (home / "worlds").mkdir()
    (home / "worlds" / "tiny").symlink_to(tiny_world, target_is_directory=True)
    return home


def test_songclap_trains_on_the_tiny_world_and_reports_retrieval(home):
    args = ["embedder", "train", "--world", "tiny", "--steps", "6", "--window", "1.0", "--hop", "0.5", "--home", home, "--json"]
    metrics = _run(*args)
    assert metrics["training"]["steps"] == 6
    assert metrics["eval_split"] == "train (no valid split)"  # the tiny world holds a single valid track
    for key in ("text_to_audio_recall@1", "text_to_audio_recall@10", "artist_nn_accuracy"):
        assert 0.0 <= metrics["songclap"][key] <= 1.0 and key in metrics["random"]
    assert _run(*args) == metrics  # the finished artifact is reused
    e = load_embedder("songclap", home=home)
    assert e.window_seconds == 1.0 and e.content_hash == json.loads((home / "embedders/songclap/config.json").read_text())["content_hash"]
    with pytest.raises(SongtraceError, match="different config"):
        train_songclap(SongClapConfig(steps=7), home / "worlds" / "tiny", home / "embedders" / "songclap")


def test_songclap_windows_default_to_the_world_scale(tiny_world):
    config = config_for_world(tiny_world, steps=3)
    assert (config.window_seconds, config.hop_seconds, config.steps) == (1.0, 0.25, 3)  # 2 s tracks


def test_embedding_the_world_writes_windows_and_pooled_vectors(home):
    summary = _run("embedder", "embed", "--world", "tiny", "--embedder", "dsp", "--home", home, "--json")
    assert summary["tracks"] == 12 and summary["seconds"] >= 0
    table, windows, offsets = load_world_embeddings(summary["path"])
    assert len(table) == 12 and len(offsets) == 13 and windows.shape == (offsets[-1], summary["dim"])
    assert (table["n_windows"].to_numpy() == np.diff(offsets)).all()
    first = np.asarray(table["embedding"].iloc[0])
    world = load_world(home / "worlds" / "tiny")
    expected = load_embedder("dsp").embed_audio([world.audio(table["id"].iloc[0])], world.sample_rate)[0]
    assert np.allclose(first, expected, atol=1e-6)


def test_world_sources_and_halves(home, tiny_world):
    train = world_tracks(tiny_world, split="train")
    assert len(train) == 11 and train.sr == 16000 and all(train.captions)
    a, b = parse_source("world:tiny:train:half=0", home), parse_source("world:tiny:train:half=1", home)
    assert not set(a.ids) & set(b.ids) and len(a) + len(b) == len(train)
    artist = train.artists[0]
    assert set(parse_source(f"world:tiny:artist={artist}", home).artists) == {artist}
    with pytest.raises(SongtraceError, match="no split 'test'"):
        parse_source("world:tiny:test", home)


def test_fd_command_on_folders_and_world_splits(home, tmp_path):
    for name, f0 in (("a", 220.0), ("b", 880.0)):
        (tmp_path / name).mkdir()
        for k in range(4):
            sf.write(tmp_path / name / f"{k}.wav", tone(f0 * (1 + 0.02 * k), 0.5, 2.0, 22050, k), 22050)
    assert len(folder_tracks(tmp_path / "a")) == 4
    same = _run("fd", tmp_path / "a", tmp_path / "a", "--home", home, "--json")
    other = _run("fd", tmp_path / "a", tmp_path / "b", "--home", home, "--json")
    assert same["fd"] == pytest.approx(0.0, abs=1e-9) and other["fd"] > 0.1
    assert other["n_a"] == 4 and other["embedder"] == "dsp"  # 2 s tracks are shorter than dsp's 4 s window: one window each
    halves = _run("fd", "world:tiny:train:half=0", "world:tiny:train:half=1", "--per", "track", "--home", home, "--json")
    assert halves["per"] == "track" and halves["n_a"] + halves["n_b"] == 11
    (tmp_path / "empty").mkdir()
    with pytest.raises(SongtraceError, match="no audio files"):
        folder_tracks(tmp_path / "empty")
