"""Statistics of the method comparison (seed 002, section 3.3, Figs. 1-2): normalisations, concentration,
correlations between methods, and planted-source hit rates.

All functions are pure: they take score arrays (`[N]` for one query or `[Q, N]` for Q queries, one
score per training item, larger = more attributed) and return numbers or tables.

Normalisations (per query, over the N training items):
- `minmax`: (s − min) / (max − min), Fig. 1 left; a constant vector maps to 0.
- `softmax`: softmax of the *standardised* scores, (s − mean) / std (temperature 1). Raw softmax
  would depend on each method's units (a loss difference of 1e-4 gives a flat softmax, a cosine
  of 0.9 a sharp one), so the scores are put on one scale first; then the distribution sums to 1
  and its shape says how concentrated the attribution is (Fig. 1 right).
- `positive`: max(s, 0) / Σ max(s, 0), the share of positive influence (as credit shares use);
  meaningful for signed scores such as τ, uniform-ish for all-positive similarities.

Concentration of a distribution p over N items: `top1_share` = max p; `top10_share` = the sum of
the 10 largest; `entropy` = −Σ p log p in nats (log N for uniform, 0 for one-hot) and
`norm_entropy` = entropy / log N; `gini` = Σ_i (2i − N − 1) p_(i) / (N Σ p) with p ascending
(0 for uniform, (N − 1)/N for one-hot).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from songtrace.errors import SongtraceError

NORMALISATIONS = ("minmax", "softmax", "positive")


def _rows(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim not in (1, 2) or s.shape[-1] == 0:
        raise SongtraceError(f"scores must be [N] or [Q, N] with N > 0, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise SongtraceError("scores contain NaN or infinite values")
    return s


def minmax(scores: np.ndarray) -> np.ndarray:
    """Per-query min-max scaling to [0, 1] (a constant query maps to 0)."""
    s = _rows(scores)
    lo, hi = s.min(axis=-1, keepdims=True), s.max(axis=-1, keepdims=True)
    span = hi - lo
    return np.where(span > 0, (s - lo) / np.where(span > 0, span, 1.0), 0.0)


def standardise(scores: np.ndarray) -> np.ndarray:
    """Per-query (s − mean) / std (a constant query maps to 0)."""
    s = _rows(scores)
    sd = s.std(axis=-1, keepdims=True)
    return np.where(sd > 0, (s - s.mean(axis=-1, keepdims=True)) / np.where(sd > 0, sd, 1.0), 0.0)


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Per-query softmax of the standardised scores (sums to 1 over the training items)."""
    if temperature <= 0:
        raise SongtraceError(f"softmax temperature must be > 0, got {temperature}")
    z = standardise(scores) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def positive_part(scores: np.ndarray) -> np.ndarray:
    """Per-query max(s, 0) / Σ max(s, 0); uniform when no score is positive."""
    s = _rows(scores)
    p = np.clip(s, 0.0, None)
    total = p.sum(axis=-1, keepdims=True)
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / s.shape[-1])


NORMALISERS = {"minmax": minmax, "softmax": softmax, "positive": positive_part}


def normalise(scores: np.ndarray, how: str) -> np.ndarray:
    """Apply one of `NORMALISATIONS` per query."""
    if how not in NORMALISERS:
        raise SongtraceError(f"unknown normalisation {how!r}; valid: {', '.join(NORMALISATIONS)}")
    return NORMALISERS[how](scores)


# --------------------------------------------------------------------------- concentration


