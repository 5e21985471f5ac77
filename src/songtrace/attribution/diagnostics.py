"""Diagnostics of an attribution run that need no ground truth: hubs and the effective rank of the score matrix.

A method that returns nearly the same tracks for every query (a "hub" method: e.g. a few tracks
with large gradients or unusual loss dominate every ranking) tells nothing about the query. Over
the run's queries × training items score matrix:

- hub share: the largest share of queries whose top k holds one same track;
- mean top-k overlap: the mean over query pairs of |top_k(q) ∩ top_k(q')| / k;
- effective rank: exp of the entropy of the normalised singular values of the row-centred matrix
  (Roy & Vetterli 2007); about 1 when every query gets the same scores up to scale.

`flag` is raised when the top lists overlap almost completely (≥ `overlap_flag`) over at least
three queries.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from songtrace.errors import SongtraceError

OVERLAP_FLAG = 0.8


def top_k_sets(scores: np.ndarray, k: int) -> list[set[int]]:
    """Per query, the rows of its k highest scores (ties keep data order)."""
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    k = min(k, s.shape[1])
    return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in s]


def hub_share(scores: np.ndarray, k: int = 10) -> tuple[float, int]:
    """(the largest share of queries whose top k holds one same track, that track's row)."""
    sets = top_k_sets(scores, k)
    counts = np.zeros(np.atleast_2d(scores).shape[1], dtype=np.int64)
    for s in sets:
        counts[list(s)] += 1
    row = int(np.argmax(counts))
    return float(counts[row] / max(1, len(sets))), row


def mean_top_k_overlap(scores: np.ndarray, k: int = 10) -> float:
    """Mean over query pairs of the shared fraction of their top k (NaN for a single query)."""
    sets = top_k_sets(scores, k)
    if len(sets) < 2:
        return float("nan")
    kk = max(1, min(k, np.atleast_2d(scores).shape[1]))
    vals = [len(a & b) / kk for i, a in enumerate(sets) for b in sets[i + 1 :]]
    return float(np.mean(vals))


def effective_rank(scores: np.ndarray) -> float:
    """exp(entropy of σ / Σσ) of the row-centred score matrix (1 for a single direction; NaN for one query)."""
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[0] < 2:
        return float("nan")
    sv = np.linalg.svd(s - s.mean(axis=1, keepdims=True), compute_uv=False)
    total = sv.sum()
    if total <= 0:
        return 1.0
    p = sv[sv > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def score_diagnostics(scores: np.ndarray, ids: list[str] | None = None, k: int = 10, overlap_flag: float = OVERLAP_FLAG) -> dict[str, Any]:
    """Hub share (and the hub's id), mean top-k overlap, effective rank and the same-tracks-for-every-query flag."""
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if not np.all(np.isfinite(s)):
        raise SongtraceError("diagnostics: the score matrix holds NaN or inf")
    share, row = hub_share(s, k)
    overlap = mean_top_k_overlap(s, k)
    flag = bool(s.shape[0] >= 3 and overlap >= overlap_flag)
    return {"n_queries": int(s.shape[0]), "k": int(k), "hub_share": share, "hub": ids[row] if ids is not None else row,
            "mean_top_k_overlap": overlap, "effective_rank": effective_rank(s), "same_tracks_flag": flag,
            "note": "nearly the same top tracks for every query" if flag else ""}
