"""Loss-based membership inference AUC: 0.5 for one distribution, 1 for separable ones, equal to sklearn's AUC."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from songtrace.errors import SongtraceError
from songtrace.metrics.membership import auc_lower_is_member, loss_membership


def test_identical_distributions_give_half():
    x = np.random.default_rng(0).normal(size=200)
    assert auc_lower_is_member(x, x) == 0.5
    rng = np.random.default_rng(1)
    assert abs(auc_lower_is_member(rng.normal(size=4000), rng.normal(size=4000)) - 0.5) < 0.02


def test_separable_losses_give_one_and_reversed_give_zero():
    members, others = np.linspace(0.1, 0.2, 7), np.linspace(0.3, 0.9, 5)
    assert auc_lower_is_member(members, others) == 1.0
    assert auc_lower_is_member(others, members) == 0.0
    r = loss_membership(members, others, reference="valid tracks")
    assert r.auc == 1.0 and r.n_members == 7 and r.n_nonmembers == 5 and r.reference == "valid tracks"
    assert r.member_loss == pytest.approx(0.15)


def test_matches_sklearn_with_ties():
    rng = np.random.default_rng(2)
    m, n = rng.integers(0, 6, 30).astype(float), rng.integers(1, 8, 17).astype(float)
    labels = np.r_[np.ones(30), np.zeros(17)]
    assert auc_lower_is_member(m, n) == pytest.approx(roc_auc_score(labels, -np.r_[m, n]))


def test_refuses_empty_and_nan():
    with pytest.raises(SongtraceError, match="no member"):
        auc_lower_is_member([], [1.0])
    with pytest.raises(SongtraceError, match="NaN"):
        loss_membership([1.0, float("nan")], [1.0])
