"""Train-to-Train self-influence metrics (seed 002, section 3.2, Table 1), as pure functions of score vectors.

One *target* z_tar is a training track that was unlearned; `scores[i] = τ(z_tar, z_i)` for every
training item i (larger = more attributed). Per target we measure:

- `rank`: R(z_tar), the target's position in the scores sorted high to low (1 = best). Ties count
  against the target (rank = number of items scoring >= the target), so a constant score vector
  never yields rank 1.
- `embed_topk` / `embed_botk`: mean embedding cosine between the target and its k highest / k lowest
  attributed *other* tracks (the target itself is left out: its cosine is trivially 1).
- `artist_precision`: share of those top k that are by the target's artist (`artist_chance` is the
  share expected from a random ranking).
- `version_hit`: 1 when one of the target's planted versions (same version group) is among the
  `version_top` most attributed other tracks, 0 when not, NaN when the target has no version.

`summarize` turns a table of per-target rows into one cell's metrics, also split by short/long
tracks (short = mostly padding), plus `hub_frac`: how often the single most frequent intruder
appears in the targets' top lists (the paper's "short tracks appear frequently" with M_L).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from songtrace.data.windows import l2_normalise
from songtrace.errors import SongtraceError

# Metrics of Table 1, averaged over targets; the extras beyond the paper come after.
TARGET_COLUMNS = ("rank", "embed_topk", "embed_botk", "artist_precision", "artist_chance", "version_hit")


def check_scores(scores: np.ndarray) -> np.ndarray:
    """Scores as a 1-D float64 array, refusing NaN/inf (a diverged unlearning step)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise SongtraceError(f"self-influence scores must be a non-empty vector, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise SongtraceError(f"self-influence scores hold {int((~np.isfinite(s)).sum())} non-finite values (unlearning diverged?)")
    return s


def target_rank(scores: np.ndarray, target: int) -> int:
    """R(z_tar): 1 + number of other items scoring at least as high as the target (ties count against it)."""
    s = check_scores(scores)
    return int(np.count_nonzero(s >= s[target]))


def order_by_score(scores: np.ndarray, exclude: int | None = None, descending: bool = True) -> np.ndarray:
    """Rows sorted by score (ties broken by row, ascending), optionally without one row."""
    s = check_scores(scores)
    rows = np.arange(s.size)
    key = -s if descending else s
    order = np.lexsort((rows, key))
    if exclude is not None:
        order = order[order != exclude]
    return order


def top_rows(scores: np.ndarray, k: int, exclude: int | None = None) -> np.ndarray:
    """The k most attributed rows (highest scores), leaving out `exclude`."""
    return order_by_score(scores, exclude, descending=True)[:k]


def bottom_rows(scores: np.ndarray, k: int, exclude: int | None = None) -> np.ndarray:
    """The k least attributed rows (lowest scores), leaving out `exclude`."""
    return order_by_score(scores, exclude, descending=False)[:k]


def normalize_rows(embeddings: np.ndarray) -> np.ndarray:
    """Embeddings as float64 unit rows, so dot products are cosines (`songtrace.data.windows.l2_normalise`)."""
    return l2_normalise(np.asarray(embeddings, dtype=np.float64))


def mean_cosine(unit_embeddings: np.ndarray, target: int, rows: np.ndarray) -> float:
    """Mean cosine between the target's embedding and those of `rows` (embeddings already unit norm)."""
    if len(rows) == 0:
        return float("nan")
    return float(np.mean(unit_embeddings[rows] @ unit_embeddings[target]))


def artist_precision(rows: np.ndarray, artists: Sequence[str], target: int) -> float:
    """Share of `rows` by the target's artist."""
    if len(rows) == 0:
        return float("nan")
    return float(np.mean([artists[int(r)] == artists[target] for r in rows]))


def artist_chance(artists: Sequence[str], target: int) -> float:
    """The artist precision a random ranking would get: the share of other items by the target's artist."""
    others = len(artists) - 1
    if others <= 0:
        return float("nan")
    return (sum(a == artists[target] for a in artists) - 1) / others


def version_rows(version_groups: Sequence[str], target: int) -> np.ndarray:
    """Rows of the target's planted versions: other items of its (non-empty) version group."""
    group = version_groups[target]
    if not group:
        return np.zeros(0, dtype=np.int64)
    return np.array([i for i, g in enumerate(version_groups) if g == group and i != target], dtype=np.int64)


def version_hit(scores: np.ndarray, version_groups: Sequence[str], target: int, top: int = 10) -> float:
    """1.0 if a planted version of the target is among its `top` most attributed other tracks, 0.0 if not, NaN if it has none."""
    versions = version_rows(version_groups, target)
    if versions.size == 0:
        return float("nan")
    return float(np.isin(versions, top_rows(scores, top, exclude=target)).any())


def target_metrics(
    scores: np.ndarray,
    target: int,
    unit_embeddings: np.ndarray,
    artists: Sequence[str],
    version_groups: Sequence[str],
    k: int,
    version_top: int = 10,
    keep_top: int = 10,
) -> dict[str, Any]:
    """All per-target metrics of one unlearned target, plus its `keep_top` most attributed rows."""
    s = check_scores(scores)
    if not 0 <= target < s.size:
        raise SongtraceError(f"target row {target} outside the {s.size} scored items")
    if unit_embeddings.shape[0] != s.size or len(artists) != s.size or len(version_groups) != s.size:
        raise SongtraceError("self-influence: scores, embeddings, artists and version groups disagree in length")
    top = top_rows(s, k, exclude=target)
    bottom = bottom_rows(s, k, exclude=target)
    return {
        "rank": target_rank(s, target),
        "embed_topk": mean_cosine(unit_embeddings, target, top),
        "embed_botk": mean_cosine(unit_embeddings, target, bottom),
        "artist_precision": artist_precision(top, artists, target),
        "artist_chance": artist_chance(artists, target),
        "version_hit": version_hit(s, version_groups, target, version_top),
        "top_rows": [int(r) for r in top_rows(s, keep_top, exclude=target)],
    }


def scale_k(n_items: int, paper_k: int = 100, paper_n: int = 115_000, minimum: int = 5) -> int:
    """The paper's k=100 of 115 k tracks scaled to a world of `n_items` (at least `minimum`, at most a third of the items)."""
    k = round(n_items * paper_k / paper_n)
    return int(max(1, min(max(k, minimum), max(1, (n_items - 1) // 3))))


def _mean(x: pd.Series) -> float:
    x = x.dropna()
    return float(x.mean()) if len(x) else float("nan")


def _rank_block(df: pd.DataFrame, suffix: str = "") -> dict[str, float]:
    """Mean/median rank, share ranked first and the embedding metrics of some per-target rows."""
    if len(df) == 0:
        nan = float("nan")
        return {f"mean_rank{suffix}": nan, f"median_rank{suffix}": nan, f"frac_rank1{suffix}": nan,
                f"embed_topk{suffix}": nan, f"embed_botk{suffix}": nan, f"n_targets{suffix}": 0}
    return {
        f"mean_rank{suffix}": float(df["rank"].mean()),
        f"median_rank{suffix}": float(df["rank"].median()),
        f"frac_rank1{suffix}": float((df["rank"] == 1).mean()),
        f"embed_topk{suffix}": _mean(df["embed_topk"]),
        f"embed_botk{suffix}": _mean(df["embed_botk"]),
        f"n_targets{suffix}": len(df),
    }


def hub_frac(top_lists: Sequence[Sequence[Any]]) -> float:
    """Share of targets whose top list holds the single most frequent item (1/len(top_lists) when none repeats)."""
    if not top_lists:
        return float("nan")
    counts = Counter(item for top in top_lists for item in set(top))
    return max(counts.values()) / len(top_lists) if counts else float("nan")


def summarize(per_target: pd.DataFrame) -> dict[str, Any]:
    """One grid cell's metrics from its per-target rows (columns `TARGET_COLUMNS`, `short`, `top_ids`)."""
    out: dict[str, Any] = _rank_block(per_target)
    out["embed_gap"] = out["embed_topk"] - out["embed_botk"]
    out["artist_precision"] = _mean(per_target["artist_precision"])
    out["artist_chance"] = _mean(per_target["artist_chance"])
    out["version_recall"] = _mean(per_target["version_hit"])
    out["n_version_targets"] = int(per_target["version_hit"].notna().sum())
    short = per_target["short"].astype(bool)
    out.update(_rank_block(per_target[short], "_short"))
    out.update(_rank_block(per_target[~short], "_long"))
    out["hub_frac"] = hub_frac([list(t) for t in per_target["top_ids"]]) if "top_ids" in per_target else float("nan")
    return out
