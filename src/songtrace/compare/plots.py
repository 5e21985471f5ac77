"""Plots of the method comparison: Fig. 1 (score curves sorted by the unlearning score) and Fig. 2 (correlations).

Uses matplotlib's object API through `songtrace.figures` (`Figure` + Agg canvas), never pyplot, so no
global backend or state is touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from songtrace.compare.stats import curve_stats
from songtrace.figures import new_figure, save_figure

LABELS = {
    "unlearning": "Unlearning",
    "embedding": "CLAP-like (embedding)",
    "version": "CLEWS-like (version)",
    "activations": "LPIPS-like (activations)",
    "representer": "RPS (representer)",
    "gradient": "TRAK-like (gradient)",
}


def label(method: str) -> str:
    """A display name for a method."""
    return LABELS.get(method, method)


def _save(fig: Figure, path: str | Path) -> Path:
    return save_figure(fig, path, dpi=130, tight=True)


def plot_score_curves(scores_by_method: Mapping[str, np.ndarray], reference: str, path: str | Path) -> Path:
    """Fig. 1: training items sorted by the reference method's score; every method's min-max (left) and
    softmax-normalised (right, log axes) scores, mean ± std over queries."""
    fig = new_figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    n_queries = np.atleast_2d(scores_by_method[reference]).shape[0]
    for ax, how, title in ((axes[0], "minmax", "min-max normalised"), (axes[1], "softmax", "softmax normalised")):
        curves = curve_stats(scores_by_method, reference, how)
        x = np.arange(1, len(next(iter(curves.values()))[0]) + 1)
        for m, (mean, std) in curves.items():
            width = 2.2 if m == reference else 1.2
            (line,) = ax.plot(x, mean, label=label(m), lw=width, zorder=3 if m == reference else 2)
            lo = mean - std if how == "minmax" else np.maximum(mean - std, mean * 1e-3)
            ax.fill_between(x, lo, mean + std, color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(f"{title} (mean ± std over {n_queries} queries)")
        ax.set_xlabel(f"training items sorted by {label(reference)} score")
        ax.set_ylabel("score")
        if how == "softmax":
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def plot_correlations(pearson: pd.DataFrame, spearman: pd.DataFrame, path: str | Path) -> Path:
    """Fig. 2: method x method Pearson and Spearman correlation heatmaps (mean over queries)."""
    fig = new_figure(figsize=(12, 5))
    axes = fig.subplots(1, 2, gridspec_kw={"wspace": 0.15})
    for k, (ax, mat, title) in enumerate(((axes[0], pearson, "Pearson"), (axes[1], spearman, "Spearman"))):
        names = [label(m) for m in mat.index]
        values = mat.to_numpy(dtype=float)
        im = ax.imshow(values, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names if k == 0 else [""] * len(names), fontsize=8)
        for i in range(len(names)):
            for j in range(len(names)):
                v = values[i, j]
                ax.text(j, i, "nan" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if np.isfinite(v) and abs(v) > 0.6 else "black")
        ax.set_title(f"{title} correlation (mean over queries)")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)
