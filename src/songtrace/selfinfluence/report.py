"""Writing the self-influence grid up: the Markdown table in the layout of seed 002's Table 1, and plots (`songtrace.figures`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from songtrace.artifacts import atomic_path
from songtrace.attribution.unlearn import MASKS
from songtrace.model.task import GROUPS

GROUP_NAMES = {
    "to_kv": "Cross-Attention's to_kv weights",
    "cross_attn": "Cross-Attention Layers",
    "self_attn": "Self-Attention Layers",
    "all": "All the Transformer Layers",
}
# Table 1's rows, in the paper's order: (group, mask).
PAPER_ROWS = (("to_kv", "mixed"), ("cross_attn", "mixed"), ("self_attn", "mixed"), ("all", "both"), ("all", "none"), ("all", "mixed"))
MASK_ORDER = ("none", "both", "M_L", "mixed")

# (column, header, format, best is "min" / "max" / None)
TABLE_COLUMNS: tuple[tuple[str, str, str, str | None], ...] = (
    ("mean_rank", "R(z_tar)", "{:.1f}", "min"),
    ("embed_topk", "embed_topk", "{:.3f}", "max"),
    ("embed_botk", "embed_botk", "{:.3f}", "min"),
    ("fd", "FD", "{:.2f}", None),
    ("median_rank", "median R", "{:.1f}", "min"),
    ("frac_rank1", "R=1", "{:.2f}", "max"),
    ("mean_rank_short", "R short", "{:.1f}", "min"),
    ("mean_rank_long", "R long", "{:.1f}", "min"),
    ("artist_precision", "artist P@k", "{:.2f}", "max"),
    ("version_recall", "version R@10", "{:.2f}", "max"),
    ("hub_frac", "hub", "{:.2f}", "min"),
)


def _fmt(value: Any, fmt: str, bold: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = fmt.format(value)
    return f"**{text}**" if bold else text


def markdown_table(cells: pd.DataFrame, rows: Sequence[tuple[str, str]] | None = None, extra: bool = True) -> str:
    """A Markdown table with Table 1's columns (Target Layer | M_U | M_L | R | topk | botk | FD), best values bold.

    `rows` picks and orders (group, mask) pairs (default: every cell, by group then mask); when a
    table holds several (lr, steps) they are shown as columns too.
    """
    df = cells.copy()
    if rows is not None:
        picked = [df[(df["group"] == g) & (df["mask"] == m)] for g, m in rows]
        df = pd.concat([p for p in picked if len(p)], ignore_index=True) if any(len(p) for p in picked) else df.iloc[0:0]
    else:
        df["_g"] = df["group"].map({g: i for i, g in enumerate(GROUPS)}).fillna(len(GROUPS))
        df["_m"] = df["mask"].map({m: i for i, m in enumerate(MASK_ORDER)}).fillna(len(MASK_ORDER))
        df = df.sort_values(["_g", "_m", "lr", "steps"], kind="mergesort").drop(columns=["_g", "_m"])
    columns = [c for c in TABLE_COLUMNS if c[0] in df.columns and (extra or c[0] in ("mean_rank", "embed_topk", "embed_botk", "fd"))]
    show_lr = df["lr"].nunique() > 1 or df["steps"].nunique() > 1 if len(df) else False
    header = ["Target Layer", "M_U", "M_L"] + (["lr", "steps"] if show_lr else []) + [h for _, h, _, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    best = {}
    for col, _, _, how in columns:
        vals = pd.to_numeric(df[col], errors="coerce").dropna()
        if how and len(vals) > 1 and vals.nunique() > 1:
            best[col] = vals.min() if how == "min" else vals.max()
    for _, r in df.iterrows():
        m_u, m_l = MASKS.get(r["mask"], (False, False))
        cells_txt = [GROUP_NAMES.get(r["group"], r["group"]), "✓" if m_u else "", "✓" if m_l else ""]
        if show_lr:
            cells_txt += [f"{r['lr']:g}", str(int(r["steps"]))]
        for col, _, fmt, _ in columns:
            v = r[col]
            cells_txt.append(_fmt(v, fmt, col in best and v == best[col]))
        lines.append("| " + " | ".join(cells_txt) + " |")
    return "\n".join(lines)


def lr_steps_table(cells: pd.DataFrame, value: str = "mean_rank", fmt: str = "{:.1f}") -> str:
    """A Markdown lr x steps table of one metric (stage A of the staged search)."""
    piv = cells.pivot_table(index="lr", columns="steps", values=value, aggfunc="first").sort_index()
    header = ["lr"] + [f"steps={int(s)}" for s in piv.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for lr, row in piv.iterrows():
        lines.append("| " + " | ".join([f"{lr:g}"] + [_fmt(v, fmt, False) for v in row]) + " |")
    return "\n".join(lines)


def write_report_md(
    path: str | Path,
    cells: pd.DataFrame,
    stage_a: pd.DataFrame | None,
    best: Mapping[str, Any],
    notes: Mapping[str, Any],
) -> None:
    """Write `table.md`: Table 1 (paper's rows), every group x mask cell, the lr x steps sweep, and the run's facts."""
    parts = ["# Self-influence grid (seed 002, Table 1 layout)", ""]
    fd0 = notes.get("fd_original")
    fd_note = f" FD of the original checkpoint: {fd0:.2f}." if isinstance(fd0, float) and not math.isnan(fd0) else ""
    parts.append(
        f"Targets: {notes.get('n_targets')} training tracks ({notes.get('n_short_targets', '?')} short; k-means, one per cluster"
        f"{', within short and long tracks' if notes.get('stratified') else ''}) of {notes.get('n_items')} scored; "
        f"k = {notes.get('k')} for embed_topk/botk; embedder `{notes.get('embedder')}`.{fd_note} "
        f"R(z_tar) is the mean rank of the unlearned track (1 = best); 'R short'/'R long' split targets at "
        f"{notes.get('short_seconds', float('nan')):.1f} s; 'hub' is the largest share of targets whose top 10 share one track."
    )
    parts.append("")
    table1 = cells[[(g, m) in PAPER_ROWS for g, m in zip(cells["group"], cells["mask"], strict=True)]] if len(cells) else cells
    if len(table1):
        lr_steps = sorted({(float(a), int(b)) for a, b in zip(table1["lr"], table1["steps"], strict=True)})
        at = ", ".join(f"lr={a:g}, steps={b}" for a, b in lr_steps)
        parts += [f"## Table 1 rows ({at})", "", markdown_table(table1, rows=PAPER_ROWS), ""]
    parts += ["## All cells", "", markdown_table(cells), ""]
    if stage_a is not None and len(stage_a):
        g, m = stage_a["group"].iloc[0], stage_a["mask"].iloc[0]
        parts += [f"## Learning rate x steps (group={g}, mask={m}): mean R(z_tar)", "", lr_steps_table(stage_a), ""]
        gap = stage_a.assign(gap=stage_a["embed_topk"] - stage_a["embed_botk"])
        parts += ["embed_topk − embed_botk:", "", lr_steps_table(gap, "gap", "{:.3f}"), ""]
    parts += [
        "## Best configuration",
        "",
        f"lr={best['lr']:g}, steps={best['steps']}, group={best['group']}, mask={best['mask']} "
        "(chosen among cells that leave the model unharmed, by lowest mean R(z_tar), then widest embed_topk − embed_botk).",
        "",
    ]
    if notes.get("n_version_targets"):
        parts += [f"Planted versions: unlearning each of {notes['n_version_targets']} tracks that have a planted version, with the best "
                  f"configuration, ranks a version in its top 10 for a share of {notes['version_recall']:.2f} of them.", ""]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))


def plot_rank_vs_lr(cells: pd.DataFrame, path: str | Path) -> None:
    """Mean R(z_tar) against learning rate, one line per (group, steps, mask) present."""
    from songtrace.figures import new_figure, save_figure

    fig = new_figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for (group, steps, mask), df in cells.groupby(["group", "steps", "mask"], sort=True):
        df = df.sort_values("lr")
        style = "-o" if len(df) > 1 else "s"
        ax.plot(df["lr"], df["mean_rank"], style, label=f"{group}, {steps} step{'s' if steps > 1 else ''}, {mask}", ms=4)
    ax.set_xscale("log")
    if (pd.to_numeric(cells["mean_rank"], errors="coerce") > 0).any():
        ax.set_yscale("log")
    ax.set_xlabel("learning rate η")
    ax.set_ylabel("mean R(z_tar) (1 = best)")
    ax.set_title("Self-influence: rank of the unlearned track")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def plot_metrics_by_mask(cells: pd.DataFrame, path: str | Path) -> None:
    """Bars per mask and group: mean rank of short vs long targets, embed_topk and embed_botk."""
    import numpy as np

    from songtrace.figures import new_figure, save_figure

    masks = [m for m in MASK_ORDER if m in set(cells["mask"])]
    groups = [g for g in GROUPS if g in set(cells["group"])] + sorted(set(cells["group"]) - set(GROUPS))
    panels = [("mean_rank_short", "R(z_tar), short targets"), ("mean_rank_long", "R(z_tar), long targets"),
              ("embed_topk", "embed_topk"), ("embed_botk", "embed_botk")]
    fig = new_figure(figsize=(3.2 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels))
    x = np.arange(len(masks))
    width = 0.8 / max(1, len(groups))
    for ax, (col, title) in zip(axes, panels, strict=True):
        for j, g in enumerate(groups):
            vals = []
            for m in masks:
                sel = cells[(cells["group"] == g) & (cells["mask"] == m)]
                vals.append(float(sel[col].iloc[0]) if len(sel) and col in sel else np.nan)
            ax.bar(x + (j - (len(groups) - 1) / 2) * width, vals, width, label=g)
        ax.set_xticks(x, masks)
        ax.set_title(title, fontsize=9)
        values = pd.to_numeric(cells[col], errors="coerce") if col in cells else pd.Series(dtype=float)
        if col.startswith("mean_rank") and (values > 0).any():
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
