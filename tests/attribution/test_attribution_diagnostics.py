"""Ground-truth-free diagnostics: a hub method is flagged, query-specific scores are not."""

from __future__ import annotations

import numpy as np
import pytest

from songtrace.attribution.diagnostics import effective_rank, hub_share, mean_top_k_overlap, score_diagnostics
from songtrace.errors import SongtraceError


def test_a_method_returning_the_same_tracks_is_flagged():
    rng = np.random.default_rng(0)
    base = rng.normal(size=50)
    hubby = base[None] * rng.uniform(0.5, 2.0, size=(8, 1)) + 0.01 * rng.normal(size=(8, 50))
    d = score_diagnostics(hubby, [f"t{i}" for i in range(50)])
    top = {f"t{i}" for i in np.argsort(-base)[:10]}
    assert d["same_tracks_flag"] and d["hub_share"] == 1.0 and d["hub"] in top
    assert d["effective_rank"] < 2.0


def test_query_specific_scores_pass():
    scores = np.eye(8, 400) * 5 + np.random.default_rng(1).normal(size=(8, 400))
    d = score_diagnostics(scores)
    assert not d["same_tracks_flag"] and d["hub_share"] <= 0.5 and d["effective_rank"] > 5
    assert mean_top_k_overlap(scores, 10) < 0.5
    assert hub_share(scores[:1], 3)[0] == 1.0 and np.isnan(effective_rank(scores[:1]))


def test_nan_scores_are_refused():
    with pytest.raises(SongtraceError, match="NaN"):
        score_diagnostics(np.array([[np.nan, 1.0], [0.0, 1.0]]))
