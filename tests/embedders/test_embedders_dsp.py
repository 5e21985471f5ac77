"""The Embedder interface through `dsp`: windows, resampling, determinism, registry errors."""

import numpy as np
import pytest

from songtrace.embedders import EMBEDDERS, DspEmbedder, load_embedder, split_windows
from songtrace.embedders.base import scaled_windows
from songtrace.errors import SongtraceError
from synth_audio import synthetic_tracks, tone


def test_split_windows_follow_the_window_rule():
    assert [len(w) for w in split_windows(np.zeros(150), 400, 100)] == [150]  # shorter than a window: one (short) window
    assert [len(w) for w in split_windows(np.arange(450), 400, 100)] == [400, 400]  # the tail gets a window aligned to the end
    assert split_windows(np.arange(450), 400, 100)[-1][-1] == 449


def test_windows_scale_with_track_length():
    assert scaled_windows(120.0) == (10.0, 1.0)  # the paper: 10 s windows, 1 s hop on 2-minute tracks
    assert scaled_windows(12.0) == (4.0, 1.0)  # the demo world
    assert scaled_windows(2.0) == (1.0, 0.25)  # the tiny test world
    with pytest.raises(SongtraceError):
        scaled_windows(0.0)


@pytest.mark.parametrize("seconds,expected", [(10.0, 7), (4.0, 1), (2.5, 1), (6.4, 4)])  # 6.4 s: 0, 1, 2 and 2.4 (the tail)
def test_dsp_window_count_matches_window_and_hop(seconds, expected):
    emb = DspEmbedder(window_seconds=4.0, hop_seconds=1.0).embed_windows(tone(220.0, 0.5, seconds, 16000), 16000)
    assert emb.shape == (expected, DspEmbedder().dim)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_dsp_is_deterministic_and_pools_to_unit_vectors():
    tracks = synthetic_tracks(2)
    e = DspEmbedder(window_seconds=1.0, hop_seconds=0.5)
    a, b = e.embed_audio(tracks.waves, tracks.sr), DspEmbedder(window_seconds=1.0, hop_seconds=0.5).embed_audio(tracks.waves, tracks.sr)
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert e.content_hash == DspEmbedder().content_hash  # the hash names the features, not the windows
    assert e.describe()["window_seconds"] == 1.0


def test_dsp_is_nearly_rate_independent():
    e = DspEmbedder(window_seconds=1.0, hop_seconds=0.5)
    at_16k = e.embed_windows(tone(330.0, 0.6, 3.0, 16000, seed=1), 16000)
    at_22k = e.embed_windows(tone(330.0, 0.6, 3.0, 22050, seed=1), 22050)
    assert at_16k.shape == at_22k.shape
    assert np.min(np.sum(at_16k * at_22k, axis=1)) > 0.97


def test_dsp_separates_timbres():
    tracks = synthetic_tracks(3)
    emb = DspEmbedder(window_seconds=1.0, hop_seconds=0.5).embed_audio(tracks.waves, tracks.sr)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    nearest = np.array(tracks.artists)[sim.argmax(axis=1)]
    assert np.mean(nearest == np.array(tracks.artists)) == 1.0


def test_bad_audio():
    with pytest.raises(SongtraceError, match="NaN"):
        DspEmbedder().embed_windows(np.array([0.0, np.nan], np.float32), 16000)
    with pytest.raises(SongtraceError, match="empty"):
        DspEmbedder().embed_windows(np.zeros(0, np.float32), 16000)
    with pytest.raises(SongtraceError, match="no text side"):
        DspEmbedder().embed_text(["a tune"])


def test_registry_names_and_errors(tmp_path):
    assert isinstance(load_embedder("dsp", window_seconds=2.0), DspEmbedder)
    with pytest.raises(SongtraceError) as err:
        load_embedder("no-such-embedder", home=tmp_path)
    for name in EMBEDDERS:
        assert name in str(err.value)
    with pytest.raises(SongtraceError, match="embedder train"):
        load_embedder("songclap", home=tmp_path)
    (tmp_path / "junk").mkdir()
    with pytest.raises(SongtraceError, match="not a recognised embedder"):
        load_embedder(tmp_path / "junk")
