"""The report's figures, each a matplotlib `Figure` on its own Agg canvas (`songtrace.figures`, never pyplot), as PNG bytes.

Waveform and spectrogram of a query (with its windows marked), per-artist credit shares, the score
distribution of one query in the style of seed 002's Fig. 1 (items sorted by score; min-max and
softmax normalised), and a bar chart of opt-out figures. `png_data_uri` turns the bytes into an
`<img src>` the page carries inline.
"""

from __future__ import annotations

import base64
import io
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from songtrace.compare.stats import normalise
from songtrace.figures import new_figure

ACCENT = "#2f6db5"
MUTED = "#9aa7b8"
DPI = 110


def figure_png(fig: Figure) -> bytes:
    """The figure rendered to PNG bytes (Agg; made by `songtrace.figures.new_figure`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    """A `data:image/png;base64,...` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _style(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)


def envelope(wav: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) of the signal in `buckets` equal slices: a waveform outline that stays cheap for long tracks."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if wav.size == 0:
        return np.zeros(1), np.zeros(1)
    buckets = max(1, min(buckets, wav.size))
    edges = np.linspace(0, wav.size, buckets + 1).astype(int)
    lo = np.array([wav[a:b].min() for a, b in itertools.pairwise(edges)])
    hi = np.array([wav[a:b].max() for a, b in itertools.pairwise(edges)])
    return lo, hi


def log_spectrogram(wav: np.ndarray, sample_rate: int, n_fft: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frequencies Hz, times s, power in dB `[F, T]`) of a short-time Fourier transform (Hann window, hop n_fft/4)."""
    from scipy.signal import spectrogram

    wav = np.asarray(wav, dtype=np.float64).reshape(-1)
    n_fft = int(min(n_fft, max(16, 2 ** int(np.log2(max(16, wav.size))))))
    if wav.size < n_fft:
        wav = np.pad(wav, (0, n_fft - wav.size))
    freqs, times, power = spectrogram(wav, fs=sample_rate, window="hann", nperseg=n_fft, noverlap=n_fft * 3 // 4, mode="psd")
    db = 10 * np.log10(power + 1e-12)
    return freqs, times, np.maximum(db, db.max() - 80.0)


def query_figure(wav: np.ndarray, sample_rate: int, boundaries: Sequence[float] = ()) -> bytes:
    """Waveform (top) and log spectrogram (bottom) of the query on one time axis; window boundaries as dashed lines."""
    seconds = max(len(wav) / sample_rate, 1e-3)
    fig = new_figure(figsize=(11, 3.6))
    ax_wave, ax_spec = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 2], "hspace": 0.08})
    lo, hi = envelope(wav, 1200)
    t = np.linspace(0, seconds, len(lo))
    ax_wave.fill_between(t, lo, hi, color=ACCENT, lw=0)
    ax_wave.set_ylabel("amplitude", fontsize=8)
    ax_wave.set_xlim(0, seconds)
    freqs, times, db = log_spectrogram(wav, sample_rate)
    ax_spec.pcolormesh(times, freqs / 1000.0, db, shading="auto", cmap="magma", rasterized=True)
    ax_spec.set_ylabel("kHz", fontsize=8)
    ax_spec.set_xlabel("time (s)", fontsize=8)
    ax_spec.set_xlim(0, seconds)
    for ax in (ax_wave, ax_spec):
        _style(ax)
        for b in boundaries:
            ax.axvline(b, color="#e0e0e0" if ax is ax_spec else "#555555", ls="--", lw=0.8)
    return figure_png(fig)


def credits_figure(artists: Sequence[str], shares: Sequence[float], max_bars: int = 10) -> bytes:
    """Horizontal bars of the artists' credit shares (largest first; the rest summed as 'others')."""
    pairs = sorted(zip(artists, shares, strict=True), key=lambda p: -p[1])
    shown = pairs[:max_bars]
    rest = sum(s for _, s in pairs[max_bars:])
    if rest > 0:
        shown.append((f"{len(pairs) - max_bars} others", rest))
    labels = [a for a, _ in shown][::-1]
    values = [100.0 * s for _, s in shown][::-1]
    fig = new_figure(figsize=(5.2, 0.32 * len(shown) + 0.9))
    ax = fig.subplots()
    bars = ax.barh(labels, values, color=[MUTED if lab.endswith(" others") else ACCENT for lab in labels])
    for bar, v in zip(bars, values, strict=True):
        ax.text(bar.get_width() + 0.8, bar.get_y() + bar.get_height() / 2, f"{v:.1f} %", va="center", fontsize=8)
    ax.set_xlim(0, max([*values, 1.0]) * 1.18)
    ax.set_xlabel("share of positive attribution (%)", fontsize=8)
    _style(ax)
    return figure_png(fig)


def distribution_figure(scores: np.ndarray, top_k: int) -> bytes:
    """Seed 002 Fig. 1 style for one query: every training item sorted by τ, min-max (left) and softmax (right, log axes)."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    fig = new_figure(figsize=(7.5, 2.9))
    axes = fig.subplots(1, 2, gridspec_kw={"wspace": 0.3})
    x = np.arange(1, len(scores) + 1)
    for ax, how, title in ((axes[0], "minmax", "min-max normalised τ"), (axes[1], "softmax", "softmax normalised τ")):
        y = normalise(scores[None], how)[0][order]
        ax.plot(x, y, color=ACCENT, lw=1.4)
        k = min(top_k, len(y))
        ax.scatter(x[:k], y[:k], color="#d0542b", s=12, zorder=3, label=f"top {k}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training items sorted by τ", fontsize=8)
        if how == "softmax":
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        _style(ax)
    axes[0].legend(fontsize=8, frameon=False)
    return figure_png(fig)


def figures_bar_chart(names: Sequence[str], series: dict[str, Sequence[float]]) -> bytes:
    """Small multiples: one panel per figure (its own scale), one bar per model (an opt-out evaluation's headline figures)."""
    models = list(series)
    cols = min(3, max(1, len(names)))
    rows = (len(names) + cols - 1) // cols
    fig = new_figure(figsize=(3.4 * cols, 0.32 * len(models) * rows + 0.9 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    colours = [ACCENT, "#d0542b", "#3a9a5b", "#8a5cb8", MUTED]
    for k, ax in enumerate(axes):
        if k >= len(names):
            ax.set_visible(False)
            continue
        values = [float(series[m][k]) for m in models]
        ax.barh(models, np.nan_to_num(values), color=[colours[i % len(colours)] for i in range(len(models))])
        for y, v in enumerate(values):
            ax.text(0, y, f" {v:.3g}", va="center", fontsize=7, color="#1d2733")
        ax.set_title(names[k], fontsize=8)
        ax.invert_yaxis()
        _style(ax)
    fig.tight_layout()
    return figure_png(fig)
