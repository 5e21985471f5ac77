"""Conditioning pieces: timing embedders, caption dropout and the null caption."""

from __future__ import annotations

import torch

from songtrace.data.batch import Conditioning
from songtrace.model.conditioning import FourierFeatures, NumberEmbedder


def test_number_embedder_clamps_to_max_seconds():
    emb = NumberEmbedder(features=8, max_value=10.0, fourier_dim=4)
    out = emb(torch.tensor([0.0, 5.0, 10.0, 25.0]))
    assert out.shape == (4, 8)
    assert torch.equal(emb(torch.tensor([10.0])), emb(torch.tensor([25.0])))  # beyond max_seconds: clamped
    assert not torch.allclose(out[0], out[1])


def test_fourier_features_shape():
    assert FourierFeatures(16)(torch.rand(5)).shape == (5, 16)


def test_drop_captions_replaces_only_dropped_items_by_the_null_caption():
    text = torch.randn(3, 4, 384)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    drop = torch.tensor([False, True, False])
    cond = Conditioning(text, mask, torch.zeros(3), torch.ones(3))
    t2, m2, _, _ = cond.drop(drop)
    null, null_mask, start, total = cond.select(slice(1, 2)).null()
    assert torch.equal(start, torch.zeros(1)) and torch.equal(total, torch.ones(1))  # timing is kept
    assert torch.equal(t2[1:2], null) and torch.equal(m2[1:2], null_mask) and not m2[1].any()
    assert torch.equal(t2[[0, 2]], text[[0, 2]]) and torch.equal(m2[[0, 2]], mask[[0, 2]])
