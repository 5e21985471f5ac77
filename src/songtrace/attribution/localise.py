"""Time-localised attribution: which training tracks explain which moments of a query (beyond seed 002).

The query's real frames are cut into consecutive windows that tile it (`tile_windows`). Each window
is unlearned on its own: Eq. 6 with the unlearning loss restricted to the window's frames (M_U
restricted to the window: the other frames leave the loss and, in a model that masks padded keys
as the demo DiT does, its attention; `unlearn(..., frames=...)`). Every training item is then scored against each window's θ' (τ, Eq. 2),
all windows of all queries and the whole queries in one pass over the data, with the same timesteps
and noise for θ0 and every θ' (common random numbers). The windows of one query share its noise
plan (seeded by the query id), so they differ only in which frames they unlearn.

In memory: `localise_queries(model, fisher, latents, queries, config)`. From artifact directories
(`songtrace localise`): `localise(...)` writes `windows.parquet` (query_id, window, start_frame,
end_frame, start_s, end_s, train_id, artist, title, score, rank within the window, config_hash; one
row per window and training item, in data order) beside the whole-query `scores.parquet` and
`credits.parquet` of an attribution run, so a localisation run is also an attribution run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from songtrace.artifacts import StageConfig, begin_stage, check_positive, finish_stage, hash_json, hash_tensors, read_parquet, write_parquet
from songtrace.attribution.fisher import Fisher
from songtrace.attribution.query import Query
from songtrace.attribution.run import (
    Attribution,
    AttributionRun,
    credits_table,
    item_titles,
    load_attribution,
    load_run_inputs,
    ranking_table,
    save_generations,
    write_score_tables,
)
from songtrace.attribution.score import ScoreConfig, base_losses, ranks, score_many
from songtrace.attribution.unlearn import UnlearnConfig, delta_norm, unlearn
from songtrace.data.latents import LatentSet, frame_rate
from songtrace.errors import SongtraceError
from songtrace.home import resolve_home
from songtrace.model.task import ModelTask
from songtrace.progress import progress

WINDOWS_FILE = "windows.parquet"


@dataclasses.dataclass(frozen=True)
class LocaliseConfig(StageConfig):
    """One time-localised attribution run: the window length, the unlearning step (Eq. 6) and the scoring of τ (Eq. 2).

    window_seconds: length of the windows that tile each query (a remainder shorter than half a
    window joins the last window); unlearn / score: as `AttributeConfig`'s, used for every window
    and for the whole query.
    """

    window_seconds: float = 2.0
    unlearn: UnlearnConfig = dataclasses.field(default_factory=UnlearnConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)

    def __post_init__(self) -> None:
        if not math.isfinite(self.window_seconds):
            raise SongtraceError(f"window_seconds must be finite, got {self.window_seconds}")
        check_positive("window_seconds", self.window_seconds)


# --------------------------------------------------------------------------- windows (pure)


def frames_per_window(window_seconds: float, rate: float) -> int:
    """Latent frames in a window of `window_seconds` at `rate` frames per second (at least 1)."""
    if not (math.isfinite(window_seconds) and window_seconds > 0 and math.isfinite(rate) and rate > 0):
        raise SongtraceError(f"window length ({window_seconds} s) and frame rate ({rate} frames/s) must be positive and finite")
    return max(1, round(window_seconds * rate))


def tile_windows(n_frames: int, window: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges of consecutive windows of `window` frames that tile frames 0 .. n_frames.

    Disjoint, in order, covering every real frame once; a remainder shorter than half a window joins
    the last window (a window of a frame or two would be all noise), so the last one holds between
    half a window and one and a half.
    """
    if n_frames < 1 or window < 1:
        raise SongtraceError(f"cannot cut {n_frames} frames into windows of {window} frames")
    bounds = [(s, min(n_frames, s + window)) for s in range(0, n_frames, window)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < window / 2:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds


def window_frames(windows: Sequence[tuple[int, int]], length: int) -> torch.Tensor:
    """`[W, length]` bool: row w is True on window w's frames."""
    out = torch.zeros(len(windows), length, dtype=torch.bool)
    for w, (start, end) in enumerate(windows):
        if not 0 <= start < end <= length:
            raise SongtraceError(f"window [{start}, {end}) does not fit a latent of {length} frames")
        out[w, start:end] = True
    return out


# --------------------------------------------------------------------------- in memory


@dataclasses.dataclass
class Localisation:
    """The result for one query: τ per window and training item, and the whole query's attribution."""

    query_id: str
    windows: list[tuple[int, int]]  # [start, end) latent frames
    rate: float  # latent frames per second
    scores: torch.Tensor  # [W, N] float64, data order
    table: pd.DataFrame  # one row per (window, training item), windows in order, items in data order
    whole: Attribution

    def top(self, k: int = 5) -> pd.DataFrame:
        """The k most attributed training items of every window."""
        return self.table[self.table["rank"] <= k].sort_values(["window", "rank"], kind="stable").reset_index(drop=True)


def windows_table(
    query_id: str,
    windows: Sequence[tuple[int, int]],
    rate: float,
    scores: torch.Tensor,
    data: LatentSet,
    titles: Mapping[str, str] | None = None,
    config_hash: str = "",
) -> pd.DataFrame:
    """One row per (window, training item): where the window lies (frames, seconds), τ and its rank within the window."""
    titles = titles or {}
    parts = []
    for w, (start, end) in enumerate(windows):
        parts.append(pd.DataFrame({
            "query_id": query_id,
            "window": w,
            "start_frame": start,
            "end_frame": end,
            "start_s": start / rate,
            "end_s": end / rate,
            "train_id": data.ids,
            "artist": data.artists,
            "title": [titles.get(i, "") for i in data.ids],
            "score": scores[w].numpy(),
            "rank": ranks(scores[w]).numpy(),
            "config_hash": config_hash,
        }))
    return pd.concat(parts, ignore_index=True)


def localise_queries(
    model: nn.Module | ModelTask,
    fisher: Fisher,
    latents: LatentSet,
    queries: Sequence[Query],
    config: LocaliseConfig,
    base: torch.Tensor | None = None,
    titles: Mapping[str, str] | None = None,
) -> list[Localisation]:
    """Unlearn every window of every query and each whole query (Eq. 6), and score all of them in one data pass (Eq. 2).

    `base` (from `base_losses` with the same score config and mask) saves recomputing L(z_i, θ0).
    """
    data = latents.subset(config.score.split)
    rate = frame_rate(latents.seconds_total, latents.n_frames)
    window = frames_per_window(config.window_seconds, rate)
    length = int(latents.latent_shape[1])
    mask_loss = config.unlearn.mask_loss
    if base is None:
        base = base_losses(model, latents, config.score, mask_loss)
    plans, deltas = [], []
    for q in progress(queries, total=len(queries), desc="unlearn windows", unit="query"):
        if len(q.batch) != 1:
            raise SongtraceError(f"query {q.query_id!r}: localising takes one-item queries, got {len(q.batch)} items")
        bounds = tile_windows(int(q.batch.n_frames[0]), window)
        masks = window_frames(bounds, length)
        whole = unlearn(model, fisher, q.batch, config.unlearn)
        parts = [unlearn(model, fisher, q.batch, config.unlearn, frames=masks[w : w + 1]) for w in range(len(bounds))]
        plans.append((q, bounds, whole, parts))
        deltas += [whole, *parts]
    scores = score_many(model, deltas, latents, config.score, mask_loss, base=base)
    if not bool(torch.isfinite(scores).all()):
        raise SongtraceError(f"unlearning diverged (non-finite losses under θ'); lower the learning rate (lr {config.unlearn.lr:g})")
    out, row = [], 0
    config_hash = config.config_hash()
    for q, bounds, whole, parts in plans:
        s_whole, s_windows = scores[row], scores[row + 1 : row + 1 + len(parts)]
        row += 1 + len(parts)
        meta = {"kind": q.kind, "source": q.source, "delta_norm": delta_norm(whole), "windows": [list(b) for b in bounds],
                "window_delta_norms": [delta_norm(d) for d in parts], **q.meta}
        attribution = Attribution(q.query_id, s_whole, ranking_table(q.query_id, s_whole, data, titles, config_hash),
                                  credits_table(q.query_id, s_whole, data), meta)
        table = windows_table(q.query_id, bounds, rate, s_windows, data, titles, config_hash)
        out.append(Localisation(q.query_id, bounds, rate, s_windows, table, attribution))
    return out


# --------------------------------------------------------------------------- from artifact directories


@dataclasses.dataclass
class LocalisationRun:
    """A finished localisation run directory: the whole-query attribution run and the per-window table."""

    out_dir: Path
    attribution: AttributionRun
    windows: pd.DataFrame


def localise(
    queries: Sequence[str],
    config: LocaliseConfig,
    model_dir: str | Path,
    latents_dir: str | Path,
    fisher_dir: str | Path,
    out_dir: str | Path,
    home: str | Path | None = None,
    codec_dir: str | Path | None = None,
    caption: str | None = None,
    seconds: float | None = None,
    overwrite: bool = False,
    use_cache: bool = True,
    model: ModelTask | None = None,
) -> LocalisationRun:
    """Localise queries in time from artifact dirs; writes windows.parquet, scores/credits Parquet and config.json into `out_dir`.

    The same inputs, checks and base-loss cache as `attribute`; a rerun with the same config and
    inputs reads the finished results. `model` is the model already loaded from `model_dir`, if any.
    """
    out_dir = Path(out_dir)
    run = load_run_inputs(queries, config.unlearn.group, model_dir, latents_dir, fisher_dir, codec_dir, caption, seconds, model=model)
    model, latents, fisher, inputs = run.model, run.latents, run.fisher, run.inputs
    if begin_stage(out_dir, config, inputs, overwrite=overwrite):
        return load_localisation(out_dir)
    save_generations(run.queries, out_dir)
    cache_dir = resolve_home(home) / "cache" / "base_losses" if use_cache else None
    base = base_losses(model, latents, config.score, config.unlearn.mask_loss, cache_dir=cache_dir, model_hash=inputs["model"])
    titles = item_titles(latents_dir, home)
    results = localise_queries(model, fisher, latents, run.queries, config, base=base, titles=titles)
    windows = pd.concat([r.table for r in results], ignore_index=True)
    write_parquet(out_dir / WINDOWS_FILE, windows)
    scores = write_score_tables(out_dir, [r.whole for r in results], latents.subset(config.score.split).ids)
    finish_stage(
        out_dir,
        config,
        inputs,
        content_hash=hash_json({"scores": hash_tensors({"s": scores["score"].to_numpy(), "w": windows["score"].to_numpy()}),
                                "ids": scores["train_id"].tolist()}),
        extra={
            "queries": [{"query_id": r.query_id, **r.whole.meta} for r in results],
            "n_items": len(latents.subset(config.score.split)),
            "frame_rate": results[0].rate,
            "n_fisher_items": fisher.n_items,
            "fisher_dir": str(fisher_dir),
            "model_dir": str(model_dir),
            "latents_dir": str(latents_dir),
            "seeds": {"unlearn": config.unlearn.seed, "score": config.score.seed, "fisher": fisher.config.seed},
            "mask_unlearn": config.unlearn.mask_unlearn,
            "mask_loss": config.unlearn.mask_loss,
        },
    )
    return load_localisation(out_dir)


def load_localisation(out_dir: str | Path) -> LocalisationRun:
    """Read a finished localisation run back (the whole-query attribution and windows.parquet)."""
    out_dir = Path(out_dir)
    run = load_attribution(out_dir)
    if not (out_dir / WINDOWS_FILE).exists():
        raise SongtraceError(f"{out_dir}: no {WINDOWS_FILE}; is it a `songtrace localise` run?")
    return LocalisationRun(out_dir, run, read_parquet(out_dir / WINDOWS_FILE))


def window_summary(windows: pd.DataFrame, top: int = 3) -> list[dict[str, Any]]:
    """Per query and window: its time span and its `top` training items (id, artist, score), for printing and JSON."""
    out = []
    for (qid, w), g in windows.groupby(["query_id", "window"], sort=False):
        best = g.sort_values("rank", kind="stable").head(top)
        out.append({"query_id": qid, "window": int(w), "start_s": float(g["start_s"].iloc[0]), "end_s": float(g["end_s"].iloc[0]),
                    "top": best[["rank", "train_id", "artist", "title", "score"]].to_dict(orient="records")})
    return out
