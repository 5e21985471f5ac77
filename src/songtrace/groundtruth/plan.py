"""Which models to retrain: random subsets (LDS), leave-one-out and leave-one-artist-out, each a `Job`.

Pure functions of the config and the training set's ids and artists, so the plan is checked
without training anything and a resumed run sees the same jobs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from songtrace.errors import SongtraceError
from songtrace.groundtruth.config import GroundTruthConfig

KINDS = ("full", "subset", "loo", "loao")


@dataclasses.dataclass(frozen=True)
class Job:
    """One model to train with the recipe: which items it sees and with which seed."""

    name: str  # the directory name of the model and its losses
    kind: str  # full | subset | loo | loao
    seed: int
    exclude_ids: tuple[str, ...]  # training items left out (empty: the whole train split, θ0's data)
    target: str = ""  # subset index, left-out item id or left-out artist


def subset_masks(n_items: int, n_subsets: int, alpha: float, seed: int) -> np.ndarray:
    """`[M, N]` bool: each row a uniform random subset of round(α·N) items (at least 1, at most N − 1)."""
    if n_items < 2:
        raise SongtraceError(f"subsets need at least 2 training items, got {n_items}")
    size = min(n_items - 1, max(1, round(alpha * n_items)))
    rng = np.random.default_rng([seed, 2024])
    masks = np.zeros((n_subsets, n_items), dtype=bool)
    for m in range(n_subsets):
        masks[m, rng.choice(n_items, size=size, replace=False)] = True
    return masks


def loo_targets(ids: Sequence[str], artists: Sequence[str], n: int) -> list[str]:
    """`n` items to leave out: one each from the artists with the smallest catalogues (ties by name), first item by id.

    Removing one of an artist's few tracks is where a single track's effect on that artist's queries
    is largest, so these are the items whose leave-one-out effect can stand out of the seed noise.
    """
    by_artist: dict[str, list[str]] = {}
    for item, artist in zip(ids, artists, strict=True):
        by_artist.setdefault(artist, []).append(item)
    order = sorted(by_artist, key=lambda a: (len(by_artist[a]), a))
    return [sorted(by_artist[a])[0] for a in order[:n]]


def loao_targets(artists: Sequence[str], n: int) -> list[str]:
    """Every artist (n = 0), or the n with the largest catalogues (ties by name); in name order."""
    every = sorted(set(artists))
    if n <= 0 or n >= len(every):
        return every
    counts = {a: list(artists).count(a) for a in every}
    return sorted(sorted(every, key=lambda a: (-counts[a], a))[:n])


def slug(text: str) -> str:
    """A file-name-safe form of an id or artist name."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "x"


def plan_jobs(config: GroundTruthConfig, ids: Sequence[str], artists: Sequence[str]) -> tuple[list[Job], np.ndarray]:
    """Every job of the stage (full-data models first, θ0 the very first) and the subset masks `[M, N]`."""
    ids = list(ids)
    jobs = [Job(f"full-s{s}", "full", s, ()) for s in sorted(config.full_seeds(), key=lambda s: (s != config.base_seed, s))]
    masks = subset_masks(len(ids), config.subsets, config.alpha, config.subset_seed)
    for m, row in enumerate(masks):
        out = tuple(i for i, k in zip(ids, row, strict=True) if not k)
        jobs += [Job(f"subset-{m:03d}-s{s}", "subset", s, out, str(m)) for s in config.subset_train_seeds]
    for item in loo_targets(ids, artists, config.loo_items):
        jobs += [Job(f"loo-{slug(item)}-s{s}", "loo", s, (item,), item) for s in config.loo_seeds]
    if config.loao:
        for artist in loao_targets(artists, config.loao_artists):
            out = tuple(i for i, a in zip(ids, artists, strict=True) if a == artist)
            if len(out) < len(ids):
                jobs += [Job(f"loao-{slug(artist)}-s{s}", "loao", s, out, artist) for s in config.loao_seeds]
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise SongtraceError("two ground-truth jobs got the same name (artist or item names that differ only in punctuation)")
    return jobs, masks
