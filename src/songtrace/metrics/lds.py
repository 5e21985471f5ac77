"""Counterfactual metrics of attribution scores against retraining: LDS, leave-one-out and artist-level correlations.

Sign convention: a score τ(ẑ, z_i) > 0 says z_i helped ẑ (its loss would rise without z_i).

- LDS (linear datamodeling score; Ilyas et al., TRAK / D-TRAK): for query q and subsets S_m,
  the prediction Σ_{i∈S_m} τ(q, i) against the output of the model retrained on S_m; the
  output here is −L(q, θ_{S_m}) (higher = q better off), so a perfect attribution has LDS 1.
  LDS of a method = mean over queries of the per-query Spearman over the M subsets.
- Leave-one-out: τ(q, i) against ΔL(q, i) = L(q, θ_{−i}) − L(q, θ_full).
- Artist level: Σ_{i by artist a} τ(q, i) against ΔL(q, a) from leaving artist a out, Spearman over artists.

Intervals are percentile bootstraps over queries and (for LDS) subsets, with the same resamples for
every method so differences between methods are paired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from songtrace.errors import SongtraceError


def _check_finite(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise SongtraceError(f"{name} holds NaN or inf values; a metric of them would be meaningless")
    return x


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of `a [R, K]` with the same row of `b [R, K]` (average ranks for ties).

    A row that is constant in either input has no rank correlation; it gets 0 (no predictive information).
    """
    a, b = np.atleast_2d(_check_finite("a", a)), np.atleast_2d(_check_finite("b", b))
    if a.shape != b.shape:
        raise SongtraceError(f"spearman_rows: shapes differ, {a.shape} vs {b.shape}")
    ra = rankdata(a, axis=1) - (a.shape[1] + 1) / 2
    rb = rankdata(b, axis=1) - (b.shape[1] + 1) / 2
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), 0.0)


def subset_predictions(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Σ_{i∈S_m} τ(q, i): `[Q, M]` from scores `[Q, N]` and subset masks `[M, N]`."""
    scores, masks = _check_finite("scores", scores), np.asarray(masks, dtype=np.float64)
    if scores.shape[-1] != masks.shape[-1]:
        raise SongtraceError(f"{scores.shape[-1]} scores per query but subsets over {masks.shape[-1]} training items")
    return np.atleast_2d(scores) @ masks.T


def lds_per_query(scores: np.ndarray, masks: np.ndarray, subset_loss: np.ndarray) -> np.ndarray:
    """Per query, Spearman over the M subsets of Σ_{i∈S_m} τ(q, i) and −L(q, θ_{S_m}): `[Q]` from `subset_loss [M, Q]`."""
    loss = _check_finite("subset losses", subset_loss)
    pred = subset_predictions(scores, masks)
    if loss.shape != pred.shape[::-1]:
        raise SongtraceError(f"subset losses have shape {loss.shape}, expected (subsets, queries) = {pred.shape[::-1]}")
    return spearman_rows(pred, -loss.T)


def lds(scores: np.ndarray, masks: np.ndarray, subset_loss: np.ndarray) -> float:
    """The LDS: mean over queries of `lds_per_query`."""
    return float(lds_per_query(scores, masks, subset_loss).mean())


def loo_correlation(scores_at_items: np.ndarray, loo_effect: np.ndarray) -> dict[str, float]:
    """τ(q, i) `[I, Q]` against ΔL(q, i) `[I, Q]` over the left-out items: pooled Spearman over all (item, query) pairs,
    and the mean over items of the Spearman across queries (which queries lose most without item i)."""
    s, e = _check_finite("scores", scores_at_items), _check_finite("leave-one-out effects", loo_effect)
    if s.shape != e.shape:
        raise SongtraceError(f"scores {s.shape} and leave-one-out effects {e.shape} differ in shape")
    return {"pooled": float(spearman_rows(s.reshape(1, -1), e.reshape(1, -1))[0]), "per_item": float(spearman_rows(s, e).mean())}


def artist_credit(scores: np.ndarray, item_artists: Sequence[str], artists: Sequence[str]) -> np.ndarray:
    """Σ over artist a's training items of τ(q, i): `[Q, A]` in the order of `artists`."""
    s = np.atleast_2d(_check_finite("scores", scores))
    item_artists = np.asarray(item_artists)
    if s.shape[-1] != len(item_artists):
        raise SongtraceError(f"{s.shape[-1]} scores per query but {len(item_artists)} item artists")
    return np.stack([s[:, item_artists == a].sum(1) for a in artists], axis=1)


def artist_spearman_per_query(scores: np.ndarray, item_artists: Sequence[str], artists: Sequence[str],
                              loao_effect: np.ndarray) -> np.ndarray:
    """Per query, Spearman over artists of the summed credit and ΔL(q, a) `[A, Q]` from leaving each artist out: `[Q]`."""
    credit = artist_credit(scores, item_artists, artists)
    effect = _check_finite("leave-one-artist-out effects", loao_effect)
    if effect.shape != credit.shape[::-1]:
        raise SongtraceError(f"artist effects have shape {effect.shape}, expected (artists, queries) = {credit.shape[::-1]}")
    return spearman_rows(credit, effect.T)


# --------------------------------------------------------------------------- bootstrap


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap samples."""
    x = np.asarray(samples, dtype=np.float64)
    lo, hi = np.percentile(x, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_query_means(per_query: Mapping[str, np.ndarray], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Bootstrap samples `[B]` of the mean over queries, one query resample shared by every method (paired)."""
    lengths = {len(v) for v in per_query.values()}
    if len(lengths) != 1:
        raise SongtraceError("every method needs a value for the same queries")
    (q,) = lengths
    idx = np.random.default_rng([seed, 31]).integers(0, q, size=(n_boot, q))
    return {name: np.asarray(v, dtype=np.float64)[idx].mean(1) for name, v in per_query.items()}


def bootstrap_lds(scores: Mapping[str, np.ndarray], masks: np.ndarray, subset_loss: np.ndarray, n_boot: int, seed: int
                  ) -> dict[str, np.ndarray]:
    """Bootstrap samples `[B]` of each method's LDS, resampling queries and subsets together (the same resamples for every method)."""
    loss = _check_finite("subset losses", subset_loss)
    m, q = loss.shape
    rng = np.random.default_rng([seed, 37])
    sub_idx = rng.integers(0, m, size=(n_boot, m))
    q_idx = rng.integers(0, q, size=(n_boot, q))
    out = {}
    for name, s in scores.items():
        pred = subset_predictions(s, masks)  # [Q, M]
        vals = np.empty(n_boot)
        for b in range(n_boot):
            qs, ms = q_idx[b], sub_idx[b]
            vals[b] = spearman_rows(pred[qs][:, ms], -loss[ms][:, qs].T).mean()
        out[name] = vals
    return out
