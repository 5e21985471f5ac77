"""LDS, leave-one-out and artist-level metrics: exact on planted datamodels, equal to dattri's own LDS, NaN refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from songtrace.errors import SongtraceError
from songtrace.metrics.lds import (
    artist_credit,
    artist_spearman_per_query,
    bootstrap_lds,
    bootstrap_query_means,
    lds,
    lds_per_query,
    loo_correlation,
    percentile_interval,
    spearman_rows,
    subset_predictions,
)


def planted(n=30, m=40, q=5, seed=0, noise=0.0):
    """Scores and subset losses from an exactly linear datamodel: L(q, S) = c_q − Σ_{i∈S} τ(q, i) (+ noise)."""
    rng = np.random.default_rng(seed)
    tau = rng.normal(size=(q, n))
    masks = np.zeros((m, n), dtype=bool)
    for row in masks:
        row[rng.choice(n, n // 2, replace=False)] = True
    loss = 3.0 - (masks @ tau.T) + noise * rng.normal(size=(m, q))
    return tau, masks, loss


def test_a_perfect_datamodel_scores_one_and_its_negation_minus_one():
    tau, masks, loss = planted()
    assert np.allclose(lds_per_query(tau, masks, loss), 1.0)
    assert lds(-tau, masks, loss) == pytest.approx(-1.0)
    assert abs(lds(np.random.default_rng(1).normal(size=tau.shape), masks, loss)) < 0.3
    assert np.allclose(subset_predictions(tau, masks), (masks @ tau.T).T)


def test_lds_equals_dattris_lds_metric():
    dattri_metric = pytest.importorskip("dattri.metric", reason="dattri is not installed (pip install dattri==0.3.0)")
    tau, masks, loss = planted(noise=2.0, seed=3)
    scores = tau + np.random.default_rng(4).normal(size=tau.shape)
    ours = lds_per_query(scores, masks, loss)
    indices = torch.tensor(np.stack([np.flatnonzero(r) for r in masks]))
    theirs, _ = dattri_metric.lds(torch.tensor(scores.T), (torch.tensor(-loss), indices))
    assert np.allclose(ours, theirs.numpy(), atol=1e-10)
    assert 0 < ours.mean() < 1


def test_spearman_rows_matches_scipy_and_handles_ties_and_constants():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, size=(3, 20)).astype(float), rng.normal(size=(3, 20))
    for r in range(3):
        assert spearman_rows(a[r : r + 1], b[r : r + 1])[0] == pytest.approx(spearmanr(a[r], b[r]).correlation)
    assert spearman_rows(np.ones((1, 5)), b[:1, :5])[0] == 0.0


def test_loo_and_artist_metrics():
    rng = np.random.default_rng(0)
    effect = rng.normal(size=(4, 10))
    assert loo_correlation(effect, effect) == {"pooled": pytest.approx(1.0), "per_item": pytest.approx(1.0)}
    assert loo_correlation(-effect, effect)["pooled"] == pytest.approx(-1.0)
    item_artists = ["a", "a", "b", "c", "c", "c"]
    scores = rng.normal(size=(3, 6))
    credit = artist_credit(scores, item_artists, ["c", "a", "b"])
    assert np.allclose(credit[:, 1], scores[:, :2].sum(1)) and np.allclose(credit[:, 0], scores[:, 3:].sum(1))
    assert np.allclose(artist_spearman_per_query(scores, item_artists, ["c", "a", "b"], credit.T), 1.0)


def test_bootstrap_is_paired_and_brackets_the_estimate():
    tau, masks, loss = planted(noise=3.0)
    noisy = tau + np.random.default_rng(5).normal(size=tau.shape)
    samples = bootstrap_lds({"good": tau, "noisy": noisy}, masks, loss, n_boot=200, seed=0)
    lo, hi = percentile_interval(samples["good"])
    assert lo <= lds(tau, masks, loss) <= hi
    assert (samples["good"] - samples["noisy"]).mean() > 0
    means = bootstrap_query_means({"x": np.arange(5.0), "y": np.arange(5.0)}, 50, 0)
    assert np.array_equal(means["x"], means["y"])


def test_bad_inputs_are_refused():
    tau, masks, loss = planted()
    with pytest.raises(SongtraceError, match="NaN"):
        lds(np.full_like(tau, np.nan), masks, loss)
    with pytest.raises(SongtraceError, match="expected"):
        lds(tau, masks, loss.T)
    with pytest.raises(SongtraceError, match="training items"):
        subset_predictions(tau[:, :-1], masks)
