"""The self-influence grid: cells (lr, steps, group, mask), a resumable runner, and choosing the best cell.

A cell is one unlearning configuration. Its evaluation is split into per-target results (one
unlearned training track each), appended to `targets.jsonl` as they finish, and a per-cell summary
appended to `cells.jsonl`. Both are keyed by a hash of the cell and the run's *context* (model,
data, targets, timesteps, seed), so a killed grid continues where it stopped, never recomputes a
finished cell or target, and never mixes results from another context.

Masks follow seed 002, section 2.3: `none` (neither mask), `both` (M_U and M_L), `M_L` (only the
attribution loss masked) and `mixed` (only the unlearning loss masked: M_U; the paper's best).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from songtrace.artifacts import hash_json
from songtrace.attribution.unlearn import mask_setting
from songtrace.errors import SongtraceError

DEFAULT_LRS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
DEFAULT_STEPS = (1, 2, 3, 4)

TARGETS_FILE = "targets.jsonl"
CELLS_FILE = "cells.jsonl"


@dataclasses.dataclass(frozen=True, order=True)
class Cell:
    """One unlearning configuration of the grid."""

    lr: float
    steps: int
    group: str
    mask: str

    def __post_init__(self) -> None:
        mask_setting(self.mask)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SongtraceError(f"learning rate must be a positive number, got {self.lr}")
        if self.steps < 1:
            raise SongtraceError(f"steps must be >= 1, got {self.steps}")

    def key(self, context: str) -> str:
        """Hash of the cell within a run context: the resume key."""
        return hash_json({"cell": dataclasses.asdict(self), "context": context})[:16]

    def label(self) -> str:
        """Short human-readable name."""
        return f"lr={self.lr:g} steps={self.steps} group={self.group} mask={self.mask}"


def cartesian(lrs: Iterable[float], steps: Iterable[int], groups: Iterable[str], masks: Iterable[str]) -> list[Cell]:
    """Every combination, in the order lr, steps, group, mask."""
    return [Cell(float(lr), int(s), g, m) for lr in lrs for s in steps for g in groups for m in masks]


def stage_a_cells(lrs: Sequence[float], steps: Sequence[int], group: str = "all", mask: str = "mixed") -> list[Cell]:
    """Stage A of the staged search: learning rate x steps at the paper's chosen group and mask."""
    return cartesian(lrs, steps, [group], [mask])


def stage_b_cells(lr: float, steps: int, groups: Sequence[str], masks: Sequence[str]) -> list[Cell]:
    """Stage B as a product: every group x mask at the best (lr, steps) of stage A."""
    return cartesian([lr], [steps], groups, masks)


def stage_b_cross(
    lr: float, steps: int, groups: Sequence[str], masks: Sequence[str], group: str = "all", mask: str = "mixed"
) -> list[Cell]:
    """Stage B as Table 1 lays it out: every group at `mask`, and every mask at `group` (4 + 4 − 1 cells, not 16)."""
    cells = [Cell(lr, steps, g, mask) for g in groups] + [Cell(lr, steps, group, m) for m in masks]
    return list(dict.fromkeys(cells))


# --------------------------------------------------------------------------- choosing the best cell


def harmed(cells: pd.DataFrame, fd_tolerance: float) -> pd.Series:
    """Cells that broke the model: a diverged target, or FD of generations above the original's by more than `fd_tolerance`."""
    bad = pd.Series(False, index=cells.index)
    if "n_diverged" in cells:
        bad |= cells["n_diverged"].fillna(0) > 0
    if "fd" in cells and "fd_original" in cells:
        fd, fd0 = pd.to_numeric(cells["fd"], errors="coerce"), pd.to_numeric(cells["fd_original"], errors="coerce")
        bad |= (fd > fd0 * (1 + fd_tolerance)).fillna(False) | np.isinf(fd)
    return bad


def rank_cells(cells: pd.DataFrame, fd_tolerance: float = 0.05, rank_tolerance: float = 0.0) -> pd.DataFrame:
    """Cells best first: unharmed before harmed, lowest mean R(z_tar), widest embed_topk − embed_botk gap, smaller lr, fewer steps.

    Seed 002's two criteria, in order: the model must otherwise stay unharmed (no diverged step, FD
    of its generations within `fd_tolerance` of the original's), and the unlearned track must rank
    first (a configuration that does not find the track itself cannot be trusted to find anything);
    the embedding gap then prefers attributions that are musically coherent (similar tracks high,
    dissimilar low), as in the paper's reading of Table 1. Mean ranks within `rank_tolerance`
    places of the best (unharmed) one count as tied, so a single target at rank 2 among a dozen
    does not outweigh a clearly better embedding gap.
    """
    if len(cells) == 0:
        return cells
    df = cells.copy()
    df["_harmed"] = harmed(df, fd_tolerance)
    ok = df.loc[~df["_harmed"], "mean_rank"]
    best = ok.min() if len(ok) else df["mean_rank"].min()
    df["_rank"] = np.where(df["mean_rank"] <= best + rank_tolerance, best, df["mean_rank"])
    df["_gap"] = (df["embed_topk"] - df["embed_botk"]).fillna(-math.inf)
    df = df.sort_values(["_harmed", "_rank", "_gap", "mean_rank", "lr", "steps"], ascending=[True, True, False, True, True, True],
                        kind="mergesort")
    return df.drop(columns=["_gap", "_harmed", "_rank"]).reset_index(drop=True)


def best_cell(cells: pd.DataFrame, fd_tolerance: float = 0.05, rank_tolerance: float = 0.0) -> Cell:
    """The best cell of a summary table (see `rank_cells`)."""
    if len(cells) == 0:
        raise SongtraceError("no finished grid cells to choose from")
    row = rank_cells(cells, fd_tolerance, rank_tolerance).iloc[0]
    return Cell(float(row["lr"]), int(row["steps"]), str(row["group"]), str(row["mask"]))


