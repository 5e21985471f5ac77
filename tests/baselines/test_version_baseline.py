"""The CLEWS-like `version` baseline finds a transposed, re-tempoed, re-orchestrated rendition."""

import numpy as np
import pytest
import torch

from songtrace.baselines.base import QueryItem, TrainingSet, get_method
from songtrace.baselines.version import chroma_cens, fit_length, query_windows
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError

SR = 8000


def render(notes, beat_s, harmonics, seed=0):
    """A melody of (midi pitch, beats) with a triad under it, as additive synthesis."""
    rng = np.random.default_rng(seed)
    out = []
    for pitch, beats in notes:
        n = int(beats * beat_s * SR)
        t = np.arange(n) / SR
        env = np.minimum(1.0, np.minimum(t / 0.01, (n / SR - t) / 0.02))
        tone = np.zeros(n)
        for p in (pitch, pitch - 12 + 4, pitch - 12 + 7):
            f0 = 440.0 * 2 ** ((p - 69) / 12)
            for h, a in enumerate(harmonics, start=1):
                tone += a * np.sin(2 * np.pi * f0 * h * t)
        out.append(env * tone)
    y = np.concatenate(out)
    return (0.2 * y / np.abs(y).max() + 1e-4 * rng.standard_normal(y.size)).astype(np.float32)


def random_melody(rng, n=24):
    return [(int(rng.integers(60, 76)), float(rng.choice([0.5, 1.0, 1.5]))) for _ in range(n)]


def tiny_training_set(waves):
    n = len(waves)
    lat = LatentSet(
        ids=[f"t{i}" for i in range(n)], artists=["a"] * n, splits=["train"] * n,
        latents=torch.zeros(n, 2, 8), n_frames=torch.full((n,), 8), text=torch.zeros(n, 3, 4),
        text_mask=torch.ones(n, 3, dtype=torch.bool), seconds_start=torch.zeros(n), seconds_total=torch.ones(n),
    )
    return TrainingSet(lat, audio_fn=lambda i: waves[int(i[1:])], sample_rate=SR)


def test_version_ranks_a_transposed_retempoed_rendition_first():
    rng = np.random.default_rng(3)
    melodies = [random_melody(rng) for _ in range(8)]
    waves = [render(m, 0.35, (1.0, 0.5, 0.25), seed=i) for i, m in enumerate(melodies)]
    train = tiny_training_set(waves)
    method = get_method("version")
    for target in (2, 5):
        # same piece, up a minor third, 12 % faster, a different timbre
        cover_notes = [(p + 3, b) for p, b in melodies[target]]
        cover = render(cover_notes, 0.35 / 1.12, (1.0, 0.1, 0.6, 0.3), seed=99)
        q = QueryItem("q", torch.zeros(2, 8), 8, torch.zeros(3, 4), torch.ones(3, dtype=torch.bool), wav=cover, sr=SR)
        scores = method.score(q, train)
        assert scores.shape == (8,) and np.all(np.isfinite(scores))
        assert int(np.argmax(scores)) == target
        others = np.delete(scores, target)
        assert scores[target] > others.max() + 0.05


def test_key_shift_invariance_is_exact_for_rolled_chroma():
    rng = np.random.default_rng(0)
    chroma = rng.random((12, 60)).astype(np.float32)
    a = query_windows(chroma, 40, 5, (1.0,))
    b = query_windows(np.roll(chroma, 5, axis=0), 40, 5, (1.0,))
    # the set of rows (all 12 transpositions) is the same
    assert np.allclose(np.sort(a, axis=0), np.sort(b, axis=0), atol=1e-6)


def test_fit_length_and_short_audio():
    p = np.arange(24, dtype=np.float32).reshape(12, 2)
    assert fit_length(p, 5).shape == (12, 5)
    assert np.allclose(fit_length(p, 2), p)
    c = chroma_cens(np.zeros(100, dtype=np.float32) + 1e-3, SR)
    assert c.shape[0] == 12 and c.shape[1] >= 1 and np.all(np.isfinite(c))


def test_bad_options_raise():
    with pytest.raises(SongtraceError, match="valid"):
        get_method("version", bogus=1)
    with pytest.raises(SongtraceError, match="unknown attribution method"):
        get_method("nope")
    with pytest.raises(SongtraceError):
        get_method("version", tempo_ratios=())
