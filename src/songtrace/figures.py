"""Plots without global state: a matplotlib `Figure` on its own Agg canvas, saved atomically.

Library code never goes through pyplot and never calls `matplotlib.use`: pyplot keeps a process-wide
list of figures and a backend, which a user's notebook or GUI owns. `new_figure` makes a figure
that belongs to no one but its caller; `save_figure` writes it (format from the file suffix) through
`artifacts.atomic_path`, so a reader never sees half a PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from songtrace.artifacts import atomic_path


def new_figure(**kwargs: Any) -> Figure:
    """A `Figure(**kwargs)` (e.g. `figsize=(6, 4)`) with an Agg canvas attached, so `tight_layout` and `savefig` work."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120, tight: bool = False) -> Path:
    """Write `fig` to `path` atomically, in the format its suffix names (PNG when it has none); returns the path.

    `tight` crops the saved image to what is drawn (`bbox_inches="tight"`).
    """
    path = Path(path)
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight" if tight else None)
    return path
