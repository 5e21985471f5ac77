"""The self-influence grid: cells, resumable runner, best-cell choice, Table-1 writer and plots."""

import json

import pandas as pd
import pytest

from songtrace.errors import SongtraceError
from songtrace.selfinfluence.grid import (
    CELLS_FILE,
    TARGETS_FILE,
    Cell,
    GridStore,
    best_cell,
    cartesian,
    rank_cells,
    run_grid,
    same_trajectory,
    stage_a_cells,
    stage_b_cells,
)
from songtrace.selfinfluence.report import markdown_table, plot_metrics_by_mask, plot_rank_vs_lr, write_report_md


class Interrupt(Exception):
    pass


def _fake_target(cell: Cell, target: str) -> dict:
    """A deterministic stand-in for unlearning + scoring: rank improves with lr, 'all' beats others."""
    rank = 1 + round(1e-3 / cell.lr) + (0 if cell.group == "all" else 3) + (len(target) % 2)
    return {"rank": rank, "embed_topk": 0.5 + 0.1 * (cell.group == "all"), "embed_botk": 0.2}


def _summarize(cell: Cell, records: list[dict]) -> dict:
    df = pd.DataFrame(records)
    return {"mean_rank": float(df["rank"].mean()), "embed_topk": float(df["embed_topk"].mean()),
            "embed_botk": float(df["embed_botk"].mean()), "n": len(records)}


def test_cells_validate_and_grids_have_the_expected_shape():
    with pytest.raises(SongtraceError, match="unknown mask"):
        Cell(1e-3, 1, "all", "sometimes")
    with pytest.raises(SongtraceError, match="learning rate"):
        Cell(0.0, 1, "all", "none")
    assert len(cartesian([1e-3, 1e-2], [1, 2], ["all", "to_kv"], ["none", "mixed", "both"])) == 24
    a = stage_a_cells([1e-3, 1e-2], [1, 2, 3])
    assert len(a) == 6 and {c.group for c in a} == {"all"} and {c.mask for c in a} == {"mixed"}
    b = stage_b_cells(1e-2, 1, ["to_kv", "all"], ["none", "mixed"])
    assert len(b) == 4 and {(c.lr, c.steps) for c in b} == {(1e-2, 1)}
    assert Cell(1e-3, 1, "all", "none").key("ctx") != Cell(1e-3, 1, "all", "none").key("other")


def test_grid_resumes_without_recomputing_finished_work(tmp_path):
    cells = cartesian([1e-3, 1e-2], [1], ["all", "to_kv"], ["mixed"])
    targets = ["a", "bb", "c"]
    calls: list[tuple[Cell, str]] = []
    summaries: list[Cell] = []
    kill = [True]

    def evaluate(cell, target):
        if kill[0] and len(calls) == 7:  # killed in the middle of the third cell
            kill[0] = False
            raise Interrupt
        calls.append((cell, target))
        return _fake_target(cell, target)

    def summarize(cell, records):
        summaries.append(cell)
        return _summarize(cell, records)

    with pytest.raises(Interrupt):
        run_grid(cells, targets, evaluate, summarize, GridStore(tmp_path, "ctx"))
    assert len(calls) == 7 and summaries == cells[:2]
    # a kill while writing leaves a torn last line: it is ignored
    with open(tmp_path / TARGETS_FILE, "a") as f:
        f.write('{"cell_key": "x", "tar')

    first_run = list(calls)
    table = run_grid(cells, targets, evaluate, summarize, GridStore(tmp_path, "ctx"))
    resumed = calls[len(first_run):]
    assert len(resumed) == len(cells) * len(targets) - 7  # nothing evaluated twice
    assert set(resumed).isdisjoint(first_run)
    assert summaries == cells  # each cell summarised exactly once
    assert len(table) == 4 and (table["n"] == 3).all()
    lines = [json.loads(x) for x in (tmp_path / TARGETS_FILE).read_text().splitlines()[:7]]
    assert len(lines) == 7

    # a third run does nothing at all
    n = len(calls)
    again = run_grid(cells, targets, evaluate, summarize, GridStore(tmp_path, "ctx"))
    assert len(calls) == n and len(summaries) == 4
    pd.testing.assert_frame_equal(again, table)
    # another context (different model or data) shares nothing
    run_grid(cells[:1], targets, evaluate, summarize, GridStore(tmp_path, "other"))
    assert len(calls) == n + 3
    assert len((tmp_path / CELLS_FILE).read_text().splitlines()) == 5
    # a cell over more targets reuses the targets it shares with a finished run
    run_grid(cells[:1], [*targets, "dddd"], evaluate, summarize, GridStore(tmp_path, "ctx"))
    assert calls[-1] == (cells[0], "dddd") and len(calls) == n + 4


def test_family_cells_are_interleaved_per_target(tmp_path):
    cells = cartesian([1e-3, 1e-2], [1, 2, 3], ["all"], ["mixed"])
    order = []

    def evaluate(cell, target):
        order.append((cell.lr, target, cell.steps))
        return _fake_target(cell, target)

    run_grid(cells, ["a", "b"], evaluate, _summarize, GridStore(tmp_path, "ctx"), family=same_trajectory)
    assert order[:6] == [(1e-3, "a", 1), (1e-3, "a", 2), (1e-3, "a", 3), (1e-3, "b", 1), (1e-3, "b", 2), (1e-3, "b", 3)]
    assert len(order) == 12