# --------------------------------------------------------------------------- resumable store


def _repair_jsonl(path: Path) -> None:
    """Drop a torn last line (a kill mid-write) so that appends start on a clean line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file (repaired first), with an error naming a corrupt line."""
    _repair_jsonl(path)
    if not path.exists():
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise SongtraceError(f"{path}: line {n + 1} is not valid JSON; delete the file to restart the grid") from None
    return records


def _append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one record and flush it to disk, so a kill loses at most the record being written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(json.dumps(record, sort_keys=True, allow_nan=True).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


class GridStore:
    """Finished per-target results and cell summaries of one grid directory, keyed for resuming.

    A per-target record is keyed by (cell, context, target id), so cells evaluated on different
    target sets (stage A on a subset, stage B on all targets) share the targets they have in common;
    a cell summary is keyed by (cell, context, target ids).
    """

    def __init__(self, out_dir: str | Path, context: str, write: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.context = context
        self.write = write  # False on the ranks of a torchrun job other than 0: they keep the records in memory only
        self._targets: dict[tuple[str, str], dict[str, Any]] = {}
        for r in _read_jsonl(self.out_dir / TARGETS_FILE):
            self._targets[(r["cell_key"], r["target_id"])] = r
        self._cells: dict[str, dict[str, Any]] = {r["summary_key"]: r for r in _read_jsonl(self.out_dir / CELLS_FILE)}

    def summary_key(self, cell: Cell, target_ids: Sequence[str]) -> str:
        """Key of a cell summary over a list of targets."""
        return hash_json({"cell": cell.key(self.context), "targets": list(target_ids)})[:16]

    def target_result(self, cell: Cell, target_id: str) -> dict[str, Any] | None:
        """A finished per-target record, or None."""
        return self._targets.get((cell.key(self.context), target_id))

    def add_target(self, cell: Cell, target_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
        """Record one finished target of a cell."""
        record = {**result, "cell_key": cell.key(self.context), "target_id": target_id}
        if self.write:
            _append_jsonl(self.out_dir / TARGETS_FILE, record)
        self._targets[(record["cell_key"], target_id)] = record
        return record

    def cell_result(self, cell: Cell, target_ids: Sequence[str]) -> dict[str, Any] | None:
        """A finished cell summary over these targets, or None."""
        return self._cells.get(self.summary_key(cell, target_ids))

    def add_cell(self, cell: Cell, target_ids: Sequence[str], summary: Mapping[str, Any]) -> dict[str, Any]:
        """Record a finished cell."""
        keys = {"cell_key": cell.key(self.context), "summary_key": self.summary_key(cell, target_ids)}
        record = {**dataclasses.asdict(cell), **summary, **keys}
        if self.write:
            _append_jsonl(self.out_dir / CELLS_FILE, record)
        self._cells[record["summary_key"]] = record
        return record

    def cells_table(self, cells: Sequence[Cell], target_ids: Sequence[str]) -> pd.DataFrame:
        """Finished summaries of `cells` over `target_ids`, in grid order."""
        rows = [r for c in cells if (r := self.cell_result(c, target_ids)) is not None]
        return pd.DataFrame(rows)

    def targets_table(self, cells: Sequence[Cell], target_ids: Sequence[str]) -> pd.DataFrame:
        """Per-target records of `cells` for `target_ids`, with the cell's fields."""
        rows = [{**dataclasses.asdict(c), **r} for c in cells for t in target_ids if (r := self.target_result(c, t)) is not None]
        return pd.DataFrame(rows)


TargetFn = Callable[[Cell, str], Mapping[str, Any]]
CellFn = Callable[[Cell, list[dict[str, Any]]], Mapping[str, Any]]


def same_trajectory(cell: Cell) -> tuple[float, str, str]:
    """Family key of cells that differ only in steps: one unlearning trajectory yields all their deltas."""
    return (cell.lr, cell.group, cell.mask)


def run_grid(
    cells: Sequence[Cell],
    target_ids: Sequence[str],
    evaluate_target: TargetFn,
    summarize_cell: CellFn,
    store: GridStore,
    family: Callable[[Cell], Any] | None = None,
    on_progress: Callable[[Cell, str | None], None] | None = None,
) -> pd.DataFrame:
    """Evaluate every (cell, target) not yet in `store`, then summarise each cell; returns the cells' summaries.

    `evaluate_target(cell, target_id)` returns that target's metrics; `summarize_cell(cell, records)`
    turns a cell's per-target records into its summary (it may add cell-level measures such as FD).
    Cells of one `family` (e.g. `same_trajectory`) are interleaved per target, so an evaluator can
    reuse work between them for the current target only; a finished cell is skipped without calling
    either function, and a finished (cell, target) is never evaluated again.
    """
    families: dict[Any, list[Cell]] = {}
    for i, cell in enumerate(cells):
        families.setdefault(family(cell) if family is not None else i, []).append(cell)
    for members in families.values():
        todo = [c for c in members if store.cell_result(c, target_ids) is None]
        for target_id in target_ids:
            for cell in todo:
                if store.target_result(cell, target_id) is None:
                    store.add_target(cell, target_id, evaluate_target(cell, target_id))
                    if on_progress is not None:
                        on_progress(cell, target_id)
        for cell in todo:
            records = [store.target_result(cell, t) for t in target_ids]
            store.add_cell(cell, target_ids, summarize_cell(cell, [r for r in records if r is not None]))
            if on_progress is not None:
                on_progress(cell, None)
    return store.cells_table(cells, target_ids)
