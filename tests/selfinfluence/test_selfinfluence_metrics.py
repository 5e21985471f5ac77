"""Self-influence metrics on hand-made score vectors and embeddings."""

import math

import numpy as np
import pandas as pd
import pytest

from songtrace.errors import SongtraceError
from songtrace.selfinfluence.metrics import (
    artist_chance,
    artist_precision,
    bottom_rows,
    hub_frac,
    mean_cosine,
    normalize_rows,
    scale_k,
    summarize,
    target_metrics,
    target_rank,
    top_rows,
    version_hit,
)


def test_rank_is_one_for_a_strict_maximum_and_counts_ties_against_the_target():
    assert target_rank(np.array([0.1, 0.9, 0.3]), 1) == 1
    assert target_rank(np.array([0.1, 0.9, 0.3]), 2) == 2
    assert target_rank(np.array([0.1, 0.9, 0.3]), 0) == 3
    # a tie with another item: the target is not first
    assert target_rank(np.array([0.5, 0.5, 0.1]), 0) == 2
    assert target_rank(np.array([0.5, 0.5, 0.1]), 1) == 2
    # a constant score vector (nothing learned) ranks every target last
    assert target_rank(np.zeros(5), 3) == 5


def test_rank_refuses_non_finite_scores():
    with pytest.raises(SongtraceError, match="non-finite"):
        target_rank(np.array([0.1, np.nan, 0.3]), 0)


def test_top_and_bottom_rows_leave_out_the_target_and_break_ties_by_row():
    s = np.array([0.2, 0.9, 0.5, 0.5, -1.0])
    assert top_rows(s, 2, exclude=1).tolist() == [2, 3]
    assert top_rows(s, 3).tolist() == [1, 2, 3]
    assert bottom_rows(s, 2, exclude=4).tolist() == [0, 2]
    assert bottom_rows(s, 1).tolist() == [4]


def test_mean_cosine_of_top_and_bottom():
    e = normalize_rows(np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]))
    assert mean_cosine(e, 0, np.array([1])) == pytest.approx(1.0)
    assert mean_cosine(e, 0, np.array([1, 2])) == pytest.approx(0.5)
    assert mean_cosine(e, 0, np.array([3])) == pytest.approx(-1.0)
    assert math.isnan(mean_cosine(e, 0, np.array([], dtype=int)))


def test_artist_precision_and_chance():
    artists = ["a", "a", "b", "a", "c"]
    assert artist_precision(np.array([1, 2]), artists, 0) == 0.5
    assert artist_precision(np.array([1, 3]), artists, 0) == 1.0
    assert artist_chance(artists, 0) == pytest.approx(2 / 4)
    assert artist_chance(artists, 4) == 0.0


def test_version_hit_uses_the_version_group_and_the_top_list_without_the_target():
    groups = ["g1", "", "g1", "", "", ""]
    s = np.array([9.0, 8.0, 7.0, 1.0, 0.0, -1.0])  # target 0 first, its version (row 2) third overall
    assert version_hit(s, groups, 0, top=2) == 1.0  # rows 1, 2 are the top 2 others
    assert version_hit(s, groups, 0, top=1) == 0.0
    assert math.isnan(version_hit(s, groups, 1, top=3))  # no planted version


def test_target_metrics_bundle():
    rng = np.random.default_rng(0)
    emb = normalize_rows(rng.normal(size=(6, 4)))
    s = np.array([0.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    m = target_metrics(s, 1, emb, ["x", "y", "y", "x", "x", "y"], ["", "v", "", "", "", "v"], k=2, version_top=2, keep_top=3)
    assert m["rank"] == 1
    assert m["top_rows"] == [2, 3, 4]
    assert m["embed_topk"] == pytest.approx(float(np.mean(emb[[2, 3]] @ emb[1])))
    assert m["embed_botk"] == pytest.approx(float(np.mean(emb[[0, 5]] @ emb[1])))
    assert m["artist_precision"] == 0.5
    assert m["version_hit"] == 0.0
    with pytest.raises(SongtraceError, match="disagree"):
        target_metrics(s, 1, emb[:5], ["x"] * 6, [""] * 6, k=2)


def test_scale_k_follows_the_paper_ratio_with_a_floor():
    assert scale_k(115_000) == 100
    assert scale_k(360) == 5
    assert scale_k(1_150_000) == 1000
    assert scale_k(9) == 2  # never more than a third of the items


def test_hub_frac():
    assert hub_frac([[1, 2], [3, 4]]) == 0.5
    assert hub_frac([[1, 2], [1, 4], [1, 5]]) == 1.0


def test_summarize_splits_short_and_long():
    df = pd.DataFrame(
        {
            "rank": [1, 1, 30, 50],
            "embed_topk": [0.8, 0.6, 0.4, 0.2],
            "embed_botk": [0.1, 0.1, 0.3, 0.3],
            "artist_precision": [1.0, 0.5, 0.0, 0.0],
            "artist_chance": [0.1] * 4,
            "version_hit": [1.0, np.nan, 0.0, np.nan],
            "short": [False, False, True, True],
            "top_ids": [["a"], ["b"], ["a"], ["a"]],
        }
    )
    out = summarize(df)
    assert out["mean_rank"] == 20.5 and out["median_rank"] == 15.5 and out["frac_rank1"] == 0.5
    assert out["mean_rank_short"] == 40 and out["mean_rank_long"] == 1 and out["frac_rank1_long"] == 1.0
    assert out["n_targets_short"] == 2 and out["n_targets_long"] == 2
    assert out["embed_topk"] == pytest.approx(0.5) and out["embed_gap"] == pytest.approx(0.3)
    assert out["version_recall"] == 0.5 and out["n_version_targets"] == 2
    assert out["hub_frac"] == 0.75
    empty = summarize(df[df["short"]].assign(short=True))
    assert math.isnan(empty["mean_rank_long"]) and empty["n_targets_long"] == 0
