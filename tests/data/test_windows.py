"""The one windowing rule (the tail is covered), the one L2 normaliser and the one window bank."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from songtrace.data.windows import WindowBank, l2_normalise, window_starts
from songtrace.errors import SongtraceError


def covered(n: int, window: int, hop: int) -> np.ndarray:
    """Which of the `n` steps lie in some window."""
    mask = np.zeros(n, dtype=bool)
    for s in window_starts(n, window, hop):
        mask[s : s + window] = True
    return mask


def test_short_track_is_one_whole_window():
    assert window_starts(150, 400, 100) == [0]
    assert window_starts(400, 400, 100) == [0]  # exactly one window long
    assert window_starts(1, 1, 1) == [0]


def test_exact_fit_adds_no_window():
    assert window_starts(1000, 400, 100) == [0, 100, 200, 300, 400, 500, 600]  # 600 + 400 = 1000
    assert window_starts(120, 10, 1) == list(range(111))  # the paper: 10 s every 1 s over 2 minutes, in seconds


def test_tail_remainder_gets_a_window_aligned_to_the_end():
    assert window_starts(450, 400, 100) == [0, 50]  # fixed-hop framing would drop the last 50 steps
    assert window_starts(1090, 400, 100) == [0, 100, 200, 300, 400, 500, 600, 690]
    assert window_starts(109, 10, 10) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99]


@pytest.mark.parametrize("n", [1, 7, 399, 400, 401, 450, 999, 1000, 1001, 1234])
@pytest.mark.parametrize("window,hop", [(400, 100), (400, 400), (400, 150), (7, 3)])
def test_every_step_is_covered_and_every_window_fits(n, window, hop):
    starts = window_starts(n, window, hop)
    assert covered(n, window, hop).all()
    assert starts == sorted(set(starts)) and starts[0] == 0
    if n >= window:
        assert all(s + window <= n for s in starts) and starts[-1] == n - window
    assert all(b - a <= hop for a, b in itertools.pairwise(starts))  # never a gap wider than a hop


def test_bad_window_or_hop_is_refused():
    with pytest.raises(SongtraceError, match="at least 1"):
        window_starts(100, 0, 10)
    with pytest.raises(SongtraceError, match="at least 1"):
        window_starts(100, 10, 0)


def test_l2_normalise_gives_unit_rows_and_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-2.0, 0.0]], dtype=np.float32)
    y = l2_normalise(x)
    assert y.dtype == np.float32 and np.allclose(y, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]])
    assert l2_normalise(x.astype(np.float64)).dtype == np.float64
    assert l2_normalise(np.array([3, 4])).dtype == np.float64 and np.allclose(l2_normalise(np.array([3, 4])), [0.6, 0.8])
    assert np.allclose(l2_normalise(np.array([[1.0, 0.0], [1.0, 0.0]]), axis=0), [[np.sqrt(0.5), 0.0], [np.sqrt(0.5), 0.0]])


def test_window_bank_is_the_brute_force_max_over_window_pairs():
    rng = np.random.default_rng(0)
    queries = [rng.standard_normal((int(rng.integers(1, 5)), 8)) for _ in range(4)]
    items = [rng.standard_normal((int(rng.integers(1, 6)), 8)) for _ in range(9)]
    bank = WindowBank.from_items(items)
    brute = np.array([[max(float(a @ b) for a in l2_normalise(q) for b in l2_normalise(i)) for i in items] for q in queries])
    whole = bank.max_similarity_matrix(queries)
    assert len(bank) == 9 and whole.shape == (4, 9)
    assert np.allclose(whole, brute, atol=1e-5)
    assert np.allclose(bank.max_similarity_matrix(queries, block=5), whole)  # slices of the bank do not change the result
    assert np.allclose(bank.max_similarity(queries[2]), whole[2])
    assert not np.allclose(whole, whole[:, :1])  # the example is not degenerate
    assert bank.max_similarity_matrix([]).shape == (0, 9)


def test_window_bank_refuses_empty_items_and_mismatched_queries():
    with pytest.raises(SongtraceError, match="no items"):
        WindowBank.from_items([])
    with pytest.raises(SongtraceError, match="item 1: expected at least one window"):
        WindowBank.from_items([np.ones((2, 3)), np.ones((0, 3))])
    bank = WindowBank.from_items([np.ones((2, 3))])
    with pytest.raises(SongtraceError, match="3-d vectors"):
        bank.max_similarity(np.ones((2, 4)))
