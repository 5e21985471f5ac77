"""Windowed similarity (max over window pairs), text-audio alignment, retrieval metrics, conditioning check."""

import numpy as np
import pytest

from songtrace.embedders import DspEmbedder
from songtrace.embedders.retrieval import chance_artist_accuracy, nearest_neighbour_accuracy, recall_at_k
from songtrace.errors import SongtraceError
from songtrace.metrics.alignment import text_audio_alignment
from songtrace.metrics.conditioning import conditioning_check
from songtrace.metrics.similarity import cosine_matrix, embed_window_bank, window_similarity_matrix
from synth_audio import BandEmbedder, synthetic_tracks, tone


def _mixed_track(sr, seed):
    """A track that changes pitch half way, so different windows match different items."""
    rng = np.random.default_rng(seed)
    f1, f2 = rng.choice([60.0, 150.0, 400.0, 900.0], size=2, replace=False)
    return np.concatenate([tone(f1, 0.0, rng.uniform(0.6, 1.2), sr, seed), tone(f2, 0.0, rng.uniform(0.3, 1.2), sr, seed + 1)])


def test_similarity_matrix_equals_brute_force_max_over_window_pairs():
    e = BandEmbedder()
    queries = [_mixed_track(8000, s) for s in range(3)]
    items = [_mixed_track(8000, 10 + s) for s in range(5)]
    fast = window_similarity_matrix(e, queries, items, 8000)
    brute = np.array([[max(float(a @ b) for a in e.embed_windows(q, 8000) for b in e.embed_windows(i, 8000)) for i in items]
                      for q in queries])
    assert fast.shape == (3, 5)
    assert np.allclose(fast, brute, atol=1e-6)
    assert not np.allclose(fast, fast[:, :1])  # the example is not degenerate


def test_a_window_bank_built_once_embeds_each_track_once():
    e = BandEmbedder()
    items = [tone(100.0 * (k + 1), 0.0, 1.0, 8000, k) for k in range(4)]
    bank = embed_window_bank(e, items, 8000)
    per_query = len(e.embed_windows(items[0], 8000))
    embedded = e.windows_embedded
    first = window_similarity_matrix(e, items[:1], bank, 8000)
    second = window_similarity_matrix(e, items[1:2], bank, 8000)
    assert e.windows_embedded == embedded + 2 * per_query  # only the two queries were embedded, not the items again
    assert len(bank) == 4
    assert first[0, 0] == pytest.approx(1.0, abs=1e-6) and second[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(first, window_similarity_matrix(e, items[:1], items, 8000))


def test_cosine_matrix_by_hand():
    a = np.array([[1.0, 0.0], [3.0, 4.0]], dtype=np.float32)
    b = np.array([[0.0, 2.0], [1.0, 1.0]])
    expected = np.array([[0.0, np.sqrt(0.5)], [0.8, 0.7 * np.sqrt(2.0)]])
    out = cosine_matrix(a, b)
    assert out.dtype == np.float64 and np.allclose(out, expected)


def test_text_audio_alignment_prefers_matching_prompts():
    e = BandEmbedder()
    waves = [tone(f, 0.0, 1.0, 16000, i) for i, f in enumerate([55.0, 110.0, 330.0, 880.0])]
    prompts = ["a bass drone", "a low hum", "a mid whistle", "a high beep"]
    result = text_audio_alignment(e, prompts, waves, 16000)
    assert result.mean > 0.9 > 0.2 > result.mismatched_mean
    shuffled = text_audio_alignment(e, prompts[::-1], waves, 16000)
    assert shuffled.mean < result.mean
    assert result.embedder == "bands" and result.n == 4
    with pytest.raises(SongtraceError, match="no text side"):
        text_audio_alignment(DspEmbedder(), prompts, waves, 16000)
    with pytest.raises(SongtraceError, match="4 prompts but 3"):
        text_audio_alignment(e, prompts, waves[:3], 16000)


def test_recall_at_k_by_hand():
    sim = np.array([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.3, 0.2, 0.1]])
    # row 0: own item first; row 1: own item second; row 2: own item third
    assert recall_at_k(sim, ks=(1, 2, 3)) == {"recall@1": 1 / 3, "recall@2": 2 / 3, "recall@3": 1.0}
    relevant = np.eye(3, dtype=bool)
    relevant[2, 0] = True  # row 2's caption is shared with item 0, which it ranks first
    assert recall_at_k(sim, ks=(1,), relevant=relevant)["recall@1"] == pytest.approx(2 / 3)
    ties = np.ones((2, 2))
    assert recall_at_k(ties, ks=(1,))["recall@1"] == 0.0  # ties count against the query


def test_nearest_neighbour_accuracy_and_chance():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert nearest_neighbour_accuracy(np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"], gallery, ["a", "b"]) == 1.0
    assert nearest_neighbour_accuracy(np.array([[0.9, 0.1], [0.2, 0.8]]), ["b", "b"], gallery, ["a", "b"]) == 0.5
    assert chance_artist_accuracy(["a", "a", "b", "b"], ["a", "b", "b", "b"]) == pytest.approx(0.5 * 0.25 + 0.5 * 0.75)


def test_conditioning_check_rewards_audio_like_its_artist():
    tracks = synthetic_tracks(4, seconds=(1.0, 1.5))
    e = DspEmbedder(window_seconds=1.0, hop_seconds=0.5)
    training = {a: [w for w, b in zip(tracks.waves, tracks.artists, strict=True) if b == a][:3] for a in set(tracks.artists)}
    held_out = {a: [w for w, b in zip(tracks.waves, tracks.artists, strict=True) if b == a][3:] for a in set(tracks.artists)}
    good = conditioning_check(e, held_out, training, tracks.sr)
    assert good["fraction_closer_to_own"] == 1.0 and good["mean_margin"] > 0
    assert good["chance"] == 0.25 and good["generations"] == 4
    names = sorted(held_out)
    swapped = {names[i]: held_out[names[(i + 1) % 4]] for i in range(4)}
    bad = conditioning_check(e, swapped, training, tracks.sr)
    assert bad["fraction_closer_to_own"] == 0.0 and bad["mean_margin"] < 0
    assert bad["per_artist"][names[0]]["nearest_artist"] == names[1]
    with pytest.raises(SongtraceError, match="no training tracks"):
        conditioning_check(e, {"nobody": held_out[names[0]]}, training, tracks.sr)
