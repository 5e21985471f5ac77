"""Frechet distance: exact cases, numerical agreement with scipy, FD-infinity and the sample caveat."""

import numpy as np
import pytest
import scipy.linalg

from songtrace.errors import SongtraceError
from songtrace.metrics.fd import fd_infinity, fd_result, frechet_distance, frechet_from_stats


def _sqrtm_fd(mu1, s1, mu2, s2):
    """The textbook formula with scipy's sqrtm, as pytorch-fid computes it."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fd_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).standard_normal((200, 16))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fd_is_symmetric_and_positive():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((150, 8)), rng.standard_normal((120, 8)) * 1.5 + 0.3
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(a, b) > 0.5


def test_closed_form_for_two_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)  # 5 + (1 + 1 + 4)
    assert frechet_from_stats(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(11.0)


def test_matches_scipy_sqrtm_on_full_covariances():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    assert frechet_from_stats(mu1, s1, mu2, s2) == pytest.approx(_sqrtm_fd(mu1, s1, mu2, s2), rel=1e-7)


def test_sample_fd_approaches_the_gaussian_value():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((20000, 4))
    b = rng.standard_normal((20000, 4)) * 2.0 + 1.0
    assert frechet_distance(a, b) == pytest.approx(4 * 1.0 + 4 * 1.0, rel=0.03)  # |mu|^2 = 4, sum (1 - 2)^2 = 4


def test_singular_covariances_stay_finite():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((5, 32)), rng.standard_normal((6, 32))  # fewer samples than dimensions
    fd = frechet_distance(a, b)
    assert np.isfinite(fd) and fd > 0


def test_fd_infinity_removes_the_small_sample_bias():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((400, 16)), rng.standard_normal((400, 16))  # same distribution: true FD is 0
    fd = frechet_distance(a, b)
    fd_inf, r2, curve = fd_infinity(a, b, min_n=60, steps=8)
    assert fd_inf < fd
    assert abs(fd_inf) < 0.5 * fd
    assert r2 > 0.9
    assert curve[0][1] > curve[-1][1]  # smaller subsamples, larger FD


def test_result_records_counts_and_the_caveat():
    rng = np.random.default_rng(6)
    small = fd_result(rng.standard_normal((10, 16)), rng.standard_normal((12, 16)), embedder="x", embedder_hash="h")
    assert (small.n_a, small.n_b, small.dim) == (10, 12, 16)
    assert "fewer samples than dimensions" in small.note
    assert small.fd_inf is not None
    big = fd_result(rng.standard_normal((100, 4)), rng.standard_normal((100, 4)))
    assert big.note == "" and big.to_dict()["n_a"] == 100


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(SongtraceError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(SongtraceError, match="dimensions differ"):
        frechet_distance(np.ones((5, 3)) * np.arange(5)[:, None], np.ones((5, 4)) * np.arange(5)[:, None])
    with pytest.raises(SongtraceError, match="NaN"):
        frechet_distance(np.full((3, 2), np.nan), np.zeros((3, 2)))
