"""Plots are `Figure` + Agg saved atomically: no pyplot, no backend change, no half-written file."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from songtrace.figures import new_figure, save_figure


def test_save_figure_writes_the_format_of_the_suffix(tmp_path):
    fig = new_figure(figsize=(2, 1.5))
    fig.subplots().plot([0, 1], [1, 0])
    fig.tight_layout()  # needs the canvas new_figure attaches
    png = save_figure(fig, tmp_path / "a" / "line.png", dpi=50)
    svg = save_figure(fig, tmp_path / "line.svg")
    assert png.read_bytes()[:4] == b"\x89PNG" and b"<svg" in svg.read_bytes()[:400]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["line.png", "line.svg"]  # no temporary files left
    tight = save_figure(fig, tmp_path / "tight.png", dpi=50, tight=True)
    assert tight.stat().st_size != png.stat().st_size


def test_a_failed_save_leaves_no_file(tmp_path):
    fig = new_figure()
    with pytest.raises(ValueError):
        save_figure(fig, tmp_path / "plot.nosuchformat")
    assert list(tmp_path.iterdir()) == []


def test_library_plots_use_neither_pyplot_nor_a_backend_switch(tmp_path, monkeypatch):
    """With pyplot made unimportable and `matplotlib.use` made to fail, the selfinfluence and compare plots still draw."""
    import matplotlib

    from songtrace.compare.plots import plot_correlations
    from songtrace.selfinfluence.report import plot_metrics_by_mask, plot_rank_vs_lr

    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # `import matplotlib.pyplot` now raises ImportError

    def no_use(*args, **kwargs):
        raise AssertionError("library code called matplotlib.use")

    monkeypatch.setattr(matplotlib, "use", no_use)
    cells = pd.DataFrame([{"lr": lr, "steps": 1, "group": "all", "mask": m, "mean_rank": 1 / lr, "embed_topk": 0.5, "embed_botk": 0.2,
                           "mean_rank_short": 2.0, "mean_rank_long": 1.0} for lr in (1e-3, 1e-2) for m in ("none", "mixed")])
    plot_rank_vs_lr(cells, tmp_path / "a.png")
    plot_metrics_by_mask(cells, tmp_path / "b.png")
    eye = pd.DataFrame(np.eye(2), index=["x", "y"], columns=["x", "y"])
    plot_correlations(eye, eye, tmp_path / "c.png")
    assert all((tmp_path / f).read_bytes()[:4] == b"\x89PNG" for f in ("a.png", "b.png", "c.png"))