def test_best_cell_ranks_by_mean_rank_then_embedding_gap():
    cells = pd.DataFrame(
        [
            {"lr": 1e-3, "steps": 1, "group": "to_kv", "mask": "mixed", "mean_rank": 1.0, "embed_topk": 0.5, "embed_botk": 0.4},
            {"lr": 1e-3, "steps": 1, "group": "all", "mask": "mixed", "mean_rank": 1.0, "embed_topk": 0.6, "embed_botk": 0.2},
            {"lr": 1e-2, "steps": 1, "group": "all", "mask": "none", "mean_rank": 3.0, "embed_topk": 0.9, "embed_botk": 0.1},
        ]
    )
    assert best_cell(cells) == Cell(1e-3, 1, "all", "mixed")
    assert rank_cells(cells)["group"].tolist() == ["all", "to_kv", "all"]
    with pytest.raises(SongtraceError):
        best_cell(cells.iloc[0:0])


def test_table_and_plots(tmp_path):
    cells = pd.DataFrame(
        [
            {"lr": 1e-3, "steps": 1, "group": g, "mask": m, "mean_rank": r, "embed_topk": 0.6, "embed_botk": 0.3, "fd": 1.5,
             "mean_rank_short": r * 2, "mean_rank_long": r, "frac_rank1": 0.5}
            for g, m, r in [("all", "mixed", 1.0), ("all", "none", 40.0), ("to_kv", "mixed", 9.0), ("all", "both", 1.2)]
        ]
    )
    md = markdown_table(cells)
    lines = md.splitlines()
    assert lines[0].startswith("| Target Layer | M_U | M_L | R(z_tar) | embed_topk | embed_botk | FD")
    assert len(lines) == 2 + 4
    row_mixed = next(line for line in lines if line.startswith("| All the Transformer Layers | ✓ |  |"))
    assert "**1.0**" in row_mixed
    paper = markdown_table(cells, rows=[("to_kv", "mixed"), ("all", "both"), ("all", "mixed")])
    assert [line.split("|")[1].strip() for line in paper.splitlines()[2:]] == [
        "Cross-Attention's to_kv weights", "All the Transformer Layers", "All the Transformer Layers"]

    stage_a = pd.DataFrame([{"lr": lr, "steps": s, "group": "all", "mask": "mixed", "mean_rank": 1 / lr, "embed_topk": 0.5,
                             "embed_botk": 0.2} for lr in (1e-3, 1e-2) for s in (1, 2)])
    write_report_md(tmp_path / "table.md", cells, stage_a, {"lr": 1e-3, "steps": 1, "group": "all", "mask": "mixed"},
                    {"n_targets": 4, "n_items": 20, "k": 5, "embedder": "dsp", "fd_original": 1.5, "short_seconds": 4.0})
    text = (tmp_path / "table.md").read_text()
    assert "## Table 1 rows" in text and "steps=2" in text and "lr=0.001, steps=1, group=all, mask=mixed" in text
    plot_rank_vs_lr(pd.concat([stage_a, cells]), tmp_path / "rank_vs_lr.png")
    plot_metrics_by_mask(cells, tmp_path / "by_mask.png")
    for name in ("rank_vs_lr.png", "by_mask.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_cells_that_harm_the_model_rank_last():
    base = {"steps": 1, "group": "all", "mask": "mixed", "embed_topk": 0.6, "embed_botk": 0.2, "fd_original": 1.0, "n_diverged": 0}
    cells = pd.DataFrame([
        {**base, "lr": 1e-1, "mean_rank": 1.0, "fd": 1.5},  # FD 50% worse: harmed
        {**base, "lr": 1e-2, "mean_rank": 1.0, "fd": float("inf")},  # generations broke
        {**base, "lr": 1e-3, "mean_rank": 1.0, "fd": 1.0, "n_diverged": 1},  # a target's step diverged
        {**base, "lr": 1e-4, "mean_rank": 2.0, "fd": 1.03},
    ])
    assert best_cell(cells).lr == 1e-4
    assert best_cell(cells, fd_tolerance=1.0).lr == 1e-1
    assert rank_cells(cells)["lr"].tolist() == [1e-4, 1e-3, 1e-2, 1e-1]


def test_rank_tolerance_lets_the_embedding_gap_decide_between_near_ties():
    cells = pd.DataFrame([
        {"lr": 1e-3, "steps": 1, "group": "cross_attn", "mask": "mixed", "mean_rank": 1.1, "embed_topk": 0.80, "embed_botk": 0.53},
        {"lr": 1e-3, "steps": 1, "group": "all", "mask": "mixed", "mean_rank": 1.4, "embed_topk": 0.84, "embed_botk": 0.39},
        {"lr": 1e-3, "steps": 1, "group": "all", "mask": "none", "mean_rank": 9.0, "embed_topk": 0.90, "embed_botk": 0.10},
    ])
    assert best_cell(cells).group == "cross_attn"
    assert best_cell(cells, rank_tolerance=0.5) == Cell(1e-3, 1, "all", "mixed")
    assert rank_cells(cells, rank_tolerance=0.5)["mask"].tolist() == ["mixed", "mixed", "none"]