def concentration(p: np.ndarray) -> dict[str, float]:
    """top1_share, top10_share, entropy (nats), norm_entropy and gini of one distribution p `[N]` (sums to 1)."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or np.any(p < 0) or not np.isclose(p.sum(), 1.0, atol=1e-6):
        raise SongtraceError("concentration needs a non-negative [N] distribution summing to 1")
    n = p.size
    desc = np.sort(p)[::-1]
    nz = p[p > 0]
    entropy = float(-(nz * np.log(nz)).sum())
    asc = desc[::-1]
    gini = float(((2 * np.arange(1, n + 1) - n - 1) * asc).sum() / (n * asc.sum()))
    return {
        "top1_share": float(desc[0]),
        "top10_share": float(desc[:10].sum()),
        "entropy": entropy,
        "norm_entropy": entropy / np.log(n) if n > 1 else 0.0,
        "gini": gini,
    }


def concentration_stats(scores: np.ndarray, how: str = "softmax") -> dict[str, float]:
    """Concentration of scores `[N]` (or the mean over queries of `[Q, N]`) after a normalisation.

    `how` is "softmax" (standardised-softmax) or "positive" (positive-part shares).
    """
    p = np.atleast_2d(normalise(scores, how))
    rows = [concentration(r) for r in p]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def concentration_table(scores_by_method: Mapping[str, np.ndarray], hows: Sequence[str] = ("softmax", "positive")) -> pd.DataFrame:
    """One row per (method, normalisation, statistic): mean and std over queries."""
    rows = []
    for method, scores in scores_by_method.items():
        for how in hows:
            per_query = [concentration(r) for r in np.atleast_2d(normalise(scores, how))]
            for stat in per_query[0]:
                vals = np.array([r[stat] for r in per_query])
                rows.append({"method": method, "normalisation": how, "statistic": stat,
                             "mean": float(vals.mean()), "std": float(vals.std()), "n_queries": len(vals)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- correlations


def _corr(a: np.ndarray, b: np.ndarray, kind: str) -> float:
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    if kind == "pearson":
        return float(np.corrcoef(a, b)[0, 1])
    return float(stats.spearmanr(a, b).statistic)


def correlation_matrix(scores_by_method: Mapping[str, np.ndarray], kind: str = "pearson", pooled: bool = False) -> pd.DataFrame:
    """Method x method correlation of scores over training items.

    Default: the mean over queries of the per-query correlation (constant queries are skipped).
    `pooled`: one correlation over all (query, item) pairs of the per-query min-max-normalised
    scores (Fig. 1's scale).
    """
    if kind not in ("pearson", "spearman"):
        raise SongtraceError(f"unknown correlation {kind!r}; valid: pearson, spearman")
    names = list(scores_by_method)
    mats = {m: np.atleast_2d(_rows(scores_by_method[m])) for m in names}
    shapes = {m: v.shape for m, v in mats.items()}
    if len(set(shapes.values())) > 1:
        raise SongtraceError(f"every method needs scores of the same shape [Q, N]; got {shapes}")
    out = np.eye(len(names))
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            b = names[j]
            if pooled:
                r = _corr(minmax(mats[a]).ravel(), minmax(mats[b]).ravel(), kind)
            else:
                per_q = [_corr(x, y, kind) for x, y in zip(mats[a], mats[b], strict=True)]
                per_q = [v for v in per_q if np.isfinite(v)]
                r = float(np.mean(per_q)) if per_q else float("nan")
            out[i, j] = out[j, i] = r
    return pd.DataFrame(out, index=names, columns=names)


# --------------------------------------------------------------------------- planted ground truth


def source_rank(scores: np.ndarray, ids: Sequence[str], true_ids: Sequence[str], exclude: Sequence[str] = ()) -> int:
    """Rank (1 = best) of the best-ranked true source among items not excluded; 0 if no true source is present.

    Ties are resolved against the true source (the rank counts every item scoring at least as high).
    """
    s = np.asarray(scores, dtype=np.float64)
    keep = np.array([i not in set(exclude) for i in ids])
    truth = np.array([i in set(true_ids) for i in ids]) & keep
    if not truth.any():
        return 0
    best = s[truth].max()
    return int(((s >= best) & keep & ~truth).sum() + 1)


def hit_rates(ranks: Sequence[int], ks: Sequence[int] = (1, 10)) -> dict[str, float]:
    """Share of queries whose true source ranks within each k, and the mean reciprocal rank (rank 0 = absent)."""
    r = np.asarray([x for x in ranks if x > 0], dtype=np.float64)
    out = {f"hit@{k}": float((r <= k).mean()) if r.size else float("nan") for k in ks}
    out["mrr"] = float((1.0 / r).mean()) if r.size else float("nan")
    out["n_queries"] = int(r.size)
    return out


def curve_stats(scores_by_method: Mapping[str, np.ndarray], reference: str, how: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fig. 1: per method, mean and std over queries of the normalised scores of the items ordered by `reference`'s score.

    For each query the training items are sorted by the reference method's score (descending) and
    every method's normalised scores are read in that order; position r is then averaged over queries.
    """
    if reference not in scores_by_method:
        raise SongtraceError(f"reference method {reference!r} not among {sorted(scores_by_method)}")
    ref = np.atleast_2d(_rows(scores_by_method[reference]))
    order = np.argsort(-ref, axis=1, kind="stable")
    out = {}
    for m, s in scores_by_method.items():
        sorted_norm = np.take_along_axis(np.atleast_2d(normalise(s, how)), order, axis=1)
        out[m] = (sorted_norm.mean(axis=0), sorted_norm.std(axis=0))
    return out
