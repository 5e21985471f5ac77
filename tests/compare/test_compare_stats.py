"""Concentration statistics, normalisations, correlations, planted-source ranks and the comparison plots."""

import numpy as np
import pytest

from songtrace.compare.plots import plot_correlations, plot_score_curves
from songtrace.compare.stats import (
    concentration,
    concentration_stats,
    concentration_table,
    correlation_matrix,
    curve_stats,
    hit_rates,
    minmax,
    positive_part,
    softmax,
    source_rank,
)
from songtrace.errors import SongtraceError


def test_uniform_and_one_hot_concentration():
    n = 50
    u = concentration(np.full(n, 1 / n))
    assert u["entropy"] == pytest.approx(np.log(n))
    assert u["norm_entropy"] == pytest.approx(1.0)
    assert u["gini"] == pytest.approx(0.0, abs=1e-12)
    assert u["top1_share"] == pytest.approx(1 / n) and u["top10_share"] == pytest.approx(10 / n)
    one = np.zeros(n)
    one[7] = 1.0
    h = concentration(one)
    assert h["top1_share"] == 1.0 and h["top10_share"] == 1.0 and h["entropy"] == 0.0
    assert h["gini"] == pytest.approx((n - 1) / n)
    with pytest.raises(SongtraceError):
        concentration(np.array([0.5, 0.2]))


def test_concentration_stats_on_scores():
    n = 40
    flat = concentration_stats(np.full(n, 3.0), "softmax")
    assert flat["entropy"] == pytest.approx(np.log(n)) and flat["gini"] == pytest.approx(0.0, abs=1e-12)
    spike = np.zeros(n)
    spike[0] = 5.0
    assert concentration_stats(spike, "positive")["top1_share"] == 1.0
    # a spiky score vector is more concentrated than a gradual one under the standardised softmax
    gradual = np.linspace(1, 0, n)
    assert concentration_stats(spike, "softmax")["gini"] > concentration_stats(gradual, "softmax")["gini"]
    # scale and shift of the scores do not change the softmax view
    s = np.random.default_rng(0).standard_normal((3, n))
    a, b = concentration_stats(s, "softmax"), concentration_stats(1e-4 * s + 7, "softmax")
    assert all(a[k] == pytest.approx(b[k]) for k in a)
    t = concentration_table({"m": s}, ("softmax", "positive"))
    assert set(t["statistic"]) == {"top1_share", "top10_share", "entropy", "norm_entropy", "gini"}
    assert len(t) == 10 and (t["n_queries"] == 3).all()


def test_normalisations():
    s = np.array([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]])
    assert np.allclose(minmax(s), [[0, 1, 0.5], [0, 0, 0]])
    p = softmax(s)
    assert np.allclose(p.sum(1), 1) and np.allclose(p[1], 1 / 3) and p[0].argmax() == 1
    assert np.allclose(positive_part(np.array([-1.0, 1.0, 3.0])), [0, 0.25, 0.75])
    assert np.allclose(positive_part(np.array([-1.0, -2.0])), [0.5, 0.5])


def test_correlation_matrix_on_known_vectors():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 30))
    scores = {"a": a, "affine": 3 * a + 1, "neg": -a, "cube": a**3}
    p = correlation_matrix(scores, "pearson")
    assert p.loc["a", "affine"] == pytest.approx(1.0) and p.loc["a", "neg"] == pytest.approx(-1.0)
    assert 0.5 < p.loc["a", "cube"] < 1.0
    s = correlation_matrix(scores, "spearman")
    assert s.loc["a", "cube"] == pytest.approx(1.0)  # monotone
    assert np.allclose(np.diag(p.to_numpy()), 1.0) and np.allclose(p.to_numpy(), p.to_numpy().T)
    # hand check of one per-query Pearson mean
    x, y = a, a + rng.standard_normal(a.shape)
    expected = np.mean([np.corrcoef(x[q], y[q])[0, 1] for q in range(4)])
    assert correlation_matrix({"x": x, "y": y}).loc["x", "y"] == pytest.approx(expected)
    pooled = correlation_matrix({"x": x, "y": y}, pooled=True).loc["x", "y"]
    assert pooled == pytest.approx(np.corrcoef(minmax(x).ravel(), minmax(y).ravel())[0, 1])
    with pytest.raises(SongtraceError, match="same shape"):
        correlation_matrix({"x": x, "y": y[:, :5]})


def test_source_rank_and_hit_rates():
    ids = ["a", "b", "c", "d"]
    s = np.array([0.9, 0.5, 0.7, 0.1])
    assert source_rank(s, ids, ["c"]) == 2
    assert source_rank(s, ids, ["c"], exclude=["a"]) == 1
    assert source_rank(s, ids, ["d", "b"]) == 3
    assert source_rank(s, ids, ["zz"]) == 0
    r = hit_rates([1, 3, 12, 0])
    assert r["hit@1"] == pytest.approx(1 / 3) and r["hit@10"] == pytest.approx(2 / 3) and r["n_queries"] == 3
    assert r["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 12) / 3)


def test_curves_follow_the_reference_order_and_plots_are_written(tmp_path):
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((3, 25))
    scores = {"unlearning": ref, "embedding": ref + 0.5 * rng.standard_normal(ref.shape)}
    curves = curve_stats(scores, "unlearning", "minmax")
    mean, std = curves["unlearning"]
    assert mean[0] == pytest.approx(1.0) and std[0] == 0 and np.all(np.diff(mean) <= 1e-12)
    f1 = plot_score_curves(scores, "unlearning", tmp_path / "fig1.png")
    f2 = plot_correlations(correlation_matrix(scores), correlation_matrix(scores, "spearman"), tmp_path / "fig2.png")
    for f in (f1, f2):
        assert f.exists() and f.read_bytes()[:4] == b"\x89PNG"
