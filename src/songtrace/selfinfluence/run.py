"""Train-to-Train self-influence and the unlearning hyperparameter search (seed 002, section 3.2, Table 1).

Unlearn one training track z_tar (Eq. 6), score every training item (τ, Eq. 2), and check that the
target ranks first (R(z_tar) = 1), that similar tracks rank high and dissimilar ones low
(`embed_topk` / `embed_botk`), and that the model is otherwise unharmed (FD). Targets are chosen
as in the paper: k-means on audio embeddings, one track per cluster, so they are diverse.

The search is staged like the paper's. Stage A picks (lr, steps) at (group=all, mask=mixed) on the
first `stage_a_targets` targets: by default a coordinate search (every lr at one step, then every
number of steps at the best lr; `stage_a="product"` runs lr x steps). Stage B varies the target
group and the mask at that (lr, steps) on all targets, by default as Table 1 lays it out (every
group at mask=mixed, every mask at group=all: 7 cells; `stage_b="product"` runs all 16).
`staged=False` runs the full Cartesian product on all targets. The cheaper defaults exist because
one cell costs one scoring pass over the whole training set per target. With `lr_mode="relative"` the learning-rate grid is adapted to
the model's scale: each value ρ is the relative size ‖δ‖/‖θ‖ of a one-step update (group=all,
mask=mixed, median over stage-A targets), turned into an absolute η that the grid records.

`run_self_influence` holds the protocol on in-memory inputs (`SelfInfluenceData`);
`selfinfluence_from_dirs` loads them from artifact directories (what `songtrace selfinfluence` runs).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from songtrace.artifacts import (
    StageConfig,
    begin_stage,
    check_choice,
    check_positive,
    finish_stage,
    hash_json,
    hash_table,
    read_json,
    read_parquet,
    write_json,
    write_parquet,
)
from songtrace.attribution.best_config import save_best_config
from songtrace.attribution.fisher import Fisher
from songtrace.attribution.score import ScoreConfig
from songtrace.attribution.shard import SINGLE, Job
from songtrace.attribution.unlearn import DAMPING_MODES, MASKS, MAX_STEPS
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.task import GROUPS, ModelTask, check_device, model_identity
from songtrace.selfinfluence.fd import GenerationProbe, fd_metrics, mean_fd
from songtrace.selfinfluence.grid import (
    DEFAULT_LRS,
    DEFAULT_STEPS,
    Cell,
    GridStore,
    best_cell,
    cartesian,
    rank_cells,
    run_grid,
    same_trajectory,
    stage_a_cells,
    stage_b_cells,
    stage_b_cross,
)
from songtrace.selfinfluence.metrics import normalize_rows, scale_k, summarize
from songtrace.selfinfluence.report import plot_metrics_by_mask, plot_rank_vs_lr, write_report_md
from songtrace.selfinfluence.scorer import CellScorer

LR_MODES = ("relative", "absolute")
STAGE_A_DESIGNS = ("coordinate", "product")
STAGE_B_DESIGNS = ("cross", "product")
ITEMS_PER_TARGET = 30  # at most one target per this many scored items (the paper: 40 of 115 k)
GRID_FILE = "grid.parquet"
TARGET_ROWS_FILE = "targets.parquet"
TABLE_FILE = "table.md"
BEST_FILE = "best_config.json"
PLOT_RANK_LR = "rank_vs_lr.png"
PLOT_BY_MASK = "metrics_by_mask.png"
# Columns grid.parquet always has (besides many extras, see `summarize`).
GRID_COLUMNS = ("stage", "lr", "steps", "group", "mask", "mean_rank", "median_rank", "frac_rank1", "embed_topk", "embed_botk", "fd")


@dataclasses.dataclass(frozen=True)
class SelfInfluenceConfig(StageConfig):
    """The self-influence search: targets, the grid, how losses are estimated, and what is measured.

    targets: number of k-means targets (capped at one per 30 scored items); stage_a_targets: how
    many of them stage A uses; stage_a / stage_b: the designs of the two stages (module doc);
    lrs: learning rates (relative update sizes with lr_mode="relative");
    k: top/bottom k for embed_topk/botk (None: the paper's 100 of 115 k scaled, at least 5);
    short_fraction: a target is "short" when its real frames are below this share of the model length;
    stratify_short: run k-means separately on short and long tracks, with targets in proportion, so
    short tracks (the ones masks matter for) are represented; rank_tolerance: cells whose mean
    R(z_tar) is within this many places of the best count as tied on rank (the embedding gap decides);
    version_targets: tracks with a planted version, unlearned at the best cell only, for version recall
    (k-means rarely picks them); embedder: "auto" (songclap when trained, else dsp), a name or a path;
    fd_*: the FD probe; fd_tolerance: a cell whose generations' FD exceeds the original's by more than
    this share counts as harming the model and is ranked after every unharmed cell; device: where
    unlearning and scoring run ("cpu", "cuda": the rank's GPU under torchrun).
    """

    targets: int = 40
    stage_a_targets: int = 4
    lrs: tuple[float, ...] = DEFAULT_LRS
    lr_mode: str = "relative"
    steps: tuple[int, ...] = DEFAULT_STEPS
    groups: tuple[str, ...] = GROUPS
    masks: tuple[str, ...] = ("none", "both", "M_L", "mixed")
    staged: bool = True
    stage_a: str = "coordinate"
    stage_b: str = "cross"
    stage_a_group: str = "all"
    stage_a_mask: str = "mixed"
    k: int | None = None
    score_timesteps: int = 4
    unlearn_timesteps: int = 64
    damping: float = 1e-3
    damping_mode: str = "relative"
    batch_size: int = 16
    seed: int = 0
    split: str = "train"
    short_fraction: float = 1 / 3
    stratify_short: bool = True
    rank_tolerance: float = 0.5
    version_top: int = 10
    version_targets: int = 6
    embedder: str = "auto"
    fd: bool = True
    fd_prompts: int = 6
    fd_targets: int = 1
    fd_sampler_steps: int = 8
    fd_tolerance: float = 0.05
    device: str = "cpu"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_device(self.device)
        for name in ("targets", "stage_a_targets", "score_timesteps", "unlearn_timesteps", "batch_size", "version_top", "fd_prompts",
                     "fd_targets", "fd_sampler_steps"):
            check_positive(name, getattr(self, name))
        if self.targets < 2:
            raise SongtraceError(f"targets must be >= 2 (k-means needs clusters), got {self.targets}")
        if not self.lrs or any(not (lr > 0 and math.isfinite(lr)) for lr in self.lrs):
            raise SongtraceError(f"lrs must be positive numbers, got {self.lrs}")
        if not self.steps or any(not 1 <= s <= MAX_STEPS for s in self.steps):
            raise SongtraceError(f"steps must lie in 1..{MAX_STEPS}, got {self.steps}")
        check_choice("lr mode", self.lr_mode, LR_MODES)
        check_choice("stage A design", self.stage_a, STAGE_A_DESIGNS)
        check_choice("stage B design", self.stage_b, STAGE_B_DESIGNS)
        check_choice("damping mode", self.damping_mode, DAMPING_MODES)
        for g in (*self.groups, self.stage_a_group):
            check_choice("group", g, GROUPS)
        for m in (*self.masks, self.stage_a_mask):
            check_choice("mask", m, MASKS)
        if not self.groups or not self.masks:
            raise SongtraceError("groups and masks must not be empty")
        if self.k is not None:
            check_positive("k", self.k)
        check_positive("version_targets", self.version_targets, allow_zero=True)
        check_positive("fd_tolerance", self.fd_tolerance, allow_zero=True)
        check_positive("rank_tolerance", self.rank_tolerance, allow_zero=True)
        if not 0 < self.short_fraction < 1:
            raise SongtraceError(f"short_fraction must be in (0, 1), got {self.short_fraction}")

    def score_config(self) -> ScoreConfig:
        """How L(z_i, θ) is estimated when scoring (common random numbers, seeded per item id)."""
        return ScoreConfig(n_timesteps=self.score_timesteps, seed=self.seed, batch_size=self.batch_size,
                           timestep_chunk=self.score_timesteps, split=self.split, device=self.device)

    def result_context(self) -> dict[str, Any]:
        """The settings that change a per-target result (the grid lists, target counts and FD probe do not)."""
        keys = ("k", "score_timesteps", "unlearn_timesteps", "damping", "damping_mode", "batch_size", "seed", "split",
                "short_fraction", "version_top", "embedder", "device")
        return {k: getattr(self, k) for k in keys}


# --------------------------------------------------------------------------- targets


def n_targets(requested: int, n_items: int) -> int:
    """Targets actually used: the request, capped at one per `ITEMS_PER_TARGET` items (at least 2, at most half the items)."""
    return max(2, min(requested, n_items // ITEMS_PER_TARGET, n_items // 2)) if n_items >= 4 else min(requested, n_items)


def select_targets(unit_embeddings: np.ndarray, n: int, seed: int) -> list[int]:
    """k-means with n clusters; per cluster the member nearest its centroid; ordered so every prefix is diverse.

    The order starts from the largest cluster's representative and then adds the one farthest from
    those already chosen (so stage A's prefix of the targets spans the data too).
    """
    from sklearn.cluster import KMeans

    x = np.asarray(unit_embeddings, dtype=np.float64)
    if n > len(x):
        raise SongtraceError(f"cannot pick {n} targets from {len(x)} items")
    km = KMeans(n_clusters=n, n_init=10, random_state=seed).fit(x)
    reps, sizes = [], []
    for c in range(n):
        members = np.flatnonzero(km.labels_ == c)
        d = np.linalg.norm(x[members] - km.cluster_centers_[c], axis=1)
        reps.append(int(members[np.lexsort((members, d))[0]]))
        sizes.append(len(members))
    order = [int(np.lexsort((reps, -np.array(sizes)))[0])]
    while len(order) < n:
        dist = np.min(np.linalg.norm(x[reps][:, None] - x[[reps[i] for i in order]][None], axis=2), axis=1)
        dist[order] = -1.0
        order.append(int(np.lexsort((reps, -dist))[0]))
    return [reps[i] for i in order]


def select_version_targets(ids: Sequence[str], version_groups: Sequence[str], n: int, exclude: Sequence[str]) -> list[str]:
    """Up to n items that have a planted version among the scored items: the first member of each such group, by group name."""
    members: dict[str, list[int]] = {}
    for row, g in enumerate(version_groups):
        if g:
            members.setdefault(g, []).append(row)
    skip = set(exclude)
    chosen = [ids[rows[0]] for g, rows in sorted(members.items()) if len(rows) > 1 and ids[rows[0]] not in skip]
    return chosen[:n]


def select_stratified_targets(unit_embeddings: np.ndarray, n: int, seed: int, strata: Sequence[bool]) -> list[int]:
    """`select_targets` within each stratum (e.g. short / long tracks), with targets in proportion to the strata's sizes.

    Each stratum with items gets at least one target (when n allows); the two orders are interleaved
    by relative position, so a prefix of the targets keeps the proportion too.
    """
    flags = np.asarray(strata, dtype=bool)
    groups = [np.flatnonzero(flags), np.flatnonzero(~flags)]
    sizes = [len(g) for g in groups]
    share = sizes[0] / max(1, sum(sizes))
    n_first = min(sizes[0], max(1 if sizes[0] and n > 1 else 0, round(n * share)))
    counts = [n_first, min(sizes[1], n - n_first)]
    keyed = []
    for rows, count in zip(groups, counts, strict=True):
        if count == 0:
            continue
        picked = rows[select_targets(unit_embeddings[rows], count, seed)] if count < len(rows) else rows
        keyed += [((i + 0.5) / count, int(r)) for i, r in enumerate(picked)]
    return [r for _, r in sorted(keyed)]


# --------------------------------------------------------------------------- inputs and results


@dataclasses.dataclass
class SelfInfluenceData:
    """What the protocol reads, in memory. Item metadata are for the scored split, in its order."""

    model: nn.Module | ModelTask
    fisher: Fisher
    latents: LatentSet
    embeddings: np.ndarray  # [N, D] audio embeddings of the scored items
    version_groups: list[str]  # [N] planted-version group ("" = none)
    embedder_name: str = ""
    probe: GenerationProbe | None = None  # FD probe (None: no FD)
    inputs: dict[str, str] = dataclasses.field(default_factory=dict)  # content hashes, recorded in config.json
    cache_dir: Path | None = None  # base-loss cache
    model_hash: str | None = None
    job: Job = SINGLE  # torchrun: scoring sharded over the ranks, rank 0 writes


@dataclasses.dataclass
class SelfInfluenceResult:
    """The finished search: every cell's metrics, the best cell, and where things were written."""

    out_dir: Path
    grid: pd.DataFrame
    best: dict[str, Any]
    record: dict[str, Any]


def best_unlearn_config(best: Cell, config: SelfInfluenceConfig) -> dict[str, Any]:
    """The best cell as the attribution engine's `UnlearnConfig` dict (what `songtrace attribute` should default to)."""
    from songtrace.attribution.unlearn import UnlearnConfig

    return UnlearnConfig(lr=best.lr, steps=best.steps, group=best.group, damping=config.damping, damping_mode=config.damping_mode,
                         n_timesteps=config.unlearn_timesteps, seed=config.seed, mask=best.mask).to_dict()


def calibrate_lr(scorer: CellScorer, target_ids: Sequence[str], group: str, mask: str) -> float:
    """Median over targets of ‖δ‖/‖θ‖ for one step of Eq. 6 with η = 1 (so η = ρ / scale gives relative size ρ)."""
    ratios = [scorer.rel_update(scorer.delta(Cell(1.0, 1, group, mask), t), group) for t in target_ids]
    scale = float(np.median(ratios))
    if not (scale > 0 and math.isfinite(scale)):
        raise SongtraceError(f"cannot calibrate the learning rate: one unlearning step has relative size {scale} (zero query gradient?)")
    return scale


def _round_sig(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}")


# --------------------------------------------------------------------------- the protocol


class _Search:
    """One search's moving parts: the scorer, the resumable store, the FD probe and the stage timings."""

    def __init__(self, data: SelfInfluenceData, config: SelfInfluenceConfig, out_dir: Path,
                 on_progress: Callable[[Cell, str | None], None] | None) -> None:
        self.data, self.config, self.on_progress = data, config, on_progress
        self.items = data.latents.subset(config.split)
        n = len(self.items)
        if data.embeddings.shape[0] != n or len(data.version_groups) != n:
            raise SongtraceError(
                f"self-influence: {n} scored items but {data.embeddings.shape[0]} embeddings / {len(data.version_groups)} version groups")
        self.unit = normalize_rows(data.embeddings)
        self.k = config.k if config.k is not None else scale_k(n)
        self.short = (self.items.n_frames.float() < config.short_fraction * self.items.latent_shape[1]).tolist()
        n_tar = n_targets(config.targets, n)
        rows = (select_stratified_targets(self.unit, n_tar, config.seed, self.short) if config.stratify_short
                else select_targets(self.unit, n_tar, config.seed))
        self.target_ids = [self.items.ids[r] for r in rows]
        self.a_ids = self.target_ids[: min(config.stage_a_targets, len(self.target_ids))]
        self.version_ids = select_version_targets(self.items.ids, data.version_groups, config.version_targets, self.target_ids)
        groups = sorted(set(config.groups) | {config.stage_a_group})
        self.scorer = CellScorer(data.model, data.fisher, data.latents, groups, config.score_config(), config.unlearn_timesteps,
                                 config.damping, config.damping_mode, config.seed, data.cache_dir, data.model_hash, job=data.job)
        context = hash_json({"inputs": data.inputs, "settings": config.result_context(), "k": self.k})[:16]
        self.store = GridStore(out_dir, context, write=data.job.main)
        data.job.barrier()  # every rank has read the same finished cells before rank 0 adds any
        self.stage_seconds: dict[str, float] = {}
        self._fd0: dict[str, Any] = {}
        self.lr_scale: float | None = None
        self.lrs = tuple(config.lrs)
        if config.lr_mode == "relative":
            self.lr_scale = calibrate_lr(self.scorer, self.a_ids, config.stage_a_group, config.stage_a_mask)
            self.lrs = tuple(_round_sig(rho / self.lr_scale) for rho in config.lrs)

    def evaluate(self, cell: Cell, target_id: str) -> dict[str, Any]:
        """One (cell, target): unlearn, score, measure."""
        return self.scorer.evaluate(cell, target_id, self.unit, self.data.version_groups, self.short, self.k, self.config.version_top)

    def summarize(self, cell: Cell, records: list[dict[str, Any]]) -> dict[str, Any]:
        """A cell's summary over its targets, plus FD of the unlearned model's generations."""
        df = pd.DataFrame(records)
        out = summarize(df)
        out.update({"k": self.k, "n_items": len(self.items), "rel_update": float(df["rel_update"].median()),
                    "eval_seconds": float(df["seconds"].sum()), "mean_target_score": float(df["target_score"].mean()),
                    "n_diverged": int(df["diverged"].sum())})
        out.update(self.fd(cell, [r["target_id"] for r in records][: self.config.fd_targets]))
        return out

    def fd(self, cell: Cell, fd_ids: Sequence[str]) -> dict[str, Any]:
        """FD metrics of the cell (NaN without a probe)."""
        probe = self.data.probe
        if not self.config.fd or probe is None:
            return {"fd": float("nan"), "fd_vs_original": float("nan"), "fd_original": float("nan"), "fd_samples": 0}
        if "original" not in self._fd0:
            self._fd0["original"] = probe.embed(self.data.model)
            if self._fd0["original"] is None:
                raise SongtraceError("the original model generates non-finite audio; cannot measure FD (use --no-fd)")
            self._fd0["fd"] = fd_metrics(self._fd0["original"], self._fd0["original"], self.data.embeddings)["fd"]
        rows = [fd_metrics(probe.embed(self.data.model, self.scorer.delta(cell, t)), self._fd0["original"], self.data.embeddings)
                for t in fd_ids]
        return {**mean_fd(rows), "fd_original": self._fd0["fd"], "fd_samples": probe.n_samples}

    @property
    def fd_original(self) -> float:
        return float(self._fd0.get("fd", float("nan")))

    def stage(self, name: str, cells: Sequence[Cell], ids: Sequence[str]) -> pd.DataFrame:
        """Run (or resume) some cells on some targets; their summaries tagged with the stage name."""
        t0 = time.perf_counter()
        table = run_grid(cells, ids, self.evaluate, self.summarize, self.store, family=same_trajectory, on_progress=self.on_progress)
        self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - t0
        return table.assign(stage=name, n_targets=len(ids))

    def run(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[Cell]]:
        """The staged (or full) search: (every cell's summary, stage A's table, the final stage's table, its cells)."""
        c = self.config
        steps = sorted(set(c.steps))
        if not c.staged:
            cells = cartesian(self.lrs, steps, c.groups, c.masks)
            final = self.stage("full", cells, self.target_ids)
            return final, final[(final["group"] == c.stage_a_group) & (final["mask"] == c.stage_a_mask)], final, cells
        if c.stage_a == "coordinate":
            sweep = self.stage("A", stage_a_cells(self.lrs, steps[:1], c.stage_a_group, c.stage_a_mask), self.a_ids)
            lr = best_cell(sweep, c.fd_tolerance, c.rank_tolerance).lr
            more = [self.stage("A", stage_a_cells([lr], steps[1:], c.stage_a_group, c.stage_a_mask), self.a_ids)]
            table_a = pd.concat([sweep, *more[: bool(steps[1:])]], ignore_index=True)
        else:
            table_a = self.stage("A", stage_a_cells(self.lrs, steps, c.stage_a_group, c.stage_a_mask), self.a_ids)
        chosen = best_cell(table_a, c.fd_tolerance, c.rank_tolerance)
        if c.stage_b == "cross":
            cells = stage_b_cross(chosen.lr, chosen.steps, c.groups, c.masks, c.stage_a_group, c.stage_a_mask)
        else:
            cells = stage_b_cells(chosen.lr, chosen.steps, c.groups, c.masks)
        final = self.stage("B", cells, self.target_ids)
        return pd.concat([table_a, final], ignore_index=True), table_a, final, cells


def run_self_influence(
    data: SelfInfluenceData,
    config: SelfInfluenceConfig,
    out_dir: str | Path,
    overwrite: bool = False,
    best_config_path: str | Path | None = None,
    on_progress: Callable[[Cell, str | None], None] | None = None,
) -> SelfInfluenceResult:
    """Run (or resume) the self-influence search into `out_dir`; returns the grid and the best configuration.

    A rerun with the same config and inputs continues where a killed run stopped and never
    recomputes a finished (cell, target); a finished run is read back. The best configuration is
    also written to `best_config_path` when given (`attribution.best_config.best_config_path(home, identity)` is where
    `attribute` looks for it: one file per model identity, which `data.inputs["model"]` must hold).
    """
    out_dir = Path(out_dir)
    identity = _model_identity(data)
    job = data.job
    if job.main_first(lambda: begin_stage(out_dir, config, data.inputs, overwrite=overwrite)):
        return load_self_influence(out_dir)
    started, cpu_started = time.perf_counter(), time.process_time()
    search = _Search(data, config, out_dir, on_progress)
    if not job.main:  # every rank runs the protocol (its scoring passes are sharded); rank 0 writes
        final = search.run()[2]
        if search.version_ids:
            search.stage("V", [best_cell(final, config.fd_tolerance, config.rank_tolerance)], search.version_ids)
        job.barrier()
        return load_self_influence(out_dir)
    write_json(out_dir / "targets.json", {"target_ids": search.target_ids, "stage_a_target_ids": search.a_ids, "k": search.k,
                                          "version_target_ids": search.version_ids, "lrs": list(search.lrs), "lr_scale": search.lr_scale})
    grid, stage_a, final, final_cells = search.run()
    best = best_cell(final, config.fd_tolerance, config.rank_tolerance)
    version = search.stage("V", [best], search.version_ids) if search.version_ids else None
    if version is not None:
        grid = pd.concat([grid, version], ignore_index=True)
    grid = grid.drop(columns=[c for c in ("cell_key", "summary_key") if c in grid])
    best_row = rank_cells(final, config.fd_tolerance, config.rank_tolerance).iloc[0].to_dict()
    best_record: dict[str, Any] = {
        "unlearn": best_unlearn_config(best, config),
        "score_timesteps": config.score_timesteps,
        "metrics": {c: best_row.get(c) for c in ("mean_rank", "median_rank", "frac_rank1", "embed_topk", "embed_botk", "fd")},
        "rule": f"unharmed first (no diverged step, FD within {config.fd_tolerance:.0%} of the original's), then lowest mean R(z_tar) "
                f"(within {config.rank_tolerance} places counts as tied), then widest embed_topk - embed_botk, smaller lr, fewer steps",
        "source": str(out_dir),
        "inputs": {**data.inputs, "model": identity},
    }
    if version is not None:
        best_record["version_recall"] = float(version["version_recall"].iloc[0])
        best_record["version_targets"] = search.version_ids
    per_target = pd.concat([
        search.store.targets_table(_cells_of(stage_a), search.a_ids).assign(stage=stage_a["stage"].iloc[0] if len(stage_a) else "A"),
        search.store.targets_table(final_cells, search.target_ids).assign(stage=final["stage"].iloc[0]),
        search.store.targets_table([best], search.version_ids).assign(stage="V"),
    ], ignore_index=True)
    _write_outputs(out_dir, grid, stage_a, final, per_target, best_record, {
        "n_targets": len(search.target_ids), "n_items": len(search.items), "k": search.k, "embedder": data.embedder_name,
        "n_short_targets": sum(search.short[search.scorer.row[t]] for t in search.target_ids), "stratified": config.stratify_short,
        "fd_original": search.fd_original, "short_seconds": _short_seconds(search.items, config.short_fraction),
        "version_recall": best_record.get("version_recall"), "n_version_targets": len(search.version_ids),
    })
    if best_config_path is not None:
        save_best_config(None, best_record, path=best_config_path)
    record = finish_stage(out_dir, config, data.inputs, content_hash=hash_table(grid.drop(columns=["eval_seconds"])), extra={
        "best": best_record, "wall_seconds": round(time.perf_counter() - started, 1), "n_cells": len(grid),
        "cpu_seconds": round(time.process_time() - cpu_started, 1), "torch_threads": torch.get_num_threads(),
        "stage_seconds": {s: round(v, 1) for s, v in search.stage_seconds.items()}, "target_ids": search.target_ids, "k": search.k,
        "lr_scale": search.lr_scale, "lrs": list(search.lrs), "best_config_path": str(best_config_path) if best_config_path else None,
        "ranks": job.world,
    })
    job.barrier()
    return SelfInfluenceResult(out_dir, grid, best_record, record)


def _model_identity(data: SelfInfluenceData) -> str:
    """The searched model's identity (`ModelTask.identity()`), refusing inputs that record another one."""
    identity = model_identity(data.model)
    recorded = data.inputs.get("model")
    if recorded is not None and recorded != identity:
        raise SongtraceError(f"self-influence inputs record model {recorded[:12]}…, but the model's identity is {identity[:12]}…")
    return identity


def _cells_of(table: pd.DataFrame) -> list[Cell]:
    """The cells of a summary table's rows."""
    return [Cell(float(r.lr), int(r.steps), str(r.group), str(r.mask)) for r in table.itertuples()]


def _short_seconds(items: LatentSet, short_fraction: float) -> float:
    """The short/long threshold in seconds (from the items' seconds per frame)."""
    per_frame = (items.seconds_total / items.n_frames.clamp_min(1).float()).median()
    return float(short_fraction * items.latent_shape[1] * per_frame)


def _write_outputs(out_dir: Path, grid: pd.DataFrame, stage_a: pd.DataFrame, final: pd.DataFrame, per_target: pd.DataFrame,
                   best: dict[str, Any], notes: dict[str, Any]) -> None:
    """grid.parquet, targets.parquet, table.md, best_config.json and the plots."""

    write_parquet(out_dir / GRID_FILE, grid)
    per_target = per_target.drop(columns=[c for c in ("cell_key",) if c in per_target])
    write_parquet(out_dir / TARGET_ROWS_FILE, per_target)
    u = best["unlearn"]
    write_report_md(out_dir / TABLE_FILE, final, stage_a, {"lr": u["lr"], "steps": u["steps"], "group": u["group"], "mask": u["mask"]},
                    notes)
    write_json(out_dir / BEST_FILE, best)
    plot_rank_vs_lr(grid, out_dir / PLOT_RANK_LR)
    plot_metrics_by_mask(final[(final["lr"] == u["lr"]) & (final["steps"] == u["steps"])], out_dir / PLOT_BY_MASK)


def load_self_influence(out_dir: str | Path) -> SelfInfluenceResult:
    """Read a finished search back."""
    out_dir = Path(out_dir)
    record = read_json(out_dir / "config.json")
    if not record.get("complete"):
        raise SongtraceError(f"{out_dir}: the self-influence search did not finish; run it again to resume")
    return SelfInfluenceResult(out_dir, read_parquet(out_dir / GRID_FILE), record["best"], record)
